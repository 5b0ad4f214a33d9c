# Consumes messages from an actormq node's RocketMQ 5 gRPC endpoint with
# the official Python client's PushConsumer (PyPI rocketmq-python-client),
# plain text.
# Usage: python rocketmq-python-push-consumer.py HOST:PORT GROUP TOPIC COUNT
# Prints one JSON line per message consumed (body, tag, properties,
# delivery attempt); exits 0 once COUNT distinct bodies came, non-zero
# after 60 s without them.
import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                      MessageListener, PushConsumer)


class Listener(MessageListener):
    def __init__(self, count):
        self.lock = threading.Lock()
        self.bodies = set()
        self.count = count
        self.done = threading.Event()

    def consume(self, message):
        body = message.body.decode()
        with self.lock:
            print(json.dumps({
                "body": body,
                "tag": message.tag,
                "properties": dict(message.properties),
                "delivery_attempt": message.delivery_attempt,
            }), flush=True)
            self.bodies.add(body)
            if len(self.bodies) >= self.count:
                self.done.set()
        return ConsumeResult.SUCCESS


def main():
    endpoint, group, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    listener = Listener(count)
    consumer = PushConsumer(config, group, listener, {topic: FilterExpression()})
    consumer.startup()
    ok = listener.done.wait(60)
    # Let the acks of the last messages go out before stopping.
    time.sleep(1)
    consumer.shutdown()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

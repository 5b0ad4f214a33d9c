# A PushConsumer of the official Python client (PyPI
# rocketmq-python-client) whose listener is slow: it asks for auto_renew,
# so the broker must keep its deliveries invisible while it works.
# Usage: python rocketmq-python-slow-push-consumer.py HOST:PORT GROUP TOPIC COUNT WORK_S
# Prints one JSON line when a message's consumption starts (body, message
# group, delivery attempt). A FIFO consumer when the broker's settings say
# the group is one. WORK_S > 0: each consumption takes WORK_S seconds
# (the work being simulated), then succeeds; exits 0 once COUNT distinct
# bodies were consumed. WORK_S = 0: consumptions never end (the test
# kills the process).
import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression,
                      MessageListener, PushConsumer)


class Listener(MessageListener):
    def __init__(self, count, work_s):
        self.lock = threading.Lock()
        self.done_bodies = set()
        self.count = count
        self.work_s = work_s
        self.done = threading.Event()
        self.never = threading.Event()

    def consume(self, message):
        body = message.body.decode()
        with self.lock:
            print(json.dumps({
                "body": body,
                "group": message.message_group,
                "delivery_attempt": message.delivery_attempt,
            }), flush=True)
        if self.work_s <= 0:
            self.never.wait()
        time.sleep(self.work_s)
        with self.lock:
            self.done_bodies.add(body)
            if len(self.done_bodies) >= self.count:
                self.done.set()
        return ConsumeResult.SUCCESS


def main():
    endpoint, group, topic = sys.argv[1], sys.argv[2], sys.argv[3]
    count, work_s = int(sys.argv[4]), float(sys.argv[5])
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    listener = Listener(count, work_s)
    consumer = PushConsumer(config, group, listener, {topic: FilterExpression()})
    consumer.startup()
    ok = listener.done.wait(120)
    # The client acks after the listener returned, on its own threads,
    # and tells no one: give those acks a moment before stopping.
    time.sleep(1)
    consumer.shutdown()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

# Receives and acks messages from an actormq node's RocketMQ 5 gRPC
# endpoint with the official Python client's SimpleConsumer (PyPI
# rocketmq-python-client), plain text.
# Usage: python rocketmq-python-simple-consumer.py HOST:PORT GROUP TOPIC COUNT [TAGS]
# (TAGS: a tag expression such as "paid || shipped"; default "*")
# Prints one JSON line per message received (then acked): body, message
# id, tag, keys, properties, delivery attempt; exits 0 once COUNT came,
# non-zero after 60 s without them.
import json
import sys
import time

from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer


def main():
    endpoint, group, topic, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    tags = sys.argv[5] if len(sys.argv) > 5 else FilterExpression.TAG_EXPRESSION_SUB_ALL
    consumer = SimpleConsumer(config, group, {topic: FilterExpression(tags)}, await_duration=2)
    consumer.startup()
    got = 0
    deadline = time.time() + 60
    try:
        while got < count and time.time() < deadline:
            for m in consumer.receive(16, 15):
                print(json.dumps({
                    "body": m.body.decode(),
                    "message_id": m.message_id,
                    "tag": m.tag,
                    "keys": sorted(m.keys),
                    "properties": dict(m.properties),
                    "delivery_attempt": m.delivery_attempt,
                }), flush=True)
                consumer.ack(m)
                got += 1
    finally:
        consumer.shutdown()
    sys.exit(0 if got >= count else 1)


if __name__ == "__main__":
    main()

# Sends NORMAL messages to an actormq node's RocketMQ 5 gRPC endpoint with
# the official Python client (PyPI rocketmq-python-client), plain text.
# Usage: python rocketmq-python-producer.py HOST:PORT TOPIC COUNT
# Prints one JSON line per message: {"body", "message_id"}; exit 0 when
# every send succeeded.
import json
import sys

from rocketmq import ClientConfiguration, Credentials, Message, Producer


def main():
    endpoint, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    producer = Producer(config, (topic,))
    producer.startup()
    try:
        for i in range(count):
            msg = Message()
            msg.topic = topic
            msg.body = f"py-{i}".encode()
            msg.tag = "PyTag"
            msg.keys = f"py-key-{i}"
            msg.add_property("lang", "python")
            receipt = producer.send(msg)
            print(json.dumps({"body": f"py-{i}", "message_id": receipt.message_id}), flush=True)
    finally:
        producer.shutdown()


if __name__ == "__main__":
    main()

# Sends NORMAL messages to an actormq node's RocketMQ 5 gRPC endpoint with
# the official Python client (PyPI rocketmq-python-client), plain text.
# Usage: python rocketmq-python-producer.py HOST:PORT TOPIC COUNT [GROUPS]
# Prints one JSON line per message: {"body", "message_id"}; exit 0 when
# every send succeeded. GROUPS (comma-separated message groups): FIFO
# messages instead, message i in group GROUPS[i % n] with body
# "<group>-<i / n>".
import json
import sys

from rocketmq import ClientConfiguration, Credentials, Message, Producer


def main():
    endpoint, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    groups = sys.argv[4].split(",") if len(sys.argv) > 4 else []
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    producer = Producer(config, (topic,))
    producer.startup()
    try:
        for i in range(count):
            msg = Message()
            msg.topic = topic
            body = f"py-{i}"
            if groups:
                group = groups[i % len(groups)]
                body = f"{group}-{i // len(groups)}"
                msg.message_group = group
            msg.body = body.encode()
            msg.tag = "PyTag"
            msg.keys = f"py-key-{i}"
            msg.add_property("lang", "python")
            receipt = producer.send(msg)
            print(json.dumps({"body": body, "message_id": receipt.message_id}), flush=True)
    finally:
        producer.shutdown()


if __name__ == "__main__":
    main()

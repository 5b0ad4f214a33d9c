# Sends two transactional messages to an actormq node's RocketMQ 5 gRPC
# endpoint with the official Python client (PyPI rocketmq-python-client)
# and never ends them: the broker's transaction check (over Telemetry)
# asks this producer, whose checker answers COMMIT for "check-commit" and
# ROLLBACK for "check-rollback".
# Usage: python rocketmq-python-transaction-check.py HOST:PORT TOPIC
# Prints one JSON line per check: {"checked", "topic", "tag", "lang",
# "message_id"}, after the sends one {"sent": [message ids]}; it stays up
# (answering checks) until its stdin is closed, or 60 s without checks.
import json
import sys
import threading

from rocketmq import (ClientConfiguration, Credentials, Message, Producer,
                      TransactionChecker, TransactionResolution)


class Checker(TransactionChecker):
    def __init__(self):
        self.lock = threading.Lock()
        self.checked = set()
        self.both = threading.Event()

    def check(self, message):
        body = message.body.decode()
        with self.lock:
            print(json.dumps({
                "checked": body,
                "topic": message.topic,
                "tag": message.tag,
                "lang": message.properties.get("lang"),
                "message_id": message.message_id,
            }), flush=True)
            self.checked.add(body)
            if len(self.checked) >= 2:
                self.both.set()
        if body == "check-commit":
            return TransactionResolution.COMMIT
        return TransactionResolution.ROLLBACK


def main():
    endpoint, topic = sys.argv[1], sys.argv[2]
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    checker = Checker()
    producer = Producer(config, (topic,), checker)
    producer.startup()
    try:
        sent = []
        for body in ("check-commit", "check-rollback"):
            transaction = producer.begin_transaction()
            msg = Message()
            msg.topic = topic
            msg.body = body.encode()
            msg.tag = "TxTag"
            msg.add_property("lang", "python")
            receipt = producer.send(msg, transaction)
            sent.append(receipt.message_id)
            # Neither committed nor rolled back: left to the check.
        print(json.dumps({"sent": sent}), flush=True)
        if not checker.both.wait(60):
            print(json.dumps({"timeout": sorted(checker.checked)}), flush=True)
            sys.exit(1)
        # The answers go out from the client's own threads; the test
        # closes stdin once it saw the broker record them.
        sys.stdin.read()
    finally:
        producer.shutdown()


if __name__ == "__main__":
    main()

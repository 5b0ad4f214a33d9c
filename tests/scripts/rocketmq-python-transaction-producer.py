# Sends transactional messages to an actormq node's RocketMQ 5 gRPC
# endpoint with the official Python client (PyPI rocketmq-python-client):
# "commit-N" messages are committed, "rollback-N" ones rolled back.
# Usage: python rocketmq-python-transaction-producer.py HOST:PORT TOPIC COUNT
# Prints one JSON line per transaction: {"body", "resolution"}.
import json
import sys

from rocketmq import (ClientConfiguration, Credentials, Message, Producer,
                      TransactionChecker, TransactionResolution)


class Checker(TransactionChecker):
    def check(self, message):
        # Every transaction is ended here; a check-back (if ever) commits.
        return TransactionResolution.COMMIT


def main():
    endpoint, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    config = ClientConfiguration(endpoint, Credentials(), request_timeout=10)
    producer = Producer(config, (topic,), Checker())
    producer.startup()
    try:
        for i in range(count):
            for kind in ("commit", "rollback"):
                transaction = producer.begin_transaction()
                msg = Message()
                msg.topic = topic
                msg.body = f"{kind}-{i}".encode()
                msg.tag = "TxTag"
                producer.send(msg, transaction)
                if kind == "commit":
                    transaction.commit()
                else:
                    transaction.rollback()
                print(json.dumps({"body": f"{kind}-{i}", "resolution": kind}), flush=True)
    finally:
        producer.shutdown()


if __name__ == "__main__":
    main()

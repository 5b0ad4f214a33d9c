//! Message lookups against a child-process combined node: `actormq admin
//! msg get --id` and `admin msg query -t --key [--begin-ms --end-ms]`
//! (spec/cli.md), and the SDK's `MessageQuery` by queue and offset.

use std::net::SocketAddr;

use actormq_protocol::MessageQueue;
use actormq_sdk::MessageQuery;

use crate::common::*;

/// Sends one message with `keys` and `body`; returns its JSON result line.
fn produce(ns: SocketAddr, topic: &str, keys: &str, body: &str) -> serde_json::Value {
    let out = actormq(
        ns,
        &[
            "produce", "-t", topic, "--keys", keys, "--body", body, "--json",
        ],
    );
    json_lines(&out).pop().expect("one result line")
}

#[actix_rt::test]
async fn t65_messages_by_id_by_key_and_by_offset() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        let topic = "t65-orders";
        create_topic(node.broker(), topic, 1).await;
        wait_route(ns, topic, "broker-a", node.broker(), 1).await;
        let first = produce(ns, topic, "order-1", "created");
        let _other = produce(ns, topic, "order-2", "created");
        let second = produce(ns, topic, "order-1 vip", "paid");
        let after_ms = actormq_tests::now_ms();

        // By id: the message, with the documented fields.
        let id = first["msg_id"].as_str().unwrap();
        let got = json_lines(&actormq(ns, &["admin", "msg", "get", "--id", id, "--json"]));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["msg_id"], id);
        assert_eq!(got[0]["body"], "created");
        assert_eq!(got[0]["keys"], "order-1");
        assert_eq!(got[0]["queue_offset"], first["queue_offset"]);

        // An id of this broker at an offset where no record is: refused.
        let missing = format!("{}FFFFFFFF", &id[..id.len() - 8]);
        let out = actormq(ns, &["admin", "msg", "get", "--id", &missing]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no message with id"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        // Not an id at all: a one-line error, no panic.
        let out = actormq(ns, &["admin", "msg", "get", "--id", "nonsense"]);
        assert!(!out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );

        // By key: both messages with key order-1, in store order.
        let found = json_lines(&actormq(
            ns,
            &[
                "admin", "msg", "query", "-t", topic, "--key", "order-1", "--json",
            ],
        ));
        let bodies: Vec<&str> = found.iter().map(|m| m["body"].as_str().unwrap()).collect();
        assert_eq!(bodies, ["created", "paid"]);
        assert_eq!(found[1]["msg_id"], second["msg_id"]);
        // A time range after them finds none.
        let later = (after_ms + 1).to_string();
        let none = json_lines(&actormq(
            ns,
            &[
                "admin",
                "msg",
                "query",
                "-t",
                topic,
                "--key",
                "order-1",
                "--begin-ms",
                &later,
                "--end-ms",
                &(after_ms + 60_000).to_string(),
                "--json",
            ],
        ));
        assert!(none.is_empty(), "{none:?}");
        // begin after end: refused.
        let out = actormq(
            ns,
            &[
                "admin",
                "msg",
                "query",
                "-t",
                topic,
                "--key",
                "k",
                "--begin-ms",
                "2",
                "--end-ms",
                "1",
            ],
        );
        assert!(!out.status.success());

        // By queue and offset (SDK).
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let q = MessageQuery::new(&[ns.to_string()], &log).expect("query");
        let mq = MessageQueue {
            topic: topic.into(),
            broker_name: "broker-a".into(),
            queue_id: 0,
        };
        let m = q
            .by_offset(&mq, 2)
            .await
            .expect("lookup")
            .expect("a message at 2");
        assert_eq!(&m.message.body[..], b"paid");
        assert!(q.by_offset(&mq, 3).await.expect("lookup").is_none());
        let by_id = q.by_id(id).await.expect("lookup").expect("found");
        assert_eq!(&by_id.message.body[..], b"created");
    })
    .await;
}

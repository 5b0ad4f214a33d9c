//! SQL92 subscription filters against a child-process combined node:
//! messages with properties, consumers (the `actormq consume --sql` CLI,
//! an SDK push consumer, a raw pull) get exactly the matching ones, bad
//! expressions are refused at subscribe time with one clear line, and
//! `enable_property_filter = false` refuses SQL92 subscriptions (tags
//! still work).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_protocol::request::{
    ConsumerData, HeartbeatRequest, QueryConsumerOffsetRequest, SendMessageRequest,
    SubscriptionData,
};
use actormq_protocol::{Bytes, ResponseCode, batch};
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, ConsumerError, PushConsumerBuilder};
use actormq_tests::client::Client;
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::{
    NO_ARGS, actormq, bounded, combined, connect, create_topic, max_offset, pull_request,
    wait_max_offset, wait_route,
};

/// Which message numbers an expression should select.
type Pred = Box<dyn Fn(usize) -> bool>;

const QUEUES: u32 = 2;
const N: usize = 40;

/// The properties of message `i`: `a` = i (message 7 has `a = 'seven'`, a
/// type mismatch), `b` = x/y/z in turn, `c` on even ones only, tag
/// A on multiples of 3, else B.
fn props(i: usize) -> (String, BTreeMap<String, String>) {
    let mut p = BTreeMap::new();
    p.insert(
        "a".into(),
        if i == 7 {
            "seven".into()
        } else {
            i.to_string()
        },
    );
    p.insert("b".into(), ["x", "y", "z"][i % 3].into());
    if i % 2 == 0 {
        p.insert("c".into(), "yes".into());
    }
    let tag = if i % 3 == 0 { "A" } else { "B" };
    (tag.into(), p)
}

/// Sends the N messages; bodies are `<topic>-<i>`.
async fn send_all(namesrv: SocketAddr, broker: SocketAddr, topic: &str) {
    create_topic(broker, topic, QUEUES).await;
    wait_route(namesrv, topic, "broker-a", broker, QUEUES).await;
    let mut c = connect(broker).await;
    for i in 0..N {
        let (tag, properties) = props(i);
        let req = SendMessageRequest {
            producer_group: "t75-producer".into(),
            topic: topic.into(),
            queue_id: i as u32 % QUEUES,
            tags: Some(tag),
            properties,
            ..SendMessageRequest::default()
        };
        c.call(&req, Bytes::from(format!("{topic}-{i}")))
            .await
            .expect("send call")
            .ok()
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    for q in 0..QUEUES {
        wait_max_offset(&mut c, topic, q, (N as u64).div_ceil(u64::from(QUEUES))).await;
    }
}

/// The bodies of the messages `pred` selects, computed here in plain Rust.
fn expected(topic: &str, pred: impl Fn(usize) -> bool) -> BTreeSet<String> {
    (0..N)
        .filter(|i| pred(*i))
        .map(|i| format!("{topic}-{i}"))
        .collect()
}

/// Runs `actormq consume --sql EXPR` from the first offset until idle;
/// the bodies it printed.
fn consume_sql(namesrv: SocketAddr, topic: &str, group: &str, sql: &str) -> Vec<String> {
    let out = actormq(
        namesrv,
        &[
            "consume",
            "-t",
            topic,
            "-g",
            group,
            "--from",
            "first",
            "--sql",
            sql,
            "--idle-exit-ms",
            "2000",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            v["body"].as_str().expect("body").to_string()
        })
        .collect()
}

/// A one-line, non-zero refusal whose stderr contains `needle`.
fn assert_refused(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} contains {needle:?}");
}

async fn committed(c: &mut Client, group: &str, topic: &str, q: u32) -> Option<u64> {
    let req = QueryConsumerOffsetRequest {
        consumer_group: group.into(),
        topic: topic.into(),
        queue_id: q,
    };
    let reply = c
        .call(&req, Bytes::new())
        .await
        .expect("QUERY_CONSUMER_OFFSET");
    match reply.code {
        ResponseCode::QueryNotFound => None,
        _ => Some(reply.ok().expect("query offset").offset),
    }
}

#[actix_rt::test]
async fn t75_sql_filters_deliver_exactly_the_matching_messages() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t75-sql";
        send_all(ns, broker, topic).await;

        // The CLI: each operator family, against the same predicate in Rust.
        let num = |i: usize| (i != 7).then_some(i as i64);
        let b = |i: usize| ["x", "y", "z"][i % 3];
        let cases: Vec<(&str, Pred)> = vec![
            (
                "a > 5 AND b IN ('x','y') AND c IS NOT NULL AND a BETWEEN 1 AND 30",
                Box::new(move |i| {
                    num(i).is_some_and(|a| a > 5 && a <= 30) && b(i) != "z" && i % 2 == 0
                }),
            ),
            // A missing property (c on odd ones) is unknown: no match
            // either way; 'seven' is a type mismatch: no match either way.
            ("c = 'yes' OR c <> 'yes'", Box::new(|i| i % 2 == 0)),
            (
                "a < 3 OR NOT a < 38",
                Box::new(move |i| num(i).is_some_and(|a| !(3..38).contains(&a))),
            ),
            (
                "c IS NULL AND TAGS = 'A'",
                Box::new(|i| i % 2 == 1 && i % 3 == 0),
            ),
            (
                "a NOT BETWEEN 2 AND 36 AND b NOT IN ('z')",
                Box::new(move |i| num(i).is_some_and(|a| !(2..=36).contains(&a)) && b(i) != "z"),
            ),
            ("a = 'seven'", Box::new(|i| i == 7)),
            (
                "a >= 10 AND a <= 12.5 AND (b = 'x' OR b = 'z')",
                Box::new(move |i| num(i).is_some_and(|a| (10..=12).contains(&a)) && b(i) != "y"),
            ),
        ];
        for (k, (sql, pred)) in cases.iter().enumerate() {
            let got = consume_sql(ns, topic, &format!("t75-cli-{k}"), sql);
            let set: BTreeSet<String> = got.iter().cloned().collect();
            assert_eq!(set.len(), got.len(), "{sql}: no duplicate: {got:?}");
            assert_eq!(set, expected(topic, pred), "{sql}");
        }

        // The SDK: subscribe_sql, drained (committed = max everywhere).
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let listener = {
            let seen = seen.clone();
            move |msgs: &[actormq_protocol::StoredMessage]| {
                let mut s = seen.lock().expect("seen");
                s.extend(
                    msgs.iter()
                        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned()),
                );
                ConsumeResult::Success
            }
        };
        let sql = "TAGS = 'B' AND a > 20";
        let consumer = PushConsumerBuilder::new("t75-sdk")
            .namesrv(&ns.to_string())
            .subscribe_sql(topic, sql)
            .consume_from(ConsumeFrom::First)
            .listener(listener)
            .start()
            .await
            .expect("start");
        let mut c = connect(broker).await;
        let start = Instant::now();
        loop {
            consumer.commit_now().await;
            let mut done = consumer.cached_messages() == 0;
            for q in 0..QUEUES {
                done &= committed(&mut c, "t75-sdk", topic, q).await
                    == Some(max_offset(&mut c, topic, q).await);
            }
            if done {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "never drained");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        consumer.shutdown().await;
        let got = seen.lock().expect("seen").clone();
        let want = expected(topic, |i| i % 3 != 0 && i > 20);
        assert_eq!(got.len(), want.len(), "{got:?}");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);

        // A raw pull: the broker itself filters (nothing else in the reply).
        let mut req = pull_request(topic, 0, 0, 64, 0);
        req.subscription = Some("a BETWEEN 0 AND 9".into());
        req.expression_type = Some("SQL92".into());
        let (_, body) = c
            .call(&req, Bytes::new())
            .await
            .expect("pull")
            .expect_code(ResponseCode::Success)
            .expect("found");
        let msgs = batch::decode_stored(&body).expect("batch");
        let bodies: BTreeSet<String> = msgs
            .iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
            .collect();
        assert_eq!(
            bodies,
            expected(topic, |i| i < 10 && i != 7 && i % 2 == 0),
            "queue 0 holds the even ones"
        );
    })
    .await;
}

#[actix_rt::test]
async fn t75_bad_expressions_are_refused_at_subscribe_time() {
    bounded(async {
        // The CLI refuses before sending anything: nothing listens on port 1.
        for (sql, needle) in [
            ("a > 5; DROP TABLE t", "after the expression"),
            ("f(a) = 1", "function f()"),
            ("a + 1 > 2", "operator +"),
            ("a >", "bad SQL92 expression"),
        ] {
            let out = actormq(
                "127.0.0.1:1",
                &[
                    "--timeout-ms",
                    "300",
                    "consume",
                    "-t",
                    "T",
                    "-g",
                    "G",
                    "--sql",
                    sql,
                ],
            );
            assert_refused(&out, needle);
            assert!(String::from_utf8_lossy(&out.stderr).contains("--sql"));
        }

        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t75-bad";
        create_topic(broker, topic, 1).await;
        wait_route(ns, topic, "broker-a", broker, 1).await;
        // The SDK refuses at start.
        let started = PushConsumerBuilder::new("t75-bad")
            .namesrv(&ns.to_string())
            .subscribe_sql(topic, "a > 5; DROP TABLE t")
            .listener(|_: &[actormq_protocol::StoredMessage]| ConsumeResult::Success)
            .start()
            .await;
        let Err(e) = started else {
            panic!("a bad expression must fail start");
        };
        assert!(matches!(e, ConsumerError::Config(_)), "{e}");
        assert!(e.to_string().contains("after the expression"), "{e}");

        // The broker refuses a bad subscription in a heartbeat and a pull.
        let mut c = connect(broker).await;
        let hb = HeartbeatRequest {
            client_id: "t75-client".into(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![ConsumerData {
                group_name: "t75-raw".into(),
                subscription_data_set: vec![SubscriptionData {
                    topic: topic.into(),
                    sub_string: "a IN (SELECT b FROM t)".into(),
                    expression_type: "SQL92".into(),
                    ..SubscriptionData::default()
                }],
                ..ConsumerData::default()
            }],
            ..Default::default()
        };
        let r = c.call(&hb, Bytes::new()).await.expect("heartbeat");
        assert_eq!(r.code, ResponseCode::SubscriptionParseFailed);
        let remark = r.remark.clone().unwrap_or_default();
        assert!(remark.contains("subquery"), "{remark}");
        let mut req = pull_request(topic, 0, 0, 8, 0);
        req.subscription = Some("a > 1 b".into());
        req.expression_type = Some("SQL92".into());
        let r = c.call(&req, Bytes::new()).await.expect("pull");
        assert_eq!(r.code, ResponseCode::SubscriptionParseFailed);
        req.subscription = Some("a > 1".into());
        req.expression_type = Some("XPATH".into());
        let r = c.call(&req, Bytes::new()).await.expect("pull");
        assert_eq!(r.code, ResponseCode::SubscriptionParseFailed);
    })
    .await;
}

#[actix_rt::test]
async fn t75_property_filter_off_refuses_sql_subscriptions() {
    bounded(async {
        let node = NodeProcess::start_with_env(
            Bin::Node,
            NO_ARGS,
            &[("ACTORMQ_BROKER__ENABLE_PROPERTY_FILTER", "false")],
        )
        .expect("start a node with property filters off");
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t75-off";
        send_all(ns, broker, topic).await;

        // The CLI (through the SDK's start): one line, non-zero.
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t75-off",
                "--from",
                "first",
                "--sql",
                "a > 1",
                "--idle-exit-ms",
                "1000",
            ],
        );
        assert_refused(&out, "does not support consumer to filter message by SQL92");
        // A pull with SQL92: RocketMQ's code and remark.
        let mut c = connect(broker).await;
        let mut req = pull_request(topic, 0, 0, 8, 0);
        req.subscription = Some("a > 1".into());
        req.expression_type = Some("SQL92".into());
        let r = c.call(&req, Bytes::new()).await.expect("pull");
        assert_eq!(r.code, ResponseCode::SystemError);
        assert!(
            r.remark
                .clone()
                .unwrap_or_default()
                .contains("enable_property_filter"),
            "{:?}",
            r.remark
        );
        // Tags still filter.
        req.subscription = Some("A".into());
        req.expression_type = Some("TAG".into());
        let (_, body) = c
            .call(&req, Bytes::new())
            .await
            .expect("pull")
            .expect_code(ResponseCode::Success)
            .expect("found");
        let msgs = batch::decode_stored(&body).expect("batch");
        assert!(!msgs.is_empty());
        assert!(msgs.iter().all(|m| m.message.tags.as_deref() == Some("A")));
    })
    .await;
}

//! The SDK producer and the `actormq` CLI against child-process nodes:
//! every send mode stores what it acknowledged (pulled back with the
//! protocol-level client), a producer keeps sending through a broker
//! restart and through a name-server outage, and the CLI's `--json` lines
//! carry the documented fields.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use actormq_protocol::{Message, StoredMessage};
use actormq_sdk::{ClientError, Producer, ProducerBuilder, SendStatus};
use actormq_tests::eventually;
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::*;

/// Send timeout of the test producers and the CLI runs.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

async fn producer(namesrv: SocketAddr, refresh: Duration) -> Producer {
    ProducerBuilder::new("t60-producer")
        .namesrv([namesrv.to_string()])
        // Generous: CI machines are shared, and a fresh broker may still be
        // preallocating its commit log when the first send arrives.
        .send_timeout(SEND_TIMEOUT)
        .route_refresh(refresh)
        .build()
        .await
        .expect("producer starts")
}

/// Every message of `topic` on `broker` (queues `0..queues`).
async fn pull_topic(broker: SocketAddr, topic: &str, queues: u32) -> Vec<StoredMessage> {
    let mut c = connect(broker).await;
    let mut all = Vec::new();
    for q in 0..queues {
        all.extend(pull_all(&mut c, topic, q).await);
    }
    all
}

fn body_set(msgs: &[StoredMessage]) -> BTreeSet<String> {
    msgs.iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect()
}

#[actix_rt::test]
async fn t60_sync_async_oneway_and_batch_sends_are_stored() {
    bounded(async {
        let node = combined(NO_ARGS);
        let topic = "t60-modes";
        create_topic(node.broker(), topic, 4).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 4).await;
        let p = producer(node.namesrv(), Duration::from_secs(30)).await;

        let mut expected = BTreeSet::new();
        let mut acked = Vec::new();
        for i in 0..8 {
            let body = format!("sync-{i}");
            let r = p
                .send(Message::new(topic, body.clone()))
                .await
                .expect("sync send");
            assert_eq!(r.status, SendStatus::SendOk);
            assert_eq!((r.topic.as_str(), r.broker.as_str()), (topic, "broker-a"));
            acked.push((r.queue_id, r.queue_offset, r.msg_id, body.clone()));
            expected.insert(body);
        }
        let futs: Vec<_> = (0..8)
            .map(|i| {
                let body = format!("async-{i}");
                expected.insert(body.clone());
                p.send_async(Message::new(topic, body))
            })
            .collect();
        for r in futures_util::future::join_all(futs).await {
            assert_eq!(r.expect("async send").status, SendStatus::SendOk);
        }
        for i in 0..5 {
            let body = format!("oneway-{i}");
            p.send_oneway(Message::new(topic, body.clone()))
                .await
                .expect("oneway send");
            expected.insert(body);
        }
        let batch: Vec<Message> = (0..10)
            .map(|i| {
                let body = format!("batch-{i}");
                expected.insert(body.clone());
                Message::new(topic, body)
            })
            .collect();
        let r = p.send_batch(&batch).await.expect("batch send");
        assert_eq!(r.msg_id.split(',').count(), 10);
        // The same (borrowed) batch again: stored again, with new unique keys.
        let again = p.send_batch(batch.as_slice()).await.expect("batch resend");
        assert_ne!(again.msg_id, r.msg_id);
        // Ordered sends: one key, one queue.
        let mut key_queues = BTreeSet::new();
        for i in 0..4 {
            let body = format!("ordered-{i}");
            let r = p
                .send_with_selector(Message::new(topic, body.clone()), "order-17")
                .await
                .expect("selector send");
            key_queues.insert(r.queue_id);
            expected.insert(body);
        }
        assert_eq!(key_queues.len(), 1, "one key keeps one queue");
        p.shutdown().await;

        let pulled = eventually(CONVERGE, || async {
            let all = pull_topic(node.broker(), topic, 4).await;
            if all.len() >= expected.len() + 10 {
                Ok(all)
            } else {
                Err(format!("{} of {} stored", all.len(), expected.len() + 10))
            }
        })
        .await
        .expect("every send stored");
        // Every body once, the resent batch's ten twice.
        assert_eq!(
            pulled.len(),
            expected.len() + 10,
            "nothing else stored twice"
        );
        assert_eq!(body_set(&pulled), expected);
        let keys: BTreeSet<&str> = pulled
            .iter()
            .map(|m| m.message.unique_key().expect("UNIQ_KEY stamped"))
            .collect();
        assert_eq!(keys.len(), pulled.len(), "unique keys are unique");
        for (queue, offset, msg_id, body) in acked {
            let m = pulled
                .iter()
                .find(|m| m.queue_id == queue && m.queue_offset == offset)
                .expect("acked position stored");
            assert_eq!(m.message.body, body.as_bytes());
            assert_eq!(m.msg_id().encode(), msg_id);
        }
        // Closed producer refuses.
        assert!(matches!(
            p.send(Message::new(topic, "late")).await,
            Err(ClientError::Shutdown)
        ));
    })
    .await;
}

fn split_broker(namesrv: SocketAddr) -> NodeProcess {
    NodeProcess::start(
        Bin::Broker,
        &[
            "--namesrv",
            &namesrv.to_string(),
            "--broker-name",
            "t60-b",
            "--cluster",
            "t60-cluster",
        ],
    )
    .expect("start actormq-broker")
}

#[actix_rt::test]
async fn t60_producer_keeps_sending_through_a_broker_restart() {
    bounded(async {
        let ns = NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv");
        let mut br = split_broker(ns.namesrv());
        let topic = "t60-restart";
        create_topic(br.broker(), topic, 2).await;
        wait_route(ns.namesrv(), topic, "t60-b", br.broker(), 2).await;
        let p = producer(ns.namesrv(), Duration::from_secs(30)).await;

        let mut acked = Vec::new();
        for i in 0..10 {
            let body = format!("before-{i}");
            p.send(Message::new(topic, body.clone()))
                .await
                .expect("send before restart");
            acked.push(body);
        }
        // Restart the broker (SIGKILL, then a new process on a new port)
        // on another thread while sends go on.
        let restart = std::thread::spawn(move || {
            br.restart().expect("broker restarts");
            br
        });
        let mut during_failed = 0;
        let mut i = 0;
        while !restart.is_finished() {
            let body = format!("during-{i}");
            i += 1;
            match p.send(Message::new(topic, body.clone())).await {
                Ok(_) => acked.push(body),
                Err(_) => during_failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let br = restart.join().expect("restart thread");
        // Once the broker is back, every send succeeds at once: the
        // restarted broker printed its ready line only after registering
        // its new address, so a send that finds the old address dead
        // refreshes the route and its retry reaches the new one.
        for i in 0..20 {
            let body = format!("after-{i}");
            p.send(Message::new(topic, body.clone()))
                .await
                .unwrap_or_else(|e| panic!("send {i} after restart: {e}"));
            acked.push(body);
        }
        eprintln!("sends failed during the restart: {during_failed}");
        p.shutdown().await;

        let stored = body_set(&pull_topic(br.broker(), topic, 2).await);
        for body in &acked {
            assert!(stored.contains(body), "acknowledged {body} stored");
        }
    })
    .await;
}

#[actix_rt::test]
async fn t60_a_down_broker_is_named_not_reported_as_no_route() {
    bounded(async {
        let ns = NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv");
        let mut br = split_broker(ns.namesrv());
        let topic = "t60-down";
        create_topic(br.broker(), topic, 2).await;
        wait_route(ns.namesrv(), topic, "t60-b", br.broker(), 2).await;
        let p = ProducerBuilder::new("t60-down")
            .namesrv([ns.namesrv().to_string()])
            .send_timeout(Duration::from_secs(3))
            .build()
            .await
            .expect("producer starts");
        p.send(Message::new(topic, "before"))
            .await
            .expect("send with the broker up");
        let addr = br.broker().to_string();
        br.kill().expect("kill the broker");
        let err = p
            .send(Message::new(topic, "after"))
            .await
            .expect_err("nobody to store it");
        let text = err.to_string();
        assert!(
            matches!(err, ClientError::BrokerUnreachable { .. }),
            "{err:?}"
        );
        assert!(text.contains(&addr) && text.contains("t60-b"), "{text}");
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t60_cached_routes_keep_a_producer_sending_while_the_namesrv_is_down() {
    bounded(async {
        let mut ns = NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv");
        let br = split_broker(ns.namesrv());
        let topic = "t60-ns-down";
        create_topic(br.broker(), topic, 2).await;
        wait_route(ns.namesrv(), topic, "t60-b", br.broker(), 2).await;
        // Refresh often, so several refreshes fail during the outage.
        let p = producer(ns.namesrv(), Duration::from_millis(100)).await;
        p.send(Message::new(topic, "before"))
            .await
            .expect("send with the namesrv up");

        ns.kill().expect("kill the namesrv");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut bodies = vec!["before".to_owned()];
        for i in 0..10 {
            let body = format!("outage-{i}");
            let r = p
                .send(Message::new(topic, body.clone()))
                .await
                .unwrap_or_else(|e| panic!("send {i} with the namesrv down: {e}"));
            assert_eq!(r.broker, "t60-b");
            bodies.push(body);
        }
        assert!(p.routes().cached(topic).is_some(), "route kept");
        // A topic never seen has no cached route to fall back on.
        assert!(matches!(
            p.send(Message::new("t60-unknown", "x")).await,
            Err(ClientError::AllNamesrvsDown)
        ));
        p.shutdown().await;
        let stored = body_set(&pull_topic(br.broker(), topic, 2).await);
        assert_eq!(stored, bodies.into_iter().collect());
    })
    .await;
}

// ------------------------------------------------------------------- CLI

/// The one stderr line of a failed run.
fn failure_line(out: &Output) -> String {
    assert!(!out.status.success(), "should fail: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err.trim_end().to_owned()
}

#[actix_rt::test]
async fn t60_cli_json_lines_carry_the_documented_fields() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        let topic = "t60-cli";

        let created = json_lines(&actormq(
            ns,
            &[
                "admin", "topic", "create", "-t", topic, "--queues", "2", "--json",
            ],
        ));
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["topic"], topic);
        assert_eq!(created[0]["broker"], "broker-a");

        let route = json_lines(&actormq(
            ns,
            &["admin", "topic", "route", "-t", topic, "--json"],
        ));
        assert_eq!(route.len(), 1);
        assert_eq!(route[0]["broker"], "broker-a");
        assert_eq!(route[0]["write_queues"], 2);
        assert_eq!(route[0]["master"], node.broker().to_string());

        let sent = json_lines(&actormq(
            ns,
            &[
                "produce", "-t", topic, "--count", "3", "--size", "16", "--tags", "A", "--keys",
                "K1 K2", "--prop", "p=1", "--json",
            ],
        ));
        assert_eq!(sent.len(), 3);
        for line in &sent {
            assert_eq!(line["status"], "SEND_OK");
            assert!(line["msg_id"].as_str().is_some_and(|s| !s.is_empty()));
            assert_eq!(line["topic"], topic);
            assert!(line["queue_id"].as_u64().is_some_and(|q| q < 2));
            assert!(line["queue_offset"].is_u64());
            assert_eq!(line["broker"], "broker-a");
        }
        let asynced = json_lines(&actormq(
            ns,
            &[
                "produce", "-t", topic, "--count", "4", "--mode", "async", "--json",
            ],
        ));
        assert_eq!(asynced.len(), 4);
        let oneway = json_lines(&actormq(
            ns,
            &[
                "produce", "-t", topic, "--mode", "oneway", "--body", "ow", "--json",
            ],
        ));
        assert_eq!(oneway, [serde_json::json!({"status": "SENT"})]);
        let keyed = json_lines(&actormq(
            ns,
            &[
                "produce",
                "-t",
                topic,
                "--count",
                "3",
                "--queue-key",
                "k",
                "--json",
            ],
        ));
        let queues: BTreeSet<_> = keyed.iter().map(|l| l["queue_id"].as_u64()).collect();
        assert_eq!(queues.len(), 1, "--queue-key keeps one queue");

        // 3 + 4 + 1 + 3 messages, as the status lines count them.
        let status = eventually(CONVERGE, || async {
            let lines = json_lines(&actormq(
                ns,
                &["admin", "topic", "status", "-t", topic, "--json"],
            ));
            let total: u64 = lines
                .iter()
                .map(|l| {
                    l["max_offset"].as_u64().unwrap_or(0) - l["min_offset"].as_u64().unwrap_or(0)
                })
                .sum();
            if total == 11 {
                Ok(lines)
            } else {
                Err(format!("{total} stored: {lines:?}"))
            }
        })
        .await
        .expect("every CLI send stored");
        assert_eq!(status.len(), 2);
        let pulled = pull_topic(node.broker(), topic, 2).await;
        let tagged = pulled
            .iter()
            .filter(|m| m.message.tags.as_deref() == Some("A"))
            .count();
        assert_eq!(tagged, 3);
        assert!(
            pulled
                .iter()
                .any(|m| m.message.properties.get("p").map(String::as_str) == Some("1"))
        );

        let topics = json_lines(&actormq(ns, &["admin", "topic", "list", "--json"]));
        assert!(topics.iter().any(|l| l["topic"] == topic));
        let brokers = json_lines(&actormq(ns, &["admin", "cluster", "list", "--json"]));
        assert!(
            brokers
                .iter()
                .any(|l| l["broker"] == "broker-a" && l["cluster"] == "DefaultCluster")
        );

        // Errors: one line on stderr, non-zero exit.
        let unknown = failure_line(&actormq(ns, &["admin", "topic", "route", "-t", "t60-nope"]));
        assert!(unknown.contains("does not exist"), "{unknown}");
        let bad_flag = failure_line(&actormq(ns, &["produce", "-t", topic, "--bogus"]));
        assert!(bad_flag.contains("--bogus"), "{bad_flag}");
        let down = failure_line(&actormq(
            "127.0.0.1:1".parse().unwrap(),
            &["admin", "topic", "list"],
        ));
        assert!(down.contains("name server"), "{down}");
        // -n pointed at the broker's port: said so, not "unknown request code".
        for args in [
            &["admin", "topic", "list"][..],
            &["produce", "-t", topic, "--body", "x"][..],
        ] {
            let wrong = failure_line(&actormq(node.broker(), args));
            assert!(
                wrong.contains(&format!("{} is not a name server", node.broker())),
                "{wrong}"
            );
        }

        let deleted = json_lines(&actormq(
            ns,
            &["admin", "topic", "delete", "-t", topic, "--json"],
        ));
        assert_eq!(deleted[0]["deleted"], true);
        wait_no_route(ns, topic).await;
    })
    .await;
}

/// Polls `cond` until it holds (failing the test after 30 s).
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let start = std::time::Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn t60_producer_services_restart_and_past_the_budget_sends_go_on() {
    bounded(async {
        let node = combined(NO_ARGS);
        let topic = "t60-svc";
        create_topic(node.broker(), topic, 2).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 2).await;
        let p = producer(node.namesrv(), Duration::from_secs(30)).await;
        p.send(Message::new(topic, "first")).await.expect("send");

        // A panic in the heartbeat service: restarted from its factory.
        until("the heartbeat service runs", || async {
            p.inject_heartbeat_panic("heartbeat broke (expected in this test)")
        })
        .await;
        until("one restart", || async { p.service_restarts().await == 1 }).await;
        assert_eq!(p.service_failure(), None);
        p.send(Message::new(topic, "second")).await.expect("send");

        // Past the budget (5 restarts within 60 s): given up, and said so;
        // sends still work (routes are fetched when a send needs one).
        for i in 2..=6u64 {
            until("the heartbeat service runs again", || async {
                p.inject_heartbeat_panic("heartbeat broke (expected in this test)")
            })
            .await;
            until("restarted or given up", || async {
                p.service_restarts().await >= i || p.service_failure().is_some()
            })
            .await;
        }
        until("given up", || async { p.service_failure().is_some() }).await;
        let reason = p.service_failure().unwrap();
        assert!(reason.contains("heartbeat"), "{reason}");
        p.send(Message::new(topic, "third")).await.expect("send");
        let stored = body_set(&pull_topic(node.broker(), topic, 2).await);
        for body in ["first", "second", "third"] {
            assert!(stored.contains(body), "{stored:?}");
        }
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t60_a_user_queue_selector_picks_the_queue() {
    bounded(async {
        let node = combined(NO_ARGS);
        let topic = "t60-selector";
        create_topic(node.broker(), topic, 4).await;
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 4).await;
        let p = producer(node.namesrv(), Duration::from_secs(30)).await;
        // A selector of our own: the queue named by the "shard" property.
        let by_shard = |queues: &[actormq_protocol::MessageQueue], msg: &Message| {
            let shard: usize = msg.properties.get("shard")?.parse().ok()?;
            Some(shard % queues.len())
        };
        for i in 0..8u32 {
            let mut m = Message::new(topic, format!("m{i}"));
            m.properties.insert("shard".into(), (i % 4).to_string());
            let r = p.send_with_queue_selector(m, by_shard).await.expect("send");
            assert_eq!(r.queue_id, i % 4, "message {i}");
        }
        // A selector that picks nothing refuses the send.
        let err = p
            .send_with_queue_selector(Message::new(topic, "x"), by_shard)
            .await
            .expect_err("no shard: no queue");
        assert!(matches!(err, ClientError::Invalid(_)), "{err:?}");
        let stored = pull_topic(node.broker(), topic, 4).await;
        for m in &stored {
            let i: u32 = String::from_utf8_lossy(&m.message.body)[1..]
                .parse()
                .unwrap();
            assert_eq!(m.queue_id, i % 4);
        }
        assert_eq!(stored.len(), 8);
        p.shutdown().await;
    })
    .await;
}

/// The CLI with this module's timeout.
fn actormq(namesrv: SocketAddr, args: &[&str]) -> Output {
    let timeout = SEND_TIMEOUT.as_millis().to_string();
    let mut all = vec!["--timeout-ms", timeout.as_str()];
    all.extend_from_slice(args);
    crate::common::actormq(namesrv, &all)
}

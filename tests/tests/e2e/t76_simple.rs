//! The simple (pop) consumer against a child-process combined node: the
//! SDK's `SimpleConsumer` (receive, ack, change of invisible duration,
//! stale receipts, a SIGKILL of the broker with deliveries in flight) and
//! `actormq consume --simple` (`--fail-every`, retries ending in the
//! group's dead-letter queue, `--orderly` keeping queue order through
//! failures).
//!
//! Every wait is on an event (a receive that returns, a command's output)
//! with a bound; invisible durations of 1–2 s keep it fast.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actormq_protocol::{Message, ResponseCode};
use actormq_sdk::consumer::{ConsumerError, Received, SimpleConsumer};
use actormq_sdk::{Producer, ProducerBuilder};
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::{actormq, bounded, json_lines};

const WAIT: Duration = Duration::from_secs(40);
const ONE_S: Duration = Duration::from_secs(1);

fn node() -> NodeProcess {
    NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node")
}

async fn producer(namesrv: SocketAddr) -> Producer {
    ProducerBuilder::new("t76-producer")
        .namesrv([namesrv.to_string()])
        .build()
        .await
        .expect("producer")
}

fn consumer(namesrv: SocketAddr, group: &str, topic: &str) -> SimpleConsumer {
    SimpleConsumer::new(
        group,
        &namesrv.to_string(),
        topic,
        slog::Logger::root(slog::Discard, slog::o!()),
    )
    .expect("simple consumer")
    .with_await_duration(ONE_S)
}

fn body(r: &Received) -> String {
    String::from_utf8_lossy(&r.message.message.body).into_owned()
}

/// Receives until `n` messages came (bounded; errors while the broker
/// (re)registers are retried).
async fn receive_n(c: &SimpleConsumer, n: usize, invisible: Duration) -> Vec<Received> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            start.elapsed() < WAIT,
            "only {} of {n} received: {out:?}",
            out.len()
        );
        match c.receive(32, invisible).await {
            Ok(got) => out.extend(got),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(100)).await,
        }
    }
    out
}

fn invalid_handle(e: ConsumerError) -> String {
    match e {
        ConsumerError::Service(s) if s.code == ResponseCode::InvalidReceiptHandle => s.remark,
        other => panic!("expected INVALID_RECEIPT_HANDLE, got {other}"),
    }
}

#[actix_rt::test]
async fn t76_receive_ack_redeliver_and_change_invisible_duration() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let topic = "t76-simple";
        let p = producer(ns).await;
        for b in ["a", "b", "c"] {
            p.send(Message::new(topic, b)).await.unwrap();
        }
        let c = consumer(ns, "t76-g", topic);
        let received_at = Instant::now();
        let got = receive_n(&c, 3, ONE_S).await;
        let mut bodies: Vec<String> = got.iter().map(body).collect();
        bodies.sort();
        assert_eq!(bodies, ["a", "b", "c"]);
        for r in &got {
            assert_eq!(r.message.reconsume_times, 0);
            assert_eq!(r.message.message.topic, topic);
        }
        // "a" and "b" acked, "c" left; "b" extended to 3 s first.
        let a = got.iter().find(|r| body(r) == "a").unwrap();
        let b = got.iter().find(|r| body(r) == "b").unwrap();
        c.ack(&a.receipt).await.unwrap();
        let remark = invalid_handle(c.ack(&a.receipt).await.unwrap_err());
        assert!(remark.contains("stale"), "{remark}");
        let b2 = c
            .change_invisible_duration(&b.receipt, Duration::from_secs(3))
            .await
            .unwrap();
        invalid_handle(c.ack(&b.receipt).await.unwrap_err());

        // "c" comes back after its 1 s, once, reconsume times 1; "b" does
        // not come back at its old time.
        let back = receive_n(&c, 1, Duration::from_secs(10)).await;
        assert!(received_at.elapsed() >= ONE_S);
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(body(&back[0]), "c");
        assert_eq!(back[0].message.reconsume_times, 1);
        c.ack(&back[0].receipt).await.unwrap();
        // Acked in time with its new receipt: "b" never comes back.
        c.ack(&b2).await.unwrap();
        let more = c.receive(32, ONE_S).await.unwrap();
        assert!(more.is_empty(), "{more:?}");
        // Past "b"'s old and new times: still nothing.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            let more = c.receive(32, ONE_S).await.unwrap();
            assert!(more.is_empty(), "acked message redelivered: {more:?}");
        }
        c.shutdown();
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t76_sigkill_keeps_in_flight_deliveries_and_acks() {
    bounded(async {
        let mut node = node();
        let topic = "t76-kill";
        let group = "t76-kill-g";
        let p = producer(node.namesrv()).await;
        for b in ["acked", "unacked"] {
            p.send(Message::new(topic, b)).await.unwrap();
        }
        p.shutdown().await;
        let c = consumer(node.namesrv(), group, topic);
        let got = receive_n(&c, 2, Duration::from_secs(2)).await;
        let acked = got.iter().find(|r| body(r) == "acked").unwrap();
        c.ack(&acked.receipt).await.unwrap();
        c.shutdown();

        node.kill().expect("SIGKILL");
        node.restart().expect("restart after SIGKILL");
        let c = consumer(node.namesrv(), group, topic);
        let back = receive_n(&c, 1, Duration::from_secs(10)).await;
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!(body(&back[0]), "unacked");
        assert_eq!(back[0].message.reconsume_times, 1);
        c.ack(&back[0].receipt).await.unwrap();
        // The acked one never comes back (its checkpoint is due by now).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            let more = c.receive(32, ONE_S).await.unwrap();
            assert!(more.is_empty(), "redelivered after restart: {more:?}");
        }
        c.shutdown();
    })
    .await;
}

#[actix_rt::test]
async fn t76_cli_simple_fail_every_and_dead_letters() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let p = producer(ns).await;
        // --fail-every 2: deliveries 2 and 4 are not acked and come back.
        let topic = "t76-cli";
        for i in 0..4 {
            p.send(Message::new(topic, format!("m{i}"))).await.unwrap();
        }
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t76-cli-g",
                "--simple",
                "--invisible-ms",
                "1000",
                "--fail-every",
                "2",
                "--count",
                "4",
                "--idle-exit-ms",
                "10000",
                "--json",
            ],
        );
        let lines = json_lines(&out);
        let failed: Vec<_> = lines.iter().filter(|l| l["failed"] == true).collect();
        let ok: Vec<_> = lines.iter().filter(|l| l.get("failed").is_none()).collect();
        assert_eq!(ok.len(), 4, "{lines:?}");
        assert!(failed.len() >= 2, "{lines:?}");
        let mut bodies: Vec<&str> = ok.iter().map(|l| l["body"].as_str().unwrap()).collect();
        bodies.sort();
        assert_eq!(bodies, ["m0", "m1", "m2", "m3"]);
        // Each failed delivery comes back later with reconsume times one
        // higher, under its topic, without the receipt in its properties.
        for (i, f) in lines.iter().enumerate() {
            assert_eq!(f["topic"], topic);
            assert!(f["props"].get("POP_CK").is_none(), "{f}");
            if f["failed"] == true {
                let rt = f["reconsume_times"].as_u64().unwrap();
                assert!(
                    lines[i + 1..]
                        .iter()
                        .any(|l| l["body"] == f["body"]
                            && l["reconsume_times"].as_u64() == Some(rt + 1)),
                    "{f} never came back: {lines:?}"
                );
            }
        }

        // A group with 1 retry whose consumer always fails: delivered
        // twice, then a dead letter, which `admin dlq resend` finds.
        let group = "t76-dlq-g";
        let out = actormq(
            ns,
            &["admin", "group", "create", "-g", group, "--retry-max", "1"],
        );
        assert!(out.status.success(), "{out:?}");
        p.send(Message::new("t76-dlq", "poison")).await.unwrap();
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                "t76-dlq",
                "-g",
                group,
                "--simple",
                "--invisible-ms",
                "1000",
                "--fail-every",
                "1",
                "--idle-exit-ms",
                "4000",
                "--json",
            ],
        );
        let lines = json_lines(&out);
        let times: Vec<u64> = lines
            .iter()
            .map(|l| l["reconsume_times"].as_u64().unwrap())
            .collect();
        assert_eq!(times, [0, 1], "{lines:?}");
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < WAIT, "no dead letter");
            let out = actormq(ns, &["admin", "dlq", "resend", "-g", group, "--json"]);
            let lines = json_lines(&out);
            let resent: Vec<_> = lines.iter().filter(|l| l.get("msg_id").is_some()).collect();
            if !resent.is_empty() {
                assert_eq!(resent.len(), 1, "{lines:?}");
                assert_eq!(resent[0]["topic"], "t76-dlq");
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
        // Refused, not ignored.
        let out = actormq(
            ns,
            &[
                "consume", "-t", "t76-dlq", "-g", group, "--simple", "--from", "first",
            ],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not available yet"));
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t76_cli_simple_orderly_keeps_queue_order_through_failures() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let topic = "t76-fifo";
        let out = actormq(
            ns,
            &["admin", "topic", "create", "-t", topic, "--queues", "1"],
        );
        assert!(out.status.success(), "{out:?}");
        let p = producer(ns).await;
        for i in 0..4 {
            p.send(Message::new(topic, format!("m{i}"))).await.unwrap();
        }
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t76-fifo-g",
                "--simple",
                "--orderly",
                "--invisible-ms",
                "1000",
                "--fail-every",
                "2",
                "--count",
                "4",
                "--idle-exit-ms",
                "10000",
                "--json",
            ],
        );
        let lines = json_lines(&out);
        let ok: Vec<&str> = lines
            .iter()
            .filter(|l| l.get("failed").is_none())
            .map(|l| l["body"].as_str().unwrap())
            .collect();
        // Handled in queue order although every second delivery failed.
        assert_eq!(ok, ["m0", "m1", "m2", "m3"], "{lines:?}");
        let failed = lines.iter().filter(|l| l["failed"] == true).count();
        assert!(failed >= 2, "{lines:?}");
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t76_cli_simple_filters_by_tag_and_sql() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let topic = "t76-filter";
        let p = producer(ns).await;
        for (i, tag) in ["created", "paid", "shipped", "paid"].iter().enumerate() {
            let mut m = Message::new(topic, format!("m{i}"));
            m.tags = Some((*tag).into());
            m.properties.insert("amount".into(), format!("{}", i * 100));
            p.send(m).await.unwrap();
        }
        let consume = |group: &'static str, filter: [&'static str; 2], count: &'static str| {
            let out = actormq(
                ns,
                &[
                    "consume",
                    "-t",
                    topic,
                    "-g",
                    group,
                    "--simple",
                    filter[0],
                    filter[1],
                    "--count",
                    count,
                    "--idle-exit-ms",
                    "3000",
                    "--json",
                ],
            );
            let mut bodies: Vec<String> = json_lines(&out)
                .iter()
                .map(|l| l["body"].as_str().unwrap().to_string())
                .collect();
            bodies.sort();
            bodies
        };
        // Idle exit after the matching ones: nothing else came.
        assert_eq!(
            consume("t76-tags", ["--tag-expr", "paid"], "3"),
            ["m1", "m3"]
        );
        assert_eq!(
            consume("t76-sql", ["--sql", "amount >= 200"], "3"),
            ["m2", "m3"]
        );
        p.shutdown().await;
    })
    .await;
}

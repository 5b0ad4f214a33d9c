//! Delayed messages, broker-side retries and dead letters against a
//! child-process combined node with a short delay table
//! (`message_delay_level`), driven by the SDK and the `actormq` CLI.
//!
//! Every wait is on an event (deliveries counted by the listener, a
//! command's output) with a bound; the delay table makes the events come
//! in seconds, not minutes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_protocol::{Message, StoredMessage};
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_sdk::{Producer, ProducerBuilder};
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::{actormq, bounded, json_lines, wait_for};

const WAIT: Duration = Duration::from_secs(40);

/// Levels 1-2 take 1 s, the rest (retries start at level 3) 2 s.
const LEVELS: &str = "1s 1s 2s 2s 2s 2s";

fn node() -> NodeProcess {
    NodeProcess::start_with_env(
        Bin::Node,
        &[] as &[&str],
        &[("ACTORMQ_BROKER__MESSAGE_DELAY_LEVEL", LEVELS)],
    )
    .expect("start a combined node")
}

/// One delivery as the listener saw it.
#[derive(Debug, Clone)]
struct Delivery {
    topic: String,
    body: String,
    reconsume_times: u32,
}

type Log = Arc<Mutex<Vec<Delivery>>>;

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

async fn producer(namesrv: std::net::SocketAddr) -> Producer {
    ProducerBuilder::new("t72-producer")
        .namesrv([namesrv.to_string()])
        .build()
        .await
        .expect("producer")
}

async fn consumer(
    namesrv: std::net::SocketAddr,
    group: &str,
    topic: &str,
    log: Log,
    fail: impl Fn(&StoredMessage, u32) -> bool + Send + Sync + 'static,
) -> PushConsumer {
    PushConsumerBuilder::new(group)
        .namesrv(&namesrv.to_string())
        .subscribe(topic, "*")
        .consume_from(ConsumeFrom::First)
        .configure(|c| {
            c.commit_interval_ms = 200;
            c.rebalance_interval_ms = 1_000;
        })
        .listener(move |msgs: &[StoredMessage]| {
            let mut log = log.lock().unwrap();
            for m in msgs {
                let seen = log.iter().filter(|d| d.body == body(m)).count() as u32;
                // Decided before the delivery is visible to the test.
                let failed = fail(m, seen);
                log.push(Delivery {
                    topic: m.message.topic.clone(),
                    body: body(m),
                    reconsume_times: m.reconsume_times,
                });
                if failed {
                    return ConsumeResult::Later;
                }
            }
            ConsumeResult::Success
        })
        .start()
        .await
        .expect("consumer")
}

fn deliveries_of(log: &Log, b: &str) -> Vec<Delivery> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|d| d.body == b)
        .cloned()
        .collect()
}

#[actix_rt::test]
async fn t72_delay_levels_park_then_deliver() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let p = producer(ns).await;
        let log: Log = Log::default();
        // A consumer already waiting: a delayed message must not reach it
        // before its level's delay.
        p.send(Message::new("t72-delay", "warm-up")).await.unwrap();
        let c = consumer(ns, "t72-delay-g", "t72-delay", log.clone(), |_, _| false).await;
        wait_for(WAIT, "the warm-up message", || {
            !deliveries_of(&log, "warm-up").is_empty()
        })
        .await;
        let mut m = Message::new("t72-delay", "delayed");
        m.delay = actormq_protocol::Delay::Level(3); // 2 s with LEVELS
        let sent_at = Instant::now();
        let r = p.send(m).await.unwrap();
        assert_eq!(r.status, actormq_sdk::SendStatus::SendOk);
        wait_for(WAIT, "the delayed message", || {
            !deliveries_of(&log, "delayed").is_empty()
        })
        .await;
        let waited = sent_at.elapsed();
        assert!(
            waited >= Duration::from_millis(1_900),
            "delivered after {waited:?}"
        );
        let d = deliveries_of(&log, "delayed");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].topic, "t72-delay");
        // The CLI's --delay-level works.
        let out = actormq(
            ns,
            &[
                "produce",
                "-t",
                "t72-delay",
                "--body",
                "cli",
                "--delay-level",
                "1",
                "--json",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(json_lines(&out)[0]["status"], "SEND_OK");
        wait_for(WAIT, "the CLI's delayed message", || {
            !deliveries_of(&log, "cli").is_empty()
        })
        .await;
        c.shutdown().await;
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t72_failed_messages_retry_then_die_and_are_resent() {
    bounded(async {
        let mut node = node();
        let ns = node.namesrv();
        let group = "t72-g";
        let topic = "t72-retry";
        // A group with 2 retries: the third failure is a dead letter.
        let out = actormq(
            ns,
            &["admin", "group", "create", "-g", group, "--retry-max", "2"],
        );
        assert!(out.status.success(), "{out:?}");
        let p = producer(ns).await;
        // body "k<K>" fails K times, then succeeds; "poison" always fails.
        let bodies = ["k0", "k1", "k2", "poison"];
        for b in bodies {
            p.send(Message::new(topic, b)).await.unwrap();
        }
        let log: Log = Log::default();
        let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = healed.clone();
        let c = consumer(ns, group, topic, log.clone(), move |m, seen| {
            let b = body(m);
            match (b.as_str(), b.strip_prefix('k')) {
                ("poison", _) => !h.load(std::sync::atomic::Ordering::SeqCst),
                (_, Some(k)) => seen < k.parse::<u32>().unwrap_or(0),
                // Anything else fails once.
                _ => seen < 1,
            }
        })
        .await;
        for k in 0..3u32 {
            let b = format!("k{k}");
            wait_for(WAIT, &format!("{b} delivered {} times", k + 1), || {
                deliveries_of(&log, &b).len() as u32 > k
            })
            .await;
        }
        wait_for(WAIT, "poison delivered 3 times", || {
            deliveries_of(&log, "poison").len() >= 3
        })
        .await;
        for k in 0..3u32 {
            let d = deliveries_of(&log, &format!("k{k}"));
            assert_eq!(d.len() as u32, k + 1, "k{k}: {d:?}");
            let times: Vec<u32> = d.iter().map(|d| d.reconsume_times).collect();
            assert_eq!(times, (0..=k).collect::<Vec<_>>(), "k{k}");
            // A retried message shows the topic it was sent to.
            assert!(d.iter().all(|d| d.topic == topic), "{d:?}");
        }
        // The dead letter: resend it (the broker may still be storing the
        // third send-back: poll the command, bounded). From now on it is
        // consumed.
        healed.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut resent = Vec::new();
        let start = Instant::now();
        while resent.is_empty() {
            assert!(start.elapsed() < WAIT, "no dead letter to resend");
            let out = actormq(ns, &["admin", "dlq", "resend", "-g", group, "--json"]);
            assert!(out.status.success(), "{out:?}");
            let lines = json_lines(&out);
            let summary = lines.last().unwrap().clone();
            resent.extend(lines.into_iter().filter(|l| l.get("msg_id").is_some()));
            assert_eq!(summary["resent"].as_u64(), Some(resent.len() as u64));
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(resent.len(), 1, "{resent:?}");
        assert_eq!(resent[0]["topic"], topic);
        // Resent, it comes back once, with reconsume times 0; it was never
        // delivered from the DLQ (3 failed deliveries, then this one).
        wait_for(WAIT, "the resent dead letter", || {
            deliveries_of(&log, "poison").len() >= 4
        })
        .await;
        assert_eq!(deliveries_of(&log, "poison").len(), 4);
        let last = deliveries_of(&log, "poison").pop().unwrap();
        assert_eq!((last.reconsume_times, last.topic.as_str()), (0, topic));
        // A second resend finds nothing new.
        let out = actormq(ns, &["admin", "dlq", "resend", "-g", group, "--json"]);
        assert_eq!(json_lines(&out).last().unwrap()["resent"], 0);

        // A broker restart between the send-back and the redelivery: the
        // parked retry survives and is delivered once ("again" fails once).
        log.lock().unwrap().clear();
        p.send(Message::new(topic, "again")).await.unwrap();
        wait_for(WAIT, "the first delivery", || {
            !deliveries_of(&log, "again").is_empty()
        })
        .await;
        // The offset moves past it only once the broker took it back.
        let start = Instant::now();
        loop {
            let out = actormq(
                ns,
                &[
                    "admin", "group", "progress", "-g", group, "-t", topic, "--json",
                ],
            );
            if json_lines(&out)
                .last()
                .and_then(|l| l["total_lag"].as_u64())
                == Some(0)
            {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "offset never passed the failed message"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        c.shutdown().await;
        node.terminate().expect("graceful stop");
        node.restart().expect("restart");
        let ns = node.namesrv();
        let c = consumer(ns, group, topic, log.clone(), |_, _| false).await;
        wait_for(WAIT, "the retry after the restart", || {
            deliveries_of(&log, "again").len() >= 2
        })
        .await;
        let d = deliveries_of(&log, "again");
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[1].reconsume_times, 1);
        c.shutdown().await;
        p.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t72_cli_fail_every_comes_back_through_the_retry_topic() {
    bounded(async {
        let node = node();
        let ns = node.namesrv();
        let topic = "t72-cli";
        for i in 0..4 {
            let out = actormq(ns, &["produce", "-t", topic, "--body", &format!("m{i}")]);
            assert!(out.status.success(), "{out:?}");
        }
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t72-cli-g",
                "--from",
                "first",
                "--fail-every",
                "2",
                "--count",
                "4",
                "--idle-exit-ms",
                "15000",
                "--json",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        let lines = json_lines(&out);
        let ok: BTreeMap<String, u64> = lines
            .iter()
            .filter(|l| l.get("failed").is_none())
            .map(|l| {
                (
                    l["body"].as_str().unwrap().to_owned(),
                    l["reconsume_times"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(ok.len(), 4, "{lines:?}");
        // Failed deliveries are printed, flagged.
        assert!(lines.iter().any(|l| l["failed"] == true), "{lines:?}");
        assert!(ok.values().any(|t| *t > 0), "{lines:?}");
        assert!(lines.iter().all(|l| l["topic"] == topic), "{lines:?}");
    })
    .await;
}

#[actix_rt::test]
async fn t72_delivery_at_a_time_is_on_time_and_survives_a_kill() {
    bounded(async {
        let mut node = node();
        let ns = node.namesrv();
        let topic = "t72-timer";
        let p = producer(ns).await;
        let log: Log = Log::default();
        p.send(Message::new(topic, "warm-up")).await.unwrap();
        let c = consumer(ns, "t72-timer-g", topic, log.clone(), |_, _| false).await;
        wait_for(WAIT, "the warm-up message", || {
            !deliveries_of(&log, "warm-up").is_empty()
        })
        .await;
        // A time past is delivered at once; --delay-ms 1500 after 1.5 s,
        // at most a second late.
        let out = actormq(
            ns,
            &[
                "produce",
                "-t",
                topic,
                "--body",
                "past",
                "--deliver-at-ms",
                "1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        let sent = actormq_tests::now_ms();
        let out = actormq(
            ns,
            &[
                "produce",
                "-t",
                topic,
                "--body",
                "timed",
                "--delay-ms",
                "1500",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        wait_for(WAIT, "the timed message", || {
            !deliveries_of(&log, "timed").is_empty()
        })
        .await;
        let late = actormq_tests::now_ms() - sent;
        assert!((1_500..2_600).contains(&late), "delivered after {late} ms");
        assert_eq!(deliveries_of(&log, "past").len(), 1);
        // Past the broker's max: refused, one line.
        let far = (actormq_tests::now_ms() + 500 * 86_400_000).to_string();
        let out = actormq(
            ns,
            &[
                "produce",
                "-t",
                topic,
                "--body",
                "x",
                "--deliver-at-ms",
                &far,
            ],
        );
        assert!(!out.status.success());

        // Parked, then the broker is killed before it is due: after the
        // restart it is delivered once, when due.
        let due = actormq_tests::now_ms() + 3_000;
        let mut m = Message::new(topic, "survivor");
        m.delay = actormq_protocol::Delay::DeliverAtMs(due);
        p.send(m).await.unwrap();
        c.shutdown().await;
        p.shutdown().await;
        node.kill().expect("SIGKILL");
        node.restart().expect("restart");
        let ns = node.namesrv();
        let c = consumer(ns, "t72-timer-g", topic, log.clone(), |_, _| false).await;
        wait_for(WAIT, "the timed message after the restart", || {
            !deliveries_of(&log, "survivor").is_empty()
        })
        .await;
        assert!(actormq_tests::now_ms() >= due, "not before it was due");
        c.shutdown().await;
        assert_eq!(deliveries_of(&log, "survivor").len(), 1);
    })
    .await;
}

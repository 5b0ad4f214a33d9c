//! Offset reset by time (`actormq admin offset reset`,
//! `INVOKE_BROKER_TO_RESET_OFFSET` → `RESET_CONSUMER_CLIENT_OFFSET`) and
//! start positions by time, against a child-process combined node.
//!
//! The reset time is picked from the store timestamps of what was sent,
//! not from sleeps: batch 1 is sent, its last store timestamp `L` read
//! back, the test waits until the clock has passed `L + 1` (a loop over
//! `SystemTime` with a yield), and batch 2 is sent. Every batch-2 message
//! is then stored at or after `TS = L + 1` and every batch-1 one before it,
//! so a reset to `TS` lands each queue on its first batch-2 message.
//!
//! Deliveries are counted per body and compared after an event (every
//! consumer idle and the group's committed offsets at the queues' max
//! offsets, see `wait_drained`), never after a quiet period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use actormq_protocol::request::{QueryConsumerOffsetRequest, SendMessageRequest};
use actormq_protocol::{Bytes, ResponseCode, StoredMessage};
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_tests::client::Client;
use actormq_tests::now_ms;

use crate::common::{
    NO_ARGS, actormq, bounded, combined, connect, create_topic, max_offset, pull_all_at_least,
    wait_for, wait_route,
};

const QUEUES: u32 = 2;
const WAIT: Duration = Duration::from_secs(30);

/// Deliveries per body.
type Counts = Arc<Mutex<BTreeMap<String, u32>>>;

/// Holds listener calls while closed; counts the calls that entered.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    entered: AtomicU64,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().expect("gate") = closed;
        self.opened.notify_all();
    }

    fn pass(&self) {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock().expect("gate");
        while *closed {
            closed = self.opened.wait(closed).expect("gate");
        }
    }
}

async fn create_routed(namesrv: SocketAddr, broker: SocketAddr, topic: &str) {
    create_topic(broker, topic, QUEUES).await;
    wait_route(namesrv, topic, "broker-a", broker, QUEUES).await;
}

/// Sends `prefix-0 .. prefix-(n-1)` round robin over the queues.
async fn send(broker: SocketAddr, topic: &str, prefix: &str, n: usize) -> Vec<String> {
    let mut c = connect(broker).await;
    let mut bodies = Vec::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        let req = SendMessageRequest {
            producer_group: "t71-producer".into(),
            topic: topic.into(),
            queue_id: (i as u32) % QUEUES,
            ..SendMessageRequest::default()
        };
        c.call(&req, Bytes::from(body.clone()))
            .await
            .expect("send call")
            .ok()
            .unwrap_or_else(|e| panic!("send {body}: {e}"));
        bodies.push(body);
    }
    bodies
}

/// Every stored message of the topic, read back with plain pulls.
async fn stored(broker: SocketAddr, topic: &str, per_queue: u64) -> Vec<StoredMessage> {
    let mut c = connect(broker).await;
    let mut out = Vec::new();
    for q in 0..QUEUES {
        out.extend(pull_all_at_least(&mut c, topic, q, per_queue).await);
    }
    out
}

/// Sends batch 1 (`b1-*`), waits for the clock to pass its last store
/// timestamp, sends batch 2 (`b2-*`); returns the reset time `TS` (the
/// first millisecond after batch 1) and the first offset of batch 2 on
/// each queue.
async fn two_batches(broker: SocketAddr, topic: &str, n: usize) -> (u64, Vec<u64>) {
    send(broker, topic, "b1", n).await;
    let per_queue = (n as u64) / u64::from(QUEUES);
    let b1 = stored(broker, topic, per_queue).await;
    let last = b1.iter().map(|m| m.store_timestamp_ms).max().expect("b1");
    let ts = last + 1;
    // The event: the clock is past TS (no fixed sleep).
    while now_ms() <= ts {
        tokio::task::yield_now().await;
    }
    send(broker, topic, "b2", n).await;
    let all = stored(broker, topic, 2 * per_queue).await;
    let mut first_b2 = vec![u64::MAX; QUEUES as usize];
    for m in &all {
        let body = String::from_utf8_lossy(&m.message.body).into_owned();
        if body.starts_with("b2-") {
            assert!(m.store_timestamp_ms >= ts, "{body} stored before TS");
            let q = m.queue_id as usize;
            first_b2[q] = first_b2[q].min(m.queue_offset);
        } else {
            assert!(m.store_timestamp_ms < ts, "{body} stored at or after TS");
        }
    }
    assert_eq!(first_b2, vec![per_queue; QUEUES as usize]);
    (ts, first_b2)
}

async fn consumer(ns: SocketAddr, group: &str, topic: &str, counts: &Counts) -> PushConsumer {
    consumer_from(ns, group, topic, counts, ConsumeFrom::First, None).await
}

/// A push consumer with one worker counting deliveries into `counts`
/// (after passing `gate`, when given).
async fn consumer_from(
    ns: SocketAddr,
    group: &str,
    topic: &str,
    counts: &Counts,
    from: ConsumeFrom,
    gate: Option<Arc<Gate>>,
) -> PushConsumer {
    let counts = counts.clone();
    PushConsumerBuilder::new(group)
        .namesrv(&ns.to_string())
        .subscribe(topic, "*")
        .consume_from(from)
        .workers(1)
        .listener(move |msgs: &[StoredMessage]| {
            if let Some(g) = &gate {
                g.pass();
            }
            let mut c = counts.lock().expect("counts");
            for m in msgs {
                *c.entry(String::from_utf8_lossy(&m.message.body).into_owned())
                    .or_default() += 1;
            }
            ConsumeResult::Success
        })
        .start()
        .await
        .expect("start push consumer")
}

fn count(counts: &Counts, prefix: &str) -> (usize, u32) {
    let c = counts.lock().expect("counts");
    let of: Vec<u32> = c
        .iter()
        .filter(|(b, _)| b.starts_with(prefix))
        .map(|(_, n)| *n)
        .collect();
    (of.len(), of.iter().sum())
}

async fn committed(c: &mut Client, group: &str, topic: &str) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for q in 0..QUEUES {
        let req = QueryConsumerOffsetRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: q,
        };
        let reply = c.call(&req, Bytes::new()).await.expect("query offset");
        out.push(match reply.code {
            ResponseCode::QueryNotFound => None,
            _ => Some(reply.ok().expect("query offset").offset),
        });
    }
    out
}

/// Waits until `consumer` holds nothing pulled and unconsumed and the
/// group's committed offset of every queue is its max offset: from then on
/// nothing sent before can be delivered again unless offsets move.
async fn wait_drained(broker: SocketAddr, group: &str, topic: &str, consumer: &PushConsumer) {
    let mut c = connect(broker).await;
    let start = Instant::now();
    loop {
        let idle = consumer.cached_messages() == 0;
        consumer.commit_now().await;
        let mut max = Vec::new();
        for q in 0..QUEUES {
            max.push(Some(max_offset(&mut c, topic, q).await));
        }
        let done = committed(&mut c, group, topic).await;
        if idle && consumer.cached_messages() == 0 && done == max {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{group} never drained {topic}: max {max:?}, committed {done:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `admin offset reset --json`: the new offset of each queue, by queue id.
fn reset(ns: SocketAddr, group: &str, topic: &str, ts: u64) -> Vec<u64> {
    let ts = ts.to_string();
    let out = actormq(
        ns,
        &[
            "admin",
            "offset",
            "reset",
            "-g",
            group,
            "-t",
            topic,
            "--timestamp-ms",
            &ts,
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "reset failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offsets = vec![u64::MAX; QUEUES as usize];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        assert_eq!(v["group"], group);
        assert_eq!(v["topic"], topic);
        assert_eq!(v["broker"], "broker-a");
        offsets[v["queue_id"].as_u64().expect("queue_id") as usize] =
            v["offset"].as_u64().expect("offset");
    }
    offsets
}

#[actix_rt::test]
async fn t71_reset_back_and_forward_while_the_consumer_runs() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t71-live", "t71-live-g");
        create_routed(ns, broker, topic).await;
        let (ts, first_b2) = two_batches(broker, topic, 20).await;

        let counts = Counts::default();
        let gate = Arc::new(Gate::default());
        let running = consumer_from(
            ns,
            group,
            topic,
            &counts,
            ConsumeFrom::First,
            Some(gate.clone()),
        )
        .await;
        wait_drained(broker, group, topic, &running).await;
        assert_eq!(count(&counts, "b1-"), (20, 20));
        assert_eq!(count(&counts, "b2-"), (20, 20));

        // Back to TS: batch 2 again, batch 1 not, without a restart.
        assert_eq!(reset(ns, group, topic, ts), first_b2);
        wait_for(WAIT, "batch 2 delivered again", || {
            count(&counts, "b2-").1 == 40
        })
        .await;
        wait_drained(broker, group, topic, &running).await;
        assert_eq!(count(&counts, "b1-"), (20, 20), "batch 1 not again");
        assert_eq!(count(&counts, "b2-"), (20, 40), "batch 2 exactly twice");

        // Forward, past a backlog: the listener (one worker) is held on the
        // first message of batch 3, the rest of it waits in the consumer.
        gate.set(true);
        let entered = gate.entered.load(Ordering::SeqCst);
        send(broker, topic, "b3", 20).await;
        wait_for(WAIT, "a batch-3 delivery held", || {
            gate.entered.load(Ordering::SeqCst) > entered
        })
        .await;
        assert!(running.cached_messages() > 0);
        let max = reset(ns, group, topic, now_ms() + 3_600_000);
        let mut c = connect(broker).await;
        for q in 0..QUEUES {
            assert_eq!(max[q as usize], max_offset(&mut c, topic, q).await);
        }
        // Applied by the running consumer: the queues were taken again at
        // the end, so nothing is cached any more (the held message belongs
        // to a released queue).
        wait_for(WAIT, "the reset applied", || running.cached_messages() == 0).await;
        gate.set(false);
        send(broker, topic, "b4", 4).await;
        wait_for(WAIT, "batch 4", || count(&counts, "b4-").1 == 4).await;
        wait_drained(broker, group, topic, &running).await;
        assert_eq!(
            count(&counts, "b3-"),
            (1, 1),
            "batch 3 skipped but the one in the listener"
        );
        assert_eq!(count(&counts, "b1-"), (20, 20));
        assert_eq!(count(&counts, "b2-"), (20, 40));
        assert_eq!(count(&counts, "b4-"), (4, 4));
        running.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t71_reset_with_no_consumer_online_applies_to_the_next_one() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t71-offline", "t71-offline-g");
        create_routed(ns, broker, topic).await;
        let (ts, first_b2) = two_batches(broker, topic, 20).await;

        let first = Counts::default();
        let c1 = consumer(ns, group, topic, &first).await;
        wait_drained(broker, group, topic, &c1).await;
        c1.shutdown().await;
        assert_eq!(count(&first, "b2-"), (20, 20));

        // Back, nobody online: the broker's committed offsets move.
        assert_eq!(reset(ns, group, topic, ts), first_b2);
        let mut c = connect(broker).await;
        let want: Vec<Option<u64>> = first_b2.iter().map(|o| Some(*o)).collect();
        assert_eq!(committed(&mut c, group, topic).await, want);
        let second = Counts::default();
        let c2 = consumer(ns, group, topic, &second).await;
        wait_for(WAIT, "batch 2 again", || count(&second, "b2-").1 == 20).await;
        wait_drained(broker, group, topic, &c2).await;
        assert_eq!(count(&second, "b1-"), (0, 0), "batch 1 skipped");
        assert_eq!(count(&second, "b2-"), (20, 20));
        c2.shutdown().await;

        // Forward, nobody online: batch 3 is skipped by the next consumer.
        send(broker, topic, "b3", 6).await;
        let max = reset(ns, group, topic, now_ms() + 3_600_000);
        for q in 0..QUEUES {
            assert_eq!(max[q as usize], max_offset(&mut c, topic, q).await);
        }
        let third = Counts::default();
        let c3 = consumer(ns, group, topic, &third).await;
        send(broker, topic, "b4", 4).await;
        wait_for(WAIT, "batch 4", || count(&third, "b4-").1 == 4).await;
        wait_drained(broker, group, topic, &c3).await;
        assert_eq!(count(&third, "b3-"), (0, 0), "batch 3 skipped");
        assert_eq!(count(&third, "b2-"), (0, 0));
        c3.shutdown().await;

        // A new group may start at a time: the SDK ...
        let fourth = Counts::default();
        let c4 = consumer_from(
            ns,
            "t71-new-g",
            topic,
            &fourth,
            ConsumeFrom::Timestamp(ts),
            None,
        )
        .await;
        wait_drained(broker, "t71-new-g", topic, &c4).await;
        assert_eq!(count(&fourth, "b1-"), (0, 0));
        assert_eq!(count(&fourth, "b2-"), (20, 20));
        assert_eq!(count(&fourth, "b3-"), (6, 6));
        assert_eq!(count(&fourth, "b4-"), (4, 4));
        c4.shutdown().await;
        // ... and the CLI (`consume --from TIMESTAMP_MS`).
        let ts_arg = ts.to_string();
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t71-cli-g",
                "--from",
                &ts_arg,
                "--count",
                "30",
                "--json",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bodies: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("JSON line");
                v["body"].as_str().expect("body").to_string()
            })
            .collect();
        assert_eq!(bodies.len(), 30);
        assert!(
            bodies.iter().all(|b| !b.starts_with("b1-")),
            "nothing before TS: {bodies:?}"
        );
    })
    .await;
}

#[actix_rt::test]
async fn t71_reset_of_an_unknown_group_or_topic_fails() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t71-errors";
        create_routed(ns, broker, topic).await;
        let args = |g: &'static str, t: &'static str| {
            [
                "admin",
                "offset",
                "reset",
                "-g",
                g,
                "-t",
                t,
                "--timestamp-ms",
                "0",
            ]
        };
        let out = actormq(ns, &args("t71-nobody", topic));
        assert!(!out.status.success(), "unknown group accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("t71-nobody") && err.contains("does not exist"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

        let out = actormq(ns, &args("t71-nobody", "t71-no-such-topic"));
        assert!(!out.status.success(), "unknown topic accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("t71-no-such-topic") && err.contains("does not exist"),
            "{err}"
        );
    })
    .await;
}

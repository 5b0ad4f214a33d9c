//! Orderly consumption (SDK push consumer with `.orderly()`, and
//! `actormq consume --orderly`) against a child-process combined node:
//!
//! - per-key order end to end, with messages sent by a queue selector
//!   (keys hashed to queues) while consumer instances join and leave under
//!   load; each listener call is recorded with its instance and the time it
//!   ran, which proves that no two instances (nor two workers of one
//!   instance) ever consumed one queue at once, and that each key's
//!   sequence numbers arrive in order, a duplicate only as a contiguous
//!   replay after a handover;
//! - a failed message is retried in place (nothing later of its queue is
//!   delivered before it succeeds), with `reconsume_times` counting up; one
//!   that always fails is passed after the group's max reconsume times;
//! - a queue changes hands only after the old holder's listener call on
//!   it returned and its offset was committed (the new holder's locks are
//!   refused meanwhile, and it does not get that message again);
//! - locks are renewed (a consumer that trusts a lock only 1 s keeps
//!   delivering for many seconds) and released on shutdown (a second
//!   instance takes the queues at once, and a third client can lock them
//!   after both stopped); a lock not renewed stops delivery once its
//!   client-side life is over;
//! - `actormq consume --orderly --fail-every K`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_protocol::request::{LockBatchMqRequest, UnlockBatchMqRequest};
use actormq_protocol::{Bytes, Message, MessageQueue, StoredMessage};
use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_tests::eventually;

use crate::common::{
    NO_ARGS, actormq, bounded, combined, connect, create_topic, json_lines, wait_route,
};

const WAIT: Duration = Duration::from_secs(40);

async fn create_routed(namesrv: SocketAddr, broker: SocketAddr, topic: &str, queues: u32) {
    create_topic(broker, topic, queues).await;
    wait_route(namesrv, topic, "broker-a", broker, queues).await;
}

/// One listener call on one message: who ran it, when, and what.
#[derive(Debug, Clone)]
struct Call {
    instance: &'static str,
    queue_id: u32,
    queue_offset: u64,
    start: Instant,
    end: Instant,
    key: String,
    seq: u64,
    reconsume_times: u32,
}

type Calls = Arc<Mutex<Vec<Call>>>;

fn key_seq(m: &StoredMessage) -> (String, u64) {
    let body = String::from_utf8_lossy(&m.message.body).into_owned();
    let (key, seq) = body.split_once(':').expect("key:seq body");
    (key.to_owned(), seq.parse().expect("seq"))
}

/// A listener that records each call in `calls`, takes `work` per call,
/// and answers `verdict(message)`.
fn recorder(
    instance: &'static str,
    calls: &Calls,
    work: Duration,
    verdict: impl Fn(&StoredMessage) -> ConsumeResult + Send + Sync + 'static,
) -> impl Fn(&[StoredMessage]) -> ConsumeResult + Send + Sync + 'static {
    let calls = calls.clone();
    move |msgs| {
        let start = Instant::now();
        if !work.is_zero() {
            std::thread::sleep(work);
        }
        let result = msgs
            .iter()
            .map(&verdict)
            .find(|r| *r == ConsumeResult::Later)
            .unwrap_or(ConsumeResult::Success);
        let end = Instant::now();
        let mut c = calls.lock().expect("calls");
        for m in msgs {
            let (key, seq) = key_seq(m);
            c.push(Call {
                instance,
                queue_id: m.queue_id,
                queue_offset: m.queue_offset,
                start,
                end,
                key,
                seq,
                reconsume_times: m.reconsume_times,
            });
        }
        result
    }
}

async fn orderly(
    namesrv: SocketAddr,
    group: &str,
    topic: &str,
    instance: &'static str,
    listener: impl Fn(&[StoredMessage]) -> ConsumeResult + Send + Sync + 'static,
    tweak: impl FnOnce(PushConsumerBuilder) -> PushConsumerBuilder,
) -> PushConsumer {
    let b = PushConsumerBuilder::new(group)
        .namesrv(&namesrv.to_string())
        .subscribe(topic, "*")
        .consume_from(ConsumeFrom::First)
        .instance_name(instance)
        .orderly()
        .configure(|c| c.rebalance_interval_ms = 2_000)
        .listener(listener);
    tweak(b).start().await.expect("start orderly consumer")
}

/// FNV-1a, the key's queue hash.
fn hash(key: &str) -> usize {
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) as usize
}

async fn wait_calls(calls: &Calls, what: &str, cond: impl Fn(&[Call]) -> bool) {
    eventually(WAIT, || {
        let ok = cond(&calls.lock().expect("calls"));
        async move { if ok { Ok(()) } else { Err(what.to_owned()) } }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
}

/// No two listener calls on one queue overlap in time (whatever their
/// instance).
fn assert_one_consumer_per_queue(calls: &[Call]) {
    let mut by_queue: BTreeMap<u32, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        by_queue.entry(c.queue_id).or_default().push(c);
    }
    for (q, mut v) in by_queue {
        v.sort_by_key(|c| (c.start, c.queue_offset));
        for w in v.windows(2) {
            let (a, b) = (w[0], w[1]);
            // One call may carry several messages (same start and end).
            if a.start == b.start && a.instance == b.instance {
                continue;
            }
            assert!(
                a.end <= b.start,
                "queue {q}: {} (offset {}) and {} (offset {}) overlap",
                a.instance,
                a.queue_offset,
                b.instance,
                b.queue_offset
            );
        }
    }
}

/// Per key, in call order: `0, 1, 2, …` to `last`, where a sequence number
/// may go back only when the instance changed (a handover replays what
/// the previous holder consumed but had not committed), and then goes on
/// one by one again.
fn assert_per_key_order(calls: &[Call], last: &BTreeMap<String, u64>) -> usize {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        by_key.entry(&c.key).or_default().push(c);
    }
    let mut replays = 0;
    for (key, want) in last {
        let v = by_key.get(key.as_str()).cloned().unwrap_or_default();
        let mut v = v;
        v.sort_by_key(|c| (c.start, c.queue_offset));
        assert_eq!(v.first().map(|c| c.seq), Some(0), "key {key} starts at 0");
        let mut max = 0;
        for w in v.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.seq == a.seq + 1 {
            } else if b.seq <= a.seq && b.instance != a.instance {
                replays += 1;
            } else {
                panic!(
                    "key {key}: {} delivered seq {} after seq {} by {}",
                    b.instance, b.seq, a.seq, a.instance
                );
            }
            max = max.max(b.seq);
        }
        assert_eq!(max, *want, "key {key}: every message delivered");
    }
    replays
}

#[actix_rt::test]
async fn t72_per_key_order_while_instances_join_and_leave() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t72-orders", "t72-g");
        create_routed(ns, broker, topic, 6).await;
        let keys: Vec<String> = (0..18).map(|k| format!("order{k}")).collect();
        let per_key = 60u64;

        // The producer sends key by key round robin, each key's events on
        // its hashed queue, paced so that the load lasts through the joins
        // and leaves below.
        let producer = ProducerBuilder::new("t72-producer")
            .namesrv([ns.to_string()])
            .build()
            .await
            .expect("producer");
        let send_keys = keys.clone();
        let sending = actix_rt::spawn(async move {
            for seq in 0..per_key {
                for key in &send_keys {
                    let mut msg = Message::new(topic, format!("{key}:{seq}"));
                    msg.keys = Some(key.clone());
                    let selector = |queues: &[MessageQueue], m: &Message| {
                        Some(hash(m.keys.as_deref().unwrap_or("")) % queues.len())
                    };
                    producer
                        .send_with_queue_selector(msg, selector)
                        .await
                        .expect("send");
                }
                actix_rt::time::sleep(Duration::from_millis(60)).await;
            }
            producer.shutdown().await;
        });

        let calls: Calls = Arc::default();
        let work = Duration::from_millis(1);
        let start = |instance: &'static str| {
            orderly(
                ns,
                group,
                topic,
                instance,
                recorder(instance, &calls, work, |_| ConsumeResult::Success),
                |b| b,
            )
        };
        let a = start("a").await;
        wait_calls(&calls, "a consumes", |c| c.len() >= 100).await;
        let b = start("b").await;
        wait_calls(&calls, "b consumes", |c| {
            c.iter().filter(|c| c.instance == "b").count() >= 50
        })
        .await;
        let c3 = start("c").await;
        wait_calls(&calls, "c consumes", |c| {
            c.iter().filter(|c| c.instance == "c").count() >= 50
        })
        .await;
        let seen = calls.lock().expect("calls").len();
        a.shutdown().await;
        wait_calls(&calls, "consumption goes on without a", |c| {
            c.len() >= seen + 150
        })
        .await;
        let seen = calls.lock().expect("calls").len();
        b.shutdown().await;
        sending.await.expect("producer task");
        let total = keys.len() as u64 * per_key;
        wait_calls(&calls, "every message consumed", |c| {
            c.len() >= seen && {
                let mut got: Vec<(&str, u64)> = c.iter().map(|c| (c.key.as_str(), c.seq)).collect();
                got.sort();
                got.dedup();
                got.len() as u64 == total
            }
        })
        .await;
        c3.shutdown().await;

        let calls = calls.lock().expect("calls").clone();
        assert_one_consumer_per_queue(&calls);
        let last: BTreeMap<String, u64> = keys.iter().map(|k| (k.clone(), per_key - 1)).collect();
        let replays = assert_per_key_order(&calls, &last);
        for inst in ["a", "b", "c"] {
            assert!(calls.iter().any(|c| c.instance == inst), "{inst} consumed");
        }
        // Graceful handovers commit before they unlock: nothing replayed.
        assert_eq!(replays, 0, "duplicates after graceful handovers");
    })
    .await;
}

#[actix_rt::test]
async fn t72_a_failed_message_is_retried_in_place() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t72-retry";
        create_routed(ns, broker, topic, 1).await;
        let producer = ProducerBuilder::new("t72-producer")
            .namesrv([ns.to_string()])
            .build()
            .await
            .expect("producer");
        for seq in 0..10 {
            producer
                .send(Message::new(topic, format!("k:{seq}")))
                .await
                .expect("send");
        }

        // seq 3 fails twice, then succeeds; seq 6 always fails; the
        // listener panics on the first delivery of seq 8.
        let calls: Calls = Arc::default();
        let failures = Arc::new(Mutex::new(0u32));
        let verdict = {
            let failures = failures.clone();
            move |m: &StoredMessage| match key_seq(m).1 {
                3 => {
                    let mut f = failures.lock().expect("failures");
                    *f += 1;
                    if *f <= 2 {
                        ConsumeResult::Later
                    } else {
                        ConsumeResult::Success
                    }
                }
                6 => ConsumeResult::Later,
                8 if m.reconsume_times == 0 => panic!("t72: listener panics on seq 8"),
                _ => ConsumeResult::Success,
            }
        };
        let consumer = orderly(
            ns,
            "t72-retry-g",
            topic,
            "r",
            recorder("r", &calls, Duration::ZERO, verdict),
            |b| b.configure(|c| c.suspend_ms = 20),
        )
        .await;
        wait_calls(&calls, "seq 9 delivered", |c| c.iter().any(|c| c.seq == 9)).await;
        let calls_now = calls.lock().expect("calls").clone();
        let order: Vec<(u64, u32)> = calls_now
            .iter()
            .map(|c| (c.seq, c.reconsume_times))
            .collect();
        let max = consumer.group_config().map_or(16, |g| g.retry_max_times);
        let mut want = vec![
            (0, 0),
            (1, 0),
            (2, 0),
            (3, 0),
            (3, 1),
            (3, 2),
            (4, 0),
            (5, 0),
        ];
        // seq 6: delivered 1 + max times, then a dead letter (the after-max step).
        want.extend((0..=max).map(|r| (6, r)));
        // seq 8: the panicking call recorded nothing; it came again, one
        // reconsume higher, before seq 9.
        want.extend([(7, 0), (8, 1), (9, 0)]);
        assert_eq!(order, want);
        // The offset moved past everything: a new consumer of the group
        // gets nothing again.
        consumer.commit_now().await;
        consumer.shutdown().await;
        producer
            .send(Message::new(topic, "k:10"))
            .await
            .expect("send");
        producer.shutdown().await;
        let again: Calls = Arc::default();
        let second = orderly(
            ns,
            "t72-retry-g",
            topic,
            "r2",
            recorder("r2", &again, Duration::ZERO, |_| ConsumeResult::Success),
            |b| b,
        )
        .await;
        wait_calls(&again, "seq 10 delivered", |c| {
            c.iter().any(|c| c.seq == 10)
        })
        .await;
        second.shutdown().await;
        let again = again.lock().expect("calls").clone();
        assert_eq!(
            again.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![10],
            "committed past the retried and the dead-lettered messages"
        );
        // seq 6 is in the group's dead-letter queue: resent from there.
        let out = crate::common::actormq(
            ns,
            &["admin", "dlq", "resend", "-g", "t72-retry-g", "--json"],
        );
        let lines = crate::common::json_lines(&out);
        assert_eq!(lines.last().expect("summary")["resent"], 1, "{lines:?}");
        assert_eq!(lines[0]["topic"], topic, "{lines:?}");
    })
    .await;
}

/// Asks the broker to lock `mqs` for a client of its own; returns what it
/// got (and unlocks it again).
async fn intruder_locks(broker: SocketAddr, group: &str, mqs: &[MessageQueue]) -> usize {
    let mut c = connect(broker).await;
    let req = LockBatchMqRequest {
        consumer_group: group.into(),
        client_id: "t72-intruder".into(),
        mq_set: mqs.to_vec(),
    };
    let got = c
        .call(&req, Bytes::new())
        .await
        .expect("lock call")
        .ok()
        .expect("lock ok")
        .lock_ok_mq_set;
    let unlock = UnlockBatchMqRequest {
        consumer_group: group.into(),
        client_id: "t72-intruder".into(),
        mq_set: got.clone(),
    };
    c.call(&unlock, Bytes::new())
        .await
        .expect("unlock call")
        .ok()
        .expect("unlock ok");
    got.len()
}

#[actix_rt::test]
async fn t72_locks_are_renewed_and_released_on_shutdown() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t72-locks", "t72-locks-g");
        create_routed(ns, broker, topic, 2).await;
        let mqs: Vec<MessageQueue> = (0..2)
            .map(|q| MessageQueue {
                topic: topic.into(),
                broker_name: "broker-a".into(),
                queue_id: q,
            })
            .collect();
        let producer = ProducerBuilder::new("t72-producer")
            .namesrv([ns.to_string()])
            .build()
            .await
            .expect("producer");
        let send_to = |q: usize, seq: u64| {
            let msg = Message::new(topic, format!("q{q}:{seq}"));
            let p = &producer;
            async move {
                p.send_with_queue_selector(msg, move |_: &[MessageQueue], _: &Message| Some(q))
                    .await
                    .expect("send")
            }
        };

        // A trusts a lock 1 s only, renewed every 200 ms.
        let calls: Calls = Arc::default();
        let a = orderly(
            ns,
            group,
            topic,
            "a",
            recorder("a", &calls, Duration::ZERO, |_| ConsumeResult::Success),
            |b| {
                b.configure(|c| {
                    c.lock_renew_interval_ms = 200;
                    c.lock_max_live_ms = 1_000;
                })
            },
        )
        .await;
        assert_eq!(a.assigned_queues(), mqs);
        assert_eq!(intruder_locks(broker, group, &mqs).await, 0, "a holds both");
        // Still delivering well after 1 s: the locks were renewed.
        for round in 0..4u64 {
            actix_rt::time::sleep(Duration::from_millis(800)).await;
            send_to(0, round).await;
            send_to(1, round).await;
            wait_calls(&calls, "a delivers after renewals", |c| {
                c.iter().filter(|c| c.seq == round).count() == 2
            })
            .await;
        }

        // B joins: it gets one queue once A released it.
        let b = orderly(
            ns,
            group,
            topic,
            "b",
            recorder("b", &calls, Duration::ZERO, |_| ConsumeResult::Success),
            |b| b,
        )
        .await;
        eventually(WAIT, || {
            let (na, nb) = (a.assigned_queues().len(), b.assigned_queues().len());
            async move {
                if na == 1 && nb == 1 {
                    Ok(())
                } else {
                    Err(format!("a holds {na}, b holds {nb}"))
                }
            }
        })
        .await
        .unwrap();

        // A stops: B takes both queues at once (released, not expired).
        let stopped = Instant::now();
        a.shutdown().await;
        eventually(Duration::from_secs(15), || {
            let nb = b.assigned_queues().len();
            async move {
                if nb == 2 {
                    Ok(())
                } else {
                    Err(format!("b holds {nb}"))
                }
            }
        })
        .await
        .unwrap();
        assert!(stopped.elapsed() < Duration::from_secs(15));
        send_to(0, 100).await;
        send_to(1, 100).await;
        wait_calls(&calls, "b delivers both queues", |c| {
            c.iter()
                .filter(|c| c.instance == "b" && c.seq == 100)
                .count()
                == 2
        })
        .await;
        b.shutdown().await;
        producer.shutdown().await;
        // Released on shutdown: anyone may lock them now.
        assert_eq!(intruder_locks(broker, group, &mqs).await, 2);
        assert_one_consumer_per_queue(&calls.lock().expect("calls"));
    })
    .await;
}

/// A gate listener calls wait at until the test opens it (bounded, so a
/// failing test does not hang a blocking thread for good).
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let open = self.open.lock().expect("gate");
        let _open = self
            .cv
            .wait_timeout_while(open, Duration::from_secs(60), |o| !*o)
            .expect("gate");
    }

    fn open(&self) {
        *self.open.lock().expect("gate") = true;
        self.cv.notify_all();
    }
}

#[actix_rt::test]
async fn t72_a_queue_changes_hands_only_after_its_listener_call_and_commit() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t72-handover", "t72-handover-g");
        create_routed(ns, broker, topic, 2).await;
        let producer = ProducerBuilder::new("t72-producer")
            .namesrv([ns.to_string()])
            .build()
            .await
            .expect("producer");
        let send_to = |q: usize, seq: u64| {
            let msg = Message::new(topic, format!("q{q}:{seq}"));
            let p = &producer;
            async move {
                p.send_with_queue_selector(msg, move |_: &[MessageQueue], _: &Message| Some(q))
                    .await
                    .expect("send")
            }
        };

        // A's listener holds seq 0 of both queues until the gate opens.
        let calls: Calls = Arc::default();
        let gate = Arc::new(Gate::default());
        let entered = Arc::new(Mutex::new(0usize));
        let a_listener = {
            let (gate, entered) = (gate.clone(), entered.clone());
            recorder("a", &calls, Duration::ZERO, move |m| {
                if key_seq(m).1 == 0 {
                    *entered.lock().expect("entered") += 1;
                    gate.wait();
                }
                ConsumeResult::Success
            })
        };
        let a = orderly(ns, group, topic, "a", a_listener, |b| b).await;
        send_to(0, 0).await;
        send_to(1, 0).await;
        eventually(WAIT, || {
            let n = *entered.lock().expect("entered");
            async move {
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("{n} calls in flight"))
                }
            }
        })
        .await
        .unwrap();

        // B joins: one queue is B's now, but A's call on it is in flight,
        // so A has not unlocked it and B's locks are refused (B retries
        // every second).
        let b = orderly(
            ns,
            group,
            topic,
            "b",
            recorder("b", &calls, Duration::ZERO, |_| ConsumeResult::Success),
            |b| b,
        )
        .await;
        actix_rt::time::sleep(Duration::from_millis(2_500)).await;
        assert!(b.assigned_queues().is_empty(), "b took a queue in use");
        assert_eq!(intruder_locks(broker, group, &a.assigned_queues()).await, 0);

        // The calls return: A commits, unlocks, and B takes its queue.
        gate.open();
        eventually(WAIT, || {
            let (na, nb) = (a.assigned_queues().len(), b.assigned_queues().len());
            async move {
                if na == 1 && nb == 1 {
                    Ok(())
                } else {
                    Err(format!("a holds {na}, b holds {nb}"))
                }
            }
        })
        .await
        .unwrap();
        let taken = b.assigned_queues()[0].queue_id as usize;
        send_to(0, 1).await;
        send_to(1, 1).await;
        wait_calls(&calls, "seq 1 of both queues", |c| {
            c.iter().filter(|c| c.seq == 1).count() == 2
        })
        .await;
        a.shutdown().await;
        b.shutdown().await;
        producer.shutdown().await;
        let calls = calls.lock().expect("calls").clone();
        assert_one_consumer_per_queue(&calls);
        let on_taken: Vec<(&str, u64)> = calls
            .iter()
            .filter(|c| c.queue_id as usize == taken)
            .map(|c| (c.instance, c.seq))
            .collect();
        // Seq 0 consumed by A once (committed before the unlock: B does not
        // get it again), seq 1 by B.
        assert_eq!(on_taken, vec![("a", 0), ("b", 1)]);
    })
    .await;
}

#[actix_rt::test]
async fn t72_a_lock_not_renewed_stops_delivery_at_once() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let (topic, group) = ("t72-expiry", "t72-expiry-g");
        create_routed(ns, broker, topic, 1).await;
        let producer = ProducerBuilder::new("t72-producer")
            .namesrv([ns.to_string()])
            .build()
            .await
            .expect("producer");
        // A trusts its lock 1 s and renews it only every 10 minutes.
        let calls: Calls = Arc::default();
        let started = Instant::now();
        let a = orderly(
            ns,
            group,
            topic,
            "a",
            recorder("a", &calls, Duration::ZERO, |_| ConsumeResult::Success),
            |b| {
                b.configure(|c| {
                    c.lock_renew_interval_ms = 600_000;
                    c.lock_max_live_ms = 1_000;
                })
            },
        )
        .await;
        producer
            .send(Message::new(topic, "k:0"))
            .await
            .expect("send");
        wait_calls(&calls, "k:0 delivered", |c| c.len() == 1).await;
        // Past the client-side lock life: what arrives now is not
        // delivered (time itself is the event here).
        let past = Duration::from_millis(1_200).saturating_sub(started.elapsed());
        actix_rt::time::sleep(past).await;
        producer
            .send(Message::new(topic, "k:1"))
            .await
            .expect("send");
        actix_rt::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(
            calls.lock().expect("calls").len(),
            1,
            "delivered without a lock"
        );
        assert_eq!(a.assigned_queues().len(), 1, "still assigned");
        // Shut down (unlocking): the next instance gets k:1, nothing lost.
        a.shutdown().await;
        let b = orderly(
            ns,
            group,
            topic,
            "b",
            recorder("b", &calls, Duration::ZERO, |_| ConsumeResult::Success),
            |b| b,
        )
        .await;
        wait_calls(&calls, "k:1 delivered by b", |c| {
            c.iter().any(|c| c.instance == "b" && c.seq == 1)
        })
        .await;
        b.shutdown().await;
        producer.shutdown().await;
        let seqs: Vec<(&str, u64)> = calls
            .lock()
            .expect("calls")
            .iter()
            .map(|c| (c.instance, c.seq))
            .collect();
        assert_eq!(seqs, vec![("a", 0), ("b", 1)]);
    })
    .await;
}

#[actix_rt::test]
async fn t72_cli_consume_orderly_retries_before_moving_on() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t72-cli";
        create_routed(ns, broker, topic, 2).await;
        for i in 0..10 {
            let key = format!("k{}", i % 2);
            let out = actormq(
                ns,
                &[
                    "produce",
                    "-t",
                    topic,
                    "--body",
                    &format!("m{i}"),
                    "--queue-key",
                    &key,
                    "--json",
                ],
            );
            json_lines(&out);
        }
        let created = json_lines(&actormq(
            ns,
            &[
                "admin",
                "group",
                "create",
                "-g",
                "t72-cli-g",
                "--orderly",
                "--json",
            ],
        ));
        assert_eq!(created[0]["orderly"], true);
        let out = actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t72-cli-g",
                "--orderly",
                "--from",
                "first",
                "--count",
                "10",
                "--fail-every",
                "3",
                "--idle-exit-ms",
                "5000",
                "--json",
            ],
        );
        let lines = json_lines(&out);
        let ok: Vec<_> = lines.iter().filter(|l| l.get("failed").is_none()).collect();
        assert_eq!(ok.len(), 10, "{lines:?}");
        assert!(lines.iter().any(|l| l["failed"] == true), "{lines:?}");
        // Per queue: offsets in order; a failed one comes again (one
        // reconsume higher) before anything later of its queue.
        let mut by_queue: BTreeMap<u64, Vec<&serde_json::Value>> = BTreeMap::new();
        for l in &lines {
            by_queue
                .entry(l["queue_id"].as_u64().unwrap())
                .or_default()
                .push(l);
        }
        for (q, v) in by_queue {
            let mut next = 0;
            for w in v.windows(2) {
                if w[0]["failed"] == true {
                    assert_eq!(
                        w[1]["queue_offset"], w[0]["queue_offset"],
                        "queue {q}: {v:?}"
                    );
                    assert_eq!(
                        w[1]["reconsume_times"].as_u64(),
                        w[0]["reconsume_times"].as_u64().map(|r| r + 1),
                        "queue {q}: {v:?}"
                    );
                }
            }
            for l in v.iter().filter(|l| l.get("failed").is_none()) {
                assert_eq!(l["queue_offset"].as_u64(), Some(next), "queue {q}: {v:?}");
                next += 1;
            }
        }
    })
    .await;
}

//! Push consumers of the SDK against a child-process combined node: queue
//! sharing and rebalance, broadcasting, tag filters, restart from the
//! committed offset, and the supervised services (panics injected through
//! the SDK's `fault-injection` feature: a restarted service or pull
//! service loses nothing; one past its restart budget stops pulling and
//! leaves the group). Messages are produced with the protocol-level
//! client.
//!
//! "Nothing delivered twice" is checked after an event, not a quiet
//! period: [`wait_drained`] (and [`wait_drained_locally`] for
//! broadcasting) waits until every consumer is idle and has committed the
//! max offset of every queue. Past that point only messages sent later can
//! be delivered (see there), so the deliveries counted then are final.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_protocol::request::{QueryConsumerOffsetRequest, SendMessageRequest};
use actormq_protocol::{Bytes, ResponseCode};
use actormq_sdk::consumer::{
    ConsumeFrom, ConsumeResult, ConsumerState, PushConsumer, PushConsumerBuilder,
};
use actormq_tests::client::Client;

use crate::common::{
    NO_ARGS, actormq, bounded, combined, connect, create_topic, json_lines, max_offset, wait_for,
    wait_route,
};

/// Creates `topic` on the combined node's broker (`broker-a`) and waits
/// until its name server routes it, so a consumer started next finds it.
async fn create_routed(namesrv: SocketAddr, broker: SocketAddr, topic: &str, queues: u32) {
    create_topic(broker, topic, queues).await;
    wait_route(namesrv, topic, "broker-a", broker, queues).await;
}

/// Bodies (and queue ids) delivered to one consumer, in delivery order.
type Seen = Arc<Mutex<Vec<(String, u32)>>>;

/// Sends `n` messages numbered from `first` round robin over `queues`,
/// tagged by `tag_of(i)`; returns their bodies.
async fn send(
    broker: SocketAddr,
    topic: &str,
    queues: u32,
    first: usize,
    n: usize,
    tag_of: impl Fn(usize) -> String,
) -> Vec<String> {
    let mut c = connect(broker).await;
    let mut bodies = Vec::new();
    for i in first..first + n {
        let body = format!("{topic}-{i}");
        let req = SendMessageRequest {
            producer_group: "t70-producer".into(),
            topic: topic.into(),
            queue_id: (i as u32) % queues,
            tags: Some(tag_of(i)),
            ..SendMessageRequest::default()
        };
        c.call(&req, Bytes::from(body.clone()))
            .await
            .expect("send call")
            .ok()
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        bodies.push(body);
    }
    bodies
}

fn collector(
    seen: &Seen,
    delay: Duration,
) -> impl Fn(&[actormq_protocol::StoredMessage]) -> ConsumeResult + Send + Sync + 'static {
    let seen = seen.clone();
    move |msgs| {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut s = seen.lock().expect("seen");
        for m in msgs {
            s.push((
                String::from_utf8_lossy(&m.message.body).into_owned(),
                m.queue_id,
            ));
        }
        ConsumeResult::Success
    }
}

async fn consumer(
    namesrv: SocketAddr,
    group: &str,
    topic: &str,
    expr: &str,
    seen: &Seen,
    tweak: impl FnOnce(PushConsumerBuilder) -> PushConsumerBuilder,
) -> PushConsumer {
    let b = PushConsumerBuilder::new(group)
        .namesrv(&namesrv.to_string())
        .subscribe(topic, expr)
        .consume_from(ConsumeFrom::First)
        .listener(collector(seen, Duration::ZERO));
    tweak(b).start().await.expect("start push consumer")
}

fn bodies(seen: &Seen) -> Vec<String> {
    seen.lock()
        .expect("seen")
        .iter()
        .map(|(b, _)| b.clone())
        .collect()
}

const WAIT: Duration = Duration::from_secs(30);

/// The max offsets of `topic`'s queues `0..queues`, from the broker.
async fn max_offsets(c: &mut Client, topic: &str, queues: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for q in 0..queues {
        out.push(max_offset(c, topic, q).await);
    }
    out
}

/// `group`'s committed offset on each queue of `topic`, from the broker
/// (`None`: never committed).
async fn committed_offsets(
    c: &mut Client,
    group: &str,
    topic: &str,
    queues: u32,
) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for q in 0..queues {
        let req = QueryConsumerOffsetRequest {
            consumer_group: group.into(),
            topic: topic.into(),
            queue_id: q,
        };
        let reply = c
            .call(&req, Bytes::new())
            .await
            .expect("QUERY_CONSUMER_OFFSET");
        out.push(match reply.code {
            ResponseCode::QueryNotFound => None,
            _ => Some(reply.ok().expect("QUERY_CONSUMER_OFFSET succeeds").offset),
        });
    }
    out
}

/// Waits (bounded by [`WAIT`]) for the event after which nothing more can
/// be delivered to `consumers` (every member of clustering `group`) until
/// something new is sent to `topic`:
///
/// 1. the max offsets of the queues add up to `total` (everything sent is
///    in the consume queues),
/// 2. no consumer holds a message pulled and not yet consumed
///    (`cached_messages() == 0`: nothing cached, nothing in a listener),
/// 3. the broker's committed offset of `group` on every queue is the
///    queue's max offset (each round commits with `commit_now` instead of
///    waiting for the 5 s commit timer).
///
/// A pull loop only asks from where its last pull ended, and a queue that
/// changes hands starts at the committed offset; with both at the max
/// offset, no message sent before can come again.
async fn wait_drained(
    broker: SocketAddr,
    group: &str,
    topic: &str,
    queues: u32,
    total: u64,
    consumers: &[&PushConsumer],
) {
    let mut c = connect(broker).await;
    let start = Instant::now();
    loop {
        let idle = consumers.iter().all(|x| x.cached_messages() == 0);
        for x in consumers {
            x.commit_now().await;
        }
        let max = max_offsets(&mut c, topic, queues).await;
        let committed = committed_offsets(&mut c, group, topic, queues).await;
        let caught_up = max.iter().zip(&committed).all(|(m, c)| Some(*m) == *c);
        let idle = idle && consumers.iter().all(|x| x.cached_messages() == 0);
        if idle && caught_up && max.iter().sum::<u64>() == total {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{group} never drained {topic}: max {max:?}, committed {committed:?}, idle {idle}"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`wait_drained`] for one broadcasting consumer, whose offsets are kept
/// in its local file `offsets` (`topic<TAB>broker<TAB>queue<TAB>offset`).
async fn wait_drained_locally(
    broker: SocketAddr,
    topic: &str,
    queues: u32,
    total: u64,
    consumer: &PushConsumer,
    offsets: &std::path::Path,
) {
    let mut c = connect(broker).await;
    let start = Instant::now();
    loop {
        let idle = consumer.cached_messages() == 0;
        consumer.commit_now().await;
        let max = max_offsets(&mut c, topic, queues).await;
        let text = std::fs::read_to_string(offsets).unwrap_or_default();
        let committed: BTreeMap<u32, u64> = text
            .lines()
            .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
                [t, _, q, o] if t == topic => Some((q.parse().ok()?, o.parse().ok()?)),
                _ => None,
            })
            .collect();
        let caught_up = (0..queues).all(|q| committed.get(&q) == Some(&max[q as usize]));
        let idle = idle && consumer.cached_messages() == 0;
        if idle && caught_up && max.iter().sum::<u64>() == total {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{} never drained {topic}: max {max:?}, committed {committed:?}, idle {idle}",
            consumer.client_id()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn t70_group_splits_queues_exactly_once_and_rebalances_on_join() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-split";
        create_routed(ns, broker, topic, 8).await;
        let (sa, sb, sc): (Seen, Seen, Seen) = Default::default();
        let a = consumer(ns, "t70-g1", topic, "*", &sa, |b| b).await;
        let b = consumer(ns, "t70-g1", topic, "*", &sb, |b| b).await;
        // The membership change reaches both; each ends with 4 queues.
        wait_for(WAIT, "a 4/4 split", || {
            a.assigned_queues().len() == 4 && b.assigned_queues().len() == 4
        })
        .await;
        let qa: BTreeSet<_> = a.assigned_queues().into_iter().collect();
        let qb: BTreeSet<_> = b.assigned_queues().into_iter().collect();
        assert!(qa.is_disjoint(&qb), "{qa:?} {qb:?}");

        let sent = send(broker, topic, 8, 0, 200, |_| "x".into()).await;
        wait_for(WAIT, "200 deliveries", || {
            bodies(&sa).len() + bodies(&sb).len() >= 200
        })
        .await;
        // Final for these 200: both idle, every offset committed.
        wait_drained(broker, "t70-g1", topic, 8, 200, &[&a, &b]).await;
        let mut all = bodies(&sa);
        all.extend(bodies(&sb));
        all.sort();
        let mut want = sent.clone();
        want.sort();
        assert_eq!(all, want, "every message exactly once in a quiet run");
        for (seen, mine) in [(&sa, &qa), (&sb, &qb)] {
            assert!(
                seen.lock()
                    .unwrap()
                    .iter()
                    .all(|(_, q)| mine.iter().any(|m| m.queue_id == *q)),
                "a consumer only gets its own queues"
            );
        }

        // A third joins while messages keep coming: rebalanced, nothing lost.
        let c = consumer(ns, "t70-g1", topic, "*", &sc, |b| b).await;
        let more = send(broker, topic, 8, 200, 200, |_| "x".into()).await;
        wait_for(WAIT, "a 3/3/2 split", || {
            let mut n = [
                a.assigned_queues().len(),
                b.assigned_queues().len(),
                c.assigned_queues().len(),
            ];
            n.sort();
            n == [2, 3, 3]
        })
        .await;
        let more2 = send(broker, topic, 8, 400, 100, |_| "x".into()).await;
        let want: BTreeSet<String> = sent.iter().chain(&more).chain(&more2).cloned().collect();
        wait_for(WAIT, "all 500 delivered at least once", || {
            let got: BTreeSet<String> = bodies(&sa)
                .into_iter()
                .chain(bodies(&sb))
                .chain(bodies(&sc))
                .collect();
            want.is_subset(&got)
        })
        .await;
        assert!(!bodies(&sc).is_empty(), "the newcomer consumes");

        // One leaves (clean shutdown): the others take its queues at once
        // (the broker's notification, not the 20 s periodic rebalance).
        c.shutdown().await;
        wait_for(Duration::from_secs(5), "back to a 4/4 split", || {
            a.assigned_queues().len() == 4 && b.assigned_queues().len() == 4
        })
        .await;
        let last = send(broker, topic, 8, 500, 80, |_| "x".into()).await;
        wait_for(WAIT, "the last 80 delivered", || {
            let got: BTreeSet<String> = bodies(&sa).into_iter().chain(bodies(&sb)).collect();
            last.iter().all(|m| got.contains(m))
        })
        .await;
        for x in [a, b] {
            x.shutdown().await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn t70_same_instance_name_still_two_members() {
    // Two containers run the same image: same pid, same instance name.
    // Their ids must differ, or the group collapses to one member.
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-ids";
        create_routed(ns, broker, topic, 8).await;
        let (sa, sb): (Seen, Seen) = Default::default();
        let same = |b: PushConsumerBuilder| b.instance_name("pod");
        let a = consumer(ns, "t70-ids-g", topic, "*", &sa, same).await;
        let b = consumer(ns, "t70-ids-g", topic, "*", &sb, same).await;
        assert_ne!(a.client_id(), b.client_id());
        for id in [a.client_id(), b.client_id()] {
            assert_eq!(id.split('@').nth(1), Some("pod"), "{id}");
        }
        wait_for(WAIT, "a 4/4 split between the two", || {
            a.assigned_queues().len() == 4 && b.assigned_queues().len() == 4
        })
        .await;
        for x in [a, b] {
            x.shutdown().await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn t70_broadcasting_delivers_everything_to_every_instance() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-bcast";
        create_routed(ns, broker, topic, 4).await;
        let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
        let (sa, sb): (Seen, Seen) = Default::default();
        let a = consumer(ns, "t70-bc", topic, "*", &sa, |b| {
            b.broadcasting().offset_dir(dirs[0].path())
        })
        .await;
        let b = consumer(ns, "t70-bc", topic, "*", &sb, |b| {
            b.broadcasting().offset_dir(dirs[1].path())
        })
        .await;
        assert_eq!(a.assigned_queues().len(), 4);
        assert_eq!(b.assigned_queues().len(), 4);
        let mut sent = send(broker, topic, 4, 0, 60, |_| "x".into()).await;
        sent.sort();
        for s in [&sa, &sb] {
            wait_for(WAIT, "60 deliveries each", || bodies(s).len() >= 60).await;
        }
        // Final for these 60: each idle, its local offsets at the max.
        for (x, dir) in [(&a, &dirs[0]), (&b, &dirs[1])] {
            let file = dir.path().join("t70-bc.offsets");
            wait_drained_locally(broker, topic, 4, 60, x, &file).await;
        }
        for s in [&sa, &sb] {
            let mut got = bodies(s);
            got.sort();
            assert_eq!(got, sent);
        }
        a.shutdown().await;
        b.shutdown().await;
        // Offsets were kept locally, one file per group.
        let file = std::fs::read_to_string(dirs[0].path().join("t70-bc.offsets")).unwrap();
        assert_eq!(file.lines().count(), 4, "{file}");
        assert!(file.lines().all(|l| l.ends_with("\t15")), "{file}");
    })
    .await;
}

#[actix_rt::test]
async fn t70_tag_filter_delivers_only_matching_messages() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-tags";
        create_routed(ns, broker, topic, 2).await;
        let seen: Seen = Default::default();
        let tags = ["A", "B", "C"];
        let sent = send(broker, topic, 2, 0, 60, |i| tags[i % 3].to_string()).await;
        let c = consumer(ns, "t70-tags", topic, "A || B", &seen, |b| b).await;
        // Later messages arrive through long polling.
        let sent2 = send(broker, topic, 2, 60, 30, |i| tags[i % 3].to_string()).await;
        let want: BTreeSet<String> = sent
            .iter()
            .chain(&sent2)
            .enumerate()
            .filter(|(i, _)| i % 3 != 2)
            .map(|(_, b)| b.clone())
            .collect();
        wait_for(WAIT, "60 matching", || bodies(&seen).len() >= want.len()).await;
        // Final: idle, and committed past the filtered-out C messages too.
        wait_drained(broker, "t70-tags", topic, 2, 90, &[&c]).await;
        let got: Vec<String> = bodies(&seen);
        assert_eq!(got.len(), want.len(), "no duplicates, no C");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
        c.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t70_restarted_consumer_continues_from_committed_offset() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-restart";
        create_routed(ns, broker, topic, 4).await;
        let sent = send(broker, topic, 4, 0, 300, |_| "x".into()).await;
        let (s1, s2): (Seen, Seen) = Default::default();
        let slow = {
            let s1 = s1.clone();
            move |b: PushConsumerBuilder| {
                b.workers(1)
                    .listener(collector(&s1, Duration::from_millis(5)))
            }
        };
        let first = consumer(ns, "t70-rs", topic, "*", &s1, slow).await;
        wait_for(WAIT, "50 deliveries", || bodies(&s1).len() >= 50).await;
        first.shutdown().await;
        let n1 = bodies(&s1).len();
        assert!(n1 < 300, "stopped mid-stream ({n1})");

        let second = consumer(ns, "t70-rs", topic, "*", &s2, |b| b).await;
        wait_for(WAIT, "the rest", || bodies(&s2).len() >= 300 - n1).await;
        // Final: the second is idle and committed every max offset.
        wait_drained(broker, "t70-rs", topic, 4, 300, &[&second]).await;
        let (d1, d2) = (bodies(&s1), bodies(&s2));
        assert_eq!(
            d1.len() + d2.len(),
            300,
            "no redelivery after a clean shutdown"
        );
        let a: BTreeSet<String> = d1.into_iter().collect();
        let b: BTreeSet<String> = d2.into_iter().collect();
        assert_eq!(a.len() + b.len(), 300, "no message twice to one consumer");
        assert!(a.is_disjoint(&b));
        let all: BTreeSet<String> = a.union(&b).cloned().collect();
        assert_eq!(all, sent.into_iter().collect::<BTreeSet<_>>());
        // Offsets by queue, as committed: each queue fully consumed.
        let by_queue: BTreeMap<u32, usize> =
            s2.lock()
                .unwrap()
                .iter()
                .fold(BTreeMap::new(), |mut m, (_, q)| {
                    *m.entry(*q).or_default() += 1;
                    m
                });
        assert!(by_queue.len() <= 4);
        second.shutdown().await;
    })
    .await;
}

// ------------------------------------------------------------------- CLI

#[actix_rt::test]
async fn t70_cli_consume_paused_past_idle_reads_its_backlog_on_resume() {
    use std::io::BufRead;
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-pause";
        create_routed(ns, broker, topic, 1).await;
        send(broker, topic, 1, 0, 1, |_| "x".into()).await;
        let exe = actormq_tests::node::bin_dir()
            .expect("binaries built")
            .join("actormq");
        let mut child = std::process::Command::new(&exe)
            .args([
                "-n",
                &ns.to_string(),
                "consume",
                "-t",
                topic,
                "-g",
                "pause-g",
            ])
            .args(["--from", "first", "--idle-exit-ms", "1500", "--json"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn actormq consume");
        let pid = child.id().to_string();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        // The first message printed: the consumer runs and holds the queue.
        let first = rx.recv_timeout(WAIT).expect("first message printed");
        assert!(first.contains("t70-pause-0"), "{first}");
        let kill = |sig: &str| {
            let ok = std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .expect("run kill")
                .success();
            assert!(ok, "kill {sig} {pid}");
        };
        kill("-STOP");
        // A backlog arrives while it is stopped, and the pause outlasts
        // --idle-exit-ms (the pause itself is what is tested).
        send(broker, topic, 1, 1, 5, |_| "x".into()).await;
        std::thread::sleep(Duration::from_millis(2500));
        kill("-CONT");
        let status = child.wait().expect("consume exits");
        reader.join().expect("reader");
        let mut lines = vec![first];
        lines.extend(rx.try_iter());
        assert!(status.success(), "{status:?}");
        assert_eq!(
            lines.len(),
            6,
            "the backlog is read before exiting: {lines:#?}"
        );
    })
    .await;
}

#[actix_rt::test]
async fn t70_cli_consume_and_group_progress() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-cli";
        create_routed(ns, broker, topic, 2).await;
        let mut c = connect(broker).await;
        for i in 0..6u32 {
            let req = SendMessageRequest {
                producer_group: "t70-producer".into(),
                topic: topic.into(),
                queue_id: i % 2,
                tags: Some(if i % 2 == 0 { "A" } else { "B" }.into()),
                keys: Some(format!("k{i}")),
                properties: [("n".to_string(), i.to_string())].into(),
                ..SendMessageRequest::default()
            };
            c.call(&req, Bytes::from(format!("body-{i}")))
                .await
                .expect("send")
                .ok()
                .expect("stored");
        }
        let fields = [
            "msg_id",
            "topic",
            "tags",
            "keys",
            "props",
            "queue_id",
            "queue_offset",
            "body",
            "body_len",
            "reconsume_times",
            "born_ts",
            "store_ts",
        ];

        // --count: exactly N lines, then exit 0 (offsets committed).
        let out = actormq(
            ns,
            &[
                "consume", "-t", topic, "-g", "cli-g", "--from", "first", "--count", "2", "--json",
            ],
        );
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 2);
        for l in &lines {
            for f in fields {
                assert!(l.get(f).is_some(), "{f} missing in {l}");
            }
            assert_eq!(l["topic"], topic);
            assert_eq!(l["body_len"], 6);
            let n: u32 = l["props"]["n"].as_str().unwrap().parse().unwrap();
            assert_eq!(l["body"], format!("body-{n}"));
            assert_eq!(l["keys"], format!("k{n}"));
        }
        // The rest, then the idle exit; nothing is delivered twice (the
        // process has exited: its deliveries are final). The idle time
        // counts from the start: 3 s leaves a loaded machine time for the
        // heartbeat, rebalance and first pull (800 ms flaked once with a
        // build running beside the suite).
        let rest = json_lines(&actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "cli-g",
                "--idle-exit-ms",
                "3000",
                "--json",
            ],
        ));
        let mut bodies: Vec<String> = lines
            .iter()
            .chain(&rest)
            .map(|l| l["body"].as_str().unwrap().to_string())
            .collect();
        bodies.sort();
        assert_eq!(
            bodies,
            (0..6).map(|i| format!("body-{i}")).collect::<Vec<_>>()
        );

        // Progress: both queues caught up.
        let progress = json_lines(&actormq(
            ns,
            &[
                "admin", "group", "progress", "-g", "cli-g", "-t", topic, "--json",
            ],
        ));
        assert_eq!(progress.len(), 3, "{progress:?}");
        for q in &progress[..2] {
            for f in [
                "topic",
                "broker",
                "queue_id",
                "broker_offset",
                "consumer_offset",
                "lag",
            ] {
                assert!(q.get(f).is_some(), "{f} missing in {q}");
            }
            assert_eq!(q["broker_offset"], 3);
            assert_eq!(q["lag"], 0);
        }
        assert_eq!(progress[2]["total_lag"], 0);

        // Tag filter and --fail-every: failed deliveries are printed (they
        // come back through the retry topic after their delay level:
        // t72_retry follows them).
        let tagged = json_lines(&actormq(
            ns,
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "cli-tags",
                "--from",
                "first",
                "--tag-expr",
                "A",
                "--fail-every",
                "2",
                "--count",
                "2",
                "--json",
            ],
        ));
        assert!(tagged.iter().all(|l| l["tags"] == "A"), "{tagged:?}");
        let ok: Vec<_> = tagged
            .iter()
            .filter(|l| l.get("failed").is_none())
            .collect();
        assert_eq!(ok.len(), 2);

        // A bad SQL92 expression and unknown topics: one line, non-zero
        // exit.
        for args in [
            &["consume", "-t", topic, "-g", "x", "--sql", "a > 1 ;"][..],
            &["consume", "-t", "t70-no-such-topic", "-g", "x"][..],
        ] {
            let out = actormq(ns, args);
            assert!(!out.status.success(), "{args:?} should fail");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    })
    .await;
}

#[actix_rt::test]
async fn t70_start_positions_and_flow_control() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-start";
        create_routed(ns, broker, topic, 1).await;
        let early = send(broker, topic, 1, 0, 20, |_| "x".into()).await;
        // Every early message was stored at or before `acked`; `ts` is a
        // later millisecond (the broker stamps with the same clock), and
        // every late message is stored at or after it.
        let acked = actormq_tests::now_ms();
        let mut ts = acked;
        while ts <= acked {
            actix_rt::time::sleep(Duration::from_millis(1)).await;
            ts = actormq_tests::now_ms();
        }
        let late = send(broker, topic, 1, 20, 400, |_| "x".into()).await;

        // Last (default): only what is sent from now on.
        let (s_last, s_ts, s_slow): (Seen, Seen, Seen) = Default::default();
        let last = consumer(ns, "t70-last", topic, "*", &s_last, |b| {
            b.consume_from(ConsumeFrom::Last)
        })
        .await;
        // Timestamp: from the first message stored at or after `ts`.
        let from_ts = consumer(ns, "t70-ts", topic, "*", &s_ts, |b| {
            b.consume_from(ConsumeFrom::Timestamp(ts))
        })
        .await;
        // First, with a slow listener and a small cache: pulling pauses.
        let slow = {
            let s = s_slow.clone();
            move |b: PushConsumerBuilder| {
                b.workers(1)
                    .configure(|c| {
                        c.cache_max_messages = 40;
                        c.pull_batch_size = 16;
                    })
                    .listener(collector(&s, Duration::from_millis(2)))
            }
        };
        let first = consumer(ns, "t70-first", topic, "*", &s_slow, slow).await;
        let mut max_cached = 0;
        let start = Instant::now();
        while bodies(&s_slow).len() < 420 {
            assert!(
                start.elapsed() < WAIT,
                "slow consumer got {}",
                bodies(&s_slow).len()
            );
            max_cached = max_cached.max(first.cached_messages());
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(max_cached <= 40 + 16, "flow control: cached {max_cached}");
        wait_drained(broker, "t70-first", topic, 1, 420, &[&first]).await;
        let mut got = bodies(&s_slow);
        got.sort();
        let mut all: Vec<String> = early.iter().chain(&late).cloned().collect();
        all.sort();
        assert_eq!(got, all);

        wait_for(WAIT, "timestamp start", || bodies(&s_ts).len() >= 400).await;
        wait_drained(broker, "t70-ts", topic, 1, 420, &[&from_ts]).await;
        let mut got_ts = bodies(&s_ts);
        got_ts.sort();
        let mut want_ts = late.clone();
        want_ts.sort();
        assert_eq!(got_ts, want_ts, "from the timestamp on");

        let newer = send(broker, topic, 1, 420, 5, |_| "x".into()).await;
        wait_for(WAIT, "last start", || bodies(&s_last).len() >= 5).await;
        wait_drained(broker, "t70-last", topic, 1, 425, &[&last]).await;
        let mut got_last = bodies(&s_last);
        got_last.sort();
        let mut newer = newer;
        newer.sort();
        assert_eq!(got_last, newer, "only messages sent after start");
        for c in [last, from_ts, first] {
            c.shutdown().await;
        }
    })
    .await;
}

// ------------------------------------------------- supervised services

/// The group's members as the broker lists them.
async fn members(broker: SocketAddr, group: &str) -> Vec<String> {
    use actormq_protocol::request::GetConsumerListByGroupRequest;
    let mut c = connect(broker).await;
    let reply = c
        .call(
            &GetConsumerListByGroupRequest {
                consumer_group: group.into(),
            },
            Bytes::new(),
        )
        .await
        .expect("member list call");
    if !reply.is_success() {
        return Vec::new(); // an unknown (empty) group
    }
    let mut ids = reply.ok().expect("member list").consumer_ids;
    ids.sort();
    ids
}

#[actix_rt::test]
async fn t70_service_panic_restarts_and_consumption_continues() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-svc-panic";
        create_topic(broker, topic, 4).await;
        let (sa, sb): (Seen, Seen) = Default::default();
        let a = consumer(ns, "t70-svc", topic, "*", &sa, |b| b).await;
        assert_eq!(a.state(), ConsumerState::Running);
        assert_eq!(a.assigned_queues().len(), 4);

        // The service actor panics while messages are flowing.
        let first = send(broker, topic, 4, 0, 100, |_| "x".into()).await;
        assert!(a.inject_service_panic("service broke (expected in this test)"));
        wait_for(WAIT, "the service restarted", || {
            a.service_restarts() == 1 && a.state() == ConsumerState::Running
        })
        .await;
        let second = send(broker, topic, 4, 100, 100, |_| "x".into()).await;
        let want: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
        wait_for(WAIT, "all 200 delivered", || {
            want.is_subset(&bodies(&sa).into_iter().collect())
        })
        .await;
        assert_eq!(a.assigned_queues().len(), 4, "still holds its queues");

        // The new incarnation serves membership notifications: a second
        // member joins and the two split the queues.
        let b = consumer(ns, "t70-svc", topic, "*", &sb, |b| b).await;
        wait_for(WAIT, "a 2/2 split after the restart", || {
            a.assigned_queues().len() == 2 && b.assigned_queues().len() == 2
        })
        .await;
        let third = send(broker, topic, 4, 200, 100, |_| "x".into()).await;
        wait_for(WAIT, "the last 100 delivered", || {
            let got: BTreeSet<String> = bodies(&sa).into_iter().chain(bodies(&sb)).collect();
            third.iter().all(|m| got.contains(m))
        })
        .await;
        assert!(!bodies(&sb).is_empty(), "the newcomer consumes");
        assert_eq!(a.service_restarts(), 1);
        for x in [a, b] {
            x.shutdown().await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn t70_pull_service_panic_restarts_its_queue_nothing_lost_or_repeated() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-pull-panic";
        create_topic(broker, topic, 4).await;
        let seen: Seen = Default::default();
        let a = consumer(ns, "t70-pull-panic-g", topic, "*", &seen, |b| b).await;
        let first = send(broker, topic, 4, 0, 100, |_| "x".into()).await;
        let q0 = a.assigned_queues()[0].clone();
        assert!(a.inject_pull_panic(&q0, "pull broke (expected in this test)"));
        wait_for(WAIT, "the pull service restarted", || {
            a.pull_restarts() == 1
        })
        .await;
        assert_eq!(
            a.state(),
            ConsumerState::Running,
            "the service is unaffected"
        );
        assert_eq!(a.service_restarts(), 0);
        let second = send(broker, topic, 4, 100, 100, |_| "x".into()).await;
        let want: BTreeSet<String> = first.iter().chain(&second).cloned().collect();
        wait_for(WAIT, "all 200 delivered", || {
            want.is_subset(&bodies(&seen).into_iter().collect())
        })
        .await;
        // Idle (nothing cached, nothing known to be pending): any second
        // delivery would have been pulled by now.
        wait_for(WAIT, "the consumer idle", || {
            a.cached_messages() == 0 && a.known_backlog() == 0
        })
        .await;
        assert_eq!(bodies(&seen).len(), 200, "each message exactly once");
        assert!(
            seen.lock().unwrap().iter().any(|(_, q)| *q == q0.queue_id),
            "the restarted queue delivers"
        );
        a.shutdown().await;
    })
    .await;
}

#[actix_rt::test]
async fn t70_consumer_whose_services_keep_failing_stops_pulling_and_the_group_takes_over() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-svc-fail";
        let group = "t70-svc-fail-g";
        create_topic(broker, topic, 8).await;
        let (sa, sb): (Seen, Seen) = Default::default();
        let a = consumer(ns, group, topic, "*", &sa, |b| b).await;
        let b = consumer(ns, group, topic, "*", &sb, |b| b).await;
        wait_for(WAIT, "a 4/4 split", || {
            a.assigned_queues().len() == 4 && b.assigned_queues().len() == 4
        })
        .await;
        let before = send(broker, topic, 8, 0, 80, |_| "x".into()).await;
        wait_for(WAIT, "80 delivered", || {
            let got: BTreeSet<String> = bodies(&sa).into_iter().chain(bodies(&sb)).collect();
            before.iter().all(|m| got.contains(m))
        })
        .await;

        // Past the restart budget (the default: 5 restarts within 60 s).
        for i in 1..=6u64 {
            wait_for(WAIT, "the service running", || {
                a.state() == ConsumerState::Running
            })
            .await;
            assert!(a.inject_service_panic("service broke (expected in this test)"));
            wait_for(WAIT, "the service restarted or given up", || {
                a.service_restarts() >= i || matches!(a.state(), ConsumerState::Failed { .. })
            })
            .await;
        }
        wait_for(WAIT, "the consumer failed", || {
            matches!(a.state(), ConsumerState::Failed { .. })
        })
        .await;
        let ConsumerState::Failed { reason } = a.state() else {
            unreachable!()
        };
        assert!(reason.contains("service"), "{reason}");
        assert!(reason.contains("budget"), "{reason}");
        assert_eq!(a.service_restarts(), 5);
        assert!(a.assigned_queues().is_empty(), "its queues are dropped");

        // It left the group; the other member takes every queue.
        wait_for_members(broker, group, vec![b.client_id().to_string()]).await;
        wait_for(WAIT, "b holds all 8 queues", || {
            b.assigned_queues().len() == 8
        })
        .await;
        let after = send(broker, topic, 8, 80, 80, |_| "x".into()).await;
        wait_for(WAIT, "b gets all 80", || {
            let got: BTreeSet<String> = bodies(&sb).into_iter().collect();
            after.iter().all(|m| got.contains(m))
        })
        .await;
        let got_a: BTreeSet<String> = bodies(&sa).into_iter().collect();
        assert!(
            after.iter().all(|m| !got_a.contains(m)),
            "the failed consumer received messages produced after it failed"
        );
        assert!(matches!(a.state(), ConsumerState::Failed { .. }));
        for x in [a, b] {
            x.shutdown().await;
        }
    })
    .await;
}

/// Waits until the broker lists exactly `want` (sorted) in `group`.
async fn wait_for_members(broker: SocketAddr, group: &str, mut want: Vec<String>) {
    want.sort();
    let start = Instant::now();
    loop {
        let got = members(broker, group).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < WAIT, "members {got:?}, want {want:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn t70_slow_consumer_facing_a_fast_producer_stays_bounded_and_loses_nothing() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, broker) = (node.namesrv(), node.broker());
        let topic = "t70-flow";
        let queues = 4;
        create_routed(ns, broker, topic, queues).await;
        let seen: Seen = Default::default();
        // One worker, 1 ms per message: far slower than the producer.
        let (cache, batch) = (50usize, 16usize);
        let c = consumer(ns, "t70-flow-g", topic, "*", &seen, |b| {
            b.workers(1)
                .configure(|c| {
                    c.cache_max_messages = cache;
                    c.pull_batch_size = batch as u32;
                })
                .listener(collector(&seen, Duration::from_millis(1)))
        })
        .await;
        let total = 2_000;
        let producing = send(broker, topic, queues, 0, total, |_| "x".into());
        let sampling = async {
            // Until every message was delivered, the client never caches
            // more than the flow-control limit per queue (plus one pull
            // batch in flight per queue).
            let mut max_cached = 0;
            let start = Instant::now();
            while bodies(&seen).len() < total {
                assert!(
                    start.elapsed() < WAIT,
                    "slow consumer got {}",
                    bodies(&seen).len()
                );
                max_cached = max_cached.max(c.cached_messages());
                actix_rt::time::sleep(Duration::from_millis(2)).await;
            }
            max_cached
        };
        let (sent, max_cached) = tokio::join!(producing, sampling);
        let bound = queues as usize * (cache + batch);
        eprintln!("slow consumer: at most {max_cached} cached (bound {bound})");
        assert!(max_cached <= bound, "cached {max_cached} > {bound}");
        // The backlog was real: pulling must have paused for a while.
        assert!(
            max_cached > cache,
            "never cached more than {max_cached}: no backlog formed"
        );
        wait_drained(broker, "t70-flow-g", topic, queues, total as u64, &[&c]).await;
        let mut got = bodies(&seen);
        got.sort();
        let mut want = sent;
        want.sort();
        assert_eq!(got.len(), want.len(), "nothing lost, nothing twice");
        assert_eq!(got, want);
        c.shutdown().await;
    })
    .await;
}

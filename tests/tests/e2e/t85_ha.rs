//! High availability across processes (issue 14): a name server, a master
//! and a slave on `127.0.0.1:0`. Replication byte for byte, a slave
//! restarted mid-stream, sync-master statuses with the slave gone and
//! back, SIGKILL of a sync master under load then promotion, reads from
//! the slave while the master is down, bad input on the HA port and bad
//! role combinations.

use std::collections::BTreeMap;
use std::time::Duration;

use actormq_protocol::request::{SendBatchMessageRequest, SendBatchMessageResponse};
use actormq_protocol::{Bytes, Message, ResponseCode, StoredMessage, batch};
use actormq_tests::client::Client;
use actormq_tests::node::{Bin, NodeProcess};

use crate::common::*;

const QUEUES: u32 = 4;

fn namesrv() -> NodeProcess {
    NodeProcess::start(Bin::Namesrv, NO_ARGS).expect("start actormq-namesrv")
}

fn master(namesrv: &NodeProcess, role: &str, extra: &[&str]) -> NodeProcess {
    let ns = namesrv.namesrv().to_string();
    let mut args = vec!["--namesrv", &ns, "--ha-role", role];
    args.extend_from_slice(extra);
    NodeProcess::start(Bin::Broker, &args).expect("start the master")
}

fn slave_args(namesrv: &NodeProcess, master_ha: &str) -> Vec<String> {
    [
        "--namesrv",
        &namesrv.namesrv().to_string(),
        "--ha-role",
        "slave",
        "--broker-id",
        "1",
        "--master",
        master_ha,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn slave(namesrv: &NodeProcess, master: &NodeProcess) -> NodeProcess {
    let args = slave_args(namesrv, &master.ha().to_string());
    NodeProcess::start(Bin::Broker, &args).expect("start the slave")
}

fn body_of(i: usize) -> Bytes {
    let len = 16 + (i * 37) % 200;
    (0..len)
        .map(|j| (i * 31 + j * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Sends `batches` batches of `per` messages to `queue`; returns the
/// replies' codes in order (every batch is stored unless refused).
async fn send_batch(
    c: &mut Client,
    topic: &str,
    queue: u32,
    first: usize,
    per: usize,
) -> Result<(ResponseCode, SendBatchMessageResponse), String> {
    let msgs: Vec<Message> = (first..first + per)
        .map(|i| {
            let mut m = Message::new(topic, body_of(i));
            m.keys = Some(format!("k{i}"));
            m
        })
        .collect();
    let req = SendBatchMessageRequest {
        producer_group: "e2e-ha".into(),
        topic: topic.into(),
        queue_id: queue,
        born_timestamp_ms: actormq_tests::now_ms(),
        ..SendBatchMessageRequest::default()
    };
    let reply = c
        .call(&req, batch::messages_to_bytes(&msgs))
        .await
        .map_err(|e| e.to_string())?;
    let code = reply.code;
    let fields = reply
        .fields
        .ok_or_else(|| format!("{code}: {}", reply.remark.clone().unwrap_or_default()))?;
    Ok((code, fields))
}

/// Every message of every queue, pulled from `broker` (waiting until each
/// queue holds `counts[q]`).
async fn pull_everything(
    broker: std::net::SocketAddr,
    topic: &str,
    counts: &BTreeMap<u32, u64>,
) -> BTreeMap<u32, Vec<StoredMessage>> {
    let mut c = connect(broker).await;
    let mut out = BTreeMap::new();
    for (&q, &n) in counts {
        out.insert(q, pull_all_at_least(&mut c, topic, q, n).await);
    }
    out
}

fn assert_identical(a: &BTreeMap<u32, Vec<StoredMessage>>, b: &BTreeMap<u32, Vec<StoredMessage>>) {
    assert_eq!(a.len(), b.len());
    for (q, ma) in a {
        let mb = &b[q];
        assert_eq!(ma.len(), mb.len(), "messages in queue {q}");
        for (x, y) in ma.iter().zip(mb) {
            assert_eq!(x.msg_id().encode(), y.msg_id().encode(), "id in {q}");
            assert_eq!(x.queue_offset, y.queue_offset);
            assert_eq!(
                x.message.body, y.message.body,
                "body of {q}/{}",
                x.queue_offset
            );
            assert_eq!(x.message.keys, y.message.keys);
            assert_eq!(x.body_crc, y.body_crc);
        }
    }
}

async fn wait_topic_on(broker: std::net::SocketAddr, topic: &str) {
    let mut c = connect(broker).await;
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let r = c
            .call(&pull_request(topic, 0, 0, 1, 0), Bytes::new())
            .await
            .expect("pull");
        if r.code != ResponseCode::TopicNotExist {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} never reached {broker}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn t85_replication_is_byte_identical_and_a_slave_refuses_sends() {
    bounded(async {
        let ns = namesrv();
        let m = master(&ns, "async-master", NO_ARGS);
        let mut s = slave(&ns, &m);
        let topic = "t85-repl";
        create_topic(m.broker(), topic, QUEUES).await;
        // The route lists the slave under the master's broker name.
        let deadline = std::time::Instant::now() + CONVERGE;
        loop {
            let route = route(ns.namesrv(), topic).await.expect("route");
            let addrs = route
                .as_ref()
                .and_then(|r| r.broker_datas.first())
                .map(|b| b.broker_addrs.clone())
                .unwrap_or_default();
            if addrs.get(&1) == Some(&s.broker().to_string()) {
                assert_eq!(addrs.get(&0), Some(&m.broker().to_string()));
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "slave not in the route: {route:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The slave refuses sends with a clear code.
        wait_topic_on(s.broker(), topic).await;
        let mut sc = connect(s.broker()).await;
        let refused = send_batch(&mut sc, topic, 0, 0, 1).await.unwrap_err();
        assert!(
            refused.contains("SERVICE_NOT_AVAILABLE") && refused.contains("slave"),
            "{refused}"
        );

        // Messages: sent in batches; halfway the slave restarts.
        let mut c = connect(m.broker()).await;
        const TOTAL: usize = 100_000;
        const PER: usize = 250;
        let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
        let mut i = 0;
        while i < TOTAL {
            let q = ((i / PER) as u32) % QUEUES;
            let (code, _) = send_batch(&mut c, topic, q, i, PER).await.expect("send");
            assert_eq!(code, ResponseCode::Success);
            *counts.entry(q).or_default() += PER as u64;
            i += PER;
            if i == TOTAL / 2 {
                s.kill().expect("kill the slave");
            }
            if i == TOTAL / 2 + 20 * PER {
                s.restart().expect("restart the slave");
            }
        }
        let from_master = pull_everything(m.broker(), topic, &counts).await;
        let from_slave = pull_everything(s.broker(), topic, &counts).await;
        assert_identical(&from_master, &from_slave);
        let total: usize = from_slave.values().map(Vec::len).sum();
        assert_eq!(total, TOTAL);

        // The master's /metrics shows the slave, by the address of its HA
        // link, with nothing left to replicate.
        let deadline = std::time::Instant::now() + CONVERGE;
        loop {
            let (code, metrics) = crate::common::http_get(m.http(), "/metrics");
            assert_eq!(code, 200);
            let caught_up = metrics.lines().any(|l| {
                l.starts_with("actormq_replication_lag_bytes{slave=\"127.0.0.1:")
                    && l.ends_with(" 0")
            });
            if caught_up {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no caught-up slave in the master's metrics:\n{metrics}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn t85_garbage_on_the_ha_port_closes_that_connection_only() {
    bounded(async {
        let ns = namesrv();
        let m = master(&ns, "async-master", NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-garbage";
        create_topic(m.broker(), topic, 1).await;
        let mut raw = tokio::net::TcpStream::connect(m.ha())
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
            .await
            .expect("closed in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "the master closes a non-HA peer");
        // Replication goes on.
        let mut c = connect(m.broker()).await;
        send_batch(&mut c, topic, 0, 0, 10).await.expect("send");
        let mut sc = connect(s.broker()).await;
        wait_max_offset(&mut sc, topic, 0, 10).await;
    })
    .await;
}

#[tokio::test]
async fn t85_bad_role_combinations_refuse_to_start() {
    let ns = namesrv();
    let n = ns.namesrv().to_string();
    for (args, needle) in [
        (
            vec!["--ha-role", "slave", "--master", "127.0.0.1:1"],
            "broker id > 0",
        ),
        (vec!["--ha-role", "slave", "--broker-id", "1"], "--master"),
        (vec!["--broker-id", "2"], "a master has broker id 0"),
        (
            vec!["--ha-role", "sync-master", "--master", "127.0.0.1:1"],
            "only a slave",
        ),
    ] {
        let mut full = vec!["--namesrv", n.as_str(), "--broker-listen", "127.0.0.1:0"];
        full.extend(args.iter().copied());
        let out = std::process::Command::new(
            actormq_tests::node::bin_dir()
                .expect("bins")
                .join("actormq-broker"),
        )
        .args(&full)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
        assert!(!out.status.success(), "{args:?} must not start");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty(), "no ready line");
    }
}

/// Sends one batch of `per` to `queue` until the reply code is one of
/// `want` (bounded); returns it.
async fn send_until(
    c: &mut Client,
    topic: &str,
    queue: u32,
    next: &mut usize,
    want: &[ResponseCode],
) -> ResponseCode {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let (code, _) = send_batch(c, topic, queue, *next, 5).await.expect("stored");
        *next += 5;
        if want.contains(&code) {
            return code;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never got {want:?}, last {code}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn t85_sync_master_statuses_with_the_slave_gone_and_back() {
    bounded(async {
        let ns = namesrv();
        let ns_addr = ns.namesrv().to_string();
        let m = NodeProcess::start_with_env(
            Bin::Broker,
            &["--namesrv", &ns_addr, "--ha-role", "sync-master"],
            &[("ACTORMQ_BROKER__HA_SYNC_TIMEOUT_MS", "300")],
        )
        .expect("start the sync master");
        let topic = "t85-sync";
        create_topic(m.broker(), topic, 1).await;
        let mut c = connect(m.broker()).await;
        let mut next = 0usize;
        // No slave yet: stored, but the client is told.
        let (code, _) = send_batch(&mut c, topic, 0, next, 5).await.expect("stored");
        next += 5;
        assert_eq!(code, ResponseCode::SlaveNotAvailable);
        let mut s = slave(&ns, &m);
        send_until(&mut c, topic, 0, &mut next, &[ResponseCode::Success]).await;
        // A slave that stops acknowledging (SIGSTOP): FLUSH_SLAVE_TIMEOUT.
        s.signal("STOP").expect("stop the slave");
        let (code, _) = send_batch(&mut c, topic, 0, next, 5).await.expect("stored");
        next += 5;
        assert_eq!(code, ResponseCode::FlushSlaveTimeout);
        s.signal("CONT").expect("continue the slave");
        send_until(&mut c, topic, 0, &mut next, &[ResponseCode::Success]).await;
        // The slave killed: SLAVE_NOT_AVAILABLE once the master saw it go.
        s.kill().expect("kill the slave");
        send_until(
            &mut c,
            topic,
            0,
            &mut next,
            &[ResponseCode::SlaveNotAvailable],
        )
        .await;
        // Back: SUCCESS again, and it has everything, also what was
        // stored while it was away.
        s.restart().expect("restart the slave");
        send_until(&mut c, topic, 0, &mut next, &[ResponseCode::Success]).await;
        let counts = BTreeMap::from([(0u32, next as u64)]);
        let a = pull_everything(m.broker(), topic, &counts).await;
        let b = pull_everything(s.broker(), topic, &counts).await;
        assert_identical(&a, &b);
    })
    .await;
}

#[tokio::test]
async fn t85_sigkill_of_a_sync_master_under_load_then_promotion_loses_nothing_acknowledged() {
    bounded(async {
        let ns = namesrv();
        let mut m = master(&ns, "sync-master", NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-promote";
        create_topic(m.broker(), topic, QUEUES).await;
        wait_topic_on(s.broker(), topic).await;
        // Load: four senders (one per queue) until the master dies; each
        // keeps the keys of its acknowledged (SUCCESS) messages.
        let broker = m.broker();
        let mut senders = Vec::new();
        for q in 0..QUEUES {
            senders.push(tokio::spawn(async move {
                let mut c = connect(broker).await;
                c.set_timeout(Duration::from_secs(5));
                let mut acked: Vec<String> = Vec::new();
                let mut i = q as usize * 1_000_000;
                loop {
                    match send_batch(&mut c, topic, q, i, 20).await {
                        Ok((ResponseCode::Success, r)) => {
                            acked.extend(r.msg_ids().map(str::to_owned));
                        }
                        Ok(_) => {}
                        // The master is gone: a clear error, not a hang.
                        Err(_) => return acked,
                    }
                    i += 20;
                }
            }));
        }
        let mut c = connect(m.broker()).await;
        wait_max_offset(&mut c, topic, 0, 2_000).await;
        m.kill().expect("SIGKILL the master");
        let mut acked = Vec::new();
        for t in senders {
            acked.extend(t.await.expect("sender"));
        }
        assert!(acked.len() >= 2_000, "load ran: {}", acked.len());
        // Consumers read from the slave while the master is down.
        let mut sc = connect(s.broker()).await;
        let mut on_slave = std::collections::HashSet::new();
        for q in 0..QUEUES {
            for msg in pull_all(&mut sc, topic, q).await {
                on_slave.insert(msg.msg_id().encode());
            }
        }
        let missing: Vec<&String> = acked.iter().filter(|id| !on_slave.contains(*id)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged messages not on the slave",
            missing.len()
        );
        // Promotion through the CLI.
        let out = actormq(
            ns.namesrv(),
            &[
                "--json",
                "admin",
                "broker",
                "promote",
                "--broker",
                "broker-a",
                "--broker-id",
                "1",
            ],
        );
        let lines = json_lines(&out);
        assert_eq!(lines[0]["previous_role"], "slave", "{lines:?}");
        assert_eq!(lines[0]["role"], "async-master", "{lines:?}");
        // It takes writes from where replication stopped, and the name
        // server lists it as the master.
        let before = max_offset(&mut sc, topic, 0).await;
        let (code, r) = send_batch(&mut sc, topic, 0, 0, 3)
            .await
            .expect("send to the new master");
        assert_eq!(code, ResponseCode::Success);
        assert_eq!(r.queue_offset, before);
        let deadline = std::time::Instant::now() + CONVERGE;
        loop {
            let info = cluster_info(ns.namesrv()).await.expect("cluster info");
            let master = info
                .broker_addr_table
                .get("broker-a")
                .and_then(|d| d.broker_addrs.get(&0).cloned());
            if master == Some(s.broker().to_string()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "promoted slave not id 0: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // It listens for slaves of its own: a new slave (id 2) copies it.
        let log = s
            .wait_log("listening for slaves after promotion", 200, CONVERGE)
            .await;
        let ha: String = log
            .lines()
            .find(|l| l.contains("listening for slaves after promotion"))
            .and_then(|l| l.split("ha: ").nth(1))
            .map(|rest| rest.split([',', ' ']).next().unwrap_or("").to_string())
            .expect("HA address in the log");
        let mut args = slave_args(&ns, &ha);
        args[5] = "2".into(); // --broker-id 2
        let s2 = NodeProcess::start(Bin::Broker, &args).expect("start a second slave");
        let end = max_offset(&mut sc, topic, 0).await;
        let mut s2c = connect(s2.broker()).await;
        wait_max_offset(&mut s2c, topic, 0, end).await;
        // Promoting it again says so, and a wrong id is refused.
        let out = actormq(
            ns.namesrv(),
            &[
                "admin",
                "broker",
                "promote",
                "--broker",
                "broker-a",
                "--broker-id",
                "7",
            ],
        );
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("id 7"));
    })
    .await;
}

#[actix_rt::test]
async fn t85_consumers_read_from_the_slave_while_the_master_is_down() {
    bounded(async {
        let ns = namesrv();
        let mut m = master(&ns, "async-master", NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-read-slave";
        create_topic(m.broker(), topic, 2).await;
        let mut c = connect(m.broker()).await;
        for q in 0..2 {
            send_batch(&mut c, topic, q, q as usize * 100, 50)
                .await
                .expect("send");
        }
        // A delayed message: the master moves it to its topic when due,
        // and that move reaches the slave through the log.
        let mut delayed = send_request(topic, 0, "late", "delayed-1");
        delayed.delay_level = Some(1);
        let r = c
            .call(&delayed, Bytes::from_static(b"late"))
            .await
            .expect("delayed send");
        assert_eq!(r.code, ResponseCode::Success);
        let mut sc = connect(s.broker()).await;
        wait_max_offset(&mut sc, topic, 0, 51).await;
        wait_max_offset(&mut sc, topic, 1, 50).await;
        m.kill().expect("SIGKILL the master");
        // The SDK's pull consumer finds the slave through the route.
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let consumer =
            actormq_sdk::consumer::PullConsumer::new("t85-readers", &ns.namesrv().to_string(), log)
                .expect("pull consumer");
        let deadline = std::time::Instant::now() + CONVERGE;
        let (total, late) = 'wait: loop {
            let (mut total, mut late) = (0, false);
            let queues = match consumer.fetch_queues(topic).await {
                Ok(q) => q,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "no route: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for mq in &queues {
                match consumer.pull(mq, 0, 200).await {
                    Ok(r) => {
                        total += r.messages.len();
                        late |= r
                            .messages
                            .iter()
                            .any(|m| m.message.body.as_ref() == b"late");
                    }
                    Err(e) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "no pulls from the slave: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue 'wait;
                    }
                }
            }
            break (total, late);
        };
        assert_eq!(total, 101);
        assert!(late, "the delivered delayed message is on the slave");
        // Producers get a clear error, not a hang: the SDK finds no master.
        let producer = actormq_sdk::ProducerBuilder::new("t85-producer")
            .namesrv([ns.namesrv().to_string()])
            .send_timeout(Duration::from_secs(2))
            .retries(1)
            .build()
            .await
            .expect("producer");
        let started = std::time::Instant::now();
        let sent = producer.send(Message::new(topic, "while down")).await;
        assert!(sent.is_err(), "{sent:?}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        producer.shutdown().await;
        let mut c2 = connect(s.broker()).await;
        let refused = send_batch(&mut c2, topic, 0, 0, 1).await.unwrap_err();
        assert!(refused.contains("slave"), "{refused}");
    })
    .await;
}

/// Sum of the max offsets of `queues` queues of `topic` on `broker`.
async fn total_offset(c: &mut Client, topic: &str, queues: u32) -> u64 {
    let mut sum = 0;
    for q in 0..queues {
        sum += max_offset(c, topic, q).await;
    }
    sum
}

/// Replication lag and produce throughput under `actormq bench produce`
/// (BENCHMARKS.md, "High availability"). Run with release binaries:
/// `cargo build --release -p actormq-cluster && ACTORMQ_BIN_DIR=target/release
/// cargo test -p actormq-tests --test e2e t85_bench -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "benchmark; see the doc comment"]
async fn t85_bench_replication_lag_and_sync_throughput() {
    let messages: u64 = std::env::var("T85_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    for role in ["async-master", "sync-master", "async-master", "sync-master"] {
        let ns = namesrv();
        let m = master(&ns, role, NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-bench";
        create_topic(m.broker(), topic, QUEUES).await;
        wait_topic_on(s.broker(), topic).await;
        // Samples of both ends' totals every 2 ms while the bench runs.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (mb, sb, flag) = (m.broker(), s.broker(), stop.clone());
        let sampler = tokio::spawn(async move {
            let (mut mc, mut sc) = (connect(mb).await, connect(sb).await);
            let t0 = std::time::Instant::now();
            let mut samples: Vec<(f64, u64, u64)> = Vec::new();
            let mut gaps: Vec<f64> = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // The master first, then the slave: a slave at or past the
                // master's total had everything the master had `gap` ago.
                let t = t0.elapsed().as_secs_f64();
                let a = total_offset(&mut mc, topic, QUEUES).await;
                let b = total_offset(&mut sc, topic, QUEUES).await;
                gaps.push((t0.elapsed().as_secs_f64() - t) * 1000.0);
                samples.push((t, a, b));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (samples, gaps)
        });
        let n = ns.namesrv().to_string();
        let count = messages.to_string();
        let out = tokio::task::spawn_blocking(move || {
            actormq(
                &n,
                &[
                    "--json",
                    "bench",
                    "produce",
                    "-t",
                    topic,
                    "--messages",
                    &count,
                    "--concurrency",
                    "256",
                ],
            )
        })
        .await
        .expect("bench");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (samples, mut gaps) = sampler.await.expect("sampler");
        gaps.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let caught_up = samples.iter().filter(|&&(_, a, b)| b >= a).count();
        let report = json_lines(&out);
        // Lag at a sample: how long ago the master wrote the oldest bytes
        // the slave does not have yet (0 when it has everything).
        let lags_of = |samples: &[(f64, u64, u64)]| -> Vec<f64> {
            samples
                .iter()
                .map(|&(t, _, slave_at)| {
                    samples
                        .iter()
                        .find(|&&(tm, master_at, _)| tm <= t && master_at > slave_at)
                        .map_or(0.0, |&(tm, _, _)| (t - tm) * 1000.0)
                })
                .collect()
        };
        let mut lags = lags_of(&samples);
        lags.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let pct = |p: f64| lags[((lags.len() - 1) as f64 * p) as usize];
        let gap = |p: f64| gaps[((gaps.len() - 1) as f64 * p) as usize];
        println!(
            "BENCH role={role} report={} samples={} slave_at_or_past_master={} \
             read_gap_ms p50={:.2} p99={:.2} max={:.2} lag_ms p50={:.1} p99={:.1} max={:.1}",
            report.last().map(|v| v.to_string()).unwrap_or_default(),
            lags.len(),
            caught_up,
            gap(0.5),
            gap(0.99),
            gap(1.0),
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
    }
}

#[tokio::test]
async fn t85_a_promoted_slave_does_not_deliver_again_what_its_master_delivered() {
    bounded(async {
        let ns = namesrv();
        let mut m = master(&ns, "async-master", NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-delay";
        create_topic(m.broker(), topic, 1).await;
        let mut c = connect(m.broker()).await;
        let mut delayed = send_request(topic, 0, "late", "d1");
        delayed.delay_level = Some(1);
        let r = c
            .call(&delayed, Bytes::from_static(b"late"))
            .await
            .expect("delayed send");
        assert_eq!(r.code, ResponseCode::Success);
        // Delivered by the master (1 s), replicated to the slave.
        let mut sc = connect(s.broker()).await;
        wait_max_offset(&mut sc, topic, 0, 1).await;
        // A topic change makes the master send its configs (the delay
        // progress with them) at once; once the slave knows the topic, it
        // has them.
        create_topic(m.broker(), "t85-delay-marker", 1).await;
        wait_topic_on(s.broker(), "t85-delay-marker").await;
        m.kill().expect("SIGKILL the master");
        let out = actormq(
            ns.namesrv(),
            &[
                "admin",
                "broker",
                "promote",
                "--broker",
                "broker-a",
                "--broker-id",
                "1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        // The promoted slave's schedule runs (its poll is 100 ms; the
        // message is long due): it must not deliver the message again.
        // An absence has no event to wait for: this looks for 3 s.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            assert_eq!(max_offset(&mut sc, topic, 0).await, 1, "delivered again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// A push consumer (`actormq consume`) started while the master is down
/// reads from the slave every message the group had not consumed: from
/// the group's offsets where the slave has them (synced from the master),
/// else from the first (at least once, nothing lost).
#[actix_rt::test]
async fn t85_a_push_consumer_reads_from_the_slave_while_the_master_is_down() {
    bounded(async {
        let ns = namesrv();
        let mut m = master(&ns, "async-master", NO_ARGS);
        let s = slave(&ns, &m);
        let topic = "t85-push-slave";
        create_topic(m.broker(), topic, 2).await;
        let mut c = connect(m.broker()).await;
        for q in 0..2 {
            send_batch(&mut c, topic, q, q as usize * 100, 40)
                .await
                .expect("send");
        }
        // The group consumes the first 30 through the master and commits.
        let first = json_lines(&actormq(
            ns.namesrv(),
            &[
                "consume", "-t", topic, "-g", "t85-push", "--from", "first", "--count", "30",
                "--json",
            ],
        ));
        assert_eq!(first.len(), 30);
        let mut sc = connect(s.broker()).await;
        wait_max_offset(&mut sc, topic, 0, 40).await;
        wait_max_offset(&mut sc, topic, 1, 40).await;
        m.kill().expect("SIGKILL the master");
        // The rest, from the slave: nothing lost (at least once: what the
        // first run delivered past its last commit may come again).
        let rest = json_lines(&actormq(
            ns.namesrv(),
            &[
                "consume",
                "-t",
                topic,
                "-g",
                "t85-push",
                "--from",
                "first",
                "--idle-exit-ms",
                "3000",
                "--json",
            ],
        ));
        let key = |l: &serde_json::Value| (l["queue_id"].as_u64(), l["queue_offset"].as_u64());
        let mut seen: std::collections::BTreeSet<_> = first.iter().map(key).collect();
        seen.extend(rest.iter().map(key));
        assert_eq!(
            seen.len(),
            80,
            "first {} + rest {}",
            first.len(),
            rest.len()
        );
        assert!(!rest.is_empty());
    })
    .await;
}

/// With `slave_read_enable`, a master answers a pull far behind (here:
/// any distance, ratio 0) with `suggest_which_broker_id = 1`, and the SDK
/// pulls that queue from the slave next: with the master stopped (still
/// in the route), the next pulls are served by the slave.
#[actix_rt::test]
async fn t85_a_consumer_far_behind_is_sent_to_the_slave() {
    bounded(async {
        let ns = namesrv();
        let env = [
            ("ACTORMQ_BROKER__SLAVE_READ_ENABLE", "true"),
            ("ACTORMQ_BROKER__ACCESS_MESSAGE_IN_MEMORY_MAX_RATIO", "0"),
        ];
        let nsa = ns.namesrv().to_string();
        let m = NodeProcess::start_with_env(
            Bin::Broker,
            &["--namesrv", &nsa, "--ha-role", "async-master"],
            &env,
        )
        .expect("start the master");
        let s =
            NodeProcess::start_with_env(Bin::Broker, &slave_args(&ns, &m.ha().to_string()), &env)
                .expect("start the slave");
        let topic = "t85-suggest";
        create_topic(m.broker(), topic, 1).await;
        let mut c = connect(m.broker()).await;
        send_batch(&mut c, topic, 0, 0, 40).await.expect("send");
        let mut sc = connect(s.broker()).await;
        wait_max_offset(&mut sc, topic, 0, 40).await;
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let consumer =
            actormq_sdk::consumer::PullConsumer::new("t85-behind", &nsa, log).expect("consumer");
        let deadline = std::time::Instant::now() + CONVERGE;
        let mq = loop {
            match consumer.fetch_queues(topic).await {
                Ok(q) if !q.is_empty() => break q[0].clone(),
                _ => {
                    assert!(std::time::Instant::now() < deadline, "no route");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // From the master, which suggests the slave.
        let first = consumer.pull(&mq, 0, 10).await.expect("first pull");
        assert_eq!(first.messages.len(), 10);
        // The master stopped (not gone from the route): the next pulls go
        // to the slave, which keeps suggesting itself while behind.
        m.signal("STOP").expect("stop the master");
        let started = std::time::Instant::now();
        let second = consumer.pull(&mq, 10, 10).await;
        let third = consumer.pull(&mq, 20, 10).await;
        m.signal("CONT").expect("continue the master");
        let second = second.expect("second pull, from the slave");
        let third = third.expect("third pull, from the slave");
        assert_eq!(second.messages[0].queue_offset, 10);
        assert_eq!(third.messages.len(), 10);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    })
    .await;
}

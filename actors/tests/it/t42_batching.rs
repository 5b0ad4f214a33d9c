//! The single writer batches: concurrent sends share store appends; sends
//! that waited too long in the broker are refused (flow control).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use actormq_actors::broker::CommitLogConfig;
use actormq_actors::broker::commit_log::GetCommitLogStats;
use actormq_actors::runtime::Call;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::SendMessageRequest;
use actormq_store::FlushMode;
use futures_util::future::join_all;

use crate::t40_send_pull::{Node, Opts, message, now_ms};

async fn concurrent_sends(node: &Node, topic: &str, n: usize) -> Vec<u64> {
    let sends = (0..n).map(|i| {
        let m = message(topic, i);
        let req = SendMessageRequest::new("pg", 0, now_ms(), &m);
        node.writer.send(Call::with_body(req, m.body.clone()))
    });
    join_all(sends)
        .await
        .into_iter()
        .map(|r| {
            let r = r.unwrap().unwrap();
            assert_eq!(r.code, ResponseCode::Success);
            r.fields.queue_offset
        })
        .collect()
}

async fn batches_form(flush: FlushMode) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            flush,
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("b", 1).await;
    let offsets = concurrent_sends(&node, "b", 1000).await;
    let unique: HashSet<u64> = offsets.iter().copied().collect();
    assert_eq!(unique, (0..1000).collect::<HashSet<u64>>());
    let s = node.writer.send(GetCommitLogStats).await.unwrap();
    println!(
        "{flush:?}: 1000 concurrent sends -> {} appends, largest {} requests",
        s.appends, s.largest_append_requests
    );
    assert_eq!(s.messages, 1000);
    assert!(s.appends <= 100, "batches did not form: {s:?}");
    assert!(s.largest_append_requests >= 10, "{s:?}");
    assert_eq!((s.refused_busy, s.flush_timeouts), (0, 0));
    let got = node.pull_n("b", 0, 0, 1000).await;
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.queue_offset, i as u64);
    }
    node.stop().await;
}

#[actix_rt::test]
async fn concurrent_sends_share_appends_async_flush() {
    batches_form(FlushMode::Async).await;
}

#[actix_rt::test]
async fn concurrent_sends_share_appends_sync_flush() {
    batches_form(FlushMode::Sync).await;
}

#[actix_rt::test]
async fn senders_on_several_threads_get_contiguous_queue_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("mt", 2).await;
    // Four "session" threads, 250 pipelined sends each, over two queues.
    let arbiters: Vec<actix::Arbiter> = (0..4).map(|_| actix::Arbiter::new()).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (a, arb) in arbiters.iter().enumerate() {
        let (writer, tx) = (node.writer.clone(), tx.clone());
        arb.spawn(async move {
            let sends = (0..250).map(|i| {
                let m = message("mt", a * 1000 + i);
                let req = SendMessageRequest::new("pg", (i % 2) as u32, now_ms(), &m);
                writer.send(Call::with_body(req, m.body.clone()))
            });
            for r in join_all(sends).await {
                let r = r.unwrap().unwrap();
                let _ = tx.send((r.fields.queue_id, r.fields.queue_offset));
            }
        });
    }
    drop(tx);
    let mut per_queue = [Vec::new(), Vec::new()];
    while let Some((q, off)) = rx.recv().await {
        per_queue[q as usize].push(off);
    }
    for offs in &mut per_queue {
        offs.sort_unstable();
        assert_eq!(*offs, (0..500).collect::<Vec<u64>>());
    }
    let s = node.writer.send(GetCommitLogStats).await.unwrap();
    assert_eq!(s.messages, 1000);
    println!("4 threads x 250 sends -> {} appends", s.appends);
    for a in arbiters {
        a.stop();
    }
    node.stop().await;
}

#[actix_rt::test]
async fn a_full_batch_is_appended_without_waiting_for_the_pass() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        dir.path(),
        Opts {
            writer: CommitLogConfig {
                max_batch_messages: 10,
                ..CommitLogConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("b", 1).await;
    let offsets = concurrent_sends(&node, "b", 500).await;
    let unique: HashSet<u64> = offsets.iter().copied().collect();
    assert_eq!(unique.len(), 500);
    let s = node.writer.send(GetCommitLogStats).await.unwrap();
    assert!(s.largest_append_requests <= 10, "{s:?}");
    assert!(s.appends >= 50, "{s:?}");
    node.stop().await;
}

#[actix_rt::test]
async fn sends_that_waited_too_long_are_refused_busy() {
    let dir = tempfile::tempdir().unwrap();
    // max_wait 0: any time between arrival and append is too long, which
    // is what a slow drain looks like.
    let node = Node::start(
        dir.path(),
        Opts {
            writer: CommitLogConfig {
                max_wait: Duration::ZERO,
                ..CommitLogConfig::default()
            },
            ..Opts::default()
        },
    )
    .await;
    node.create_topic("busy", 1).await;
    let e = node.send(0, &message("busy", 0)).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::SystemBusy);
    let msgs = vec![message("busy", 1), message("busy", 2)];
    let e = node.send_batch("busy", 0, &msgs).await.unwrap_err();
    assert_eq!(e.code, ResponseCode::SystemBusy);
    let s = node.writer.send(GetCommitLogStats).await.unwrap();
    assert_eq!((s.refused_busy, s.messages, s.appends), (2, 0, 0));
    assert_eq!(node.store.commit_log_max_offset(), 0);
    node.stop().await;
}

/// The 200 ms budget counts from the session's decode (`received_at`), so
/// time a request spent in mailboxes before the writer saw it counts too.
#[actix_rt::test]
async fn wait_before_the_writer_counts_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), Opts::default()).await;
    node.create_topic("late", 1).await;
    let msg = message("late", 0);
    let req = SendMessageRequest::new("pg", 0, now_ms(), &msg);
    let mut call = Call::with_body(req.clone(), msg.body.clone());
    call.received_at = Some(Instant::now() - Duration::from_millis(300));
    let e = node.writer.send(call).await.unwrap().unwrap_err();
    assert_eq!(e.code, ResponseCode::SystemBusy);
    let mut fresh = Call::with_body(req, msg.body.clone());
    fresh.received_at = Some(Instant::now());
    assert!(node.writer.send(fresh).await.unwrap().is_ok());
    node.stop().await;
}

/// Micro benchmark (run: `cargo test -p actormq-actors --release --test it
/// t42 -- --ignored --nocapture`): `conc` pipelined senders, 128-byte
/// bodies, async flush, one queue per sender.
#[actix_rt::test]
#[ignore]
async fn bench_send_throughput() {
    for (conc, flush) in [
        (1, FlushMode::Async),
        (64, FlushMode::Async),
        (512, FlushMode::Async),
        (64, FlushMode::Sync),
        (512, FlushMode::Sync),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(
            dir.path(),
            Opts {
                flush,
                segment_size: 64 << 20,
                ..Opts::default()
            },
        )
        .await;
        node.create_topic("bench", 8).await;
        let total = 200_000usize;
        let per = total / conc;
        let body = bytes::Bytes::from(vec![b'x'; 128]);
        let started = Instant::now();
        let workers = (0..conc).map(|w| {
            let writer = node.writer.clone();
            let body = body.clone();
            async move {
                for _ in 0..per {
                    let req = SendMessageRequest {
                        producer_group: "pg".into(),
                        topic: "bench".into(),
                        queue_id: (w % 8) as u32,
                        born_timestamp_ms: 0,
                        ..SendMessageRequest::default()
                    };
                    let r = writer
                        .send(Call::with_body(req, body.clone()))
                        .await
                        .unwrap();
                    assert!(r.is_ok());
                }
            }
        });
        join_all(workers).await;
        let el = started.elapsed();
        let s = node.writer.send(GetCommitLogStats).await.unwrap();
        println!(
            "{flush:?} conc={conc}: {} msgs in {el:?} = {:.0} msgs/s; {} appends, avg {:.1} msgs/append, largest {} requests",
            s.messages,
            s.messages as f64 / el.as_secs_f64(),
            s.appends,
            s.messages as f64 / s.appends.max(1) as f64,
            s.largest_append_requests
        );
        node.stop().await;
    }
}

//! SIGKILL a broker while pipelined sends are in flight; after a restart
//! every send acknowledged before the kill can be pulled intact, the queues
//! are dense and sends continue where they left off. **Needs the broker
//! data path wired into the node.**
//!
//! The spec's case is `--flush sync`. With `--flush async` a *process*
//! kill loses nothing either (the appended bytes are in the page cache),
//! so the same check applies there too; only a machine crash may lose the
//! unflushed tail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_protocol::request::{
    SendBatchMessageRequest, SendBatchMessageResponse, SendMessageResponse,
};
use actormq_protocol::{Bytes, Frame, Message, ResponseCode, batch};
use actormq_tests::client::typed_reply;
use actormq_tests::eventually;

use crate::common::*;

const QUEUES: u32 = 4;

fn body(i: u64) -> Bytes {
    let mut b = format!("crash-{i:010}-").into_bytes();
    b.extend((0..100u64).map(|j| (i.wrapping_mul(131) + j) as u8));
    b.into()
}

/// Request `r` (0, 1, ...): queue `r % QUEUES`; messages `r * per ..`.
fn request(topic: &str, r: u64, per: u64) -> Frame {
    let queue = (r % u64::from(QUEUES)) as u32;
    if per == 1 {
        let req = send_request(topic, queue, "crash", &format!("c{r}"));
        return Frame::request(0, &req, body(r)).expect("encode send");
    }
    let msgs: Vec<Message> = (r * per..(r + 1) * per)
        .map(|i| Message::new(topic, body(i)))
        .collect();
    let req = SendBatchMessageRequest {
        producer_group: "e2e-producer".into(),
        topic: topic.into(),
        queue_id: queue,
        born_timestamp_ms: actormq_tests::now_ms(),
        ..SendBatchMessageRequest::default()
    };
    Frame::request(0, &req, batch::messages_to_bytes(&msgs)).expect("encode batch")
}

/// Sends until `acked_before_kill` messages are acknowledged, SIGKILLs
/// the node with sends in flight, restarts it and checks.
///
/// `segment_size` (bytes) shrinks the commit-log segments so the run rolls
/// over many of them.
async fn crash_and_recover(
    flush: &str,
    topic: &str,
    per: u64,
    acked_before_kill: usize,
    segment_size: Option<u64>,
) {
    let env: Vec<(&str, String)> = segment_size
        .map(|s| ("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", s.to_string()))
        .into_iter()
        .collect();
    let mut node = actormq_tests::node::NodeProcess::start_with_env(
        actormq_tests::node::Bin::Node,
        &["--flush", flush],
        &env,
    )
    .expect("start a combined node");
    create_topic(node.broker(), topic, QUEUES).await;

    // (message index, queue, queue offset) of every acknowledged message;
    // indexes of messages refused with SYSTEM_BUSY (flow control: legal,
    // but then they must not be stored); anything else goes in `errors`.
    let acked: Arc<Mutex<Vec<(u64, u32, u64)>>> = Arc::default();
    let refused: Arc<Mutex<Vec<u64>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut sender = connect(node.broker()).await;
    let (a, e, busy) = (acked.clone(), errors.clone(), refused.clone());
    let t = topic.to_string();
    let task = tokio::spawn(async move {
        let frames = (0u64..).map(|r| request(&t, r, per));
        sender
            .send_many(frames, 32, |r, _, reply| {
                let r = r as u64;
                let fail = |code: ResponseCode, what: String| {
                    if code == ResponseCode::SystemBusy {
                        busy.lock().unwrap().extend(r * per..(r + 1) * per);
                    } else {
                        e.lock().unwrap().push(format!("#{r}: {code} {what}"));
                    }
                };
                if per == 1 {
                    match typed_reply::<SendMessageResponse>(reply) {
                        Ok(x) if x.code == ResponseCode::Success => {
                            let f = x.fields.expect("SUCCESS carries fields");
                            a.lock().unwrap().push((r, f.queue_id, f.queue_offset));
                        }
                        Ok(x) => fail(x.code, format!("{:?}", x.remark)),
                        Err(err) => fail(ResponseCode::SystemError, err.to_string()),
                    }
                } else {
                    match typed_reply::<SendBatchMessageResponse>(reply) {
                        Ok(x) if x.code == ResponseCode::Success => {
                            let f = x.fields.expect("SUCCESS carries fields");
                            assert_eq!(f.msg_ids().count() as u64, per);
                            let mut a = a.lock().unwrap();
                            for j in 0..per {
                                a.push((r * per + j, f.queue_id, f.queue_offset + j));
                            }
                        }
                        Ok(x) => fail(x.code, format!("{:?}", x.remark)),
                        Err(err) => fail(ResponseCode::SystemError, err.to_string()),
                    }
                }
            })
            .await
    });

    eventually(Duration::from_secs(30), || async {
        let n = acked.lock().unwrap().len();
        let errs = errors.lock().unwrap();
        if !errs.is_empty() {
            // Fail fast with the reason (e.g. no data path yet).
            panic!(
                "send errors before the kill: {:?}",
                &errs[..errs.len().min(5)]
            );
        }
        if n >= acked_before_kill {
            Ok(())
        } else {
            Err(format!("{n} acked"))
        }
    })
    .await
    .expect("sends acknowledged");

    node.kill().expect("SIGKILL");
    let outcome = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("sender notices the kill")
        .expect("sender task");
    assert!(
        outcome.is_err(),
        "the endless sender must end with the connection"
    );
    let acked = acked.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();

    node.restart().expect("restart after SIGKILL");
    let mut c = connect(node.broker()).await;
    let mut stored: HashMap<(u32, u64), Bytes> = HashMap::new();
    let mut max = HashMap::new();
    for q in 0..QUEUES {
        // Every acknowledged offset must come back: wait for the consume
        // queue to reach the highest (pull_all checks offsets are dense).
        let at_least = acked
            .iter()
            .filter(|a| a.1 == q)
            .map(|a| a.2 + 1)
            .max()
            .unwrap_or(0);
        let msgs = pull_all_at_least(&mut c, topic, q, at_least).await;
        max.insert(q, msgs.len() as u64);
        for m in msgs {
            assert!(
                m.message.body.starts_with(b"crash-"),
                "garbage body at {q}/{}",
                m.queue_offset
            );
            stored.insert((q, m.queue_offset), m.message.body);
        }
    }
    let mut missing = Vec::new();
    for &(i, q, off) in &acked {
        match stored.get(&(q, off)) {
            Some(b) if *b == body(i) => {}
            Some(_) => missing.push(format!("#{i} at {q}/{off}: different body")),
            None => missing.push(format!("#{i} at {q}/{off}: not stored")),
        }
    }
    assert!(
        missing.is_empty(),
        "{flush}: {} of {} acknowledged messages lost after SIGKILL + restart (stored {}): {:?}",
        missing.len(),
        acked.len(),
        stored.len(),
        &missing[..missing.len().min(10)]
    );
    let stored_index: std::collections::HashSet<u64> = stored
        .values()
        .filter_map(|b| std::str::from_utf8(b.get(6..16)?).ok()?.parse().ok())
        .collect();
    let refused_but_stored: Vec<u64> = refused
        .iter()
        .copied()
        .filter(|i| stored_index.contains(i))
        .collect();
    assert!(
        refused_but_stored.is_empty(),
        "{flush}: messages refused with SYSTEM_BUSY were stored: {:?}",
        &refused_but_stored[..refused_but_stored.len().min(10)]
    );
    eprintln!(
        "t50 {flush} batch {per}: {} acknowledged before SIGKILL ({} refused busy), {} stored after restart",
        acked.len(),
        refused.len(),
        stored.len()
    );

    // Sends continue at the recovered end of each queue.
    for q in 0..QUEUES {
        let r = c
            .call(
                &send_request(topic, q, "after", "after"),
                Bytes::from_static(b"crash-after"),
            )
            .await
            .expect("send after recovery")
            .ok()
            .expect("send after recovery succeeds");
        assert_eq!(r.queue_offset, max[&q], "queue {q} continues at its end");
    }
    node.terminate().expect("SIGTERM exits 0 after recovery");
}

#[tokio::test]
async fn t50_sigkill_under_sync_flush_keeps_every_acked_send() {
    bounded(crash_and_recover("sync", "t50-sync", 1, 400, None)).await;
}

#[tokio::test]
async fn t50_sigkill_under_sync_flush_keeps_every_acked_batch() {
    bounded(crash_and_recover("sync", "t50-sync-batch", 16, 400, None)).await;
}

#[tokio::test]
async fn t50_sigkill_under_async_flush_keeps_every_acked_send() {
    bounded(crash_and_recover("async", "t50-async", 1, 400, None)).await;
}

#[tokio::test]
async fn t50_sigkill_after_many_async_batches_recovers_them_all() {
    // ~60k messages of ~200 bytes over 1 MiB segments: a dozen rolls
    // before the kill.
    bounded(crash_and_recover(
        "async",
        "t50-async-many",
        32,
        60_000,
        Some(1 << 20),
    ))
    .await;
}

#[tokio::test]
async fn t50_sigkill_under_sync_flush_across_segment_rolls() {
    bounded(crash_and_recover(
        "sync",
        "t50-sync-rolls",
        16,
        20_000,
        Some(256 << 10),
    ))
    .await;
}

//! SIGKILL a broker running `--flush sync` while pipelined sends are in
//! flight; after a restart every send acknowledged before the kill can be
//! pulled intact. **Needs the broker data path wired into the node.**

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_protocol::request::SendMessageResponse;
use actormq_protocol::{Bytes, Frame, ResponseCode};
use actormq_tests::client::typed_reply;
use actormq_tests::eventually;

use crate::common::*;

const TOPIC: &str = "t50-crash";
const QUEUES: u32 = 4;
/// Acknowledged sends to wait for before the kill.
const ACKED_BEFORE_KILL: usize = 400;

fn body(i: u64) -> Bytes {
    let mut b = format!("crash-{i:010}-").into_bytes();
    b.extend((0..100u64).map(|j| (i.wrapping_mul(131) + j) as u8));
    b.into()
}

#[tokio::test]
async fn t50_sigkill_under_sync_flush_keeps_every_acked_send() {
    bounded(async {
        let mut node = combined(&["--flush", "sync"]);
        create_topic(node.broker(), TOPIC, QUEUES).await;

        // (index, queue, queue offset) of every SUCCESS before the kill;
        // anything else a reply said goes in `errors`.
        let acked: Arc<Mutex<Vec<(u64, u32, u64)>>> = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut sender = connect(node.broker()).await;
        let (a, e) = (acked.clone(), errors.clone());
        let task = tokio::spawn(async move {
            let frames = (0u64..).map(|i| {
                let req = send_request(
                    TOPIC,
                    (i % u64::from(QUEUES)) as u32,
                    "crash",
                    &format!("c{i}"),
                );
                Frame::request(0, &req, body(i)).expect("encode send")
            });
            sender
                .send_many(frames, 32, |i, _, reply| {
                    match typed_reply::<SendMessageResponse>(reply) {
                        Ok(r) if r.code == ResponseCode::Success => {
                            let f = r.fields.expect("SUCCESS carries fields");
                            a.lock()
                                .unwrap()
                                .push((i as u64, f.queue_id, f.queue_offset));
                        }
                        Ok(r) => e
                            .lock()
                            .unwrap()
                            .push(format!("#{i}: {} {:?}", r.code, r.remark)),
                        Err(err) => e.lock().unwrap().push(format!("#{i}: {err}")),
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
            if n >= ACKED_BEFORE_KILL {
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
        assert!(acked.len() >= ACKED_BEFORE_KILL);

        node.restart().expect("restart after SIGKILL");
        let mut c = connect(node.broker()).await;
        let mut stored: HashMap<(u32, u64), Bytes> = HashMap::new();
        for q in 0..QUEUES {
            // pull_all checks the offsets are dense from 0.
            for m in pull_all(&mut c, TOPIC, q).await {
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
            "{} of {} acknowledged sends lost after SIGKILL + restart (stored {}): {:?}",
            missing.len(),
            acked.len(),
            stored.len(),
            &missing[..missing.len().min(10)]
        );
        eprintln!(
            "t50: {} acknowledged before SIGKILL, {} stored after restart",
            acked.len(),
            stored.len()
        );
        node.terminate().expect("SIGTERM exits 0 after recovery");
    })
    .await;
}

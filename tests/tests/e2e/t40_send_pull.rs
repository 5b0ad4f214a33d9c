//! Send and pull through a node's data path (SEND_MESSAGE,
//! SEND_BATCH_MESSAGE, PULL_MESSAGE, long polling), across a SIGTERM
//! restart. **Needs the broker data path wired into the node.**

use std::time::{Duration, Instant};

use actormq_protocol::request::{
    PullMessageResponse, QueryConsumerOffsetRequest, SendBatchMessageRequest,
    SendBatchMessageResponse, SendMessageResponse, UpdateConsumerOffsetRequest,
};
use actormq_protocol::{Bytes, Message, ResponseCode, StoredMessage, batch};

use crate::common::*;

const TOPIC: &str = "t40-data";

fn body_of(i: usize) -> Bytes {
    // Varied sizes, binary content, one empty-ish and one large.
    let len = match i % 5 {
        0 => 1,
        1 => 128,
        2 => 1000,
        3 => 7,
        _ => 64 * 1024,
    };
    (0..len)
        .map(|j| (i * 31 + j * 7) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// What was sent: queue, queue offset, message id, and the message.
#[derive(Debug, Clone)]
struct Sent {
    queue: u32,
    offset: u64,
    msg_id: String,
    tag: String,
    key: String,
    body: Bytes,
}

fn check_pulled(sent: &[Sent], pulled: &[StoredMessage]) {
    assert_eq!(pulled.len(), sent.len(), "message count");
    for (s, p) in sent.iter().zip(pulled) {
        assert_eq!((p.queue_id, p.queue_offset), (s.queue, s.offset));
        assert_eq!(p.message.body, s.body, "body of {}/{}", s.queue, s.offset);
        assert_eq!(p.message.tags.as_deref(), Some(s.tag.as_str()));
        assert_eq!(p.message.keys.as_deref(), Some(s.key.as_str()));
        assert_eq!(
            p.message.properties.get("e2e-prop").map(String::as_str),
            Some(format!("v-{}", s.key).as_str()),
            "user property kept"
        );
        assert_eq!(p.body_crc, crc(&s.body), "body crc");
        assert_eq!(
            p.msg_id().encode(),
            s.msg_id,
            "msg id of {}/{}",
            s.queue,
            s.offset
        );
    }
}

fn crc(b: &[u8]) -> u32 {
    // CRC32 (IEEE), bitwise: the stored `body_crc` must match.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

async fn send_singles(c: &mut actormq_tests::client::Client, queue: u32, n: usize) -> Vec<Sent> {
    let mut out = Vec::new();
    for i in 0..n {
        let (tag, key) = (format!("tag{}", i % 3), format!("k{queue}-{i}"));
        let body = body_of(i);
        let reply = c
            .call(&send_request(TOPIC, queue, &tag, &key), body.clone())
            .await
            .expect("SEND_MESSAGE");
        let r: SendMessageResponse = reply.ok().unwrap_or_else(|e| panic!("send {i}: {e}"));
        assert_eq!(r.queue_id, queue);
        assert_eq!(r.queue_offset, i as u64, "offsets consecutive from 0");
        out.push(Sent {
            queue,
            offset: r.queue_offset,
            msg_id: r.msg_id,
            tag,
            key,
            body,
        });
    }
    out
}

async fn send_batches(
    c: &mut actormq_tests::client::Client,
    queue: u32,
    batches: usize,
    per: usize,
) -> Vec<Sent> {
    let mut out = Vec::new();
    for b in 0..batches {
        let msgs: Vec<Message> = (0..per)
            .map(|j| {
                let i = b * per + j;
                let mut m = Message::new(TOPIC, body_of(i));
                m.tags = Some(format!("tag{}", i % 3));
                m.keys = Some(format!("k{queue}-{i}"));
                m.properties
                    .insert("e2e-prop".into(), format!("v-k{queue}-{i}"));
                m
            })
            .collect();
        let req = SendBatchMessageRequest {
            producer_group: "e2e-producer".into(),
            topic: TOPIC.into(),
            queue_id: queue,
            born_timestamp_ms: actormq_tests::now_ms(),
            ..SendBatchMessageRequest::default()
        };
        let reply = c
            .call(&req, batch::messages_to_bytes(&msgs))
            .await
            .expect("SEND_BATCH_MESSAGE");
        let r: SendBatchMessageResponse = reply.ok().unwrap_or_else(|e| panic!("batch {b}: {e}"));
        assert_eq!(r.queue_id, queue);
        assert_eq!(r.queue_offset, (b * per) as u64);
        assert_eq!(r.msg_ids().count(), per);
        for (j, (m, id)) in msgs.into_iter().zip(r.msg_ids()).enumerate() {
            out.push(Sent {
                queue,
                offset: r.queue_offset + j as u64,
                msg_id: id.to_owned(),
                tag: m.tags.unwrap(),
                key: m.keys.unwrap(),
                body: m.body,
            });
        }
    }
    out
}

#[tokio::test]
async fn t40_send_pull_long_poll_and_restart() {
    bounded(async {
        // Debug logs: the broker says when it holds and wakes a pull.
        let mut node = combined(&["--log-level", "debug"]);
        create_topic(node.broker(), TOPIC, 4).await;
        let mut c = connect(node.broker()).await;

        // Single sends to queue 0, batches to queue 1.
        let singles = send_singles(&mut c, 0, 25).await;
        let batched = send_batches(&mut c, 1, 4, 16).await;
        assert_eq!(wait_max_offset(&mut c, TOPIC, 0, 25).await, 25);
        assert_eq!(wait_max_offset(&mut c, TOPIC, 1, 64).await, 64);
        check_pulled(&singles, &pull_all_at_least(&mut c, TOPIC, 0, 25).await);
        check_pulled(&batched, &pull_all_at_least(&mut c, TOPIC, 1, 64).await);

        // An empty queue answers PULL_NOT_FOUND at once without long polling...
        let t = Instant::now();
        let r = c
            .call(&pull_request(TOPIC, 2, 0, 32, 0), Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.code, ResponseCode::PullNotFound);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // ...and after the suspend time with it.
        let t = Instant::now();
        let r = c
            .call(&pull_request(TOPIC, 2, 0, 32, 600), Bytes::new())
            .await
            .unwrap();
        assert_eq!(r.code, ResponseCode::PullNotFound);
        let held = t.elapsed();
        assert!(
            held >= Duration::from_millis(500) && held < Duration::from_secs(5),
            "held {held:?} for a 600 ms suspend"
        );

        // Long polling: a held pull answers as soon as a send lands.
        let mut puller = connect(node.broker()).await;
        let held = pull_request(TOPIC, 3, 0, 32, 10_000);
        let pull = puller.call(&held, Bytes::new());
        let send = async {
            // The send goes out only once the broker has held the pull
            // (its own event, logged), so the pull cannot simply find the
            // message on arrival.
            actormq_tests::eventually(CONVERGE, || {
                let log = node.stderr_tail(2000);
                async move {
                    let held = log.lines().any(|l| {
                        l.contains("pull held") && l.contains(TOPIC) && l.contains("queue: 3")
                    });
                    if held {
                        Ok(())
                    } else {
                        Err("pull not held yet".to_string())
                    }
                }
            })
            .await
            .expect("the broker holds the pull");
            let sent_at = Instant::now();
            let r = c
                .call(
                    &send_request(TOPIC, 3, "lp", "lp-key"),
                    Bytes::from_static(b"wake up"),
                )
                .await
                .expect("send during long poll");
            r.ok().expect("send during long poll succeeds");
            sent_at
        };
        let (pulled, sent_at) = tokio::join!(pull, send);
        let woke = sent_at.elapsed();
        let (fields, body): (PullMessageResponse, Bytes) = pulled
            .expect("held pull")
            .expect_code(ResponseCode::Success)
            .expect("held pull answered with the message");
        let msgs = batch::decode_stored(&body).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].message.body, Bytes::from_static(b"wake up"));
        assert_eq!(fields.next_begin_offset, 1);
        assert!(
            woke < Duration::from_secs(2),
            "held pull answered {woke:?} after the send"
        );
        // Answered by the wake-up, not by the hold's expiry.
        let woken = actormq_tests::eventually(CONVERGE, || {
            let log = node.stderr_tail(2000);
            async move {
                log.lines()
                    .find(|l| {
                        l.contains("held pull woken") && l.contains(TOPIC) && l.contains("queue: 3")
                    })
                    .map(str::to_owned)
                    .ok_or_else(|| "no wake-up logged".to_string())
            }
        })
        .await
        .expect("the held pull was woken");
        assert!(woken.contains("Success"), "{woken}");

        // Consumer offsets, then a graceful restart.
        for (q, off) in [(0u32, 20u64), (1, 64)] {
            c.call(
                &UpdateConsumerOffsetRequest {
                    consumer_group: "t40-group".into(),
                    topic: TOPIC.into(),
                    queue_id: q,
                    commit_offset: off,
                },
                Bytes::new(),
            )
            .await
            .unwrap()
            .ok()
            .expect("commit offset");
        }
        drop((c, puller));
        node.terminate().expect("SIGTERM exits 0");
        node.restart().expect("restart");

        let mut c = connect(node.broker()).await;
        assert_eq!(wait_max_offset(&mut c, TOPIC, 0, 25).await, 25);
        assert_eq!(wait_max_offset(&mut c, TOPIC, 1, 64).await, 64);
        assert_eq!(wait_max_offset(&mut c, TOPIC, 3, 1).await, 1);
        check_pulled(&singles, &pull_all_at_least(&mut c, TOPIC, 0, 25).await);
        check_pulled(&batched, &pull_all_at_least(&mut c, TOPIC, 1, 64).await);
        for (q, off) in [(0u32, 20u64), (1, 64)] {
            let r = c
                .call(
                    &QueryConsumerOffsetRequest {
                        consumer_group: "t40-group".into(),
                        topic: TOPIC.into(),
                        queue_id: q,
                    },
                    Bytes::new(),
                )
                .await
                .unwrap()
                .ok()
                .expect("offset after restart");
            assert_eq!(r.offset, off, "queue {q}");
        }
        // Sends continue after the restart where the queue left off.
        let r = c
            .call(
                &send_request(TOPIC, 0, "after", "after"),
                Bytes::from_static(b"after restart"),
            )
            .await
            .unwrap()
            .ok()
            .expect("send after restart");
        assert_eq!(r.queue_offset, 25);
        node.terminate().expect("SIGTERM exits 0");
    })
    .await;
}

async fn pull_filtered(
    c: &mut actormq_tests::client::Client,
    topic: &str,
    queue: u32,
    subscription: &str,
    count: u64,
) -> Vec<StoredMessage> {
    let max = wait_max_offset(c, topic, queue, count).await;
    let mut out = Vec::new();
    let mut next = 0u64;
    let mut rounds = 0;
    while next < max {
        rounds += 1;
        assert!(
            rounds < 1000,
            "filtered pull does not advance ({next} of {max})"
        );
        let mut req = pull_request(topic, queue, next, 4, 0);
        req.subscription = Some(subscription.into());
        req.expression_type = Some("TAG".into());
        let reply = c.call(&req, Bytes::new()).await.expect("PULL_MESSAGE");
        let code = reply.code;
        let fields: PullMessageResponse = reply
            .fields
            .unwrap_or_else(|| panic!("pull reply {code} without fields: {:?}", reply.remark));
        match code {
            ResponseCode::Success => {
                out.extend(batch::decode_stored(&reply.body).expect("batch decodes"))
            }
            ResponseCode::PullRetryImmediately | ResponseCode::PullNotFound => {}
            other => panic!("filtered pull at {next}: {other} {:?}", reply.remark),
        }
        assert!(fields.next_begin_offset > next || code == ResponseCode::PullNotFound);
        next = fields.next_begin_offset;
    }
    out
}

#[tokio::test]
async fn t40_auto_create_tag_filter_offsets_and_refusals() {
    bounded(async {
        let node = combined(NO_ARGS);
        let topic = "t40-auto";
        let mut c = connect(node.broker()).await;

        // Auto-create on first send (default queues: 4), announced to the
        // name server.
        let tags = ["A", "B", "C"];
        let send = async |c: &mut actormq_tests::client::Client, i: usize| {
            let r = c
                .call(
                    &send_request(topic, 0, tags[i % 3], &format!("k{i}")),
                    Bytes::from(format!("m{i}")),
                )
                .await
                .expect("SEND_MESSAGE");
            let r: SendMessageResponse = r.ok().unwrap_or_else(|e| panic!("send {i}: {e}"));
            assert_eq!(r.queue_offset, i as u64);
        };
        for i in 0..15 {
            send(&mut c, i).await;
        }
        // The first 15 were stored at or before `acked`; `middle` is a
        // later millisecond (the broker stamps with the same clock), and
        // the next 15 are stored at or after it.
        let acked = actormq_tests::now_ms();
        let mut middle = acked;
        while middle <= acked {
            tokio::time::sleep(Duration::from_millis(1)).await;
            middle = actormq_tests::now_ms();
        }
        for i in 15..30 {
            send(&mut c, i).await;
        }
        wait_route(node.namesrv(), topic, "broker-a", node.broker(), 4).await;

        // Tag filtering: only A and C, in order, bodies intact.
        let got = pull_filtered(&mut c, topic, 0, "A || C", 30).await;
        let want: Vec<usize> = (0..30).filter(|i| i % 3 != 1).collect();
        assert_eq!(
            got.iter()
                .map(|m| m.queue_offset as usize)
                .collect::<Vec<_>>(),
            want
        );
        for m in &got {
            assert_eq!(m.message.body, Bytes::from(format!("m{}", m.queue_offset)));
            assert_ne!(m.message.tags.as_deref(), Some("B"));
        }
        assert_eq!(pull_filtered(&mut c, topic, 0, "*", 30).await.len(), 30);

        // Min / max / search by timestamp.
        use actormq_protocol::request::{GetMinOffsetRequest, SearchOffsetByTimestampRequest};
        let min = c
            .call(
                &GetMinOffsetRequest {
                    topic: topic.into(),
                    queue_id: 0,
                },
                Bytes::new(),
            )
            .await
            .unwrap()
            .ok()
            .expect("GET_MIN_OFFSET");
        assert_eq!(min.offset, 0);
        assert_eq!(wait_max_offset(&mut c, topic, 0, 30).await, 30);
        for (ts, want) in [
            (0, 0),
            (middle, 15),
            (actormq_tests::now_ms() + 3_600_000, 30),
        ] {
            let r = c
                .call(
                    &SearchOffsetByTimestampRequest {
                        topic: topic.into(),
                        queue_id: 0,
                        timestamp_ms: ts,
                    },
                    Bytes::new(),
                )
                .await
                .unwrap()
                .ok()
                .expect("SEARCH_OFFSET_BY_TIMESTAMP");
            assert_eq!(r.offset, want, "search offset at {ts} (middle {middle})");
        }

        // A pull can commit the group's offset on the way.
        let mut req = pull_request(topic, 0, 10, 1, 0);
        req.consumer_group = "t40-piggy".into();
        req.commit_offset = Some(7);
        c.call(&req, Bytes::new())
            .await
            .unwrap()
            .expect_code(ResponseCode::Success)
            .expect("pull with commit offset");
        actormq_tests::eventually(Duration::from_secs(5), || async {
            let mut q = actormq_tests::client::Client::connect(node.broker())
                .await
                .map_err(|e| e.to_string())?;
            let r = q
                .call(
                    &QueryConsumerOffsetRequest {
                        consumer_group: "t40-piggy".into(),
                        topic: topic.into(),
                        queue_id: 0,
                    },
                    Bytes::new(),
                )
                .await
                .map_err(|e| e.to_string())?;
            match r.fields {
                Some(f) if r.code == ResponseCode::Success && f.offset == 7 => Ok(()),
                _ => Err(format!("{} {:?}", r.code, r.fields)),
            }
        })
        .await
        .expect("piggybacked commit offset");

        // Refusals leave the connection usable: an oversized message, a
        // malformed batch body.
        let big = Bytes::from(vec![7u8; actormq_protocol::DEFAULT_MAX_MESSAGE_SIZE + 1]);
        let r = c
            .call(&send_request(topic, 1, "big", "big"), big)
            .await
            .expect("reply to an oversized message");
        assert_eq!(r.code, ResponseCode::MessageIllegal, "{:?}", r.remark);
        let bad = SendBatchMessageRequest {
            producer_group: "e2e-producer".into(),
            topic: topic.into(),
            queue_id: 1,
            born_timestamp_ms: actormq_tests::now_ms(),
            ..SendBatchMessageRequest::default()
        };
        let r = c
            .call(&bad, Bytes::from_static(&[0, 0, 0, 200, 0, 0, 0, 1, 0xc1]))
            .await
            .expect("reply to a malformed batch");
        assert!(!r.is_success(), "malformed batch accepted");
        assert_eq!(
            max_offset(&mut c, topic, 1).await,
            0,
            "nothing stored by refusals"
        );
        send(&mut c, 30).await;
    })
    .await;
}

#[tokio::test]
async fn t40_sigterm_with_a_held_pull_exits_promptly() {
    bounded(async {
        // Debug logs: the broker says when it holds a pull.
        let mut node = combined(&["--log-level", "debug"]);
        create_topic(node.broker(), "t40-held", 1).await;
        let mut puller = connect(node.broker()).await;
        let held = pull_request("t40-held", 0, 0, 32, 15_000);
        let pull = puller.call(&held, Bytes::new());
        let stop = async {
            // SIGTERM only once the broker has held the pull (its own
            // event, logged).
            actormq_tests::eventually(CONVERGE, || {
                let log = node.stderr_tail(2000);
                async move {
                    let held = log.lines().any(|l| {
                        l.contains("pull held") && l.contains("t40-held") && l.contains("queue: 0")
                    });
                    if held {
                        Ok(())
                    } else {
                        Err("pull not held yet".to_string())
                    }
                }
            })
            .await
            .expect("the broker holds the pull");
            let t = Instant::now();
            // Blocking is fine: the reply waits in the socket buffer.
            let status = node.terminate_status();
            (t.elapsed(), status)
        };
        let (reply, (took, status)) = tokio::join!(pull, stop);
        let status = status.expect("node exits after SIGTERM");
        assert!(status.success(), "exit status {status}");
        // The held pull is answered (nothing found) or its connection
        // closes; either way the node does not sit out the 15 s.
        if let Ok(r) = &reply {
            assert_ne!(r.code, ResponseCode::Success, "{:?}", r.remark);
        }
        assert!(
            took < Duration::from_secs(10),
            "SIGTERM took {took:?} with a held pull"
        );
    })
    .await;
}

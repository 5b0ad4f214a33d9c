//! The idempotent producer against a child-process node: replies lost on
//! purpose by a TCP proxy between the SDK producer and the broker make the
//! producer time out and retry, and every message is still stored exactly
//! once (a plain producer through the same proxy stores duplicates); the
//! dedup window survives a SIGKILL of the broker.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_protocol::request::{SendMessageRequest, SendMessageResponse};
use actormq_protocol::{Bytes, Frame, FrameCodec, Message, RequestCode, ResponseCode};
use actormq_sdk::{Producer, ProducerBuilder, SendStatus};
use actormq_tests::client::typed_reply;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;

use crate::common::*;

/// A proxy between clients and a broker that swallows the reply of every
/// `drop_every`-th send request (SEND_MESSAGE and SEND_BATCH_MESSAGE)
/// while `drop_every` is not 0, and with `close` set also closes that
/// connection (a reply lost with its connection). Real sockets both ways.
struct LossyProxy {
    addr: SocketAddr,
    drop_every: Arc<AtomicU64>,
    close: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
}

impl LossyProxy {
    async fn bind() -> (LossyProxy, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = LossyProxy {
            addr: listener.local_addr().unwrap(),
            drop_every: Arc::new(AtomicU64::new(0)),
            close: Arc::new(AtomicBool::new(false)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (proxy, listener)
    }

    /// Forwards every connection accepted on `listener` to `upstream`.
    fn serve(&self, listener: TcpListener, upstream: SocketAddr) {
        let (every, dropped) = (self.drop_every.clone(), self.dropped.clone());
        let close = self.close.clone();
        let sends = Arc::new(AtomicU64::new(0));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let pending: Arc<Mutex<HashSet<u64>>> = Arc::default();
                let p = pending.clone();
                tokio::spawn(async move {
                    let mut from = FramedRead::new(cr, FrameCodec::default());
                    let mut to = sw;
                    while let Some(Ok(frame)) = from.next().await {
                        let code = frame.header.code;
                        if !frame.header.is_response()
                            && (code == RequestCode::SendMessage.as_u32()
                                || code == RequestCode::SendBatchMessage.as_u32())
                        {
                            p.lock().unwrap().insert(frame.header.request_id);
                        }
                        let Ok(bytes) = actormq_tests::client::encode(&frame) else {
                            break;
                        };
                        if to.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
                let (every, dropped, sends) = (every.clone(), dropped.clone(), sends.clone());
                let close = close.clone();
                tokio::spawn(async move {
                    let mut from = FramedRead::new(sr, FrameCodec::default());
                    let mut to = cw;
                    while let Some(Ok(frame)) = from.next().await {
                        let id = frame.header.request_id;
                        if frame.header.is_response() && pending.lock().unwrap().remove(&id) {
                            let n = sends.fetch_add(1, Ordering::SeqCst) + 1;
                            let every = every.load(Ordering::SeqCst);
                            if every > 0 && n % every == 0 {
                                dropped.fetch_add(1, Ordering::SeqCst);
                                if close.load(Ordering::SeqCst) {
                                    break;
                                }
                                continue;
                            }
                        }
                        let Ok(bytes) = actormq_tests::client::encode(&frame) else {
                            break;
                        };
                        if to.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
}

async fn producer(namesrv: SocketAddr, idempotent: bool) -> Producer {
    let b = ProducerBuilder::new(if idempotent { "t63-idem" } else { "t63-plain" })
        .namesrv([namesrv.to_string()])
        // 3 tries of 1.5 s each: a lost reply costs one try.
        .send_timeout(Duration::from_millis(4500))
        .retries(2);
    let b = if idempotent { b.idempotent() } else { b };
    b.build().await.expect("producer starts")
}

/// Every message body of `topic` (queues `0..queues`) with its count.
async fn stored_bodies(broker: SocketAddr, topic: &str, queues: u32) -> BTreeMap<String, usize> {
    let mut c = connect(broker).await;
    let mut out = BTreeMap::new();
    for q in 0..queues {
        for m in pull_all(&mut c, topic, q).await {
            *out.entry(String::from_utf8_lossy(&m.message.body).into_owned())
                .or_default() += 1;
        }
    }
    out
}

#[actix_rt::test]
async fn t63_lost_replies_are_retried_and_stored_once() {
    bounded(async {
        let (proxy, listener) = LossyProxy::bind().await;
        let advertise = proxy.addr.to_string();
        let node = combined(&["--broker-advertise", &advertise]);
        proxy.serve(listener, node.broker());
        let topic = "t63-lossy";
        create_topic(node.broker(), topic, 2).await;
        wait_route(node.namesrv(), topic, "broker-a", proxy.addr, 2).await;

        let p = producer(node.namesrv(), true).await;
        let id = p.producer_id().expect("idempotent").to_owned();
        assert_eq!(id.len(), 32);
        // Every third send reply is lost: the producer times out, retries
        // the same (queue, sequence), and gets the original result.
        proxy.drop_every.store(3, Ordering::SeqCst);
        let mut results = BTreeMap::new();
        for i in 0..12 {
            let body = format!("idem-{i}");
            let r = p
                .send(Message::new(topic, body.clone()))
                .await
                .expect("idempotent send");
            assert_eq!(r.status, SendStatus::SendOk);
            results.insert(body, (r.queue_id, r.queue_offset, r.msg_id));
        }
        // Now a lost reply takes its connection with it: the producer
        // retries at once on a new one.
        proxy.close.store(true, Ordering::SeqCst);
        for i in 12..18 {
            let body = format!("idem-{i}");
            let r = p
                .send(Message::new(topic, body.clone()))
                .await
                .expect("idempotent send");
            results.insert(body, (r.queue_id, r.queue_offset, r.msg_id));
        }
        for b in 0..2 {
            let msgs: Vec<Message> = (0..3)
                .map(|j| Message::new(topic, format!("idem-batch-{b}-{j}")))
                .collect();
            let r = p.send_batch(&msgs).await.expect("idempotent batch");
            let ids: Vec<&str> = r.msg_id.split(',').collect();
            assert_eq!(ids.len(), 3);
            for (j, m) in msgs.iter().enumerate() {
                let body = String::from_utf8_lossy(&m.body).into_owned();
                results.insert(
                    body,
                    (r.queue_id, r.queue_offset + j as u64, ids[j].to_owned()),
                );
            }
        }
        let lost = proxy.dropped.load(Ordering::SeqCst);
        assert!(lost >= 6, "only {lost} replies were dropped");
        proxy.drop_every.store(0, Ordering::SeqCst);

        // Each message once, where the producer was told.
        let stored = stored_bodies(node.broker(), topic, 2).await;
        assert_eq!(stored.len(), results.len(), "{stored:?}");
        for (body, n) in &stored {
            assert_eq!(*n, 1, "{body} stored {n} times");
        }
        let mut c = connect(node.broker()).await;
        for q in 0..2 {
            for m in pull_all(&mut c, topic, q).await {
                let body = String::from_utf8_lossy(&m.message.body).into_owned();
                let (rq, ro, _) = &results[&body];
                assert_eq!((*rq, *ro), (m.queue_id, m.queue_offset), "{body}");
                assert!(!m.message.properties.contains_key("PRODUCER_ID"));
            }
        }
        p.shutdown().await;

        // Control: a plain producer through the same proxy stores a
        // retried send twice.
        let plain_topic = "t63-plain";
        create_topic(node.broker(), plain_topic, 1).await;
        wait_route(node.namesrv(), plain_topic, "broker-a", proxy.addr, 1).await;
        let plain = producer(node.namesrv(), false).await;
        assert!(plain.producer_id().is_none());
        proxy.dropped.store(0, Ordering::SeqCst);
        proxy.drop_every.store(1, Ordering::SeqCst);
        // Every reply lost with its connection: three tries, three copies,
        // an error.
        let err = plain.send(Message::new(plain_topic, "twice")).await;
        assert!(err.is_err());
        proxy.drop_every.store(0, Ordering::SeqCst);
        let stored = stored_bodies(node.broker(), plain_topic, 1).await;
        assert!(stored["twice"] >= 2, "{stored:?}");
        plain.shutdown().await;
    })
    .await;
}

const PID: &str = "0123456789abcdef0123456789abcdef";

fn idem_request(topic: &str, seq: u64) -> SendMessageRequest {
    let mut req = send_request(topic, 0, "idem", &format!("k{seq}"));
    req.producer_id = Some(PID.into());
    req.sequence = Some(seq);
    req
}

fn idem_body(seq: u64) -> Bytes {
    Bytes::from(format!("restart-{seq}"))
}

/// Queue, queue offset and commit log offset of a reply.
fn place(r: &SendMessageResponse) -> (u32, u64, u64) {
    let id = actormq_protocol::MessageId::decode(&r.msg_id).expect("message id");
    (r.queue_id, r.queue_offset, id.commit_log_offset)
}

async fn send_seq(
    c: &mut actormq_tests::client::Client,
    topic: &str,
    seq: u64,
) -> SendMessageResponse {
    let reply = c
        .call(&idem_request(topic, seq), idem_body(seq))
        .await
        .expect("send");
    assert_eq!(reply.code, ResponseCode::Success, "{:?}", reply.remark);
    reply.fields.expect("send reply fields")
}

#[actix_rt::test]
async fn t63_the_dedup_window_survives_a_broker_kill() {
    bounded(async {
        let mut node = combined(&["--flush", "sync"]);
        let topic = "t63-restart";
        create_topic(node.broker(), topic, 1).await;
        let mut c = connect(node.broker()).await;
        let mut first = Vec::new();
        for seq in 0..5 {
            first.push(send_seq(&mut c, topic, seq).await);
        }
        // The reply of seq 5 is never read: SIGKILL right after the send.
        let frame = Frame::request(999, &idem_request(topic, 5), idem_body(5)).unwrap();
        c.write_frame(&frame).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        node.kill().unwrap();
        node.restart().unwrap();

        let mut c = connect(node.broker()).await;
        // The resends get the original results and store nothing.
        // (The restarted broker listens on another port: message ids name
        // the broker's current address, so compare the record's place.)
        for seq in 0..5 {
            let again = send_seq(&mut c, topic, seq).await;
            assert_eq!(place(&again), place(&first[seq as usize]), "seq {seq}");
        }
        let five = send_seq(&mut c, topic, 5).await;
        assert_eq!(five.queue_offset, 5);
        let five_again = send_seq(&mut c, topic, 5).await;
        assert_eq!(five_again, five);
        // The queue holds each message once.
        let msgs = pull_all_at_least(&mut c, topic, 0, 6).await;
        let bodies: Vec<String> = msgs
            .iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
            .collect();
        let want: Vec<String> = (0..6).map(|s| format!("restart-{s}")).collect();
        assert_eq!(bodies, want);
        // The raw reply path: a duplicate is a normal success frame.
        let reply = c
            .call_frame(Frame::request(7, &idem_request(topic, 2), idem_body(2)).unwrap())
            .await
            .unwrap();
        let typed = typed_reply::<SendMessageResponse>(reply).unwrap();
        assert_eq!(typed.fields.as_ref().map(place), Some(place(&first[2])));
    })
    .await;
}

#[actix_rt::test]
async fn t63_the_window_size_is_a_node_setting() {
    bounded(async {
        let node = actormq_tests::node::NodeProcess::start_with_env(
            actormq_tests::node::Bin::Node,
            NO_ARGS,
            &[("ACTORMQ_BROKER__PRODUCER_DEDUP_WINDOW", "2")],
        )
        .expect("start a combined node");
        let topic = "t63-window";
        create_topic(node.broker(), topic, 1).await;
        let mut c = connect(node.broker()).await;
        for seq in 0..4 {
            send_seq(&mut c, topic, seq).await;
        }
        // Window of 2: 2 and 3 are remembered, 0 and 1 are below it.
        let again = send_seq(&mut c, topic, 3).await;
        assert_eq!(again.queue_offset, 3);
        let reply = c
            .call(&idem_request(topic, 1), idem_body(1))
            .await
            .expect("send");
        assert_eq!(
            reply.code,
            ResponseCode::SequenceOutOfWindow,
            "{:?}",
            reply.remark
        );
        assert_eq!(wait_max_offset(&mut c, topic, 0, 4).await, 4);
    })
    .await;
}

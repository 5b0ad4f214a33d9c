//! Idempotent retries: a producer built with `.idempotent()` sends through
//! a lossy link (a small TCP proxy that loses every third send reply
//! together with its connection, as a network failure would). Each lost
//! reply makes the producer retry the send — same queue, same sequence —
//! and the broker answers the retry with the original result instead of
//! storing the message again. Reading the topic back finds every message
//! exactly once. The book's "Idempotent producer" chapter includes this
//! file.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actormq_sdk::consumer::PullConsumer;
use actormq_sdk::protocol::{Header, Message, RequestCode};
use actormq_sdk::{ProducerBuilder, SendResult};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::wait::body_text;

/// What the scenario sent and read back.
#[derive(Debug, Clone)]
pub struct IdempotentReport {
    /// The producer's id.
    pub producer_id: String,
    /// One result per send, in send order.
    pub results: Vec<SendResult>,
    /// Send replies the link lost.
    pub lost_replies: u64,
    /// Every body read back from the topic (all queues).
    pub stored: Vec<String>,
}

/// Runs the scenario with `n` sends.
pub async fn run(n: usize) -> Result<IdempotentReport, Box<dyn std::error::Error>> {
    // The broker advertises the lossy link's address, so clients that ask
    // the name server for routes connect through it.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let link = listener.local_addr()?.to_string();
    let example =
        crate::node::start_with(Vec::new(), &[("ACTORMQ_BROKER__ADVERTISE", link.as_str())])
            .await?;
    let broker = example.node.broker_addr.ok_or("no broker")?;
    let lost = Arc::new(AtomicU64::new(0));
    tokio::spawn(lossy_link(listener, broker.to_string(), 3, lost.clone()));
    let namesrv = example.namesrv()?;

    // ANCHOR: idempotent
    let producer = ProducerBuilder::new("payments-producer")
        .namesrv([namesrv.clone()])
        // A producer id and a per-queue sequence on every send; retries
        // keep both, so the broker stores each send once.
        .idempotent()
        .build()
        .await?;
    let mut results = Vec::new();
    for i in 0..n {
        let payment = Message::new("payments", format!("payment-{i}"));
        // A lost reply is retried (up to 2 times) and answered with the
        // original queue offset and message id.
        results.push(producer.send(payment).await?);
    }
    // ANCHOR_END: idempotent
    let producer_id = producer.producer_id().unwrap_or_default().to_owned();
    producer.shutdown().await;

    let log = slog::Logger::root(slog::Discard, slog::o!());
    let consumer = PullConsumer::new("payments-audit", &namesrv, log)?;
    let mut stored = Vec::new();
    for mq in consumer.fetch_queues("payments").await? {
        let max = consumer.max_offset(&mq).await?;
        let mut offset = consumer.min_offset(&mq).await?;
        while offset < max {
            let r = consumer.pull(&mq, offset, 32).await?;
            if r.messages.is_empty() {
                break;
            }
            stored.extend(r.messages.iter().map(body_text));
            offset = r.next_begin_offset;
        }
    }
    example.node.shutdown().await;
    Ok(IdempotentReport {
        producer_id,
        results,
        lost_replies: lost.load(Ordering::SeqCst),
        stored,
    })
}

/// Forwards connections from `listener` to `broker`, losing the reply of
/// every `every`-th send request along with its connection.
async fn lossy_link(listener: TcpListener, broker: String, every: u64, lost: Arc<AtomicU64>) {
    let sends = Arc::new(AtomicU64::new(0));
    while let Ok((client, _)) = listener.accept().await {
        let Ok(server) = TcpStream::connect(&broker).await else {
            continue;
        };
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        // Request ids of the sends in flight on this connection.
        let in_flight = Arc::new(Mutex::new(HashSet::new()));
        let noted = in_flight.clone();
        tokio::spawn(async move {
            while let Ok(frame) = read_frame(&mut cr).await {
                if let Some(h) = header(&frame)
                    && !h.is_response()
                    && (h.code == RequestCode::SendMessage.as_u32()
                        || h.code == RequestCode::SendBatchMessage.as_u32())
                {
                    lock(&noted).insert(h.request_id);
                }
                if sw.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
        let (sends, lost) = (sends.clone(), lost.clone());
        tokio::spawn(async move {
            while let Ok(frame) = read_frame(&mut sr).await {
                let send_reply = header(&frame)
                    .is_some_and(|h| h.is_response() && lock(&in_flight).remove(&h.request_id));
                if send_reply && sends.fetch_add(1, Ordering::SeqCst) % every == every - 1 {
                    lost.fetch_add(1, Ordering::SeqCst);
                    // The reply is lost with its connection.
                    return;
                }
                if cw.write_all(&frame).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One whole frame: `u32 length | length bytes`.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Vec<u8>> {
    let len = r.read_u32().await? as usize;
    let mut frame = vec![0; 4 + len];
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    r.read_exact(&mut frame[4..]).await?;
    Ok(frame)
}

/// The frame's header: `u32 length | u32 header length | header | …`.
fn header(frame: &[u8]) -> Option<Header> {
    let header_len = u32::from_be_bytes(frame.get(4..8)?.try_into().ok()?) as usize;
    Header::decode_prefix(frame.get(8..8 + header_len)?)
        .ok()
        .map(|(h, _)| h)
}

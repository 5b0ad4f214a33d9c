//! Consumers: a pull consumer reading explicit queues and offsets, and a
//! push consumer of a group with a tag filter, against an in-process node.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PullConsumer, PushConsumerBuilder};
use actormq_sdk::prelude::*;
use actormq_sdk::protocol::Bytes;
use actormq_sdk::protocol::request::SendMessageRequest;

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerReport {
    /// Bodies read by the pull consumer, by queue id.
    pub pulled: BTreeMap<u32, Vec<String>>,
    /// Bodies delivered to the push consumer (tag filter `paid || shipped`).
    pub pushed: Vec<String>,
}

/// Sends `n` messages per tag to `topic`, spread over 4 queues (test data;
/// the SDK producer does the queue choice in real code).
async fn send(
    broker: std::net::SocketAddr,
    topic: &str,
    tags: &[&str],
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let client = RemoteClient::connect(broker, &log);
    for i in 0..n {
        for tag in tags {
            let req = SendMessageRequest {
                topic: topic.into(),
                queue_id: (i % 4) as u32,
                tags: Some((*tag).into()),
                ..SendMessageRequest::default()
            };
            client
                .send(Call::with_body(req, Bytes::from(format!("{tag}-{i}"))))
                .await??;
        }
    }
    Ok(())
}

/// Runs the scenario.
pub async fn run() -> Result<ConsumerReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let broker = example.node.broker_addr.ok_or("no broker")?;
    let namesrv = example
        .node
        .namesrv_addr
        .ok_or("no name server")?
        .to_string();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    send(broker, "orders", &["created", "paid", "shipped"], 8).await?;

    let mut report = ConsumerReport::default();
    // ANCHOR: pull
    let consumer = PullConsumer::new("audit", &namesrv, log.clone())?;
    for mq in consumer.fetch_queues("orders").await? {
        let mut offset = consumer.committed(&mq).await?.unwrap_or(0);
        loop {
            let r = consumer.pull(&mq, offset, 16).await?;
            if r.messages.is_empty() && r.next_begin_offset == offset {
                break;
            }
            for m in &r.messages {
                let body = String::from_utf8_lossy(&m.message.body).into_owned();
                report.pulled.entry(mq.queue_id).or_default().push(body);
            }
            offset = r.next_begin_offset;
        }
        consumer.commit(&mq, offset).await?;
    }
    // ANCHOR_END: pull

    // ANCHOR: push
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let consumer = PushConsumerBuilder::new("billing")
        .namesrv(&namesrv)
        .subscribe("orders", "paid || shipped")
        .consume_from(ConsumeFrom::First)
        .workers(2)
        .logger(log.clone())
        .listener(move |msgs| {
            let mut sink = sink.lock().expect("sink");
            for m in msgs {
                sink.push(String::from_utf8_lossy(&m.message.body).into_owned());
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // ANCHOR_END: push
    for _ in 0..100 {
        if seen.lock().expect("seen").len() >= 16 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await;
    report.pushed = seen.lock().expect("seen").clone();
    report.pushed.sort();
    example.node.shutdown().await;
    Ok(report)
}

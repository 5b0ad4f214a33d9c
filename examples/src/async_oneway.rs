//! Async and oneway sends: `send_async` futures spawned and awaited
//! together, then oneway sends (no result at all); a push consumer then
//! reads the topic back to show that every message, oneway ones included,
//! was stored. The book's "Producers" chapter includes this file.

use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use actormq_sdk::{ProducerBuilder, SendResult};
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n, rest};

/// What the scenario sent and read back.
#[derive(Debug, Clone, Default)]
pub struct AsyncOnewayReport {
    /// Results of the async sends, in the order they were started.
    pub async_results: Vec<SendResult>,
    /// Oneway sends accepted by the producer (they have no result).
    pub oneway_sent: usize,
    /// Bodies read back from the topic, sorted.
    pub received: Vec<String>,
}

/// Runs the scenario: `n_async` async sends, then `n_oneway` oneway sends.
pub async fn run(
    n_async: usize,
    n_oneway: usize,
) -> Result<AsyncOnewayReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("events-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut report = AsyncOnewayReport::default();

    // ANCHOR: async
    // `send_async` returns a `'static` future: spawn it, keep going, and
    // collect the results later.
    let pending: Vec<_> = (0..n_async)
        .map(|i| actix_rt::spawn(producer.send_async(Message::new("events", format!("async-{i}")))))
        .collect();
    for handle in pending {
        report.async_results.push(handle.await??);
    }
    // ANCHOR_END: async

    // ANCHOR: oneway
    // A oneway send returns once the request is queued on the connection:
    // no result, no retry. `shutdown` lets queued requests reach the socket.
    for i in 0..n_oneway {
        producer
            .send_oneway(Message::new("events", format!("oneway-{i}")))
            .await?;
        report.oneway_sent += 1;
    }
    producer.shutdown().await;
    // ANCHOR_END: oneway

    // Read the topic back: the oneway messages can only be seen this way.
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("events-check")
        .namesrv(&namesrv)
        .subscribe("events", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send(body_text(m));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    report.received = recv_n(&mut rx, n_async + n_oneway, Duration::from_secs(20)).await;
    consumer.shutdown().await;
    // Anything delivered meanwhile counts too (a duplicate would show).
    report.received.extend(rest(&mut rx));
    report.received.sort();
    example.node.shutdown().await;
    Ok(report)
}

//! The producer: sync, async, oneway, batch and ordered (by key) sends of
//! one producer group, against an in-process node. The book's "Producers"
//! chapter includes this file.

use std::time::Duration;

use actormq_sdk::protocol::Message;
use actormq_sdk::{ProducerBuilder, SendResult};

/// What the scenario got back.
#[derive(Debug, Clone, Default)]
pub struct ProducerReport {
    /// Results of the sync sends.
    pub sync: Vec<SendResult>,
    /// Results of the async sends.
    pub async_: Vec<SendResult>,
    /// Oneway sends made (no result).
    pub oneway: usize,
    /// Result of the batch (ids joined by `,`).
    pub batch: Option<SendResult>,
    /// Queue ids of the sends keyed `order-42` (all the same).
    pub ordered_queues: Vec<u32>,
}

/// Runs the scenario.
pub async fn run() -> Result<ProducerReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.node.namesrv_addr.ok_or("no name server")?;

    // ANCHOR: build
    let producer = ProducerBuilder::new("example-producer")
        .namesrv([namesrv.to_string()])
        .send_timeout(Duration::from_secs(3))
        .retries(2)
        .build()
        .await?;
    // ANCHOR_END: build
    let mut report = ProducerReport::default();

    // ANCHOR: sync
    for i in 0..3 {
        let mut msg = Message::new("orders", format!("order-{i}"));
        msg.tags = Some("created".into());
        msg.keys = Some(format!("order-{i}"));
        let result = producer.send(msg).await?;
        report.sync.push(result);
    }
    // ANCHOR_END: sync

    // ANCHOR: async
    // `send_async` returns a `'static` future: spawn it, keep going, and
    // collect the results later.
    let pending: Vec<_> = (0..3)
        .map(|i| actix_rt::spawn(producer.send_async(Message::new("orders", format!("async-{i}")))))
        .collect();
    for handle in pending {
        report.async_.push(handle.await??);
    }
    // ANCHOR_END: async

    // ANCHOR: oneway
    for i in 0..2 {
        producer
            .send_oneway(Message::new("metrics", format!("tick-{i}")))
            .await?;
        report.oneway += 1;
    }
    // ANCHOR_END: oneway

    // ANCHOR: batch
    let batch: Vec<Message> = (0..10)
        .map(|i| Message::new("orders", format!("batched-{i}")))
        .collect();
    report.batch = Some(producer.send_batch(batch).await?);
    // ANCHOR_END: batch

    // ANCHOR: ordered
    for step in ["created", "paid", "shipped"] {
        let result = producer
            .send_with_selector(Message::new("orders", step), "order-42")
            .await?;
        report.ordered_queues.push(result.queue_id);
    }
    // ANCHOR_END: ordered

    // ANCHOR: shutdown
    producer.shutdown().await;
    // ANCHOR_END: shutdown
    Ok(report)
}

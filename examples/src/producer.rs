//! The producer: building one, sync and ordered (by key) sends, shutdown,
//! against an in-process node. The book's "Producers" chapter includes this
//! file, with `async_oneway.rs` (async and oneway sends) and `batch.rs`.

use std::time::Duration;

use actormq_sdk::protocol::Message;
use actormq_sdk::{ProducerBuilder, SendResult};

/// What the scenario got back.
#[derive(Debug, Clone, Default)]
pub struct ProducerReport {
    /// Results of the sync sends.
    pub sync: Vec<SendResult>,
    /// Queue ids of the sends keyed `order-42` (all the same).
    pub ordered_queues: Vec<u32>,
}

/// Runs the scenario.
pub async fn run() -> Result<ProducerReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;

    // ANCHOR: build
    let producer = ProducerBuilder::new("example-producer")
        .namesrv([namesrv])
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
    example.node.shutdown().await;
    Ok(report)
}

//! Batch send: several messages of one topic stored in one request, in
//! one queue, at consecutive offsets; then a pull consumer reads that
//! queue from the batch's first offset and finds them, with the ids the
//! send returned. The book's "Producers" chapter includes this file.

use actormq_sdk::consumer::PullConsumer;
use actormq_sdk::protocol::{Message, MessageQueue};
use actormq_sdk::{ProducerBuilder, SendResult};

use crate::wait::body_text;

/// What the scenario sent and read back.
#[derive(Debug, Clone)]
pub struct BatchReport {
    /// The batch's result (`msg_id`: the ids joined by `,`).
    pub result: SendResult,
    /// The ids of the batch, split.
    pub ids: Vec<String>,
    /// Ids of the messages read back from the batch's queue and offset.
    pub pulled_ids: Vec<String>,
    /// Their bodies.
    pub pulled_bodies: Vec<String>,
    /// Their queue offsets.
    pub pulled_offsets: Vec<u64>,
}

/// Runs the scenario with a batch of `n` messages.
pub async fn run(n: usize) -> Result<BatchReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("batch-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;

    // ANCHOR: batch
    // One topic, no delays; the whole batch (encoded) must fit the message
    // size limit. It is stored in one queue at consecutive offsets.
    let batch: Vec<Message> = (0..n)
        .map(|i| Message::new("orders", format!("batched-{i}")))
        .collect();
    let result = producer.send_batch(batch).await?;
    let ids: Vec<String> = result.msg_id.split(',').map(str::to_owned).collect();
    // ANCHOR_END: batch
    producer.shutdown().await;

    // Read the batch back where the result says it went.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let consumer = PullConsumer::new("batch-check", &namesrv, log)?;
    let mq = MessageQueue {
        topic: result.topic.clone(),
        broker_name: result.broker.clone(),
        queue_id: result.queue_id,
    };
    let pulled = consumer.pull(&mq, result.queue_offset, 64).await?;
    let report = BatchReport {
        ids,
        pulled_ids: pulled
            .messages
            .iter()
            .map(|m| m.msg_id().to_string())
            .collect(),
        pulled_bodies: pulled.messages.iter().map(body_text).collect(),
        pulled_offsets: pulled.messages.iter().map(|m| m.queue_offset).collect(),
        result,
    };
    example.node.shutdown().await;
    Ok(report)
}

//! Message lookups: an order's events are sent with the order id as their
//! key; then one is looked up by the id its send returned, all of the
//! order's by key, and one by queue and offset — without consuming
//! anything. The book's "Looking messages up" chapter includes this file.

use actormq_sdk::protocol::Message;
use actormq_sdk::{MessageQuery, ProducerBuilder};

use crate::wait::body_text;

/// What the scenario found.
#[derive(Debug, Clone, Default)]
pub struct QueriesReport {
    /// The body found by the first send's id.
    pub by_id: Option<String>,
    /// The bodies found by the key `order-42`, in store order.
    pub by_key: Vec<String>,
    /// The body found at the last send's queue and offset.
    pub by_offset: Option<String>,
}

/// Runs the scenario.
pub async fn run() -> Result<QueriesReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("queries-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut sent = Vec::new();
    for (key, event) in [
        ("order-42", "created"),
        ("order-7", "created"),
        ("order-42", "paid"),
    ] {
        let mut msg = Message::new("orders", event);
        msg.keys = Some(key.into());
        sent.push(producer.send(msg).await?);
    }
    producer.shutdown().await;

    // ANCHOR: query
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let query = MessageQuery::new(&[namesrv], &log)?;
    // By id: the broker that stored it is named in the id.
    let by_id = query.by_id(&sent[0].msg_id).await?;
    // By key: every broker of the topic, through its key index.
    let by_key = query.by_key("orders", "order-42", 0, u64::MAX, 32).await?;
    // By queue and offset: one message read, nothing committed.
    let last = &sent[2];
    let mq = actormq_sdk::protocol::MessageQueue {
        topic: last.topic.clone(),
        broker_name: last.broker.clone(),
        queue_id: last.queue_id,
    };
    let by_offset = query.by_offset(&mq, last.queue_offset).await?;
    // ANCHOR_END: query

    example.node.shutdown().await;
    Ok(QueriesReport {
        by_id: by_id.as_ref().map(body_text),
        by_key: by_key.iter().map(body_text).collect(),
        by_offset: by_offset.as_ref().map(body_text),
    })
}

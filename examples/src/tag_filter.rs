//! Tag filter: a push consumer subscribed with `paid || shipped` gets only
//! the messages tagged `paid` or `shipped`; the `created` ones are skipped
//! (the broker filters by tag hash, the client rechecks the tag) and the
//! group's offsets still move past them. The book's "Consumers and
//! rebalance" chapter includes this file.

use std::time::Duration;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{caught_up, recv_n, rest};

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagFilterReport {
    /// Messages sent per tag.
    pub sent_per_tag: usize,
    /// `(tag, body)` of every delivery, sorted, including any that arrived
    /// after the group had consumed every queue to its end.
    pub delivered: Vec<(String, String)>,
    /// Whether the group's committed offsets reached the end of every
    /// queue (filtered messages count as consumed).
    pub caught_up: bool,
}

/// Runs the scenario: `n` messages for each of `created`, `paid` and
/// `shipped`.
pub async fn run(n: usize) -> Result<TagFilterReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("orders-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for i in 0..n {
        for tag in ["created", "paid", "shipped"] {
            let mut msg = Message::new("orders", format!("{tag}-{i}"));
            msg.tags = Some(tag.into());
            producer.send(msg).await?;
        }
    }
    producer.shutdown().await;

    // ANCHOR: push
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("billing")
        .namesrv(&namesrv)
        .subscribe("orders", "paid || shipped")
        .consume_from(ConsumeFrom::First)
        .workers(2)
        .listener(move |msgs| {
            for m in msgs {
                let tag = m.message.tags.clone().unwrap_or_default();
                let body = String::from_utf8_lossy(&m.message.body).into_owned();
                let _ = tx.send((tag, body));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // ANCHOR_END: push
    let mut delivered = recv_n(&mut rx, 2 * n, Duration::from_secs(20)).await;

    // Wait (bounded) until the group has consumed every queue to its end
    // (the skipped `created` messages have no delivery to wait for).
    let caught_up = caught_up(&consumer, &namesrv, "billing", "orders").await?;
    consumer.shutdown().await;
    // Anything delivered meanwhile counts too (a duplicate would show).
    delivered.extend(rest(&mut rx));
    delivered.sort();
    example.node.shutdown().await;
    Ok(TagFilterReport {
        sent_per_tag: n,
        delivered,
        caught_up,
    })
}

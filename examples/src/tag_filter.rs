//! Tag filter: a push consumer subscribed with `paid || shipped` gets only
//! the messages tagged `paid` or `shipped`; the `created` ones are skipped
//! (the broker filters by tag hash, the client rechecks the tag) and the
//! group's offsets still move past them. The book's "Consumers and
//! rebalance" chapter includes this file.

use std::time::Duration;

use actix_rt::time::{Instant, interval};
use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PullConsumer, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::recv_n;

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

    // Wait (bounded) until the group has consumed every queue to its end:
    // the skipped `created` messages have no delivery to wait for, so ask
    // for a commit and compare the committed offsets with the queue ends.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let probe = PullConsumer::new("billing", &namesrv, log)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tick = interval(Duration::from_millis(100));
    let mut caught_up = false;
    while !caught_up && Instant::now() < deadline {
        tick.tick().await;
        consumer.commit_now().await;
        caught_up = true;
        for mq in probe.fetch_queues("orders").await? {
            let end = probe.max_offset(&mq).await?;
            caught_up &= probe.committed(&mq).await? == Some(end);
        }
    }
    consumer.shutdown().await;
    // Anything delivered meanwhile counts too.
    while let Ok(item) = rx.try_recv() {
        delivered.push(item);
    }
    delivered.sort();
    example.node.shutdown().await;
    Ok(TagFilterReport {
        sent_per_tag: n,
        delivered,
        caught_up,
    })
}

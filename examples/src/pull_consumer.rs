//! Pull consumer: explicit queues and offsets. Fetch the queues of a
//! topic, pull each from the group's committed offset (or the queue's
//! first offset) to its end, commit, and read the committed offset back;
//! a second consumer of the group then resumes where the first stopped.
//! The book's "Consumers and rebalance" chapter includes this file.

use std::collections::BTreeMap;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{PullConsumer, PullStatus};
use actormq_sdk::protocol::Message;

use crate::wait::body_text;

/// What the pull consumer did with one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueReport {
    /// Where it started pulling.
    pub start: u64,
    /// Bodies pulled, in queue order.
    pub bodies: Vec<String>,
    /// The queue's max offset (one past the last message) after pulling.
    pub max_offset: u64,
    /// The group's committed offset, read back after the commit.
    pub committed: Option<u64>,
    /// Messages a second consumer of the group found from that offset.
    pub after_resume: usize,
}

/// Runs the scenario with `n` messages.
pub async fn run(n: usize) -> Result<BTreeMap<u32, QueueReport>, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("ledger-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for i in 0..n {
        // Round-robin over the topic's queues.
        producer
            .send(Message::new("ledger", format!("entry-{i}")))
            .await?;
    }
    producer.shutdown().await;
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let mut report: BTreeMap<u32, QueueReport> = BTreeMap::new();

    // ANCHOR: pull
    let consumer = PullConsumer::new("ledger-audit", &namesrv, log.clone())?;
    for mq in consumer.fetch_queues("ledger").await? {
        // A new group has no committed offset: start at the first kept one.
        let start = match consumer.committed(&mq).await? {
            Some(offset) => offset,
            None => consumer.min_offset(&mq).await?,
        };
        let queue = report.entry(mq.queue_id).or_default();
        queue.start = start;
        let mut offset = start;
        loop {
            let r = consumer.pull(&mq, offset, 16).await?;
            queue.bodies.extend(r.messages.iter().map(body_text));
            if r.status == PullStatus::NoNewMsg || r.next_begin_offset == offset {
                break; // caught up
            }
            offset = r.next_begin_offset;
        }
        // `offset` is the next message to consume: commit it for the group
        // and read it back.
        consumer.commit(&mq, offset).await?;
        queue.committed = consumer.committed(&mq).await?;
        queue.max_offset = consumer.max_offset(&mq).await?;
    }
    // ANCHOR_END: pull

    // ANCHOR: resume
    // Another consumer of the group (a restart, say) resumes at the
    // committed offsets and finds nothing new.
    let again = PullConsumer::new("ledger-audit", &namesrv, log)?;
    for mq in again.fetch_queues("ledger").await? {
        let offset = again.committed(&mq).await?.unwrap_or(0);
        let r = again.pull(&mq, offset, 16).await?;
        report.entry(mq.queue_id).or_default().after_resume = r.messages.len();
    }
    // ANCHOR_END: resume

    example.node.shutdown().await;
    Ok(report)
}

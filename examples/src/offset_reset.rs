//! Offset reset by time: a running push consumer group is moved back to
//! the first message stored at or after a time, and gets the messages from
//! there again without a restart. The time is taken from the store
//! timestamps of what the consumer received, not from a clock guess. The
//! book's "Offset reset" chapter includes this file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PullConsumer, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n, rest};

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetResetReport {
    /// Bodies delivered before the reset, sorted.
    pub first_pass: Vec<String>,
    /// The time reset to (the first ms after the morning batch was stored).
    pub reset_to_ms: u64,
    /// Each queue's offset after the reset.
    pub new_offsets: Vec<u64>,
    /// Bodies delivered after the reset, sorted (everything the consumer
    /// got until its shutdown).
    pub replayed: Vec<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the scenario: `n` "morning" messages, then `n` "evening" ones;
/// the group consumes both, is reset to the evening, and gets the evening
/// ones again.
pub async fn run(n: usize) -> Result<OffsetResetReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("ledger-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for i in 0..n {
        producer
            .send(Message::new("ledger", format!("morning-{i}")))
            .await?;
    }

    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("audit")
        .namesrv(&namesrv)
        .subscribe("ledger", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send((body_text(m), m.store_timestamp_ms));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    let morning = recv_n(&mut rx, n, Duration::from_secs(20)).await;
    // The reset time: just after the last morning message was stored.
    let reset_to_ms = morning.iter().map(|(_, ts)| *ts).max().unwrap_or(0) + 1;
    while now_ms() <= reset_to_ms {
        tokio::task::yield_now().await;
    }
    for i in 0..n {
        producer
            .send(Message::new("ledger", format!("evening-{i}")))
            .await?;
    }
    producer.shutdown().await;
    let evening = recv_n(&mut rx, n, Duration::from_secs(20)).await;
    let mut first_pass: Vec<String> = morning.into_iter().chain(evening).map(|(b, _)| b).collect();
    first_pass.sort();

    // ANCHOR: reset
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let admin = PullConsumer::new("audit", &namesrv, log)?;
    let new_offsets = admin.reset_offsets_to_time("ledger", reset_to_ms).await?;
    // ANCHOR_END: reset
    let mut replayed: Vec<String> = recv_n(&mut rx, n, Duration::from_secs(20))
        .await
        .into_iter()
        .map(|(b, _)| b)
        .collect();
    consumer.shutdown().await;
    replayed.extend(rest(&mut rx).into_iter().map(|(b, _)| b));
    replayed.sort();
    example.node.shutdown().await;
    Ok(OffsetResetReport {
        first_pass,
        reset_to_ms,
        new_offsets: new_offsets.into_iter().map(|(_, o)| o).collect(),
        replayed,
    })
}

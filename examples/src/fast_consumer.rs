//! Fast consumer: a push consumer with a `view_listener` reads each
//! message where it lies in the pull reply (the broker sends its stored
//! records as they are on disk): no string, no property map per message.
//! Here it totals meter readings and keeps the highest per meter. The
//! book's "Consumers and rebalance" chapter includes this file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder, StoredView};
use actormq_sdk::protocol::Message;

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FastConsumerReport {
    /// Readings sent.
    pub sent: usize,
    /// Readings delivered.
    pub delivered: usize,
    /// Sum of every reading delivered.
    pub total: u64,
    /// Highest reading per meter (the `meter` property).
    pub highest: BTreeMap<String, u64>,
}

/// Runs the scenario: `n` readings spread over 3 meters.
pub async fn run(n: usize) -> Result<FastConsumerReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("meters")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut batch = Vec::new();
    for i in 0..n {
        let mut msg = Message::new("readings", (i as u64 * 7 % 1000).to_string());
        msg.properties.insert("meter".into(), format!("m{}", i % 3));
        batch.push(msg);
    }
    for chunk in batch.chunks(100) {
        producer.send_batch(chunk).await?;
    }
    producer.shutdown().await;

    // ANCHOR: view
    #[derive(Default)]
    struct Totals {
        delivered: usize,
        total: u64,
        highest: BTreeMap<String, u64>,
    }
    let totals = Arc::new(Mutex::new(Totals::default()));
    let seen = totals.clone();
    let consumer = PushConsumerBuilder::new("billing")
        .namesrv(&namesrv)
        .subscribe("readings", "*")
        .consume_from(ConsumeFrom::First)
        .view_listener(move |msgs: &[StoredView]| {
            let mut t = seen.lock().unwrap_or_else(|p| p.into_inner());
            for m in msgs {
                // Borrowed from the reply: the body and the property are
                // slices of it.
                let Some(reading) = std::str::from_utf8(m.body())
                    .ok()
                    .and_then(|b| b.parse::<u64>().ok())
                else {
                    continue;
                };
                let meter = m.property("meter").unwrap_or("?");
                t.delivered += 1;
                t.total += reading;
                match t.highest.get_mut(meter) {
                    Some(h) => *h = (*h).max(reading),
                    None => {
                        t.highest.insert(meter.to_owned(), reading);
                    }
                }
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // ANCHOR_END: view
    let deadline = Instant::now() + Duration::from_secs(20);
    while totals.lock().map(|t| t.delivered).unwrap_or_default() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    consumer.shutdown().await;
    example.node.shutdown().await;
    let t = totals.lock().unwrap_or_else(|p| p.into_inner());
    Ok(FastConsumerReport {
        sent: n,
        delivered: t.delivered,
        total: t.total,
        highest: t.highest.clone(),
    })
}

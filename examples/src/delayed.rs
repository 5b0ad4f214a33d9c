//! Delayed messages: an order is placed and, at the same moment, a
//! "cancel if unpaid" check is sent with a delay level. The check reaches
//! the consumer only after its delay, and the consumer decides then: the
//! paid order is kept, the unpaid one cancelled. The node's delay table is
//! shortened (`message_delay_level = "1s 2s"`) so level 2 takes two
//! seconds. The book's "Delayed messages" chapter includes this file.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::{Delay, Message};
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n};

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DelayedReport {
    /// The checks in arrival order: (order, decision).
    pub decisions: Vec<(String, &'static str)>,
    /// How long after sending the first check arrived.
    pub waited: Duration,
}

/// Runs the scenario: orders 1 and 2 are placed, only order 1 is paid.
pub async fn run() -> Result<DelayedReport, Box<dyn std::error::Error>> {
    let example = crate::node::start_with(
        Vec::new(),
        &[("ACTORMQ_BROKER__MESSAGE_DELAY_LEVEL", "1s 2s")],
    )
    .await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("shop")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let paid: Arc<Mutex<BTreeSet<String>>> = Arc::default();

    // ANCHOR: send
    let sent = Instant::now();
    for order in ["order-1", "order-2"] {
        let mut check = Message::new("order-checks", order);
        // Level 2: two seconds with this node's table (5 s by default).
        check.delay = Delay::Level(2);
        producer.send(check).await?;
    }
    // ANCHOR_END: send
    paid.lock().expect("ledger").insert("order-1".to_owned());

    let (tx, mut rx) = unbounded_channel();
    let ledger = paid.clone();
    let consumer = PushConsumerBuilder::new("order-timeouts")
        .namesrv(&namesrv)
        .subscribe("order-checks", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let order = body_text(m);
                let decision = if ledger.lock().expect("ledger").contains(&order) {
                    "keep"
                } else {
                    "cancel"
                };
                let _ = tx.send((order, decision));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;

    let decisions = recv_n(&mut rx, 2, Duration::from_secs(20)).await;
    let waited = sent.elapsed();
    consumer.shutdown().await;
    producer.shutdown().await;
    example.node.shutdown().await;
    Ok(DelayedReport { decisions, waited })
}

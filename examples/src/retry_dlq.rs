//! Retries and dead letters: a shipping group's listener fails on a
//! payment twice before it succeeds, and on a broken order every time.
//! The broker redelivers the payment through the group's retry topic with
//! its reconsume times counting up, and after the group's max retries
//! moves the broken order to the dead-letter topic `%DLQ%shipping`, where
//! it is found by its key. The node's delay table is shortened
//! (`message_delay_level = "1s 1s 1s 1s"`) and its groups get 2 retries
//! (`max_reconsume_times = 2`), so the scenario takes seconds. The book's
//! "Retries and dead letters" chapter includes this file.

use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use actormq_sdk::protocol::system_topic::{PROPERTY_RETRY_TOPIC, dlq_topic};
use actormq_sdk::{MessageQuery, ProducerBuilder};
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n};

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryReport {
    /// Every delivery of the payment: (reconsume times, topic shown).
    pub payment: Vec<(u32, String)>,
    /// Every delivery of the broken order's reconsume times.
    pub broken: Vec<u32>,
    /// The dead letter found by key: (its topic, its `RETRY_TOPIC`, body).
    pub dead_letter: Option<(String, String, String)>,
}

/// Runs the scenario.
pub async fn run() -> Result<RetryReport, Box<dyn std::error::Error>> {
    let example = crate::node::start_with(
        Vec::new(),
        &[
            ("ACTORMQ_BROKER__MESSAGE_DELAY_LEVEL", "1s 1s 1s 1s"),
            ("ACTORMQ_BROKER__MAX_RECONSUME_TIMES", "2"),
        ],
    )
    .await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("shop")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut pay = Message::new("orders", "pay order-1");
    pay.keys = Some("order-1".into());
    producer.send(pay).await?;
    let mut broken = Message::new("orders", "ship order-2");
    broken.keys = Some("order-2".into());
    producer.send(broken).await?;

    // ANCHOR: listener
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("shipping")
        .namesrv(&namesrv)
        .subscribe("orders", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send((body_text(m), m.reconsume_times, m.message.topic.clone()));
                let fails = match body_text(m).as_str() {
                    // The payment service is down for the first two tries.
                    "pay order-1" => m.reconsume_times < 2,
                    // This one can never be shipped.
                    _ => true,
                };
                if fails {
                    // Back to the broker: redelivered after a delay, or a
                    // dead letter after the group's max retries.
                    return ConsumeResult::Later;
                }
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // ANCHOR_END: listener
    // 3 payment deliveries (0, 1, 2) and 3 of the broken order (0, 1, 2).
    let got = recv_n(&mut rx, 6, Duration::from_secs(30)).await;
    let mut report = RetryReport::default();
    for (body, times, topic) in got {
        if body == "pay order-1" {
            report.payment.push((times, topic));
        } else {
            report.broken.push(times);
        }
    }

    // ANCHOR: dead_letter
    let query = MessageQuery::new(
        std::slice::from_ref(&namesrv),
        &slog::Logger::root(slog::Discard, slog::o!()),
    )?;
    let deadline = actix_rt::time::Instant::now() + Duration::from_secs(10);
    while report.dead_letter.is_none() && actix_rt::time::Instant::now() < deadline {
        // Until the broker has stored it (and registered the new topic),
        // the lookup finds nothing or no route yet.
        let found = query
            .by_key(&dlq_topic("shipping"), "order-2", 0, u64::MAX, 32)
            .await
            .unwrap_or_default();
        report.dead_letter = found.first().map(|m| {
            (
                m.message.topic.clone(),
                m.message
                    .properties
                    .get(PROPERTY_RETRY_TOPIC)
                    .cloned()
                    .unwrap_or_default(),
                body_text(m),
            )
        });
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // ANCHOR_END: dead_letter
    consumer.shutdown().await;
    producer.shutdown().await;
    example.node.shutdown().await;
    Ok(report)
}

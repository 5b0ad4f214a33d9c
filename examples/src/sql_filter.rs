//! SQL92 filter: orders carry an `amount` and (most of them) a `region`
//! property; a push consumer subscribed with
//! `amount > 100 AND region IN ('eu', 'us')` gets only the large orders
//! of those regions. The broker evaluates the expression on each message;
//! an order without a `region`, or with an `amount` that is not a number,
//! simply does not match. The group's offsets still move past the
//! skipped ones. The book's "SQL92 filters" chapter includes this file.

use std::time::Duration;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{caught_up, recv_n, rest};

/// The subscription of the scenario.
pub const EXPRESSION: &str = "amount > 100 AND region IN ('eu', 'us')";

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlFilterReport {
    /// `(body, amount, region)` of every order sent.
    pub sent: Vec<(String, String, Option<String>)>,
    /// Bodies of every delivery, sorted, including any that arrived after
    /// the group had consumed every queue to its end.
    pub delivered: Vec<String>,
    /// Whether the group's committed offsets reached the end of every
    /// queue (filtered messages count as consumed).
    pub caught_up: bool,
}

/// The order `i`: amounts 50, 150, 250, ... (every fifth one "n/a"),
/// regions eu, us, apac in turn (every fourth one without a region).
pub fn order(i: usize) -> (String, String, Option<String>) {
    let amount = if i % 5 == 4 {
        "n/a".to_string()
    } else {
        (50 + 100 * (i % 3)).to_string()
    };
    let region = (i % 4 != 3).then(|| ["eu", "us", "apac"][i % 3].to_string());
    (format!("order-{i}"), amount, region)
}

/// Whether order `i` should be delivered (the expression, in plain Rust).
pub fn matches(i: usize) -> bool {
    let (_, amount, region) = order(i);
    amount.parse::<i64>().is_ok_and(|a| a > 100) && region.is_some_and(|r| r == "eu" || r == "us")
}

/// Runs the scenario with `n` orders.
pub async fn run(n: usize) -> Result<SqlFilterReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("orders-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut sent = Vec::new();
    // ANCHOR: produce
    for i in 0..n {
        let (body, amount, region) = order(i);
        let mut msg = Message::new("orders", body.clone());
        msg.properties.insert("amount".into(), amount.clone());
        if let Some(r) = &region {
            msg.properties.insert("region".into(), r.clone());
        }
        producer.send(msg).await?;
        sent.push((body, amount, region));
    }
    // ANCHOR_END: produce
    producer.shutdown().await;

    // ANCHOR: push
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("large-orders")
        .namesrv(&namesrv)
        .subscribe_sql("orders", EXPRESSION)
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send(String::from_utf8_lossy(&m.message.body).into_owned());
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    // ANCHOR_END: push
    let want = (0..n).filter(|i| matches(*i)).count();
    let mut delivered = recv_n(&mut rx, want, Duration::from_secs(20)).await;

    // Wait (bounded) until the group has consumed every queue to its end
    // (the skipped orders have no delivery to wait for).
    let caught_up = caught_up(&consumer, &namesrv, "large-orders", "orders").await?;
    consumer.shutdown().await;
    // Anything delivered meanwhile counts too (a duplicate would show).
    delivered.extend(rest(&mut rx));
    delivered.sort();
    example.node.shutdown().await;
    Ok(SqlFilterReport {
        sent,
        delivered,
        caught_up,
    })
}

//! Quickstart: start a combined node in-process, produce `n` messages with
//! a [`Producer`](actormq_sdk::Producer), consume them all with a push
//! consumer, and shut everything down. The book's "Quickstart" chapter
//! includes this file.

use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, PushConsumerBuilder};
use actormq_sdk::protocol::Message;
use actormq_sdk::{ProducerBuilder, SendResult};
use tokio::sync::mpsc::unbounded_channel;

use crate::wait::{body_text, recv_n, rest};

/// What the scenario sent and received.
#[derive(Debug, Clone, Default)]
pub struct QuickstartReport {
    /// One result per message sent, in send order.
    pub sent: Vec<SendResult>,
    /// Bodies the push consumer received, in delivery order.
    pub received: Vec<String>,
}

/// Runs the scenario with `n` messages.
pub async fn run(n: usize) -> Result<QuickstartReport, Box<dyn std::error::Error>> {
    // ANCHOR: node
    // A combined node (name server + broker) on ephemeral ports, data in a
    // temp dir. Against the node of `actormq-node`, use "127.0.0.1:9876".
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    // ANCHOR_END: node

    // ANCHOR: produce
    let producer = ProducerBuilder::new("quickstart-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    let mut sent = Vec::with_capacity(n);
    for i in 0..n {
        let mut msg = Message::new("quickstart", format!("hello-{i}"));
        msg.tags = Some("greeting".into());
        // The topic is created on first use (`auto_create_topic`).
        sent.push(producer.send(msg).await?);
    }
    producer.shutdown().await;
    // ANCHOR_END: produce

    // ANCHOR: consume
    // The listener runs on worker threads; it hands each body to this task
    // through a channel.
    let (tx, mut rx) = unbounded_channel();
    let consumer = PushConsumerBuilder::new("quickstart-group")
        .namesrv(&namesrv)
        .subscribe("quickstart", "*")
        .consume_from(ConsumeFrom::First)
        .listener(move |msgs| {
            for m in msgs {
                let _ = tx.send(body_text(m));
            }
            ConsumeResult::Success
        })
        .start()
        .await?;
    let mut received = recv_n(&mut rx, n, Duration::from_secs(20)).await;
    // Shutdown commits the group's offsets on the broker.
    consumer.shutdown().await;
    // Anything delivered meanwhile counts too (a duplicate would show).
    received.extend(rest(&mut rx));
    // ANCHOR_END: consume

    example.node.shutdown().await;
    Ok(QuickstartReport { sent, received })
}

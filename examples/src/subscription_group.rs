//! Subscription groups: a consumer group's config on the broker. The
//! first consumer of a group creates it with defaults (the broker's
//! `auto_create_subscription_group`, on by default) and reads it back from
//! its heartbeat reply. An admin makes it an orderly group with 5 retries,
//! and the next consumer gets that config; a setting nothing acts on yet
//! (switching the group off) is refused.
//! The book's "Subscription groups" chapter includes this file.

use std::time::Duration;

use actormq_sdk::consumer::{ConsumeResult, PushConsumer, PushConsumerBuilder};
use actormq_sdk::protocol::request::{
    CreateSubscriptionGroupRequest, GetAllSubscriptionGroupRequest, SubscriptionGroupConfig,
};
use actormq_sdk::protocol::{Bytes, Message};
use actormq_sdk::{Connections, ProducerBuilder};

/// What the scenario saw.
#[derive(Debug, Clone)]
pub struct GroupReport {
    /// The config the first consumer got (auto-created, defaults).
    pub auto_created: SubscriptionGroupConfig,
    /// Why the broker refused to switch the group off (nothing acts on
    /// `consume_enable` yet).
    pub switch_off_refused: String,
    /// The config a consumer got after the update.
    pub after_update: SubscriptionGroupConfig,
    /// Groups the broker lists.
    pub listed: Vec<String>,
}

const GROUP: &str = "order-processors";

async fn start_consumer(namesrv: &str) -> Result<PushConsumer, Box<dyn std::error::Error>> {
    Ok(PushConsumerBuilder::new(GROUP)
        .namesrv(namesrv)
        .subscribe("orders", "*")
        .listener(|_| ConsumeResult::Success)
        .start()
        .await?)
}

/// Runs the scenario.
pub async fn run() -> Result<GroupReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let broker = example.node.broker_addr.ok_or("no broker")?.to_string();
    let producer = ProducerBuilder::new("order-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    producer.send(Message::new("orders", "order-1")).await?;
    producer.shutdown().await;

    // ANCHOR: auto
    // The group does not exist yet: the consumer's first heartbeat creates
    // it with defaults, and the reply hands the config to the consumer.
    let consumer = start_consumer(&namesrv).await?;
    let auto_created = consumer.group_config().ok_or("no group config")?;
    consumer.shutdown().await;
    // ANCHOR_END: auto

    // ANCHOR: update
    // An admin makes it an orderly group with 5 retries before the dead
    // letter queue.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let conns = Connections::new(&log);
    let config = SubscriptionGroupConfig {
        consume_message_orderly: true,
        retry_max_times: 5,
        ..SubscriptionGroupConfig::new(GROUP)
    };
    let timeout = Duration::from_secs(5);
    let create = CreateSubscriptionGroupRequest { config };
    conns.call(&broker, create, Bytes::new(), timeout).await?;
    // Switching a group off is not built yet: refused, nothing changes.
    let off = SubscriptionGroupConfig {
        consume_enable: false,
        ..SubscriptionGroupConfig::new(GROUP)
    };
    let create = CreateSubscriptionGroupRequest { config: off };
    let switch_off_refused = match conns.call(&broker, create, Bytes::new(), timeout).await {
        Ok(_) => return Err("switching a group off was accepted".into()),
        Err(e) => e.to_string(),
    };
    let all = conns
        .call(
            &broker,
            GetAllSubscriptionGroupRequest {},
            Bytes::new(),
            timeout,
        )
        .await?
        .fields;
    // ANCHOR_END: update
    let listed = all.subscription_group_table.keys().cloned().collect();

    let consumer = start_consumer(&namesrv).await?;
    let after_update = consumer.group_config().ok_or("no group config")?;
    consumer.shutdown().await;
    example.node.shutdown().await;
    Ok(GroupReport {
        auto_created,
        switch_off_refused,
        after_update,
        listed,
    })
}

//! High availability in one process: a name server, a `sync-master` and
//! its slave. Every send the producer sees as `SEND_OK` is on the slave
//! (sync replication); the master goes away, the slave is promoted by the
//! role-switch message (what `actormq admin broker promote` sends, and
//! what a consensus module would send) and a new producer writes to it.
//! The book's "High availability" chapter includes this file.

use std::time::{Duration, Instant};

use actormq_cluster::actors::broker::ha::{HaRole, SwitchRole};
use actormq_cluster::config::{HaRole as RoleFlag, NodeConfig, Overrides, Role};
use actormq_cluster::node::{Node, NodeError};
use actormq_sdk::protocol::Message;
use actormq_sdk::{ProducerBuilder, SendStatus};

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HaReport {
    /// Sends answered `SEND_OK` by the sync master.
    pub acknowledged: usize,
    /// The master's commit log end when it stopped.
    pub master_end: u64,
    /// The slave's commit log end when it was promoted.
    pub slave_end: u64,
    /// The slave's role before the switch.
    pub previous_role: Option<HaRole>,
    /// The status of a send to the promoted slave.
    pub after_promotion: Option<SendStatus>,
}

/// A node of `role` with a temp data dir and OS-picked ports.
async fn node(role: Role, flags: Overrides, data: &tempfile::TempDir) -> Result<Node, NodeError> {
    let flags = Overrides {
        role: Some(role),
        data_dir: Some(data.path().to_path_buf()),
        namesrv_listen: Some(([127, 0, 0, 1], 0).into()),
        broker_listen: Some(([127, 0, 0, 1], 0).into()),
        ..flags
    };
    let env = [
        ("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", "8388608"),
        // Topics, groups and offsets reach the slave within half a second
        // (default 10 s, RocketMQ's SlaveSynchronize).
        ("ACTORMQ_BROKER__HA_CONFIG_SYNC_MS", "500"),
    ];
    let config = NodeConfig::load(None, env, flags).expect("example config is valid");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    Node::start(&config, &log).await
}

/// Runs the scenario.
pub async fn run() -> Result<HaReport, Box<dyn std::error::Error>> {
    let dirs = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    let namesrv = node(Role::Namesrv, Overrides::default(), &dirs[0]).await?;
    let ns = namesrv.namesrv_addr.ok_or("no name server")?;

    // ANCHOR: nodes
    // The master: `--ha-role sync-master`; its HA port is the broker
    // port + 1 (here both are picked by the OS).
    let master = node(
        Role::Broker,
        Overrides {
            namesrv: Some(vec![ns]),
            ha_role: Some(RoleFlag::SyncMaster),
            ..Overrides::default()
        },
        &dirs[1],
    )
    .await?;
    // The slave: same broker name, id > 0, `--master` = the master's `ha=`.
    let slave = node(
        Role::Broker,
        Overrides {
            namesrv: Some(vec![ns]),
            ha_role: Some(RoleFlag::Slave),
            broker_id: Some(1),
            master: master.ha_addr,
            ..Overrides::default()
        },
        &dirs[2],
    )
    .await?;
    // ANCHOR_END: nodes
    // Store handles are not kept across a shutdown: a node closes its
    // store only once nothing else holds it.
    let end_of = |n: &Node| n.broker().map_or(0, |b| b.store.commit_log_max_offset());
    let s_ha = slave.broker().ok_or("no slave broker")?.ha_client.clone();
    let wait_slave = Instant::now() + Duration::from_secs(10);
    while master.broker().is_some_and(|b| b.ha.slaves().0 == 0) && Instant::now() < wait_slave {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // ANCHOR: send
    let producer = ProducerBuilder::new("ha-producer")
        .namesrv([ns.to_string()])
        .build()
        .await?;
    let mut acknowledged = 0;
    for i in 0..100 {
        let r = producer
            .send(Message::new("ha-orders", format!("order-{i}")))
            .await?;
        // SEND_OK from a sync master: the slave has it too.
        if r.status == SendStatus::SendOk {
            acknowledged += 1;
        }
    }
    producer.shutdown().await;
    // ANCHOR_END: send
    let master_end = end_of(&master);
    master.shutdown().await;

    // ANCHOR: promote
    let previous_role = match s_ha.addr() {
        Some(a) => a
            .send(SwitchRole {
                to: HaRole::AsyncMaster,
            })
            .await?
            .ok(),
        None => None,
    };
    // ANCHOR_END: promote
    let slave_end = end_of(&slave);

    let producer = ProducerBuilder::new("ha-producer-2")
        .namesrv([ns.to_string()])
        .send_timeout(Duration::from_secs(3))
        .retries(5)
        .build()
        .await?;
    let mut after_promotion = None;
    let deadline = Instant::now() + Duration::from_secs(15);
    while after_promotion.is_none() && Instant::now() < deadline {
        match producer.send(Message::new("ha-orders", "after")).await {
            Ok(r) => after_promotion = Some(r.status),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(200)).await,
        }
    }
    producer.shutdown().await;
    slave.shutdown().await;
    namesrv.shutdown().await;
    Ok(HaReport {
        acknowledged,
        master_end,
        slave_end,
        previous_role,
        after_promotion,
    })
}

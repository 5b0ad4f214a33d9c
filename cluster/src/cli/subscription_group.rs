//! `actormq admin group list | create | delete`: consumer group configs
//! (subscription groups) on every master broker the name servers know.
//!
//! `create` replaces a group's whole config (flags not given take their
//! defaults), as RocketMQ's `updateSubGroup` does; it creates the group
//! where it is missing and updates it where it exists. `delete` of a group
//! no broker has fails. `list` prints one line per group and broker.

use actormq_sdk::admin::{Admin, CreateGroup, GroupConfigView};
use clap::Args;

use super::{CliError, CommonArgs, emit};

/// `admin group create`.
#[derive(Debug, Clone, Args)]
pub struct CreateGroupArgs {
    /// Consumer group.
    #[arg(short, long)]
    pub group: String,
    /// Make the group orderly (its consumers consume each queue in order,
    /// locking it at the broker: `actormq consume --orderly`).
    #[arg(long)]
    pub orderly: bool,
    /// Retries before a message goes to the dead-letter queue
    /// (`%DLQ%<group>`), 0..=64.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub retry_max: u32,
}

/// `-g GROUP`.
#[derive(Debug, Clone, Args)]
pub struct GroupArg {
    /// Consumer group.
    #[arg(short, long)]
    pub group: String,
}

fn group_text(g: &GroupConfigView) -> String {
    format!(
        "{}\t{}\torderly={}\tretry_max={}\tconsume_from={}\tbroadcast_enable={}\tconsume_enable={}",
        g.group,
        g.broker,
        g.orderly,
        g.retry_max,
        g.consume_from,
        g.broadcast_enable,
        g.consume_enable,
    )
}

/// `admin group list`.
pub async fn list(common: &CommonArgs, admin: &Admin) -> Result<(), CliError> {
    for g in admin.group_configs().await? {
        emit(common.json, &g, || group_text(&g));
    }
    Ok(())
}

/// `admin group create`.
pub async fn create(
    common: &CommonArgs,
    admin: &Admin,
    a: &CreateGroupArgs,
) -> Result<(), CliError> {
    let created = admin
        .create_group(&CreateGroup {
            group: a.group.clone(),
            orderly: a.orderly,
            retry_max: a.retry_max,
        })
        .await?;
    for g in &created {
        emit(common.json, g, || {
            format!(
                "created or updated group {} on {}: orderly={} retry_max={}",
                a.group, g.broker, a.orderly, a.retry_max
            )
        });
    }
    Ok(())
}

/// `admin group delete`.
pub async fn delete(common: &CommonArgs, admin: &Admin, group: &str) -> Result<(), CliError> {
    let d = admin.delete_group(group).await?;
    emit(common.json, &d, || {
        format!("deleted group {group} from brokers {:?}", d.brokers)
    });
    Ok(())
}

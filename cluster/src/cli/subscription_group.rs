//! `actormq admin group list | create | delete`: consumer group configs
//! (subscription groups) on every master broker the name servers know.
//!
//! `create` replaces a group's whole config (flags not given take their
//! defaults), as RocketMQ's `updateSubGroup` does; it creates the group
//! where it is missing and updates it where it exists. `delete` of a group
//! no broker has fails. `list` prints one line per group and broker.

use actormq_sdk::ClientError;
use actormq_sdk::protocol::request::{
    ConsumeFromWhere, CreateSubscriptionGroupRequest, DeleteSubscriptionGroupRequest,
    GetAllSubscriptionGroupRequest, GetBrokerClusterInfoRequest, SubscriptionGroupConfig,
};
use actormq_sdk::protocol::{Bytes, ResponseCode};
use actormq_sdk::route::RouteCache;
use clap::Args;
use serde_json::json;

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

/// Every master broker: `(name, addr)`, sorted by name.
pub(super) async fn masters(routes: &RouteCache) -> Result<Vec<(String, String)>, CliError> {
    let info = routes
        .namesrv_call(GetBrokerClusterInfoRequest {})
        .await?
        .fields;
    let targets: Vec<(String, String)> = info
        .broker_addr_table
        .iter()
        .filter_map(|(name, data)| Some((name.clone(), data.master_addr()?.to_owned())))
        .collect();
    if targets.is_empty() {
        return Err(CliError("no master broker registered".to_owned()));
    }
    Ok(targets)
}

fn consume_from(cfg: &SubscriptionGroupConfig) -> &'static str {
    match cfg.consume_from_where {
        ConsumeFromWhere::LastOffset => "last",
        ConsumeFromWhere::FirstOffset => "first",
        ConsumeFromWhere::Timestamp => "timestamp",
    }
}

/// The JSON line of one group on one broker.
fn group_json(broker: &str, cfg: &SubscriptionGroupConfig) -> serde_json::Value {
    json!({
        "group": cfg.group_name,
        "broker": broker,
        "consume_enable": cfg.consume_enable,
        "consume_from": consume_from(cfg),
        "consume_timestamp_ms": cfg.consume_timestamp_ms,
        "broadcast_enable": cfg.consume_broadcast_enable,
        "orderly": cfg.consume_message_orderly,
        "retry_max": cfg.retry_max_times,
        "retry_first_delay_level": cfg.retry_policy.first_delay_level,
    })
}

fn group_text(broker: &str, cfg: &SubscriptionGroupConfig) -> String {
    format!(
        "{}\t{broker}\torderly={}\tretry_max={}\tconsume_from={}\tbroadcast_enable={}\tconsume_enable={}",
        cfg.group_name,
        cfg.consume_message_orderly,
        cfg.retry_max_times,
        consume_from(cfg),
        cfg.consume_broadcast_enable,
        cfg.consume_enable,
    )
}

/// `admin group list`.
pub async fn list(common: &CommonArgs, routes: &RouteCache) -> Result<(), CliError> {
    for (name, addr) in masters(routes).await? {
        let all = routes
            .connections()
            .call(
                &addr,
                GetAllSubscriptionGroupRequest {},
                Bytes::new(),
                common.timeout(),
            )
            .await
            .map_err(|e| CliError(format!("list on {name} ({addr}): {e}")))?
            .fields;
        for cfg in all.subscription_group_table.values() {
            emit(common.json, &group_json(&name, cfg), || {
                group_text(&name, cfg)
            });
        }
    }
    Ok(())
}

/// `admin group create`.
pub async fn create(
    common: &CommonArgs,
    routes: &RouteCache,
    a: &CreateGroupArgs,
) -> Result<(), CliError> {
    let config = SubscriptionGroupConfig {
        consume_message_orderly: a.orderly,
        retry_max_times: a.retry_max,
        ..SubscriptionGroupConfig::new(&a.group)
    };
    for (name, addr) in masters(routes).await? {
        let req = CreateSubscriptionGroupRequest {
            config: config.clone(),
        };
        routes
            .connections()
            .call(&addr, req, Bytes::new(), common.timeout())
            .await
            .map_err(|e| CliError(format!("create group on {name} ({addr}): {e}")))?;
        let mut line = group_json(&name, &config);
        line["created"] = json!(true);
        emit(common.json, &line, || {
            format!(
                "created or updated group {} on {name} ({addr}): orderly={} retry_max={}",
                a.group, a.orderly, a.retry_max
            )
        });
    }
    Ok(())
}

/// `admin group delete`.
pub async fn delete(common: &CommonArgs, routes: &RouteCache, group: &str) -> Result<(), CliError> {
    let mut deleted = Vec::new();
    for (name, addr) in masters(routes).await? {
        let req = DeleteSubscriptionGroupRequest {
            group_name: group.to_owned(),
        };
        match routes
            .connections()
            .call(&addr, req, Bytes::new(), common.timeout())
            .await
        {
            Ok(_) => deleted.push(name),
            Err(ClientError::Broker {
                code: ResponseCode::SubscriptionGroupNotExist,
                ..
            }) => {}
            Err(e) => return Err(CliError(format!("delete group on {name} ({addr}): {e}"))),
        }
    }
    if deleted.is_empty() {
        return Err(CliError(format!(
            "subscription group {group} does not exist on any broker"
        )));
    }
    emit(
        common.json,
        &json!({"group": group, "deleted": true, "brokers": deleted}),
        || format!("deleted group {group} from brokers {deleted:?}"),
    );
    Ok(())
}

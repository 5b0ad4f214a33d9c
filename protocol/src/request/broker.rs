//! Broker ↔ name server: `REGISTER_BROKER` (103), `UNREGISTER_BROKER` (104);
//! admin → slave: `PROMOTE_BROKER` (10002, actormq's); admin → broker:
//! `GET_BROKER_CONFIG` (26), `GET_BROKER_RUNTIME_INFO` (28).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::topic::TopicConfig;

/// A broker registers (every 30 s) with every name server, with its topics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerRequest {
    /// Cluster name.
    pub cluster_name: String,
    /// Broker name (shared by master and slaves).
    pub broker_name: String,
    /// `host:port` clients connect to.
    pub broker_addr: String,
    /// 0 = master, > 0 = slave.
    pub broker_id: u64,
    /// `host:port` of the HA (replication) service.
    pub ha_server_addr: String,
    /// The broker's topics.
    #[serde(default)]
    pub topic_configs: Vec<TopicConfig>,
    /// Version of the topic table, to skip unchanged re-registrations.
    #[serde(default)]
    pub data_version: u64,
    /// Drop the broker if not heard from for this long (default 120 s).
    #[serde(default)]
    pub heartbeat_timeout_ms: u64,
}

/// Reply to [`RegisterBrokerRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBrokerResponse {
    /// For a slave: its master's HA address, if the master is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_server_addr: Option<String>,
    /// For a slave: its master's address, if registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_addr: Option<String>,
}

/// A broker leaves a name server (clean stop).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterBrokerRequest {
    /// Cluster name.
    pub cluster_name: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker address.
    pub broker_addr: String,
    /// Broker id.
    pub broker_id: u64,
}

/// Make a slave the master of its broker name (`actormq admin broker
/// promote`): it stops replicating and takes writes from its last
/// replicated offset, then registers as broker id 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteBrokerRequest {
    /// The broker name the slave must have (a check against mistakes).
    pub broker_name: String,
    /// The slave's current broker id (a check against mistakes).
    pub broker_id: u64,
}

/// Reply to [`PromoteBrokerRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteBrokerResponse {
    /// The role before (`slave`, or a master role if it already was one).
    pub previous_role: String,
    /// The role now.
    pub role: String,
    /// Its commit log end: where writes go on from.
    pub commit_log_offset: u64,
}

/// A broker's effective configuration (`actormq admin broker config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBrokerConfigRequest {}

/// Reply to [`GetBrokerConfigRequest`]: every setting as `key = value`
/// text, keys as in the node's TOML (`broker.flush`, `http.listen`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerConfigResponse {
    /// Settings by key.
    pub config: BTreeMap<String, String>,
}

/// A broker's runtime status (`actormq admin broker status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBrokerRuntimeInfoRequest {}

/// One supervised child of the node a broker runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildInfo {
    /// The child's name.
    pub name: String,
    /// Whether an incarnation runs now.
    pub running: bool,
    /// Restarts so far.
    pub restarts: u64,
}

/// Reply to [`GetBrokerRuntimeInfoRequest`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerRuntimeInfo {
    /// actormq version.
    pub version: String,
    /// Broker name.
    pub broker_name: String,
    /// Milliseconds since the broker started.
    pub uptime_ms: u64,
    /// `master` or `slave` (what it does now).
    pub role: String,
    /// Replication role: `async-master`, `sync-master` or `slave`.
    pub ha_role: String,
    /// Connected slaves (a master).
    pub slaves: u64,
    /// Commit log bytes kept (max − min offset).
    pub store_bytes: u64,
    /// First kept commit log offset.
    pub commit_log_min_offset: u64,
    /// Commit log end.
    pub commit_log_max_offset: u64,
    /// Flushed up to here.
    pub flushed_offset: u64,
    /// Used share of the data dir's file system (0..1).
    pub disk_used_ratio: f64,
    /// Messages stored since start.
    pub messages_in_total: u64,
    /// Messages delivered since start.
    pub messages_out_total: u64,
    /// Messages stored per second (last few seconds).
    pub tps_in: f64,
    /// Messages delivered per second (last few seconds).
    pub tps_out: f64,
    /// The node's supervised children.
    pub children: Vec<ChildInfo>,
}

//! Routes: `GET_ROUTEINFO_BY_TOPIC` (105) and `GET_BROKER_CLUSTER_INFO` (106).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::topic::Perm;

/// Broker id of a master; slaves have ids above it.
pub const MASTER_ID: u64 = 0;

/// A topic's route. Reply [`TopicRouteData`], or `TOPIC_NOT_EXIST`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRouteInfoByTopicRequest {
    /// Topic name.
    pub topic: String,
}

/// The queues of a topic on one broker (name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueData {
    /// Broker name.
    pub broker_name: String,
    /// Readable queues.
    pub read_queue_nums: u32,
    /// Writable queues.
    pub write_queue_nums: u32,
    /// Permissions.
    pub perm: Perm,
    /// System flags of the topic.
    #[serde(default)]
    pub topic_sys_flag: u32,
}

/// A broker name: its cluster and the address of each member by broker id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// `host:port` by broker id ([`MASTER_ID`] = master).
    pub broker_addrs: BTreeMap<u64, String>,
}

impl BrokerData {
    /// The master's address, if it is registered.
    pub fn master_addr(&self) -> Option<&str> {
        self.broker_addrs.get(&MASTER_ID).map(String::as_str)
    }
}

/// Where a topic's queues are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRouteData {
    /// Queues per broker name.
    pub queue_datas: Vec<QueueData>,
    /// The brokers named in `queue_datas`.
    pub broker_datas: Vec<BrokerData>,
    /// Ordered-topic configuration (`brokerName:queueNum;...`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_topic_conf: Option<String>,
}

/// Clusters and brokers known to a name server. Reply [`ClusterInfo`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetBrokerClusterInfoRequest {}

/// Reply to [`GetBrokerClusterInfoRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// Brokers by broker name.
    pub broker_addr_table: BTreeMap<String, BrokerData>,
    /// Broker names by cluster name.
    pub cluster_addr_table: BTreeMap<String, Vec<String>>,
}

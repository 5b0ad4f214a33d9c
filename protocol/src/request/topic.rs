//! Topics: `UPDATE_AND_CREATE_TOPIC` (17), `DELETE_TOPIC_IN_BROKER` (215),
//! `DELETE_TOPIC_IN_NAMESRV` (216), `GET_ALL_TOPIC_CONFIG` (21),
//! `GET_ALL_TOPIC_LIST_FROM_NAMESERVER` (206).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Topic permission bits, RocketMQ's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Perm(pub u8);

impl Perm {
    /// Inherit (RocketMQ `PERM_INHERIT`).
    pub const INHERIT: Perm = Perm(1);
    /// Writable (RocketMQ `PERM_WRITE`).
    pub const WRITE: Perm = Perm(1 << 1);
    /// Readable (RocketMQ `PERM_READ`).
    pub const READ: Perm = Perm(1 << 2);
    /// Read and write.
    pub const READ_WRITE: Perm = Perm(Perm::READ.0 | Perm::WRITE.0);

    /// Whether reads are allowed.
    pub fn is_readable(self) -> bool {
        self.0 & Perm::READ.0 != 0
    }

    /// Whether writes are allowed.
    pub fn is_writable(self) -> bool {
        self.0 & Perm::WRITE.0 != 0
    }
}

impl Default for Perm {
    fn default() -> Self {
        Perm::READ_WRITE
    }
}

/// A topic's configuration on one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Topic name.
    pub topic_name: String,
    /// Queues consumers read (default 8 for admin create, 4 for auto-create).
    pub read_queue_nums: u32,
    /// Queues producers write.
    pub write_queue_nums: u32,
    /// Permissions.
    pub perm: Perm,
    /// System flags of the topic.
    #[serde(default)]
    pub topic_sys_flag: u32,
    /// Ordered topic.
    #[serde(default)]
    pub order: bool,
}

/// Create or update a topic on a broker. Reply: [`Empty`](super::Empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopicRequest {
    /// The configuration to apply.
    pub config: TopicConfig,
}

/// Delete a topic on a broker (its data goes with retention).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicInBrokerRequest {
    /// Topic name.
    pub topic: String,
}

/// Delete a topic's route on a name server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopicInNamesrvRequest {
    /// Topic name.
    pub topic: String,
    /// Only for brokers of this cluster; `None` = everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
}

/// Every topic name a name server knows. Reply [`TopicList`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAllTopicListFromNamesrvRequest {}

/// A list of topic names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    /// Topic names, sorted.
    pub topics: Vec<String>,
}

/// Every topic config of a broker. Reply [`AllTopicConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAllTopicConfigRequest {}

/// A broker's topic configs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllTopicConfig {
    /// By topic name.
    pub topic_config_table: BTreeMap<String, TopicConfig>,
    /// Version of the table (bumped on every change).
    #[serde(default)]
    pub data_version: u64,
}

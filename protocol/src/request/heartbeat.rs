//! `HEART_BEAT` (34): a client announces its producer and consumer groups
//! and subscriptions to every broker it talks to.

use serde::{Deserialize, Serialize};

use super::SubscriptionGroupConfig;

/// How a consumer gets messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumeType {
    /// Push consumer (pulls under the hood).
    #[default]
    ConsumePassively,
    /// Explicit pull consumer.
    ConsumeActively,
    /// Simple consumer (pop / ack).
    ConsumePop,
}

/// Clustering (share queues) or broadcasting (everyone gets everything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageModel {
    /// Queues shared out among the group; offsets on the broker.
    #[default]
    Clustering,
    /// Every instance gets every message; offsets on the client.
    Broadcasting,
}

/// Where a new group starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumeFromWhere {
    /// From the last offset (default).
    #[default]
    LastOffset,
    /// From the first kept offset.
    FirstOffset,
    /// From a timestamp.
    Timestamp,
}

/// One subscription of a consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionData {
    /// Topic.
    pub topic: String,
    /// Expression: `TagA || TagB`, `*`, or SQL92.
    pub sub_string: String,
    /// `TAG` or `SQL92`.
    pub expression_type: String,
    /// Tags of a tag expression.
    #[serde(default)]
    pub tags_set: Vec<String>,
    /// Their [`tag_hash`](fn@crate::tag_hash)es.
    #[serde(default)]
    pub code_set: Vec<i64>,
    /// Version (ms) of the subscription, newer wins.
    #[serde(default)]
    pub sub_version: u64,
}

/// A producer group the client belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerData {
    /// Producer group.
    pub group_name: String,
}

/// A consumer group the client belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerData {
    /// Consumer group.
    pub group_name: String,
    /// Push, pull or pop.
    pub consume_type: ConsumeType,
    /// Clustering or broadcasting.
    pub message_model: MessageModel,
    /// Start position of a new group.
    pub consume_from_where: ConsumeFromWhere,
    /// Subscriptions.
    pub subscription_data_set: Vec<SubscriptionData>,
}

/// Client heartbeat (every 30 s). Reply: [`HeartbeatResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// Client id (`ip@instance`).
    pub client_id: String,
    /// Producer groups.
    #[serde(default)]
    pub producer_data_set: Vec<ProducerData>,
    /// Consumer groups.
    #[serde(default)]
    pub consumer_data_set: Vec<ConsumerData>,
    /// The client's language (`RUST` for actormq's SDK), for
    /// `admin connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The client's version, for `admin connections`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Reply to a [`HeartbeatRequest`]: the broker's config of each consumer
/// group in the heartbeat (created with defaults when the broker
/// auto-creates groups; a heartbeat naming an unknown group is refused
/// with `SUBSCRIPTION_GROUP_NOT_EXIST` when it does not).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// One config per consumer group of the heartbeat.
    #[serde(default)]
    pub subscription_groups: Vec<SubscriptionGroupConfig>,
}

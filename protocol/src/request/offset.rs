//! Offsets: `QUERY_CONSUMER_OFFSET` (14), `UPDATE_CONSUMER_OFFSET` (15),
//! `SEARCH_OFFSET_BY_TIMESTAMP` (29), `GET_MAX_OFFSET` (30),
//! `GET_MIN_OFFSET` (31), `INVOKE_BROKER_TO_RESET_OFFSET` (222) and the
//! broker's push to consumers `RESET_CONSUMER_CLIENT_OFFSET` (220).

use serde::{Deserialize, Serialize};

use crate::message::MessageQueue;

/// A group's committed offset on a queue. Reply [`OffsetResponse`], or
/// `QUERY_NOT_FOUND` when the group never committed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryConsumerOffsetRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
}

/// Commit a group's offset on a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConsumerOffsetRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Next offset to consume.
    pub commit_offset: u64,
}

/// Max offset of a queue (one past the last message).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMaxOffsetRequest {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
}

/// Min (first kept) offset of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMinOffsetRequest {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
}

/// Offset of the first message of a queue stored at or after a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchOffsetByTimestampRequest {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Store time, ms since the epoch.
    pub timestamp_ms: u64,
}

/// Reply carrying one offset (query/max/min/search).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetResponse {
    /// The offset.
    pub offset: u64,
}

/// Reset a group's offsets on a topic to a time, while consumers run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Target time, ms since the epoch (forward or back).
    pub timestamp_ms: u64,
    /// Move forward too. Without it, as in RocketMQ, a queue whose
    /// committed offset is already before the time's offset keeps it (only
    /// moves back); `actormq admin offset reset` always sets it.
    #[serde(default)]
    pub force: bool,
}

/// A queue and an offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    /// Queue.
    pub queue: MessageQueue,
    /// Offset.
    pub offset: u64,
}

/// Reply to [`ResetOffsetRequest`]: the new offset of every queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetOffsetResponse {
    /// New offsets.
    pub offsets: Vec<QueueOffset>,
}

/// Broker → each consumer of a group (oneway): the group's offsets on
/// `topic` were reset; drop what is cached of these queues and continue
/// at these offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetConsumerClientOffsetRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// The time the offsets were reset to, ms since the epoch.
    pub timestamp_ms: u64,
    /// The new offset of every queue of the topic on the pushing broker.
    pub offsets: Vec<QueueOffset>,
}

//! Offsets: `QUERY_CONSUMER_OFFSET` (14), `UPDATE_CONSUMER_OFFSET` (15),
//! `SEARCH_OFFSET_BY_TIMESTAMP` (29), `GET_MAX_OFFSET` (30),
//! `GET_MIN_OFFSET` (31), `INVOKE_BROKER_TO_RESET_OFFSET` (222).

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
    /// Reset even where that moves the offset forward past unconsumed
    /// messages.
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

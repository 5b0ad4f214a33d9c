//! `QUERY_MESSAGE` (12, by key) and `VIEW_MESSAGE_BY_ID` (33).

use serde::{Deserialize, Serialize};

use crate::message_id::MessageId;

/// Messages of a topic whose keys (or unique key) include `key`, stored in
/// `[begin_timestamp_ms, end_timestamp_ms]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMessageRequest {
    /// Topic.
    pub topic: String,
    /// Key to look up.
    pub key: String,
    /// Most messages to return.
    pub max_num: u32,
    /// Earliest store time, ms since the epoch.
    pub begin_timestamp_ms: u64,
    /// Latest store time, ms since the epoch.
    pub end_timestamp_ms: u64,
}

/// Reply to [`QueryMessageRequest`]: `SUCCESS` with a batch of stored
/// messages in the body, or `QUERY_NOT_FOUND`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryMessageResponse {
    /// Store time of the newest indexed entry.
    pub index_last_update_timestamp_ms: u64,
    /// Commit log offset of the newest indexed entry.
    pub index_last_update_phy_offset: u64,
}

/// Up to `max_count` messages of one queue from `queue_offset` on (actormq's
/// `VIEW_MESSAGES_BY_QUEUE_OFFSET`, the admin view behind `GET
/// /api/dlq/{group}`): an admin read like [`ViewMessageByIdRequest`], so it
/// also reads a topic that is not readable by consumers (a `%DLQ%` topic).
/// Reply: `SUCCESS` with a batch of stored messages in the body (none past
/// the queue's end), typed fields [`Empty`](super::Empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewMessagesByQueueOffsetRequest {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// First queue offset to read.
    pub queue_offset: u64,
    /// Most messages to return (clamped by the broker).
    pub max_count: u32,
}

/// One message by its commit log offset (decoded from its
/// [`MessageId`], which also names the broker to ask). Reply: `SUCCESS`
/// with a batch of one stored message in the body, typed fields
/// [`Empty`](super::Empty); or `QUERY_NOT_FOUND`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewMessageByIdRequest {
    /// Commit log offset of the record.
    pub commit_log_offset: u64,
}

impl From<MessageId> for ViewMessageByIdRequest {
    fn from(id: MessageId) -> Self {
        ViewMessageByIdRequest {
            commit_log_offset: id.commit_log_offset,
        }
    }
}

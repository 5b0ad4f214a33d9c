//! `PULL_MESSAGE` (11).

use serde::{Deserialize, Serialize};

/// Pull messages from one queue. A pull that finds nothing may be held by
/// the broker up to `suspend_timeout_ms` (long polling).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullMessageRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// First queue offset wanted.
    pub queue_offset: u64,
    /// Most messages to return.
    pub max_msg_nums: u32,
    /// Offset to commit for the group along the way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_offset: Option<u64>,
    /// How long the broker may hold the request when nothing is there (0 =
    /// answer at once).
    #[serde(default)]
    pub suspend_timeout_ms: u64,
    /// Subscription expression (`TagA || TagB`, `*`, or SQL92).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// `TAG` (default) or `SQL92`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression_type: Option<String>,
    /// Ask for the reply body as stored records ([`crate::records`])
    /// instead of a batch of stored messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub records: bool,
}

/// Reply to [`PullMessageRequest`]. Response code `SUCCESS` (body: a batch
/// of stored messages, [`crate::batch::encode_stored`]), `PULL_NOT_FOUND`,
/// `PULL_RETRY_IMMEDIATELY` or `PULL_OFFSET_MOVED` (empty body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullMessageResponse {
    /// Offset to pull from next.
    pub next_begin_offset: u64,
    /// Min offset of the queue.
    pub min_offset: u64,
    /// Max offset of the queue.
    pub max_offset: u64,
    /// Broker id to pull from next (0 = master; a slave when advised).
    #[serde(default)]
    pub suggest_which_broker_id: u64,
    /// The body is stored records ([`crate::records`]), as the request
    /// asked; absent or false: a batch of stored messages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub records: bool,
}

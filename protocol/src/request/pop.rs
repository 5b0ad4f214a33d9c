//! Simple consumer: `POP_MESSAGE` (200050), `ACK_MESSAGE` (200051),
//! `CHANGE_MESSAGE_INVISIBLETIME` (200053).
//!
//! Each popped message carries its receipt handle in the `POP_CK` property
//! ([`crate::message::PROPERTY_POP_CK`]); ack and change-invisible-time
//! quote it as `extra_info`.

use serde::{Deserialize, Serialize};

/// Receive up to `max_msg_nums` messages, invisible to others for
/// `invisible_time_ms` unless acked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopMessageRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// One queue, or `None` for all queues of the topic on this broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_id: Option<u32>,
    /// Most messages to return.
    pub max_msg_nums: u32,
    /// How long popped messages stay invisible.
    pub invisible_time_ms: u64,
    /// How long the broker may hold the request when nothing is there.
    #[serde(default)]
    pub poll_time_ms: u64,
    /// Client time of the request, ms since the epoch.
    pub born_time_ms: u64,
    /// Filter expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// `TAG` or `SQL92`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression_type: Option<String>,
    /// Orderly pop (one in flight per queue).
    #[serde(default)]
    pub order: bool,
}

/// Reply to [`PopMessageRequest`]: `SUCCESS` with a batch of stored
/// messages in the body, or `NO_MESSAGE` / `POLLING_TIMEOUT` / `POLLING_FULL`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopMessageResponse {
    /// Broker time of the pop, ms since the epoch.
    pub pop_time_ms: u64,
    /// Invisible time granted.
    pub invisible_time_ms: u64,
    /// Queue of the broker's revive topic tracking these messages.
    pub revive_queue_id: u32,
    /// Messages left in the queue(s) after this pop.
    pub rest_num: u64,
}

/// Acknowledge one popped message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckMessageRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// The message's receipt handle (`POP_CK`).
    pub extra_info: String,
}

/// Change the invisible time of one popped message (from now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibleTimeRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// The message's current receipt handle.
    pub extra_info: String,
    /// New invisible time, from now.
    pub invisible_time_ms: u64,
}

/// Reply to [`ChangeInvisibleTimeRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeInvisibleTimeResponse {
    /// Broker time of the change.
    pub pop_time_ms: u64,
    /// Invisible time granted.
    pub invisible_time_ms: u64,
    /// Revive queue tracking the message.
    pub revive_queue_id: u32,
    /// The new receipt handle; the old one is void.
    pub extra_info: String,
}

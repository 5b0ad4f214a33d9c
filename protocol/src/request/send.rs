//! `SEND_MESSAGE` (10) and `SEND_BATCH_MESSAGE` (320).
//!
//! The send status is the reply's response code: `SUCCESS`,
//! `FLUSH_DISK_TIMEOUT`, `FLUSH_SLAVE_TIMEOUT` or `SLAVE_NOT_AVAILABLE`
//! (all mean "stored"), or an error code.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::message::{Delay, Message};

/// Send one message. Body: the message body, raw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageRequest {
    /// Producer group of the sender.
    pub producer_group: String,
    /// Topic.
    pub topic: String,
    /// Target queue, chosen by the producer.
    pub queue_id: u32,
    /// When the producer created the message, ms since the epoch.
    pub born_timestamp_ms: u64,
    /// Tag, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    /// Space-separated keys, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<String>,
    /// Properties (including `UNIQ_KEY`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Delay level (1..=18), if delayed by level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_level: Option<u8>,
    /// Absolute delivery time, if delayed to a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_at_ms: Option<u64>,
    /// System flags.
    #[serde(default)]
    pub flags: u32,
    /// Times this message was already reconsumed (retry topic sends).
    #[serde(default)]
    pub reconsume_times: u32,
    /// Idempotent producer: producer id (with `sequence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<u64>,
    /// Idempotent producer: per-queue sequence number of this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

impl SendMessageRequest {
    /// The request for `msg` (its body goes in the frame body).
    pub fn new(producer_group: &str, queue_id: u32, born_timestamp_ms: u64, msg: &Message) -> Self {
        let (delay_level, deliver_at_ms) = msg.delay.to_parts();
        SendMessageRequest {
            producer_group: producer_group.to_owned(),
            topic: msg.topic.clone(),
            queue_id,
            born_timestamp_ms,
            tags: msg.tags.clone(),
            keys: msg.keys.clone(),
            properties: msg.properties.clone(),
            delay_level,
            deliver_at_ms,
            flags: msg.flags,
            reconsume_times: 0,
            producer_id: None,
            sequence: None,
        }
    }

    /// The message, given the frame body.
    pub fn into_message(self, body: Bytes) -> Result<Message> {
        Ok(Message {
            delay: Delay::from_parts(self.delay_level, self.deliver_at_ms)?,
            topic: self.topic,
            tags: self.tags,
            keys: self.keys,
            body,
            properties: self.properties,
            flags: self.flags,
        })
    }
}

/// Reply to [`SendMessageRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessageResponse {
    /// Message id ([`crate::MessageId`] as hex).
    pub msg_id: String,
    /// Queue it was stored in.
    pub queue_id: u32,
    /// Its queue offset.
    pub queue_offset: u64,
    /// Transaction id, for half messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
}

/// Send many messages of one topic (no delay, no transaction). Body: a
/// batch of [`Message`]s ([`crate::batch::encode_messages`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBatchMessageRequest {
    /// Producer group of the sender.
    pub producer_group: String,
    /// Topic of every message in the batch.
    pub topic: String,
    /// Target queue.
    pub queue_id: u32,
    /// When the producer created the batch, ms since the epoch.
    pub born_timestamp_ms: u64,
    /// Idempotent producer: producer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<u64>,
    /// Idempotent producer: sequence of the first message (the others
    /// follow consecutively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sequence: Option<u64>,
}

/// Reply to [`SendBatchMessageRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBatchMessageResponse {
    /// Message ids in batch order, comma-separated (as RocketMQ's batch
    /// `msgId`): one string rather than one per message keeps a 1000-message
    /// reply to one allocation. [`SendBatchMessageResponse::msg_ids`] splits it.
    pub msg_id: String,
    /// Queue they were stored in.
    pub queue_id: u32,
    /// Queue offset of the first; the others follow consecutively.
    pub queue_offset: u64,
}

impl SendBatchMessageResponse {
    /// The message ids, in batch order.
    pub fn msg_ids(&self) -> impl Iterator<Item = &str> {
        self.msg_id.split(',').filter(|s| !s.is_empty())
    }
}

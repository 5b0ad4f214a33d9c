//! `SEND_MESSAGE` (10) and `SEND_BATCH_MESSAGE` (320).
//!
//! The send status is the reply's response code: `SUCCESS`,
//! `FLUSH_DISK_TIMEOUT`, `FLUSH_SLAVE_TIMEOUT` or `SLAVE_NOT_AVAILABLE`
//! (all mean "stored"), or an error code.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::message::{Delay, Message};
use crate::mpack;

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
    /// Idempotent producer: the producer's id (32 hex digits, stable for
    /// the producer's life). Absent: not idempotent. Given with
    /// `sequence` or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    /// Idempotent producer: the send's sequence number in its
    /// (producer, topic, queue); every retry of one send carries the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

/// [`SendMessageRequest`] borrowed from a [`Message`] (the producer's
/// hot path): no clone of the group, topic or properties. Serializes to
/// the same bytes as the owned request, and [`SendMessageRef::encode_fields`]
/// writes those bytes directly (tested).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SendMessageRef<'a> {
    /// See [`SendMessageRequest::producer_group`].
    pub producer_group: &'a str,
    /// See [`SendMessageRequest::topic`].
    pub topic: &'a str,
    /// See [`SendMessageRequest::queue_id`].
    pub queue_id: u32,
    /// See [`SendMessageRequest::born_timestamp_ms`].
    pub born_timestamp_ms: u64,
    /// See [`SendMessageRequest::tags`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a str>,
    /// See [`SendMessageRequest::keys`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<&'a str>,
    /// See [`SendMessageRequest::properties`].
    #[serde(skip_serializing_if = "no_properties")]
    pub properties: &'a BTreeMap<String, String>,
    /// See [`SendMessageRequest::delay_level`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_level: Option<u8>,
    /// See [`SendMessageRequest::deliver_at_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_at_ms: Option<u64>,
    /// See [`SendMessageRequest::flags`].
    pub flags: u32,
    /// See [`SendMessageRequest::reconsume_times`].
    pub reconsume_times: u32,
    /// See [`SendMessageRequest::producer_id`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<&'a str>,
    /// See [`SendMessageRequest::sequence`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
}

fn no_properties(p: &&BTreeMap<String, String>) -> bool {
    p.is_empty()
}

impl<'a> SendMessageRef<'a> {
    /// The request for `msg`, as [`SendMessageRequest::new`].
    pub fn new(
        producer_group: &'a str,
        queue_id: u32,
        born_timestamp_ms: u64,
        msg: &'a Message,
    ) -> Self {
        let (delay_level, deliver_at_ms) = msg.delay.to_parts();
        SendMessageRef {
            producer_group,
            topic: &msg.topic,
            queue_id,
            born_timestamp_ms,
            tags: msg.tags.as_deref(),
            keys: msg.keys.as_deref(),
            properties: &msg.properties,
            delay_level,
            deliver_at_ms,
            flags: msg.flags,
            reconsume_times: 0,
            producer_id: None,
            sequence: None,
        }
    }

    /// The same request, idempotent: `producer_id` and this send's
    /// `sequence` (see [`SendMessageRequest::producer_id`]).
    pub fn idempotent(mut self, producer_id: &'a str, sequence: u64) -> Self {
        self.producer_id = Some(producer_id);
        self.sequence = Some(sequence);
        self
    }

    /// Appends the MessagePack map serde writes for this request (the
    /// frame's typed fields) without going through serde.
    pub fn encode_fields(&self, dst: &mut BytesMut) {
        let props = !self.properties.is_empty();
        let n = 6
            + usize::from(self.tags.is_some())
            + usize::from(self.keys.is_some())
            + usize::from(props)
            + usize::from(self.delay_level.is_some())
            + usize::from(self.deliver_at_ms.is_some())
            + usize::from(self.producer_id.is_some())
            + usize::from(self.sequence.is_some());
        let prop_len: usize = self
            .properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum();
        dst.reserve(160 + self.producer_group.len() + self.topic.len() + prop_len);
        mpack::put_map_len(dst, n);
        mpack::put_str(dst, "producer_group");
        mpack::put_str(dst, self.producer_group);
        mpack::put_str(dst, "topic");
        mpack::put_str(dst, self.topic);
        mpack::put_str(dst, "queue_id");
        mpack::put_uint(dst, u64::from(self.queue_id));
        mpack::put_str(dst, "born_timestamp_ms");
        mpack::put_uint(dst, self.born_timestamp_ms);
        if let Some(t) = self.tags {
            mpack::put_str(dst, "tags");
            mpack::put_str(dst, t);
        }
        if let Some(k) = self.keys {
            mpack::put_str(dst, "keys");
            mpack::put_str(dst, k);
        }
        if props {
            mpack::put_str(dst, "properties");
            mpack::put_map_len(dst, self.properties.len());
            for (k, v) in self.properties {
                mpack::put_str(dst, k);
                mpack::put_str(dst, v);
            }
        }
        if let Some(l) = self.delay_level {
            mpack::put_str(dst, "delay_level");
            mpack::put_uint(dst, u64::from(l));
        }
        if let Some(at) = self.deliver_at_ms {
            mpack::put_str(dst, "deliver_at_ms");
            mpack::put_uint(dst, at);
        }
        mpack::put_str(dst, "flags");
        mpack::put_uint(dst, u64::from(self.flags));
        mpack::put_str(dst, "reconsume_times");
        mpack::put_uint(dst, u64::from(self.reconsume_times));
        if let Some(id) = self.producer_id {
            mpack::put_str(dst, "producer_id");
            mpack::put_str(dst, id);
        }
        if let Some(seq) = self.sequence {
            mpack::put_str(dst, "sequence");
            mpack::put_uint(dst, seq);
        }
    }
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
    /// Idempotent producer: the producer's id, as
    /// [`SendMessageRequest::producer_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer_id: Option<String>,
    /// Idempotent producer: the sequence number of the whole batch (one
    /// per request; the batch is stored or answered as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
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

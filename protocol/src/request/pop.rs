//! Simple consumer: `POP_MESSAGE` (200050), `ACK_MESSAGE` (200051),
//! `CHANGE_MESSAGE_INVISIBLETIME` (200053), `BATCH_ACK_MESSAGE` (200151).
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

/// One message of a [`BatchAckMessageRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAckEntry {
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the message.
    pub offset: u64,
    /// The message's receipt handle (`POP_CK`).
    pub extra_info: String,
}

/// Acknowledge many popped messages of one topic in one request (one
/// record in the broker's ack topic for all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAckMessageRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Topic.
    pub topic: String,
    /// The messages.
    pub acks: Vec<BatchAckEntry>,
}

/// One ack of a [`BatchAckMessageRequest`] that was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAckFailure {
    /// Its index in `acks`.
    pub index: u32,
    /// Why (a response code: `INVALID_RECEIPT_HANDLE`, ...).
    pub code: u32,
    /// In words.
    pub remark: String,
}

/// Reply to [`BatchAckMessageRequest`]: `SUCCESS` once every accepted ack
/// is stored; the refused ones (stale or malformed handles) are listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAckMessageResponse {
    /// The acks refused; every other one was stored.
    #[serde(default)]
    pub failed: Vec<BatchAckFailure>,
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

/// What a receipt handle (`POP_CK`, `extra_info`) identifies: one
/// delivery of one popped message. Travels as text,
/// `1 <checkpoint> <pop time> <invisible ms> <reconsume times> <queue> <offset> <topic>`
/// (RocketMQ's `ExtraInfoUtil` keeps the same facts space-separated).
/// `topic` is where the message is stored: the popped topic, or the
/// group's pop retry topic for a message delivered again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptHandle {
    /// The broker's id of the delivery's checkpoint (unique per broker).
    pub checkpoint_id: u64,
    /// Broker time of the pop (or of the last change of invisible time).
    pub pop_time_ms: u64,
    /// Invisible time granted from `pop_time_ms`.
    pub invisible_time_ms: u64,
    /// Reconsume times of the delivered message.
    pub reconsume_times: u32,
    /// Topic the message is stored in.
    pub topic: String,
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the message.
    pub queue_offset: u64,
}

impl ReceiptHandle {
    /// When the message becomes visible again unless acked (ms).
    pub fn visible_again_at_ms(&self) -> u64 {
        self.pop_time_ms.saturating_add(self.invisible_time_ms)
    }

    /// The handle as text.
    pub fn encode(&self) -> String {
        format!(
            "1 {} {} {} {} {} {} {}",
            self.checkpoint_id,
            self.pop_time_ms,
            self.invisible_time_ms,
            self.reconsume_times,
            self.queue_id,
            self.queue_offset,
            self.topic
        )
    }

    /// Parses [`Self::encode`]'s text; `None` when it is not a handle.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split(' ');
        if it.next()? != "1" {
            return None;
        }
        let h = Self {
            checkpoint_id: it.next()?.parse().ok()?,
            pop_time_ms: it.next()?.parse().ok()?,
            invisible_time_ms: it.next()?.parse().ok()?,
            reconsume_times: it.next()?.parse().ok()?,
            queue_id: it.next()?.parse().ok()?,
            queue_offset: it.next()?.parse().ok()?,
            topic: it.next()?.to_owned(),
        };
        (it.next().is_none() && !h.topic.is_empty()).then_some(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_handles_round_trip() {
        let h = ReceiptHandle {
            checkpoint_id: u64::MAX,
            pop_time_ms: 1_700_000_000_000,
            invisible_time_ms: 30_000,
            reconsume_times: 3,
            topic: "%RETRY%g_orders".into(),
            queue_id: 2,
            queue_offset: 42,
        };
        assert_eq!(ReceiptHandle::parse(&h.encode()), Some(h.clone()));
        assert_eq!(h.visible_again_at_ms(), 1_700_000_030_000);
        for bad in [
            "",
            "1",
            "2 1 1 1 1 1 1 t",
            "1 1 1 1 1 1 1",
            "1 x 1 1 1 1 1 t",
            "1 1 1 1 1 1 1 t extra",
        ] {
            assert_eq!(ReceiptHandle::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pop_requests_round_trip() {
        let req = PopMessageRequest {
            consumer_group: "g".into(),
            topic: "t".into(),
            queue_id: None,
            max_msg_nums: 32,
            invisible_time_ms: 2_000,
            poll_time_ms: 1_000,
            born_time_ms: 1,
            ..Default::default()
        };
        let bytes = rmp_serde::to_vec_named(&req).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<PopMessageRequest>(&bytes).unwrap(),
            req
        );
        let ack = AckMessageRequest {
            consumer_group: "g".into(),
            topic: "t".into(),
            queue_id: 1,
            offset: 2,
            extra_info: "1 1 1 1 0 1 2 t".into(),
        };
        let bytes = rmp_serde::to_vec_named(&ack).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<AckMessageRequest>(&bytes).unwrap(),
            ack
        );
        let change = ChangeInvisibleTimeResponse {
            pop_time_ms: 5,
            invisible_time_ms: 6,
            revive_queue_id: 0,
            extra_info: "h".into(),
        };
        let bytes = rmp_serde::to_vec_named(&change).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ChangeInvisibleTimeResponse>(&bytes).unwrap(),
            change
        );
    }
}

//! The message model: [`Message`] (what a producer sends),
//! [`StoredMessage`] (what the broker stored and serves), [`Delay`] and
//! [`MessageQueue`].

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message_id::MessageId;

/// Property key of the producer-stamped unique key (RocketMQ's name).
pub const PROPERTY_UNIQUE_KEY: &str = "UNIQ_KEY";
/// Property key of a popped message's receipt handle (RocketMQ's name).
pub const PROPERTY_POP_CK: &str = "POP_CK";

/// When a message becomes visible to consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Delay {
    /// At once.
    #[default]
    None,
    /// After delay level `n` (1 = 1s, 2 = 5s, ... 18 = 2h; above max =
    /// max). Level 0 means no delay and is decoded as [`Delay::None`].
    Level(u8),
    /// At an absolute time, ms since the Unix epoch (second precision on
    /// the broker).
    DeliverAtMs(u64),
}

impl Delay {
    /// The wire form: `(delay_level, deliver_at_ms)`, both absent for none.
    pub fn to_parts(self) -> (Option<u8>, Option<u64>) {
        match self {
            Delay::None => (None, None),
            Delay::Level(l) => (Some(l), None),
            Delay::DeliverAtMs(t) => (None, Some(t)),
        }
    }

    /// From the wire form; both present is an error, level 0 is none.
    pub fn from_parts(level: Option<u8>, at_ms: Option<u64>) -> Result<Delay> {
        match (level, at_ms) {
            (Some(_), Some(_)) => Err(Error::InvalidMessage(
                "delay_level and deliver_at_ms are mutually exclusive",
            )),
            (Some(0), None) | (None, None) => Ok(Delay::None),
            (Some(l), None) => Ok(Delay::Level(l)),
            (None, Some(t)) => Ok(Delay::DeliverAtMs(t)),
        }
    }
}

/// A message as a producer sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Topic name (see [`crate::validate::validate_topic`]).
    pub topic: String,
    /// One tag, used for broker-side filtering by [`tag_hash`](fn@crate::tag_hash).
    pub tags: Option<String>,
    /// Space-separated business keys, indexed for query by key.
    pub keys: Option<String>,
    /// Raw body; never re-encoded.
    pub body: Bytes,
    /// User and system properties.
    pub properties: BTreeMap<String, String>,
    /// Delivery delay.
    pub delay: Delay,
    /// System flags (opaque to the protocol).
    pub flags: u32,
}

impl Message {
    /// A message with a topic and a body and nothing else.
    pub fn new(topic: impl Into<String>, body: impl Into<Bytes>) -> Message {
        Message {
            topic: topic.into(),
            body: body.into(),
            ..Message::default()
        }
    }

    /// The size checked against the max message size: body plus every
    /// property key and value.
    pub fn size(&self) -> usize {
        self.properties.iter().fold(self.body.len(), |acc, (k, v)| {
            acc.saturating_add(k.len() + v.len())
        })
    }

    /// A property as a subscription filter sees it
    /// ([`crate::filter`]): `TAGS` and `KEYS` are the typed fields, any
    /// other name a user property.
    pub fn property(&self, key: &str) -> Option<&str> {
        match key {
            crate::filter::PROPERTY_TAGS => self.tags.as_deref(),
            crate::filter::PROPERTY_KEYS => self.keys.as_deref(),
            _ => self.properties.get(key).map(String::as_str),
        }
    }

    /// The individual keys (split on spaces, empty parts dropped).
    pub fn key_list(&self) -> impl Iterator<Item = &str> {
        self.keys
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .filter(|k| !k.is_empty())
    }

    /// The producer-stamped unique key, if any.
    pub fn unique_key(&self) -> Option<&str> {
        self.properties.get(PROPERTY_UNIQUE_KEY).map(String::as_str)
    }
}

/// A message as the broker stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The message as sent.
    pub message: Message,
    /// Queue of the topic it was stored in.
    pub queue_id: u32,
    /// Position in that queue (consume queue unit index).
    pub queue_offset: u64,
    /// Physical offset of the record in the commit log.
    pub commit_log_offset: u64,
    /// Size of the stored record in bytes.
    pub store_size: u32,
    /// When the producer created it, ms since the epoch.
    pub born_timestamp_ms: u64,
    /// When the broker stored it, ms since the epoch.
    pub store_timestamp_ms: u64,
    /// Producer address.
    pub born_host: SocketAddr,
    /// Broker address (part of the message id).
    pub store_host: SocketAddr,
    /// CRC32 of the body.
    pub body_crc: u32,
    /// How many times it was sent back for retry.
    pub reconsume_times: u32,
    /// Commit log offset of the half message it commits (transactions), 0
    /// otherwise.
    pub prepared_transaction_offset: u64,
}

impl StoredMessage {
    /// The message id: store host + commit log offset.
    pub fn msg_id(&self) -> MessageId {
        MessageId {
            store_host: self.store_host,
            commit_log_offset: self.commit_log_offset,
        }
    }
}

/// One queue of a topic on one broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageQueue {
    /// Topic name.
    pub topic: String,
    /// Broker name (shared by a master and its slaves).
    pub broker_name: String,
    /// Queue id within the topic on that broker.
    pub queue_id: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_parts() {
        for d in [Delay::None, Delay::Level(3), Delay::DeliverAtMs(5)] {
            let (l, t) = d.to_parts();
            assert_eq!(Delay::from_parts(l, t).unwrap(), d);
        }
        assert_eq!(Delay::from_parts(Some(0), None).unwrap(), Delay::None);
        assert!(Delay::from_parts(Some(1), Some(1)).is_err());
    }

    #[test]
    fn size_and_keys() {
        let mut m = Message::new("t", &b"12345"[..]);
        m.properties.insert("ab".into(), "cde".into());
        m.keys = Some(" k1  k2 ".into());
        assert_eq!(m.size(), 10);
        assert_eq!(m.key_list().collect::<Vec<_>>(), ["k1", "k2"]);
    }
}

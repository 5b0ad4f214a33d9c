//! Conversions between the wire message model ([`Message`],
//! [`StoredMessage`], batch bodies) and the store's records.
//!
//! A record keeps the typed fields of a message as properties, RocketMQ
//! style: `TAGS`, `KEYS`, and for delayed messages `DELAY` (level) or
//! `DELIVER_AT_MS`; user properties follow. A user property with one of
//! these reserved names is dropped (the typed field is the truth). Reading
//! turns them back into the typed fields, so a message pulled back equals
//! the message sent.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use actormq_protocol::{Delay, Message, ResponseCode, StoredMessage};
use actormq_store::MessageView;
use actormq_store::record::properties_iter;
use bytes::{Bytes, BytesMut};

use crate::runtime::ServiceError;

/// Property holding the tags.
pub const PROPERTY_TAGS: &str = "TAGS";
/// Property holding the space-separated keys.
pub const PROPERTY_KEYS: &str = "KEYS";
/// Property holding the delay level.
pub const PROPERTY_DELAY: &str = "DELAY";
/// Property holding the absolute delivery time (ms).
pub const PROPERTY_DELIVER_AT_MS: &str = "DELIVER_AT_MS";

const RESERVED: [&str; 4] = [
    PROPERTY_TAGS,
    PROPERTY_KEYS,
    PROPERTY_DELAY,
    PROPERTY_DELIVER_AT_MS,
];

/// The address used where a record has no host (in-process sends).
pub const UNKNOWN_HOST: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

/// Encodes the typed fields and user properties of `msg` as record
/// properties. Fails with `MESSAGE_ILLEGAL` when a key or value holds a
/// separator byte (`\x01`, `\x02`).
pub fn encode_properties(msg: &Message) -> Result<Vec<u8>, ServiceError> {
    encode_property_parts(
        msg.tags.as_deref(),
        msg.keys.as_deref(),
        msg.delay,
        msg.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// As [`encode_properties`], from the parts of a message (e.g. a borrowed
/// batch entry, [`actormq_protocol::batch::MessageRef`], without building
/// an owned [`Message`]).
pub fn encode_property_parts<'a>(
    tags: Option<&'a str>,
    keys: Option<&'a str>,
    delay: Delay,
    user: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, ServiceError> {
    let mut out = Vec::new();
    encode_property_parts_into(tags, keys, delay, user, &mut out)?;
    Ok(out)
}

/// As [`encode_property_parts`], appending to `out` (a batch encodes all
/// its messages' properties into one buffer).
pub fn encode_property_parts_into<'a>(
    tags: Option<&'a str>,
    keys: Option<&'a str>,
    delay: Delay,
    user: impl Iterator<Item = (&'a str, &'a str)>,
    out: &mut Vec<u8>,
) -> Result<(), ServiceError> {
    let delay_value = match delay {
        Delay::None => None,
        Delay::Level(l) => Some((PROPERTY_DELAY, l.to_string())),
        Delay::DeliverAtMs(t) => Some((PROPERTY_DELIVER_AT_MS, t.to_string())),
    };
    let typed: [Option<(&str, &str)>; 3] = [
        tags.map(|t| (PROPERTY_TAGS, t)),
        keys.map(|k| (PROPERTY_KEYS, k)),
        delay_value.as_ref().map(|(k, v)| (*k, v.as_str())),
    ];
    // Shorten the user pairs' lifetime to the local one of `typed`.
    let user = user
        .filter(|(k, _)| !RESERVED.contains(k))
        .map(|(k, v)| -> (&str, &str) { (k, v) });
    actormq_store::encode_properties_into(typed.into_iter().flatten().chain(user), out)
        .map_err(|e| ServiceError::new(ResponseCode::MessageIllegal, e.to_string()))
}

/// The tag hash stored in the consume queue for `tags` (0 for none).
pub fn tag_hash_of(tags: Option<&str>) -> i64 {
    tags.map_or(0, actormq_protocol::tag_hash)
}

/// Rebuilds the wire [`StoredMessage`] of a record. The body is the
/// record's (mmap-backed) bytes, not a copy.
pub fn to_stored(view: &MessageView) -> StoredMessage {
    let h = view.header();
    let mut message = Message {
        topic: view.topic().to_owned(),
        tags: None,
        keys: None,
        body: view.body(),
        properties: BTreeMap::new(),
        delay: Delay::None,
        flags: h.flags,
    };
    for (k, v) in properties_iter(view.properties()) {
        match k {
            PROPERTY_TAGS => message.tags = Some(v.to_owned()),
            PROPERTY_KEYS => message.keys = Some(v.to_owned()),
            PROPERTY_DELAY => {
                if let Ok(l) = v.parse() {
                    message.delay = Delay::Level(l);
                }
            }
            PROPERTY_DELIVER_AT_MS => {
                if let Ok(t) = v.parse() {
                    message.delay = Delay::DeliverAtMs(t);
                }
            }
            _ => {
                message.properties.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    let body_crc = crc32fast::hash(view.body_slice());
    StoredMessage {
        message,
        queue_id: h.queue_id,
        queue_offset: h.queue_offset,
        commit_log_offset: h.physical_offset,
        store_size: h.total_size,
        born_timestamp_ms: h.born_timestamp_ms,
        store_timestamp_ms: h.store_timestamp_ms,
        born_host: h.born_host.unwrap_or(UNKNOWN_HOST),
        store_host: h.store_host.unwrap_or(UNKNOWN_HOST),
        body_crc,
        reconsume_times: h.reconsume_times,
        prepared_transaction_offset: h.prepared_tx_offset,
    }
}

/// Encodes records as a stored-message batch body ([`actormq_protocol::batch`]).
/// One copy: mapped segment → reply buffer.
pub fn encode_views(views: &[MessageView]) -> Bytes {
    let stored: Vec<StoredMessage> = views.iter().map(to_stored).collect();
    let mut out = BytesMut::new();
    actormq_protocol::batch::encode_stored(&stored, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields_go_first_and_reserved_user_keys_are_dropped() {
        let mut m = Message::new("t", Bytes::from_static(b"x"));
        m.tags = Some("A".into());
        m.keys = Some("k1 k2".into());
        m.delay = Delay::Level(3);
        m.properties.insert("TAGS".into(), "evil".into());
        m.properties.insert("p".into(), "v".into());
        let raw = encode_properties(&m).unwrap();
        let pairs: Vec<_> = properties_iter(&raw).collect();
        assert_eq!(
            pairs,
            vec![("TAGS", "A"), ("KEYS", "k1 k2"), ("DELAY", "3"), ("p", "v")]
        );
    }

    #[test]
    fn separator_bytes_are_illegal() {
        let mut m = Message::new("t", Bytes::new());
        m.properties.insert("a\u{1}".into(), "v".into());
        assert_eq!(
            encode_properties(&m).unwrap_err().code,
            ResponseCode::MessageIllegal
        );
    }

    #[test]
    fn tag_hash_matches_the_store() {
        assert_eq!(tag_hash_of(Some("TagA")), actormq_store::tag_hash("TagA"));
        assert_eq!(tag_hash_of(None), 0);
    }
}

//! Conversions between the wire message model ([`Message`],
//! [`StoredMessage`], batch bodies) and the store's records.
//!
//! A record keeps the typed fields of a message as properties, RocketMQ
//! style: `TAGS`, `KEYS`, and for delayed messages `DELAY` (level) or
//! `DELIVER_AT_MS`; user properties follow. A user property with one of
//! these reserved names is dropped (the typed field is the truth). Reading
//! turns them back into the typed fields, so a message pulled back equals
//! the message sent.

use actormq_protocol::system_topic::{
    PROPERTY_PRODUCER_BATCH, PROPERTY_PRODUCER_ID, PROPERTY_PRODUCER_SEQUENCE,
};

use actormq_protocol::batch::StoredRef;
use actormq_protocol::{Delay, Message, ResponseCode, StoredMessage};
use actormq_store::MessageView;
use actormq_store::record::properties_iter;
use bytes::{Bytes, BytesMut};

use crate::runtime::ServiceError;

use actormq_protocol::records::is_user_property;
pub use actormq_protocol::records::{
    PROPERTY_DELAY, PROPERTY_DELIVER_AT_MS, PROPERTY_KEYS, PROPERTY_TAGS, UNKNOWN_HOST,
};

/// Set by the broker only: a sender's values are dropped (`REAL_TOPIC`
/// and `REAL_QID` say where a parked delayed message is delivered; the
/// `PRODUCER_*` ones key the idempotent producer's dedup window and are
/// not shown to readers).
const RESERVED: [&str; 9] = [
    PROPERTY_TAGS,
    PROPERTY_KEYS,
    PROPERTY_DELAY,
    PROPERTY_DELIVER_AT_MS,
    actormq_protocol::system_topic::PROPERTY_REAL_TOPIC,
    actormq_protocol::system_topic::PROPERTY_REAL_QUEUE_ID,
    PROPERTY_PRODUCER_ID,
    PROPERTY_PRODUCER_SEQUENCE,
    PROPERTY_PRODUCER_BATCH,
];

/// A record's property as a subscription filter sees it, the same as
/// [`Message::property`] on the client: `TAGS`, `KEYS` and user
/// properties (the delay fields are not properties there).
pub fn filter_property<'a>(view: &'a MessageView, key: &str) -> Option<&'a str> {
    match key {
        PROPERTY_DELAY | PROPERTY_DELIVER_AT_MS => None,
        _ => view.property(key),
    }
}

/// Encodes the typed fields and user properties of `msg` as record
/// properties. Fails with `MESSAGE_ILLEGAL` when a key or value holds a
/// separator byte (`\x01`, `\x02`).
pub fn encode_properties(msg: &Message) -> Result<Vec<u8>, ServiceError> {
    encode_property_parts(
        msg.tags.as_deref(),
        msg.keys.as_deref(),
        msg.delay,
        msg.properties
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    )
}

/// As [`encode_properties`], from the parts of a message (e.g. a borrowed
/// batch entry, [`actormq_protocol::batch::MessageRef`], without building
/// an owned [`Message`]).
pub fn encode_property_parts<'a>(
    tags: Option<&'a str>,
    keys: Option<&'a str>,
    delay: Delay,
    user: impl Iterator<Item = (&'a [u8], &'a [u8])>,
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
    user: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut Vec<u8>,
) -> Result<(), ServiceError> {
    let delay_value = match delay {
        Delay::None => None,
        Delay::Level(l) => Some((PROPERTY_DELAY, l.to_string())),
        Delay::DeliverAtMs(t) => Some((PROPERTY_DELIVER_AT_MS, t.to_string())),
    };
    let typed: [Option<(&[u8], &[u8])>; 3] = [
        tags.map(|t| (PROPERTY_TAGS.as_bytes(), t.as_bytes())),
        keys.map(|k| (PROPERTY_KEYS.as_bytes(), k.as_bytes())),
        delay_value
            .as_ref()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    ];
    // Shorten the user pairs' lifetime to the local one of `typed`.
    let user = user
        .filter(|(k, _)| !RESERVED.iter().any(|r| r.as_bytes() == *k))
        .map(|(k, v)| -> (&[u8], &[u8]) { (k, v) });
    actormq_store::encode_properties_into(typed.into_iter().flatten().chain(user), out)
        .map_err(|e| ServiceError::new(ResponseCode::MessageIllegal, e.to_string()))
}

/// The tag hash stored in the consume queue for `tags` (0 for none).
pub fn tag_hash_of(tags: Option<&str>) -> i64 {
    tags.map_or(0, actormq_protocol::tag_hash)
}

/// The stored message of a record, borrowed: typed fields parsed from the
/// record's properties, user properties into `user` (sorted by key, the
/// last of equal keys wins, as in a `BTreeMap`).
fn stored_ref<'a, 'b>(view: &'a MessageView, user: &'b mut Vec<(&'a str, &'a str)>) -> StoredRef<'b>
where
    'a: 'b,
{
    let h = view.header();
    let (mut tags, mut keys, mut delay) = (None, None, Delay::None);
    user.clear();
    for (k, v) in properties_iter(view.properties()) {
        match k {
            PROPERTY_TAGS => tags = Some(v),
            PROPERTY_KEYS => keys = Some(v),
            PROPERTY_DELAY => {
                if let Ok(l) = v.parse() {
                    delay = Delay::Level(l);
                }
            }
            PROPERTY_DELIVER_AT_MS => {
                if let Ok(t) = v.parse() {
                    delay = Delay::DeliverAtMs(t);
                }
            }
            // The idempotent producer's bookkeeping (the broker's dedup
            // window): not part of the message sent. The same rule as the
            // client's reading of records.
            _ if !is_user_property(k) => {}
            _ => match user.binary_search_by(|(uk, _)| (*uk).cmp(k)) {
                Ok(i) => user[i].1 = v,
                Err(i) => user.insert(i, (k, v)),
            },
        }
    }
    let body = view.body_slice();
    StoredRef {
        topic: view.topic(),
        tags,
        keys,
        properties: user,
        delay,
        flags: h.flags,
        body,
        queue_id: h.queue_id,
        queue_offset: h.queue_offset,
        commit_log_offset: h.physical_offset,
        store_size: h.total_size,
        born_timestamp_ms: h.born_timestamp_ms,
        store_timestamp_ms: h.store_timestamp_ms,
        born_host: h.born_host.unwrap_or(UNKNOWN_HOST),
        store_host: h.store_host.unwrap_or(UNKNOWN_HOST),
        body_crc: crc32fast::hash(body),
        reconsume_times: h.reconsume_times,
        prepared_transaction_offset: h.prepared_tx_offset,
    }
}

/// Rebuilds the wire [`StoredMessage`] of a record. The body is the
/// record's (mmap-backed) bytes, not a copy.
pub fn to_stored(view: &MessageView) -> StoredMessage {
    let mut user = Vec::new();
    let r = stored_ref(view, &mut user);
    StoredMessage {
        message: Message {
            topic: r.topic.to_owned(),
            tags: r.tags.map(str::to_owned),
            keys: r.keys.map(str::to_owned),
            body: view.body(),
            properties: r
                .properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            delay: r.delay,
            flags: r.flags,
        },
        queue_id: r.queue_id,
        queue_offset: r.queue_offset,
        commit_log_offset: r.commit_log_offset,
        store_size: r.store_size,
        born_timestamp_ms: r.born_timestamp_ms,
        store_timestamp_ms: r.store_timestamp_ms,
        born_host: r.born_host,
        store_host: r.store_host,
        body_crc: r.body_crc,
        reconsume_times: r.reconsume_times,
        prepared_transaction_offset: r.prepared_transaction_offset,
    }
}

/// Encodes records as a stored-message batch body ([`actormq_protocol::batch`]).
/// One copy: mapped segment → reply buffer; the meta is written straight
/// from the record (no owned message per record). The same bytes as
/// encoding [`to_stored`] of each view.
pub fn encode_views(views: &[MessageView]) -> Bytes {
    let mut out = BytesMut::with_capacity(
        views
            .iter()
            .map(|v| v.size() as usize + VIEW_ENTRY_OVERHEAD)
            .sum(),
    );
    let mut user = Vec::new();
    for view in views {
        actormq_protocol::batch::encode_stored_ref(&stored_ref(view, &mut user), &mut out);
    }
    out.freeze()
}

/// Reply bytes beyond the record size an entry may need (entry header,
/// meta keys and markers); only sizes the first reservation.
const VIEW_ENTRY_OVERHEAD: usize = 8 + 96 + 256;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

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
    fn views_encode_as_their_owned_stored_messages() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            actormq_store::Store::open(actormq_store::StoreConfig::new(dir.path())).unwrap();
        let mut with_all = Message::new("t", Bytes::from_static(b"body-1"));
        with_all.tags = Some("A".into());
        with_all.keys = Some("k1 k2".into());
        with_all.delay = Delay::DeliverAtMs(1_700_000_000_000);
        with_all.properties.insert("zeta".into(), "1".into());
        with_all.properties.insert("alpha".into(), "2".into());
        let mut level = Message::new("t", Bytes::from_static(b""));
        level.delay = Delay::Level(3);
        level.flags = 7;
        let plain = Message::new("t", Bytes::from(vec![9u8; 300]));
        let msgs = [with_all, level, plain];
        let props: Vec<Vec<u8>> = msgs.iter().map(|m| encode_properties(m).unwrap()).collect();
        let host: SocketAddr = "10.1.2.3:10911".parse().unwrap();
        let batch: Vec<actormq_store::AppendMessage<'_>> = msgs
            .iter()
            .zip(&props)
            .enumerate()
            .map(|(i, (m, p))| actormq_store::AppendMessage {
                topic: &m.topic,
                queue_id: 0,
                body: &m.body,
                properties: p,
                tag_hash: tag_hash_of(m.tags.as_deref()),
                flags: m.flags,
                born_timestamp_ms: 1000 + i as u64,
                born_host: Some("[::1]:5000".parse().unwrap()),
                store_host: Some(host),
                reconsume_times: i as u32,
                prepared_tx_offset: 0,
            })
            .collect();
        store.append_batch(&batch).unwrap();
        store.dispatch_all().unwrap();
        let views = store.get_messages("t", 0, 0, 10, 1 << 20, None).messages;
        assert_eq!(views.len(), 3);
        let owned: Vec<StoredMessage> = views.iter().map(to_stored).collect();
        let expect = actormq_protocol::batch::stored_to_bytes(&owned);
        assert_eq!(encode_views(&views), expect);
        let back = actormq_protocol::batch::decode_stored(&expect).unwrap();
        assert_eq!(back, owned);
        assert_eq!(
            back[0].message.properties.keys().collect::<Vec<_>>(),
            ["alpha", "zeta"]
        );
        // The records form of a pull reply reads back as the same messages:
        // the protocol's record reader and this conversion agree.
        let records =
            actormq_protocol::records::encode_records(views.iter().map(|v| &v.record()[..]));
        let read = actormq_protocol::records::decode_records(&records).unwrap();
        let read: Vec<StoredMessage> = read.iter().map(|v| v.to_stored()).collect();
        assert_eq!(read, owned);
    }

    #[test]
    fn tag_hash_matches_the_store() {
        assert_eq!(tag_hash_of(Some("TagA")), actormq_store::tag_hash("TagA"));
        assert_eq!(tag_hash_of(None), 0);
    }
}

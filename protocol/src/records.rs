//! Stored records on the wire: a pull reply that carries the commit log's
//! records byte for byte (as RocketMQ's does), and [`StoredView`], a
//! message read from such a reply without decoding it into owned strings
//! and maps.
//!
//! A consumer asks for this form with `PullMessageRequest::records`; a
//! broker that serves it says so with `PullMessageResponse::records` and
//! the reply body is then the records back to back, each exactly as the
//! store wrote it. All integers are little-endian:
//!
//! ```text
//! off  size  field
//!   0     4  total_size        whole record, header included
//!   4     4  magic             0xA17C0DE1
//!   8     4  crc               crc32 of bytes [12, total_size) (not checked here)
//!  12     4  queue_id
//!  16     8  queue_offset
//!  24     8  physical_offset   commit log offset of the record
//!  32     4  flags
//!  36     4  reconsume_times
//!  40     8  prepared_tx_offset
//!  48     8  born_timestamp    ms since the Unix epoch
//!  56     8  store_timestamp   ms since the Unix epoch
//!  64    19  born_host         family u8 (0 none, 4, 6), 16 address bytes, port u16
//!  83    19  store_host        same encoding
//! 102     8  tag_hash          i64
//! 110     2  topic_len
//! 112     4  properties_len
//! 116     4  body_len
//! 120     -  topic, properties, body
//! ```
//!
//! Properties are `key 0x01 value` pairs separated by `0x02`. The typed
//! fields of a message live there as `TAGS`, `KEYS`, `DELAY` (level) and
//! `DELIVER_AT_MS`; the idempotent producer's `PRODUCER_*` bookkeeping is
//! not shown to readers. [`StoredView::to_stored`] gives the same
//! [`StoredMessage`] the broker's own conversion does (a test in the
//! broker checks the two against each other on records the store wrote).
//!
//! Parsing checks each record's framing and that its topic and
//! properties are UTF-8, once; the accessors then only slice.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::message::{Delay, Message, StoredMessage};
use crate::message_id::MessageId;
use crate::system_topic::{
    PROPERTY_PRODUCER_BATCH, PROPERTY_PRODUCER_ID, PROPERTY_PRODUCER_SEQUENCE, PROPERTY_RETRY_TOPIC,
};

/// Magic of a message record.
pub const RECORD_MAGIC: u32 = 0xA17C_0DE1;
/// Fixed header length of a record.
pub const RECORD_HEADER_LEN: usize = 120;
/// Property holding the tags.
pub const PROPERTY_TAGS: &str = "TAGS";
/// Property holding the space-separated keys.
pub const PROPERTY_KEYS: &str = "KEYS";
/// Property holding the delay level.
pub const PROPERTY_DELAY: &str = "DELAY";
/// Property holding the absolute delivery time (ms).
pub const PROPERTY_DELIVER_AT_MS: &str = "DELIVER_AT_MS";
/// The address shown where a record has no host (in-process sends).
pub const UNKNOWN_HOST: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

const KV_SEP: u8 = 0x01;
const PAIR_SEP: u8 = 0x02;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn host_at(b: &[u8], at: usize) -> SocketAddr {
    let s = &b[at..at + 19];
    let port = u16::from_le_bytes([s[17], s[18]]);
    match s[0] {
        4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(s[1], s[2], s[3], s[4])), port),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&s[1..17]);
            SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port)
        }
        _ => UNKNOWN_HOST,
    }
}

/// The `(key, value)` pairs of encoded record properties, in record order
/// (pairs without a separator are skipped, as the store does).
pub fn record_properties(props: &str) -> impl Iterator<Item = (&str, &str)> {
    props
        .split(PAIR_SEP as char)
        .filter_map(|pair| pair.split_once(KV_SEP as char))
}

/// Whether a record property is shown as a user property (the typed
/// fields and the broker's bookkeeping are not): the one rule for the
/// broker's conversion of records and the client's reading of them.
pub fn is_user_property(key: &str) -> bool {
    !matches!(
        key,
        PROPERTY_TAGS
            | PROPERTY_KEYS
            | PROPERTY_DELAY
            | PROPERTY_DELIVER_AT_MS
            | PROPERTY_PRODUCER_ID
            | PROPERTY_PRODUCER_SEQUENCE
            | PROPERTY_PRODUCER_BATCH
    )
}

/// One stored message of a records reply, borrowed from the reply buffer
/// (holding it keeps that buffer alive; cloning it is a reference count).
/// Nothing is decoded up front: the fixed fields are read where they lie,
/// strings are slices of the record.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredView {
    record: Bytes,
    topic_end: u32,
    props_end: u32,
    reconsume_times: u32,
    origin_topic: bool,
}

impl std::fmt::Debug for StoredView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredView")
            .field("topic", &self.topic())
            .field("queue_id", &self.queue_id())
            .field("queue_offset", &self.queue_offset())
            .field("commit_log_offset", &self.commit_log_offset())
            .field("body_len", &self.body().len())
            .finish()
    }
}

impl StoredView {
    /// Checks one whole record (framing, UTF-8 topic and properties).
    pub fn parse(record: Bytes) -> Result<StoredView> {
        let bad = |why: &str| Error::BadBatchEntry {
            index: 0,
            reason: why.to_string(),
        };
        let b = &record[..];
        if b.len() < RECORD_HEADER_LEN {
            return Err(bad("record shorter than its header"));
        }
        if u32_at(b, 4) != RECORD_MAGIC {
            return Err(bad("not a message record"));
        }
        let topic_len = u16::from_le_bytes([b[110], b[111]]) as usize;
        let topic_end = RECORD_HEADER_LEN + topic_len;
        let props_end = topic_end as u64 + u64::from(u32_at(b, 112));
        let end = props_end + u64::from(u32_at(b, 116));
        if u64::from(u32_at(b, 0)) != b.len() as u64 || end != b.len() as u64 {
            return Err(bad("record sizes do not add up"));
        }
        // One check for topic and properties: the separators are ASCII,
        // so every key and value of valid UTF-8 is valid UTF-8.
        std::str::from_utf8(&b[RECORD_HEADER_LEN..props_end as usize])
            .map_err(|_| Error::InvalidUtf8)?;
        if topic_len == 0 {
            return Err(bad("empty topic"));
        }
        Ok(StoredView {
            reconsume_times: u32_at(b, 36),
            topic_end: topic_end as u32,
            props_end: props_end as u32,
            record,
            origin_topic: false,
        })
    }

    /// The whole record as stored.
    pub fn record(&self) -> &Bytes {
        &self.record
    }

    fn text(&self, range: std::ops::Range<usize>) -> &str {
        // Checked as UTF-8 in `parse`; never fails.
        std::str::from_utf8(&self.record[range]).unwrap_or_default()
    }

    /// The topic the message was stored in.
    pub fn stored_topic(&self) -> &str {
        self.text(RECORD_HEADER_LEN..self.topic_end as usize)
    }

    /// The topic: the stored one, or for a retried message shown with
    /// [`show_origin_topic`](Self::show_origin_topic) the topic it was
    /// first consumed from.
    pub fn topic(&self) -> &str {
        if self.origin_topic
            && let Some(t) = self.raw_property(PROPERTY_RETRY_TOPIC)
        {
            return t;
        }
        self.stored_topic()
    }

    /// Shows a retried message under the topic it was first consumed from
    /// (its `RETRY_TOPIC` property), as the push consumer does.
    pub fn show_origin_topic(&mut self) {
        self.origin_topic = true;
    }

    /// The encoded properties.
    fn props(&self) -> &str {
        self.text(self.topic_end as usize..self.props_end as usize)
    }

    /// A record property by name, typed fields included (the last of
    /// equal keys wins).
    fn raw_property(&self, key: &str) -> Option<&str> {
        record_properties(self.props())
            .filter(|(k, _)| *k == key)
            .last()
            .map(|(_, v)| v)
    }

    /// The tag, if any.
    pub fn tags(&self) -> Option<&str> {
        self.raw_property(PROPERTY_TAGS)
    }

    /// The space-separated keys, if any.
    pub fn keys(&self) -> Option<&str> {
        self.raw_property(PROPERTY_KEYS)
    }

    /// A property as a subscription filter sees it, the same as
    /// [`Message::property`]: `TAGS` and `KEYS` are the typed fields, any
    /// other name a user property.
    pub fn property(&self, key: &str) -> Option<&str> {
        match key {
            PROPERTY_TAGS => self.tags(),
            PROPERTY_KEYS => self.keys(),
            k if is_user_property(k) => self.raw_property(k),
            _ => None,
        }
    }

    /// The user properties in record order (a key stored twice appears
    /// twice; [`to_stored`](Self::to_stored) keeps the last).
    pub fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        record_properties(self.props()).filter(|(k, _)| is_user_property(k))
    }

    /// The delivery delay it was sent with.
    pub fn delay(&self) -> Delay {
        let mut delay = Delay::None;
        for (k, v) in record_properties(self.props()) {
            match k {
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
                _ => {}
            }
        }
        delay
    }

    /// System flags.
    pub fn flags(&self) -> u32 {
        u32_at(&self.record, 32)
    }

    /// The body, borrowed.
    pub fn body(&self) -> &[u8] {
        &self.record[self.props_end as usize..]
    }

    /// The body as a zero-copy `Bytes`.
    pub fn body_bytes(&self) -> Bytes {
        self.record.slice(self.props_end as usize..)
    }

    /// Queue of the topic it was stored in.
    pub fn queue_id(&self) -> u32 {
        u32_at(&self.record, 12)
    }

    /// Position in that queue.
    pub fn queue_offset(&self) -> u64 {
        u64_at(&self.record, 16)
    }

    /// Physical offset of the record in the commit log.
    pub fn commit_log_offset(&self) -> u64 {
        u64_at(&self.record, 24)
    }

    /// Size of the stored record in bytes.
    pub fn store_size(&self) -> u32 {
        self.record.len() as u32
    }

    /// When the producer created it, ms since the epoch.
    pub fn born_timestamp_ms(&self) -> u64 {
        u64_at(&self.record, 48)
    }

    /// When the broker stored it, ms since the epoch.
    pub fn store_timestamp_ms(&self) -> u64 {
        u64_at(&self.record, 56)
    }

    /// Producer address.
    pub fn born_host(&self) -> SocketAddr {
        host_at(&self.record, 64)
    }

    /// Broker address.
    pub fn store_host(&self) -> SocketAddr {
        host_at(&self.record, 83)
    }

    /// CRC32 of the body (computed on each call).
    pub fn body_crc(&self) -> u32 {
        crc32fast::hash(self.body())
    }

    /// How many times it was sent back for retry (or redelivered here).
    pub fn reconsume_times(&self) -> u32 {
        self.reconsume_times
    }

    /// Counts one more delivery attempt made by the client itself.
    pub fn set_reconsume_times(&mut self, n: u32) {
        self.reconsume_times = n;
    }

    /// Commit log offset of the half message it commits (transactions).
    pub fn prepared_transaction_offset(&self) -> u64 {
        u64_at(&self.record, 40)
    }

    /// The message id: store host + commit log offset.
    pub fn msg_id(&self) -> MessageId {
        MessageId {
            store_host: self.store_host(),
            commit_log_offset: self.commit_log_offset(),
        }
    }

    /// An owned [`StoredMessage`] (allocates the strings and the property
    /// map; the body is shared).
    pub fn to_stored(&self) -> StoredMessage {
        let mut properties = BTreeMap::new();
        for (k, v) in self.properties() {
            properties.insert(k.to_owned(), v.to_owned());
        }
        StoredMessage {
            message: Message {
                topic: self.topic().to_owned(),
                tags: self.tags().map(str::to_owned),
                keys: self.keys().map(str::to_owned),
                body: self.body_bytes(),
                properties,
                delay: self.delay(),
                flags: self.flags(),
            },
            queue_id: self.queue_id(),
            queue_offset: self.queue_offset(),
            commit_log_offset: self.commit_log_offset(),
            store_size: self.store_size(),
            born_timestamp_ms: self.born_timestamp_ms(),
            store_timestamp_ms: self.store_timestamp_ms(),
            born_host: self.born_host(),
            store_host: self.store_host(),
            body_crc: self.body_crc(),
            reconsume_times: self.reconsume_times,
            prepared_transaction_offset: self.prepared_transaction_offset(),
        }
    }
}

/// Splits a records reply body into its records (no copy: each view is a
/// slice of `body`).
pub fn decode_records(body: &Bytes) -> Result<Vec<StoredView>> {
    let mut out = Vec::with_capacity(crate::batch::estimate_count(body));
    let mut pos = 0usize;
    while pos < body.len() {
        let size = body
            .get(pos..pos + 4)
            .map(|b| u32_at(b, 0) as usize)
            .filter(|&s| s >= RECORD_HEADER_LEN && s <= body.len() - pos)
            .ok_or_else(|| Error::BadBatchEntry {
                index: out.len(),
                reason: "record size out of bounds".into(),
            })?;
        let view = StoredView::parse(body.slice(pos..pos + size)).map_err(|e| match e {
            Error::BadBatchEntry { reason, .. } => Error::BadBatchEntry {
                index: out.len(),
                reason,
            },
            other => other,
        })?;
        out.push(view);
        pos += size;
    }
    Ok(out)
}

/// A records body of `records` (each a whole stored record): one copy
/// into the reply buffer.
pub fn encode_records<'a>(records: impl IntoIterator<Item = &'a [u8]> + Clone) -> Bytes {
    let len = records.clone().into_iter().map(<[u8]>::len).sum();
    let mut out = BytesMut::with_capacity(len);
    for r in records {
        out.extend_from_slice(r);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record laid out as the store writes it.
    fn record(topic: &str, props: &str, body: &[u8], queue_offset: u64) -> Vec<u8> {
        let total = RECORD_HEADER_LEN + topic.len() + props.len() + body.len();
        let mut b = vec![0u8; total];
        b[0..4].copy_from_slice(&(total as u32).to_le_bytes());
        b[4..8].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        b[12..16].copy_from_slice(&3u32.to_le_bytes());
        b[16..24].copy_from_slice(&queue_offset.to_le_bytes());
        b[24..32].copy_from_slice(&4096u64.to_le_bytes());
        b[36..40].copy_from_slice(&2u32.to_le_bytes());
        b[56..64].copy_from_slice(&1_700_000_000_000u64.to_le_bytes());
        b[83] = 4;
        b[84..88].copy_from_slice(&[10, 0, 0, 7]);
        b[100..102].copy_from_slice(&10911u16.to_le_bytes());
        b[110..112].copy_from_slice(&(topic.len() as u16).to_le_bytes());
        b[112..116].copy_from_slice(&(props.len() as u32).to_le_bytes());
        b[116..120].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let mut at = RECORD_HEADER_LEN;
        for part in [topic.as_bytes(), props.as_bytes(), body] {
            b[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        b
    }

    #[test]
    fn views_read_the_fields_and_the_typed_properties() {
        let props = "TAGS\u{1}TagA\u{2}KEYS\u{1}k1 k2\u{2}b\u{1}2\u{2}a\u{1}1\u{2}PRODUCER_ID\u{1}p\u{2}DELAY\u{1}3\u{2}a\u{1}9";
        let r1 = record("orders", props, b"hello", 7);
        let r2 = record("orders", "", b"", 8);
        let body = encode_records([&r1[..], &r2[..]]);
        let views = decode_records(&body).unwrap();
        assert_eq!(views.len(), 2);
        let v = &views[0];
        assert_eq!(v.topic(), "orders");
        assert_eq!(v.tags(), Some("TagA"));
        assert_eq!(v.keys(), Some("k1 k2"));
        assert_eq!(v.property("TAGS"), Some("TagA"));
        assert_eq!(v.property("a"), Some("9"), "the last of equal keys wins");
        assert_eq!(v.property("PRODUCER_ID"), None);
        assert_eq!(v.property("DELAY"), None);
        assert_eq!(v.delay(), Delay::Level(3));
        assert_eq!(v.body(), b"hello");
        assert_eq!((v.queue_id(), v.queue_offset()), (3, 7));
        assert_eq!(v.commit_log_offset(), 4096);
        assert_eq!(v.reconsume_times(), 2);
        assert_eq!(v.store_host(), "10.0.0.7:10911".parse().unwrap());
        assert_eq!(v.born_host(), UNKNOWN_HOST);
        let owned = v.to_stored();
        assert_eq!(owned.message.properties.len(), 2);
        assert_eq!(owned.message.properties["a"], "9");
        assert_eq!(owned.message.tags.as_deref(), Some("TagA"));
        assert_eq!(owned.body_crc, crc32fast::hash(b"hello"));
        assert_eq!(owned.msg_id(), v.msg_id());
        // Zero copy: the body points into the reply.
        assert!(body.as_ptr_range().contains(&v.body_bytes().as_ptr()));
        assert_eq!(views[1].body(), b"");
        assert_eq!(views[1].tags(), None);
        assert!(decode_records(&Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn retried_messages_show_their_origin_topic_on_request() {
        let r = record("%RETRY%g", "RETRY_TOPIC\u{1}orders", b"x", 0);
        let mut v = StoredView::parse(Bytes::from(r)).unwrap();
        assert_eq!(v.topic(), "%RETRY%g");
        v.show_origin_topic();
        assert_eq!(v.topic(), "orders");
        assert_eq!(v.stored_topic(), "%RETRY%g");
        assert_eq!(v.to_stored().message.topic, "orders");
    }

    #[test]
    fn malformed_replies_are_refused() {
        let good = record("t", "a\u{1}b", b"body", 0);
        // Truncated.
        let cut = Bytes::from(good[..good.len() - 1].to_vec());
        assert!(decode_records(&cut).is_err());
        // Size field beyond the reply.
        let mut big = good.clone();
        big[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_records(&Bytes::from(big)).is_err());
        // Sizes that do not add up.
        let mut sum = good.clone();
        sum[116..120].copy_from_slice(&5u32.to_le_bytes());
        assert!(decode_records(&Bytes::from(sum)).is_err());
        // Wrong magic.
        let mut magic = good.clone();
        magic[4] ^= 1;
        assert!(decode_records(&Bytes::from(magic)).is_err());
        // Properties that are not UTF-8.
        let mut utf = good.clone();
        utf[RECORD_HEADER_LEN + 1] = 0xff;
        assert!(matches!(
            decode_records(&Bytes::from(utf)),
            Err(Error::InvalidUtf8)
        ));
        // Too short for a header, and garbage after a good record.
        assert!(decode_records(&Bytes::from_static(&[1, 2, 3])).is_err());
        let mut tail = good.clone();
        tail.extend_from_slice(&[0, 0]);
        assert!(decode_records(&Bytes::from(tail)).is_err());
    }
}

//! The compact batch encoding: many messages in one body.
//!
//! Used for the body of `SEND_BATCH_MESSAGE` (plain [`Message`]s) and of
//! replies carrying stored messages (pull, view by id, query by key, pop,
//! check transaction state) as [`StoredMessage`]s. A batch body is a
//! sequence of entries, back to back, until the body ends:
//!
//! ```text
//! u32 entry len   (big-endian; bytes after this field: 4 + meta len + body len)
//! u32 meta len    (big-endian)
//! meta            MessagePack map (below)
//! body            raw bytes, never MessagePack-encoded
//! ```
//!
//! Meta keys (absent = default, unknown keys are skipped):
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `topic` | str | required |
//! | `tags`, `keys` | str | absent = none |
//! | `props` | map str→str | absent = empty |
//! | `delay_level` / `deliver_at_ms` | uint | absent = no delay; never both |
//! | `flags` | uint | absent = 0 |
//! | `queue_id`, `queue_offset`, `commit_log_offset`, `store_size`, `born_ms`, `store_ms`, `body_crc` | uint | stored only, required |
//! | `born_host`, `store_host` | bin: 4 or 16 IP bytes + 2 port bytes (BE) | stored only, required |
//! | `reconsume_times`, `prepared_tx_offset` | uint | stored only, absent = 0 |
//!
//! Decoding from a [`Bytes`] does not copy bodies: each body is a
//! [`Bytes::slice`] of the input. Encoding reserves the whole output once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};

use crate::error::{Error, Result};
use crate::message::{Delay, Message, PROPERTY_UNIQUE_KEY, StoredMessage};
use crate::mpack::{self, Reader};
use crate::unique_key::{KeyText, UniqueKeyGenerator};

/// Upper bound of one entry's encoded size: 8 bytes of entry header, at
/// most 79 bytes of message keys and markers (96 allowed), the strings and
/// 10 bytes of markers per property, the body.
fn entry_bound(m: &Message) -> usize {
    let props: usize = m
        .properties
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    8 + 96
        + m.topic.len()
        + m.tags.as_ref().map_or(0, String::len)
        + m.keys.as_ref().map_or(0, String::len)
        + props
        + m.body.len()
}

/// Extra bound for the stored fields of one entry: keys and markers of the
/// eleven stored fields take at most 240 bytes (IPv6 hosts, `u64::MAX`
/// values).
const STORED_BOUND: usize = 256;

fn message_field_count(m: &Message, extra_props: usize) -> usize {
    1 + usize::from(m.tags.is_some())
        + usize::from(m.keys.is_some())
        + usize::from(m.properties.len() + extra_props > 0)
        + usize::from(m.delay != Delay::None)
        + usize::from(m.flags != 0)
}

/// Writes the message fields of an entry's meta map (the map length is
/// the caller's).
#[allow(clippy::too_many_arguments)]
fn put_message_fields<'a>(
    w: &mut mpack::SliceWriter<'_>,
    topic: &str,
    tags: Option<&str>,
    keys: Option<&str>,
    props: (usize, impl Iterator<Item = (&'a [u8], &'a [u8])>),
    delay: Delay,
    flags: u32,
) {
    let (props_len, props) = props;
    mpack::put_str(w, "topic");
    mpack::put_str(w, topic);
    if let Some(t) = tags {
        mpack::put_str(w, "tags");
        mpack::put_str(w, t);
    }
    if let Some(k) = keys {
        mpack::put_str(w, "keys");
        mpack::put_str(w, k);
    }
    if props_len > 0 {
        mpack::put_str(w, "props");
        mpack::put_map_len(w, props_len);
        // UTF-8: `&str`s or ASCII key text.
        for (k, v) in props {
            mpack::put_str_bytes(w, k);
            mpack::put_str_bytes(w, v);
        }
    }
    match delay {
        Delay::None => {}
        Delay::Level(l) => {
            mpack::put_str(w, "delay_level");
            mpack::put_uint(w, u64::from(l));
        }
        Delay::DeliverAtMs(t) => {
            mpack::put_str(w, "deliver_at_ms");
            mpack::put_uint(w, t);
        }
    }
    if flags != 0 {
        mpack::put_str(w, "flags");
        mpack::put_uint(w, u64::from(flags));
    }
}

/// Appends one entry to `dst`: sized to `bound`, written through a slice
/// by `meta` (which writes the whole meta map), then the body; cut to size.
/// (Zeroing the bound costs less than a capacity check per value written
/// into a `BytesMut`: 49 against 78 µs per 1000 messages, `cargo bench -p
/// actormq-protocol -- batch1000_encode`.)
fn put_entry(
    dst: &mut BytesMut,
    bound: usize,
    body: &[u8],
    meta: impl FnOnce(&mut mpack::SliceWriter<'_>),
) {
    let start = dst.len();
    dst.resize(start + bound, 0);
    let mut w = mpack::SliceWriter::new(&mut dst[start..]);
    w.skip(8);
    meta(&mut w);
    let meta_len = w.pos() - 8;
    mpack::Sink::write_bytes(&mut w, body);
    let n = w.pos();
    // Entries are bounded by the frame cap, far below u32::MAX.
    dst[start..start + 4].copy_from_slice(&((n - 4) as u32).to_be_bytes());
    dst[start + 4..start + 8].copy_from_slice(&(meta_len as u32).to_be_bytes());
    dst.truncate(start + n);
}

/// Appends `msgs` as a batch body to `dst` (one reservation up front).
pub fn encode_messages(msgs: &[Message], dst: &mut BytesMut) {
    dst.reserve(msgs.iter().map(entry_bound).sum());
    for m in msgs {
        put_message_entry(dst, m, None);
    }
}

/// Like [`encode_messages`], but every message without a
/// [`PROPERTY_UNIQUE_KEY`] gets one from `keys` in its encoded properties
/// (the messages themselves are not touched): what a producer sends. One
/// clock read and one reservation of stamps for the whole batch.
pub fn encode_messages_keyed(msgs: &[Message], keys: &UniqueKeyGenerator, dst: &mut BytesMut) {
    let unkeyed = msgs.iter().filter(|m| m.unique_key().is_none()).count();
    let mut stamp = keys.next_stamps(unkeyed as u64);
    dst.reserve(msgs.iter().map(|m| entry_bound(m) + KEYED_BOUND).sum());
    for m in msgs {
        if m.unique_key().is_some() {
            put_message_entry(dst, m, None);
        } else {
            let key = KeyText::new(stamp, keys.node_id());
            stamp += 1;
            put_message_entry(dst, m, Some(key.as_bytes()));
        }
    }
}

/// Extra bound for a unique key added while encoding: its key, value and
/// markers.
const KEYED_BOUND: usize = PROPERTY_UNIQUE_KEY.len() + 26 + 10;

/// `unique_key`: ASCII text ([`KeyText::as_bytes`]).
fn put_message_entry(dst: &mut BytesMut, m: &Message, unique_key: Option<&[u8]>) {
    let extra = usize::from(unique_key.is_some());
    let bound = entry_bound(m) + extra * KEYED_BOUND;
    put_entry(dst, bound, &m.body, |w| {
        mpack::put_map_len(w, message_field_count(m, extra));
        let props = m
            .properties
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .chain(unique_key.map(|k| (PROPERTY_UNIQUE_KEY.as_bytes(), k)));
        put_message_fields(
            w,
            &m.topic,
            m.tags.as_deref(),
            m.keys.as_deref(),
            (m.properties.len() + extra, props),
            m.delay,
            m.flags,
        );
    });
}

/// A stored message borrowed from wherever it lives (a commit log record,
/// a [`StoredMessage`]): what [`encode_stored_ref`] writes, without
/// building owned strings or maps first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRef<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Tag, if any.
    pub tags: Option<&'a str>,
    /// Space-separated keys, if any.
    pub keys: Option<&'a str>,
    /// User properties, written in this order.
    pub properties: &'a [(&'a str, &'a str)],
    /// Delivery delay.
    pub delay: Delay,
    /// System flags.
    pub flags: u32,
    /// Body.
    pub body: &'a [u8],
    /// See [`StoredMessage::queue_id`].
    pub queue_id: u32,
    /// See [`StoredMessage::queue_offset`].
    pub queue_offset: u64,
    /// See [`StoredMessage::commit_log_offset`].
    pub commit_log_offset: u64,
    /// See [`StoredMessage::store_size`].
    pub store_size: u32,
    /// See [`StoredMessage::born_timestamp_ms`].
    pub born_timestamp_ms: u64,
    /// See [`StoredMessage::store_timestamp_ms`].
    pub store_timestamp_ms: u64,
    /// See [`StoredMessage::born_host`].
    pub born_host: SocketAddr,
    /// See [`StoredMessage::store_host`].
    pub store_host: SocketAddr,
    /// See [`StoredMessage::body_crc`].
    pub body_crc: u32,
    /// See [`StoredMessage::reconsume_times`].
    pub reconsume_times: u32,
    /// See [`StoredMessage::prepared_transaction_offset`].
    pub prepared_transaction_offset: u64,
}

impl StoredRef<'_> {
    /// Upper bound of the encoded entry (see [`entry_bound`]).
    pub fn encoded_bound(&self) -> usize {
        let props: usize = self
            .properties
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum();
        8 + 96
            + STORED_BOUND
            + self.topic.len()
            + self.tags.map_or(0, str::len)
            + self.keys.map_or(0, str::len)
            + props
            + self.body.len()
    }
}

fn put_host(w: &mut mpack::SliceWriter<'_>, key: &str, addr: &SocketAddr) {
    let mut raw = [0u8; 18];
    let n = match addr.ip() {
        IpAddr::V4(ip) => {
            raw[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            raw[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    raw[n..n + 2].copy_from_slice(&addr.port().to_be_bytes());
    mpack::put_str(w, key);
    mpack::put_bin(w, &raw[..n + 2]);
}

/// Appends one stored-message entry to `dst` (the same bytes as
/// [`encode_stored`] writes for the equivalent [`StoredMessage`]). For many
/// entries, reserve their total size in `dst` first.
pub fn encode_stored_ref(m: &StoredRef<'_>, dst: &mut BytesMut) {
    put_entry(dst, m.encoded_bound(), m.body, |w| {
        let fields = 1
            + usize::from(m.tags.is_some())
            + usize::from(m.keys.is_some())
            + usize::from(!m.properties.is_empty())
            + usize::from(m.delay != Delay::None)
            + usize::from(m.flags != 0)
            + 9
            + usize::from(m.reconsume_times != 0)
            + usize::from(m.prepared_transaction_offset != 0);
        mpack::put_map_len(w, fields);
        put_message_fields(
            w,
            m.topic,
            m.tags,
            m.keys,
            (
                m.properties.len(),
                m.properties
                    .iter()
                    .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            ),
            m.delay,
            m.flags,
        );
        for (k, v) in [
            ("queue_id", u64::from(m.queue_id)),
            ("queue_offset", m.queue_offset),
            ("commit_log_offset", m.commit_log_offset),
            ("store_size", u64::from(m.store_size)),
            ("born_ms", m.born_timestamp_ms),
            ("store_ms", m.store_timestamp_ms),
            ("body_crc", u64::from(m.body_crc)),
        ] {
            mpack::put_str(w, k);
            mpack::put_uint(w, v);
        }
        put_host(w, "born_host", &m.born_host);
        put_host(w, "store_host", &m.store_host);
        if m.reconsume_times != 0 {
            mpack::put_str(w, "reconsume_times");
            mpack::put_uint(w, u64::from(m.reconsume_times));
        }
        if m.prepared_transaction_offset != 0 {
            mpack::put_str(w, "prepared_tx_offset");
            mpack::put_uint(w, m.prepared_transaction_offset);
        }
    });
}

/// Appends stored messages as a batch body to `dst` (one reservation).
pub fn encode_stored(msgs: &[StoredMessage], dst: &mut BytesMut) {
    dst.reserve(
        msgs.iter()
            .map(|s| entry_bound(&s.message) + STORED_BOUND)
            .sum(),
    );
    let mut props: Vec<(&str, &str)> = Vec::new();
    for s in msgs {
        props.clear();
        props.extend(
            s.message
                .properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        encode_stored_ref(
            &StoredRef {
                topic: &s.message.topic,
                tags: s.message.tags.as_deref(),
                keys: s.message.keys.as_deref(),
                properties: &props,
                delay: s.message.delay,
                flags: s.message.flags,
                body: &s.message.body,
                queue_id: s.queue_id,
                queue_offset: s.queue_offset,
                commit_log_offset: s.commit_log_offset,
                store_size: s.store_size,
                born_timestamp_ms: s.born_timestamp_ms,
                store_timestamp_ms: s.store_timestamp_ms,
                born_host: s.born_host,
                store_host: s.store_host,
                body_crc: s.body_crc,
                reconsume_times: s.reconsume_times,
                prepared_transaction_offset: s.prepared_transaction_offset,
            },
            dst,
        );
    }
}

/// A batch body as a [`Bytes`]; convenience over [`encode_messages`].
pub fn messages_to_bytes(msgs: &[Message]) -> Bytes {
    let mut b = BytesMut::new();
    encode_messages(msgs, &mut b);
    b.freeze()
}

/// Stored messages as a batch body [`Bytes`]; convenience over [`encode_stored`].
pub fn stored_to_bytes(msgs: &[StoredMessage]) -> Bytes {
    let mut b = BytesMut::new();
    encode_stored(msgs, &mut b);
    b.freeze()
}

/// The entries of a batch body, as borrowed views ([`MessageRef`]).
///
/// The zero-allocation way to read a batch: strings borrow from the input,
/// bodies are [`Bytes::slice`]s of it. Yields `Err` once for a malformed
/// entry, then stops.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    body: &'a Bytes,
    pos: usize,
    index: usize,
    failed: bool,
}

/// Iterates over the messages of a batch body without copying.
pub fn iter_messages(body: &Bytes) -> BatchIter<'_> {
    BatchIter {
        body,
        pos: 0,
        index: 0,
        failed: false,
    }
}

impl<'a> BatchIter<'a> {
    fn bad(&self, reason: &str) -> Error {
        Error::BadBatchEntry {
            index: self.index,
            reason: reason.to_string(),
        }
    }

    fn read_u32(&self, at: usize) -> Option<u32> {
        let b = self.body.get(at..at.checked_add(4)?)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Cuts the next entry: (meta bytes, body slice).
    fn next_entry(&mut self) -> Result<(&'a [u8], &'a [u8])> {
        let pos = self.pos;
        let entry_len = self
            .read_u32(pos)
            .ok_or_else(|| self.bad("truncated entry length"))?;
        if entry_len < 4 {
            return Err(self.bad("entry length < 4"));
        }
        let end = pos
            .checked_add(4)
            .and_then(|p| p.checked_add(entry_len as usize))
            .filter(|&e| e <= self.body.len())
            .ok_or_else(|| self.bad("entry runs past the end of the batch"))?;
        let meta_len = self
            .read_u32(pos + 4)
            .ok_or_else(|| self.bad("truncated meta length"))?;
        if meta_len > entry_len - 4 {
            return Err(self.bad("meta length exceeds entry"));
        }
        let body_start = pos + 8 + meta_len as usize;
        let body: &'a Bytes = self.body;
        let meta = body
            .get(pos + 8..body_start)
            .ok_or_else(|| self.bad("meta"))?;
        self.pos = end;
        self.index += 1;
        Ok((meta, &body[body_start..end]))
    }

    /// The next entry's meta as `read` decodes it, and its body.
    #[inline(always)]
    fn next_with<T>(
        &mut self,
        read: impl FnOnce(&'a [u8]) -> Result<T>,
    ) -> Option<Result<(T, &'a [u8])>> {
        if self.failed || self.pos >= self.body.len() {
            return None;
        }
        let item = self.next_entry().and_then(|(meta, b)| Ok((read(meta)?, b)));
        self.failed = item.is_err();
        Some(item)
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<MessageRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self
            .next_with(read_message_meta)?
            .and_then(|(m, body)| m.message(self.body, body));
        self.failed |= item.is_err();
        Some(item)
    }
}

/// A message of a batch, borrowed from the batch buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRef<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Tag, if any.
    pub tags: Option<&'a str>,
    /// Space-separated keys, if any.
    pub keys: Option<&'a str>,
    /// Properties, decoded on demand.
    pub properties: PropertiesRef<'a>,
    /// Delivery delay.
    pub delay: Delay,
    /// System flags.
    pub flags: u32,
    /// Body: borrowed from the batch buffer ([`MessageRef::body_bytes`]
    /// for a shared `Bytes`).
    pub body: &'a [u8],
    src: &'a Bytes,
}

impl MessageRef<'_> {
    /// The body as a zero-copy `Bytes` slice of the batch buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.src.slice_ref(self.body)
    }

    /// An owned [`Message`] (allocates the strings; the body is shared).
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.to_owned(),
            tags: self.tags.map(str::to_owned),
            keys: self.keys.map(str::to_owned),
            body: self.body_bytes(),
            properties: self.properties.to_map(),
            delay: self.delay,
            flags: self.flags,
        }
    }

    /// Body plus property keys and values, as [`Message::size`].
    pub fn size(&self) -> usize {
        self.properties.0.size_with(self.body)
    }
}

/// The `props` map of a batch entry, still encoded (already checked to be
/// a map of UTF-8 strings).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PropertiesRef<'a>(RawPropertiesRef<'a>);

impl<'a> PropertiesRef<'a> {
    /// Number of properties.
    pub fn len(&self) -> usize {
        self.0.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (key, value) pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        let mut r = Reader::new(self.0.raw);
        // Checked when the entry was decoded, so no error can occur here.
        (0..self.0.len).map_while(move |_| Some((r.str("key").ok()?, r.str("value").ok()?)))
    }

    /// The (key, value) pairs in wire order, as the bytes of their UTF-8
    /// text (checked once, when the entry was decoded, not again here).
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        self.0.iter_bytes()
    }

    /// An owned map (a later duplicate key wins).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        // Inserting one by one: `collect` would first buffer and sort.
        let mut map = BTreeMap::new();
        for (k, v) in self.iter() {
            map.insert(k.to_owned(), v.to_owned());
        }
        map
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// The `props` map of a batch entry, still encoded, its strings not yet
/// checked as UTF-8 ([`RawMessageRef`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawPropertiesRef<'a> {
    raw: &'a [u8],
    len: usize,
}

impl<'a> RawPropertiesRef<'a> {
    /// Number of properties.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The (key, value) pairs in wire order, unchecked bytes.
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + use<'a> {
        let mut r = Reader::new(self.raw);
        (0..self.len)
            .map_while(move |_| Some((r.str_bytes("key").ok()?, r.str_bytes("value").ok()?)))
    }

    /// The same map once every key and value is checked to be UTF-8.
    pub fn checked(&self) -> Result<PropertiesRef<'a>> {
        for (k, v) in self.iter_bytes() {
            std::str::from_utf8(k).map_err(|_| Error::InvalidUtf8)?;
            std::str::from_utf8(v).map_err(|_| Error::InvalidUtf8)?;
        }
        Ok(PropertiesRef(*self))
    }

    /// `body`'s length plus the keys' and values' ([`Message::size`]).
    fn size_with(&self, body: &[u8]) -> usize {
        self.iter_bytes().fold(body.len(), |acc, (k, v)| {
            acc.saturating_add(k.len() + v.len())
        })
    }
}

/// A message of a batch as [`iter_raw`] yields it: like [`MessageRef`], but
/// the topic and the properties are bytes not yet checked as UTF-8 (the
/// structure is checked). For a caller that checks them in bulk: the
/// broker compares the topic with the request's (equal bytes are a valid
/// topic) and checks the properties of the whole batch in one pass over
/// their stored encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessageRef<'a> {
    /// Topic, unchecked.
    pub topic: &'a [u8],
    /// Tag, if any (checked).
    pub tags: Option<&'a str>,
    /// Space-separated keys, if any (checked).
    pub keys: Option<&'a str>,
    /// Properties, unchecked.
    pub properties: RawPropertiesRef<'a>,
    /// Delivery delay.
    pub delay: Delay,
    /// System flags.
    pub flags: u32,
    /// Body, borrowed from the batch buffer.
    pub body: &'a [u8],
}

impl RawMessageRef<'_> {
    /// Body plus property keys and values, as [`Message::size`].
    pub fn size(&self) -> usize {
        self.properties.size_with(self.body)
    }
}

/// The entries of a batch body with topic and properties unchecked
/// ([`RawMessageRef`]); [`BatchIter`] checks them one by one.
#[derive(Debug, Clone)]
pub struct RawBatchIter<'a>(BatchIter<'a>);

/// Iterates over the messages of a batch body without copying and without
/// checking topic and properties as UTF-8 (see [`RawMessageRef`]).
pub fn iter_raw(body: &Bytes) -> RawBatchIter<'_> {
    RawBatchIter(iter_messages(body))
}

impl<'a> Iterator for RawBatchIter<'a> {
    type Item = Result<RawMessageRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self
            .0
            .next_with(read_message_meta)?
            .and_then(|(m, body)| m.raw(body));
        self.0.failed |= item.is_err();
        Some(item)
    }
}

/// The message fields of an entry's meta map, strings borrowed.
#[derive(Default)]
struct MetaRef<'a> {
    topic: Option<&'a [u8]>,
    tags: Option<&'a str>,
    keys: Option<&'a str>,
    props: RawPropertiesRef<'a>,
    delay_level: Option<u8>,
    deliver_at_ms: Option<u64>,
    flags: u32,
}

/// The stored fields of an entry's meta map.
#[derive(Default)]
struct StoredMetaRef {
    queue_id: Option<u32>,
    queue_offset: Option<u64>,
    commit_log_offset: Option<u64>,
    store_size: Option<u32>,
    born_ms: Option<u64>,
    store_ms: Option<u64>,
    body_crc: Option<u32>,
    born_host: Option<SocketAddr>,
    store_host: Option<SocketAddr>,
    reconsume_times: u32,
    prepared_tx_offset: u64,
}

fn read_host(r: &mut Reader<'_>, what: &str) -> Result<SocketAddr> {
    let raw = r.bin(what)?;
    let ip = match raw.len() {
        6 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
        18 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&raw[..16]);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(Error::WrongType(format!("{what}: expected 6 or 18 bytes"))),
    };
    let n = raw.len();
    Ok(SocketAddr::new(
        ip,
        u16::from_be_bytes([raw[n - 2], raw[n - 1]]),
    ))
}

/// Reads the value of `key` into `m` if it is a message field; `false`
/// (nothing read) for any other key.
#[inline(always)]
fn message_field<'a>(
    m: &mut MetaRef<'a>,
    key: &[u8],
    r: &mut Reader<'a>,
    bytes: &'a [u8],
) -> Result<bool> {
    match key {
        // Topic and properties are checked as UTF-8 later: one by one for
        // a `MessageRef`, in bulk by a caller of `iter_raw`.
        b"topic" => m.topic = Some(r.str_bytes("topic")?),
        b"props" => {
            let len = r.map_len("props")?;
            let start = bytes.len() - r.remaining();
            for _ in 0..len {
                r.str_bytes("property key")?;
                r.str_bytes("property value")?;
            }
            let end = bytes.len() - r.remaining();
            m.props = RawPropertiesRef {
                raw: bytes.get(start..end).unwrap_or_default(),
                len,
            };
        }
        b"tags" => m.tags = Some(r.str("tags")?),
        b"keys" => m.keys = Some(r.str("keys")?),
        b"delay_level" => m.delay_level = Some(r.uint_as("delay_level")?),
        b"deliver_at_ms" => m.deliver_at_ms = Some(r.uint("deliver_at_ms")?),
        b"flags" => m.flags = r.uint_as("flags")?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// Walks an entry's meta map: message fields into the returned
/// [`MetaRef`], every other key to `other` (which reads or skips its value).
#[inline(always)]
fn read_meta_with<'a>(
    bytes: &'a [u8],
    mut other: impl FnMut(&[u8], &mut Reader<'a>) -> Result<()>,
) -> Result<MetaRef<'a>> {
    let mut r = Reader::new(bytes);
    let mut m = MetaRef::default();
    let n = r.map_len("meta")?;
    for _ in 0..n {
        let key = r.str_bytes("meta key")?;
        if r.nil() {
            continue; // nil = absent
        }
        if !message_field(&mut m, key, &mut r, bytes)? {
            other(key, &mut r)?;
        }
    }
    if !r.is_empty() {
        return Err(Error::BadMsgPack("trailing bytes after meta map".into()));
    }
    Ok(m)
}

/// The message fields of a meta map (stored fields are skipped unread).
fn read_message_meta(bytes: &[u8]) -> Result<MetaRef<'_>> {
    read_meta_with(bytes, |_, r| r.skip())
}

/// Message and stored fields of a meta map.
fn read_stored_meta(bytes: &[u8]) -> Result<(MetaRef<'_>, StoredMetaRef)> {
    let mut s = StoredMetaRef::default();
    let m = read_meta_with(bytes, |key, r| {
        match key {
            b"queue_id" => s.queue_id = Some(r.uint_as("queue_id")?),
            b"queue_offset" => s.queue_offset = Some(r.uint("queue_offset")?),
            b"commit_log_offset" => s.commit_log_offset = Some(r.uint("commit_log_offset")?),
            b"store_size" => s.store_size = Some(r.uint_as("store_size")?),
            b"born_ms" => s.born_ms = Some(r.uint("born_ms")?),
            b"store_ms" => s.store_ms = Some(r.uint("store_ms")?),
            b"body_crc" => s.body_crc = Some(r.uint_as("body_crc")?),
            b"born_host" => s.born_host = Some(read_host(r, "born_host")?),
            b"store_host" => s.store_host = Some(read_host(r, "store_host")?),
            b"reconsume_times" => s.reconsume_times = r.uint_as("reconsume_times")?,
            b"prepared_tx_offset" => s.prepared_tx_offset = r.uint("prepared_tx_offset")?,
            _ => r.skip()?,
        }
        Ok(())
    })?;
    Ok((m, s))
}

fn required<T>(v: Option<T>, name: &str) -> Result<T> {
    v.ok_or_else(|| Error::MissingField(name.to_string()))
}

impl<'a> MetaRef<'a> {
    fn message(&self, src: &'a Bytes, body: &'a [u8]) -> Result<MessageRef<'a>> {
        let topic = required(self.topic, "topic")?;
        Ok(MessageRef {
            topic: std::str::from_utf8(topic).map_err(|_| Error::InvalidUtf8)?,
            tags: self.tags,
            keys: self.keys,
            properties: self.props.checked()?,
            delay: Delay::from_parts(self.delay_level, self.deliver_at_ms)?,
            flags: self.flags,
            body,
            src,
        })
    }

    /// An owned message: every string checked as UTF-8 once, while it is
    /// copied (no borrowed, checked view first); the body is shared.
    fn owned(&self, src: &Bytes, body: &[u8]) -> Result<Message> {
        fn text(b: &[u8]) -> Result<String> {
            String::from_utf8(b.to_vec()).map_err(|_| Error::InvalidUtf8)
        }
        let mut properties = BTreeMap::new();
        for (k, v) in self.props.iter_bytes() {
            properties.insert(text(k)?, text(v)?);
        }
        Ok(Message {
            topic: text(required(self.topic, "topic")?)?,
            tags: self.tags.map(str::to_owned),
            keys: self.keys.map(str::to_owned),
            body: src.slice_ref(body),
            properties,
            delay: Delay::from_parts(self.delay_level, self.deliver_at_ms)?,
            flags: self.flags,
        })
    }

    fn raw(&self, body: &'a [u8]) -> Result<RawMessageRef<'a>> {
        Ok(RawMessageRef {
            topic: required(self.topic, "topic")?,
            tags: self.tags,
            keys: self.keys,
            properties: self.props,
            delay: Delay::from_parts(self.delay_level, self.deliver_at_ms)?,
            flags: self.flags,
            body,
        })
    }
}

/// About how many entries a batch body holds (judged by its first entry;
/// 1..=4096): a capacity for per-entry vectors.
pub fn estimate_count(body: &Bytes) -> usize {
    let first = body
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    (body.len() / (first as usize).saturating_add(4)).clamp(1, 4096)
}

/// Decodes a batch body into owned messages; bodies are slices of `body`.
/// Stored entries decode too (their stored fields are ignored).
pub fn decode_messages(body: &Bytes) -> Result<Vec<Message>> {
    let mut out = Vec::with_capacity(estimate_count(body));
    let mut it = iter_messages(body);
    while let Some(item) = it.next_with(read_message_meta) {
        let (m, b) = item?;
        out.push(m.owned(body, b)?);
    }
    Ok(out)
}

/// Decodes a batch body of stored messages; bodies are slices of `body`.
pub fn decode_stored(body: &Bytes) -> Result<Vec<StoredMessage>> {
    let mut out = Vec::with_capacity(estimate_count(body));
    let mut it = iter_messages(body);
    while let Some(item) = it.next_with(read_stored_meta) {
        let ((m, s), b) = item?;
        out.push(StoredMessage {
            message: m.owned(body, b)?,
            queue_id: required(s.queue_id, "queue_id")?,
            queue_offset: required(s.queue_offset, "queue_offset")?,
            commit_log_offset: required(s.commit_log_offset, "commit_log_offset")?,
            store_size: required(s.store_size, "store_size")?,
            born_timestamp_ms: required(s.born_ms, "born_ms")?,
            store_timestamp_ms: required(s.store_ms, "store_ms")?,
            born_host: required(s.born_host, "born_host")?,
            store_host: required(s.store_host, "store_host")?,
            body_crc: required(s.body_crc, "body_crc")?,
            reconsume_times: s.reconsume_times,
            prepared_transaction_offset: s.prepared_tx_offset,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(i: u8) -> Message {
        let mut m = Message::new("orders", vec![i; 5]);
        m.tags = Some("TagA".into());
        m.properties.insert("k".into(), format!("v{i}"));
        m
    }

    #[test]
    fn raw_iteration_leaves_topic_and_properties_unchecked() {
        let msgs: Vec<Message> = (0..3).map(msg).collect();
        let mut raw = messages_to_bytes(&msgs).to_vec();
        // Entry 1's property value "v1" becomes "v\xff".
        let at = raw.windows(3).position(|w| w == b"\xa2v1").unwrap();
        raw[at + 2] = 0xff;
        let bytes = Bytes::from(raw);
        let got: Vec<RawMessageRef<'_>> = iter_raw(&bytes).collect::<Result<_>>().unwrap();
        assert_eq!(got.len(), 3);
        for (g, m) in got.iter().zip(&msgs) {
            assert_eq!(g.topic, m.topic.as_bytes());
            assert_eq!(g.tags, m.tags.as_deref());
            assert_eq!(g.body, &m.body[..]);
            assert_eq!(g.properties.len(), 1);
        }
        assert_eq!(got[0].size(), msgs[0].size());
        let bad: Vec<(&[u8], &[u8])> = got[1].properties.iter_bytes().collect();
        assert_eq!(bad, [(&b"k"[..], &b"v\xff"[..])]);
        assert!(got[1].properties.checked().is_err());
        assert!(got[2].properties.checked().is_ok());
        // The checked iteration refuses entry 1 and stops there.
        let checked: Vec<_> = iter_messages(&bytes).collect();
        assert_eq!(checked.len(), 2);
        assert!(checked[0].is_ok());
        assert!(matches!(checked[1], Err(Error::InvalidUtf8)));
        // Owned decoding refuses it too.
        assert!(matches!(decode_messages(&bytes), Err(Error::InvalidUtf8)));
    }

    #[test]
    fn round_trip_and_zero_copy() {
        let msgs: Vec<Message> = (0..3).map(msg).collect();
        let bytes = messages_to_bytes(&msgs);
        let got = decode_messages(&bytes).unwrap();
        assert_eq!(got, msgs);
        let range = bytes.as_ptr_range();
        for m in &got {
            assert!(range.contains(&m.body.as_ptr()));
        }
    }

    #[test]
    fn keyed_encoding_adds_keys_only_where_missing() {
        let mut msgs: Vec<Message> = (0..4).map(msg).collect();
        msgs[1]
            .properties
            .insert(PROPERTY_UNIQUE_KEY.into(), "MINE".into());
        msgs[3].properties.clear();
        let keys = UniqueKeyGenerator::with_clock(9, || 5);
        let mut dst = BytesMut::new();
        encode_messages_keyed(&msgs, &keys, &mut dst);
        let got = decode_messages(&dst.freeze()).unwrap();
        assert_eq!(got.len(), 4);
        assert_eq!(got[1], msgs[1]);
        let stamped: Vec<&str> = [0, 2, 3]
            .iter()
            .map(|&i| got[i].unique_key().expect("stamped"))
            .collect();
        assert!(stamped.windows(2).all(|w| w[0] < w[1]), "{stamped:?}");
        for i in [0, 2, 3] {
            let mut g = got[i].clone();
            g.properties.remove(PROPERTY_UNIQUE_KEY);
            assert_eq!(g, msgs[i]);
        }
        // The next key of the generator comes after the reserved run.
        assert!(keys.next_key().as_str() > stamped[2]);
    }

    #[test]
    fn one_reservation() {
        // The buffer is allocated once, at the bound computed up front: had
        // encoding outgrown it, the capacity would have doubled past it.
        let msgs: Vec<Message> = (0..32).map(msg).collect();
        let bound: usize = msgs.iter().map(entry_bound).sum();
        let mut dst = BytesMut::new();
        encode_messages(&msgs, &mut dst);
        assert_eq!(dst.capacity(), bound);
        assert!(dst.len() <= bound);
        let stored: Vec<StoredMessage> = msgs
            .into_iter()
            .map(|message| StoredMessage {
                message,
                queue_id: u32::MAX,
                queue_offset: u64::MAX,
                commit_log_offset: u64::MAX,
                store_size: u32::MAX,
                born_timestamp_ms: u64::MAX,
                store_timestamp_ms: u64::MAX,
                born_host: "[ffff::1]:65535".parse().unwrap(),
                store_host: "[ffff::1]:65535".parse().unwrap(),
                body_crc: u32::MAX,
                reconsume_times: u32::MAX,
                prepared_transaction_offset: u64::MAX,
            })
            .collect();
        let bound: usize = stored
            .iter()
            .map(|s| entry_bound(&s.message) + STORED_BOUND)
            .sum();
        let mut dst = BytesMut::new();
        encode_stored(&stored, &mut dst);
        assert_eq!(dst.capacity(), bound);
    }

    #[test]
    fn empty_batch_and_empty_bodies() {
        assert!(decode_messages(&Bytes::new()).unwrap().is_empty());
        let m = Message::new("t", Bytes::new());
        assert_eq!(
            decode_messages(&messages_to_bytes(std::slice::from_ref(&m))).unwrap(),
            [m]
        );
    }

    #[test]
    fn borrowed_view_matches_owned() {
        let msgs: Vec<Message> = (0..4).map(msg).collect();
        let bytes = messages_to_bytes(&msgs);
        let refs: Vec<MessageRef<'_>> = iter_messages(&bytes).collect::<Result<_>>().unwrap();
        assert_eq!(refs.len(), 4);
        assert_eq!(refs[2].properties.get("k"), Some("v2"));
        assert_eq!(refs[2].size(), msgs[2].size());
        let owned: Vec<Message> = refs.iter().map(MessageRef::to_message).collect();
        assert_eq!(owned, msgs);
        // Strings borrow from the batch buffer.
        assert!(bytes.as_ptr_range().contains(&refs[0].topic.as_ptr()));
    }

    #[test]
    fn iterator_stops_after_an_error() {
        let mut v = messages_to_bytes(&[msg(1)]).to_vec();
        v.extend_from_slice(&[0, 0]);
        let bytes = Bytes::from(v);
        let items: Vec<_> = iter_messages(&bytes).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(
            items[1],
            Err(Error::BadBatchEntry { index: 1, .. })
        ));
    }

    #[test]
    fn stored_requires_stored_fields() {
        let bytes = messages_to_bytes(&[msg(1)]);
        assert_eq!(
            decode_stored(&bytes),
            Err(Error::MissingField("queue_id".into()))
        );
    }
}

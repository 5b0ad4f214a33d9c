//! Commit log record encoding and decoding.
//!
//! All integers are little-endian. Layout of a message record (see
//! `ARCHITECTURE.md`):
//!
//! ```text
//! off  size  field
//!   0     4  total_size        whole record, header included
//!   4     4  magic             MSG_MAGIC
//!   8     4  crc               crc32 (IEEE) of bytes [12, total_size)
//!  12     4  queue_id
//!  16     8  queue_offset
//!  24     8  physical_offset   commit log offset of byte 0 of this record
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
//! 120     -  topic bytes, properties bytes, body bytes
//! ```
//!
//! A blank (end-of-segment padding) record is `total_size` (the bytes left to
//! the segment end, at least 8) followed by `BLANK_MAGIC`; the rest is
//! ignored.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::{Error, Result};

/// Magic of a message record.
pub const MSG_MAGIC: u32 = 0xA17C_0DE1;
/// Magic of a blank (end-of-segment) record.
pub const BLANK_MAGIC: u32 = 0xB1A4_C0DE;
/// Fixed header length of a message record.
pub const HEADER_LEN: usize = 120;
/// Minimum bytes kept free at a segment end for the blank record.
pub const BLANK_MIN: usize = 8;
/// Encoded size of a host.
pub const HOST_LEN: usize = 19;

/// Property holding the space-separated business keys (indexed).
pub const PROPERTY_KEYS: &str = "KEYS";
/// Property holding the tags string.
pub const PROPERTY_TAGS: &str = "TAGS";
/// Property holding the client-stamped unique key (indexed).
pub const PROPERTY_UNIQ_KEY: &str = "UNIQ_KEY";

const PROP_KV_SEP: u8 = 0x01;
const PROP_PAIR_SEP: u8 = 0x02;

/// One message to append. Borrowed: the only copy of the payload the store
/// makes is into the mapped segment.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendMessage<'a> {
    /// Topic (1..=65535 bytes UTF-8).
    pub topic: &'a str,
    /// Queue id within the topic.
    pub queue_id: u32,
    /// Body.
    pub body: &'a [u8],
    /// Encoded properties (see [`encode_properties`]).
    pub properties: &'a [u8],
    /// Tag hash stored in the consume queue (see [`tag_hash`]; 0 for none).
    pub tag_hash: i64,
    /// Message/system flags, stored verbatim.
    pub flags: u32,
    /// Producer-side timestamp (ms).
    pub born_timestamp_ms: u64,
    /// Producer address.
    pub born_host: Option<SocketAddr>,
    /// Broker address.
    pub store_host: Option<SocketAddr>,
    /// Redelivery count.
    pub reconsume_times: u32,
    /// Prepared-transaction commit log offset (0 for none).
    pub prepared_tx_offset: u64,
}

impl AppendMessage<'_> {
    /// Encoded record size.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.topic.len() + self.properties.len() + self.body.len()
    }
}

/// Decoded fixed header of a message record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Whole record size.
    pub total_size: u32,
    /// Stored CRC.
    pub crc: u32,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
    /// Commit log offset.
    pub physical_offset: u64,
    /// Flags.
    pub flags: u32,
    /// Reconsume times.
    pub reconsume_times: u32,
    /// Prepared-transaction offset.
    pub prepared_tx_offset: u64,
    /// Born timestamp (ms).
    pub born_timestamp_ms: u64,
    /// Store timestamp (ms).
    pub store_timestamp_ms: u64,
    /// Producer address.
    pub born_host: Option<SocketAddr>,
    /// Broker address.
    pub store_host: Option<SocketAddr>,
    /// Tag hash.
    pub tag_hash: i64,
    /// Topic length.
    pub topic_len: u16,
    /// Properties length.
    pub properties_len: u32,
    /// Body length.
    pub body_len: u32,
}

impl RecordHeader {
    /// Byte range of the topic inside the record.
    pub fn topic_range(&self) -> std::ops::Range<usize> {
        HEADER_LEN..HEADER_LEN + self.topic_len as usize
    }
    /// Byte range of the properties inside the record.
    pub fn properties_range(&self) -> std::ops::Range<usize> {
        let s = HEADER_LEN + self.topic_len as usize;
        s..s + self.properties_len as usize
    }
    /// Byte range of the body inside the record.
    pub fn body_range(&self) -> std::ops::Range<usize> {
        let s = HEADER_LEN + self.topic_len as usize + self.properties_len as usize;
        s..s + self.body_len as usize
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn put_host(b: &mut [u8], at: usize, h: Option<SocketAddr>) {
    let dst = &mut b[at..at + HOST_LEN];
    dst.fill(0);
    match h {
        None => {}
        Some(SocketAddr::V4(a)) => {
            dst[0] = 4;
            dst[1..5].copy_from_slice(&a.ip().octets());
            dst[17..19].copy_from_slice(&a.port().to_le_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            dst[0] = 6;
            dst[1..17].copy_from_slice(&a.ip().octets());
            dst[17..19].copy_from_slice(&a.port().to_le_bytes());
        }
    }
}

fn get_host(b: &[u8], at: usize) -> Option<SocketAddr> {
    let s = &b[at..at + HOST_LEN];
    let port = get_u16(s, 17);
    match s[0] {
        4 => Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(s[1], s[2], s[3], s[4])),
            port,
        )),
        6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&s[1..17]);
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => None,
    }
}

/// Checks the caller-controlled fields of a message before encoding.
pub(crate) fn validate(msg: &AppendMessage<'_>, max: usize) -> Result<usize> {
    if msg.topic.is_empty() || msg.topic.len() > u16::MAX as usize {
        return Err(Error::InvalidArgument(
            "topic must be 1..=65535 bytes".into(),
        ));
    }
    let size = msg.encoded_len();
    if size > max {
        return Err(Error::MessageTooLarge { size, max });
    }
    Ok(size)
}

/// Encodes `msg` into `buf` (exactly `msg.encoded_len()` bytes), then the CRC.
pub(crate) fn encode_into(
    buf: &mut [u8],
    msg: &AppendMessage<'_>,
    queue_offset: u64,
    physical_offset: u64,
    store_timestamp_ms: u64,
) {
    let total = buf.len();
    debug_assert_eq!(total, msg.encoded_len());
    put_u32(buf, 0, total as u32);
    put_u32(buf, 4, MSG_MAGIC);
    put_u32(buf, 12, msg.queue_id);
    put_u64(buf, 16, queue_offset);
    put_u64(buf, 24, physical_offset);
    put_u32(buf, 32, msg.flags);
    put_u32(buf, 36, msg.reconsume_times);
    put_u64(buf, 40, msg.prepared_tx_offset);
    put_u64(buf, 48, msg.born_timestamp_ms);
    put_u64(buf, 56, store_timestamp_ms);
    put_host(buf, 64, msg.born_host);
    put_host(buf, 83, msg.store_host);
    put_u64(buf, 102, msg.tag_hash as u64);
    put_u16(buf, 110, msg.topic.len() as u16);
    put_u32(buf, 112, msg.properties.len() as u32);
    put_u32(buf, 116, msg.body.len() as u32);
    let mut at = HEADER_LEN;
    buf[at..at + msg.topic.len()].copy_from_slice(msg.topic.as_bytes());
    at += msg.topic.len();
    buf[at..at + msg.properties.len()].copy_from_slice(msg.properties);
    at += msg.properties.len();
    buf[at..at + msg.body.len()].copy_from_slice(msg.body);
    let crc = crc32fast::hash(&buf[12..]);
    put_u32(buf, 8, crc);
}

/// Encodes a blank record header (8 bytes) for `remaining` bytes of padding.
pub(crate) fn blank_header(remaining: usize) -> [u8; BLANK_MIN] {
    let mut b = [0u8; BLANK_MIN];
    put_u32(&mut b, 0, remaining as u32);
    put_u32(&mut b, 4, BLANK_MAGIC);
    b
}

/// Parses the fixed header of a message record (no CRC check). `buf` starts
/// at the record; `None` if it is too short, not a message, or inconsistent.
pub fn parse_header(buf: &[u8]) -> Option<RecordHeader> {
    if buf.len() < HEADER_LEN || get_u32(buf, 4) != MSG_MAGIC {
        return None;
    }
    let h = RecordHeader {
        total_size: get_u32(buf, 0),
        crc: get_u32(buf, 8),
        queue_id: get_u32(buf, 12),
        queue_offset: get_u64(buf, 16),
        physical_offset: get_u64(buf, 24),
        flags: get_u32(buf, 32),
        reconsume_times: get_u32(buf, 36),
        prepared_tx_offset: get_u64(buf, 40),
        born_timestamp_ms: get_u64(buf, 48),
        store_timestamp_ms: get_u64(buf, 56),
        born_host: get_host(buf, 64),
        store_host: get_host(buf, 83),
        tag_hash: get_u64(buf, 102) as i64,
        topic_len: get_u16(buf, 110),
        properties_len: get_u32(buf, 112),
        body_len: get_u32(buf, 116),
    };
    let sum = HEADER_LEN as u64 + h.topic_len as u64 + h.properties_len as u64 + h.body_len as u64;
    if sum != h.total_size as u64 {
        return None;
    }
    Some(h)
}

/// What lies at a position of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// A whole message record with a valid CRC.
    Message(RecordHeader),
    /// A blank record: the rest of the segment (`size` bytes) is padding.
    Blank(u32),
    /// Zeroes: nothing was ever written here (end of data).
    End,
    /// Something that is not a valid record. `size_hint` is the size field if
    /// it is plausible.
    Invalid {
        /// Why.
        reason: &'static str,
        /// The stored size, if within bounds.
        size_hint: Option<u32>,
    },
}

/// Decodes what lies at the start of `buf` (which runs to the segment end).
pub fn scan(buf: &[u8], verify_crc: bool) -> Scan {
    if buf.len() < BLANK_MIN {
        return Scan::End;
    }
    let size = get_u32(buf, 0);
    let magic = get_u32(buf, 4);
    if size == 0 && magic == 0 {
        return Scan::End;
    }
    let plausible = (size as usize >= BLANK_MIN && size as usize <= buf.len()).then_some(size);
    match magic {
        BLANK_MAGIC => {
            if size as usize == buf.len() {
                Scan::Blank(size)
            } else {
                Scan::Invalid {
                    reason: "blank record does not reach segment end",
                    size_hint: plausible,
                }
            }
        }
        MSG_MAGIC => {
            if (size as usize) < HEADER_LEN || plausible.is_none() {
                return Scan::Invalid {
                    reason: "record size out of bounds",
                    size_hint: None,
                };
            }
            let rec = &buf[..size as usize];
            let Some(h) = parse_header(rec) else {
                return Scan::Invalid {
                    reason: "inconsistent record header",
                    size_hint: plausible,
                };
            };
            if verify_crc && crc32fast::hash(&rec[12..]) != h.crc {
                return Scan::Invalid {
                    reason: "CRC mismatch",
                    size_hint: plausible,
                };
            }
            Scan::Message(h)
        }
        _ => Scan::Invalid {
            reason: "bad magic",
            size_hint: plausible,
        },
    }
}

/// Encodes properties as `key\x01value\x02` pairs (RocketMQ's format).
/// Keys and values must not contain `\x01` or `\x02`.
pub fn encode_properties<'a, I>(pairs: I) -> Result<Vec<u8>>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = Vec::new();
    encode_properties_into(pairs, &mut out)?;
    Ok(out)
}

/// As [`encode_properties`], appending to `out` (left as it was on error).
/// Keys and values may be given as `&str` or as bytes (e.g. already
/// validated UTF-8 borrowed from a request).
pub fn encode_properties_into<I, K, V>(pairs: I, out: &mut Vec<u8>) -> Result<()>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let start = out.len();
    for (k, v) in pairs {
        let (k, v) = (k.as_ref(), v.as_ref());
        if k.is_empty() || has_separator(k) || has_separator(v) {
            out.truncate(start);
            return Err(Error::InvalidArgument(format!(
                "bad property {:?}",
                String::from_utf8_lossy(k)
            )));
        }
        out.extend_from_slice(k);
        out.push(PROP_KV_SEP);
        out.extend_from_slice(v);
        out.push(PROP_PAIR_SEP);
    }
    Ok(())
}

/// Whether `s` holds a property separator byte. No early exit, so the
/// loop vectorizes (keys and values are short).
fn has_separator(s: &[u8]) -> bool {
    const _: () = assert!(PROP_KV_SEP == 1 && PROP_PAIR_SEP == 2);
    s.iter()
        .fold(false, |seen, &b| seen | (b.wrapping_sub(1) < 2))
}

/// Iterates encoded properties; malformed or non-UTF-8 pairs are skipped.
pub fn properties_iter(bytes: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    properties_iter_bytes(bytes)
        .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
}

/// Iterates encoded properties as raw bytes (no UTF-8 check); pairs
/// without a key/value separator are skipped.
pub fn properties_iter_bytes(bytes: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    bytes.split(|b| *b == PROP_PAIR_SEP).filter_map(|pair| {
        let i = pair.iter().position(|b| *b == PROP_KV_SEP)?;
        Some((&pair[..i], &pair[i + 1..]))
    })
}

/// Looks up one property.
pub fn property<'a>(bytes: &'a [u8], key: &str) -> Option<&'a str> {
    properties_iter(bytes)
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Tag hash as RocketMQ computes it (Java `String.hashCode` of the tags,
/// widened to i64).
pub fn tag_hash(tags: &str) -> i64 {
    let mut h: i32 = 0;
    for u in tags.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(u as i32);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg<'a>(topic: &'a str, props: &'a [u8], body: &'a [u8]) -> AppendMessage<'a> {
        AppendMessage {
            topic,
            queue_id: 3,
            body,
            properties: props,
            tag_hash: -5,
            flags: 7,
            born_timestamp_ms: 11,
            born_host: Some("10.0.0.1:1234".parse().unwrap()),
            store_host: Some("[::1]:10911".parse().unwrap()),
            reconsume_times: 2,
            prepared_tx_offset: 99,
        }
    }

    #[test]
    fn roundtrip_and_crc() {
        let props = encode_properties([("KEYS", "a b"), ("TAGS", "t")]).unwrap();
        let m = msg("topic", &props, b"body!");
        let mut buf = vec![0u8; m.encoded_len() + 16];
        let n = m.encoded_len();
        encode_into(&mut buf[..n], &m, 42, 4096, 77);
        let Scan::Message(h) = scan(&buf, true) else {
            panic!()
        };
        assert_eq!(h.queue_offset, 42);
        assert_eq!(h.physical_offset, 4096);
        assert_eq!(h.store_timestamp_ms, 77);
        assert_eq!(h.born_host, m.born_host);
        assert_eq!(h.store_host, m.store_host);
        assert_eq!(&buf[h.topic_range()], b"topic");
        assert_eq!(&buf[h.body_range()], b"body!");
        assert_eq!(property(&buf[h.properties_range()], "KEYS"), Some("a b"));
        buf[n - 1] ^= 1;
        assert!(matches!(
            scan(&buf, true),
            Scan::Invalid {
                reason: "CRC mismatch",
                ..
            }
        ));
    }

    #[test]
    fn blank_and_end() {
        let mut buf = vec![0u8; 32];
        assert_eq!(scan(&buf, true), Scan::End);
        buf[..8].copy_from_slice(&blank_header(32));
        assert_eq!(scan(&buf, true), Scan::Blank(32));
        assert!(matches!(scan(&buf[..20], true), Scan::Invalid { .. }));
    }

    #[test]
    fn java_hash() {
        assert_eq!(tag_hash(""), 0);
        assert_eq!(tag_hash("TagA"), 2_598_919);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = scan(&data, true);
            let _ = parse_header(&data);
        }

        #[test]
        fn roundtrip(topic in "[a-z]{1,20}", body in proptest::collection::vec(any::<u8>(), 0..300),
                     q in any::<u32>(), off in any::<u64>()) {
            let m = AppendMessage { topic: &topic, queue_id: q, body: &body, ..Default::default() };
            let mut buf = vec![0u8; m.encoded_len()];
            encode_into(&mut buf, &m, off, 0, 1);
            let Scan::Message(h) = scan(&buf, true) else { panic!() };
            prop_assert_eq!(h.queue_id, q);
            prop_assert_eq!(h.queue_offset, off);
            prop_assert_eq!(&buf[h.body_range()], &body[..]);
        }
    }
}

//! Message ids: where a message is stored, as an uppercase hex string.
//!
//! Like RocketMQ's offset message id, the id is the store host followed by
//! the commit log offset, big-endian, hex-encoded:
//!
//! ```text
//! IPv4: ip (4 bytes) | port (4 bytes) | commit log offset (8 bytes) = 16 bytes = 32 hex chars
//! IPv6: ip (16 bytes)| port (4 bytes) | commit log offset (8 bytes) = 28 bytes = 56 hex chars
//! ```
//!
//! so a lookup by id goes straight to the broker and the record.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::error::Error;

/// A decoded message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// Address of the broker that stored the message.
    pub store_host: SocketAddr,
    /// Physical offset of the record in that broker's commit log.
    pub commit_log_offset: u64,
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Writes the ids of messages stored by one host (a batch reply holds
/// hundreds): the host part is hex-encoded once, each id then costs the
/// 16 hex digits of its offset.
#[derive(Debug, Clone, Copy)]
pub struct MessageIdEncoder {
    prefix: [u8; 40],
    prefix_len: usize,
}

impl MessageIdEncoder {
    /// An encoder for ids of `store_host`.
    pub fn new(store_host: SocketAddr) -> MessageIdEncoder {
        let mut raw = [0u8; 20];
        let n = match store_host.ip() {
            IpAddr::V4(ip) => {
                raw[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                raw[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        raw[n..n + 4].copy_from_slice(&u32::from(store_host.port()).to_be_bytes());
        let mut prefix = [0u8; 40];
        hex_into(&raw[..n + 4], &mut prefix);
        MessageIdEncoder {
            prefix,
            prefix_len: (n + 4) * 2,
        }
    }

    /// Appends the id of the message at `commit_log_offset` to `out`, as
    /// uppercase hex (ASCII only).
    #[inline]
    pub fn push(&self, commit_log_offset: u64, out: &mut Vec<u8>) {
        let mut off = [0u8; 16];
        hex_into(&commit_log_offset.to_be_bytes(), &mut off);
        out.extend_from_slice(&self.prefix[..self.prefix_len]);
        out.extend_from_slice(&off);
    }
}

/// Two uppercase hex digits per byte of `raw` into `hex`.
#[inline]
fn hex_into(raw: &[u8], hex: &mut [u8]) {
    for (pair, b) in hex.chunks_exact_mut(2).zip(raw) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xF)];
    }
}

impl MessageId {
    /// The id as uppercase hex (32 chars for IPv4, 56 for IPv6).
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(56);
        self.encode_into(&mut s);
        s
    }

    /// Appends the id as uppercase hex to `out`.
    pub fn encode_into(&self, out: &mut String) {
        let e = MessageIdEncoder::new(self.store_host);
        let n = e.prefix_len;
        let mut hex = [0u8; 56];
        hex[..n].copy_from_slice(&e.prefix[..n]);
        hex_into(&self.commit_log_offset.to_be_bytes(), &mut hex[n..n + 16]);
        // Only ASCII hex digits were written.
        out.push_str(std::str::from_utf8(&hex[..n + 16]).unwrap_or_default());
    }

    /// Parses an id; accepts upper- or lowercase hex.
    pub fn decode(id: &str) -> Result<MessageId, Error> {
        let bad = |reason| Error::BadMessageId {
            id: id.chars().take(64).collect(),
            reason,
        };
        let ip_len = match id.len() {
            32 => 4,
            56 => 16,
            _ => return Err(bad("length must be 32 (IPv4) or 56 (IPv6) hex chars")),
        };
        let mut raw = [0u8; 28];
        for (slot, pair) in raw.iter_mut().zip(id.as_bytes().chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or_else(|| bad("not hex"))?;
            let lo = hex_val(pair[1]).ok_or_else(|| bad("not hex"))?;
            *slot = (hi << 4) | lo;
        }
        let ip = if ip_len == 4 {
            IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&raw[..16]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        let port = u32::from_be_bytes([
            raw[ip_len],
            raw[ip_len + 1],
            raw[ip_len + 2],
            raw[ip_len + 3],
        ]);
        let port = u16::try_from(port).map_err(|_| bad("port out of range"))?;
        let mut off = [0u8; 8];
        off.copy_from_slice(&raw[ip_len + 4..ip_len + 12]);
        Ok(MessageId {
            store_host: SocketAddr::new(ip, port),
            commit_log_offset: u64::from_be_bytes(off),
        })
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for MessageId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        MessageId::decode(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoder_writes_the_documented_layout() {
        // Reference: the layout spelled with `format!`.
        let reference = |host: SocketAddr, off: u64| {
            let ip = match host.ip() {
                IpAddr::V4(ip) => format!("{:08X}", u32::from(ip)),
                IpAddr::V6(ip) => format!("{:032X}", u128::from(ip)),
            };
            format!("{ip}{:08X}{off:016X}", u32::from(host.port()))
        };
        for host in ["10.0.0.1:10911", "[2001:db8::7]:65535", "127.0.0.1:0"] {
            let host: SocketAddr = host.parse().unwrap();
            let e = MessageIdEncoder::new(host);
            let mut out = Vec::new();
            let mut want = String::new();
            for off in [0, 1, 0xDEAD_BEEF, u64::MAX] {
                e.push(off, &mut out);
                out.push(b',');
                let id = MessageId {
                    store_host: host,
                    commit_log_offset: off,
                };
                assert_eq!(id.encode(), reference(host, off));
                assert_eq!(MessageId::decode(&id.encode()).unwrap(), id);
                want.push_str(&reference(host, off));
                want.push(',');
            }
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn ipv4_layout() {
        let id = MessageId {
            store_host: "10.0.0.1:10911".parse().unwrap(),
            commit_log_offset: 0x1234,
        };
        // 0A000001 | 00002A9F | 0000000000001234
        assert_eq!(id.encode(), "0A00000100002A9F0000000000001234");
        let mut joined = String::from("x,");
        id.encode_into(&mut joined);
        assert_eq!(joined, "x,0A00000100002A9F0000000000001234");
        assert_eq!(MessageId::decode(&id.encode()).unwrap(), id);
        assert_eq!(
            "0a00000100002a9f0000000000001234"
                .parse::<MessageId>()
                .unwrap(),
            id
        );
    }

    #[test]
    fn ipv6_layout() {
        let id = MessageId {
            store_host: "[::1]:9876".parse().unwrap(),
            commit_log_offset: u64::MAX,
        };
        let s = id.encode();
        assert_eq!(s.len(), 56);
        assert_eq!(s.parse::<MessageId>().unwrap(), id);
    }

    #[test]
    fn bad_ids() {
        for s in [
            "",
            "0A",
            "ZZ00000100002A9F0000000000001234",
            "0A000001FFFFFFFF0000000000001234",
        ] {
            assert!(
                matches!(MessageId::decode(s), Err(Error::BadMessageId { .. })),
                "{s}"
            );
        }
        // Multi-byte UTF-8 of the right byte length must not panic.
        assert!(MessageId::decode("é0000000000000000000000000000000").is_err());
    }
}

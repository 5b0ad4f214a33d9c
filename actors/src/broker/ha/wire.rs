//! The HA link's byte format (plain codec, tested without sockets).
//!
//! All integers are big-endian. A slave sends **reports**, 12 bytes each:
//!
//! ```text
//! off size field
//!   0    4 magic   REPORT_MAGIC ("AMQR")
//!   4    8 offset  the slave's commit log end (what it has, in order)
//! ```
//!
//! The first report opens the transfer (where to start); every later one
//! acknowledges progress (what sync replication waits for). The master
//! sends **frames**:
//!
//! ```text
//! off size field
//!   0    4 magic   FRAME_MAGIC ("AMQD")
//!   4    1 kind    0 data, 1 heartbeat, 2 error, 3 config
//!   5    8 offset  data: commit log offset of byte 0 of the body;
//!                  otherwise the master's end
//!  13    4 length  body bytes that follow
//!  17    -  body   data: whole commit log records, byte for byte;
//!                  error: UTF-8 reason (the master closes afterwards);
//!                  config: a MessagePack `ConfigSnapshot` (topics,
//!                  subscription groups, consumer offsets)
//! ```
//!
//! Anything else (bad magic, unknown kind, a body over [`MAX_BODY`]) is a
//! [`WireError`]: the receiving side closes that connection only.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Magic of a slave's report.
pub const REPORT_MAGIC: u32 = 0x414D_5152;
/// Magic of a master's frame.
pub const FRAME_MAGIC: u32 = 0x414D_5144;
/// Length of a report.
pub const REPORT_LEN: usize = 12;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 17;
/// Largest frame body accepted (a chunk is whole records of one segment).
pub const MAX_BODY: usize = 64 << 20;

/// A malformed report or frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not our magic: not an HA peer.
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A body over [`MAX_BODY`].
    #[error("frame body of {0} bytes is too big")]
    TooBig(usize),
}

/// What a master sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Commit log bytes starting at `offset`.
    Data {
        /// Offset of the first byte.
        offset: u64,
        /// Whole records.
        body: Bytes,
    },
    /// Nothing new; the master's end.
    Heartbeat {
        /// The master's commit log end.
        master_offset: u64,
    },
    /// The master's configs (MessagePack [`super::config_sync::ConfigSnapshot`]).
    Config {
        /// The master's commit log end.
        master_offset: u64,
        /// The encoded snapshot.
        body: Bytes,
    },
    /// The master cannot serve this slave (too far behind, diverged).
    Error {
        /// The master's commit log end.
        master_offset: u64,
        /// Why.
        reason: String,
    },
}

impl Frame {
    /// Encodes the header (and an error's reason) into `out`; a data or
    /// config body is written after it by the caller (no copy).
    pub fn encode_header(&self, out: &mut BytesMut) {
        let (kind, offset, len) = match self {
            Frame::Data { offset, body } => (0u8, *offset, body.len()),
            Frame::Heartbeat { master_offset } => (1, *master_offset, 0),
            Frame::Config {
                master_offset,
                body,
            } => (3, *master_offset, body.len()),
            Frame::Error {
                master_offset,
                reason,
            } => (2, *master_offset, reason.len()),
        };
        out.reserve(FRAME_HEADER_LEN + len);
        out.put_u32(FRAME_MAGIC);
        out.put_u8(kind);
        out.put_u64(offset);
        out.put_u32(len as u32);
        if let Frame::Error { reason, .. } = self {
            out.put_slice(reason.as_bytes());
        }
    }

    /// Decodes one frame from the front of `buf`, if it is all there.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if buf.len() < FRAME_HEADER_LEN {
            // Check the magic early: garbage is refused at its first bytes.
            if buf.len() >= 4 {
                let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if magic != FRAME_MAGIC {
                    return Err(WireError::Magic(magic));
                }
            }
            return Ok(None);
        }
        let mut h = &buf[..FRAME_HEADER_LEN];
        let magic = h.get_u32();
        if magic != FRAME_MAGIC {
            return Err(WireError::Magic(magic));
        }
        let kind = h.get_u8();
        let offset = h.get_u64();
        let len = h.get_u32() as usize;
        if kind > 3 {
            return Err(WireError::Kind(kind));
        }
        if len > MAX_BODY {
            return Err(WireError::TooBig(len));
        }
        if buf.len() < FRAME_HEADER_LEN + len {
            buf.reserve(FRAME_HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(FRAME_HEADER_LEN);
        let body = buf.split_to(len).freeze();
        Ok(Some(match kind {
            0 => Frame::Data { offset, body },
            1 => Frame::Heartbeat {
                master_offset: offset,
            },
            3 => Frame::Config {
                master_offset: offset,
                body,
            },
            _ => Frame::Error {
                master_offset: offset,
                reason: String::from_utf8_lossy(&body).into_owned(),
            },
        }))
    }
}

/// Encodes a report of `offset`.
pub fn encode_report(offset: u64) -> [u8; REPORT_LEN] {
    let mut b = [0u8; REPORT_LEN];
    b[..4].copy_from_slice(&REPORT_MAGIC.to_be_bytes());
    b[4..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// Decodes the reports at the front of `buf`; returns the last offset
/// reported (reports only grow, the last one says it all).
pub fn decode_reports(buf: &mut BytesMut) -> Result<Option<u64>, WireError> {
    let mut last = None;
    while buf.len() >= 4 {
        let magic = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if magic != REPORT_MAGIC {
            return Err(WireError::Magic(magic));
        }
        if buf.len() < REPORT_LEN {
            break;
        }
        buf.advance(4);
        last = Some(buf.get_u64());
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let frames = [
            Frame::Data {
                offset: 4096,
                body: Bytes::from_static(b"records"),
            },
            Frame::Heartbeat { master_offset: 7 },
            Frame::Error {
                master_offset: 9,
                reason: "too far behind".into(),
            },
            Frame::Config {
                master_offset: 9,
                body: Bytes::from_static(b"\x80"),
            },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode_header(&mut wire);
            if let Frame::Data { body, .. } | Frame::Config { body, .. } = f {
                wire.extend_from_slice(body);
            }
        }
        // Fed one byte at a time: every frame comes out once, whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_is_refused_early() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(Frame::decode(&mut buf), Err(WireError::Magic(_))));
        let mut buf = BytesMut::from(&b"GET "[..]);
        assert!(decode_reports(&mut buf).is_err());
        let mut h = BytesMut::new();
        Frame::Heartbeat { master_offset: 1 }.encode_header(&mut h);
        h[4] = 9;
        assert_eq!(Frame::decode(&mut h), Err(WireError::Kind(9)));
        let mut h = BytesMut::new();
        Frame::Heartbeat { master_offset: 1 }.encode_header(&mut h);
        h[13..17].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(Frame::decode(&mut h), Err(WireError::TooBig(_))));
    }

    #[test]
    fn reports_give_the_last_offset() {
        let mut buf = BytesMut::new();
        assert_eq!(decode_reports(&mut buf), Ok(None));
        buf.extend_from_slice(&encode_report(5));
        buf.extend_from_slice(&encode_report(80));
        buf.extend_from_slice(&encode_report(90)[..6]);
        assert_eq!(decode_reports(&mut buf), Ok(Some(80)));
        assert_eq!(buf.len(), 6);
        buf.extend_from_slice(&encode_report(90)[6..]);
        assert_eq!(decode_reports(&mut buf), Ok(Some(90)));
    }
}

//! The common header every frame starts with, and the versioning rule.
//!
//! The header bytes of a frame are **two MessagePack maps back to back**:
//!
//! 1. the common [`Header`] map (this module): `code`, `id`, `flags`,
//!    `ver`, and `remark` on replies;
//! 2. the typed-fields map of the code (e.g.
//!    [`SendMessageRequest`](crate::request::SendMessageRequest)), kept
//!    undecoded in [`Frame::fields`](crate::Frame::fields) until the
//!    receiver, having looked at the code, asks for it.
//!
//! Both are maps keyed by field name (typed fields through `rmp_serde`'s
//! struct-map encoding, the common header by hand in the same format), so
//! fields can be added later: a decoder ignores keys it does not know and
//! new optional fields carry `#[serde(default)]`.
//!
//! # Versioning rule
//!
//! `ver` is `major << 16 | minor`. Adding an optional field or a new code
//! bumps the minor version and needs nothing from old peers. Anything an old
//! peer would misread (changing a field's meaning or type, the frame
//! layout) bumps the major version. A peer refuses a frame whose major
//! version it does not know with
//! [`VERSION_NOT_SUPPORTED`](crate::ResponseCode::VersionNotSupported) and
//! closes the connection; it accepts any minor version of a known major.

use bytes::BytesMut;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mpack::{self, Reader};

/// Major and minor protocol version (`ver` on the wire: `major << 16 | minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

/// The version this build speaks: 1.0.
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 0 };

impl Version {
    /// Whether a peer of this build accepts frames of version `self`.
    pub fn is_supported(self) -> bool {
        self.major == PROTOCOL_VERSION.major
    }
}

impl From<u32> for Version {
    fn from(v: u32) -> Self {
        Version {
            major: (v >> 16) as u16,
            minor: (v & 0xFFFF) as u16,
        }
    }
}

impl From<Version> for u32 {
    fn from(v: Version) -> u32 {
        (u32::from(v.major) << 16) | u32::from(v.minor)
    }
}

/// Frame flags (`flags` on the wire, a `u32` bit set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flags(pub u32);

impl Flags {
    /// Bit 0: the frame is a reply; `code` is a response code.
    pub const RESPONSE: Flags = Flags(1);
    /// Bit 1: a request that expects no reply.
    pub const ONEWAY: Flags = Flags(2);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set.
    #[must_use]
    pub fn with(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

/// The common header map, first MessagePack value of the header bytes.
///
/// Keys: `code` (uint, required), `id` (uint, required), `flags` (uint,
/// absent = 0), `ver` (uint, required), `remark` (str, absent = none).
/// Encoded and decoded by hand (it is on every frame), with the same map
/// rules as the typed fields: unknown keys skipped, nil = absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// A [`RequestCode`](crate::RequestCode) on requests, a
    /// [`ResponseCode`](crate::ResponseCode) on replies (see `flags`).
    pub code: u32,
    /// Opaque id chosen by the requester; a reply carries its request's id.
    /// Many requests may be in flight on one connection.
    pub request_id: u64,
    /// [`Flags::RESPONSE`], [`Flags::ONEWAY`]. Absent means none.
    pub flags: Flags,
    /// Protocol version of the sender.
    pub version: Version,
    /// Human-readable detail on replies (usually on errors).
    pub remark: Option<String>,
}

impl Header {
    /// A request header for `code`.
    pub fn request(code: u32, request_id: u64) -> Header {
        Header {
            code,
            request_id,
            flags: Flags::default(),
            version: PROTOCOL_VERSION,
            remark: None,
        }
    }

    /// A reply header carrying response code `code`.
    pub fn response(code: u32, request_id: u64) -> Header {
        Header {
            flags: Flags::RESPONSE,
            ..Header::request(code, request_id)
        }
    }

    /// Whether this is a reply.
    pub fn is_response(&self) -> bool {
        self.flags.contains(Flags::RESPONSE)
    }

    /// Whether this is a request that expects no reply.
    pub fn is_oneway(&self) -> bool {
        self.flags.contains(Flags::ONEWAY)
    }

    /// Decodes the common map at the start of `bytes`; returns it and the
    /// number of bytes it took (the typed-fields map starts there).
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Header, usize)> {
        let mut r = Reader::new(bytes);
        let (mut code, mut id, mut ver) = (None, None, None);
        let (mut flags, mut remark) = (0u32, None);
        for _ in 0..r.map_len("header")? {
            let key = r.str("header key")?;
            if r.nil() {
                continue;
            }
            match key {
                "code" => code = Some(r.uint_as::<u32>(key)?),
                "id" => id = Some(r.uint(key)?),
                "flags" => flags = r.uint_as(key)?,
                "ver" => ver = Some(r.uint_as::<u32>(key)?),
                "remark" => remark = Some(r.str(key)?.to_owned()),
                _ => r.skip()?,
            }
        }
        let missing = |f: &str| Error::MissingField(f.to_string());
        let header = Header {
            code: code.ok_or_else(|| missing("code"))?,
            request_id: id.ok_or_else(|| missing("id"))?,
            flags: Flags(flags),
            version: Version::from(ver.ok_or_else(|| missing("ver"))?),
            remark,
        };
        Ok((header, bytes.len() - r.remaining()))
    }

    /// Appends the MessagePack map of this header to `dst`.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        let n = 3 + usize::from(self.flags.0 != 0) + usize::from(self.remark.is_some());
        mpack::put_map_len(dst, n);
        mpack::put_str(dst, "code");
        mpack::put_uint(dst, u64::from(self.code));
        mpack::put_str(dst, "id");
        mpack::put_uint(dst, self.request_id);
        if self.flags.0 != 0 {
            mpack::put_str(dst, "flags");
            mpack::put_uint(dst, u64::from(self.flags.0));
        }
        mpack::put_str(dst, "ver");
        mpack::put_uint(dst, u64::from(u32::from(self.version)));
        if let Some(remark) = &self.remark {
            mpack::put_str(dst, "remark");
            mpack::put_str(dst, remark);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_packs_major_minor() {
        let v = Version { major: 2, minor: 7 };
        assert_eq!(u32::from(v), 0x0002_0007);
        assert_eq!(Version::from(0x0002_0007), v);
        assert!(PROTOCOL_VERSION.is_supported());
        assert!(!v.is_supported());
        assert!(
            Version {
                major: 1,
                minor: 99
            }
            .is_supported()
        );
    }

    #[test]
    fn header_prefix_reports_length_and_ignores_unknown_keys() {
        let mut buf = BytesMut::new();
        Header::response(17, 5).encode_into(&mut buf);
        let n = buf.len();
        buf.extend_from_slice(&[0x80]); // an empty typed-fields map follows
        let (h, used) = Header::decode_prefix(&buf).unwrap();
        assert_eq!(used, n);
        assert!(h.is_response() && !h.is_oneway());
        assert_eq!((h.code, h.request_id), (17, 5));

        // A newer peer's extra key is ignored.
        #[derive(Serialize)]
        struct Newer {
            code: u32,
            id: u64,
            ver: u32,
            shiny: &'static str,
        }
        let bytes = rmp_serde::to_vec_named(&Newer {
            code: 10,
            id: 1,
            ver: 0x0001_0003,
            shiny: "new",
        })
        .unwrap();
        let (h, _) = Header::decode_prefix(&bytes).unwrap();
        assert_eq!(h.version, Version { major: 1, minor: 3 });
    }

    #[test]
    fn missing_version_is_missing_field() {
        let bytes = rmp_serde::to_vec_named(&std::collections::BTreeMap::from([
            ("code", 1u32),
            ("id", 1),
        ]))
        .unwrap();
        assert_eq!(
            Header::decode_prefix(&bytes),
            Err(Error::MissingField("ver".into()))
        );
    }
}

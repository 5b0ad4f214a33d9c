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
//! Both are maps keyed by field name (`rmp_serde` struct-map encoding), so
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

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// A [`RequestCode`](crate::RequestCode) on requests, a
    /// [`ResponseCode`](crate::ResponseCode) on replies (see `flags`).
    pub code: u32,
    /// Opaque id chosen by the requester; a reply carries its request's id.
    /// Many requests may be in flight on one connection.
    #[serde(rename = "id")]
    pub request_id: u64,
    /// [`Flags::RESPONSE`], [`Flags::ONEWAY`]. Absent means none.
    #[serde(default, skip_serializing_if = "is_zero_flags")]
    pub flags: Flags,
    /// Protocol version of the sender.
    #[serde(rename = "ver")]
    pub version: Version,
    /// Human-readable detail on replies (usually on errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

fn is_zero_flags(f: &Flags) -> bool {
    f.0 == 0
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
        let mut cursor = std::io::Cursor::new(bytes);
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        let header = Header::deserialize(&mut de)?;
        let used = usize::try_from(cursor.position())
            .map_err(|_| Error::BadMsgPack("header position overflow".into()))?;
        Ok((header, used))
    }

    /// Appends the MessagePack map of this header to `out`.
    pub fn encode_into(&self, out: &mut impl std::io::Write) -> Result<()> {
        rmp_serde::encode::write_named(out, self)?;
        Ok(())
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
        let mut buf = Vec::new();
        Header::response(17, 5).encode_into(&mut buf).unwrap();
        let n = buf.len();
        buf.push(0x80); // an empty typed-fields map follows
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

//! Every way bytes from a peer can be wrong, and the response code each one
//! turns into.
//!
//! Decoding never panics: every malformed input ends up as one of these
//! variants. A server answers with [`Error::response_code`] (and the error
//! text as remark) where it still knows the request id, then closes the
//! connection if the error came from the frame codec.

use crate::code::ResponseCode;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A malformed frame, header, field, message, batch or message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The frame length field is below 4, so it cannot even hold the
    /// header length field.
    #[error("frame too short: frame length {frame_len} < 4")]
    FrameTooShort {
        /// The frame length read from the wire.
        frame_len: u32,
    },
    /// The frame length is over the codec's cap.
    #[error("frame too large: {frame_len} bytes > cap {max}")]
    FrameTooLarge {
        /// The frame length read from the wire (or about to be written).
        frame_len: u64,
        /// The configured cap.
        max: u32,
    },
    /// The header length does not fit in the frame.
    #[error("header length {header_len} exceeds frame length {frame_len} - 4")]
    HeaderTooLong {
        /// The header length read from the wire.
        header_len: u32,
        /// The frame length read from the wire.
        frame_len: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("truncated frame: stream ended after {received} of {expected} bytes")]
    TruncatedFrame {
        /// Bytes the frame needs (its length prefix included), or the 4
        /// bytes of the length prefix when even that was cut.
        expected: u64,
        /// Bytes received before the end of the stream.
        received: u64,
    },
    /// Bytes that are not the MessagePack we expected (truncated value,
    /// trailing bytes, nesting too deep, integer out of range, ...).
    #[error("bad MessagePack: {0}")]
    BadMsgPack(String),
    /// A required field is absent from a map.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// A field holds a value of the wrong MessagePack type.
    #[error("wrong type: {0}")]
    WrongType(String),
    /// A string (for instance a topic) is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// The header carries a request code this build does not know.
    #[error("unknown request code {0}")]
    UnknownRequestCode(u32),
    /// The header carries a response code this build does not know.
    #[error("unknown response code {0}")]
    UnknownResponseCode(u32),
    /// The typed fields were asked for with a type of another request code.
    #[error("request code mismatch: expected {expected}, frame has {actual}")]
    CodeMismatch {
        /// Code of the type the caller asked for.
        expected: u32,
        /// Code in the frame.
        actual: u32,
    },
    /// The peer speaks a protocol major version we do not know.
    #[error("protocol version {major}.x not supported (request {request_id})")]
    UnsupportedVersion {
        /// The peer's major version.
        major: u16,
        /// The request id of the refused frame, so it can be answered.
        request_id: u64,
    },
    /// A topic name breaks the naming rules (see [`crate::validate`]).
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// The offending name.
        topic: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A message (body + properties) or batch is over the size limit.
    #[error("message too large: {size} bytes > max {max}")]
    MessageTooLarge {
        /// Size of the message or batch.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A message breaks a rule other than size or topic (e.g. a batch that
    /// mixes topics or carries a delay).
    #[error("illegal message: {0}")]
    InvalidMessage(&'static str),
    /// An entry of a batch body is malformed.
    #[error("bad batch entry {index}: {reason}")]
    BadBatchEntry {
        /// Zero-based entry index.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A message id string cannot be decoded.
    #[error("bad message id {id:?}: {reason}")]
    BadMessageId {
        /// The id as received (truncated to 64 chars).
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value could not be encoded (only possible with a hand-written
    /// `Serialize` that fails).
    #[error("encode failed: {0}")]
    Encode(String),
    /// An I/O error of the transport under [`FrameCodec`](crate::FrameCodec)
    /// (tokio-util's `Framed` requires the conversion; this crate does no
    /// I/O itself).
    #[error("transport I/O error ({kind:?}): {message}")]
    Io {
        /// The I/O error kind.
        kind: std::io::ErrorKind,
        /// Its text.
        message: String,
    },
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl Error {
    /// The response code a server replies with for this error.
    ///
    /// | error | response code |
    /// |---|---|
    /// | `FrameTooShort`, `FrameTooLarge`, `HeaderTooLong`, `TruncatedFrame` | `MALFORMED_FRAME` (10000) |
    /// | `BadMsgPack`, `MissingField`, `WrongType`, `InvalidUtf8`, `CodeMismatch`, `BadBatchEntry`, `BadMessageId`, `InvalidTopic` | `INVALID_PARAMETER` (29) |
    /// | `UnknownRequestCode` | `REQUEST_CODE_NOT_SUPPORTED` (3) |
    /// | `UnsupportedVersion` | `VERSION_NOT_SUPPORTED` (15) |
    /// | `MessageTooLarge`, `InvalidMessage` | `MESSAGE_ILLEGAL` (13) |
    /// | `UnknownResponseCode`, `Encode`, `Io` | `SYSTEM_ERROR` (1) |
    pub fn response_code(&self) -> ResponseCode {
        match self {
            Error::FrameTooShort { .. }
            | Error::FrameTooLarge { .. }
            | Error::HeaderTooLong { .. }
            | Error::TruncatedFrame { .. } => ResponseCode::MalformedFrame,
            Error::BadMsgPack(_)
            | Error::MissingField(_)
            | Error::WrongType(_)
            | Error::InvalidUtf8
            | Error::CodeMismatch { .. }
            | Error::BadBatchEntry { .. }
            | Error::BadMessageId { .. }
            | Error::InvalidTopic { .. } => ResponseCode::InvalidParameter,
            Error::UnknownRequestCode(_) => ResponseCode::RequestCodeNotSupported,
            Error::UnsupportedVersion { .. } => ResponseCode::VersionNotSupported,
            Error::MessageTooLarge { .. } | Error::InvalidMessage(_) => {
                ResponseCode::MessageIllegal
            }
            Error::UnknownResponseCode(_) | Error::Encode(_) | Error::Io { .. } => {
                ResponseCode::SystemError
            }
        }
    }

    /// The request id of the offending frame, when the error knows it.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Error::UnsupportedVersion { request_id, .. } => Some(*request_id),
            _ => None,
        }
    }
}

impl From<rmp_serde::decode::Error> for Error {
    fn from(e: rmp_serde::decode::Error) -> Self {
        use rmp_serde::decode::Error as D;
        match e {
            D::Utf8Error(_) => Error::InvalidUtf8,
            D::TypeMismatch(m) => Error::WrongType(format!("unexpected marker {m:?}")),
            D::Syntax(msg) | D::Uncategorized(msg) => classify_serde_message(msg),
            other => Error::BadMsgPack(other.to_string()),
        }
    }
}

impl From<rmp_serde::encode::Error> for Error {
    fn from(e: rmp_serde::encode::Error) -> Self {
        Error::Encode(e.to_string())
    }
}

/// serde reports missing fields and type errors as text; sort them into
/// variants the caller can act on.
fn classify_serde_message(msg: String) -> Error {
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        Error::MissingField(field.to_string())
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        Error::WrongType(msg)
    } else if msg == "InvalidUtf8" {
        Error::InvalidUtf8
    } else {
        Error::BadMsgPack(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_are_classified() {
        assert_eq!(
            classify_serde_message("missing field `topic`".into()),
            Error::MissingField("topic".into())
        );
        assert!(matches!(
            classify_serde_message("invalid type: string \"x\", expected u32".into()),
            Error::WrongType(_)
        ));
        assert!(matches!(
            classify_serde_message("other".into()),
            Error::BadMsgPack(_)
        ));
    }

    #[test]
    fn response_codes() {
        assert_eq!(
            Error::UnknownRequestCode(9).response_code(),
            ResponseCode::RequestCodeNotSupported
        );
        let v = Error::UnsupportedVersion {
            major: 9,
            request_id: 7,
        };
        assert_eq!(v.response_code(), ResponseCode::VersionNotSupported);
        assert_eq!(v.request_id(), Some(7));
        assert_eq!(
            Error::FrameTooShort { frame_len: 0 }.response_code(),
            ResponseCode::MalformedFrame
        );
        assert_eq!(
            Error::TruncatedFrame {
                expected: 10,
                received: 3
            }
            .response_code(),
            ResponseCode::MalformedFrame
        );
    }
}

//! [`Frame`]: one decoded request or reply, and the typed conversions to
//! and from it, so actors and clients never touch raw maps.
//!
//! ```
//! use actormq_protocol::{Frame, ResponseCode, request::{GetMaxOffsetRequest, OffsetResponse}};
//! use bytes::Bytes;
//!
//! let req = GetMaxOffsetRequest { topic: "orders".into(), queue_id: 3 };
//! let frame = Frame::request(42, &req, Bytes::new())?;
//! // ... on the server, after FrameCodec decoded it:
//! let got: GetMaxOffsetRequest = frame.decode_request()?;
//! let reply = Frame::success(frame.header.request_id, &OffsetResponse { offset: 99 }, Bytes::new())?;
//! assert_eq!(reply.response_code()?, ResponseCode::Success);
//! assert_eq!(reply.decode_fields::<OffsetResponse>()?.offset, 99);
//! # assert_eq!(got, req);
//! # Ok::<(), actormq_protocol::Error>(())
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::code::{RequestCode, ResponseCode};
use crate::error::{Error, Result};
use crate::header::{Flags, Header};
use crate::request::Request;

/// MessagePack of an empty map: the typed fields of a code that has none.
pub const EMPTY_FIELDS: &[u8] = &[0x80];

/// One request or reply.
///
/// `fields` is the undecoded typed-fields map (second MessagePack value of
/// the header bytes); `body` is the raw body. After decoding, both are
/// zero-copy slices of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The common header.
    pub header: Header,
    /// MessagePack map of the code's typed fields (may be empty = `{}`).
    pub fields: Bytes,
    /// Raw body (a message body or a batch; never MessagePack-encoded).
    pub body: Bytes,
}

/// Builds a request frame for `req` (same as [`Frame::request`]).
pub fn to_frame<R: Request>(request_id: u64, req: &R, body: Bytes) -> Result<Frame> {
    Frame::request(request_id, req, body)
}

fn encode_fields<T: Serialize + ?Sized>(fields: &T) -> Result<Bytes> {
    // Sized for typical fields so the Vec does not regrow while encoding.
    let mut out = Vec::with_capacity(128);
    rmp_serde::encode::write_named(&mut out, fields)?;
    // An exact-size boxed slice becomes a `Bytes` without a second
    // allocation for the shared header.
    Ok(Bytes::from(out.into_boxed_slice()))
}

impl Frame {
    /// A request frame: code `R::CODE`, typed fields `req`, raw `body`.
    pub fn request<R: Request>(request_id: u64, req: &R, body: Bytes) -> Result<Frame> {
        Ok(Frame {
            header: Header::request(R::CODE.as_u32(), request_id),
            fields: encode_fields(req)?,
            body,
        })
    }

    /// Like [`Frame::request`] with the oneway flag: no reply is sent.
    pub fn oneway<R: Request>(request_id: u64, req: &R, body: Bytes) -> Result<Frame> {
        let mut f = Frame::request(request_id, req, body)?;
        f.header.flags = f.header.flags.with(Flags::ONEWAY);
        Ok(f)
    }

    /// A reply with response code `code` and typed fields `fields`.
    pub fn response<T: Serialize + ?Sized>(
        request_id: u64,
        code: ResponseCode,
        fields: &T,
        body: Bytes,
    ) -> Result<Frame> {
        Ok(Frame {
            header: Header::response(code.as_u32(), request_id),
            fields: encode_fields(fields)?,
            body,
        })
    }

    /// A `SUCCESS` reply.
    pub fn success<T: Serialize + ?Sized>(
        request_id: u64,
        fields: &T,
        body: Bytes,
    ) -> Result<Frame> {
        Frame::response(request_id, ResponseCode::Success, fields, body)
    }

    /// A reply without typed fields or body, with `remark` (for errors).
    pub fn error(request_id: u64, code: ResponseCode, remark: impl Into<String>) -> Frame {
        let mut header = Header::response(code.as_u32(), request_id);
        header.remark = Some(remark.into());
        Frame {
            header,
            fields: Bytes::from_static(EMPTY_FIELDS),
            body: Bytes::new(),
        }
    }

    /// The reply a server sends for a decode error: the error's response
    /// code, its text as remark.
    pub fn from_error(request_id: u64, err: &Error) -> Frame {
        Frame::error(request_id, err.response_code(), err.to_string())
    }

    /// Sets the remark.
    #[must_use]
    pub fn with_remark(mut self, remark: impl Into<String>) -> Frame {
        self.header.remark = Some(remark.into());
        self
    }

    /// Whether this is a reply.
    pub fn is_response(&self) -> bool {
        self.header.is_response()
    }

    /// Whether this is a oneway request.
    pub fn is_oneway(&self) -> bool {
        self.header.is_oneway()
    }

    /// The request code (meaningful on requests).
    pub fn request_code(&self) -> Result<RequestCode> {
        RequestCode::try_from(self.header.code)
    }

    /// The response code (meaningful on replies).
    pub fn response_code(&self) -> Result<ResponseCode> {
        ResponseCode::try_from(self.header.code)
    }

    /// Decodes the typed fields as `T`. Unknown keys are ignored; bytes
    /// after the map are an error.
    pub fn decode_fields<T: DeserializeOwned>(&self) -> Result<T> {
        let bytes: &[u8] = if self.fields.is_empty() {
            EMPTY_FIELDS
        } else {
            &self.fields
        };
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        let value = T::deserialize(&mut de)?;
        // Trailing bytes: reading one more value must hit the end of input.
        match serde::de::IgnoredAny::deserialize(&mut de) {
            Err(rmp_serde::decode::Error::InvalidMarkerRead(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Ok(value)
            }
            _ => Err(Error::BadMsgPack(
                "trailing bytes after typed fields".into(),
            )),
        }
    }

    /// Decodes the typed fields of a request of type `R`, after checking the
    /// frame's code is `R::CODE`.
    pub fn decode_request<R: Request>(&self) -> Result<R> {
        if self.header.code != R::CODE.as_u32() {
            return Err(Error::CodeMismatch {
                expected: R::CODE.as_u32(),
                actual: self.header.code,
            });
        }
        self.decode_fields()
    }

    /// Number of bytes this frame takes on the wire (length prefix included).
    pub fn encoded_len(&self) -> Result<usize> {
        let mut head = BytesMut::new();
        self.encode_head(&mut head, u32::MAX)?;
        Ok(head.len() + self.body.len())
    }

    /// Writes everything but the body: the two length fields, the common
    /// header map and the typed fields. The caller then writes `self.body`
    /// (e.g. as a second buffer of a vectored write, so a large body is
    /// not copied). `max_frame` is the cap on the frame length.
    pub fn encode_head(&self, dst: &mut BytesMut, max_frame: u32) -> Result<()> {
        let start = dst.len();
        dst.reserve(8 + 48 + self.fields.len());
        dst.put_u64(0); // frame length + header length, patched below
        self.header.encode_into(dst);
        dst.extend_from_slice(if self.fields.is_empty() {
            EMPTY_FIELDS
        } else {
            &self.fields
        });
        let header_len = (dst.len() - start - 8) as u64;
        let frame_len = 4 + header_len + self.body.len() as u64;
        if frame_len > u64::from(max_frame) {
            dst.truncate(start);
            return Err(Error::FrameTooLarge {
                frame_len,
                max: max_frame,
            });
        }
        // Both fit in u32: frame_len <= max_frame <= u32::MAX.
        let prefix = &mut dst[start..start + 8];
        prefix[..4].copy_from_slice(&(frame_len as u32).to_be_bytes());
        prefix[4..].copy_from_slice(&(header_len as u32).to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{GetMaxOffsetRequest, QueryConsumerOffsetRequest};

    #[test]
    fn decode_request_checks_code() {
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 1,
        };
        let f = Frame::request(1, &req, Bytes::new()).unwrap();
        assert_eq!(f.decode_request::<GetMaxOffsetRequest>().unwrap(), req);
        assert_eq!(
            f.decode_request::<QueryConsumerOffsetRequest>(),
            Err(Error::CodeMismatch {
                expected: 14,
                actual: 30
            })
        );
    }

    #[test]
    fn error_reply_carries_code_and_remark() {
        let f = Frame::from_error(9, &Error::UnknownRequestCode(77));
        assert!(f.is_response());
        assert_eq!(
            f.response_code().unwrap(),
            ResponseCode::RequestCodeNotSupported
        );
        assert_eq!(f.header.remark.as_deref(), Some("unknown request code 77"));
        assert_eq!(f.header.request_id, 9);
    }

    #[test]
    fn oneway_sets_flag() {
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 1,
        };
        assert!(Frame::oneway(1, &req, Bytes::new()).unwrap().is_oneway());
        assert!(!Frame::request(1, &req, Bytes::new()).unwrap().is_oneway());
    }

    #[test]
    fn trailing_bytes_in_fields_are_rejected() {
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 1,
        };
        let mut f = Frame::request(1, &req, Bytes::new()).unwrap();
        let mut v = f.fields.to_vec();
        v.push(0xc0);
        f.fields = v.into();
        assert!(matches!(
            f.decode_fields::<GetMaxOffsetRequest>(),
            Err(Error::BadMsgPack(_))
        ));
    }
}

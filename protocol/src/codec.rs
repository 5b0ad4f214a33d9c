//! [`FrameCodec`]: the tokio-util `Decoder`/`Encoder` for [`Frame`]s.
//!
//! The codec only cuts frames and decodes the common header (checking the
//! protocol major version); typed fields stay undecoded until asked for.
//! Incomplete input returns `Ok(None)` after reserving room for the rest of
//! the frame, or at most [`FrameCodec::with_reserve_ahead`] bytes of it (a
//! server facing untrusted peers: a peer that announces a 16 MiB frame and
//! sends its first bytes must not pin 16 MiB). Any error is fatal for the connection: the stream cannot be
//! resynchronised after a bad length.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{Error, Result};
use crate::frame::Frame;
use crate::header::Header;

/// Default cap on the frame length: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Frames a byte stream; see the crate docs for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCodec {
    max_frame_len: u32,
    reserve_ahead: usize,
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            reserve_ahead: usize::MAX,
        }
    }
}

impl FrameCodec {
    /// A codec with the default 16 MiB cap.
    pub fn new() -> FrameCodec {
        FrameCodec::default()
    }

    /// A codec refusing frames whose frame length (bytes after the first
    /// four) exceeds `max_frame_len`, in both directions.
    pub fn with_max_frame_len(max_frame_len: u32) -> FrameCodec {
        FrameCodec {
            max_frame_len,
            ..FrameCodec::default()
        }
    }

    /// While a frame is incomplete, reserve at most `bytes` beyond what has
    /// arrived instead of the whole announced frame: the read buffer then
    /// grows with the bytes a peer actually sends. Default: the whole frame.
    pub fn with_reserve_ahead(mut self, bytes: usize) -> FrameCodec {
        self.reserve_ahead = bytes.max(1);
        self
    }

    /// The cap on the frame length.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }
}

fn be_u32(src: &[u8], at: usize) -> Option<u32> {
    let b = src.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        let Some(frame_len) = be_u32(src, 0) else {
            src.reserve(8);
            return Ok(None);
        };
        if frame_len < 4 {
            return Err(Error::FrameTooShort { frame_len });
        }
        if frame_len > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                frame_len: u64::from(frame_len),
                max: self.max_frame_len,
            });
        }
        let total = 4usize.saturating_add(frame_len as usize);
        if src.len() < total {
            src.reserve((total - src.len()).min(self.reserve_ahead));
            return Ok(None);
        }
        let header_len = be_u32(src, 4).unwrap_or_default();
        if header_len > frame_len - 4 {
            src.advance(total);
            return Err(Error::HeaderTooLong {
                header_len,
                frame_len,
            });
        }
        let mut frame = src.split_to(total);
        frame.advance(8);
        let mut header_bytes = frame.split_to(header_len as usize).freeze();
        let body = frame.freeze();
        let (header, used) = Header::decode_prefix(&header_bytes)?;
        if !header.version.is_supported() {
            return Err(Error::UnsupportedVersion {
                major: header.version.major,
                request_id: header.request_id,
            });
        }
        header_bytes.advance(used);
        Ok(Some(Frame {
            header,
            fields: header_bytes,
            body,
        }))
    }

    /// At the end of the stream: leftover bytes are a frame cut short, a
    /// typed [`Error::TruncatedFrame`] (`MALFORMED_FRAME`), not the I/O
    /// error tokio-util's default gives.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if src.is_empty() {
            return Ok(None);
        }
        let received = src.len() as u64;
        let expected = be_u32(src, 0).map_or(4, |len| 4 + u64::from(len));
        src.clear();
        Err(Error::TruncatedFrame { expected, received })
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<()> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<()> {
        frame.encode_head(dst, self.max_frame_len)?;
        dst.extend_from_slice(&frame.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::GetMaxOffsetRequest;
    use bytes::Bytes;

    fn sample() -> Frame {
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 2,
        };
        Frame::request(7, &req, Bytes::from_static(b"body")).unwrap()
    }

    #[test]
    fn round_trip_and_partial_input() {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec.encode(&sample(), &mut wire).unwrap();
        codec.encode(sample(), &mut wire).unwrap();
        let one = wire.len() / 2;
        let mut src = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            src.extend_from_slice(&[*b]);
            let got = codec.decode(&mut src).unwrap();
            assert_eq!(
                got.is_some(),
                i + 1 == one || i + 1 == 2 * one,
                "at byte {i}"
            );
            if let Some(f) = got {
                assert_eq!(f, sample());
            }
        }
        assert!(src.is_empty());
    }

    #[test]
    fn incomplete_input_reserves_the_rest() {
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::new();
        assert_eq!(codec.decode(&mut src), Ok(None));
        src.extend_from_slice(&[0, 0, 0x10, 0]); // frame length 4096
        assert_eq!(codec.decode(&mut src), Ok(None));
        assert!(src.capacity() >= 4 + 4096);
        assert_eq!(src.len(), 4, "nothing consumed");
    }

    #[test]
    fn truncated_input_at_eof_is_a_malformed_frame() {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        codec.encode(&sample(), &mut wire).unwrap();
        let whole = wire.len() as u64;
        // A whole frame, then the end: the frame, then nothing.
        let mut src = wire.clone();
        assert_eq!(codec.decode_eof(&mut src), Ok(Some(sample())));
        assert_eq!(codec.decode_eof(&mut src), Ok(None));
        // Cut one byte short, and inside the length prefix.
        for cut in [wire.len() - 1, 2] {
            let mut src = BytesMut::from(&wire[..cut]);
            let err = codec.decode_eof(&mut src).unwrap_err();
            let expected = if cut < 4 { 4 } else { whole };
            assert_eq!(
                err,
                Error::TruncatedFrame {
                    expected,
                    received: cut as u64
                }
            );
            assert_eq!(err.response_code(), crate::ResponseCode::MalformedFrame);
        }
    }

    #[test]
    fn body_is_zero_copy() {
        let mut codec = FrameCodec::new();
        let mut src = BytesMut::new();
        codec.encode(&sample(), &mut src).unwrap();
        let range = src.as_ptr_range();
        let f = codec.decode(&mut src).unwrap().unwrap();
        assert!(range.contains(&f.body.as_ptr()));
        assert!(range.contains(&f.fields.as_ptr()));
    }

    #[test]
    fn cap_applies_both_ways() {
        let mut small = FrameCodec::with_max_frame_len(10);
        let mut dst = BytesMut::new();
        assert!(matches!(
            small.encode(&sample(), &mut dst),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(dst.is_empty());
        let mut src = BytesMut::from(&[0, 0, 0, 11, 0, 0, 0, 0][..]);
        assert_eq!(
            small.decode(&mut src),
            Err(Error::FrameTooLarge {
                frame_len: 11,
                max: 10
            })
        );
    }
}

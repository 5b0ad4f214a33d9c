//! [`Outbox`]: encoded frames waiting to be written, flushed with
//! vectored writes.
//!
//! Every frame pushed in one poll of a connection is encoded into one
//! `BytesMut` (heads and small bodies copied in); a body of
//! [`COPY_MAX`] bytes or more is queued as its own `Bytes` chunk instead
//! (no copy). A flush hands up to [`MAX_IOVECS`] chunks to one
//! `write_vectored`, so replies that became ready together leave in one
//! system call. [`Outbox::len`] is the exact number of buffered bytes; the
//! connection owning the outbox enforces the cap.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use actormq_protocol::Frame;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;

/// Bodies at least this long are queued by reference, not copied.
pub(crate) const COPY_MAX: usize = 8 * 1024;
/// Most buffers handed to one vectored write.
pub(crate) const MAX_IOVECS: usize = 64;

/// Buffered, not yet written frames of one connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Sealed chunks, written first, in order.
    chunks: VecDeque<Bytes>,
    /// Bytes encoded after the last sealed chunk.
    tail: BytesMut,
    /// Total unwritten bytes (`chunks` + `tail`).
    len: usize,
    max_frame_len: u32,
    /// Write calls that wrote something, so far.
    writes: u64,
}

impl Outbox {
    pub(crate) fn new(max_frame_len: u32) -> Outbox {
        Outbox {
            chunks: VecDeque::new(),
            tail: BytesMut::with_capacity(16 * 1024),
            len: 0,
            max_frame_len,
            writes: 0,
        }
    }

    /// Unwritten bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Write calls that wrote something, so far.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything unwritten.
    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.tail.clear();
        self.len = 0;
    }

    /// Encodes `frame` at the end; fails (and buffers nothing) if the frame
    /// is over the frame cap.
    pub(crate) fn push(&mut self, frame: &Frame) -> actormq_protocol::Result<()> {
        let before = self.tail.len();
        frame.encode_head(&mut self.tail, self.max_frame_len)?;
        let head = self.tail.len() - before;
        if frame.body.len() < COPY_MAX {
            self.tail.extend_from_slice(&frame.body);
        } else {
            self.chunks.push_back(self.tail.split().freeze());
            self.chunks.push_back(frame.body.clone());
        }
        // Counted last: a push cut short (a panic half way) leaves `len`
        // short of the buffered bytes, which `is_consistent` detects.
        self.len += head + frame.body.len();
        Ok(())
    }

    /// Whether the buffered bytes are exactly the frames pushed (none cut
    /// short by a panic during [`push`](Self::push)), so more frames can
    /// follow them on the wire.
    pub(crate) fn is_consistent(&self) -> bool {
        self.len == self.chunks.iter().map(Bytes::len).sum::<usize>() + self.tail.len()
    }

    /// Writes until empty (`Ready(Ok)`), the socket is full (`Pending`) or
    /// it fails.
    pub(crate) fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.len > 0 {
            let n = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut used = 0;
                for chunk in self.chunks.iter().take(MAX_IOVECS) {
                    slices[used] = IoSlice::new(chunk);
                    used += 1;
                }
                if used < MAX_IOVECS && !self.tail.is_empty() {
                    slices[used] = IoSlice::new(&self.tail);
                    used += 1;
                }
                match Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..used]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            };
            self.writes += 1;
            self.consume(n);
        }
        Poll::Ready(Ok(()))
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(chunk) if chunk.len() <= n => {
                    n -= chunk.len();
                    self.chunks.pop_front();
                }
                Some(chunk) => {
                    chunk.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::{Decoder, FrameCodec, ResponseCode};

    use super::*;

    /// A writer that takes at most `step` bytes per call.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn small_and_large_bodies_arrive_in_order() {
        let frames: Vec<Frame> = (0..10u64)
            .map(|i| {
                let body = Bytes::from(vec![i as u8; if i % 3 == 0 { COPY_MAX + 5 } else { 10 }]);
                let mut f = Frame::error(i, ResponseCode::Success, "r");
                f.body = body;
                f
            })
            .collect();
        let mut outbox = Outbox::new(u32::MAX);
        for f in &frames {
            outbox.push(f).unwrap();
        }
        let total = outbox.len();
        let mut w = Trickle {
            out: Vec::new(),
            step: 777,
        };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(outbox.poll_flush(&mut w, &mut cx).is_ready());
        assert!(outbox.is_empty());
        assert_eq!(w.out.len(), total);
        let mut src = BytesMut::from(&w.out[..]);
        let mut codec = FrameCodec::new();
        for f in &frames {
            assert_eq!(&codec.decode(&mut src).unwrap().unwrap(), f);
        }
    }

    #[test]
    fn oversized_frame_buffers_nothing() {
        let mut outbox = Outbox::new(64);
        let mut f = Frame::error(1, ResponseCode::Success, "r");
        f.body = Bytes::from(vec![0; 100]);
        assert!(outbox.push(&f).is_err());
        assert!(outbox.is_empty());
    }
}

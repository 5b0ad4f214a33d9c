//! A small protocol-level client: one TCP connection, [`FrameCodec`]
//! framing, typed calls, pipelined bursts and raw access for fault tests.
//!
//! This is deliberately not the SDK: no routing, no retries, no
//! rebalancing. It speaks frames, so tests can check exactly what a node
//! answers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), actormq_tests::client::ClientError> {
//! use actormq_protocol::request::{GetMaxOffsetRequest};
//! use actormq_tests::client::Client;
//!
//! let mut c = Client::connect("127.0.0.1:10911".parse().unwrap()).await?;
//! let reply = c
//!     .call(&GetMaxOffsetRequest { topic: "t".into(), queue_id: 0 }, Default::default())
//!     .await?;
//! println!("{} {:?}", reply.code, reply.fields);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::{Duration, Instant};

use actormq_protocol::request::Request;
use actormq_protocol::{Bytes, BytesMut, Encoder, Frame, FrameCodec, ResponseCode};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::FramedRead;

/// Default bound on one [`Client::call`] (connect, write and reply).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something the codec refuses, or a request could not
    /// be encoded.
    #[error("protocol: {0}")]
    Protocol(#[from] actormq_protocol::Error),
    /// The connection closed before the reply came.
    #[error("connection closed by the peer")]
    Closed,
    /// No reply in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The reply's code is not what the caller required.
    #[error("reply {code}: {remark}")]
    Status {
        /// The response code.
        code: ResponseCode,
        /// The remark, or empty.
        remark: String,
    },
    /// The reply's response code is not a known [`ResponseCode`].
    #[error("unknown response code {0}")]
    UnknownCode(u32),
}

/// Result of this module.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A decoded reply to a typed request.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The response code.
    pub code: ResponseCode,
    /// The typed fields, when they decode as `T` (error replies usually
    /// carry an empty map, which only decodes for field-less types).
    pub fields: Option<T>,
    /// The reply's remark (error detail), if any.
    pub remark: Option<String>,
    /// The reply's body.
    pub body: Bytes,
}

impl<T> Reply<T> {
    /// The fields of a `SUCCESS` reply, else [`ClientError::Status`].
    pub fn ok(self) -> Result<T> {
        self.expect_code(ResponseCode::Success).map(|(f, _)| f)
    }

    /// The fields and body of a reply with code `code`, else
    /// [`ClientError::Status`].
    pub fn expect_code(self, code: ResponseCode) -> Result<(T, Bytes)> {
        match (self.code == code, self.fields) {
            (true, Some(f)) => Ok((f, self.body)),
            (_, _) => Err(ClientError::Status {
                code: self.code,
                remark: self
                    .remark
                    .unwrap_or_else(|| "(fields did not decode)".into()),
            }),
        }
    }

    /// Whether the code is `SUCCESS`.
    pub fn is_success(&self) -> bool {
        self.code == ResponseCode::Success
    }
}

/// Turns a raw reply frame into a typed [`Reply`].
pub fn typed_reply<T: serde::de::DeserializeOwned>(frame: Frame) -> Result<Reply<T>> {
    let code = ResponseCode::try_from(frame.header.code)
        .map_err(|_| ClientError::UnknownCode(frame.header.code))?;
    Ok(Reply {
        code,
        fields: frame.decode_fields::<T>().ok(),
        remark: frame.header.remark,
        body: frame.body,
    })
}

/// Bounds `fut` by `limit`.
pub async fn within<F: Future>(limit: Duration, fut: F) -> Result<F::Output> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ClientError::Timeout(limit))
}

/// One connection to a node's name-server or broker port.
pub struct Client {
    peer: SocketAddr,
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
    wbuf: BytesMut,
    codec: FrameCodec,
    next_id: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("peer", &self.peer)
            .field("next_id", &self.next_id)
            .finish()
    }
}

impl Client {
    /// Connects to `addr` (bounded by [`DEFAULT_TIMEOUT`]).
    pub async fn connect(addr: SocketAddr) -> Result<Client> {
        let stream = within(DEFAULT_TIMEOUT, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Client {
            peer: addr,
            reader: FramedRead::with_capacity(read, FrameCodec::new(), 64 * 1024),
            writer: write,
            wbuf: BytesMut::with_capacity(64 * 1024),
            codec: FrameCodec::new(),
            next_id: 1,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The address this client talks to.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sets the bound on each [`Client::call`] and [`Client::call_frame`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends `req` with `body` and waits for its reply.
    pub async fn call<R: Request>(&mut self, req: &R, body: Bytes) -> Result<Reply<R::Response>> {
        let id = self.next_id();
        let frame = Frame::request(id, req, body)?;
        typed_reply(self.call_frame(frame).await?)
    }

    /// Like [`Client::call`] with a per-call bound instead of the client's.
    pub async fn call_within<R: Request>(
        &mut self,
        req: &R,
        body: Bytes,
        limit: Duration,
    ) -> Result<Reply<R::Response>> {
        let saved = std::mem::replace(&mut self.timeout, limit);
        let out = self.call(req, body).await;
        self.timeout = saved;
        out
    }

    /// Sends a prepared frame (its request id is kept) and waits for the
    /// reply carrying that id; replies to other ids (e.g. of an earlier
    /// call that timed out) and requests from the peer are skipped.
    pub async fn call_frame(&mut self, frame: Frame) -> Result<Frame> {
        let id = frame.header.request_id;
        let limit = self.timeout;
        within(limit, async {
            self.write_frame(&frame).await?;
            loop {
                let reply = self.read_frame().await?;
                if reply.is_response() && reply.header.request_id == id {
                    return Ok(reply);
                }
            }
        })
        .await?
    }

    /// Encodes and writes one frame.
    pub async fn write_frame(&mut self, frame: &Frame) -> Result<()> {
        self.codec.encode(frame, &mut self.wbuf)?;
        let buf = self.wbuf.split();
        self.writer.write_all(&buf).await?;
        Ok(())
    }

    /// Writes raw bytes (fault tests: anything, valid or not).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).await?;
        Ok(())
    }

    /// Reads the next frame; [`ClientError::Closed`] at end of stream.
    pub async fn read_frame(&mut self) -> Result<Frame> {
        match self.reader.next().await {
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(e.into()),
            None => Err(ClientError::Closed),
        }
    }

    /// Closes the writing side (the peer reads end of stream).
    pub async fn shutdown_write(&mut self) -> Result<()> {
        self.writer.shutdown().await?;
        Ok(())
    }

    /// Pipelined requests: writes `requests` with at most `inflight`
    /// unanswered at once and calls `on_reply(index, sent_at, reply)` for
    /// each reply, `index` being the request's position in `requests`. Each
    /// request gets a fresh request id (its own is overwritten); replies
    /// are matched by id and may come in any order.
    ///
    /// Returns the number of requests sent once every reply came, or the
    /// first error (connection closed, codec error, stray reply id). There
    /// is no overall time bound: wrap it in [`within`] when needed.
    pub async fn send_many<I, F>(
        &mut self,
        requests: I,
        inflight: usize,
        mut on_reply: F,
    ) -> Result<usize>
    where
        I: IntoIterator<Item = Frame>,
        F: FnMut(usize, Instant, Frame),
    {
        let inflight = inflight.max(1);
        let mut requests = requests.into_iter().enumerate();
        let mut waiting: HashMap<u64, (usize, Instant)> = HashMap::with_capacity(inflight * 2);
        let mut sent = 0usize;
        let mut exhausted = false;
        let Client {
            reader,
            writer,
            wbuf,
            codec,
            next_id,
            ..
        } = self;
        let first_id = *next_id;
        // Matches one reply; replies to ids from before this burst (an
        // earlier call that timed out) are skipped, a second reply to one
        // of ours is an error.
        let mut accept = |frame: Option<std::result::Result<Frame, actormq_protocol::Error>>,
                          waiting: &mut HashMap<u64, (usize, Instant)>|
         -> Result<()> {
            let frame = match frame {
                Some(Ok(f)) => f,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ClientError::Closed),
            };
            if !frame.is_response() {
                return Ok(());
            }
            let id = frame.header.request_id;
            match waiting.remove(&id) {
                Some((index, at)) => on_reply(index, at, frame),
                None if id < first_id => {}
                None => {
                    return Err(ClientError::Protocol(actormq_protocol::Error::BadMsgPack(
                        format!("unexpected or duplicate reply to request id {id}"),
                    )));
                }
            }
            Ok(())
        };
        loop {
            // Fill the window and encode it into one buffer.
            while !exhausted && waiting.len() < inflight {
                match requests.next() {
                    Some((index, mut frame)) => {
                        let id = *next_id;
                        *next_id += 1;
                        frame.header.request_id = id;
                        codec.encode(&frame, wbuf)?;
                        waiting.insert(id, (index, Instant::now()));
                        sent += 1;
                    }
                    None => exhausted = true,
                }
            }
            if waiting.is_empty() {
                return Ok(sent);
            }
            let mut out = wbuf.split();
            let mut written = out.is_empty();
            let mut write = pin!(writer.write_all_buf(&mut out));
            // Write it while reading replies (the peer may block on its
            // writes until we read); once written and at least one reply
            // came, take every reply already buffered and refill.
            loop {
                tokio::select! {
                    res = &mut write, if !written => {
                        res?;
                        written = true;
                    }
                    frame = reader.next() => {
                        accept(frame, &mut waiting)?;
                        if written {
                            while let Some(frame) = reader.next().now_or_never() {
                                accept(frame, &mut waiting)?;
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    /// [`Client::send_many`] collecting the replies in request order.
    pub async fn send_many_collect(
        &mut self,
        requests: Vec<Frame>,
        inflight: usize,
    ) -> Result<Vec<Frame>> {
        let mut out: Vec<Option<Frame>> = vec![None; requests.len()];
        self.send_many(requests, inflight, |i, _, f| out[i] = Some(f))
            .await?;
        Ok(out
            .into_iter()
            .map(|f| f.expect("every request answered"))
            .collect())
    }
}

/// What a raw read saw.
#[derive(Debug)]
pub enum RawEvent {
    /// A whole frame.
    Frame(Frame),
    /// The peer closed the connection (end of stream or reset).
    Closed,
    /// The codec refused the peer's bytes.
    Garbage(actormq_protocol::Error),
    /// Nothing within the bound.
    Timeout,
}

/// A plain TCP connection for fault tests: write any bytes, read frames or
/// see the close.
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    codec: FrameCodec,
}

impl RawConn {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<RawConn> {
        let stream = within(DEFAULT_TIMEOUT, TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: BytesMut::with_capacity(8192),
            codec: FrameCodec::new(),
        })
    }

    /// Writes `bytes`; a reset or broken pipe (the peer already closed) is
    /// an error.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Closes the writing side.
    pub async fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }

    /// The next frame, or what happened instead, within `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> RawEvent {
        use actormq_protocol::Decoder;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some(f)) => return RawEvent::Frame(f),
                Ok(None) => {}
                Err(e) => return RawEvent::Garbage(e),
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return RawEvent::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return RawEvent::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Every frame until the peer closes, or `Err(frames so far)` if it is
    /// still open after `limit` (or sent bytes that are not frames).
    pub async fn frames_until_close(&mut self, limit: Duration) -> Result<Vec<Frame>, Vec<Frame>> {
        let deadline = Instant::now() + limit;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left).await {
                RawEvent::Frame(f) => frames.push(f),
                RawEvent::Closed => return Ok(frames),
                RawEvent::Garbage(_) | RawEvent::Timeout => return Err(frames),
            }
        }
    }
}

/// The wire bytes of `frame`.
pub fn encode(frame: &Frame) -> Result<BytesMut> {
    let mut buf = BytesMut::new();
    FrameCodec::with_max_frame_len(u32::MAX).encode(frame, &mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormq_protocol::request::{Empty, GetMaxOffsetRequest, OffsetResponse};

    /// A server that answers requests in reverse order of arrival, in
    /// groups, echoing the body; code 30 gets an offset reply.
    async fn reversing_server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut framed = FramedRead::new(r, FrameCodec::new());
            let mut codec = FrameCodec::new();
            while let Some(Ok(first)) = framed.next().await {
                let mut out = BytesMut::new();
                let mut group = vec![first];
                while let Some(Some(Ok(f))) = framed.next().now_or_never() {
                    group.push(f);
                }
                for f in group.into_iter().rev() {
                    let id = f.header.request_id;
                    let reply = if f.header.code == 30 {
                        Frame::success(id, &OffsetResponse { offset: 99 }, f.body)
                    } else {
                        Frame::success(id, &Empty {}, f.body)
                    };
                    codec.encode(reply.unwrap(), &mut out).unwrap();
                }
                w.write_all(&out).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn pipelined_replies_are_matched_by_id() {
        let addr = reversing_server().await;
        let mut c = Client::connect(addr).await.unwrap();
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 0,
        };
        let frames: Vec<Frame> = (0..2000u32)
            .map(|i| Frame::request(0, &req, Bytes::from(i.to_be_bytes().to_vec())).unwrap())
            .collect();
        let replies = c.send_many_collect(frames, 64).await.unwrap();
        assert_eq!(replies.len(), 2000);
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r.body.as_ref(), (i as u32).to_be_bytes());
        }
        // A typed call on the same connection afterwards.
        let r = c.call(&req, Bytes::new()).await.unwrap();
        assert_eq!(r.ok().unwrap().offset, 99);
    }
}

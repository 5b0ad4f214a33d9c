//! [`Link`]: the SDK's direct, pipelined request path to one server
//! address, used by [`Connections::call`](crate::Connections::call) and
//! [`Connections::oneway`](crate::Connections::oneway).
//!
//! A call does no actor round trip: the caller encodes its request frame
//! straight into the link's shared write buffer, registers its request id
//! and awaits a oneshot. One writer task per connection writes everything
//! buffered since its last write with one system call (a burst of sends
//! leaves in one write); one reader task decodes replies and completes the
//! waiting calls by request id, in any order.
//!
//! Behaviour matches [`RemoteClient`](actormq_runtime::net::RemoteClient):
//! - the connection opens on the first call; after it drops, every pending
//!   call fails with `SYSTEM_ERROR` "connection lost: ..." and the next call
//!   reconnects at once; a failed connect fails the waiting calls and delays
//!   the next attempt (exponential backoff, 50 ms to 2 s), calls arriving
//!   meanwhile wait for that attempt (within their timeout);
//! - request ids start at 1 (0 is never used);
//! - at most [`MAX_PENDING`] calls wait for a reply and at most
//!   [`MAX_WRITE_BUFFER`] bytes wait to be written; past either a call
//!   fails at once with `SYSTEM_BUSY`;
//! - requests the server pushes on this connection are dropped (the
//!   consumers, which serve pushes, use their own connections).
//!
//! The tasks run on the arbiter of the first call (the SDK runs inside an
//! actix `System`); they end when the connection fails or the last handle
//! of the link is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actormq_protocol::frame::EMPTY_FIELDS;
use actormq_protocol::{DEFAULT_MAX_FRAME_LEN, Flags, Frame, FrameCodec, Header, ResponseCode};
use actormq_runtime::net::decode_reply;
use actormq_runtime::{Reply, Rpc, ServiceError};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use slog::{Logger, debug, info, o};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::error::ClientError;

/// Calls waiting for a reply, at most.
pub const MAX_PENDING: usize = 65_536;
/// Request bytes waiting to be written, at most.
pub const MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Unsent bytes above which [`Link::oneway_paced`] waits for the writer.
pub const ONEWAY_HIGH_WATER: usize = 4 * 1024 * 1024;
/// How often calls are checked against their deadline (while any pend).
const SWEEP_TICK: Duration = Duration::from_millis(10);

type Waiter = oneshot::Sender<Result<Frame, ServiceError>>;
type ReplyRx = oneshot::Receiver<Result<Frame, ServiceError>>;

/// A call waiting for its reply, until `deadline`.
struct Pending {
    tx: Waiter,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No connection; the next call connects (not before `retry_at`).
    Down,
    Connecting,
    Up,
}

struct Shared {
    state: State,
    /// Bumped on every connection attempt, so stale tasks stop.
    generation: u64,
    next_id: u64,
    /// Encoded frames not yet taken by the writer.
    out: BytesMut,
    /// Bytes the writer took and has not finished writing.
    writing: usize,
    pending: HashMap<u64, Pending>,
    /// Whether the expiry task is waiting for a pending call.
    sweeper_idle: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
    /// The expiry task (see [`Link::start_sweeper`]).
    sweeper: Option<actix_rt::task::JoinHandle<()>>,
}

struct LinkInner {
    addr: SocketAddr,
    logger: Logger,
    shared: Mutex<Shared>,
    /// Wakes the writer (permit semantics: a wake-up is never lost).
    wake_writer: Arc<Notify>,
    /// Wakes drainers when the writer emptied the buffer.
    drained: Notify,
    /// Wakes the expiry task when a call starts pending.
    wake_sweeper: Arc<Notify>,
}

impl Drop for LinkInner {
    fn drop(&mut self) {
        let shared = self.shared.get_mut().unwrap_or_else(|p| p.into_inner());
        for t in shared.tasks.drain(..).chain(shared.sweeper.take()) {
            t.abort();
        }
        fail(&mut shared.pending, "client closed");
    }
}

fn fail(pending: &mut HashMap<u64, Pending>, why: &str) {
    for (_, p) in pending.drain() {
        let _ = p.tx.send(Err(ServiceError::system(why.to_owned())));
    }
}

/// A pipelined connection to one address. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    inner: Arc<LinkInner>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

/// Removes a call's waiter if the call is dropped before its reply (timed
/// out or cancelled), so the pending table never keeps stale entries.
struct PendingGuard<'a> {
    link: &'a LinkInner,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.link.shared).pending.remove(&self.id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
/// Encodes a request frame for `req` straight into `dst` (no intermediate
/// fields buffer). Leaves `dst` unchanged on error.
fn encode_request<Q: Serialize + ?Sized>(
    dst: &mut BytesMut,
    code: u32,
    id: u64,
    oneway: bool,
    req: &Q,
    body: &[u8],
) -> Result<(), ServiceError> {
    encode_frame(dst, code, id, oneway, body, |dst| serde_fields(dst, req))
}

/// Writes `req` as a MessagePack map (named fields) into `dst`.
fn serde_fields<Q: Serialize + ?Sized>(dst: &mut BytesMut, req: &Q) -> Result<(), ServiceError> {
    let mut w = dst.writer();
    rmp_serde::encode::write_named(&mut w, req)
        .map_err(|e| ServiceError::system(format!("cannot encode request: {e}")))
}

/// Encodes a request frame whose typed fields `fields` writes (a
/// MessagePack map) straight into `dst`. Leaves `dst` unchanged on error.
fn encode_frame(
    dst: &mut BytesMut,
    code: u32,
    id: u64,
    oneway: bool,
    body: &[u8],
    fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
) -> Result<(), ServiceError> {
    let start = dst.len();
    dst.reserve(8 + 48 + 128 + body.len());
    dst.put_u64(0); // frame length + header length, patched below
    let mut header = Header::request(code, id);
    if oneway {
        header.flags = header.flags.with(Flags::ONEWAY);
    }
    header.encode_into(dst);
    let fields_at = dst.len();
    if let Err(e) = fields(dst) {
        dst.truncate(start);
        return Err(e);
    }
    if dst.len() == fields_at {
        dst.extend_from_slice(EMPTY_FIELDS);
    }
    let header_len = (dst.len() - start - 8) as u64;
    let frame_len = 4 + header_len + body.len() as u64;
    if frame_len > u64::from(DEFAULT_MAX_FRAME_LEN) {
        dst.truncate(start);
        return Err(actormq_protocol::Error::FrameTooLarge {
            frame_len,
            max: DEFAULT_MAX_FRAME_LEN,
        }
        .into());
    }
    let prefix = &mut dst[start..start + 8];
    prefix[..4].copy_from_slice(&(frame_len as u32).to_be_bytes());
    prefix[4..].copy_from_slice(&(header_len as u32).to_be_bytes());
    dst.extend_from_slice(body);
    Ok(())
}

impl Link {
    /// A link to `addr` (connects on first use).
    pub fn new(addr: SocketAddr, logger: &Logger) -> Link {
        Link {
            inner: Arc::new(LinkInner {
                addr,
                logger: logger.new(o!("link" => addr.to_string())),
                shared: Mutex::new(Shared {
                    state: State::Down,
                    generation: 0,
                    next_id: 1,
                    out: BytesMut::with_capacity(64 * 1024),
                    writing: 0,
                    pending: HashMap::new(),
                    sweeper_idle: false,
                    backoff: BACKOFF_MIN,
                    retry_at: None,
                    tasks: Vec::new(),
                    sweeper: None,
                }),
                wake_writer: Arc::new(Notify::new()),
                drained: Notify::new(),
                wake_sweeper: Arc::new(Notify::new()),
            }),
        }
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// Queues `req` (and registers a waiter unless `oneway`); returns the
    /// reply receiver and its request id.
    fn enqueue(
        &self,
        code: u32,
        fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Option<(u64, ReplyRx)>, ServiceError> {
        let oneway = deadline.is_none();
        let mut s = lock(&self.inner.shared);
        if s.out.len() + s.writing >= MAX_WRITE_BUFFER {
            return Err(ServiceError::busy(format!(
                "{}: write buffer full ({} bytes unsent)",
                self.inner.addr,
                s.out.len() + s.writing
            )));
        }
        if !oneway && s.pending.len() >= MAX_PENDING {
            return Err(ServiceError::busy(format!(
                "{}: too many calls pending",
                self.inner.addr
            )));
        }
        let id = s.next_id;
        s.next_id = s.next_id.checked_add(1).unwrap_or(1);
        let was_empty = s.out.is_empty();
        encode_frame(&mut s.out, code, id, oneway, body, fields)?;
        let rx = match deadline {
            None => None,
            Some(deadline) => {
                let (tx, rx) = oneshot::channel();
                s.pending.insert(id, Pending { tx, deadline });
                if s.sweeper.is_none() {
                    self.start_sweeper(&mut s);
                } else if s.sweeper_idle {
                    s.sweeper_idle = false;
                    self.inner.wake_sweeper.notify_one();
                }
                Some((id, rx))
            }
        };
        match s.state {
            State::Up => {
                if was_empty {
                    self.inner.wake_writer.notify_one();
                }
            }
            State::Connecting => {}
            State::Down => self.open(&mut s),
        }
        Ok(rx)
    }

    /// Calls `req` with `body`, failing with [`ClientError::Timeout`] after
    /// `timeout`.
    pub async fn call<R: Rpc>(
        &self,
        req: &R,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply<R::Response>, ClientError> {
        self.call_code(R::CODE, req, body, timeout).await
    }

    /// Like [`Link::call`] for a request given by its code and any
    /// serializable fields (e.g. a borrowed mirror of a request type, so
    /// nothing is cloned to encode it); the reply fields decode as `T`.
    pub async fn call_code<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Reply<T>, ClientError> {
        self.call_until(code, req, body, Instant::now() + timeout)
            .await
    }

    /// Like [`Link::call_code`], failing with [`ClientError::Timeout`] at
    /// `deadline` (a send's budget shared by its tries).
    pub async fn call_until<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
        deadline: impl Into<Instant>,
    ) -> Result<Reply<T>, ClientError> {
        self.call_encoded(code, |dst| serde_fields(dst, req), body, deadline)
            .await
    }

    /// Like [`Link::call_until`] with the typed fields written by
    /// `fields` (a MessagePack map, e.g. hand-encoded on a hot path).
    pub async fn call_encoded<T: DeserializeOwned>(
        &self,
        code: u32,
        fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
        body: &[u8],
        deadline: impl Into<Instant>,
    ) -> Result<Reply<T>, ClientError> {
        let deadline = deadline.into();
        let Some((id, rx)) = self.enqueue(code, fields, body, Some(deadline))? else {
            unreachable!("a call always has a waiter");
        };
        // Removes the waiter if this future is dropped before the reply.
        let mut guard = PendingGuard {
            link: &self.inner,
            id,
            armed: true,
        };
        // The expiry task answers a call past its deadline with a
        // "timeout" error: no timer per call.
        let res = rx.await;
        guard.armed = false;
        match res {
            Err(_) => Err(ClientError::from(ServiceError::system("connection lost"))),
            Ok(Err(e)) => Err(ClientError::from(e)),
            Ok(Ok(frame)) => decode_reply::<T>(&frame).map_err(ClientError::from),
        }
    }

    /// Queues `req` as a oneway frame (no reply); returns once queued.
    pub fn oneway<R: Rpc>(&self, req: &R, body: &[u8]) -> Result<(), ClientError> {
        self.oneway_code(R::CODE, req, body)
    }

    /// Like [`Link::oneway`] for a request given by its code.
    pub fn oneway_code<Q: Serialize + ?Sized>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.enqueue(code, |dst| serde_fields(dst, req), body, None)?;
        Ok(())
    }

    /// Queues a oneway request like [`Link::oneway_code`], then gives the
    /// writer a turn: yields, or, with [`ONEWAY_HIGH_WATER`] bytes or more
    /// unsent, waits (at most 3 s) until they are written. So a tight loop
    /// of oneway sends is paced by the socket instead of filling the
    /// buffer and failing with `SYSTEM_BUSY`.
    pub async fn oneway_paced<Q: Serialize + ?Sized>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.oneway_code(code, req, body)?;
        if self.buffered_bytes() >= ONEWAY_HIGH_WATER {
            self.drain(Instant::now() + Duration::from_secs(3)).await;
        } else {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Bytes queued or being written.
    pub fn buffered_bytes(&self) -> usize {
        let s = lock(&self.inner.shared);
        s.out.len() + s.writing
    }

    /// Waits until everything queued is written, the link is down, or
    /// `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        loop {
            let notified = self.inner.drained.notified();
            {
                let s = lock(&self.inner.shared);
                let idle = s.out.is_empty() && s.writing == 0;
                if idle || s.state == State::Down {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Starts the task that fails calls past their deadline (one per
    /// link, for its lifetime; parked while nothing is pending).
    fn start_sweeper(&self, s: &mut Shared) {
        let weak = Arc::downgrade(&self.inner);
        let wake = self.inner.wake_sweeper.clone();
        let task = actix_rt::spawn(async move {
            loop {
                let tick: Option<Duration> = {
                    let Some(link) = weak.upgrade() else { return };
                    let mut s = lock(&link.shared);
                    let now = Instant::now();
                    let addr = link.addr;
                    s.pending.retain(|_, p| {
                        if p.deadline > now {
                            return true;
                        }
                        let (tx, _) = oneshot::channel();
                        let tx = std::mem::replace(&mut p.tx, tx);
                        let _ = tx.send(Err(ServiceError::system(format!(
                            "timeout: no reply from {addr} in time"
                        ))));
                        false
                    });
                    if s.pending.is_empty() {
                        s.sweeper_idle = true;
                        None
                    } else if s.pending.len() < 4096 {
                        Some(SWEEP_TICK)
                    } else {
                        Some(SWEEP_TICK * 10)
                    }
                };
                match tick {
                    Some(tick) => tokio::time::sleep(tick).await,
                    None => wake.notified().await,
                }
            }
        });
        s.sweeper = Some(task);
    }

    fn open(&self, s: &mut Shared) {
        s.state = State::Connecting;
        s.generation += 1;
        let generation = s.generation;
        let delay = s
            .retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let weak = Arc::downgrade(&self.inner);
        let addr = self.inner.addr;
        let task = actix_rt::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let res = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(res) => res,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                )),
            };
            if let Some(inner) = weak.upgrade() {
                connected(&inner, generation, res);
            }
        });
        s.tasks.retain(|t| !t.is_finished());
        s.tasks.push(task);
    }
}

fn connected(inner: &Arc<LinkInner>, generation: u64, res: std::io::Result<TcpStream>) {
    let mut s = lock(&inner.shared);
    if s.generation != generation {
        return;
    }
    match res {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            debug!(inner.logger, "connected");
            s.state = State::Up;
            s.backoff = BACKOFF_MIN;
            s.retry_at = None;
            let (read, write) = stream.into_split();
            let reader = actix_rt::spawn(read_loop(Arc::downgrade(inner), generation, read));
            let writer = actix_rt::spawn(write_loop(
                Arc::downgrade(inner),
                inner.wake_writer.clone(),
                generation,
                write,
            ));
            s.tasks.retain(|t| !t.is_finished());
            s.tasks.push(reader);
            s.tasks.push(writer);
            if !s.out.is_empty() {
                inner.wake_writer.notify_one();
            }
        }
        Err(err) => {
            info!(inner.logger, "connect failed"; "error" => %err, "retry_in" => ?s.backoff);
            s.retry_at = Some(Instant::now() + s.backoff);
            s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
            s.state = State::Down;
            s.out.clear();
            let why = format!("connect to {} failed: {err}", inner.addr);
            fail(&mut s.pending, &why);
            drop(s);
            inner.drained.notify_waiters();
        }
    }
}

/// The connection of `generation` failed: fail its calls, go down.
fn lost(inner: &LinkInner, generation: u64, why: &str) {
    let mut s = lock(&inner.shared);
    if s.generation != generation {
        return;
    }
    info!(inner.logger, "disconnected"; "reason" => why, "pending" => s.pending.len());
    s.state = State::Down;
    s.generation += 1;
    s.out.clear();
    s.writing = 0;
    let why = format!("connection lost: {why}");
    fail(&mut s.pending, &why);
    // The other task of this connection stops too.
    for t in s.tasks.drain(..) {
        t.abort();
    }
    drop(s);
    inner.drained.notify_waiters();
    // Wake a writer parked on the old connection so it notices.
    inner.wake_writer.notify_one();
}

async fn read_loop(inner: Weak<LinkInner>, generation: u64, read: OwnedReadHalf) {
    let mut reader = FramedRead::new(read, FrameCodec::with_max_frame_len(DEFAULT_MAX_FRAME_LEN));
    let why = loop {
        let Some(next) = reader.next().await else {
            break "closed by peer".to_owned();
        };
        let Some(link) = inner.upgrade() else { return };
        match next {
            Ok(frame) => {
                if !frame.is_response() {
                    debug!(link.logger, "request from remote dropped"; "code" => frame.header.code);
                    continue;
                }
                let id = frame.header.request_id;
                let waiter = lock(&link.shared).pending.remove(&id);
                if let Some(p) = waiter {
                    let _ = p.tx.send(Ok(frame));
                } else if id == 0 {
                    let code = frame.response_code().unwrap_or(ResponseCode::SystemError);
                    let remark = frame.header.remark.unwrap_or_default();
                    break format!("server error {code}: {remark}");
                }
            }
            Err(e) => break e.to_string(),
        }
    };
    if let Some(link) = inner.upgrade() {
        lost(&link, generation, &why);
    }
}

async fn write_loop(
    inner: Weak<LinkInner>,
    wake: Arc<Notify>,
    generation: u64,
    mut write: OwnedWriteHalf,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        let idle = {
            let Some(link) = inner.upgrade() else { return };
            let mut s = lock(&link.shared);
            if s.generation != generation {
                return;
            }
            if s.out.is_empty() {
                link.drained.notify_waiters();
                true
            } else {
                std::mem::swap(&mut s.out, &mut buf);
                s.writing = buf.len();
                false
            }
        };
        if idle {
            wake.notified().await;
            continue;
        }
        let res = write.write_all(&buf).await;
        buf.clear();
        let Some(link) = inner.upgrade() else { return };
        match res {
            Ok(()) => {
                let mut s = lock(&link.shared);
                if s.generation == generation {
                    s.writing = 0;
                }
            }
            Err(e) => {
                lost(&link, generation, &e.to_string());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::request::GetMaxOffsetRequest;
    use actormq_protocol::{Bytes, Decoder, FrameCodec};

    use super::*;

    #[test]
    fn encodes_like_frame_request() {
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 3,
        };
        let body = b"hello body";
        let mut direct = BytesMut::new();
        encode_request(&mut direct, 30, 7, false, &req, body).unwrap();
        let frame = Frame::request(7, &req, Bytes::from_static(body)).unwrap();
        let mut expected = BytesMut::new();
        frame.encode_head(&mut expected, u32::MAX).unwrap();
        expected.extend_from_slice(body);
        assert_eq!(direct, expected);
        let decoded = FrameCodec::new().decode(&mut direct).unwrap().unwrap();
        assert_eq!(decoded, frame);

        let mut ow = BytesMut::new();
        encode_request(&mut ow, 30, 8, true, &req, &[]).unwrap();
        let decoded = FrameCodec::new().decode(&mut ow).unwrap().unwrap();
        assert!(decoded.is_oneway());
        assert_eq!(decoded.header.request_id, 8);
    }

    #[test]
    fn empty_fields_encode_as_empty_map() {
        let req = actormq_protocol::request::GetAllTopicListFromNamesrvRequest {};
        let mut direct = BytesMut::new();
        encode_request(
            &mut direct,
            <actormq_protocol::request::GetAllTopicListFromNamesrvRequest as Rpc>::CODE,
            1,
            false,
            &req,
            &[],
        )
        .unwrap();
        let frame = Frame::request(1, &req, Bytes::new()).unwrap();
        let mut expected = BytesMut::new();
        frame.encode_head(&mut expected, u32::MAX).unwrap();
        assert_eq!(direct, expected);
    }

    fn test_logger() -> Logger {
        Logger::root(slog::Discard, o!())
    }

    #[actix_rt::test]
    async fn silent_server_times_out_and_the_waiter_is_dropped() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let _accept = actix_rt::spawn(async move {
            let (sock, _) = server.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sock);
        });
        let link = Link::new(addr, &test_logger());
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 0,
        };
        let began = Instant::now();
        let res = link.call(&req, &[], Duration::from_millis(100)).await;
        assert!(matches!(res, Err(ClientError::Timeout(_))), "{res:?}");
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(lock(&link.inner.shared).pending.is_empty());
        // A cancelled call leaves no waiter behind either.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            link.call(&req, &[], Duration::from_secs(10)),
        )
        .await;
        assert!(cancelled.is_err());
        assert!(lock(&link.inner.shared).pending.is_empty());
    }

    #[actix_rt::test]
    async fn replies_match_by_id_and_a_closed_connection_fails_calls() {
        use actormq_protocol::request::OffsetResponse;
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        // Answers two requests in reverse order, then closes.
        let _serve = actix_rt::spawn(async move {
            let (sock, _) = server.accept().await.unwrap();
            let (read, mut write) = sock.into_split();
            let mut frames = FramedRead::new(read, FrameCodec::new());
            let a = frames.next().await.unwrap().unwrap();
            let b = frames.next().await.unwrap().unwrap();
            for (f, offset) in [(b, 2u64), (a, 1u64)] {
                let reply = Frame::response(
                    f.header.request_id,
                    ResponseCode::Success,
                    &OffsetResponse { offset },
                    Bytes::new(),
                )
                .unwrap();
                let mut out = BytesMut::new();
                reply.encode_head(&mut out, u32::MAX).unwrap();
                write.write_all(&out).await.unwrap();
            }
            let _ = frames.next().await;
        });
        let link = Link::new(addr, &test_logger());
        let req = GetMaxOffsetRequest {
            topic: "t".into(),
            queue_id: 0,
        };
        let t = Duration::from_secs(5);
        let (a, b) = tokio::join!(link.call(&req, &[], t), link.call(&req, &[], t));
        assert_eq!(a.unwrap().fields.offset, 1);
        assert_eq!(b.unwrap().fields.offset, 2);
        // The third request is read and the connection closed unanswered.
        let lost = link.call(&req, &[], t).await;
        match lost {
            Err(ClientError::Broker { code, remark }) => {
                assert_eq!(code, ResponseCode::SystemError);
                assert!(remark.starts_with("connection lost"), "{remark}");
            }
            other => panic!("expected connection lost, got {other:?}"),
        }
        // Nobody listens any more: the next call fails to connect.
        let refused = link.call(&req, &[], t).await;
        assert!(refused.is_err());
    }
}

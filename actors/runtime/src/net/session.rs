//! [`Session`]: one actor per accepted TCP connection.
//!
//! The session owns the socket through one actor future (its driver) that
//! does all I/O on the session's arbiter:
//!
//! - **Read**: frames are cut by [`FrameCodec`] from a `FramedRead` that is
//!   polled *only while* fewer than [`SessionLimits::max_in_flight`]
//!   requests are being served and fewer than
//!   [`SessionLimits::max_write_buffer`] reply bytes wait to be written.
//!   Otherwise the socket is not read, the kernel buffers fill and the peer's
//!   writes block: that is the backpressure.
//! - **Serve**: each request goes through the shared [`Router`] (one `send`
//!   to the serving actor); the reply futures sit in a `FuturesUnordered`,
//!   so requests are pipelined and replies leave in completion order,
//!   matched by request id. Oneway requests get no reply.
//! - **Write**: replies ready in one poll are encoded into one
//!   outbox (`net/outbox.rs`) and leave with one vectored write.
//!
//! Memory per session is therefore bounded by the read buffer (at most one
//! frame, capped by [`SessionLimits::max_frame_len`]) plus the outbox, which
//! can exceed `max_write_buffer` by at most `max_in_flight` replies (those
//! already being served when the cap was reached).
//!
//! A peer that keeps the outbox over its cap for longer than
//! [`SessionLimits::write_stall_timeout`] (it stopped reading) is cut off.
//! Malformed input (a bad length, bad header MessagePack, an unsupported
//! protocol version, a truncated frame at EOF) gets an error reply (request
//! id 0 when the id is unknown), then the session stops reading, writes what
//! is buffered and closes this connection only. When the peer closes its
//! writing side, requests already read are still answered, then the
//! session closes. Every close is logged and announced as
//! [`ConnectionClosed`] to the listener's subscribers.
//!
//! **Memory across connections**: every session charges what it holds
//! (its read buffer's capacity, the bytes of the requests it is serving and
//! its unsent replies) to a budget shared by all sessions of its listener
//! ([`ListenerOptions::max_connection_memory`](super::ListenerOptions)),
//! at once for each frame read. While the total is at or over the cap, a
//! session reads a new frame only when it has nothing in flight and
//! nothing unsent (so a peer that reads its replies is still served, one
//! request at a time, while peers that do not read hold the memory);
//! everything else waits, unread, in the kernel. Nothing already read is
//! dropped and no request is refused for memory: the requests already read
//! are served and their replies go out. So the total passes the cap by at
//! most what one admission adds per connection: one frame, the read-ahead
//! of its buffer, and a reply that is bigger than its request (a pull).
//!
//! **Panics**: the driver's poll and the session's handlers run behind
//! `catch_unwind` ([`poison_on_panic`]). A panic poisons the session: it
//! stops reading, answers every request it has in flight with a
//! `SYSTEM_ERROR` reply ("outcome unknown": the request may have been
//! carried out), writes what it had buffered, closes the connection and
//! logs the panic with the peer's address (error level); the listener
//! counts it ([`ListenerStats::session_panics`](super::ListenerStats)).
//! Requests the peer pipelined behind the panic are never read: the peer
//! sees the connection close. Other connections and the listener are not
//! affected. If the reply buffer itself was left half written by the
//! panic, no error reply can follow it and the connection is closed at
//! once; a second panic while winding down closes it at once too.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::{
    DEFAULT_MAX_FRAME_LEN, Error as ProtocolError, Flags, Frame, FrameCodec, Header, ResponseCode,
};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use slog::{Logger, debug, error, info, o, warn};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Sleep;
use tokio_util::codec::FramedRead;

use super::outbox::Outbox;
use super::router::{ReplyFuture, Router};
use crate::call::{Call, Origin, Rpc, ServiceError};
use crate::guard::{Guarded, GuardedReply, Poison, panic_message, poison_on_panic};

/// Frames read per poll before the driver yields to other actors. Small
/// enough that a client's burst of single sends is handled in slices: the
/// writer appends and the replies of the first slice go out while later
/// ones are still unread, so client and node overlap instead of taking
/// turns on whole bursts (`actormq bench produce`, 64 in flight: 231 k
/// msgs/s at 128, 363 k at 32, 335 k at 16, 300 k at 8; BENCHMARKS.md).
const READ_BUDGET: usize = 32;
/// How long a closing session keeps reading (and discarding) after its
/// last write, so the peer receives the final error reply instead of a
/// reset.
const LINGER: Duration = Duration::from_millis(500);

/// Most bytes the read buffer grows by ahead of what has arrived
/// ([`FrameCodec::with_reserve_ahead`]): a peer that announces a 16 MiB
/// frame and sends only its first bytes does not pin 16 MiB.
const READ_CHUNK: usize = 64 * 1024;

/// The session's frame codec: the frame cap, and a read buffer that grows
/// with the bytes that arrive.
fn session_codec(max_frame_len: u32) -> FrameCodec {
    FrameCodec::with_max_frame_len(max_frame_len).with_reserve_ahead(READ_CHUNK)
}

/// Per-connection limits that keep a slow or hostile peer from growing
/// server memory without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Requests served at once per connection; at the cap the session stops
    /// reading. Default 1024.
    pub max_in_flight: usize,
    /// Reply bytes buffered but not yet written; over the cap the session
    /// stops reading. Default 16 MiB.
    pub max_write_buffer: usize,
    /// How long the write buffer may stay over its cap (the peer stopped
    /// reading) before the connection is cut. Default 30 s.
    pub write_stall_timeout: Duration,
    /// Cap on a frame's length, both directions. Default 16 MiB.
    pub max_frame_len: u32,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_in_flight: 1024,
            max_write_buffer: 16 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(30),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// Announced to every subscriber when a connection closes, whatever the
/// reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    /// The connection's id (as in [`Origin::conn_id`]).
    pub conn_id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
}

/// Asks a session to close its connection now (unwritten replies are
/// dropped).
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct CloseSession;

/// Sends a oneway request to the peer of a session (server push, e.g.
/// `NOTIFY_CONSUMER_IDS_CHANGED` or `CHECK_TRANSACTION_STATE`). Fails with
/// `SYSTEM_BUSY` when the session's write buffer is over its cap, and with
/// `SYSTEM_ERROR` when the request cannot be encoded. Usually sent through
/// the listener by connection id ([`PushTo`](super::PushTo)).
#[derive(Debug, Clone, PartialEq)]
pub struct Push<R>(pub Call<R>);

impl<R: Rpc> Message for Push<R> {
    type Result = Result<(), ServiceError>;
}

/// A snapshot of one session's gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    /// The connection's id.
    pub conn_id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Requests being served.
    pub in_flight: usize,
    /// Reply bytes buffered, not yet written.
    pub buffered_bytes: usize,
    /// The most reply bytes ever buffered at once.
    pub max_buffered_bytes: usize,
    /// Whether the session is reading (false while backpressure holds).
    pub reading: bool,
    /// Request frames read so far.
    pub frames_read: u64,
    /// Socket writes so far (replies ready together leave in one write, so
    /// this is usually well below the number of replies).
    pub writes: u64,
}

/// Gauges a session updates and its listener reads without a message.
#[derive(Debug, Default)]
pub(crate) struct SessionGauge {
    in_flight: AtomicUsize,
    buffered: AtomicUsize,
    max_buffered: AtomicUsize,
    reading: AtomicBool,
    frames_read: AtomicU64,
    writes: AtomicU64,
}

impl SessionGauge {
    pub(crate) fn snapshot(&self, conn_id: u64, peer: SocketAddr) -> SessionStats {
        SessionStats {
            conn_id,
            peer,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            buffered_bytes: self.buffered.load(Ordering::Relaxed),
            max_buffered_bytes: self.max_buffered.load(Ordering::Relaxed),
            reading: self.reading.load(Ordering::Relaxed),
            frames_read: self.frames_read.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
}

/// What a listener shares with its sessions: the memory budget across
/// connections and the panic count. See the module docs.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Bytes held by all sessions now (read buffers + unsent replies).
    buffered: AtomicUsize,
    /// The most ever held at once.
    max_buffered: AtomicUsize,
    /// Cap on `buffered` (`usize::MAX`: none).
    memory_cap: usize,
    /// Sessions that panicked.
    panics: AtomicU64,
}

impl Shared {
    pub(crate) fn new(memory_cap: Option<usize>) -> Shared {
        Shared {
            buffered: AtomicUsize::new(0),
            max_buffered: AtomicUsize::new(0),
            memory_cap: memory_cap.unwrap_or(usize::MAX),
            panics: AtomicU64::new(0),
        }
    }

    /// A session's holding went from `old` to `new` bytes.
    fn charge(&self, old: usize, new: usize) {
        if new > old {
            let total = self.buffered.fetch_add(new - old, Ordering::Relaxed) + (new - old);
            self.max_buffered.fetch_max(total, Ordering::Relaxed);
        } else if old > new {
            self.buffered.fetch_sub(old - new, Ordering::Relaxed);
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    pub(crate) fn max_buffered(&self) -> usize {
        self.max_buffered.load(Ordering::Relaxed)
    }

    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}

/// The memory rule of the module docs: whether a session may read another
/// frame, given the listener's total, its cap, and whether the session has
/// nothing in flight and nothing unsent.
fn memory_allows_read(total: usize, cap: usize, idle: bool) -> bool {
    total < cap || idle
}

/// Who hears about closed connections (shared by a listener and its
/// sessions).
pub(crate) type Subscribers = Arc<Mutex<Vec<Recipient<ConnectionClosed>>>>;

/// Told to the listener when a session ends, so it forgets the session.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct SessionEnded {
    pub(crate) conn_id: u64,
}

/// One TCP connection: reads requests, routes them, writes replies. See
/// the module docs.
pub struct Session {
    origin: Origin,
    logger: Logger,
    gauge: Arc<SessionGauge>,
    limits: SessionLimits,
    subscribers: Subscribers,
    listener: Option<Recipient<SessionEnded>>,
    close_requested: bool,
    /// Set by a panic in a handler or in the driver.
    poison: Poison,
    /// Oneway requests to send to the peer, moved into the outbox by the
    /// driver right after the mailbox is processed.
    pushes: Vec<Frame>,
    /// Ids of pushed requests.
    next_push_id: u64,
    /// Why the driver started draining, for the final log line.
    pending_reason: Option<CloseReason>,
    /// Whether [`ConnectionClosed`] went out already (at the peer's EOF or a
    /// malformed frame, not only when the last held reply is done).
    closed_announced: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Everything a session needs besides its socket.
pub(crate) struct SessionSetup {
    pub(crate) conn_id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) router: Router,
    pub(crate) limits: SessionLimits,
    pub(crate) logger: Logger,
    pub(crate) gauge: Arc<SessionGauge>,
    pub(crate) subscribers: Subscribers,
    pub(crate) listener: Option<Recipient<SessionEnded>>,
    pub(crate) shared: Arc<Shared>,
}

impl Session {
    /// Starts a session for `stream` on the current arbiter. The stream
    /// must belong to this arbiter's runtime.
    pub(crate) fn start(stream: TcpStream, setup: SessionSetup) -> Addr<Session> {
        Session::create(move |ctx| Session::init(stream, setup, ctx))
    }

    /// Starts a session on `arbiter`; the socket is re-registered with that
    /// arbiter's runtime.
    pub(crate) fn start_on(
        arbiter: &ArbiterHandle,
        stream: std::net::TcpStream,
        setup: SessionSetup,
    ) -> Addr<Session> {
        Session::start_in_arbiter(arbiter, move |ctx| {
            let logger = setup.logger.clone();
            match TcpStream::from_std(stream) {
                Ok(stream) => Session::init(stream, setup, ctx),
                Err(err) => {
                    warn!(logger, "cannot register connection"; "error" => %err);
                    ctx.stop();
                    Session::idle(&setup)
                }
            }
        })
    }

    fn idle(setup: &SessionSetup) -> Session {
        let logger = setup.logger.new(
            o!("actor" => "Session", "peer" => setup.peer.to_string(), "conn" => setup.conn_id),
        );
        Session {
            origin: Origin {
                conn_id: setup.conn_id,
                peer: setup.peer,
            },
            logger,
            gauge: setup.gauge.clone(),
            limits: setup.limits,
            subscribers: setup.subscribers.clone(),
            listener: setup.listener.clone(),
            close_requested: false,
            poison: Poison::default(),
            pushes: Vec::new(),
            next_push_id: 1,
            pending_reason: None,
            closed_announced: false,
        }
    }

    fn init(stream: TcpStream, setup: SessionSetup, ctx: &mut Context<Session>) -> Session {
        let (router, limits) = (setup.router.clone(), setup.limits);
        let session = Session::idle(&setup);
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let driver = Driver {
            reader: FramedRead::new(read, session_codec(limits.max_frame_len)),
            writer: write,
            out: Outbox::new(limits.max_frame_len),
            pending: FuturesUnordered::new(),
            router,
            limits,
            phase: Phase::Open,
            stall: None,
            deadline: None,
            frames_read: 0,
            max_buffered: 0,
            shared: setup.shared,
            charged: 0,
            in_flight_bytes: 0,
            failed: false,
        };
        debug!(session.logger, "connection accepted");
        ctx.spawn(driver.map(|reason, act: &mut Session, ctx| {
            act.log_close(&reason);
            ctx.stop();
        }));
        session
    }

    fn log_close(&self, reason: &CloseReason) {
        match reason {
            CloseReason::PeerClosed | CloseReason::Requested => {
                debug!(self.logger, "connection closed"; "reason" => %reason)
            }
            CloseReason::Malformed(_) | CloseReason::Stalled(_) => {
                warn!(self.logger, "connection cut"; "reason" => %reason)
            }
            CloseReason::Io(_) => info!(self.logger, "connection lost"; "reason" => %reason),
            CloseReason::Panicked { .. } => {
                info!(self.logger, "connection closed"; "reason" => %reason)
            }
        }
    }
}

impl Guarded for Session {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.announce_closed();
        if let Some(listener) = &self.listener {
            listener.do_send(SessionEnded {
                conn_id: self.origin.conn_id,
            });
        }
        self.gauge.reading.store(false, Ordering::Relaxed);
        self.gauge.in_flight.store(0, Ordering::Relaxed);
        self.gauge.buffered.store(0, Ordering::Relaxed);
    }
}

// The handlers poison the session on a panic but leave stopping to the
// driver, which runs right after the mailbox in the same poll and winds
// the connection down (module docs).

impl Handler<CloseSession> for Session {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: CloseSession, ctx: &mut Context<Self>) -> Self::Result {
        // The driver runs right after the mailbox in this same poll and
        // sees the flag.
        poison_on_panic(self, ctx, |act, _| act.close_requested = true)
    }
}

/// Test hook: the session's handler panics (the connection is wound down
/// as after any panic in it).
#[cfg(feature = "fault-injection")]
impl Handler<crate::guard::InjectPanic> for Session {
    type Result = GuardedReply<()>;
    fn handle(&mut self, msg: crate::guard::InjectPanic, ctx: &mut Context<Self>) -> Self::Result {
        poison_on_panic(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

impl<R: Rpc> Handler<Push<R>> for Session {
    type Result = GuardedReply<Result<(), ServiceError>>;

    fn handle(&mut self, msg: Push<R>, ctx: &mut Context<Self>) -> Self::Result {
        poison_on_panic(self, ctx, |act, _| act.push(msg))
    }
}

impl Session {
    fn push<R: Rpc>(&mut self, msg: Push<R>) -> Result<(), ServiceError> {
        if self.gauge.buffered.load(Ordering::Relaxed) >= self.limits.max_write_buffer {
            return Err(ServiceError::busy(format!(
                "connection {} is not reading",
                self.origin.conn_id
            )));
        }
        let id = self.next_push_id;
        self.next_push_id += 1;
        let mut header = Header::request(R::CODE, id);
        header.flags = header.flags.with(Flags::ONEWAY);
        let fields = rmp_serde::to_vec_named(&msg.0.req)
            .map_err(|e| ServiceError::system(format!("cannot encode request: {e}")))?;
        let frame = Frame {
            header,
            fields: fields.into(),
            body: msg.0.body,
        };
        let len = frame.encoded_len().map_err(ServiceError::from)?;
        if len - 4 > self.limits.max_frame_len as usize {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                format!("request of {len} bytes is over the frame cap"),
            ));
        }
        // The driver runs right after the mailbox in this same poll.
        self.pushes.push(frame);
        Ok(())
    }
}

/// Why a connection closed.
#[derive(Debug)]
enum CloseReason {
    PeerClosed,
    Requested,
    Malformed(ProtocolError),
    Stalled(Duration),
    Io(std::io::Error),
    Panicked {
        reason: String,
        /// In-flight requests answered with an error.
        answered: usize,
    },
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Requested => f.write_str("close requested"),
            CloseReason::Malformed(e) => write!(f, "malformed input: {e}"),
            CloseReason::Stalled(d) => {
                write!(
                    f,
                    "peer stopped reading: write buffer over its cap for {d:?}"
                )
            }
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::Panicked { reason, answered } => write!(
                f,
                "session panicked: {reason}; {answered} request(s) in flight answered with an error"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading and serving.
    Open,
    /// No more reading: answer what was read, flush, then close.
    Draining,
    /// Everything written and the write side shut down: discard input
    /// until EOF or the linger deadline, so the last reply is not lost to a
    /// reset.
    Lingering,
}

/// A request being served: its reply future and, unless it is oneway,
/// its request id (to answer it with an error if the session panics).
struct InFlight {
    id: Option<u64>,
    /// The request's bytes (fields + body), charged while it is served.
    bytes: usize,
    reply: ReplyFuture,
}

impl std::future::Future for InFlight {
    /// The request's bytes and the reply.
    type Output = (usize, Option<Frame>);
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let bytes = self.bytes;
        self.reply.as_mut().poll(cx).map(|reply| (bytes, reply))
    }
}

/// The session's I/O, polled as an actor future.
struct Driver {
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
    out: Outbox,
    pending: FuturesUnordered<InFlight>,
    router: Router,
    limits: SessionLimits,
    phase: Phase,
    /// Armed while the outbox is over its cap.
    stall: Option<Pin<Box<Sleep>>>,
    /// Armed while draining after an error, and while lingering.
    deadline: Option<Pin<Box<Sleep>>>,
    frames_read: u64,
    max_buffered: usize,
    /// The listener's memory budget and counters.
    shared: Arc<Shared>,
    /// What this session has charged to `shared` (read buffer + requests
    /// being served + outbox).
    charged: usize,
    /// Bytes of the requests being served.
    in_flight_bytes: usize,
    /// Winding down after a panic.
    failed: bool,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.charge(self.charged, 0);
    }
}

impl Driver {
    fn can_read(&self) -> bool {
        self.phase == Phase::Open
            && self.pending.len() < self.limits.max_in_flight
            && self.out.len() < self.limits.max_write_buffer
            && memory_allows_read(
                self.shared.buffered(),
                self.shared.memory_cap,
                self.pending.is_empty() && self.out.is_empty(),
            )
    }

    /// Charges what the session holds now to the listener's budget.
    fn account(&mut self) {
        let now = self.reader.read_buffer().capacity() + self.in_flight_bytes + self.out.len();
        self.shared.charge(self.charged, now);
        self.charged = now;
    }

    /// After a panic: stop reading, answer every request in flight with an
    /// error (if the outbox can still take frames), then drain and close.
    /// Returns how many requests were answered; `None` when nothing can be
    /// written any more (close at once).
    fn fail(&mut self, reason: &str) -> Option<usize> {
        self.failed = true;
        self.shared.panics.fetch_add(1, Ordering::Relaxed);
        self.phase = Phase::Draining;
        let ids: Vec<u64> = self.pending.iter().filter_map(|p| p.id).collect();
        self.pending = FuturesUnordered::new();
        self.in_flight_bytes = 0;
        if !self.out.is_consistent() {
            self.out.clear();
            return None;
        }
        for &id in &ids {
            self.push_reply(Frame::error(
                id,
                ResponseCode::SystemError,
                format!(
                    "connection failed, the request's outcome is unknown: session panicked: {reason}"
                ),
            ));
        }
        self.deadline = Some(Box::pin(tokio::time::sleep(
            self.limits.write_stall_timeout,
        )));
        Some(ids.len())
    }

    fn push_reply(&mut self, reply: Frame) {
        if let Err(err) = self.out.push(&reply) {
            // Over the frame cap: tell the peer instead.
            let id = reply.header.request_id;
            let fallback = Frame::error(
                id,
                ResponseCode::SystemError,
                format!("reply not sent: {err}"),
            );
            let _ = self.out.push(&fallback);
        }
    }

    /// Moves finished replies into the outbox; false when none was ready.
    fn collect_replies(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let mut any = false;
        while let Poll::Ready(Some((bytes, reply))) = self.pending.poll_next_unpin(cx) {
            any = true;
            self.in_flight_bytes -= bytes;
            if let Some(reply) = reply {
                self.push_reply(reply);
            }
        }
        any
    }

    /// Starts draining after malformed input: error reply, stop reading.
    fn malformed(&mut self, err: ProtocolError) -> CloseReason {
        let id = err.request_id().unwrap_or(0);
        self.push_reply(Frame::from_error(id, &err));
        self.phase = Phase::Draining;
        self.deadline = Some(Box::pin(tokio::time::sleep(
            self.limits.write_stall_timeout,
        )));
        CloseReason::Malformed(err)
    }

    fn publish(&mut self, gauge: &SessionGauge) {
        self.account();
        let buffered = self.out.len();
        self.max_buffered = self.max_buffered.max(buffered);
        gauge.in_flight.store(self.pending.len(), Ordering::Relaxed);
        gauge.buffered.store(buffered, Ordering::Relaxed);
        gauge
            .max_buffered
            .store(self.max_buffered, Ordering::Relaxed);
        gauge.reading.store(self.can_read(), Ordering::Relaxed);
        gauge.frames_read.store(self.frames_read, Ordering::Relaxed);
        gauge.writes.store(self.out.writes(), Ordering::Relaxed);
    }

    fn poll_io(
        &mut self,
        origin: Origin,
        cx: &mut TaskContext<'_>,
        reason: &mut Option<CloseReason>,
    ) -> Poll<CloseReason> {
        let mut budget = READ_BUDGET;
        loop {
            self.collect_replies(cx);
            // Read while allowed.
            let mut read_any = false;
            while self.can_read() && budget > 0 {
                match self.reader.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        budget -= 1;
                        read_any = true;
                        self.frames_read += 1;
                        if frame.is_response() {
                            // Nothing is asked of clients yet: ignore.
                            continue;
                        }
                        let id = (!frame.is_oneway()).then_some(frame.header.request_id);
                        let bytes = frame.fields.len() + frame.body.len();
                        let reply = self.router.dispatch(frame, Some(origin));
                        self.pending.push(InFlight { id, bytes, reply });
                        self.in_flight_bytes += bytes;
                        // Charged at once: the next frame's read is
                        // decided on the total including this one.
                        self.account();
                    }
                    Poll::Ready(Some(Err(err))) => {
                        *reason = Some(self.malformed(err));
                    }
                    Poll::Ready(None) => {
                        self.phase = Phase::Draining;
                        reason.get_or_insert(CloseReason::PeerClosed);
                    }
                    Poll::Pending => break,
                }
            }
            if read_any {
                // Newly dispatched requests may already be answerable.
                self.collect_replies(cx);
            }
            // One vectored write for everything ready now.
            let could_read = self.can_read();
            if let Poll::Ready(Err(err)) = self.out.poll_flush(&mut self.writer, cx) {
                return Poll::Ready(CloseReason::Io(err));
            }
            if !could_read && budget > 0 && self.can_read() {
                // Room again (write buffer, or memory: nothing unsent any
                // more): read on, which also registers for readability.
                continue;
            }
            if budget == 0 && self.can_read() {
                // Yield to other actors; come back at once.
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }
}

impl ActorFuture<Session> for Driver {
    type Output = CloseReason;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Session,
        _: &mut Context<Session>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<CloseReason> {
        let this = self.get_mut();
        if !this.failed
            && let Some(reason) = act.poison.reason().map(str::to_owned)
        {
            // A handler panicked (in the mailbox, just before this poll).
            if let Some(done) = this.start_failing(act, reason) {
                return Poll::Ready(done);
            }
        }
        match catch_unwind(AssertUnwindSafe(|| this.poll_inner(act, cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let reason = panic_message(payload.as_ref());
                act.poison.poison(reason.clone());
                if this.failed {
                    // A second panic while winding down: close at once.
                    return Poll::Ready(act.pending_reason.take().unwrap_or(
                        CloseReason::Panicked {
                            reason,
                            answered: 0,
                        },
                    ));
                }
                if let Some(done) = this.start_failing(act, reason) {
                    return Poll::Ready(done);
                }
                // Come back at once to write the error replies.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

impl Driver {
    /// [`Driver::fail`], recording why for the final log line; returns the
    /// reason when the connection must close at once.
    fn start_failing(&mut self, act: &mut Session, reason: String) -> Option<CloseReason> {
        act.pushes.clear();
        let in_flight = self.pending.iter().filter(|p| p.id.is_some()).count();
        error!(act.logger, "session panicked: answering its requests with an error and closing its connection";
            "reason" => %reason, "in_flight" => in_flight);
        match self.fail(&reason) {
            Some(answered) => {
                act.pending_reason = Some(CloseReason::Panicked { reason, answered });
                None
            }
            None => Some(CloseReason::Panicked {
                reason,
                answered: 0,
            }),
        }
    }

    fn poll_inner(&mut self, act: &mut Session, cx: &mut TaskContext<'_>) -> Poll<CloseReason> {
        let this = self;
        if act.close_requested {
            return Poll::Ready(CloseReason::Requested);
        }
        if !act.pushes.is_empty() {
            if this.phase == Phase::Open {
                for frame in act.pushes.drain(..) {
                    // Size checked by the handler.
                    let _ = this.out.push(&frame);
                }
            } else {
                act.pushes.clear(); // closing: nothing new goes out
            }
        }
        let mut reason = None;
        let result = match this.phase {
            Phase::Open | Phase::Draining => this.poll_io(act.origin, cx, &mut reason),
            Phase::Lingering => Poll::Pending,
        };
        if let Poll::Ready(reason) = result {
            this.publish(&act.gauge);
            return Poll::Ready(reason);
        }
        if this.phase != Phase::Open {
            act.announce_closed();
        }
        if let Some(r) = reason
            && !this.failed
        {
            // Remember why we started draining, for the final log line.
            act.pending_reason = Some(r);
        }
        this.publish(&act.gauge);

        // Cut a peer that keeps the write buffer over its cap.
        if this.out.len() >= this.limits.max_write_buffer {
            let stall = this.stall.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep(this.limits.write_stall_timeout))
            });
            if stall.as_mut().poll(cx).is_ready() {
                return Poll::Ready(CloseReason::Stalled(this.limits.write_stall_timeout));
            }
        } else {
            this.stall = None;
        }

        if this.phase == Phase::Draining && this.pending.is_empty() && this.out.is_empty() {
            // All answered and written: shut our side down, then linger.
            match Pin::new(&mut this.writer).poll_shutdown(cx) {
                Poll::Ready(_) => {
                    this.phase = Phase::Lingering;
                    this.deadline = Some(Box::pin(tokio::time::sleep(LINGER)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        if this.phase == Phase::Lingering {
            let mut scratch = [0u8; 4096];
            for _ in 0..READ_BUDGET {
                let mut buf = ReadBuf::new(&mut scratch);
                match Pin::new(this.reader.get_mut()).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) if !buf.filled().is_empty() => {}
                    Poll::Ready(_) => return Poll::Ready(act.take_reason()),
                    Poll::Pending => break,
                }
            }
        }
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(act.take_reason());
            }
        }
        Poll::Pending
    }
}

impl Session {
    /// Tells the subscribers the connection is over, once. Sent as soon as
    /// the peer stops sending (EOF, malformed input) even while replies
    /// are still draining: a client whose pull is held for 15 s is gone
    /// for membership purposes at once.
    fn announce_closed(&mut self) {
        if std::mem::replace(&mut self.closed_announced, true) {
            return;
        }
        let event = ConnectionClosed {
            conn_id: self.origin.conn_id,
            peer: self.origin.peer,
        };
        let subscribers = self
            .subscribers
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        for subscriber in subscribers {
            subscriber.do_send(event);
        }
    }

    fn take_reason(&mut self) -> CloseReason {
        self.pending_reason
            .take()
            .unwrap_or(CloseReason::PeerClosed)
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::Encoder;
    use bytes::{BufMut, Bytes, BytesMut};
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn over_the_memory_cap_only_idle_sessions_read() {
        assert!(memory_allows_read(10, 100, false));
        assert!(!memory_allows_read(100, 100, false));
        assert!(!memory_allows_read(500, 100, false));
        assert!(memory_allows_read(500, 100, true), "an idle peer is served");
        let shared = Shared::new(Some(100));
        shared.charge(0, 70);
        shared.charge(0, 50);
        shared.charge(70, 10);
        assert_eq!((shared.buffered(), shared.max_buffered()), (60, 120));
        shared.charge(50, 0);
        shared.charge(10, 0);
        assert_eq!(shared.buffered(), 0);
    }

    #[test]
    fn an_announced_large_frame_reserves_only_what_arrives() {
        let mut codec = session_codec(DEFAULT_MAX_FRAME_LEN);
        let mut src = BytesMut::new();
        // A 16 MiB frame announced, 8 bytes of it sent.
        src.put_u32(DEFAULT_MAX_FRAME_LEN);
        src.put_u32(0);
        assert!(codec.decode(&mut src).unwrap().is_none());
        assert!(
            src.capacity() <= 2 * READ_CHUNK,
            "reserved {} bytes for an 8-byte prefix",
            src.capacity()
        );
        // FrameCodec alone reserves the whole announced frame.
        let mut eager = src.clone();
        assert!(
            FrameCodec::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
                .decode(&mut eager)
                .unwrap()
                .is_none()
        );
        assert!(eager.capacity() >= DEFAULT_MAX_FRAME_LEN as usize);
    }

    #[test]
    fn frames_still_decode_whole_and_bad_lengths_fail() {
        let frame = Frame {
            header: Header::request(10, 7),
            fields: Bytes::from_static(b"\x80"),
            body: Bytes::from(vec![5u8; 200_000]),
        };
        let mut wire = BytesMut::new();
        FrameCodec::default()
            .encode(frame.clone(), &mut wire)
            .unwrap();
        let mut codec = session_codec(DEFAULT_MAX_FRAME_LEN);
        let mut src = BytesMut::new();
        let mut out = None;
        for chunk in wire.chunks(10_000) {
            src.extend_from_slice(chunk);
            if let Some(f) = codec.decode(&mut src).unwrap() {
                out = Some(f);
            }
        }
        assert_eq!(out.unwrap().body, frame.body);
        assert!(src.is_empty());

        let mut small = session_codec(1024);
        let mut src = BytesMut::new();
        src.put_u32(4096);
        assert!(small.decode(&mut src).is_err(), "over the frame cap");
    }
}

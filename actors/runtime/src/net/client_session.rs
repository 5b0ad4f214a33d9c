//! [`ClientSession`]: the one client transport. One supervised actor per
//! remote address (per [`Lane`]) owns the connection; callers hold a
//! [`ClientHandle`] that survives the actor's restarts.
//!
//! **The send path has no actor round trip.** A call encodes its request
//! frame straight into the session's shared write buffer, registers its
//! request id and awaits a oneshot; it wakes the session only when the
//! buffer was empty. The session's I/O driver runs as a future in the
//! actor's own context (as the broker's [`Session`](super::Session) does):
//! it writes everything buffered since its last write with one system call
//! (a burst of calls leaves in one write), decodes replies and completes
//! the waiting calls by request id, in any order, and checks deadlines with
//! one sweep (no timer per call).
//!
//! - **Connection**: opened when the first request is queued; after it
//!   drops, every pending call fails with `SYSTEM_ERROR` "connection lost:
//!   ..." and the next call reconnects at once. A failed connect fails the
//!   waiting calls and delays the next attempt (exponential backoff from
//!   [`ClientOptions::backoff_min`] to [`ClientOptions::backoff_max`]);
//!   calls arriving meanwhile wait for that attempt (within their deadline).
//! - **Request ids** start at 1 (0 is never used: servers use it for errors
//!   they cannot attribute, and such an error closes the connection).
//! - **Deadlines**: a call not answered by its deadline fails with
//!   `SYSTEM_ERROR` and a remark starting with "timeout"; a late reply is
//!   dropped. A call dropped before its reply removes its waiter.
//! - **Bounds**: at most [`ClientOptions::max_pending`] calls wait for a
//!   reply and at most [`ClientOptions::max_write_buffer`] bytes wait to be
//!   written; past either a call fails at once with `SYSTEM_BUSY`.
//! - **Server push**: requests the server sends on the connection (e.g.
//!   `NOTIFY_CONSUMER_IDS_CHANGED`, `CHECK_TRANSACTION_STATE`) are
//!   served by the [`Router`] given at creation, their origin the server's
//!   address (connection id 0); replies go back unless the request is
//!   oneway. At most [`MAX_INBOUND`] are served at once.
//! - **Supervision**: the actor runs under a [`Supervisor`] and is
//!   re-created from its factory after a panic. The driver catches a panic
//!   of its own and stops the incarnation cleanly. Whatever ends an
//!   incarnation fails its pending calls at once (never a hang); calls made
//!   while it is down wait in the buffer for the next incarnation. A
//!   session closed for good (its table closed, or its supervisor gave up)
//!   fails every call at once with the reason.
//! - **Actor callers**: the actor also handles [`Call<R>`] for any
//!   [`Rpc`], so [`ClientHandle::recipient`] is a `Recipient<Call<R>>` a
//!   caller cannot tell from the serving actor's own (location
//!   transparency), [`Oneway<R>`] and [`GetLinkState`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::frame::EMPTY_FIELDS;
use actormq_protocol::{DEFAULT_MAX_FRAME_LEN, Flags, Frame, FrameCodec, Header, ResponseCode};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use serde::Serialize;
use serde::de::DeserializeOwned;
use slog::{Logger, debug, info, o, warn};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::codec::FramedRead;

use super::reply::decode_reply;
use super::router::{ReplyFuture, Router};
use crate::call::{Call, Reply, Rpc, ServiceError};
use crate::guard::panic_message;
use crate::relay::CallRelay;
use crate::supervisor::{ChildRef, ChildSpec, SpawnChildInto, Supervisor};

/// Frames read per poll before the driver yields.
const READ_BUDGET: usize = 256;
/// Requests from the remote served at once, at most.
pub const MAX_INBOUND: usize = 1024;
/// Unsent bytes above which [`ClientHandle::oneway_paced`] waits for the
/// writer.
pub const ONEWAY_HIGH_WATER: usize = 4 * 1024 * 1024;
/// How often pending calls are checked against their deadline.
const SWEEP_TICK: Duration = Duration::from_millis(10);

/// Settings of a [`ClientSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long a call made without a deadline (a [`Call`] sent to the
    /// actor, [`ClientHandle::send`]) waits for its reply. Default 3 s.
    pub call_timeout: Duration,
    /// How long a connect may take. Default 3 s.
    pub connect_timeout: Duration,
    /// First delay after a failed connect. Default 50 ms.
    pub backoff_min: Duration,
    /// Longest delay between connect attempts. Default 2 s.
    pub backoff_max: Duration,
    /// Calls waiting for a reply, at most. Default 65 536.
    pub max_pending: usize,
    /// Request bytes waiting to be written, at most. Default 16 MiB.
    pub max_write_buffer: usize,
    /// Cap on a frame's length, both directions. Default 16 MiB.
    pub max_frame_len: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_pending: 65_536,
            max_write_buffer: 16 * 1024 * 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

/// Sends `R` without waiting for (or getting) a reply: the frame carries
/// the oneway flag. Resolves once the request is queued for writing.
#[derive(Debug, Clone, PartialEq)]
pub struct Oneway<R>(pub Call<R>);

impl<R: Rpc> Message for Oneway<R> {
    type Result = Result<(), ServiceError>;
}

/// Asks a [`ClientSession`] for the state of its connection.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "LinkState")]
pub struct GetLinkState;

/// The state of a [`ClientSession`]'s connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// Whether a connection is up.
    pub connected: bool,
    /// Whether a connect is under way.
    pub connecting: bool,
    /// Calls waiting for a reply.
    pub pending: usize,
    /// Request bytes waiting to be written.
    pub buffered_bytes: usize,
    /// Incarnations of the actor started so far (1 = never restarted).
    pub incarnations: u64,
}

type ReplyRx = oneshot::Receiver<Result<Frame, ServiceError>>;

/// A call waiting for its reply, until `deadline`.
struct Pending {
    tx: oneshot::Sender<Result<Frame, ServiceError>>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Down,
    Connecting,
    Up,
}

/// What callers and the driver share (under one mutex).
struct State {
    phase: Phase,
    /// Set once the session is closed for good: every call fails with it.
    closed: Option<String>,
    next_id: u64,
    /// Encoded frames not yet taken by the driver.
    out: BytesMut,
    /// Bytes the driver took and has not finished writing.
    writing: usize,
    pending: HashMap<u64, Pending>,
    /// Whether the driver's deadline sweep is armed.
    sweeping: bool,
    incarnations: u64,
}

struct Shared {
    remote: SocketAddr,
    opts: ClientOptions,
    logger: Logger,
    state: Mutex<State>,
    /// Wakes the driver (the actor's context).
    wake: AtomicWaker,
    /// Wakes drainers when the driver emptied the buffer.
    drained: Notify,
    /// Serves requests the remote sends on the connection.
    inbound: Option<Router>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fail(pending: &mut HashMap<u64, Pending>, why: &str) {
    for (_, p) in pending.drain() {
        let _ = p.tx.send(Err(ServiceError::system(why.to_owned())));
    }
}

/// Writes `req` as a MessagePack map (named fields) into `dst`.
pub fn serde_fields<Q: Serialize + ?Sized>(
    dst: &mut BytesMut,
    req: &Q,
) -> Result<(), ServiceError> {
    let mut w = dst.writer();
    rmp_serde::encode::write_named(&mut w, req)
        .map_err(|e| ServiceError::system(format!("cannot encode request: {e}")))
}

/// Encodes a request frame whose typed fields `fields` writes (a
/// MessagePack map) straight into `dst`. Leaves `dst` unchanged on error.
fn encode_frame(
    dst: &mut BytesMut,
    header: Header,
    body: &[u8],
    max_frame_len: u32,
    fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
) -> Result<(), ServiceError> {
    let start = dst.len();
    dst.reserve(8 + 48 + 128 + body.len());
    dst.put_u64(0); // frame length + header length, patched below
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
    if frame_len > u64::from(max_frame_len) {
        dst.truncate(start);
        return Err(actormq_protocol::Error::FrameTooLarge {
            frame_len,
            max: max_frame_len,
        }
        .into());
    }
    let prefix = &mut dst[start..start + 8];
    prefix[..4].copy_from_slice(&(frame_len as u32).to_be_bytes());
    prefix[4..].copy_from_slice(&(header_len as u32).to_be_bytes());
    dst.extend_from_slice(body);
    Ok(())
}

/// A caller's handle on the session for one address: cheap to clone, and
/// valid across the actor's restarts (the state calls need lives here, not
/// in the incarnation).
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
    child: ChildRef<ClientSession>,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle")
            .field("remote", &self.shared.remote)
            .finish()
    }
}

/// Removes a call's waiter if the call is dropped before its reply.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.shared.state).pending.remove(&self.id);
        }
    }
}

impl ClientHandle {
    /// A session for `remote` that is not running yet; start it with
    /// [`ClientHandle::spawn_under`]. Requests the remote sends are served
    /// by `inbound` (dropped without one).
    pub fn new(
        remote: SocketAddr,
        opts: ClientOptions,
        inbound: Option<Router>,
        logger: &Logger,
    ) -> ClientHandle {
        ClientHandle {
            shared: Arc::new(Shared {
                remote,
                opts,
                logger: logger.new(o!("actor" => "ClientSession", "remote" => remote.to_string())),
                state: Mutex::new(State {
                    phase: Phase::Down,
                    closed: None,
                    next_id: 1,
                    out: BytesMut::with_capacity(64 * 1024),
                    writing: 0,
                    pending: HashMap::new(),
                    sweeping: false,
                    incarnations: 0,
                }),
                wake: AtomicWaker::new(),
                drained: Notify::new(),
                inbound,
            }),
            child: ChildRef::empty(),
        }
    }

    /// Starts the session's actor as a child named `name` of `supervisor`
    /// (re-created from the same state after a panic). Calls made before it
    /// runs wait in the buffer.
    pub fn spawn_under(&self, supervisor: &Addr<Supervisor>, name: impl Into<String>) {
        let shared = self.shared.clone();
        let child = self.child.clone();
        let spec = ChildSpec::new(name, move || {
            Ok(ClientSession {
                shared: shared.clone(),
                child: child.clone(),
            })
        });
        supervisor.do_send(SpawnChildInto {
            spec,
            handle: self.child.clone(),
        });
    }

    /// The remote address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.remote
    }

    /// The supervised actor (its current incarnation).
    pub fn child(&self) -> &ChildRef<ClientSession> {
        &self.child
    }

    /// A `Recipient` for `Call<R>` that reaches the current incarnation
    /// (through a relay actor; for actor code, not for hot paths).
    pub fn recipient<R: Rpc>(&self) -> Recipient<Call<R>> {
        CallRelay::new(self.child.clone()).start().recipient()
    }

    /// Closes the session for good: pending and later calls fail with
    /// `why`. (Stopping its actor is its supervisor's business.)
    pub fn close(&self, why: &str) {
        let mut s = lock(&self.shared.state);
        if s.closed.is_none() {
            s.closed = Some(why.to_owned());
        }
        s.out.clear();
        fail(&mut s.pending, why);
        drop(s);
        self.shared.drained.notify_waiters();
        self.shared.wake.wake();
    }

    /// The state of the connection.
    pub fn state(&self) -> LinkState {
        let s = lock(&self.shared.state);
        LinkState {
            connected: s.phase == Phase::Up,
            connecting: s.phase == Phase::Connecting,
            pending: s.pending.len(),
            buffered_bytes: s.out.len() + s.writing,
            incarnations: s.incarnations,
        }
    }

    /// Bytes queued or being written.
    pub fn buffered_bytes(&self) -> usize {
        let s = lock(&self.shared.state);
        s.out.len() + s.writing
    }

    /// Queues a request frame (and registers a waiter unless `deadline` is
    /// `None`: oneway); returns the request id and the reply receiver.
    fn enqueue(
        &self,
        code: u32,
        fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
        body: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Option<(u64, ReplyRx)>, ServiceError> {
        let sh = &*self.shared;
        let mut s = lock(&sh.state);
        if let Some(why) = &s.closed {
            return Err(ServiceError::system(why.clone()));
        }
        if s.out.len() + s.writing >= sh.opts.max_write_buffer {
            return Err(ServiceError::busy(format!(
                "{}: write buffer full ({} bytes unsent)",
                sh.remote,
                s.out.len() + s.writing
            )));
        }
        if deadline.is_some() && s.pending.len() >= sh.opts.max_pending {
            return Err(ServiceError::busy(format!(
                "{}: too many calls pending",
                sh.remote
            )));
        }
        let id = s.next_id;
        s.next_id = s.next_id.checked_add(1).unwrap_or(1);
        let was_empty = s.out.is_empty();
        let mut header = Header::request(code, id);
        if deadline.is_none() {
            header.flags = header.flags.with(Flags::ONEWAY);
        }
        encode_frame(&mut s.out, header, body, sh.opts.max_frame_len, fields)?;
        let mut wake = match s.phase {
            Phase::Up => was_empty,
            Phase::Connecting => false,
            Phase::Down => true,
        };
        let rx = deadline.map(|deadline| {
            let (tx, rx) = oneshot::channel();
            s.pending.insert(id, Pending { tx, deadline });
            if !s.sweeping {
                s.sweeping = true;
                wake = true;
            }
            (id, rx)
        });
        drop(s);
        if wake {
            sh.wake.wake();
        }
        Ok(rx)
    }

    /// Calls `req` with `body` and the default timeout.
    pub async fn call<R: Rpc>(
        &self,
        req: &R,
        body: &[u8],
    ) -> Result<Reply<R::Response>, ServiceError> {
        let deadline = Instant::now() + self.shared.opts.call_timeout;
        self.call_until(R::CODE, req, body, deadline).await
    }

    /// Sends `call` and awaits its reply (default timeout), as sending it
    /// to the actor would, without the mailbox.
    pub async fn send<R: Rpc>(&self, call: Call<R>) -> Result<Reply<R::Response>, ServiceError> {
        self.call(&call.req, &call.body).await
    }

    /// Calls a request given by its code and any serializable fields (e.g.
    /// a borrowed mirror of a request type, so nothing is cloned to encode
    /// it), failing with a "timeout" error at `deadline`; the reply fields
    /// decode as `T`.
    pub async fn call_until<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
        deadline: impl Into<Instant>,
    ) -> Result<Reply<T>, ServiceError> {
        self.call_encoded(code, |dst| serde_fields(dst, req), body, deadline)
            .await
    }

    /// Like [`ClientHandle::call_until`] with the typed fields written by
    /// `fields` (a MessagePack map, e.g. hand-encoded on a hot path).
    pub async fn call_encoded<T: DeserializeOwned>(
        &self,
        code: u32,
        fields: impl FnOnce(&mut BytesMut) -> Result<(), ServiceError>,
        body: &[u8],
        deadline: impl Into<Instant>,
    ) -> Result<Reply<T>, ServiceError> {
        let deadline = deadline.into();
        let Some((id, rx)) = self.enqueue(code, fields, body, Some(deadline))? else {
            unreachable!("a call always has a waiter");
        };
        let mut guard = PendingGuard {
            shared: &self.shared,
            id,
            armed: true,
        };
        let res = rx.await;
        guard.armed = false;
        match res {
            Err(_) => Err(ServiceError::system("connection lost")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(frame)) => decode_reply::<T>(&frame),
        }
    }

    /// Queues `req` as a oneway frame (no reply); returns once queued.
    pub fn oneway<Q: Serialize + ?Sized>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
    ) -> Result<(), ServiceError> {
        self.enqueue(code, |dst| serde_fields(dst, req), body, None)?;
        Ok(())
    }

    /// Queues a oneway request like [`ClientHandle::oneway`], then gives
    /// the driver a turn: yields, or, with [`ONEWAY_HIGH_WATER`] bytes or
    /// more unsent, waits (at most 3 s) until they are written. So a tight
    /// loop of oneway sends is paced by the socket instead of filling the
    /// buffer and failing with `SYSTEM_BUSY`.
    pub async fn oneway_paced<Q: Serialize + ?Sized>(
        &self,
        code: u32,
        req: &Q,
        body: &[u8],
    ) -> Result<(), ServiceError> {
        self.oneway(code, req, body)?;
        if self.buffered_bytes() >= ONEWAY_HIGH_WATER {
            self.drain(Instant::now() + Duration::from_secs(3)).await;
        } else {
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Waits until everything queued is written, the connection is down,
    /// or `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        loop {
            let notified = self.shared.drained.notified();
            {
                let s = lock(&self.shared.state);
                let idle = s.out.is_empty() && s.writing == 0;
                if idle || s.phase == Phase::Down || s.closed.is_some() {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// The session actor for one remote address. See the module docs.
pub struct ClientSession {
    shared: Arc<Shared>,
    child: ChildRef<ClientSession>,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("remote", &self.shared.remote)
            .finish()
    }
}

impl ClientSession {
    fn client_handle(&self) -> ClientHandle {
        ClientHandle {
            shared: self.shared.clone(),
            child: self.child.clone(),
        }
    }
}

impl Actor for ClientSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let incarnations = {
            let mut s = lock(&self.shared.state);
            s.incarnations += 1;
            s.phase = Phase::Down;
            s.sweeping = false;
            s.incarnations
        };
        if incarnations > 1 {
            info!(self.shared.logger, "client session restarted"; "incarnation" => incarnations);
        }
        let driver = Driver::new(self.shared.clone());
        ctx.spawn(
            fut::wrap_future::<_, Self>(driver).map(|why, act: &mut Self, ctx| {
                warn!(act.shared.logger, "client session driver failed; restarting"; "reason" => &why);
                ctx.stop();
            }),
        );
    }
}

impl<R: Rpc> Handler<Call<R>> for ClientSession {
    type Result = ResponseFuture<Result<Reply<R::Response>, ServiceError>>;

    fn handle(&mut self, call: Call<R>, _: &mut Context<Self>) -> Self::Result {
        let handle = self.client_handle();
        Box::pin(async move { handle.send(call).await })
    }
}

impl<R: Rpc> Handler<Oneway<R>> for ClientSession {
    type Result = Result<(), ServiceError>;

    fn handle(&mut self, msg: Oneway<R>, _: &mut Context<Self>) -> Self::Result {
        self.client_handle()
            .oneway(R::CODE, &msg.0.req, &msg.0.body)
    }
}

impl Handler<GetLinkState> for ClientSession {
    type Result = MessageResult<GetLinkState>;

    fn handle(&mut self, _: GetLinkState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.client_handle().state())
    }
}

/// Test hook: the session's handler panics (its incarnation dies).
#[cfg(feature = "fault-injection")]
impl Handler<crate::guard::InjectPanic> for ClientSession {
    type Result = ();
    fn handle(&mut self, msg: crate::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

/// The connection's I/O in the phase where it is up.
struct Conn {
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
    /// The frames being written (taken from the shared buffer).
    buf: BytesMut,
    written: usize,
    /// Requests from the remote being served.
    serving: FuturesUnordered<ReplyFuture>,
}

type Connect = Pin<Box<dyn Future<Output = std::io::Result<TcpStream>>>>;

enum Io {
    /// No connection; connect when there is something to send.
    Idle,
    /// Waiting out the backoff before the next connect.
    Waiting(Pin<Box<Sleep>>),
    Connecting(Connect),
    Up(Box<Conn>),
}

/// The I/O driver of one incarnation, polled in the actor's context. It
/// only ends (with the reason) when it panicked; its drop fails whatever
/// was pending on the incarnation.
struct Driver {
    shared: Arc<Shared>,
    io: Io,
    backoff: Duration,
    retry_at: Option<Instant>,
    sweep: Option<Pin<Box<Sleep>>>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let mut s = lock(&self.shared.state);
        s.phase = Phase::Down;
        s.sweeping = false;
        s.writing = 0;
        // Frames of calls failed below (and of oneway requests queued while
        // the connection was down) go with the incarnation.
        s.out.clear();
        let why = match &s.closed {
            Some(why) => why.clone(),
            None => format!("client session to {} stopped", self.shared.remote),
        };
        fail(&mut s.pending, &why);
        drop(s);
        self.shared.drained.notify_waiters();
    }
}

impl Future for Driver {
    type Output = String;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<String> {
        let this = self.get_mut();
        match catch_unwind(AssertUnwindSafe(|| this.poll_inner(cx))) {
            Ok(()) => Poll::Pending,
            Err(payload) => Poll::Ready(format!(
                "driver panicked: {}",
                panic_message(payload.as_ref())
            )),
        }
    }
}

impl Driver {
    fn new(shared: Arc<Shared>) -> Driver {
        let backoff = shared.opts.backoff_min;
        Driver {
            shared,
            io: Io::Idle,
            backoff,
            retry_at: None,
            sweep: None,
        }
    }

    fn poll_inner(&mut self, cx: &mut TaskContext<'_>) {
        self.shared.wake.register(cx.waker());
        loop {
            match &mut self.io {
                Io::Idle => {
                    let s = lock(&self.shared.state);
                    if s.closed.is_some() || s.out.is_empty() {
                        break;
                    }
                    drop(s);
                    let now = Instant::now();
                    match self.retry_at {
                        Some(at) if at > now => {
                            self.io = Io::Waiting(Box::pin(tokio::time::sleep_until(at)));
                        }
                        _ => self.connect(),
                    }
                }
                Io::Waiting(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.retry_at = None;
                        self.io = Io::Idle;
                    }
                    Poll::Pending => break,
                },
                Io::Connecting(fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(stream)) => self.up(stream),
                    Poll::Ready(Err(err)) => self.connect_failed(&err),
                },
                Io::Up(conn) => match Self::poll_conn(&self.shared, conn, cx) {
                    Ok(()) => break,
                    Err(why) => self.lost(&why),
                },
            }
        }
        self.poll_sweep(cx);
    }

    fn connect(&mut self) {
        lock(&self.shared.state).phase = Phase::Connecting;
        let (remote, timeout) = (self.shared.remote, self.shared.opts.connect_timeout);
        self.io = Io::Connecting(Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(remote)).await {
                Ok(res) => res,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )),
            }
        }));
    }

    fn up(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        debug!(self.shared.logger, "connected");
        lock(&self.shared.state).phase = Phase::Up;
        self.backoff = self.shared.opts.backoff_min;
        self.retry_at = None;
        let (read, write) = stream.into_split();
        self.io = Io::Up(Box::new(Conn {
            reader: FramedRead::new(
                read,
                FrameCodec::with_max_frame_len(self.shared.opts.max_frame_len),
            ),
            writer: write,
            buf: BytesMut::with_capacity(64 * 1024),
            written: 0,
            serving: FuturesUnordered::new(),
        }));
    }

    fn connect_failed(&mut self, err: &std::io::Error) {
        info!(self.shared.logger, "connect failed"; "error" => %err, "retry_in" => ?self.backoff);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(self.shared.opts.backoff_max);
        self.io = Io::Idle;
        let why = format!("connect to {} failed: {err}", self.shared.remote);
        let mut s = lock(&self.shared.state);
        s.phase = Phase::Down;
        s.out.clear();
        fail(&mut s.pending, &why);
        drop(s);
        self.shared.drained.notify_waiters();
    }

    fn lost(&mut self, why: &str) {
        self.io = Io::Idle;
        let mut s = lock(&self.shared.state);
        info!(self.shared.logger, "disconnected"; "reason" => why, "pending" => s.pending.len());
        s.phase = Phase::Down;
        s.out.clear();
        s.writing = 0;
        fail(&mut s.pending, &format!("connection lost: {why}"));
        drop(s);
        self.shared.drained.notify_waiters();
    }

    /// Reads replies, serves pushed requests, writes what is buffered.
    fn poll_conn(shared: &Shared, conn: &mut Conn, cx: &mut TaskContext<'_>) -> Result<(), String> {
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            match conn.reader.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    budget -= 1;
                    if !frame.is_response() {
                        Self::serve_inbound(shared, conn, frame);
                        continue;
                    }
                    let id = frame.header.request_id;
                    let waiter = lock(&shared.state).pending.remove(&id);
                    if let Some(p) = waiter {
                        let _ = p.tx.send(Ok(frame));
                    } else if id == 0 {
                        let code = frame.response_code().unwrap_or(ResponseCode::SystemError);
                        let remark = frame.header.remark.unwrap_or_default();
                        return Err(format!("server error {code}: {remark}"));
                    }
                }
                Poll::Ready(Some(Err(e))) => return Err(e.to_string()),
                Poll::Ready(None) => return Err("closed by peer".into()),
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(reply)) = conn.serving.poll_next_unpin(cx) {
            if let Some(reply) = reply {
                let mut s = lock(&shared.state);
                let before = s.out.len();
                if reply
                    .encode_head(&mut s.out, shared.opts.max_frame_len)
                    .is_ok()
                {
                    s.out.extend_from_slice(&reply.body);
                } else {
                    s.out.truncate(before);
                }
            }
        }
        loop {
            if conn.written == conn.buf.len() {
                let had = !conn.buf.is_empty();
                conn.buf.clear();
                conn.written = 0;
                let mut s = lock(&shared.state);
                if s.out.is_empty() {
                    s.writing = 0;
                    drop(s);
                    if had {
                        shared.drained.notify_waiters();
                    }
                    return Ok(());
                }
                std::mem::swap(&mut s.out, &mut conn.buf);
                s.writing = conn.buf.len();
            }
            match Pin::new(&mut conn.writer).poll_write(cx, &conn.buf[conn.written..]) {
                Poll::Ready(Ok(0)) => return Err("connection closed while writing".into()),
                Poll::Ready(Ok(n)) => conn.written += n,
                Poll::Ready(Err(e)) => return Err(e.to_string()),
                Poll::Pending => return Ok(()),
            }
        }
    }

    fn serve_inbound(shared: &Shared, conn: &mut Conn, frame: Frame) {
        let Some(router) = &shared.inbound else {
            debug!(shared.logger, "request from remote dropped: no handlers"; "code" => frame.header.code);
            return;
        };
        if conn.serving.len() >= MAX_INBOUND {
            info!(shared.logger, "request from remote refused: too many in flight"; "code" => frame.header.code);
            if !frame.is_oneway() {
                let busy = Frame::error(
                    frame.header.request_id,
                    ResponseCode::SystemBusy,
                    "too many requests in flight",
                );
                let mut s = lock(&shared.state);
                let _ = busy.encode_head(&mut s.out, shared.opts.max_frame_len);
            }
            return;
        }
        // The handler may answer the server by another call (a producer's
        // END_TRANSACTION answers CHECK_TRANSACTION_STATE): say who asked.
        let origin = crate::call::Origin {
            conn_id: 0,
            peer: shared.remote,
        };
        conn.serving.push(router.dispatch(frame, Some(origin)));
    }

    /// Fails calls past their deadline; armed while calls are pending.
    fn poll_sweep(&mut self, cx: &mut TaskContext<'_>) {
        loop {
            if let Some(sleep) = &mut self.sweep
                && sleep.as_mut().poll(cx).is_pending()
            {
                return;
            }
            // The tick passed (or no sweep was armed): check deadlines.
            let mut s = lock(&self.shared.state);
            let now = Instant::now();
            let remote = self.shared.remote;
            s.pending.retain(|_, p| {
                if p.deadline > now {
                    return true;
                }
                let (tx, _) = oneshot::channel();
                let tx = std::mem::replace(&mut p.tx, tx);
                let _ = tx.send(Err(ServiceError::system(format!(
                    "timeout: no reply from {remote} in time"
                ))));
                false
            });
            if s.pending.is_empty() {
                s.sweeping = false;
                self.sweep = None;
                return;
            }
            s.sweeping = true;
            let tick = if s.pending.len() < 4096 {
                SWEEP_TICK
            } else {
                SWEEP_TICK * 10
            };
            drop(s);
            self.sweep = Some(Box::pin(tokio::time::sleep(tick)));
        }
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::{Bytes, Decoder, FrameCodec};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Probe {
        topic: String,
        queue_id: u32,
    }

    #[test]
    fn encodes_like_frame_request() {
        let req = Probe {
            topic: "t".into(),
            queue_id: 3,
        };
        let body = b"hello body";
        let mut direct = BytesMut::new();
        encode_frame(&mut direct, Header::request(30, 7), body, u32::MAX, |d| {
            serde_fields(d, &req)
        })
        .unwrap();
        let mut fields = Vec::new();
        rmp_serde::encode::write_named(&mut fields, &req).unwrap();
        let frame = Frame {
            header: Header::request(30, 7),
            fields: Bytes::from(fields),
            body: Bytes::from_static(body),
        };
        let mut expected = BytesMut::new();
        frame.encode_head(&mut expected, u32::MAX).unwrap();
        expected.extend_from_slice(body);
        assert_eq!(direct, expected);
        let decoded = FrameCodec::new().decode(&mut direct).unwrap().unwrap();
        assert_eq!(decoded, frame);
    }

    #[test]
    fn empty_fields_and_oversized_frames() {
        let mut dst = BytesMut::new();
        let mut header = Header::request(5, 1);
        header.flags = header.flags.with(Flags::ONEWAY);
        encode_frame(&mut dst, header, &[], u32::MAX, |_| Ok(())).unwrap();
        let decoded = FrameCodec::new().decode(&mut dst).unwrap().unwrap();
        assert!(decoded.is_oneway());
        assert_eq!(&decoded.fields[..], EMPTY_FIELDS);
        // Too large: nothing is left in the buffer.
        let mut dst = BytesMut::from(&b"kept"[..]);
        let err = encode_frame(&mut dst, Header::request(5, 2), &[0; 64], 32, |_| Ok(()));
        assert!(err.is_err());
        assert_eq!(&dst[..], b"kept");
    }
}

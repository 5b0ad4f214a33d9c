//! [`RemoteClient`]: the proxy for actors on another node, one per remote
//! address.
//!
//! `client.recipient::<Call<R>>()` is a `Recipient<Call<R>>` that sends
//! the request as a frame and answers with the decoded reply, so a caller
//! cannot tell it from the serving actor's own recipient. The reply rule is
//! [`decode_reply`] (the mirror of the router's).
//!
//! - **Connection**: opened on the first call; after it drops, every
//!   pending call fails with "connection lost" and the next call reconnects
//!   at once. A failed connect fails the waiting calls and delays the next
//!   attempt (exponential backoff from [`RemoteOptions::backoff_min`] to
//!   [`RemoteOptions::backoff_max`]); calls arriving meanwhile wait for that
//!   attempt (within their timeout).
//! - **Pipelining**: request ids are assigned here (from 1; 0 is never
//!   used, servers use it for errors they cannot attribute); any number of
//!   calls are in flight on the one connection and replies are matched by
//!   id, in any order.
//! - **Timeouts**: a call not answered within [`RemoteOptions::call_timeout`]
//!   fails with `SYSTEM_ERROR` and a remark starting with "timeout". A late
//!   reply is dropped.
//! - **Lifetime**: the actor stops (closing its connection) once no
//!   `Addr` or `Recipient` of it is left and no call is pending.
//! - **Bounds**: at most [`RemoteOptions::max_pending`] calls wait for a
//!   reply and at most [`RemoteOptions::max_write_buffer`] bytes wait to be
//!   written; past either, a call fails at once with `SYSTEM_BUSY`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::{DEFAULT_MAX_FRAME_LEN, Flags, Frame, FrameCodec, Header, ResponseCode};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use slog::{Logger, debug, info, o};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::outbox::Outbox;
use super::reply::decode_reply;
use super::router::{ReplyFuture, Router};
use crate::call::{Call, Reply, Rpc, ServiceError};

/// Replies read per poll before the driver yields.
const READ_BUDGET: usize = 256;
/// Requests from the remote served at once, at most.
pub const MAX_INBOUND: usize = 1024;

/// Settings of a [`RemoteClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteOptions {
    /// How long a call waits for its reply. Default 3 s.
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

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
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

/// Asks a [`RemoteClient`] for the state of its connection.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "LinkState")]
pub struct GetLinkState;

/// The state of a [`RemoteClient`]'s connection.
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
}

struct PendingCall {
    tx: oneshot::Sender<Result<Frame, ServiceError>>,
    deadline: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection; connect on demand (not before `retry_at`).
    Down,
    Connecting,
    Up,
}

/// The proxy actor for one remote address. See the module docs.
pub struct RemoteClient {
    remote: SocketAddr,
    opts: RemoteOptions,
    logger: Logger,
    next_id: u64,
    pending: HashMap<u64, PendingCall>,
    out: Outbox,
    link: Link,
    /// Bumped on every connection, so a stale driver stops.
    generation: u64,
    backoff: Duration,
    retry_at: Option<Instant>,
    retry_scheduled: bool,
    /// Whether the deadline check is scheduled (only while calls pend).
    expiry_scheduled: bool,
    /// Serves requests the remote sends on this connection (server push).
    inbound: Option<Router>,
    /// Inbound requests being served.
    serving: FuturesUnordered<ReplyFuture>,
}

impl std::fmt::Debug for RemoteClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteClient")
            .field("remote", &self.remote)
            .field("link", &self.link)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl RemoteClient {
    /// A proxy for `remote` with default options (not started).
    pub fn new(remote: SocketAddr, logger: &Logger) -> RemoteClient {
        RemoteClient::with_options(remote, RemoteOptions::default(), logger)
    }

    /// A proxy for `remote` with `opts` (not started).
    pub fn with_options(remote: SocketAddr, opts: RemoteOptions, logger: &Logger) -> RemoteClient {
        RemoteClient {
            remote,
            opts,
            logger: logger.new(o!("actor" => "RemoteClient", "remote" => remote.to_string())),
            next_id: 1,
            pending: HashMap::new(),
            out: Outbox::new(opts.max_frame_len),
            link: Link::Down,
            generation: 0,
            backoff: opts.backoff_min,
            retry_at: None,
            retry_scheduled: false,
            expiry_scheduled: false,
            inbound: None,
            serving: FuturesUnordered::new(),
        }
    }

    /// Serves requests the remote sends over this client's connection
    /// (server push, e.g. `NOTIFY_CONSUMER_IDS_CHANGED`) with `router`;
    /// replies go back unless the request is oneway. Without a router such
    /// requests are dropped. At most [`MAX_INBOUND`] are served at once;
    /// past that they are refused (`SYSTEM_BUSY`) or, if oneway, dropped.
    #[must_use]
    pub fn with_router(mut self, router: Router) -> RemoteClient {
        self.inbound = Some(router);
        self
    }

    /// Starts a proxy for `remote` with default options on the current
    /// arbiter.
    pub fn connect(remote: SocketAddr, logger: &Logger) -> Addr<RemoteClient> {
        RemoteClient::new(remote, logger).start()
    }

    fn next_request_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Encodes and queues a request frame; returns its id.
    fn enqueue<R: Rpc>(
        &mut self,
        call: Call<R>,
        oneway: bool,
        ctx: &mut Context<Self>,
    ) -> Result<u64, ServiceError> {
        if self.out.len() >= self.opts.max_write_buffer {
            return Err(ServiceError::busy(format!(
                "{}: write buffer full ({} bytes unsent)",
                self.remote,
                self.out.len()
            )));
        }
        let mut fields = Vec::with_capacity(128);
        rmp_serde::encode::write_named(&mut fields, &call.req)
            .map_err(|e| ServiceError::system(format!("cannot encode request: {e}")))?;
        let id = self.next_request_id();
        let mut header = Header::request(R::CODE, id);
        if oneway {
            header.flags = header.flags.with(Flags::ONEWAY);
        }
        let frame = Frame {
            header,
            fields: Bytes::from(fields),
            body: call.body,
        };
        self.out.push(&frame).map_err(ServiceError::from)?;
        // No wake-up needed: handlers run inside the context's poll, which
        // polls the connection driver right after the mailbox.
        self.ensure_link(ctx);
        Ok(id)
    }

    fn ensure_link(&mut self, ctx: &mut Context<Self>) {
        if self.link != Link::Down {
            return;
        }
        let now = Instant::now();
        match self.retry_at {
            Some(at) if at > now => {
                if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    ctx.run_later(at - now, |act, ctx| {
                        act.retry_scheduled = false;
                        if act.link == Link::Down && !act.out.is_empty() {
                            act.open(ctx);
                        }
                    });
                }
            }
            _ => self.open(ctx),
        }
    }

    fn open(&mut self, ctx: &mut Context<Self>) {
        self.link = Link::Connecting;
        self.generation += 1;
        let generation = self.generation;
        let (remote, timeout) = (self.remote, self.opts.connect_timeout);
        let connect = async move {
            match tokio::time::timeout(timeout, TcpStream::connect(remote)).await {
                Ok(res) => res,
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {timeout:?}"),
                )),
            }
        };
        ctx.spawn(
            fut::wrap_future(connect)
                .map(move |res, act: &mut Self, ctx| act.connected(generation, res, ctx)),
        );
    }

    fn connected(
        &mut self,
        generation: u64,
        res: std::io::Result<TcpStream>,
        ctx: &mut Context<Self>,
    ) {
        if generation != self.generation {
            return;
        }
        match res {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                debug!(self.logger, "connected");
                self.link = Link::Up;
                self.backoff = self.opts.backoff_min;
                self.retry_at = None;
                let (read, write) = stream.into_split();
                let driver = ClientDriver {
                    generation,
                    reader: FramedRead::new(
                        read,
                        FrameCodec::with_max_frame_len(self.opts.max_frame_len),
                    ),
                    writer: write,
                };
                ctx.spawn(driver.map(move |reason, act: &mut Self, _| {
                    act.lost(generation, &format!("connection lost: {reason}"))
                }));
            }
            Err(err) => {
                info!(self.logger, "connect failed"; "error" => %err, "retry_in" => ?self.backoff);
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(self.opts.backoff_max);
                self.link = Link::Down;
                self.fail_all(&format!("connect to {} failed: {err}", self.remote));
            }
        }
    }

    fn lost(&mut self, generation: u64, why: &str) {
        if generation != self.generation {
            return;
        }
        info!(self.logger, "disconnected"; "reason" => why, "pending" => self.pending.len());
        self.link = Link::Down;
        self.generation += 1;
        // Replies to the remote's requests have nowhere to go now.
        self.serving = FuturesUnordered::new();
        self.fail_all(why);
    }

    fn fail_all(&mut self, why: &str) {
        self.out.clear();
        for (_, call) in self.pending.drain() {
            let _ = call.tx.send(Err(ServiceError::system(why.to_string())));
        }
    }

    /// Checks deadlines at a tenth of the timeout (10 ms .. 100 ms), while
    /// calls are pending.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        if self.expiry_scheduled {
            return;
        }
        self.expiry_scheduled = true;
        let tick = (self.opts.call_timeout / 10)
            .clamp(Duration::from_millis(10), Duration::from_millis(100));
        ctx.run_later(tick, |act, ctx| {
            act.expiry_scheduled = false;
            act.expire();
            if !act.pending.is_empty() {
                act.schedule_expiry(ctx);
            }
        });
    }

    fn expire(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        let timeout = self.opts.call_timeout;
        self.pending.retain(|id, call| {
            if call.deadline > now {
                return true;
            }
            let (tx, _) = oneshot::channel();
            let tx = std::mem::replace(&mut call.tx, tx);
            let _ = tx.send(Err(ServiceError::system(format!(
                "timeout: no reply to request {id} within {timeout:?}"
            ))));
            false
        });
    }
}

impl RemoteClient {
    fn serve_inbound(&mut self, frame: Frame) {
        let Some(router) = &self.inbound else {
            debug!(self.logger, "request from remote dropped: no router"; "code" => frame.header.code);
            return;
        };
        if self.serving.len() >= MAX_INBOUND {
            info!(self.logger, "request from remote refused: too many in flight"; "code" => frame.header.code);
            if !frame.is_oneway() {
                let busy = Frame::error(
                    frame.header.request_id,
                    ResponseCode::SystemBusy,
                    "too many requests in flight",
                );
                let _ = self.out.push(&busy);
            }
            return;
        }
        self.serving.push(router.dispatch(frame, None));
    }
}

impl Actor for RemoteClient {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.fail_all("remote client stopped");
    }
}

impl<R: Rpc> Handler<Call<R>> for RemoteClient {
    type Result = ResponseFuture<Result<Reply<R::Response>, ServiceError>>;

    fn handle(&mut self, call: Call<R>, ctx: &mut Context<Self>) -> Self::Result {
        if self.pending.len() >= self.opts.max_pending {
            let err = ServiceError::busy(format!("{}: too many calls pending", self.remote));
            return Box::pin(std::future::ready(Err(err)));
        }
        let id = match self.enqueue(call, false, ctx) {
            Ok(id) => id,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let (tx, rx) = oneshot::channel();
        let deadline = Instant::now() + self.opts.call_timeout;
        self.pending.insert(id, PendingCall { tx, deadline });
        self.schedule_expiry(ctx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(frame)) => decode_reply::<R::Response>(&frame),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(ServiceError::system("connection lost")),
            }
        })
    }
}

impl<R: Rpc> Handler<Oneway<R>> for RemoteClient {
    type Result = Result<(), ServiceError>;

    fn handle(&mut self, msg: Oneway<R>, ctx: &mut Context<Self>) -> Self::Result {
        self.enqueue(msg.0, true, ctx).map(|_| ())
    }
}

impl Handler<GetLinkState> for RemoteClient {
    type Result = MessageResult<GetLinkState>;

    fn handle(&mut self, _: GetLinkState, _: &mut Context<Self>) -> Self::Result {
        MessageResult(LinkState {
            connected: self.link == Link::Up,
            connecting: self.link == Link::Connecting,
            pending: self.pending.len(),
            buffered_bytes: self.out.len(),
        })
    }
}

/// The I/O of one connection, polled as an actor future; ends when the
/// connection fails or a newer one replaced it.
struct ClientDriver {
    generation: u64,
    reader: FramedRead<OwnedReadHalf, FrameCodec>,
    writer: OwnedWriteHalf,
}

impl ActorFuture<RemoteClient> for ClientDriver {
    type Output = String;

    fn poll(
        self: Pin<&mut Self>,
        act: &mut RemoteClient,
        ctx: &mut Context<RemoteClient>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<String> {
        let this = self.get_mut();
        if act.generation != this.generation {
            return Poll::Ready("replaced".into());
        }
        if !ctx.connected() && act.pending.is_empty() && act.out.is_empty() {
            // Nobody holds an address any more: close, and the actor stops.
            return Poll::Ready("no users left".into());
        }
        let mut budget = READ_BUDGET;
        while budget > 0 {
            match this.reader.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    budget -= 1;
                    if !frame.is_response() {
                        act.serve_inbound(frame);
                        continue;
                    }
                    if let Some(call) = act.pending.remove(&frame.header.request_id) {
                        let _ = call.tx.send(Ok(frame));
                    } else if frame.header.request_id == 0 {
                        let code = frame.response_code().unwrap_or(ResponseCode::SystemError);
                        let remark = frame.header.remark.unwrap_or_default();
                        return Poll::Ready(format!("server error {code}: {remark}"));
                    }
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(err.to_string()),
                Poll::Ready(None) => return Poll::Ready("closed by peer".into()),
                Poll::Pending => break,
            }
        }
        if budget == 0 {
            cx.waker().wake_by_ref();
        }
        while let Poll::Ready(Some(reply)) = act.serving.poll_next_unpin(cx) {
            if let Some(reply) = reply {
                let _ = act.out.push(&reply);
            }
        }
        match act.out.poll_flush(&mut this.writer, cx) {
            Poll::Ready(Err(err)) => Poll::Ready(err.to_string()),
            _ => Poll::Pending,
        }
    }
}

/// Test hook: the proxy's handler panics (its incarnation dies).
#[cfg(feature = "fault-injection")]
impl Handler<crate::guard::InjectPanic> for RemoteClient {
    type Result = ();
    fn handle(&mut self, msg: crate::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

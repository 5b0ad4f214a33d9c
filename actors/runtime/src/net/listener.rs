//! [`Listener`]: accepts TCP connections and starts a [`Session`] for each.
//!
//! Sessions run on the arbiters given in [`ListenerOptions::arbiters`],
//! round robin (one per core is the design's layout), or on the listener's
//! own arbiter when none are given. A session moved to another arbiter gets
//! its socket re-registered with that arbiter's runtime, so all its I/O
//! stays on its thread. Every session shares the listener's [`Router`].
//!
//! Stopping the listener ([`StopListener`]) stops accepting, closes the
//! listening socket and every session it started.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::Stream;
use slog::{Logger, info, o, warn};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::call::{Call, Rpc, ServiceError};
use crate::supervisor::ChildSpec;
use actormq_protocol::ResponseCode;

use super::accept::{AcceptBackoff, LogThrottle, is_resource_exhaustion};
use super::router::Router;
use super::session::{
    CloseSession, ConnectionClosed, Push, Session, SessionEnded, SessionGauge, SessionLimits,
    SessionSetup, SessionStats, Shared, Subscribers,
};

/// Connection ids are unique within the process.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Default of [`ListenerOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default of [`ListenerOptions::max_connection_memory`]: 1 GiB.
pub const DEFAULT_MAX_CONNECTION_MEMORY: usize = 1 << 30;

/// How often a repeated accept condition (descriptors exhausted, connection
/// cap reached) is logged, with a count.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Optional settings of [`Listener::bind_with`].
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Arbiters the sessions run on, round robin; empty = the listener's
    /// own arbiter.
    pub arbiters: Vec<ArbiterHandle>,
    /// Told of every closed connection from the start (more can subscribe
    /// later with [`SubscribeClosed`]).
    pub subscribers: Vec<Recipient<ConnectionClosed>>,
    /// Most connections open at once; a connection accepted past it is
    /// closed at once (logged once per second with a count). `None` = no
    /// limit. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: Option<usize>,
    /// Cap on the bytes all sessions of this listener hold together (read
    /// buffers + unsent replies); past it sessions stop reading new frames
    /// until memory is freed (backpressure, see [`Session`]). `None` = no
    /// limit. Default [`DEFAULT_MAX_CONNECTION_MEMORY`].
    pub max_connection_memory: Option<usize>,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            arbiters: Vec::new(),
            subscribers: Vec::new(),
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            max_connection_memory: Some(DEFAULT_MAX_CONNECTION_MEMORY),
        }
    }
}

/// Asks for the listener's counters ([`ListenerStats`]).
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "ListenerStats")]
pub struct GetListenerStats;

/// A listener's counters (of its current incarnation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerStats {
    /// Connections open now.
    pub connections: usize,
    /// Connections closed at accept because of the connection cap.
    pub refused: u64,
    /// Sessions that panicked (each closed its connection only).
    pub session_panics: u64,
    /// Bytes held by all sessions now (read buffers + unsent replies).
    pub buffered_bytes: usize,
    /// The most bytes held by all sessions at once.
    pub max_buffered_bytes: usize,
    /// The connection cap.
    pub max_connections: Option<usize>,
    /// The memory cap.
    pub max_connection_memory: Option<usize>,
}

/// Test hook: the session of connection `conn_id` panics in a handler.
/// Answers whether that connection was open.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Message)]
#[rtype(result = "bool")]
pub struct InjectSessionPanic {
    /// The connection.
    pub conn_id: u64,
    /// The panic message.
    pub reason: String,
}

/// Adds a subscriber to [`ConnectionClosed`] events.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SubscribeClosed(pub Recipient<ConnectionClosed>);

/// Asks for a snapshot of every live session's gauges.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "Vec<SessionStats>")]
pub struct GetSessionStats;

/// Stops accepting, closes the listening socket and all sessions.
#[derive(Debug, Clone, Copy, Default, Message)]
#[rtype(result = "()")]
pub struct StopListener;

/// Closes the connection with this id (e.g. to drop a peer); answers
/// whether such a connection was open.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "bool")]
pub struct CloseConnection(pub u64);

/// Sends a oneway request to the peer of connection `conn_id` (see
/// [`Push`]). Fails with `SERVICE_NOT_AVAILABLE` when that connection is
/// closed.
#[derive(Debug, Clone, PartialEq)]
pub struct PushTo<R> {
    /// The connection (as in [`Origin::conn_id`](crate::Origin)).
    pub conn_id: u64,
    /// The request.
    pub call: Call<R>,
}

impl<R: Rpc> Message for PushTo<R> {
    type Result = Result<(), ServiceError>;
}

struct SessionEntry {
    addr: Addr<Session>,
    peer: SocketAddr,
    gauge: Arc<SessionGauge>,
}

/// The accepting actor of one listening socket. See the module docs.
pub struct Listener {
    local: SocketAddr,
    /// The listening socket until `started` turns it into a stream.
    socket: Option<TcpListener>,
    router: Router,
    limits: SessionLimits,
    logger: Logger,
    arbiters: Vec<ArbiterHandle>,
    next_arbiter: usize,
    max_connections: Option<usize>,
    max_connection_memory: Option<usize>,
    refused: u64,
    shared: Arc<Shared>,
    sessions: HashMap<u64, SessionEntry>,
    subscribers: Subscribers,
    refused_log: LogThrottle,
    accept_error_log: LogThrottle,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.local)
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port) and starts accepting on the
    /// current arbiter; sessions run there too. Returns the listener and
    /// the address actually bound. Must be called inside a running actix
    /// `System`.
    pub fn bind(
        addr: impl ToSocketAddrs,
        router: Router,
        limits: SessionLimits,
        logger: &Logger,
    ) -> io::Result<(Addr<Listener>, SocketAddr)> {
        Listener::bind_with(addr, router, limits, ListenerOptions::default(), logger)
    }

    /// [`Listener::bind`] with session arbiters and initial subscribers.
    pub fn bind_with(
        addr: impl ToSocketAddrs,
        router: Router,
        limits: SessionLimits,
        options: ListenerOptions,
        logger: &Logger,
    ) -> io::Result<(Addr<Listener>, SocketAddr)> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        Listener::serve(std_listener, router, limits, options, logger)
    }

    /// Serves an already bound socket (bind first to learn the port that
    /// `:0` picked, e.g. to stamp it into stored messages, then serve).
    pub fn serve(
        std_listener: std::net::TcpListener,
        router: Router,
        limits: SessionLimits,
        options: ListenerOptions,
        logger: &Logger,
    ) -> io::Result<(Addr<Listener>, SocketAddr)> {
        let listener = Listener::build(std_listener, router, limits, options, logger)?;
        let local = listener.local;
        Ok((listener.start(), local))
    }

    /// A supervised listener over an already bound socket: the first
    /// incarnation serves `std_listener`; each restart binds the same
    /// address again (a failed bind is a failed start, which counts against
    /// the supervisor's budget and escalates once it is spent). Sessions
    /// of a dead incarnation are closed with it. Returns the child spec and
    /// the bound address.
    pub fn supervised(
        name: impl Into<String>,
        std_listener: std::net::TcpListener,
        router: Router,
        limits: SessionLimits,
        options: ListenerOptions,
        logger: &Logger,
    ) -> io::Result<(ChildSpec<Listener>, SocketAddr)> {
        let local = std_listener.local_addr()?;
        let first = Mutex::new(Some(std_listener));
        let logger = logger.clone();
        let spec = ChildSpec::new(name, move || {
            let socket = match first.lock().ok().and_then(|mut f| f.take()) {
                Some(socket) => socket,
                None => std::net::TcpListener::bind(local)
                    .map_err(|e| format!("cannot bind the listener again on {local}: {e}"))?,
            };
            Ok(Listener::build(
                socket,
                router.clone(),
                limits,
                options.clone(),
                &logger,
            )?)
        });
        Ok((spec, local))
    }

    /// The actor over `std_listener`; accepting starts with the actor.
    fn build(
        std_listener: std::net::TcpListener,
        router: Router,
        limits: SessionLimits,
        options: ListenerOptions,
        logger: &Logger,
    ) -> io::Result<Listener> {
        std_listener.set_nonblocking(true)?;
        let socket = TcpListener::from_std(std_listener)?;
        let local = socket.local_addr()?;
        let logger = logger.new(o!("actor" => "Listener", "addr" => local.to_string()));
        info!(logger, "listening"; "arbiters" => options.arbiters.len());
        Ok(Listener {
            local,
            socket: Some(socket),
            router,
            limits,
            logger,
            arbiters: options.arbiters,
            next_arbiter: 0,
            max_connections: options.max_connections,
            max_connection_memory: options.max_connection_memory,
            refused: 0,
            shared: Arc::new(Shared::new(options.max_connection_memory)),
            sessions: HashMap::new(),
            subscribers: Arc::new(Mutex::new(options.subscribers)),
            refused_log: LogThrottle::new(LOG_INTERVAL),
            accept_error_log: LogThrottle::new(LOG_INTERVAL),
        })
    }

    fn accept(&mut self, stream: TcpStream, peer: SocketAddr, ctx: &mut Context<Self>) {
        if let Some(max) = self.max_connections
            && self.sessions.len() >= max
        {
            self.refused += 1;
            if let Some(count) = self.refused_log.hit(Instant::now()) {
                warn!(self.logger, "connections refused: too many connections";
                    "last_peer" => %peer, "max" => max, "refused" => count);
            }
            return; // dropping the stream closes it
        }
        let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        let gauge = Arc::new(SessionGauge::default());
        let setup = SessionSetup {
            conn_id,
            peer,
            router: self.router.clone(),
            limits: self.limits,
            logger: self.logger.clone(),
            gauge: gauge.clone(),
            subscribers: self.subscribers.clone(),
            listener: Some(ctx.address().recipient()),
            shared: self.shared.clone(),
        };
        let addr = if self.arbiters.is_empty() {
            Session::start(stream, setup)
        } else {
            let arbiter = &self.arbiters[self.next_arbiter % self.arbiters.len()];
            self.next_arbiter = self.next_arbiter.wrapping_add(1);
            match stream.into_std() {
                Ok(std_stream) => Session::start_on(arbiter, std_stream, setup),
                Err(err) => {
                    warn!(self.logger, "cannot hand connection over"; "peer" => %peer, "error" => %err);
                    return;
                }
            }
        };
        self.sessions
            .insert(conn_id, SessionEntry { addr, peer, gauge });
    }
}

impl Actor for Listener {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(socket) = self.socket.take() {
            ctx.add_stream(Accept {
                socket,
                backoff: AcceptBackoff::default(),
                pause: None,
            });
        }
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for entry in self.sessions.values() {
            entry.addr.do_send(CloseSession);
        }
        info!(self.logger, "stopped listening");
    }
}

/// An accept that failed, and the pause before the next attempt.
type AcceptFailed = (io::Error, Option<Duration>);

/// The listening socket as a stream of accepted connections; pauses after
/// resource errors ([`AcceptBackoff`]).
struct Accept {
    socket: TcpListener,
    backoff: AcceptBackoff,
    pause: Option<Pin<Box<Sleep>>>,
}

impl Stream for Accept {
    type Item = Result<(TcpStream, SocketAddr), AcceptFailed>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        match self.socket.poll_accept(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(accepted)) => {
                self.backoff.on_accept();
                Poll::Ready(Some(Ok(accepted)))
            }
            Poll::Ready(Err(err)) => {
                let pause = self.backoff.on_error(is_resource_exhaustion(&err));
                self.pause = pause.map(|d| Box::pin(tokio::time::sleep(d)));
                Poll::Ready(Some(Err((err, pause))))
            }
        }
    }
}

impl StreamHandler<Result<(TcpStream, SocketAddr), AcceptFailed>> for Listener {
    fn handle(
        &mut self,
        item: Result<(TcpStream, SocketAddr), AcceptFailed>,
        ctx: &mut Context<Self>,
    ) {
        match item {
            Ok((stream, peer)) => self.accept(stream, peer, ctx),
            Err((err, pause)) => {
                if let Some(count) = self.accept_error_log.hit(Instant::now()) {
                    warn!(self.logger, "accept failed";
                        "error" => %err,
                        "failures" => count,
                        "pause_ms" => pause.map_or(0, |d| d.as_millis() as u64));
                }
            }
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<SessionEnded> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SessionEnded, _: &mut Context<Self>) {
        self.sessions.remove(&msg.conn_id);
    }
}

impl Handler<SubscribeClosed> for Listener {
    type Result = ();
    fn handle(&mut self, msg: SubscribeClosed, _: &mut Context<Self>) {
        if let Ok(mut subscribers) = self.subscribers.lock() {
            subscribers.push(msg.0);
        }
    }
}

impl Handler<GetSessionStats> for Listener {
    type Result = MessageResult<GetSessionStats>;
    fn handle(&mut self, _: GetSessionStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats: Vec<SessionStats> = self
            .sessions
            .iter()
            .map(|(id, e)| e.gauge.snapshot(*id, e.peer))
            .collect();
        stats.sort_by_key(|s| s.conn_id);
        MessageResult(stats)
    }
}

impl Handler<GetListenerStats> for Listener {
    type Result = MessageResult<GetListenerStats>;
    fn handle(&mut self, _: GetListenerStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ListenerStats {
            connections: self.sessions.len(),
            refused: self.refused,
            session_panics: self.shared.panics(),
            buffered_bytes: self.shared.buffered(),
            max_buffered_bytes: self.shared.max_buffered(),
            max_connections: self.max_connections,
            max_connection_memory: self.max_connection_memory,
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<InjectSessionPanic> for Listener {
    type Result = bool;
    fn handle(&mut self, msg: InjectSessionPanic, _: &mut Context<Self>) -> bool {
        match self.sessions.get(&msg.conn_id) {
            Some(entry) => {
                entry.addr.do_send(crate::guard::InjectPanic(msg.reason));
                true
            }
            None => false,
        }
    }
}

impl Handler<CloseConnection> for Listener {
    type Result = bool;
    fn handle(&mut self, msg: CloseConnection, _: &mut Context<Self>) -> bool {
        match self.sessions.get(&msg.0) {
            Some(entry) => {
                entry.addr.do_send(CloseSession);
                true
            }
            None => false,
        }
    }
}

impl<R: Rpc> Handler<PushTo<R>> for Listener {
    type Result = ResponseFuture<Result<(), ServiceError>>;

    fn handle(&mut self, msg: PushTo<R>, _: &mut Context<Self>) -> Self::Result {
        let Some(entry) = self.sessions.get(&msg.conn_id) else {
            let err = ServiceError::new(
                ResponseCode::ServiceNotAvailable,
                format!("connection {} is closed", msg.conn_id),
            );
            return Box::pin(std::future::ready(Err(err)));
        };
        let sent = entry.addr.send(Push(msg.call));
        Box::pin(async move { sent.await.map_err(ServiceError::from)? })
    }
}

/// Test hook: the listener's handler panics (its incarnation dies).
#[cfg(feature = "fault-injection")]
impl Handler<crate::guard::InjectPanic> for Listener {
    type Result = ();
    fn handle(&mut self, msg: crate::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

impl Handler<StopListener> for Listener {
    type Result = ();
    fn handle(&mut self, _: StopListener, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

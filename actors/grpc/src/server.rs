//! `GrpcServer`: the supervised actor that serves a node's gRPC port.
//!
//! The actor's (actix, so tokio) runtime accepts the connections: the
//! accept loop is spawned in the actor's context, so it stops with the
//! actor, and a restart serves the same bound socket again. Each
//! connection is a local task running hyper's HTTP/2 server over tonic's
//! generated `MessagingServiceServer`; a stopping actor ends them all
//! (a cancellation token). Every RPC is answered by the shared
//! [`GrpcSession`].
//!
//! tonic's own `transport::Server` is not used: it routes every request
//! through an axum router and a stack of tower layers (error recovery,
//! `grpc-timeout`, connect info) that this endpoint does not need, and
//! those cost more per unary call than the call's own decoding.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use slog::{Logger, debug, info, warn};
use tokio_util::sync::CancellationToken;

use crate::pb::messaging_service_server::MessagingServiceServer;
use crate::service::GrpcSession;

/// Pause after an accept error (out of file descriptors, say) before the
/// next accept, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `apache.rocketmq.v2.MessagingService` on a bound socket.
pub struct GrpcServer {
    socket: TcpListener,
    session: Arc<GrpcSession>,
    logger: Logger,
    /// Cancelled when the actor stops: ends its connections.
    connections: CancellationToken,
}

impl GrpcServer {
    /// A server for `socket` (bound already; cloned at each start).
    pub fn new(socket: TcpListener, session: Arc<GrpcSession>, logger: &Logger) -> Self {
        Self {
            socket,
            session,
            logger: logger.clone(),
            connections: CancellationToken::new(),
        }
    }

    fn listener(&self) -> std::io::Result<tokio::net::TcpListener> {
        let socket = self.socket.try_clone()?;
        socket.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(socket)
    }
}

/// HTTP/2 settings of every connection (hyper's defaults otherwise, as
/// tonic's server had them).
fn http2() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    builder
}

impl Actor for GrpcServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let listener = match self.listener() {
            Ok(listener) => listener,
            Err(e) => {
                warn!(self.logger, "grpc listener unusable"; "error" => %e);
                ctx.stop();
                return;
            }
        };
        if let Ok(addr) = self.socket.local_addr() {
            info!(self.logger, "grpc endpoint serving"; "addr" => %addr);
        }
        // A fresh token per start: a restarted actor serves again.
        self.connections = CancellationToken::new();
        let stop = self.connections.clone();
        let service = MessagingServiceServer::from_arc(Arc::clone(&self.session));
        let logger = self.logger.clone();
        let accept = async move {
            let builder = http2();
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(logger, "grpc accept failed"; "error" => %e);
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(logger, "grpc connection without TCP_NODELAY"; "peer" => %peer, "error" => %e);
                }
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service.clone()),
                );
                let (stop, logger) = (stop.clone(), logger.clone());
                tokio::task::spawn_local(async move {
                    tokio::select! {
                        served = conn => if let Err(e) = served {
                            debug!(logger, "grpc connection ended"; "peer" => %peer, "error" => %e);
                        },
                        () = stop.cancelled() => {}
                    }
                });
            }
        };
        ctx.spawn(accept.into_actor(self).map(|(), _, _| ()));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.connections.cancel();
    }
}

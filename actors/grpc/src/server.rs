//! `GrpcServer`: the supervised actor that serves a node's gRPC port.
//!
//! tonic runs on the actor's own (actix, so tokio) runtime: the server
//! future is spawned in the actor's context, so it stops with the actor,
//! and a restart serves the same bound socket again. Connections are
//! tokio tasks of that runtime; every RPC is answered by the shared
//! [`GrpcSession`].

use std::net::TcpListener;
use std::sync::Arc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use slog::{Logger, info, warn};
use tonic::transport::server::TcpIncoming;

use crate::pb::messaging_service_server::MessagingServiceServer;
use crate::service::GrpcSession;

/// Serves `apache.rocketmq.v2.MessagingService` on a bound socket.
pub struct GrpcServer {
    socket: TcpListener,
    session: Arc<GrpcSession>,
    logger: Logger,
}

impl GrpcServer {
    /// A server for `socket` (bound already; cloned at each start).
    pub fn new(socket: TcpListener, session: Arc<GrpcSession>, logger: &Logger) -> Self {
        Self {
            socket,
            session,
            logger: logger.clone(),
        }
    }

    fn incoming(&self) -> std::io::Result<TcpIncoming> {
        let socket = self.socket.try_clone()?;
        socket.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(socket)?;
        Ok(TcpIncoming::from(listener).with_nodelay(Some(true)))
    }
}

impl Actor for GrpcServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let incoming = match self.incoming() {
            Ok(incoming) => incoming,
            Err(e) => {
                warn!(self.logger, "grpc listener unusable"; "error" => %e);
                ctx.stop();
                return;
            }
        };
        if let Ok(addr) = self.socket.local_addr() {
            info!(self.logger, "grpc endpoint serving"; "addr" => %addr);
        }
        let service = MessagingServiceServer::from_arc(Arc::clone(&self.session));
        let serve = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming);
        ctx.spawn(serve.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                warn!(act.logger, "grpc server stopped"; "error" => %e);
            }
            ctx.stop();
        }));
    }
}

//! `HttpServer`: the supervised actor that serves a node's HTTP port.
//!
//! actix-web runs its own worker (one, on its own arbiter of the node's
//! actix `System`) over the bound socket; the actor holds the server's
//! handle, so stopping the actor (node shutdown, or its supervisor) stops
//! the server, and a restart serves the same bound socket again. Signals
//! are the node's: actix-web's own handling is off.

use std::net::TcpListener;
use std::sync::Arc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, WrapFuture};
use actix_web::dev::ServerHandle;
use slog::{Logger, info, warn};

use crate::api::{ApiConfig, Extra, configure};

/// Serves `/metrics`, `/api/...` and `/` on a bound socket.
pub struct HttpServer {
    socket: TcpListener,
    config: ApiConfig,
    extra: Arc<Extra>,
    handle: Option<ServerHandle>,
    logger: Logger,
}

impl HttpServer {
    /// A server for `socket` (bound already; cloned at each start).
    pub fn new(socket: TcpListener, config: ApiConfig, extra: Arc<Extra>, logger: &Logger) -> Self {
        Self {
            socket,
            config,
            extra,
            handle: None,
            logger: logger.new(slog::o!("actor" => "HttpServer")),
        }
    }
}

impl Actor for HttpServer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let socket = match self.socket.try_clone() {
            Ok(s) => s,
            Err(e) => {
                warn!(self.logger, "http listener unusable"; "error" => %e);
                ctx.stop();
                return;
            }
        };
        let (config, extra, log) = (
            self.config.clone(),
            Arc::clone(&self.extra),
            self.logger.clone(),
        );
        let server = actix_web::HttpServer::new(move || {
            let (config, extra, log) = (config.clone(), Arc::clone(&extra), log.clone());
            actix_web::App::new().configure(move |cfg| configure(cfg, config, extra, &log))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(socket);
        let server = match server {
            Ok(s) => s.run(),
            Err(e) => {
                warn!(self.logger, "http listener unusable"; "error" => %e);
                ctx.stop();
                return;
            }
        };
        if let Ok(addr) = self.socket.local_addr() {
            info!(self.logger, "http endpoint serving"; "addr" => %addr);
        }
        self.handle = Some(server.handle());
        ctx.spawn(server.into_actor(self).map(|result, act, ctx| {
            if let Err(e) = result {
                warn!(act.logger, "http server stopped"; "error" => %e);
            }
            ctx.stop();
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(handle) = self.handle.take() {
            // Not awaited: the worker finishes its requests and exits.
            actix::spawn(async move { handle.stop(true).await });
        }
    }
}

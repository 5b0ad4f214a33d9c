//! [`Connections`]: a client's one table of connections — one supervised
//! [`ClientSession`](actormq_runtime::net::ClientSession) per server
//! address and [`Lane`], shared by every part of the client (producer,
//! consumer, route cache, CLI).
//!
//! It wraps the runtime's [`ClientSessions`] and speaks the SDK's
//! [`ClientError`]. A [`ClientHandle`] is the direct, pipelined path to a
//! server: the caller encodes its frame into the session's write buffer
//! (no actor round trip per call; one write per burst; replies matched by
//! request id). Sessions reconnect by themselves with backoff and are
//! restarted by the table's supervisor if their actor dies, and the handle
//! stays valid throughout. `Connections` is cheap to clone (clones share
//! the table) and must be used inside an actix `System`.
//!
//! ```rust,ignore
//! let conns = Connections::new(&log);
//! let reply = conns
//!     .call("127.0.0.1:10911", GetMaxOffsetRequest { topic: "t".into(), queue_id: 0 }, Bytes::new(), timeout)
//!     .await?;
//! ```

use std::net::SocketAddr;
use std::time::Duration;

pub use actormq_runtime::net::{ClientHandle, Lane};
use actormq_runtime::net::{ClientOptions, ClientSessions, Router, resolve_addr};
use actormq_runtime::{Reply, Rpc};
use bytes::Bytes;
use slog::Logger;
use tokio::time::Instant;

use crate::error::ClientError;

/// The shared table of per-address sessions. See the module docs.
#[derive(Clone, Debug)]
pub struct Connections {
    sessions: ClientSessions,
}

/// Parses `host:port`: an IP address, or a host name resolved once
/// (`localhost:9876`).
pub fn parse_addr(addr: &str) -> Result<SocketAddr, ClientError> {
    resolve_addr(addr).map_err(ClientError::Invalid)
}

impl Connections {
    /// An empty table; sessions log through `logger`.
    pub fn new(logger: &Logger) -> Connections {
        Connections {
            sessions: ClientSessions::new(logger),
        }
    }

    /// An empty table whose [`Lane::Main`] sessions serve the requests
    /// servers push (e.g. `NOTIFY_CONSUMER_IDS_CHANGED`) with `handlers`.
    pub fn serving(handlers: Router, logger: &Logger) -> Connections {
        Connections {
            sessions: ClientSessions::with_options(
                ClientOptions::default(),
                Some(handlers),
                logger,
            ),
        }
    }

    /// The session to `addr` on [`Lane::Main`] (started on first use).
    pub fn session(&self, addr: &str) -> Result<ClientHandle, ClientError> {
        self.sessions.session(addr).map_err(ClientError::Invalid)
    }

    /// The session to `addr` on `lane` (started on first use).
    pub fn session_at(&self, addr: SocketAddr, lane: Lane) -> ClientHandle {
        self.sessions.session_at(addr, lane)
    }

    /// Calls `req` (with `body`) on the server at `addr`, failing with
    /// [`ClientError::Timeout`] after `timeout`.
    pub async fn call<R: Rpc>(
        &self,
        addr: &str,
        req: R,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply<R::Response>, ClientError> {
        self.session(addr)?
            .call_until(R::CODE, &req, &body, Instant::now() + timeout)
            .await
            .map_err(ClientError::from)
    }

    /// Sends `req` to `addr` without waiting for a reply (oneway frame);
    /// resolves once it is queued for writing (waiting for the socket
    /// while megabytes are unsent, see [`ClientHandle::oneway_paced`]).
    pub async fn oneway<R: Rpc>(&self, addr: &str, req: R, body: Bytes) -> Result<(), ClientError> {
        self.session(addr)?
            .oneway_paced(R::CODE, &req, &body)
            .await
            .map_err(ClientError::from)
    }

    /// Waits (at most `timeout`) until every session has written the
    /// requests it holds to its socket, e.g. oneway sends before exit.
    pub async fn drain(&self, timeout: Duration) {
        self.sessions.drain(timeout).await;
    }

    /// Closes every session (pending calls fail); the next use starts
    /// afresh.
    pub fn close_all(&self) {
        self.sessions.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert!(parse_addr("127.0.0.1:9876").is_ok());
        assert!(parse_addr(" 127.0.0.1:1 ").is_ok());
        assert!(matches!(parse_addr("nohost"), Err(ClientError::Invalid(_))));
        assert!(parse_addr("localhost:9876").is_ok());
    }
}

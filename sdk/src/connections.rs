//! [`Connections`]: one [`RemoteClient`] per server address, shared and
//! reused by every part of a client (producer, consumers, route cache).
//!
//! [`Connections::call`] and [`Connections::oneway`] go through the
//! table's [`Link`] for the address: a direct pipelined path with no actor
//! round trip per call (the caller encodes its frame into the connection's
//! write buffer; one write per burst; replies matched by request id). It
//! reconnects by itself after the connection drops, so a client never
//! needs a second connection to the same server. [`Connections::client`]
//! still hands out a [`RemoteClient`] actor for code that wants a
//! `Recipient`. `Connections` is cheap to clone (all clones share the
//! table) and must be used inside an actix `System`: connection tasks and
//! client actors run on the current arbiter.
//!
//! ```rust,ignore
//! let conns = Connections::new(&log);
//! let reply = conns
//!     .call("127.0.0.1:10911", GetMaxOffsetRequest { topic: "t".into(), queue_id: 0 }, Bytes::new(), timeout)
//!     .await?;
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::Addr;
use actormq_runtime::net::{GetLinkState, RemoteClient};
use actormq_runtime::{Reply, Rpc};
use bytes::Bytes;
use slog::Logger;

use crate::error::ClientError;
pub use crate::link::Link;

/// The shared table of per-address clients. See the module docs.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Mutex<HashMap<SocketAddr, Addr<RemoteClient>>>>,
    /// Direct links, by the address string callers use (no parse per call).
    links: Arc<Mutex<HashMap<String, Link>>>,
    logger: Logger,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.inner.lock().map(|m| m.len()).unwrap_or_default();
        let l = self.links.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("Connections")
            .field("clients", &n)
            .field("links", &l)
            .finish()
    }
}

/// Parses `host:port`: an IP address, or a host name resolved once
/// (`localhost:9876`).
pub fn parse_addr(addr: &str) -> Result<SocketAddr, ClientError> {
    let addr = addr.trim();
    if let Ok(sock) = addr.parse() {
        return Ok(sock);
    }
    use std::net::ToSocketAddrs;
    let mut resolved = addr
        .to_socket_addrs()
        .map_err(|e| ClientError::Invalid(format!("bad address {addr:?}: {e}")))?;
    resolved
        .next()
        .ok_or_else(|| ClientError::Invalid(format!("bad address {addr:?}: resolves to nothing")))
}

impl Connections {
    /// An empty table; clients log through `logger`.
    pub fn new(logger: &Logger) -> Connections {
        Connections {
            inner: Arc::new(Mutex::new(HashMap::new())),
            links: Arc::new(Mutex::new(HashMap::new())),
            logger: logger.clone(),
        }
    }

    /// The client for `addr`, started on first use (or again if the old
    /// one stopped).
    pub fn client(&self, addr: SocketAddr) -> Addr<RemoteClient> {
        let mut table = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = table.get(&addr)
            && c.connected()
        {
            return c.clone();
        }
        let c = RemoteClient::connect(addr, &self.logger);
        table.insert(addr, c.clone());
        c
    }

    /// The direct link to `addr` (created on first use).
    pub fn link(&self, addr: &str) -> Result<Link, ClientError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = links.get(addr) {
            return Ok(l.clone());
        }
        let link = Link::new(parse_addr(addr)?, &self.logger);
        links.insert(addr.to_owned(), link.clone());
        Ok(link)
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
        self.link(addr)?.call(&req, &body, timeout).await
    }

    /// Sends `req` to `addr` without waiting for a reply (oneway frame);
    /// resolves once it is queued for writing (waiting for the socket
    /// while megabytes are unsent, see [`Link::oneway_paced`]).
    pub async fn oneway<R: Rpc>(&self, addr: &str, req: R, body: Bytes) -> Result<(), ClientError> {
        self.link(addr)?.oneway_paced(R::CODE, &req, &body).await
    }

    /// Waits (at most `timeout`) until every client has written the
    /// requests it holds to its socket, e.g. oneway sends before exit.
    pub async fn drain(&self, timeout: Duration) {
        let clients: Vec<Addr<RemoteClient>> = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let links: Vec<Link> = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for l in links {
            l.drain(deadline).await;
        }
        for c in clients {
            loop {
                let state = match tokio::time::timeout_at(deadline, c.send(GetLinkState)).await {
                    Ok(Ok(state)) => state,
                    _ => break,
                };
                let idle = state.buffered_bytes == 0 || (!state.connected && !state.connecting);
                if idle || tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    /// Forgets every client (their connections close once no call is
    /// pending and no other handle is left).
    pub fn close_all(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.links.lock().unwrap_or_else(|p| p.into_inner()).clear();
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

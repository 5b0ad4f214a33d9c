//! [`ClientSessions`]: a client's one table of [`ClientSession`]s, by
//! remote address and [`Lane`], under one supervisor of its own.
//!
//! Every part of a client (producer, consumers, route lookups, the CLI)
//! reaches a server through the table's [`ClientHandle`] for that
//! address: sessions are created on first use and shared. The table's
//! supervisor restarts a session whose actor died; if a session keeps
//! dying past the restart budget, the supervisor gives up: every session
//! of the table is closed with the reason (pending and later calls fail at
//! once) and the next use starts afresh. A client never stops the user's
//! actix `System`.
//!
//! `ClientSessions` is cheap to clone (clones share the table) and must be
//! used inside an actix `System`: the supervisor and the sessions run on
//! the arbiter of first use. Dropping the last clone closes every session.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use actix::prelude::*;
use slog::{Logger, crit, o};

use super::client_session::{ClientHandle, ClientOptions};
use super::router::Router;
use crate::restart::RestartPolicy;
use crate::supervisor::{ChildEscalated, Escalation, StopSupervisor, Supervisor};

/// Which connection to an address: calls that may be held long by the
/// server (long-polling pulls) go on their own so they never delay the
/// others, nor keep a closing client's main connection open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Ordinary calls; serves the requests the server pushes.
    Main,
    /// Long-polling calls.
    LongPoll,
}

/// Parses `host:port`: an IP address, or a host name resolved once
/// (`localhost:9876`). The error is a one-line message.
pub fn resolve_addr(addr: &str) -> Result<SocketAddr, String> {
    let addr = addr.trim();
    if let Ok(sock) = addr.parse() {
        return Ok(sock);
    }
    let mut resolved = addr
        .to_socket_addrs()
        .map_err(|e| format!("bad address {addr:?}: {e}"))?;
    resolved
        .next()
        .ok_or_else(|| format!("bad address {addr:?}: resolves to nothing"))
}

struct Table {
    supervisor: Option<Addr<Supervisor>>,
    /// By address string, one map per lane (looked up by `&str`, with no
    /// allocation per call).
    main: HashMap<String, ClientHandle>,
    long_poll: HashMap<String, ClientHandle>,
}

impl Table {
    fn lane(&mut self, lane: Lane) -> &mut HashMap<String, ClientHandle> {
        match lane {
            Lane::Main => &mut self.main,
            Lane::LongPoll => &mut self.long_poll,
        }
    }
}

struct TableInner {
    logger: Logger,
    opts: ClientOptions,
    inbound: Option<Router>,
    table: Mutex<Table>,
}

fn lock(m: &Mutex<Table>) -> MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TableInner {
    fn close(&self, why: &str) {
        let mut guard = lock(&self.table);
        let t = &mut *guard;
        for (_, h) in t.main.drain().chain(t.long_poll.drain()) {
            h.close(why);
        }
        if let Some(sup) = t.supervisor.take() {
            sup.do_send(StopSupervisor);
        }
    }
}

impl Drop for TableInner {
    fn drop(&mut self) {
        self.close("client closed");
    }
}

/// The table. See the module docs.
#[derive(Clone)]
pub struct ClientSessions {
    inner: Arc<TableInner>,
}

impl std::fmt::Debug for ClientSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = lock(&self.inner.table);
        let n = t.main.len() + t.long_poll.len();
        f.debug_struct("ClientSessions")
            .field("sessions", &n)
            .finish()
    }
}

/// Receives the table supervisor's escalation: closes the table's
/// sessions with the reason.
struct EscalationWatch {
    table: Weak<TableInner>,
}

impl Actor for EscalationWatch {
    type Context = Context<Self>;
}

impl Handler<ChildEscalated> for EscalationWatch {
    type Result = ();

    fn handle(&mut self, msg: ChildEscalated, ctx: &mut Context<Self>) {
        if let Some(table) = self.table.upgrade() {
            crit!(table.logger, "client session gave up; closing the client's sessions";
                "session" => &msg.child, "reason" => &msg.reason);
            table.close(&format!(
                "client session {} gave up: {}",
                msg.child, msg.reason
            ));
        }
        ctx.stop();
    }
}

impl ClientSessions {
    /// An empty table with default session options.
    pub fn new(logger: &Logger) -> ClientSessions {
        ClientSessions::with_options(ClientOptions::default(), None, logger)
    }

    /// An empty table whose sessions use `opts`; requests servers push on
    /// a [`Lane::Main`] session are served by `inbound`.
    pub fn with_options(
        opts: ClientOptions,
        inbound: Option<Router>,
        logger: &Logger,
    ) -> ClientSessions {
        ClientSessions {
            inner: Arc::new(TableInner {
                logger: logger.new(o!("clients" => "sessions")),
                opts,
                inbound,
                table: Mutex::new(Table {
                    supervisor: None,
                    main: HashMap::new(),
                    long_poll: HashMap::new(),
                }),
            }),
        }
    }

    /// The session for `addr` on [`Lane::Main`], started on first use.
    pub fn session(&self, addr: &str) -> Result<ClientHandle, String> {
        self.lane(addr, Lane::Main)
    }

    /// The session for `addr` on `lane`, started on first use.
    pub fn lane(&self, addr: &str, lane: Lane) -> Result<ClientHandle, String> {
        let mut t = lock(&self.inner.table);
        if let Some(h) = t.lane(lane).get(addr) {
            return Ok(h.clone());
        }
        let remote = resolve_addr(addr)?;
        Ok(self.insert(&mut t, addr.to_owned(), remote, lane))
    }

    /// The session for `remote` on `lane`, started on first use.
    pub fn session_at(&self, remote: SocketAddr, lane: Lane) -> ClientHandle {
        let key = remote.to_string();
        let mut t = lock(&self.inner.table);
        if let Some(h) = t.lane(lane).get(&key) {
            return h.clone();
        }
        self.insert(&mut t, key, remote, lane)
    }

    fn insert(&self, t: &mut Table, key: String, remote: SocketAddr, lane: Lane) -> ClientHandle {
        let supervisor = t
            .supervisor
            .get_or_insert_with(|| {
                let watch = EscalationWatch {
                    table: Arc::downgrade(&self.inner),
                }
                .start();
                Supervisor::new(
                    "client-sessions",
                    &self.inner.logger,
                    RestartPolicy::default(),
                    Escalation::Notify(watch.recipient()),
                )
                .start()
            })
            .clone();
        let inbound = match lane {
            Lane::Main => self.inner.inbound.clone(),
            Lane::LongPoll => None,
        };
        let handle = ClientHandle::new(remote, self.inner.opts, inbound, &self.inner.logger);
        let name = match lane {
            Lane::Main => format!("client-session {key}"),
            Lane::LongPoll => format!("client-session {key} (long-poll)"),
        };
        handle.spawn_under(&supervisor, name);
        t.lane(lane).insert(key, handle.clone());
        handle
    }

    /// Every session of the table.
    pub fn handles(&self) -> Vec<ClientHandle> {
        let t = lock(&self.inner.table);
        t.main
            .values()
            .chain(t.long_poll.values())
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) until every session has written the
    /// requests it holds to its socket, e.g. oneway sends before exit.
    pub async fn drain(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for h in self.handles() {
            h.drain(deadline).await;
        }
    }

    /// Closes every session (pending calls fail with "client closed") and
    /// stops their actors; the next use starts afresh.
    pub fn close_all(&self) {
        self.inner.close("client closed");
    }
}

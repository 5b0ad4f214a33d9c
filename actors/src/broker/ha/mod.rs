//! High availability: master/slave replication of the commit log
//! (RocketMQ's `HAService`).
//!
//! ```text
//!  producers ──► master (broker id 0)                 slave (same broker name, id > 0)
//!                ├── commit-log ─► segments ─┐        ├── ha-client ─► append_raw ─► segments
//!                │    (sync-master: replies  │ zero-  │     │ reports its end (acks)   │
//!                │     wait for a slave ack) │ copy   │     └──────────────┐           ▼
//!                └── ha-replicator           │ views  │                    │       dispatcher ─► consume
//!                     └── ha-connection ◄────┘ ──────►│ (TCP, ha=HOST:PORT)│        queues, index
//!                          (one per slave) ◄──────────┴── reports ─────────┘
//! ```
//!
//! - [`HaReplicator`] (master) accepts slaves on the HA port and starts an
//!   [`HaConnection`] per slave: it reads the slave's first report (its
//!   commit log end), checks where the transfer can start
//!   ([`transfer_start`]), then streams whole records of one segment per
//!   frame straight from the mapped segments, waking on every append;
//!   every report of the slave is an acknowledgement ([`HaState`]).
//! - [`HaClient`] (slave) connects to its master, reports its end,
//!   appends what arrives byte for byte
//!   ([`Store::append_raw`](actormq_store::Store::append_raw): continuity
//!   and CRCs checked first), nudges its dispatcher (its own consume
//!   queues and index follow), and reports the new end. It reconnects
//!   with backoff; a slave the master refuses (too far behind, diverged)
//!   logs why and keeps the reason in [`HaState::slave_status`].
//! - **Sync replication**: with [`HaRole::SyncMaster`] the writer answers
//!   a send only once a slave acknowledged its end offset
//!   ([`HaState::wait_replicated`]; one acknowledgement releases every
//!   send below it), `FLUSH_SLAVE_TIMEOUT` after the timeout and
//!   `SLAVE_NOT_AVAILABLE` at once with no slave connected. The message is
//!   stored on the master either way.
//! - **Roles** live in [`HaState`] and change by one message,
//!   [`SwitchRole`] (what `admin broker promote` sends, and what a
//!   consensus module would send): a slave refuses writes; once promoted
//!   it stops replicating and writes from its last replicated offset.
//!
//! The byte format of the link is in [`wire`]; the bookkeeping (who
//! acknowledged what, which sends are released or expired, where a
//! transfer starts) in [`sync_wait`], plain structs tested without a
//! runtime.

mod client;
pub mod config_sync;
mod replicator;
pub mod sync_wait;
pub mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actormq_protocol::ResponseCode;
use serde::{Deserialize, Serialize};

pub use client::{HaClient, SwitchRole, SwitchRoleError, role_name};
pub use config_sync::{ConfigSnapshot, SnapshotSink, SnapshotSource};
pub use replicator::{HaConnection, HaReplicator, LinkError};
pub use sync_wait::{SlaveTable, StartRefusal, SyncWaiters, transfer_start};

/// Replication role of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaRole {
    /// Master that acknowledges sends before slaves have the bytes.
    AsyncMaster,
    /// Master that acknowledges sends once a slave has the bytes.
    SyncMaster,
    /// Slave: replicates its master, refuses sends.
    Slave,
}

impl HaRole {
    /// Whether this role takes writes.
    pub fn is_master(self) -> bool {
        !matches!(self, HaRole::Slave)
    }
}

/// Settings of replication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// The role at start. Default async master.
    pub role: HaRole,
    /// A master's HA listener (bound by the wiring); `None`: no listener
    /// (no slave can connect). Default `None`.
    pub listen: Option<SocketAddr>,
    /// A slave's master (its HA address). Default `None`.
    pub master: Option<SocketAddr>,
    /// How long a sync-master send waits for a slave's acknowledgement
    /// before `FLUSH_SLAVE_TIMEOUT` (RocketMQ `syncFlushTimeout`).
    /// Default 5 s.
    pub sync_timeout: Duration,
    /// Most bytes in one data frame (at least one whole record is sent).
    /// Default 1 MiB.
    pub chunk_bytes: usize,
    /// Heartbeat (master, when nothing is new) and report (slave, when
    /// idle) interval. Default 1 s.
    pub heartbeat: Duration,
    /// A peer silent this long is dropped (RocketMQ
    /// `haHousekeepingInterval`). Default 20 s.
    pub idle_timeout: Duration,
    /// A slave's first reconnect delay, doubled up to
    /// [`Self::reconnect_max`]. Default 100 ms.
    pub reconnect_min: Duration,
    /// A slave's longest reconnect delay. Default 3 s.
    pub reconnect_max: Duration,
    /// How often a master sends its configs (topics, subscription groups,
    /// consumer offsets) to each slave, besides at connect. Default 10 s.
    pub config_sync: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            role: HaRole::AsyncMaster,
            listen: None,
            master: None,
            sync_timeout: Duration::from_secs(5),
            chunk_bytes: 1 << 20,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(20),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(3),
            config_sync: Duration::from_secs(10),
        }
    }
}

/// What a slave knows of its link (for status and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaveStatus {
    /// Connected to the master now.
    pub connected: bool,
    /// The master's end as last heard.
    pub master_offset: u64,
    /// This slave's end.
    pub local_offset: u64,
    /// Why the last link ended, if it failed (kept until the next
    /// successful transfer).
    pub error: Option<String>,
}

/// Called once with a sync-replication outcome: `SUCCESS`,
/// `FLUSH_SLAVE_TIMEOUT` or `SLAVE_NOT_AVAILABLE`.
pub type SyncCallback = Box<dyn FnOnce(ResponseCode) + Send>;

#[derive(Default)]
struct SyncState {
    waiters: SyncWaiters<SyncCallback>,
    slaves: SlaveTable,
}

/// Replication state shared by the writer, the HA actors and the node: the
/// role, the slaves' acknowledgements and the sends waiting for them.
pub struct HaState {
    role: tokio::sync::watch::Sender<HaRole>,
    grew: tokio::sync::Notify,
    sync: Mutex<SyncState>,
    slave: Mutex<SlaveStatus>,
    next_id: AtomicU64,
    /// The address each connected slave's link comes from, by link id.
    slave_peers: Mutex<std::collections::HashMap<u64, String>>,
}

impl std::fmt::Debug for HaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HaState")
            .field("role", &self.role())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HaState {
    /// State of a broker starting as `role`.
    pub fn new(role: HaRole) -> Arc<Self> {
        Arc::new(Self {
            role: tokio::sync::watch::Sender::new(role),
            grew: tokio::sync::Notify::new(),
            sync: Mutex::new(SyncState::default()),
            slave: Mutex::new(SlaveStatus::default()),
            next_id: AtomicU64::new(1),
            slave_peers: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The current role.
    pub fn role(&self) -> HaRole {
        *self.role.borrow()
    }

    /// Follows role changes.
    pub fn watch_role(&self) -> tokio::sync::watch::Receiver<HaRole> {
        self.role.subscribe()
    }

    /// Switches the role; returns the previous one.
    pub(crate) fn set_role(&self, to: HaRole) -> HaRole {
        let from = self.role.send_replace(to);
        if to != HaRole::SyncMaster {
            // Nobody waits for slaves any more.
            let drained = lock(&self.sync).waiters.drain();
            for cb in drained {
                cb(ResponseCode::Success);
            }
        }
        from
    }

    /// The commit log grew (the writer calls it after each append): wakes
    /// the connections streaming to slaves.
    pub fn log_grew(&self) {
        self.grew.notify_waiters();
    }

    /// Calls `cb` once a slave acknowledged `end` (`SUCCESS`), or with
    /// `FLUSH_SLAVE_TIMEOUT` after `timeout`, or at once with
    /// `SLAVE_NOT_AVAILABLE` when no slave is connected.
    pub fn wait_replicated(&self, end: u64, timeout: Duration, cb: SyncCallback) {
        let mut s = lock(&self.sync);
        if s.slaves.count() == 0 {
            drop(s);
            cb(ResponseCode::SlaveNotAvailable);
        } else if s.slaves.best() >= end {
            drop(s);
            cb(ResponseCode::Success);
        } else {
            s.waiters.register(end, Instant::now() + timeout, cb);
        }
    }

    /// How many slaves are connected, and the furthest acknowledgement.
    pub fn slaves(&self) -> (usize, u64) {
        let s = lock(&self.sync);
        (s.slaves.count(), s.slaves.best())
    }

    /// Each connected slave (its link id) and the log offset it
    /// acknowledged.
    pub fn slave_acks(&self) -> Vec<(u64, u64)> {
        lock(&self.sync).slaves.acked_offsets()
    }

    /// Each connected slave, named by the address its link comes from
    /// (its link id when unknown), and the log offset it acknowledged.
    pub fn slave_acks_by_peer(&self) -> Vec<(String, u64)> {
        let peers = lock(&self.slave_peers);
        self.slave_acks()
            .into_iter()
            .map(|(id, acked)| {
                let name = peers.get(&id).cloned().unwrap_or_else(|| id.to_string());
                (name, acked)
            })
            .collect()
    }

    /// Records where slave link `id` comes from.
    pub(crate) fn slave_peer(&self, id: u64, peer: String) {
        lock(&self.slave_peers).insert(id, peer);
    }

    /// How many sends wait for a slave.
    pub fn waiting(&self) -> usize {
        lock(&self.sync).waiters.len()
    }

    /// A slave's link as this slave sees it.
    pub fn slave_status(&self) -> SlaveStatus {
        lock(&self.slave).clone()
    }

    pub(crate) fn update_slave_status(&self, f: impl FnOnce(&mut SlaveStatus)) {
        f(&mut lock(&self.slave));
    }

    pub(crate) fn slave_connected(&self, offset: u64) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.slave_acked_inner(id, offset, true);
        id
    }

    pub(crate) fn slave_acked(&self, id: u64, offset: u64) {
        self.slave_acked_inner(id, offset, false);
    }

    fn slave_acked_inner(&self, id: u64, offset: u64, new: bool) {
        let released = {
            let mut s = lock(&self.sync);
            if new {
                s.slaves.connected(id, offset);
            }
            let best = s.slaves.acked(id, offset);
            s.waiters.release(best)
        };
        for cb in released {
            cb(ResponseCode::Success);
        }
    }

    pub(crate) fn slave_gone(&self, id: u64) {
        // Waiting sends keep waiting: the slave may be back within the
        // timeout (RocketMQ does the same).
        lock(&self.sync).slaves.gone(id);
        lock(&self.slave_peers).remove(&id);
    }

    pub(crate) fn expire(&self, now: Instant) {
        let expired = lock(&self.sync).waiters.expire(now);
        for cb in expired {
            cb(ResponseCode::FlushSlaveTimeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn recorder() -> (impl Fn() -> SyncCallback, mpsc::Receiver<ResponseCode>) {
        let (tx, rx) = mpsc::channel();
        (
            move || {
                let tx = tx.clone();
                Box::new(move |c| {
                    let _ = tx.send(c);
                }) as SyncCallback
            },
            rx,
        )
    }

    #[test]
    fn slaves_are_named_by_their_link_address_until_they_go() {
        let ha = HaState::new(HaRole::AsyncMaster);
        let a = ha.slave_connected(10);
        let b = ha.slave_connected(20);
        ha.slave_peer(a, "127.0.0.1:4000".into());
        let mut acks = ha.slave_acks_by_peer();
        acks.sort();
        assert_eq!(
            acks,
            [("127.0.0.1:4000".to_string(), 10), (b.to_string(), 20)]
        );
        ha.slave_gone(a);
        assert_eq!(ha.slave_acks_by_peer(), [(b.to_string(), 20)]);
    }

    #[test]
    fn sync_sends_get_the_documented_codes() {
        let ha = HaState::new(HaRole::SyncMaster);
        let (cb, rx) = recorder();
        ha.wait_replicated(100, Duration::from_secs(5), cb());
        assert_eq!(rx.try_recv(), Ok(ResponseCode::SlaveNotAvailable));
        let id = ha.slave_connected(50);
        ha.wait_replicated(40, Duration::from_secs(5), cb());
        assert_eq!(rx.try_recv(), Ok(ResponseCode::Success));
        ha.wait_replicated(100, Duration::from_secs(5), cb());
        ha.wait_replicated(120, Duration::from_secs(5), cb());
        ha.wait_replicated(300, Duration::ZERO, cb());
        assert!(rx.try_recv().is_err());
        ha.slave_acked(id, 120);
        assert_eq!(rx.try_recv(), Ok(ResponseCode::Success));
        assert_eq!(rx.try_recv(), Ok(ResponseCode::Success));
        assert!(rx.try_recv().is_err());
        ha.expire(Instant::now());
        assert_eq!(rx.try_recv(), Ok(ResponseCode::FlushSlaveTimeout));
        ha.slave_gone(id);
        assert_eq!(ha.slaves(), (0, 0));
    }

    #[test]
    fn a_promotion_releases_waiting_sends() {
        let ha = HaState::new(HaRole::SyncMaster);
        let (cb, rx) = recorder();
        ha.slave_connected(0);
        ha.wait_replicated(10, Duration::from_secs(5), cb());
        assert_eq!(ha.set_role(HaRole::AsyncMaster), HaRole::SyncMaster);
        assert_eq!(rx.try_recv(), Ok(ResponseCode::Success));
        assert_eq!(ha.waiting(), 0);
    }
}

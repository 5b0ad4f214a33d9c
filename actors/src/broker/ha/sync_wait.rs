//! Bookkeeping of sync replication and of where a transfer starts (plain
//! structs, tested without a runtime).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Sends waiting for a slave to acknowledge their end offset (RocketMQ's
/// `GroupTransferService`): one acknowledgement releases every send whose
/// end it covers (group commit); a send not covered by its deadline
/// expires.
#[derive(Debug)]
pub struct SyncWaiters<T> {
    waiting: BTreeMap<u64, Vec<(Instant, T)>>,
    len: usize,
}

impl<T> Default for SyncWaiters<T> {
    fn default() -> Self {
        Self {
            waiting: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<T> SyncWaiters<T> {
    /// Waits for `end` until `deadline`.
    pub fn register(&mut self, end: u64, deadline: Instant, item: T) {
        self.waiting.entry(end).or_default().push((deadline, item));
        self.len += 1;
    }

    /// Everything whose end is at or below `acked`, in offset order.
    pub fn release(&mut self, acked: u64) -> Vec<T> {
        let rest = self.waiting.split_off(&(acked.saturating_add(1)));
        let done = std::mem::replace(&mut self.waiting, rest);
        let out: Vec<T> = done.into_values().flatten().map(|(_, t)| t).collect();
        self.len -= out.len();
        out
    }

    /// Everything whose deadline is at or before `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        self.waiting.retain(|_, v| {
            let mut i = 0;
            while i < v.len() {
                if v[i].0 <= now {
                    out.push(v.remove(i).1);
                } else {
                    i += 1;
                }
            }
            !v.is_empty()
        });
        self.len -= out.len();
        out
    }

    /// Everything (the last slave left, the role changed).
    pub fn drain(&mut self) -> Vec<T> {
        self.len = 0;
        std::mem::take(&mut self.waiting)
            .into_values()
            .flatten()
            .map(|(_, t)| t)
            .collect()
    }

    /// How many are waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The slaves connected to a master and what each acknowledged.
#[derive(Debug, Default, Clone)]
pub struct SlaveTable {
    acked: HashMap<u64, u64>,
}

impl SlaveTable {
    /// A slave connected (it has acknowledged `offset`).
    pub fn connected(&mut self, id: u64, offset: u64) {
        self.acked.insert(id, offset);
    }

    /// A slave acknowledged `offset`; returns the best acknowledged offset
    /// of all slaves (what a sync send waits for: one slave is enough).
    pub fn acked(&mut self, id: u64, offset: u64) -> u64 {
        let e = self.acked.entry(id).or_insert(offset);
        *e = (*e).max(offset);
        self.best()
    }

    /// A slave left.
    pub fn gone(&mut self, id: u64) {
        self.acked.remove(&id);
    }

    /// How many slaves are connected.
    pub fn count(&self) -> usize {
        self.acked.len()
    }

    /// Each connected slave's id and acknowledged offset, by id.
    pub fn acked_offsets(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = self.acked.iter().map(|(i, o)| (*i, *o)).collect();
        v.sort_unstable();
        v
    }

    /// The furthest acknowledgement of any connected slave (0: none).
    pub fn best(&self) -> u64 {
        self.acked.values().copied().max().unwrap_or(0)
    }
}

/// Why a master cannot serve a slave from the offset it reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartRefusal {
    /// The slave's end is older than the master's oldest kept segment:
    /// the bytes between are gone, it cannot catch up by replication.
    #[error(
        "slave too far behind: it has the log up to {slave}, the master keeps it from {master_min} on (re-seed the slave's data dir from a copy of the master's)"
    )]
    TooFarBehind {
        /// The slave's end.
        slave: u64,
        /// The master's oldest kept offset.
        master_min: u64,
    },
    /// The slave has more log than the master: the logs diverged (it was
    /// a master, or followed another one).
    #[error(
        "slave ahead of its master: it has the log up to {slave}, the master only up to {master_max} (the logs diverged; the slave must be re-seeded)"
    )]
    Ahead {
        /// The slave's end.
        slave: u64,
        /// The master's end.
        master_max: u64,
    },
}

/// Where a transfer to a slave that reported `slave` starts, given the
/// master's kept log `[master_min, master_max)`.
pub fn transfer_start(slave: u64, master_min: u64, master_max: u64) -> Result<u64, StartRefusal> {
    if slave > master_max {
        return Err(StartRefusal::Ahead { slave, master_max });
    }
    if slave < master_min {
        return Err(StartRefusal::TooFarBehind { slave, master_min });
    }
    Ok(slave)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_ack_releases_every_send_it_covers() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let mut w = SyncWaiters::default();
        for end in [100, 200, 200, 300] {
            w.register(end, later, end);
        }
        assert_eq!(w.release(99), Vec::<u64>::new());
        assert_eq!(w.release(200), vec![100, 200, 200]);
        assert_eq!(w.len(), 1);
        assert_eq!(w.release(250), Vec::<u64>::new());
        assert_eq!(w.release(u64::MAX), vec![300]);
        assert!(w.is_empty());
    }

    #[test]
    fn deadlines_expire_only_their_own() {
        let t0 = Instant::now();
        let mut w = SyncWaiters::default();
        w.register(10, t0 + Duration::from_millis(5), "a");
        w.register(20, t0 + Duration::from_millis(50), "b");
        w.register(5, t0 + Duration::from_millis(50), "c");
        assert_eq!(w.expire(t0), Vec::<&str>::new());
        assert_eq!(w.expire(t0 + Duration::from_millis(10)), vec!["a"]);
        assert_eq!(w.len(), 2);
        assert_eq!(w.drain(), vec!["c", "b"]);
        assert!(w.is_empty());
    }

    #[test]
    fn the_best_slave_counts() {
        let mut s = SlaveTable::default();
        assert_eq!(s.best(), 0);
        s.connected(1, 50);
        s.connected(2, 10);
        assert_eq!(s.acked(2, 70), 70);
        // Acks never go back.
        assert_eq!(s.acked(2, 60), 70);
        s.gone(2);
        assert_eq!((s.count(), s.best()), (1, 50));
    }

    #[test]
    fn transfers_start_at_the_slaves_end_when_the_master_has_it() {
        assert_eq!(transfer_start(0, 0, 0), Ok(0));
        assert_eq!(transfer_start(500, 0, 900), Ok(500));
        assert_eq!(transfer_start(900, 100, 900), Ok(900));
        let e = transfer_start(50, 100, 900).unwrap_err();
        assert!(e.to_string().contains("too far behind"), "{e}");
        let e = transfer_start(1000, 0, 900).unwrap_err();
        assert!(matches!(e, StartRefusal::Ahead { .. }), "{e}");
    }
}

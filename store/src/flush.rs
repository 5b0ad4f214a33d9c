//! Flushing: the async flush policy, sync group commit, and flush tickets.
//!
//! The flush thread (owned by the store) waits on a condition variable,
//! flushes `[flushed, written)` of the commit log, publishes the new flushed
//! position (`Release`), then completes every waiter whose end offset is at
//! or below it: one flush acknowledges many appends (group commit). The
//! bookkeeping ([`GroupCommitQueue`], [`FlushPolicy`]) is plain data and is
//! unit-tested without threads.

use std::time::{Duration, Instant};

use crate::sync::{self, Arc, Condvar, Mutex};

/// Outcome of waiting for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushOutcome {
    /// The bytes are flushed.
    Flushed,
    /// Not flushed within the timeout (`FLUSH_DISK_TIMEOUT`).
    Timeout,
    /// The flush failed with an I/O error.
    Failed,
    /// The store closed before the bytes were flushed.
    Closed,
}

/// Decides whether an async flush tick flushes.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// Flush when at least this many bytes are dirty.
    pub least_bytes: u64,
    /// Flush whatever is dirty when the last flush is older than this.
    pub thorough_interval_ms: u64,
}

impl FlushPolicy {
    /// Whether to flush now.
    pub fn should_flush(&self, dirty_bytes: u64, ms_since_last_flush: u64) -> bool {
        dirty_bytes > 0
            && (dirty_bytes >= self.least_bytes || ms_since_last_flush >= self.thorough_interval_ms)
    }
}

/// Group-commit waiters: `(end offset, deadline, waiter)`.
#[derive(Debug)]
pub struct GroupCommitQueue<W> {
    waiters: Vec<(u64, u64, W)>,
}

impl<W> Default for GroupCommitQueue<W> {
    fn default() -> Self {
        GroupCommitQueue {
            waiters: Vec::new(),
        }
    }
}

impl<W> GroupCommitQueue<W> {
    /// Adds a waiter for bytes up to `end`, timing out at `deadline_ms`.
    pub fn push(&mut self, end: u64, deadline_ms: u64, w: W) {
        self.waiters.push((end, deadline_ms, w));
    }
    /// Number of waiters.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }
    /// Whether there are no waiters.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
    /// Removes and returns the waiters satisfied by `flushed` (end ≤ flushed).
    pub fn take_done(&mut self, flushed: u64) -> Vec<W> {
        self.take_where(|end, _| end <= flushed)
    }
    /// Removes and returns the waiters whose deadline passed.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<W> {
        self.take_where(|_, deadline| deadline <= now_ms)
    }
    /// Removes and returns everything.
    pub fn take_all(&mut self) -> Vec<W> {
        self.waiters.drain(..).map(|(_, _, w)| w).collect()
    }
    fn take_where(&mut self, f: impl Fn(u64, u64) -> bool) -> Vec<W> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.waiters.len() {
            if f(self.waiters[i].0, self.waiters[i].1) {
                out.push(self.waiters.swap_remove(i).2);
            } else {
                i += 1;
            }
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct TicketSlot {
    outcome: Mutex<Option<FlushOutcome>>,
    cv: Condvar,
}

impl TicketSlot {
    fn complete(&self, o: FlushOutcome) {
        let mut g = sync::lock(&self.outcome);
        if g.is_none() {
            *g = Some(o);
        }
        drop(g);
        self.cv.notify_all();
    }
}

/// A handle to wait until an append is flushed.
#[derive(Debug, Clone)]
pub struct FlushTicket {
    end: u64,
    slot: Option<Arc<TicketSlot>>,
}

impl FlushTicket {
    pub(crate) fn done(end: u64) -> FlushTicket {
        FlushTicket { end, slot: None }
    }

    /// The end offset this ticket waits for.
    pub fn end_offset(&self) -> u64 {
        self.end
    }

    /// The outcome if already known.
    pub fn try_outcome(&self) -> Option<FlushOutcome> {
        match &self.slot {
            None => Some(FlushOutcome::Flushed),
            Some(s) => *sync::lock(&s.outcome),
        }
    }

    /// Blocks until flushed, failed, or `timeout` passed.
    pub fn wait(&self, timeout: Duration) -> FlushOutcome {
        let Some(s) = &self.slot else {
            return FlushOutcome::Flushed;
        };
        let deadline = Instant::now() + timeout;
        let mut g = sync::lock(&s.outcome);
        loop {
            if let Some(o) = *g {
                return o;
            }
            let now = Instant::now();
            if now >= deadline {
                return FlushOutcome::Timeout;
            }
            g = match s.cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Blocks until flushed or failed (no timeout; loom models use this).
    pub fn wait_forever(&self) -> FlushOutcome {
        let Some(s) = &self.slot else {
            return FlushOutcome::Flushed;
        };
        let mut g = sync::lock(&s.outcome);
        loop {
            if let Some(o) = *g {
                return o;
            }
            g = match s.cv.wait(g) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        }
    }
}

/// A registered waiter.
pub(crate) enum Waiter {
    Ticket(Arc<TicketSlot>),
    Callback(Box<dyn FnOnce(FlushOutcome) + Send>),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Ticket(_) => "Ticket",
            Waiter::Callback(_) => "Callback",
        })
    }
}

impl Waiter {
    pub(crate) fn complete(self, o: FlushOutcome) {
        match self {
            Waiter::Ticket(s) => s.complete(o),
            Waiter::Callback(cb) => cb(o),
        }
    }
}

/// State shared between registrants and the flush thread.
#[derive(Debug, Default)]
pub(crate) struct FlushState {
    pub(crate) queue: GroupCommitQueue<Waiter>,
    pub(crate) stop: bool,
    pub(crate) wake: bool,
}

/// The group-commit rendezvous: a mutex-protected waiter queue plus a
/// condition variable waking the flush thread.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    pub(crate) state: Mutex<FlushState>,
    pub(crate) cv: Condvar,
}

impl GroupCommit {
    /// Registers a waiter for `end`. `flushed` reads the published flushed
    /// position; it is read under the lock, so a flush that advanced the
    /// position before we locked is seen here, and one that advances it
    /// after will find the waiter in the queue (no lost wake-up).
    pub(crate) fn register(
        &self,
        end: u64,
        deadline_ms: u64,
        w: Waiter,
        flushed: impl Fn() -> u64,
    ) {
        let mut g = sync::lock(&self.state);
        if flushed() >= end {
            drop(g);
            w.complete(FlushOutcome::Flushed);
            return;
        }
        if g.stop {
            drop(g);
            w.complete(FlushOutcome::Closed);
            return;
        }
        g.queue.push(end, deadline_ms, w);
        g.wake = true;
        drop(g);
        self.cv.notify_all();
    }

    /// Registers and returns a ticket.
    pub(crate) fn ticket(
        &self,
        end: u64,
        deadline_ms: u64,
        flushed: impl Fn() -> u64,
    ) -> FlushTicket {
        if flushed() >= end {
            return FlushTicket::done(end);
        }
        let slot = Arc::new(TicketSlot {
            outcome: Mutex::new(None),
            cv: Condvar::new(),
        });
        self.register(end, deadline_ms, Waiter::Ticket(slot.clone()), flushed);
        FlushTicket {
            end,
            slot: Some(slot),
        }
    }

    /// Completes waiters satisfied by `flushed` and those past their deadline.
    /// Called by the flush thread after it published `flushed`.
    pub(crate) fn complete(&self, flushed: u64, now_ms: u64, failed: bool) {
        let (done, expired) = {
            let mut g = sync::lock(&self.state);
            let done = g.queue.take_done(flushed);
            let expired = if failed {
                g.queue.take_all()
            } else {
                g.queue.take_expired(now_ms)
            };
            (done, expired)
        };
        for w in done {
            w.complete(FlushOutcome::Flushed);
        }
        let o = if failed {
            FlushOutcome::Failed
        } else {
            FlushOutcome::Timeout
        };
        for w in expired {
            w.complete(o);
        }
    }

    /// Stops the loop; remaining waiters get `Closed` from the flush thread.
    pub(crate) fn stop(&self) {
        sync::lock(&self.state).stop = true;
        self.cv.notify_all();
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        let p = FlushPolicy {
            least_bytes: 4 * 4096,
            thorough_interval_ms: 10_000,
        };
        assert!(!p.should_flush(0, 100_000));
        assert!(!p.should_flush(100, 500));
        assert!(p.should_flush(16384, 500));
        assert!(p.should_flush(100, 10_000));
    }

    #[test]
    fn queue_bookkeeping() {
        let mut q = GroupCommitQueue::default();
        q.push(100, 5000, 'a');
        q.push(50, 5000, 'b');
        q.push(200, 1000, 'c');
        let mut d = q.take_done(120);
        d.sort();
        assert_eq!(d, vec!['a', 'b']);
        assert!(q.take_expired(999).is_empty());
        assert_eq!(q.take_expired(1000), vec!['c']);
        assert!(q.is_empty());
    }

    #[test]
    fn tickets_and_callbacks() {
        let gc = GroupCommit::default();
        let flushed = std::sync::atomic::AtomicU64::new(10);
        let f = || flushed.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            gc.ticket(5, 0, f).try_outcome(),
            Some(FlushOutcome::Flushed)
        );
        let t = gc.ticket(20, u64::MAX, f);
        assert_eq!(t.try_outcome(), None);
        let (tx, rx) = std::sync::mpsc::channel();
        gc.register(
            30,
            100,
            Waiter::Callback(Box::new(move |o| tx.send(o).unwrap())),
            f,
        );
        assert_eq!(t.wait(Duration::from_millis(1)), FlushOutcome::Timeout);
        gc.complete(25, 50, false);
        assert_eq!(t.wait(Duration::from_secs(1)), FlushOutcome::Flushed);
        assert!(rx.try_recv().is_err());
        gc.complete(25, 100, false);
        assert_eq!(rx.try_recv().unwrap(), FlushOutcome::Timeout);
    }
}

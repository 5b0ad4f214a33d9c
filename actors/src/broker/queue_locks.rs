//! `QueueLockManager`: the broker's side of orderly consumption. A
//! consumer of an orderly group locks the queues it was assigned
//! (`LOCK_BATCH_MQ`, code 41) before it consumes them, renews the locks
//! (every 20 s on RocketMQ's clients) and releases them on shutdown and
//! rebalance (`UNLOCK_BATCH_MQ`, 42). A lock not renewed within its expiry
//! (60 s, RocketMQ's `rebalanceLockMaxLiveTime`) is free for another
//! client, so a crashed consumer holds its queues for at most that long.
//! This is what keeps two instances from consuming one queue at once while
//! the group rebalances.
//!
//! The decision logic is [`QueueLocks`], a plain struct. Locks live in
//! memory only, as on RocketMQ's broker: after a broker restart every
//! queue is free and the consumers lock again on their next renewal.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::MessageQueue;
use actormq_protocol::request::{
    Empty, LockBatchMqRequest, LockBatchMqResponse, UnlockBatchMqRequest,
};
use slog::{Logger, debug, o};

use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// How long a lock holds without renewal (RocketMQ: 60 s).
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Lock {
    client_id: String,
    renewed: Instant,
}

/// Queue locks by group. See the module docs.
#[derive(Debug, Clone)]
pub struct QueueLocks {
    expiry: Duration,
    groups: HashMap<String, HashMap<MessageQueue, Lock>>,
}

impl QueueLocks {
    /// No locks; a lock holds for `expiry` without renewal.
    pub fn new(expiry: Duration) -> QueueLocks {
        QueueLocks {
            expiry,
            groups: HashMap::new(),
        }
    }

    /// Locks (or renews) each queue of `mqs` for `client` in `group` where
    /// no other client holds a live lock; returns the queues `client` now
    /// holds, in request order.
    pub fn try_lock(
        &mut self,
        group: &str,
        client: &str,
        mqs: &[MessageQueue],
        now: Instant,
    ) -> Vec<MessageQueue> {
        let expiry = self.expiry;
        let locks = self.groups.entry(group.to_owned()).or_default();
        let mut held = Vec::with_capacity(mqs.len());
        for mq in mqs {
            let free = match locks.get(mq) {
                None => true,
                Some(l) => l.client_id == client || now.duration_since(l.renewed) >= expiry,
            };
            if free {
                locks.insert(
                    mq.clone(),
                    Lock {
                        client_id: client.to_owned(),
                        renewed: now,
                    },
                );
                held.push(mq.clone());
            }
        }
        held
    }

    /// Releases the locks `client` holds on `mqs` in `group` (a lock held by
    /// another client stays).
    pub fn unlock(&mut self, group: &str, client: &str, mqs: &[MessageQueue]) {
        let Some(locks) = self.groups.get_mut(group) else {
            return;
        };
        for mq in mqs {
            if locks.get(mq).is_some_and(|l| l.client_id == client) {
                locks.remove(mq);
            }
        }
        if locks.is_empty() {
            self.groups.remove(group);
        }
    }

    /// The client holding a live lock on `mq` in `group`, if any.
    pub fn holder(&self, group: &str, mq: &MessageQueue, now: Instant) -> Option<&str> {
        let l = self.groups.get(group)?.get(mq)?;
        (now.duration_since(l.renewed) < self.expiry).then_some(l.client_id.as_str())
    }

    /// Forgets expired locks (bounds memory); returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let expiry = self.expiry;
        let mut purged = 0;
        self.groups.retain(|_, locks| {
            let before = locks.len();
            locks.retain(|_, l| now.duration_since(l.renewed) < expiry);
            purged += before - locks.len();
            !locks.is_empty()
        });
        purged
    }

    /// Live and expired locks kept.
    pub fn len(&self) -> usize {
        self.groups.values().map(HashMap::len).sum()
    }

    /// Whether no lock is kept.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The actor serving `LOCK_BATCH_MQ` and `UNLOCK_BATCH_MQ`.
pub struct QueueLockManager {
    locks: QueueLocks,
    logger: Logger,
    poison: Poison,
}

impl QueueLockManager {
    /// A manager whose locks hold for `expiry` without renewal.
    pub fn new(expiry: Duration, logger: &Logger) -> QueueLockManager {
        QueueLockManager {
            locks: QueueLocks::new(expiry),
            logger: logger.new(o!("actor" => "QueueLockManager")),
            poison: Poison::default(),
        }
    }
}

impl Actor for QueueLockManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every = self.locks.expiry.max(Duration::from_secs(1));
        ctx.run_interval(every, |act, ctx| {
            let _ = guarded(act, ctx, |act, _| {
                let purged = act.locks.purge_expired(Instant::now());
                if purged > 0 {
                    debug!(act.logger, "expired queue locks purged"; "count" => purged);
                }
            });
        });
    }
}

impl Guarded for QueueLockManager {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Call<LockBatchMqRequest>> for QueueLockManager {
    type Result = GuardedReply<Result<Reply<LockBatchMqResponse>, ServiceError>>;

    fn handle(&mut self, msg: Call<LockBatchMqRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let req = &msg.req;
            let lock_ok_mq_set = act.locks.try_lock(
                &req.consumer_group,
                &req.client_id,
                &req.mq_set,
                Instant::now(),
            );
            debug!(act.logger, "lock batch"; "group" => &req.consumer_group,
                "client" => &req.client_id, "asked" => req.mq_set.len(), "held" => lock_ok_mq_set.len());
            Ok(Reply::ok(LockBatchMqResponse { lock_ok_mq_set }))
        })
    }
}

impl Handler<Call<UnlockBatchMqRequest>> for QueueLockManager {
    type Result = GuardedReply<Result<Reply<Empty>, ServiceError>>;

    fn handle(&mut self, msg: Call<UnlockBatchMqRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let req = &msg.req;
            act.locks
                .unlock(&req.consumer_group, &req.client_id, &req.mq_set);
            Ok(Reply::ok(Empty {}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: u32) -> MessageQueue {
        MessageQueue {
            topic: "t".into(),
            broker_name: "b".into(),
            queue_id: q,
        }
    }

    #[test]
    fn one_holder_per_queue_until_unlock_or_expiry() {
        let t0 = Instant::now();
        let mut l = QueueLocks::new(Duration::from_secs(60));
        let all = [mq(0), mq(1), mq(2)];
        assert_eq!(l.try_lock("g", "a", &all, t0), all.to_vec());
        // Another client gets none of them while a holds them.
        assert!(
            l.try_lock("g", "b", &all, t0 + Duration::from_secs(59))
                .is_empty()
        );
        // Another group is independent.
        assert_eq!(l.try_lock("h", "b", &all, t0), all.to_vec());
        // a renews one at 30 s, releases another.
        assert_eq!(
            l.try_lock("g", "a", &[mq(0)], t0 + Duration::from_secs(30)),
            vec![mq(0)]
        );
        l.unlock("g", "a", &[mq(1)]);
        // b may take the released one at once, the stale one after 60 s,
        // and not the renewed one until 60 s after its renewal.
        let t61 = t0 + Duration::from_secs(61);
        assert_eq!(l.try_lock("g", "b", &all, t61), vec![mq(1), mq(2)]);
        assert_eq!(l.holder("g", &mq(0), t61), Some("a"));
        let t91 = t0 + Duration::from_secs(91);
        assert_eq!(l.holder("g", &mq(0), t91), None);
        assert_eq!(l.try_lock("g", "b", &[mq(0)], t91), vec![mq(0)]);
    }

    #[test]
    fn unlock_by_another_client_changes_nothing_and_expired_locks_are_purged() {
        let t0 = Instant::now();
        let mut l = QueueLocks::new(Duration::from_secs(60));
        l.try_lock("g", "a", &[mq(0), mq(1)], t0);
        l.unlock("g", "b", &[mq(0)]);
        assert_eq!(l.holder("g", &mq(0), t0), Some("a"));
        l.unlock("g", "a", &[mq(0)]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.purge_expired(t0 + Duration::from_secs(59)), 0);
        assert_eq!(l.purge_expired(t0 + Duration::from_secs(60)), 1);
        assert!(l.is_empty());
    }
}

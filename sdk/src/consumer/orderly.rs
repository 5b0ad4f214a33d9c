//! Orderly consumption for the [`PushConsumer`](super::PushConsumer)
//! (builder [`orderly`](super::PushConsumerBuilder::orderly), config key
//! `orderly = true`), as RocketMQ's `ConsumeMessageOrderlyService` and
//! `RebalanceImpl.lock` do it:
//!
//! - **locks at the broker**: a queue newly assigned by rebalance is locked
//!   (`LOCK_BATCH_MQ`, one request per broker) before anything of it is
//!   pulled; a queue the broker does not put in `lock_ok_mq_set` is not
//!   taken, and the rebalance is tried again shortly (1 s) while some
//!   assigned queue is not locked. Every `lock_renew_interval_ms` (20 s)
//!   the locks of every queue held are renewed, one `LOCK_BATCH_MQ` per
//!   broker. A queue the broker does not renew, or whose last successful
//!   lock is older than `lock_max_live_ms` (30 s; the broker keeps a lock
//!   60 s) is neither pulled nor delivered from that moment until it is
//!   locked again;
//! - **release**: when rebalance drops a queue, its pull stops at once and
//!   a release task waits for the queue's listener call in flight, records
//!   and commits its offset, and only then unlocks the queue
//!   (`UNLOCK_BATCH_MQ`), so the next holder starts where this one stopped
//!   and two instances never consume one queue at once. The rebalance
//!   itself does not wait (a long listener call holds up neither the
//!   service's timers nor the other queues); the queue's lock is renewed
//!   until the release is done, and the queue is not taken again before. Shutdown does the same for every queue (a queue whose
//!   listener is still running after the 5 s shutdown grace keeps its
//!   broker lock until it expires);
//! - **one worker per queue**: a task per queue held takes the cached
//!   messages in queue-offset order, `consume_batch_size` at a time, and
//!   calls the listener (in `spawn_blocking`, within the consumer's
//!   `workers` limit) for one batch at a time;
//! - **failure** ("later", or a panic in the listener): the queue is
//!   suspended for `suspend_ms` (1 s) and the same batch is delivered
//!   again with `reconsume_times` one higher; nothing later in the queue
//!   is delivered and the offset does not pass it meanwhile. Once a
//!   message has been reconsumed the group's max times
//!   (`SubscriptionGroupConfig::retry_max_times` as the broker handed it,
//!   16 until a broker answered), it goes to the after-max step, the
//!   consumer's `to_dead_letter` (in this file): it is sent back to its
//!   broker (`CONSUMER_SEND_MSG_BACK` with its count), which stores it in
//!   the group's dead-letter queue `%DLQ%<group>`, and the queue moves
//!   past it; when the broker does not take it, the queue stays
//!   suspended and the batch is tried again.
//!
//! The bookkeeping is in plain structs tested without a runtime:
//! [`LockTable`] (which queue is locked, until when, what a lock reply
//! changed), [`OrderlyBuffer`] (the cached messages of a queue in offset
//! order) and [`failure_action`].
//!
//! The worker is a task owned by its queue (like the concurrent mode's
//! delivery tasks), not an actor: it holds nothing a restart would need
//! (the messages are in the queue's buffer, the offsets in the process
//! queue), it ends when its queue is released or the consumer stops, and
//! a panic in the listener is caught by `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actormq_protocol::request::{LockBatchMqRequest, UnlockBatchMqRequest};
use actormq_protocol::{MessageQueue, StoredMessage};
use slog::{info, warn};
use tokio::sync::Notify;

use super::push::{AnyListener, ConsumeResult, Core, QueueSlot};

/// Default max reconsume times, until a broker handed the group's config.
pub(crate) const DEFAULT_MAX_RECONSUME: u32 = 16;

/// While an assigned queue could not be locked, the rebalance is tried
/// again after this long.
pub(crate) const LOCK_RETRY: Duration = Duration::from_secs(1);

/// How long an idle worker or a pull loop waiting for a lock sleeps at
/// most before it checks again (a lock expires by time, not by event).
const RECHECK: Duration = Duration::from_millis(500);

/// The lock state of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueueLock {
    /// The last lock reply listed the queue.
    locked: bool,
    /// When the last successful lock (or renewal) was asked.
    last_locked: Instant,
}

/// What a lock reply changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockOutcome {
    /// Queues asked for and now locked by this client.
    pub locked: Vec<MessageQueue>,
    /// Queues that were locked and that the broker no longer grants.
    pub lost: Vec<MessageQueue>,
    /// Queues asked for and not granted (held by another client).
    pub refused: Vec<MessageQueue>,
}

/// The client's view of its queue locks: which queues are locked and
/// until when it trusts the lock (`max_live` after the last successful
/// lock; RocketMQ's `REBALANCE_LOCK_MAX_LIVE_TIME`, 30 s, well inside the
/// broker's 60 s).
#[derive(Debug, Clone)]
pub struct LockTable {
    max_live: Duration,
    queues: HashMap<MessageQueue, QueueLock>,
}

impl LockTable {
    /// No lock; a lock is trusted `max_live` after it was last granted.
    pub fn new(max_live: Duration) -> LockTable {
        LockTable {
            max_live,
            queues: HashMap::new(),
        }
    }

    /// `mqs` grouped by broker name (one lock request per broker), each
    /// list sorted.
    pub fn by_broker<'a>(
        mqs: impl IntoIterator<Item = &'a MessageQueue>,
    ) -> BTreeMap<String, Vec<MessageQueue>> {
        let mut by: BTreeMap<String, Vec<MessageQueue>> = BTreeMap::new();
        for mq in mqs {
            by.entry(mq.broker_name.clone())
                .or_default()
                .push(mq.clone());
        }
        for v in by.values_mut() {
            v.sort();
            v.dedup();
        }
        by
    }

    /// Records the reply to a lock request for `asked`, sent at `sent`:
    /// the queues in `granted` are locked from `sent` on; the others are
    /// not locked (lost if they were).
    pub fn record(
        &mut self,
        asked: &[MessageQueue],
        granted: &[MessageQueue],
        sent: Instant,
    ) -> LockOutcome {
        let mut out = LockOutcome::default();
        for mq in asked {
            if granted.contains(mq) {
                self.queues.insert(
                    mq.clone(),
                    QueueLock {
                        locked: true,
                        last_locked: sent,
                    },
                );
                out.locked.push(mq.clone());
            } else {
                match self.queues.get_mut(mq) {
                    Some(l) if l.locked => {
                        l.locked = false;
                        out.lost.push(mq.clone());
                    }
                    _ => {}
                }
                out.refused.push(mq.clone());
            }
        }
        out
    }

    /// Whether `mq` may be pulled and delivered at `now`: locked by the
    /// last reply, and that lock granted less than `max_live` ago.
    pub fn is_locked(&self, mq: &MessageQueue, now: Instant) -> bool {
        self.queues.get(mq).is_some_and(|l| {
            l.locked && now.saturating_duration_since(l.last_locked) < self.max_live
        })
    }

    /// Forgets `mq` (released).
    pub fn forget(&mut self, mq: &MessageQueue) {
        self.queues.remove(mq);
    }

    /// Every queue known (locked or not, not forgotten), sorted.
    pub fn known(&self) -> Vec<MessageQueue> {
        let mut v: Vec<MessageQueue> = self.queues.keys().cloned().collect();
        v.sort();
        v
    }

    /// Queues known (locked or not).
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether no queue is known.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

/// The cached messages of one queue, in offset order, for its worker.
#[derive(Debug, Clone, Default)]
pub struct OrderlyBuffer {
    msgs: BTreeMap<u64, StoredMessage>,
}

impl OrderlyBuffer {
    /// Adds pulled messages (an offset already cached is kept once).
    pub fn put(&mut self, msgs: impl IntoIterator<Item = StoredMessage>) {
        for m in msgs {
            self.msgs.entry(m.queue_offset).or_insert(m);
        }
    }

    /// Takes the `n` lowest offsets (fewer when fewer are cached).
    pub fn take(&mut self, n: usize) -> Vec<StoredMessage> {
        let mut out = Vec::with_capacity(n.min(self.msgs.len()));
        while out.len() < n.max(1) {
            match self.msgs.pop_first() {
                Some((_, m)) => out.push(m),
                None => break,
            }
        }
        out
    }

    /// Messages cached.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
}

/// What to do with a batch the listener failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Suspend the queue and deliver the same batch again, each message's
    /// `reconsume_times` one higher.
    Suspend,
    /// A message was reconsumed the max times already: the batch goes to
    /// the dead-letter step and the queue moves past it.
    DeadLetter,
}

/// The batch failed; `max` is the group's max reconsume times. As
/// RocketMQ's `checkReconsumeTimes`: a message already reconsumed `max`
/// times (or more) is not retried again.
pub fn failure_action(batch: &[StoredMessage], max: u32) -> FailureAction {
    if batch.iter().any(|m| m.reconsume_times >= max) {
        FailureAction::DeadLetter
    } else {
        FailureAction::Suspend
    }
}

/// The orderly part of a queue held (see [`QueueSlot`]).
#[derive(Debug, Default)]
pub(crate) struct OrderlySlot {
    /// Pulled and not yet taken by the worker.
    pub(crate) buffer: std::sync::Mutex<OrderlyBuffer>,
    /// Wakes the worker: messages arrived, or the queue was released.
    pub(crate) arrived: Notify,
    /// Wakes the pull loop and the worker: the queue was locked again.
    pub(crate) lock_changed: Notify,
    /// Held by the worker over a listener call and the recording of its
    /// result; a release takes it, so it waits for the call in flight.
    pub(crate) consume_lock: tokio::sync::Mutex<()>,
}

impl Core {
    /// Whether `mq` may be pulled and delivered now (always true when not
    /// orderly).
    pub(crate) fn may_consume(&self, mq: &MessageQueue) -> bool {
        !self.cfg.orderly
            || self
                .locks
                .lock()
                .expect("locks lock")
                .is_locked(mq, Instant::now())
    }

    /// Waits until `slot` is locked again (or a bounded while, to recheck
    /// expiry, release and shutdown).
    pub(crate) async fn wait_lock(&self, slot: &QueueSlot) {
        if let Some(o) = &slot.orderly {
            let _ = tokio::time::timeout(RECHECK, o.lock_changed.notified()).await;
        }
    }

    /// Locks `mqs` at their brokers (one `LOCK_BATCH_MQ` per broker);
    /// returns those now locked by this client. A broker that cannot be
    /// reached locks nothing.
    pub(crate) async fn lock_queues(&self, mqs: &[MessageQueue]) -> Vec<MessageQueue> {
        let mut locked = Vec::new();
        for (broker, asked) in LockTable::by_broker(mqs) {
            let Some(topic) = asked.first().map(|mq| mq.topic.clone()) else {
                continue;
            };
            let sent = Instant::now();
            let granted = match self.client.broker_addr(&topic, &broker).await {
                Ok(addr) => {
                    let req = LockBatchMqRequest {
                        consumer_group: self.cfg.group.clone(),
                        client_id: self.client_id.clone(),
                        mq_set: asked.clone(),
                    };
                    match self.client.call(addr, req).await {
                        Ok(r) => r.fields.lock_ok_mq_set,
                        Err(e) => {
                            warn!(self.logger, "lock batch failed"; "broker" => &broker, "error" => %e);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    warn!(self.logger, "lock batch: no broker address"; "broker" => &broker, "error" => %e);
                    continue;
                }
            };
            let out = self
                .locks
                .lock()
                .expect("locks lock")
                .record(&asked, &granted, sent);
            for mq in &out.lost {
                warn!(self.logger, "queue lock lost: delivery stops"; "queue" => mq.queue_id,
                    "broker" => &mq.broker_name);
            }
            locked.extend(out.locked);
        }
        locked
    }

    /// Unlocks `mqs` at their brokers (one `UNLOCK_BATCH_MQ` per broker)
    /// and forgets them.
    pub(crate) async fn unlock_queues(&self, mqs: &[MessageQueue]) {
        for (broker, asked) in LockTable::by_broker(mqs) {
            {
                let mut locks = self.locks.lock().expect("locks lock");
                for mq in &asked {
                    locks.forget(mq);
                }
            }
            let Some(topic) = asked.first().map(|mq| mq.topic.clone()) else {
                continue;
            };
            let addr = match self.client.broker_addr(&topic, &broker).await {
                Ok(a) => a,
                Err(e) => {
                    warn!(self.logger, "unlock batch: no broker address"; "broker" => &broker, "error" => %e);
                    continue;
                }
            };
            let req = UnlockBatchMqRequest {
                consumer_group: self.cfg.group.clone(),
                client_id: self.client_id.clone(),
                mq_set: asked.clone(),
            };
            match self.client.call(addr, req).await {
                Ok(_) => {
                    info!(self.logger, "queues unlocked"; "broker" => &broker, "count" => asked.len());
                }
                Err(e) => {
                    warn!(self.logger, "unlock batch failed (the locks expire at the broker)";
                        "broker" => &broker, "error" => %e);
                }
            }
        }
    }

    /// Renews the locks of every queue held or being released (the renew
    /// timer); wakes the queues locked again.
    pub(crate) async fn renew_locks(&self) {
        let mut held: Vec<Arc<QueueSlot>> = self
            .queues
            .lock()
            .expect("queues lock")
            .values()
            .cloned()
            .collect();
        held.extend(
            self.releasing
                .lock()
                .expect("releasing lock")
                .values()
                .cloned(),
        );
        if held.is_empty() {
            return;
        }
        let mqs: Vec<MessageQueue> = held.iter().map(|s| s.mq.clone()).collect();
        let locked = self.lock_queues(&mqs).await;
        for slot in held.iter().filter(|s| locked.contains(&s.mq)) {
            if let Some(o) = &slot.orderly {
                o.lock_changed.notify_waiters();
            }
        }
    }

    /// Starts releasing a queue rebalance dropped (see the module docs):
    /// its pull stops at once; a task waits for its listener call in
    /// flight, commits its offset, then unlocks it at the broker. The
    /// rebalance does not wait (a long listener call holds up neither
    /// the service's timers nor the other queues); until the release is
    /// done the queue is renewed with the others and not taken again.
    pub(crate) fn release_orderly(self: &Arc<Self>, slot: Arc<QueueSlot>) {
        slot.stop_pull(&self.supervisor);
        self.queues.lock().expect("queues lock").remove(&slot.mq);
        self.releasing
            .lock()
            .expect("releasing lock")
            .insert(slot.mq.clone(), slot.clone());
        actix_rt::spawn(self.clone().finish_release(slot));
    }

    /// The release task of [`Core::release_orderly`].
    async fn finish_release(self: Arc<Self>, slot: Arc<QueueSlot>) {
        let Some(o) = &slot.orderly else { return };
        let guard = o.consume_lock.lock().await;
        slot.drop_queue();
        o.arrived.notify_one();
        o.lock_changed.notify_waiters();
        // Committed before the entry leaves the table: if the release is
        // cut short (the service stopped), shutdown still commits it.
        let offset = self.offsets.lock().expect("offsets lock").get(&slot.mq);
        if let Some(offset) = offset {
            self.persist_one(&slot.mq, offset).await;
        }
        self.offsets.lock().expect("offsets lock").remove(&slot.mq);
        self.unlock_queues(std::slice::from_ref(&slot.mq)).await;
        self.releasing
            .lock()
            .expect("releasing lock")
            .remove(&slot.mq);
        drop(guard);
        self.released.notify_waiters();
        info!(self.logger, "queue released"; "queue" => slot.mq.queue_id, "broker" => &slot.mq.broker_name);
    }

    /// Waits (up to `deadline`) until no release is under way.
    pub(crate) async fn releases_done(&self, deadline: tokio::time::Instant) {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.releasing.lock().expect("releasing lock").is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Whether `mq` is being released (not to be taken again until done).
    pub(crate) fn is_releasing(&self, mq: &MessageQueue) -> bool {
        self.releasing
            .lock()
            .expect("releasing lock")
            .contains_key(mq)
    }

    /// Unlocks every queue of `slots` whose worker is not in a listener
    /// call (shutdown, failure; offsets persisted before), and every queue
    /// still locked that no slot holds any more (a release cut short). A
    /// queue whose listener still runs keeps its broker lock until it
    /// expires, so no other instance starts on it meanwhile.
    pub(crate) async fn unlock_idle(&self, slots: &[Arc<QueueSlot>]) {
        let mut slots = slots.to_vec();
        slots.extend(
            self.releasing
                .lock()
                .expect("releasing lock")
                .values()
                .cloned(),
        );
        let mut idle: Vec<MessageQueue> = self
            .locks
            .lock()
            .expect("locks lock")
            .known()
            .into_iter()
            .filter(|mq| !slots.iter().any(|s| &s.mq == mq))
            .collect();
        let mut guards = Vec::new();
        for slot in &slots {
            let Some(o) = &slot.orderly else { continue };
            match o.consume_lock.try_lock() {
                Ok(g) => {
                    guards.push(g);
                    idle.push(slot.mq.clone());
                }
                Err(_) => {
                    warn!(self.logger, "listener still running: queue lock left to expire";
                        "queue" => slot.mq.queue_id, "broker" => &slot.mq.broker_name);
                }
            }
        }
        if !idle.is_empty() {
            self.unlock_queues(&idle).await;
        }
    }

    /// The group's max reconsume times (from the broker's group config).
    fn max_reconsume(&self) -> u32 {
        self.group_config
            .lock()
            .expect("group config lock")
            .as_ref()
            .map_or(DEFAULT_MAX_RECONSUME, |c| c.retry_max_times)
    }

    /// **The after-max step of orderly consumption.** `msgs` of `mq` were
    /// reconsumed the group's max times and failed again: each goes back
    /// to its broker (`CONSUMER_SEND_MSG_BACK` with its local reconsume
    /// count and the group's max, so the broker stores it in
    /// `%DLQ%<group>`). `true` when all were taken (the caller commits
    /// past them); `false` when one was not (the queue stays suspended and
    /// the batch is tried again, as RocketMQ does).
    pub(crate) async fn to_dead_letter(&self, mq: &MessageQueue, msgs: &[StoredMessage]) -> bool {
        let broker = match self.client.broker_addr(&mq.topic, &mq.broker_name).await {
            Ok(b) => b,
            Err(e) => {
                warn!(self.logger, "dead letter: no broker"; "broker" => &mq.broker_name, "error" => %e);
                return false;
            }
        };
        let max = self.max_reconsume();
        for m in msgs {
            let req = actormq_protocol::request::ConsumerSendMsgBackRequest {
                consumer_group: self.cfg.group.clone(),
                commit_log_offset: m.commit_log_offset,
                delay_level: 0,
                origin_msg_id: m.msg_id().encode(),
                origin_topic: m.message.topic.clone(),
                max_reconsume_times: Some(max),
                reconsume_times: Some(m.reconsume_times.max(max)),
                more: Vec::new(),
            };
            if let Err(e) = self.client.call(broker, req).await {
                warn!(self.logger, "dead letter not taken; the queue stays suspended";
                    "queue" => mq.queue_id, "offset" => m.queue_offset, "error" => %e);
                return false;
            }
            warn!(self.logger, "message failed the max reconsume times; moved to the dead-letter queue";
                "msg_id" => m.msg_id().to_string(), "queue" => mq.queue_id, "broker" => &mq.broker_name,
                "offset" => m.queue_offset, "reconsume_times" => m.reconsume_times);
        }
        true
    }

    /// The worker of one queue (see the module docs): one batch at a time,
    /// in offset order; retried in place on failure.
    pub(crate) async fn orderly_worker(self: Arc<Self>, slot: Arc<QueueSlot>) {
        let Some(o) = &slot.orderly else { return };
        let size = self.cfg.consume_batch_size.max(1);
        let suspend = Duration::from_millis(self.cfg.suspend_ms);
        let mut batch: Vec<StoredMessage> = Vec::new();
        loop {
            if slot.dropped.load(Ordering::SeqCst) || self.halted() {
                return;
            }
            if !self.service_up() && !self.service_ready().await {
                return;
            }
            if batch.is_empty() {
                batch = o.buffer.lock().expect("buffer lock").take(size);
                if batch.is_empty() {
                    let _ = tokio::time::timeout(RECHECK, o.arrived.notified()).await;
                    continue;
                }
            }
            if !self.may_consume(&slot.mq) {
                self.wait_lock(&slot).await;
                continue;
            }
            let Ok(permit) = self.workers.clone().acquire_owned().await else {
                return;
            };
            let guard = o.consume_lock.lock().await;
            if slot.dropped.load(Ordering::SeqCst) || self.halted() {
                return;
            }
            if !self.service_up() || !self.may_consume(&slot.mq) {
                continue; // wait (above) for the service or the lock
            }
            // The builder refuses a view listener for orderly consumption.
            let AnyListener::Owned(listener) = self.listener.clone() else {
                return;
            };
            let shared = Arc::new(std::mem::take(&mut batch));
            let call = shared.clone();
            let result = actix_rt::task::spawn_blocking(move || listener(&call[..])).await;
            batch = Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
            let result = result.unwrap_or_else(|_| {
                warn!(self.logger, "listener panicked; the queue is suspended";
                    "queue" => slot.mq.queue_id);
                ConsumeResult::Later
            });
            // (done, counted as a failure)
            let (done, failed) = match result {
                ConsumeResult::Success => (true, false),
                // Not consumed and not failed: offered again, same count.
                ConsumeResult::Retain => (false, false),
                ConsumeResult::Later => match failure_action(&batch, self.max_reconsume()) {
                    FailureAction::DeadLetter => {
                        (self.to_dead_letter(&slot.mq, &batch).await, true)
                    }
                    FailureAction::Suspend => (false, true),
                },
            };
            if done {
                // Under the queue's lock: a released queue records nothing.
                let mut pq = slot.pq.lock().expect("pq lock");
                if slot.dropped.load(Ordering::SeqCst) {
                    return;
                }
                let commit = pq.remove(batch.iter().map(|m| m.queue_offset));
                self.offsets
                    .lock()
                    .expect("offsets lock")
                    .update(&slot.mq, commit);
                batch.clear();
                drop(pq);
                drop(guard);
                drop(permit);
            } else {
                for m in batch.iter_mut().filter(|_| failed) {
                    m.reconsume_times += 1;
                }
                drop(guard);
                drop(permit);
                tokio::time::sleep(suspend).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(broker: &str, q: u32) -> MessageQueue {
        MessageQueue {
            topic: "t".into(),
            broker_name: broker.into(),
            queue_id: q,
        }
    }

    fn msg(offset: u64, reconsume: u32) -> StoredMessage {
        StoredMessage {
            message: actormq_protocol::Message::new("t", &b"x"[..]),
            queue_id: 0,
            queue_offset: offset,
            commit_log_offset: 0,
            store_size: 0,
            born_timestamp_ms: 0,
            store_timestamp_ms: 0,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            body_crc: 0,
            reconsume_times: reconsume,
            prepared_transaction_offset: 0,
        }
    }

    #[test]
    fn queues_are_locked_per_broker() {
        let by = LockTable::by_broker(&[mq("b", 1), mq("a", 0), mq("b", 0), mq("b", 1)]);
        assert_eq!(by.len(), 2);
        assert_eq!(by["a"], vec![mq("a", 0)]);
        assert_eq!(by["b"], vec![mq("b", 0), mq("b", 1)]);
    }

    #[test]
    fn only_granted_queues_are_locked_and_a_refused_renewal_is_a_loss() {
        let t0 = Instant::now();
        let mut t = LockTable::new(Duration::from_secs(30));
        let asked = [mq("a", 0), mq("a", 1)];
        let out = t.record(&asked, &[mq("a", 0)], t0);
        assert_eq!(out.locked, vec![mq("a", 0)]);
        assert_eq!(out.refused, vec![mq("a", 1)]);
        assert!(out.lost.is_empty(), "never locked: refused, not lost");
        assert!(t.is_locked(&mq("a", 0), t0));
        assert!(!t.is_locked(&mq("a", 1), t0));
        assert!(!t.is_locked(&mq("x", 9), t0), "unknown queue");
        // Renewal refused: lost at once, whatever the age of the lock.
        let out = t.record(&asked, &[mq("a", 1)], t0 + Duration::from_secs(1));
        assert_eq!(out.lost, vec![mq("a", 0)]);
        assert_eq!(out.locked, vec![mq("a", 1)]);
        assert!(!t.is_locked(&mq("a", 0), t0 + Duration::from_secs(1)));
        // Granted again: locked again.
        t.record(&[mq("a", 0)], &[mq("a", 0)], t0 + Duration::from_secs(2));
        assert!(t.is_locked(&mq("a", 0), t0 + Duration::from_secs(2)));
        t.forget(&mq("a", 0));
        assert!(!t.is_locked(&mq("a", 0), t0 + Duration::from_secs(2)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.known(), vec![mq("a", 1)]);
    }

    #[test]
    fn a_lock_not_renewed_expires_client_side() {
        let t0 = Instant::now();
        let mut t = LockTable::new(Duration::from_secs(30));
        t.record(&[mq("a", 0)], &[mq("a", 0)], t0);
        assert!(t.is_locked(&mq("a", 0), t0 + Duration::from_millis(29_999)));
        assert!(!t.is_locked(&mq("a", 0), t0 + Duration::from_secs(30)));
        // A renewal (sent at 20 s) extends it from when it was sent.
        t.record(&[mq("a", 0)], &[mq("a", 0)], t0 + Duration::from_secs(20));
        assert!(t.is_locked(&mq("a", 0), t0 + Duration::from_secs(49)));
        assert!(!t.is_locked(&mq("a", 0), t0 + Duration::from_secs(50)));
        // A failed renewal (no reply) records nothing: the lock just ages.
        assert!(!t.is_empty());
    }

    #[test]
    fn buffer_hands_out_offsets_in_order_without_duplicates() {
        let mut b = OrderlyBuffer::default();
        b.put([msg(5, 0), msg(3, 0)]);
        b.put([msg(4, 0), msg(3, 7)]);
        assert_eq!(b.len(), 3);
        let first = b.take(2);
        assert_eq!(
            first.iter().map(|m| m.queue_offset).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(first[0].reconsume_times, 0, "the first copy is kept");
        assert_eq!(b.take(0).len(), 1, "at least one");
        assert!(b.is_empty());
        assert!(b.take(4).is_empty());
    }

    #[test]
    fn failures_retry_until_the_max_then_dead_letter() {
        assert_eq!(failure_action(&[msg(0, 0)], 16), FailureAction::Suspend);
        assert_eq!(failure_action(&[msg(0, 15)], 16), FailureAction::Suspend);
        assert_eq!(failure_action(&[msg(0, 16)], 16), FailureAction::DeadLetter);
        assert_eq!(
            failure_action(&[msg(0, 2), msg(1, 3)], 3),
            FailureAction::DeadLetter
        );
        assert_eq!(failure_action(&[msg(0, 0)], 0), FailureAction::DeadLetter);
    }
}

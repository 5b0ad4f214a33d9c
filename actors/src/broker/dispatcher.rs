//! `Dispatcher`: follows the commit log and builds the consume queues and
//! the key index ([`Store::dispatch`](actormq_store::Store::dispatch),
//! RocketMQ's "reput" service), then announces what became readable.
//!
//! Triggers: a cheap [`LogAppended`] nudge from the
//! [`super::CommitLogActor`] after every append batch (coalesced: many
//! nudges in one mailbox pass run one dispatch), plus a periodic tick
//! (default 100 ms) as a safety net. One round dispatches at most
//! [`DispatcherConfig::max_per_round`] records and re-schedules itself
//! when more are waiting, so other messages are not starved.
//!
//! After each round it publishes one [`MessagesStored`] per touched
//! topic-queue to every subscriber ([`SubscribeStored`]): this is the
//! public "message stored" event; [`super::PullHold`] wakes held pulls
//! with it and custom actors (audit, mirror) subscribe the same way. The
//! aggregation is [`StoredEvents`], a plain struct.
//!
//! A big backlog (at least [`DispatcherConfig::offload_bytes`] of log not
//! yet dispatched, as after batches of thousands of messages) is
//! dispatched on a thread of its own while this actor's thread serves
//! the network and the writer; a small one is dispatched in place, which
//! keeps the delivery latency of light traffic free of thread hand-offs
//! ([`Placement`], a plain decision).

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use slog::{Logger, error, info, o};

use super::broker_store::BrokerStore;

/// Settings of the [`Dispatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherConfig {
    /// Safety-net period (a dispatch runs even without a nudge). Default: 100 ms.
    pub tick: Duration,
    /// Most records dispatched before yielding to the mailbox. Default: 16 384.
    pub max_per_round: usize,
    /// A backlog of at least this many log bytes is dispatched on a
    /// helper thread instead of this actor's ([`Placement`]);
    /// `u64::MAX`: never. Default: 1 MiB.
    pub offload_bytes: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            max_per_round: 16_384,
            offload_bytes: 1 << 20,
        }
    }
}

/// "The commit log grew": sent by the writer after each append batch.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct LogAppended;

/// New messages became readable in one topic-queue.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct MessagesStored {
    /// Topic.
    pub topic: String,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset of the first new message.
    pub first_offset: u64,
    /// New max offset of the queue (one past the last new message).
    pub max_offset: u64,
    /// How many messages became readable in this queue.
    pub count: u64,
    /// Store timestamp of the last new message (ms since the epoch).
    pub last_store_timestamp_ms: u64,
}

/// Subscribe to [`MessagesStored`]. A subscriber whose mailbox closed is
/// dropped at the next publication.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeStored(pub Recipient<MessagesStored>);

/// Counters of the [`Dispatcher`] ([`GetDispatchStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Rounds run on a thread of its own (a big backlog).
    pub offloaded_rounds: u64,
    /// Dispatch rounds that found records.
    pub rounds: u64,
    /// Records dispatched.
    pub records: u64,
    /// [`MessagesStored`] events published (per subscriber count once).
    pub events: u64,
    /// Commit log offset below which everything is dispatched.
    pub dispatched_offset: u64,
    /// Rounds that failed for a full disk (a file could not be created).
    pub disk_full_rounds: u64,
}

/// Ask the [`Dispatcher`] for its counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "DispatchStats")]
pub struct GetDispatchStats;

#[derive(Debug, Message)]
#[rtype(result = "()")]
struct RunDispatch;

/// Aggregates dispatched records into one event per topic-queue. Plain data.
#[derive(Debug, Default)]
pub struct StoredEvents {
    queues: HashMap<String, HashMap<u32, MessagesStored>>,
}

impl StoredEvents {
    /// Records that the message at `queue_offset` of (topic, queue) is readable.
    pub fn add(&mut self, topic: &str, queue_id: u32, queue_offset: u64, store_ms: u64) {
        self.add_run(topic, queue_id, queue_offset, queue_offset + 1, 1, store_ms);
    }

    /// Records that `count` messages in `[first_offset, max_offset)` of
    /// (topic, queue) are readable, the last stored at `store_ms`.
    pub fn add_run(
        &mut self,
        topic: &str,
        queue_id: u32,
        first_offset: u64,
        max_offset: u64,
        count: u64,
        store_ms: u64,
    ) {
        let per_topic = match self.queues.get_mut(topic) {
            Some(q) => q,
            None => self.queues.entry(topic.to_owned()).or_default(),
        };
        let e = per_topic.entry(queue_id).or_insert_with(|| MessagesStored {
            topic: topic.to_owned(),
            queue_id,
            first_offset,
            max_offset,
            count: 0,
            last_store_timestamp_ms: store_ms,
        });
        e.first_offset = e.first_offset.min(first_offset);
        e.max_offset = e.max_offset.max(max_offset);
        e.count += count;
        e.last_store_timestamp_ms = e.last_store_timestamp_ms.max(store_ms);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, mut other: StoredEvents) {
        for e in other.take() {
            self.add_run(
                &e.topic,
                e.queue_id,
                e.first_offset,
                e.max_offset,
                e.count,
                e.last_store_timestamp_ms,
            );
        }
    }

    /// The events, sorted by topic and queue, leaving the table empty.
    pub fn take(&mut self) -> Vec<MessagesStored> {
        let mut out: Vec<MessagesStored> = self
            .queues
            .drain()
            .flat_map(|(_, qs)| qs.into_values())
            .collect();
        out.sort_by(|a, b| (&a.topic, a.queue_id).cmp(&(&b.topic, b.queue_id)));
        out
    }
}

/// Where a dispatch round runs: a plain decision on the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the dispatcher's own thread: small backlogs (low latency).
    InPlace,
    /// On the helper thread: backlogs of `offload_bytes` or more.
    Offload,
}

impl Placement {
    /// The placement of a round facing `backlog` undispatched log bytes.
    pub fn of(backlog: u64, offload_bytes: u64) -> Placement {
        if backlog >= offload_bytes {
            Placement::Offload
        } else {
            Placement::InPlace
        }
    }
}

/// One dispatch round of at most `max` records: consecutive records of one
/// queue are counted as one run, and the runs are added to `events`.
fn collect_round(
    store: &BrokerStore,
    max: usize,
    events: &mut StoredEvents,
) -> actormq_store::Result<actormq_store::DispatchProgress> {
    let mut run: Option<(String, u32, u64, u64, u64, u64)> = None;
    let res = store.dispatch_with(max, &mut |r| match &mut run {
        Some((t, q, _, max, count, ms))
            if *q == r.queue_id && *max == r.queue_offset && t == r.topic =>
        {
            *max += 1;
            *count += 1;
            *ms = (*ms).max(r.store_timestamp_ms);
        }
        _ => {
            if let Some((t, q, first, max, count, ms)) = run.take() {
                events.add_run(&t, q, first, max, count, ms);
            }
            run = Some((
                r.topic.to_owned(),
                r.queue_id,
                r.queue_offset,
                r.queue_offset + 1,
                1,
                r.store_timestamp_ms,
            ));
        }
    });
    if let Some((t, q, first, max, count, ms)) = run {
        events.add_run(&t, q, first, max, count, ms);
    }
    res
}

/// The dispatcher actor. See the module docs.
pub struct Dispatcher {
    store: BrokerStore,
    config: DispatcherConfig,
    subscribers: Vec<Recipient<MessagesStored>>,
    scheduled: bool,
    /// A round runs on the helper thread.
    offloaded: bool,
    /// The thread of big rounds ([`Placement::Offload`]), once needed.
    pool: Option<Arbiter>,
    events: StoredEvents,
    stats: DispatchStats,
    /// The last round failed for a full disk (logged once until it clears).
    disk_full: bool,
    logger: Logger,
}

impl Dispatcher {
    /// A dispatcher following `store`.
    pub fn new(store: BrokerStore, config: DispatcherConfig, logger: &Logger) -> Self {
        Self {
            store,
            config,
            subscribers: Vec::new(),
            scheduled: false,
            offloaded: false,
            pool: None,
            events: StoredEvents::default(),
            stats: DispatchStats::default(),
            disk_full: false,
            logger: logger.new(o!("actor" => "Dispatcher")),
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>) {
        if !self.scheduled {
            self.scheduled = true;
            ctx.notify(RunDispatch);
        }
    }

    fn run(&mut self, ctx: &mut Context<Self>) {
        self.scheduled = false;
        if self.offloaded {
            // The round in flight re-schedules when it lands.
            return;
        }
        let from = self.store.dispatched_offset();
        let backlog = self.store.commit_log_max_offset().saturating_sub(from);
        if Placement::of(backlog, self.config.offload_bytes) == Placement::Offload {
            self.offload(from, ctx);
            return;
        }
        let res = collect_round(&self.store, self.config.max_per_round, &mut self.events);
        self.finish_round(res, from, ctx);
    }

    /// Runs one round on a thread of its own; this actor's thread goes
    /// on serving its mailbox (no other round starts meanwhile).
    fn offload(&mut self, from: u64, ctx: &mut Context<Self>) {
        self.offloaded = true;
        self.stats.offloaded_rounds += 1;
        let store = self.store.clone();
        let max = self.config.max_per_round;
        let (tx, rx) = tokio::sync::oneshot::channel();
        // One thread for this actor's big rounds, started on first use and
        // stopped with the actor (a restart starts a new one).
        let pool = self.pool.get_or_insert_with(Arbiter::new);
        pool.spawn_fn(move || {
            let mut events = StoredEvents::default();
            let res = collect_round(&store, max, &mut events);
            let _ = tx.send((res, events));
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(rx).map(move |done, act, ctx| {
                act.offloaded = false;
                let res = match done {
                    Ok((res, events)) => {
                        act.events.merge(events);
                        res
                    }
                    // The round died with its thread (a panic): drop the
                    // thread; stopping below makes the supervisor restart us.
                    Err(_) => {
                        if let Some(pool) = act.pool.take() {
                            pool.stop();
                        }
                        Err(actormq_store::Error::Io(std::io::Error::other(
                            "dispatch thread failed",
                        )))
                    }
                };
                act.finish_round(res, from, ctx);
            }),
        );
    }

    fn finish_round(
        &mut self,
        res: actormq_store::Result<actormq_store::DispatchProgress>,
        from: u64,
        ctx: &mut Context<Self>,
    ) {
        let p = match res {
            Ok(p) => p,
            Err(actormq_store::Error::DiskFull) => {
                self.stats.disk_full_rounds += 1;
                // No room for a new consume-queue or index file: not a
                // fault of this actor (a restart would fail the same way
                // and the supervisor would give up on the node). Reads of
                // what is dispatched go on; the tick retries.
                if !self.disk_full {
                    error!(self.logger, "dispatch stopped: disk full; retrying every tick"; "from" => from);
                    self.disk_full = true;
                }
                return;
            }
            Err(e) => {
                // Corruption or I/O: stop; the supervisor restarts us and
                // the store retries from its last good position.
                error!(self.logger, "dispatch failed"; "error" => %e, "from" => from);
                ctx.stop();
                return;
            }
        };
        if self.disk_full {
            info!(self.logger, "dispatch resumed: disk space available"; "from" => from);
            self.disk_full = false;
        }
        self.stats.dispatched_offset = p.next_offset;
        if p.dispatched > 0 {
            self.stats.rounds += 1;
            self.stats.records += p.dispatched as u64;
            self.publish();
        }
        // Appends made while an offloaded round ran nudged no one (their
        // nudges found the round in flight): look at the log end again.
        if !p.caught_up || self.store.commit_log_max_offset() > p.next_offset {
            self.schedule(ctx);
        }
    }

    fn publish(&mut self) {
        if self.events.is_empty() {
            return;
        }
        self.subscribers.retain(|s| s.connected());
        for ev in self.events.take() {
            for s in &self.subscribers {
                s.do_send(ev.clone());
                self.stats.events += 1;
            }
        }
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |act, ctx| act.schedule(ctx));
        self.schedule(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(pool) = self.pool.take() {
            pool.stop();
        }
    }
}

impl Handler<LogAppended> for Dispatcher {
    type Result = ();
    fn handle(&mut self, _: LogAppended, ctx: &mut Context<Self>) {
        self.schedule(ctx);
    }
}

impl Handler<RunDispatch> for Dispatcher {
    type Result = ();
    fn handle(&mut self, _: RunDispatch, ctx: &mut Context<Self>) {
        self.run(ctx);
    }
}

impl Handler<SubscribeStored> for Dispatcher {
    type Result = ();
    fn handle(&mut self, msg: SubscribeStored, _: &mut Context<Self>) {
        self.subscribers.push(msg.0);
    }
}

impl Handler<GetDispatchStats> for Dispatcher {
    type Result = MessageResult<GetDispatchStats>;
    fn handle(&mut self, _: GetDispatchStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_backlogs_are_offloaded() {
        let mib = 1 << 20;
        assert_eq!(Placement::of(0, mib), Placement::InPlace);
        assert_eq!(Placement::of(mib - 1, mib), Placement::InPlace);
        assert_eq!(Placement::of(mib, mib), Placement::Offload);
        assert_eq!(Placement::of(u64::MAX - 1, u64::MAX), Placement::InPlace);
    }

    #[test]
    fn merged_events_add_up() {
        let mut a = StoredEvents::default();
        a.add_run("t", 0, 5, 8, 3, 10);
        let mut b = StoredEvents::default();
        b.add_run("t", 0, 8, 10, 2, 12);
        b.add("u", 1, 0, 11);
        a.merge(b);
        let got = a.take();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].first_offset, got[0].max_offset, got[0].count),
            (5, 10, 5)
        );
        assert_eq!(got[0].last_store_timestamp_ms, 12);
        assert_eq!((got[1].topic.as_str(), got[1].count), ("u", 1));
    }

    #[test]
    fn one_event_per_queue_with_range_and_count() {
        let mut e = StoredEvents::default();
        e.add("b", 0, 7, 10);
        e.add("a", 1, 0, 11);
        e.add("a", 1, 1, 12);
        e.add("b", 0, 8, 13);
        e.add("a", 0, 3, 9);
        let got = e.take();
        assert!(e.is_empty());
        let brief: Vec<_> = got
            .iter()
            .map(|m| {
                (
                    m.topic.as_str(),
                    m.queue_id,
                    m.first_offset,
                    m.max_offset,
                    m.count,
                )
            })
            .collect();
        assert_eq!(
            brief,
            vec![("a", 0, 3, 4, 1), ("a", 1, 0, 2, 2), ("b", 0, 7, 9, 2)]
        );
        assert_eq!(got[2].last_store_timestamp_ms, 13);
    }

    #[test]
    fn runs_merge_with_single_adds() {
        let mut e = StoredEvents::default();
        e.add_run("t", 2, 10, 20, 10, 5);
        e.add("t", 2, 20, 7);
        e.add_run("t", 2, 21, 25, 4, 6);
        let got = e.take();
        assert_eq!(got.len(), 1);
        let m = &got[0];
        assert_eq!(
            (
                m.first_offset,
                m.max_offset,
                m.count,
                m.last_store_timestamp_ms
            ),
            (10, 25, 15, 7)
        );
    }
}

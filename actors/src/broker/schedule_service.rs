//! `ScheduleService`: moves delayed messages to their topic when due.
//!
//! The [`super::CommitLogActor`] parks a message sent with delay level `l`
//! in `SCHEDULE_TOPIC_XXXX`, queue `l - 1`, with the time it is due as its
//! consume-queue tag hash and its real topic and queue in the `REAL_TOPIC`
//! and `REAL_QID` properties. Every queue of the schedule topic holds one
//! level, so it is in due order: this actor follows each queue from its
//! progress offset, and every message that is due goes back to the writer
//! ([`PutInternal`]) as a message of its real topic (the delay properties
//! removed, everything else kept: keys, tags, `UNIQ_KEY`, user
//! properties, born time and host, reconsume times). A consumer's
//! send-back reaches its `%RETRY%` topic the same way.
//!
//! - **Progress** (the next offset of each level's queue) is advanced only
//!   once the writer has stored the moved messages, and persisted in
//!   `<data>/config/delay_offsets.msgpack` after every advance (written off
//!   the actor's thread, coalesced). A restart therefore loses nothing
//!   that was due and repeats at most the messages moved after the last
//!   write: at-least-once, as RocketMQ's `delayOffset.json`.
//! - **When**: a pass runs every `poll_interval` (100 ms by default, so a
//!   message is moved at most that late under no load) and at once again
//!   while a level still has due messages (batches of `batch`). One put
//!   per level is in flight at a time.
//! - A message that can never be moved (its topic deleted, its queue gone,
//!   the record unreadable) is logged at `ERROR` and skipped; a transient
//!   failure (the writer busy or restarting, the store full) is retried on
//!   the next pass from the same offset.
//!
//! The scanning decision is [`scan_level`], a plain function tested
//! without a runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::ha::HaState;
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::system_topic::{PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC, SCHEDULE_TOPIC};
use actormq_store::Unit;
use actormq_store::record::properties_iter_bytes;
use serde::{Deserialize, Serialize};
use slog::{Logger, error, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, InternalMessage, PutInternal};
use super::error_map::put_failed_for_good;
use super::persist;
use super::stored_codec::{PROPERTY_DELAY, PROPERTY_DELIVER_AT_MS, PROPERTY_TAGS, tag_hash_of};
use crate::runtime::ChildRef;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};

/// Settings of the [`ScheduleService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Progress file (`<data>/config/delay_offsets.msgpack`).
    pub path: PathBuf,
    /// Number of delay levels (queues of the schedule topic followed).
    pub levels: u32,
    /// Time between passes. Default 100 ms.
    pub poll_interval: Duration,
    /// Most messages moved per level in one put. Default 256.
    pub batch: usize,
}

impl ScheduleConfig {
    /// Defaults for `levels` levels, progress kept at `path`.
    pub fn new(path: PathBuf, levels: u32) -> Self {
        Self {
            path,
            levels,
            poll_interval: Duration::from_millis(100),
            batch: 256,
        }
    }
}

/// The next offset to move of each level's queue (what is persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, MessageResponse)]
pub struct DelayProgress {
    /// Queue id (level − 1) → next queue offset.
    pub offsets: BTreeMap<u32, u64>,
}

/// What one look at a level's queue found ([`scan_level`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LevelScan {
    /// Where the queue's readable part starts when the progress was below
    /// it (retention removed parked messages: logged and skipped).
    pub skipped_to: Option<u64>,
    /// The due messages in order, from the (possibly skipped-to) offset.
    pub due: Vec<(u64, Unit)>,
    /// When the first message not yet due is due (ms), if any.
    pub next_due_ms: Option<u64>,
}

/// Looks at one level's queue from `offset`: the messages due at `now_ms`
/// (up to `batch`, in queue order, stopping at the first one not due:
/// a level's queue is in due order), given the queue's readable range
/// `[min, max)` and its units by offset.
pub fn scan_level(
    offset: u64,
    (min, max): (u64, u64),
    now_ms: u64,
    batch: usize,
    unit: impl Fn(u64) -> Option<Unit>,
) -> LevelScan {
    let mut scan = LevelScan::default();
    let mut at = offset;
    if at < min {
        scan.skipped_to = Some(min);
        at = min;
    }
    while at < max && scan.due.len() < batch {
        let Some(u) = unit(at) else {
            break;
        };
        let due = u64::try_from(u.tag_hash).unwrap_or(0);
        if due > now_ms {
            scan.next_due_ms = Some(due);
            break;
        }
        scan.due.push((at, u));
        at += 1;
    }
    scan
}

/// The message a parked record (delayed or timed) is delivered as, or why
/// it cannot be: its real topic and queue, the parking properties
/// (`REAL_TOPIC`, `REAL_QID`, `DELAY`, `DELIVER_AT_MS`) removed.
pub(super) fn unparked(view: &actormq_store::MessageView) -> Result<InternalMessage, String> {
    let h = view.header();
    let (mut topic, mut queue) = (None, None);
    let mut props = Vec::with_capacity(view.properties().len());
    let mut kept = Vec::new();
    for (k, v) in properties_iter_bytes(view.properties()) {
        if k == PROPERTY_REAL_TOPIC.as_bytes() {
            topic = std::str::from_utf8(v).ok().map(str::to_owned);
        } else if k == PROPERTY_REAL_QUEUE_ID.as_bytes() {
            queue = std::str::from_utf8(v)
                .ok()
                .and_then(|q| q.parse::<u32>().ok());
        } else if k != PROPERTY_DELAY.as_bytes() && k != PROPERTY_DELIVER_AT_MS.as_bytes() {
            kept.push((k, v));
        }
    }
    let topic = topic.ok_or("no REAL_TOPIC property")?;
    let queue_id = queue.ok_or("no REAL_QID property")?;
    actormq_store::encode_properties_into(kept, &mut props).map_err(|e| e.to_string())?;
    let tag_hash = tag_hash_of(view.property(PROPERTY_TAGS));
    Ok(InternalMessage {
        topic,
        queue_id,
        body: view.body(),
        properties: props,
        tag_hash,
        flags: h.flags,
        born_timestamp_ms: h.born_timestamp_ms,
        born_host: h.born_host,
        reconsume_times: h.reconsume_times,
        delay_level: 0,
    })
}

/// Ask the [`ScheduleService`] for its progress (tests, status).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "DelayProgress")]
pub struct GetDelayProgress;

/// Moves the progress forward to a master's (a slave's config sync): a
/// promoted slave then does not move again what its master moved before
/// the last sync. Never moves back.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct AdvanceDelayProgress(pub DelayProgress);

/// Internal: one pass over every level.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct Pass;

/// The schedule service actor. See the module docs.
pub struct ScheduleService {
    store: BrokerStore,
    writer: ChildRef<CommitLogActor>,
    /// Idle while this broker is a slave (its master does this work).
    ha: Option<Arc<HaState>>,
    config: ScheduleConfig,
    progress: DelayProgress,
    state: Arc<persist::StateFile>,
    in_flight: BTreeSet<u32>,
    pass_queued: bool,
    logger: Logger,
    poison: Poison,
}

impl ScheduleService {
    /// Idles while `ha` says this broker is a slave (builder style): the
    /// master does this work, and its results reach the slave through
    /// the commit log.
    pub fn with_ha(mut self, ha: Arc<HaState>) -> Self {
        self.ha = Some(ha);
        self
    }

    fn is_slave(&self) -> bool {
        self.ha.as_ref().is_some_and(|h| !h.role().is_master())
    }

    /// Loads the progress (the supervisor's factory calls this on every
    /// restart).
    pub fn load(
        store: BrokerStore,
        writer: ChildRef<CommitLogActor>,
        config: ScheduleConfig,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "ScheduleService"));
        let progress: DelayProgress =
            persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        Ok(Self {
            store,
            writer,
            state: persist::StateFile::for_path(&config.path),
            config,
            progress,
            in_flight: BTreeSet::new(),
            pass_queued: false,
            logger,
            ha: None,
            poison: Poison::default(),
        })
    }

    fn pass(&mut self, ctx: &mut Context<Self>) {
        if self.is_slave() {
            return;
        }
        let now = super::now_ms();
        for q in 0..self.config.levels {
            if self.in_flight.contains(&q) {
                continue;
            }
            let offset = self.progress.offsets.get(&q).copied().unwrap_or(0);
            let range = (
                self.store.min_offset(SCHEDULE_TOPIC, q),
                self.store.max_offset(SCHEDULE_TOPIC, q),
            );
            if offset >= range.1 {
                continue;
            }
            let store = self.store.clone();
            let scan = scan_level(offset, range, now, self.config.batch, |at| {
                store.unit(SCHEDULE_TOPIC, q, at)
            });
            if let Some(to) = scan.skipped_to {
                warn!(self.logger, "parked messages removed by retention before they were due";
                    "level" => q + 1, "from" => offset, "to" => to);
                self.advance(q, to, ctx);
            }
            if !scan.due.is_empty() {
                self.move_due(q, scan.due, ctx);
            }
        }
    }

    /// Moves the due messages of level queue `q` (one put), then advances.
    fn move_due(&mut self, q: u32, due: Vec<(u64, Unit)>, ctx: &mut Context<Self>) {
        let full = due.len() >= self.config.batch;
        let mut messages = Vec::with_capacity(due.len());
        let mut offsets = Vec::with_capacity(due.len());
        for (at, u) in due {
            match self
                .store
                .read_at(u.commit_log_offset)
                .as_ref()
                .map(unparked)
            {
                Some(Ok(m)) => {
                    messages.push(m);
                    offsets.push(at);
                }
                Some(Err(why)) if messages.is_empty() => {
                    error!(self.logger, "parked message cannot be delivered; skipped";
                        "level" => q + 1, "offset" => at, "why" => why);
                    self.advance(q, at + 1, ctx);
                }
                // Skipped on the next pass, once the ones before it are
                // stored; or not readable (yet): tried again then.
                Some(Err(_)) | None => break,
            }
        }
        if messages.is_empty() {
            return;
        }
        let Some(writer) = self.writer.addr() else {
            return; // restarting: the next pass tries again
        };
        self.in_flight.insert(q);
        let ask = writer.send(PutInternal {
            messages,
            create_as: None,
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
                act.in_flight.remove(&q);
                let answers = match res {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(act.logger, "writer unavailable; retrying"; "level" => q + 1, "error" => %e);
                        return;
                    }
                };
                let mut next = None;
                let mut all = true;
                for (at, answer) in offsets.iter().zip(answers) {
                    match answer {
                        Ok(_) => next = Some(at + 1),
                        Err(e) if put_failed_for_good(&e) => {
                            error!(act.logger, "parked message cannot be delivered; skipped";
                                "level" => q + 1, "offset" => at, "error" => %e);
                            next = Some(at + 1);
                        }
                        Err(e) => {
                            warn!(act.logger, "moving due messages failed; retrying";
                                "level" => q + 1, "offset" => at, "error" => %e);
                            all = false;
                            break;
                        }
                    }
                }
                if let Some(next) = next {
                    act.advance(q, next, ctx);
                }
                if all && full {
                    act.queue_pass(ctx);
                }
            }),
        );
    }

    /// Sets level queue `q`'s progress to `to` (never back) and persists.
    fn advance(&mut self, q: u32, to: u64, ctx: &mut Context<Self>) {
        let cur = self.progress.offsets.entry(q).or_insert(0);
        if to <= *cur {
            return;
        }
        *cur = to;
        let logger = self.logger.clone();
        let write = self.state.persist(&self.progress);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |res, _, _| {
                if let Err(e) = res {
                    // The next advance writes again; a restart before it
                    // repeats the moves since the last good write.
                    error!(logger, "cannot persist delay progress"; "error" => %e);
                }
            }),
        );
    }

    fn queue_pass(&mut self, ctx: &mut Context<Self>) {
        if !self.pass_queued {
            self.pass_queued = true;
            ctx.notify(Pass);
        }
    }
}

impl Actor for ScheduleService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.logger, "schedule service started"; "levels" => self.config.levels,
            "progress" => ?self.progress.offsets);
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.queue_pass(ctx));
        self.queue_pass(ctx);
    }
}

impl Guarded for ScheduleService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Pass> for ScheduleService {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: Pass, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            act.pass_queued = false;
            act.pass(ctx);
        })
    }
}

impl Handler<AdvanceDelayProgress> for ScheduleService {
    type Result = GuardedReply<()>;
    fn handle(&mut self, msg: AdvanceDelayProgress, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            for (q, to) in msg.0.offsets {
                act.advance(q, to, ctx);
            }
        })
    }
}

impl Handler<GetDelayProgress> for ScheduleService {
    type Result = GuardedReply<DelayProgress>;
    fn handle(&mut self, _: GetDelayProgress, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.progress.clone())
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for ScheduleService {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(due: i64) -> Unit {
        Unit {
            commit_log_offset: due as u64 * 100,
            size: 100,
            tag_hash: due,
        }
    }

    #[test]
    fn takes_the_due_prefix_and_says_when_the_next_is_due() {
        let dues = [10, 20, 30, 40];
        let at = |o: u64| dues.get(o as usize).map(|d| unit(*d));
        let s = scan_level(0, (0, 4), 25, 10, at);
        assert_eq!(s.due.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(s.next_due_ms, Some(30));
        assert_eq!(s.skipped_to, None);
        // From the progress, not from the start.
        let s = scan_level(2, (0, 4), 100, 10, at);
        assert_eq!(s.due.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.next_due_ms, None);
        // Nothing due yet.
        let s = scan_level(0, (0, 4), 5, 10, at);
        assert!(s.due.is_empty());
        assert_eq!(s.next_due_ms, Some(10));
    }

    #[test]
    fn batches_are_bounded_and_removed_messages_are_skipped() {
        let at = |o: u64| Some(unit(o as i64));
        let s = scan_level(0, (0, 1000), u64::MAX, 3, at);
        assert_eq!(s.due.len(), 3);
        let s = scan_level(2, (5, 8), u64::MAX, 10, at);
        assert_eq!(s.skipped_to, Some(5));
        assert_eq!(s.due.iter().map(|(o, _)| *o).collect::<Vec<_>>(), [5, 6, 7]);
        // A hole in the queue (not dispatched yet) ends the scan.
        let s = scan_level(0, (0, 5), u64::MAX, 10, |o| (o < 2).then(|| unit(1)));
        assert_eq!(s.due.len(), 2);
    }
}

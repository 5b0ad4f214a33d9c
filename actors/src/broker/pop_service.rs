//! `PopService`: the broker side of the simple (pop) consumer:
//! `POP_MESSAGE` (200050), `ACK_MESSAGE` (200051) and
//! `CHANGE_MESSAGE_INVISIBLETIME` (200053), modelled on RocketMQ 5's
//! `PopMessageProcessor`, `AckMessageProcessor`,
//! `ChangeInvisibleTimeProcessor` and `PopReviveService`.
//!
//! **Pop.** A pop takes up to 32 messages for a group: first from the
//! group's pop retry topic of the topic (`%RETRY%<group>_<topic>`, where
//! unacked messages come back), then from the topic's queues (one, or all
//! in turn), each from the group's **pop position** there (a new group
//! starts at the first kept message). The messages a pop takes from one
//! queue share one **checkpoint** (RocketMQ's batch `PopCheckPoint`);
//! each gets its own checkpoint id (the checkpoint's first id plus its
//! index) and a **receipt handle** ([`ReceiptHandle`], in the message's
//! `POP_CK` property). Nothing
//! found: `NO_MESSAGE` at once, or, with `poll_time_ms`, the pop is held
//! (at most 20 s; woken by the stored-message events of the broker's
//! fan-out, and looked at again at least every 500 ms) and answers
//! `POLLING_TIMEOUT` when nothing came.
//!
//! **Durability** (all in the store and one state file, nothing only in
//! memory):
//! - a checkpoint is a broker-internal message parked in the timer topic
//!   due at pop time + invisible time, for the revive topic
//!   `rmq_sys_pop_revive`: the [`super::TimerService`] (durable timing
//!   wheel) delivers it there when due;
//! - an ack is a record in `rmq_sys_pop_ack` (read back when the service
//!   starts); `BATCH_ACK_MESSAGE` (200151) stores many acks as one record;
//! - the pop positions and the revive progress are in
//!   `<data>/config/pop_state.msgpack`, written with each revive pass and
//!   at a clean stop. A normal pop is answered once its checkpoints are
//!   stored and, after them, a [`ProgressRecord`] of the positions it
//!   moved (in the pop log `rmq_sys_pop_ack`; records newer than the state
//!   file are replayed on load). Pops go on concurrently; a position
//!   written down (record or file) never passes a pop whose checkpoints
//!   are not stored yet. An orderly pop waits for the state file (one at a
//!   time). A crash may so deliver a message twice, never lose one.
//!
//! The acked checkpoint ids not yet revived are kept in memory as bits,
//! one 64-bit word per block of 64 ids (a batch checkpoint's ids are one
//! block).
//!
//! **Revive.** Every 100 ms the service reads the checkpoints the timer
//! delivered to the revive topic (up to 1024 records a pass, the next pass
//! at once while more are due). Each message of one that was not acked is
//! delivered again: the group's retry policy ([`destination`], [`retry_message`]
//! of the [`super::RetryService`]) decides between the pop retry topic
//! (visible at once, `reconsume_times` one higher) and `%DLQ%<group>`
//! after the group's `retry_max_times`.
//!
//! **Acks and handles.** An ack or change of invisible time names its
//! delivery by the handle. A handle is refused with
//! `INVALID_RECEIPT_HANDLE` when it is malformed, expired (its invisible
//! time passed: the message is visible again) or stale (acked already, or
//! replaced by a change of invisible time). Changing the invisible time
//! acks the old checkpoint and makes a new one, due at now + the new
//! time, under a new handle.
//!
//! **Orderly (FIFO) pop** (`order`): a queue's messages are handed out
//! one batch at a time, in queue order, and nothing more of that queue
//! until the batch is all acked or its invisible time passed (then its
//! first unacked message and what follows are handed out again, their
//! reconsume times one higher, acked ones skipped; past the group's max
//! retries the first goes to `%DLQ%<group>`). The batch in flight on each
//! queue is persisted with the pop positions; no checkpoint is parked for
//! it. Changing the invisible time of one of its messages keeps the
//! checkpoint, under a handle with the new times, and the queue blocked
//! while that message is invisible (RocketMQ's
//! `ConsumerOrderInfoManager.updateNextVisibleTime`). A message group is
//! kept in one queue by the producer's queue selector, so one consumer at
//! a time has it.
//!
//! **The group's offsets.** Pop positions are the group's consumer offsets
//! as RocketMQ's pop keeps them in its `ConsumerOffsetManager`: each
//! position on a topic's queue (not on the pop retry topic), once written
//! down, is committed to the [`OffsetManager`] (so `admin group progress`,
//! lag metrics and native consumers of the group see it); a group that
//! has no pop position on a queue starts at the offset committed there (a
//! group consumed natively goes on where it was), else at the first kept
//! message; an offset reset of the group ([`ResetPopPositions`], from the
//! `OffsetResetService`) moves its positions and drops the queues' orderly
//! batches.
//!
//! **Filters.** A pop may name a tag or SQL92 expression (refused as a
//! pull's is when it does not compile, or SQL92 with
//! `enable_property_filter = false`); messages that do not match are
//! passed over, the position moving past them, as RocketMQ's pop does.
//!
//! The decisions are in [`PopBook`] and [`check_pop`], plain code tested
//! without a runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::batch;
use actormq_protocol::message::PROPERTY_POP_CK;
use actormq_protocol::request::{
    AckMessageRequest, BatchAckFailure, BatchAckMessageRequest, BatchAckMessageResponse,
    ChangeInvisibleTimeRequest, ChangeInvisibleTimeResponse, ConsumerSendMsgBackRequest, Empty,
    PopMessageRequest, PopMessageResponse, ReceiptHandle, SubscriptionGroupConfig,
};
use actormq_protocol::system_topic::{
    self, POP_ACK_TOPIC, POP_REVIVE_TOPIC, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC, TIMER_TOPIC,
};
use actormq_protocol::{MessageId, ResponseCode};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use slog::{Logger, error, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, InternalMessage, PutInternal};
use super::dispatcher::MessagesStored;
use super::error_map::{HandleError, filter_error, put_failed_for_good, receipt_handle_error};
use super::offset_manager::{GetGroupOffsets, MergeOffsets, OffsetManager, OffsetTable};
use super::persist;
use super::pull_hold::compile_filter;
use super::retry_service::{Destination, destination, dlq_topic_config, retry_message};
use super::stored_codec::filter_property;
use super::stored_codec::{UNKNOWN_HOST, to_stored};
use super::subscription_group_manager::{ResolveGroups, SubscriptionGroupManager};
use super::topic_manager::{TopicView, system_topic_config};
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, ChildRef, Reply, ServiceError};
use actormq_protocol::filter::Filter;

/// Most messages one pop returns (RocketMQ's limit).
pub const MAX_POP_MESSAGES: u32 = 32;
/// Shortest invisible time accepted (ms).
pub const MIN_INVISIBLE_MS: u64 = 1_000;
/// Longest invisible time accepted (ms): 12 h.
pub const MAX_INVISIBLE_MS: u64 = 12 * 3600 * 1000;
/// How often a held pop looks again at the latest (it is woken by every
/// stored message; this bounds the cost of a missed wake-up).
const RECHECK: Duration = Duration::from_millis(500);

/// Settings of the [`PopService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopConfig {
    /// State file (`<data>/config/pop_state.msgpack`).
    pub path: PathBuf,
    /// Time between revive passes. Default 100 ms.
    pub revive_interval: Duration,
    /// Longest hold of a pop with `poll_time_ms`. Default 20 s.
    pub max_poll: Duration,
    /// Most checkpoint records read per pass (a pass that stops there is
    /// followed by the next at once). Default 1024.
    pub revive_batch: usize,
    /// SQL92 filter expressions accepted (`enable_property_filter`).
    /// Default true.
    pub property_filter: bool,
}

impl PopConfig {
    /// Defaults, state kept at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            revive_interval: Duration::from_millis(100),
            max_poll: Duration::from_secs(20),
            revive_batch: 1024,
            property_filter: true,
        }
    }
}

/// One group's pop position on one queue (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopPosition {
    /// Consumer group.
    pub group: String,
    /// Topic (the popped one or its pop retry topic).
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Next queue offset to pop.
    pub offset: u64,
}

/// What is persisted in `pop_state.msgpack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopState {
    /// Every pop position.
    pub positions: Vec<PopPosition>,
    /// Next offset of the revive topic's queue to look at.
    pub revive_offset: u64,
    /// Checkpoint ids below this were handed out.
    pub next_checkpoint: u64,
    /// The batch in flight on each queue popped orderly.
    #[serde(default)]
    pub orderly: Vec<OrderlyBatch>,
    /// Progress records up to this sequence number are reflected in
    /// `positions` (newer ones, in the pop log, are applied on load).
    #[serde(default)]
    pub progress_seq: u64,
}

/// A normal pop's moved positions, recorded in the pop log
/// (`rmq_sys_pop_ack`) once its checkpoints are stored and before it is
/// answered, so they survive a crash without waiting for the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// Sequence number (grows with every pop that records progress).
    pub seq: u64,
    /// The positions as the pop left them.
    pub positions: Vec<PopPosition>,
}

/// The messages of one queue handed out by an orderly (FIFO) pop, in
/// queue order: nothing more of the queue is handed out until they are
/// all acked or their invisible time passed (persisted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderlyBatch {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Queue offsets handed out.
    pub offsets: Vec<u64>,
    /// Their checkpoint ids.
    pub checkpoints: Vec<u64>,
    /// Their reconsume times in this delivery.
    pub reconsume: Vec<u32>,
    /// When the batch becomes visible again (ms).
    pub visible_at_ms: u64,
    /// Messages whose invisible time was changed: (checkpoint id, visible
    /// again at ms), instead of `visible_at_ms`.
    #[serde(default)]
    pub changed: Vec<(u64, u64)>,
}

impl OrderlyBatch {
    /// When the message of checkpoint `id` becomes visible again (ms).
    pub fn visible_at(&self, id: u64) -> u64 {
        self.changed
            .iter()
            .rev()
            .find(|(c, _)| *c == id)
            .map_or(self.visible_at_ms, |(_, at)| *at)
    }

    /// When the last of its messages becomes visible again (ms).
    pub fn last_visible_at(&self) -> u64 {
        self.changed
            .iter()
            .map(|(_, at)| *at)
            .fold(self.visible_at_ms, u64::max)
    }
}

/// Where an orderly pop of one queue starts ([`PopBook::orderly_start`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderlyStart {
    /// First queue offset to hand out.
    pub from: u64,
    /// Offsets handed out before and not acked: their reconsume times now.
    pub again: BTreeMap<u64, u32>,
    /// Offsets handed out before and acked: not handed out again.
    pub skip: BTreeSet<u64>,
    /// A message past its retries: to the dead-letter queue, with the
    /// times it was delivered again.
    pub dead: Option<(u64, u32)>,
}

/// A checkpoint: the body of its record in the timer, then revive, topic.
/// It covers the messages one pop took from one queue: the one at
/// `queue_offset` (id `id`), or when `offsets` is not empty the ones at
/// `offsets[i]`, with ids `id + i` (each message's handle names its own
/// id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its (first) id (the handle's `checkpoint_id`).
    pub id: u64,
    /// Consumer group.
    pub group: String,
    /// The topic the group pops (not its retry topic).
    pub pop_topic: String,
    /// Where the message is stored.
    pub topic: String,
    /// Queue of the message.
    pub queue_id: u32,
    /// Queue offset of the (first) message.
    pub queue_offset: u64,
    /// When it is due (ms).
    pub visible_at_ms: u64,
    /// Queue offsets of every message covered (empty: the one at
    /// `queue_offset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<u64>,
}

impl Checkpoint {
    /// `(id, queue offset)` of every message covered.
    pub fn entries(&self) -> Vec<(u64, u64)> {
        if self.offsets.is_empty() {
            return vec![(self.id, self.queue_offset)];
        }
        (self.id..).zip(self.offsets.iter().copied()).collect()
    }
}

/// An ack: the body of its record in `rmq_sys_pop_ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckRecord {
    /// The acked checkpoint.
    pub id: u64,
    /// When that checkpoint is due (ms).
    pub visible_at_ms: u64,
    /// An ack of an orderly pop (no checkpoint comes back for it).
    #[serde(default)]
    pub orderly: bool,
    /// More checkpoint ids acked by the same record (a batch ack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<u64>,
}

impl AckRecord {
    /// Every checkpoint id it acks.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.id).chain(self.more.iter().copied())
    }
}

type PositionKey = (String, String, u32);

/// What one pop took ([`PopService`]'s `take`).
struct Taken {
    /// The messages, handles in `POP_CK`.
    messages: Vec<actormq_protocol::StoredMessage>,
    /// Their checkpoints.
    checkpoints: Vec<Checkpoint>,
    /// Positions moved, with where they were.
    moved: Vec<(PositionKey, u64)>,
    /// Messages left behind them.
    rest: u64,
    /// Messages past their retries: (topic, queue, offset, group,
    /// reconsume times).
    dead: Vec<(String, u32, u64, String, u32)>,
    /// Orderly batches replaced (to restore when the pop fails).
    replaced: Vec<(PositionKey, Option<OrderlyBatch>)>,
}

/// The service's bookkeeping: pop positions, checkpoint ids, acked
/// checkpoints not yet revived. Plain data.
#[derive(Debug, Clone, Default)]
pub struct PopBook {
    positions: BTreeMap<PositionKey, u64>,
    revive_offset: u64,
    next_checkpoint: u64,
    /// Acked checkpoint ids not yet revived, as bits: id `i` is bit
    /// `i % 64` of the entry `i - i % 64` (a batch checkpoint's ids share
    /// one entry).
    acked: HashMap<u64, u64>,
    turn: u32,
    orderly: BTreeMap<PositionKey, OrderlyBatch>,
    /// Acks of released orderly batches: forgotten once expired.
    released: Vec<(u64, u64)>,
    /// The last progress record's sequence number handed out.
    progress_seq: u64,
}

impl PopBook {
    /// The book of a persisted state at `now_ms`. Checkpoint ids continue
    /// above both the persisted next id and `now_ms << 20`, so they stay
    /// unique across restarts even when the last ones were not persisted.
    pub fn from_state(state: PopState, now_ms: u64) -> Self {
        Self {
            positions: state
                .positions
                .into_iter()
                .map(|p| ((p.group, p.topic, p.queue_id), p.offset))
                .collect(),
            revive_offset: state.revive_offset,
            next_checkpoint: state.next_checkpoint.max(now_ms << 20),
            acked: HashMap::new(),
            turn: 0,
            orderly: state
                .orderly
                .into_iter()
                .map(|b| ((b.group.clone(), b.topic.clone(), b.queue_id), b))
                .collect(),
            released: Vec::new(),
            progress_seq: state.progress_seq,
        }
    }

    /// Applies a progress record read back from the pop log (one newer
    /// than the state file: see [`PopState::progress_seq`]).
    pub fn apply_progress(&mut self, r: &ProgressRecord) {
        if r.seq <= self.progress_seq {
            return;
        }
        for p in &r.positions {
            self.set_position(&p.group, &p.topic, p.queue_id, p.offset);
        }
    }

    /// Done with loading: later records continue after every one read.
    pub fn progress_loaded(&mut self, max_seq: u64) {
        self.progress_seq = self.progress_seq.max(max_seq);
    }

    /// What is persisted.
    pub fn state(&self) -> PopState {
        PopState {
            positions: self
                .positions
                .iter()
                .map(|((g, t, q), o)| PopPosition {
                    group: g.clone(),
                    topic: t.clone(),
                    queue_id: *q,
                    offset: *o,
                })
                .collect(),
            revive_offset: self.revive_offset,
            next_checkpoint: self.next_checkpoint,
            orderly: self.orderly.values().cloned().collect(),
            progress_seq: self.progress_seq,
        }
    }

    /// Whether checkpoint `id` is one of an orderly batch in flight.
    pub fn is_orderly(&self, id: u64) -> bool {
        self.orderly.values().any(|b| b.checkpoints.contains(&id))
    }

    /// Where an orderly pop of `key` starts at `now_ms` (`None`: its batch
    /// is still in flight), given the group's max retries. A batch all
    /// acked is released; one whose invisible time passed is handed out
    /// again from its first unacked message (its reconsume times one
    /// higher; past `max_retries`, a dead letter and the next one).
    pub fn orderly_start(
        &mut self,
        key: &PositionKey,
        position: u64,
        now_ms: u64,
        max_retries: u32,
    ) -> Option<OrderlyStart> {
        let Some(batch) = self.orderly.get(key) else {
            return Some(OrderlyStart {
                from: position,
                ..Default::default()
            });
        };
        let first_unacked = batch.checkpoints.iter().position(|id| !self.is_acked(*id));
        // In flight while a message not acked is still invisible (each
        // message's own time: its invisible time may have been changed).
        let invisible = batch
            .checkpoints
            .iter()
            .any(|id| !self.is_acked(*id) && now_ms < batch.visible_at(*id));
        if invisible {
            return None;
        }
        let batch = self.orderly.remove(key)?;
        let expires = batch.last_visible_at();
        for id in &batch.checkpoints {
            if self.take_ack(*id) {
                self.released.push((*id, expires));
            }
        }
        let Some(k) = first_unacked else {
            return Some(OrderlyStart {
                from: position,
                ..Default::default()
            });
        };
        let mut start = OrderlyStart {
            from: batch.offsets[k],
            ..Default::default()
        };
        for i in k..batch.offsets.len() {
            let acked = self
                .released
                .iter()
                .any(|(id, _)| *id == batch.checkpoints[i]);
            if acked {
                start.skip.insert(batch.offsets[i]);
            } else {
                start.again.insert(batch.offsets[i], batch.reconsume[i] + 1);
            }
        }
        if batch.reconsume[k] + 1 > max_retries {
            start.dead = Some((batch.offsets[k], batch.reconsume[k] + 1));
            start.again.remove(&batch.offsets[k]);
            start.from = batch.offsets[k] + 1;
        }
        Some(start)
    }

    /// Changes the invisible time of the orderly message of checkpoint
    /// `id`: visible again at `at_ms` (RocketMQ's
    /// `ConsumerOrderInfoManager.updateNextVisibleTime`); its queue stays
    /// blocked while it is invisible. Whether `id` is of a batch in
    /// flight.
    pub fn change_orderly(&mut self, id: u64, at_ms: u64) -> bool {
        let Some(b) = self
            .orderly
            .values_mut()
            .find(|b| b.checkpoints.contains(&id))
        else {
            return false;
        };
        b.changed.retain(|(c, _)| *c != id);
        b.changed.push((id, at_ms));
        true
    }

    /// Records the batch an orderly pop handed out.
    pub fn orderly_handed_out(&mut self, batch: OrderlyBatch) {
        let key = (batch.group.clone(), batch.topic.clone(), batch.queue_id);
        self.orderly.insert(key, batch);
    }

    /// Forgets the acks of released orderly batches expired at `now_ms`
    /// (a late ack of theirs is refused as expired).
    pub fn prune_released(&mut self, now_ms: u64) {
        self.released.retain(|(_, at)| *at > now_ms);
    }

    /// Whether an ack of `id` is one of a released batch (stale).
    pub fn was_released(&self, id: u64) -> bool {
        self.released.iter().any(|(r, _)| *r == id)
    }

    /// The group's pop position on a queue, if it popped there.
    pub fn position(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.positions
            .get(&(group.to_owned(), topic.to_owned(), queue_id))
            .copied()
    }

    /// Sets a pop position.
    pub fn set_position(&mut self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        self.positions
            .insert((group.to_owned(), topic.to_owned(), queue_id), offset);
    }

    /// Moves a position back to `offset` (a pop whose checkpoints were not
    /// stored gives its messages back).
    pub fn rewind(&mut self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let p = self
            .positions
            .entry((group.to_owned(), topic.to_owned(), queue_id))
            .or_insert(offset);
        *p = (*p).min(offset);
    }

    /// A fresh checkpoint id.
    pub fn new_checkpoint(&mut self) -> u64 {
        let id = self.next_checkpoint;
        self.next_checkpoint += 1;
        id
    }

    /// The first of 64 fresh checkpoint ids that share one entry of the
    /// acked set (a batch checkpoint's).
    pub fn new_checkpoint_block(&mut self) -> u64 {
        let base = self.next_checkpoint.div_ceil(64).saturating_mul(64);
        self.next_checkpoint = base + 64;
        base
    }

    /// The queue to start a pop over `n` queues with (turns rotate).
    pub fn next_turn(&mut self, n: u32) -> u32 {
        let t = self.turn % n.max(1);
        self.turn = self.turn.wrapping_add(1);
        t
    }

    /// Whether `handle` may be acked or changed at `now_ms`.
    pub fn check(&self, handle: &ReceiptHandle, now_ms: u64) -> Result<(), HandleError> {
        if self.is_acked(handle.checkpoint_id) || self.was_released(handle.checkpoint_id) {
            return Err(HandleError::Stale);
        }
        let visible_at_ms = handle.visible_again_at_ms();
        if now_ms >= visible_at_ms {
            return Err(HandleError::Expired { visible_at_ms });
        }
        Ok(())
    }

    /// Records an ack of checkpoint `id`.
    pub fn mark_acked(&mut self, id: u64) {
        *self.acked.entry(id & !63).or_insert(0) |= 1 << (id & 63);
    }

    /// Forgets an ack whose record could not be stored (or whose
    /// checkpoint was revived).
    pub fn unmark(&mut self, id: u64) {
        self.take_ack(id);
    }

    /// Forgets the ack of `id`; whether there was one.
    fn take_ack(&mut self, id: u64) -> bool {
        let Some(bits) = self.acked.get_mut(&(id & !63)) else {
            return false;
        };
        let bit = 1 << (id & 63);
        let had = *bits & bit != 0;
        *bits &= !bit;
        if *bits == 0 {
            self.acked.remove(&(id & !63));
        }
        had
    }

    /// Whether checkpoint `id` was acked.
    pub fn is_acked(&self, id: u64) -> bool {
        self.acked
            .get(&(id & !63))
            .is_some_and(|bits| bits & (1 << (id & 63)) != 0)
    }

    /// Checkpoints `ids` were revived (or skipped as acked) and the revive
    /// topic was read up to `offset`.
    pub fn revived(&mut self, ids: &[u64], offset: u64) {
        for id in ids {
            self.take_ack(*id);
        }
        self.revive_offset = self.revive_offset.max(offset);
    }

    /// Acks known (tests, status).
    pub fn acked_len(&self) -> usize {
        self.acked.values().map(|b| b.count_ones() as usize).sum()
    }
}

/// Refuses a pop the service does not serve.
pub fn check_pop(req: &PopMessageRequest) -> Result<(), ServiceError> {
    let bad = |m: String| Err(ServiceError::new(ResponseCode::InvalidParameter, m));
    actormq_protocol::validate_topic(&req.topic)?;
    if req.consumer_group.is_empty() {
        return bad("consumer_group is empty".into());
    }
    // Where its unacked messages come back must be a valid topic.
    let retry = system_topic::pop_retry_topic(&req.consumer_group, &req.topic);
    if let Err(e) = actormq_protocol::validate_topic(&retry) {
        return bad(format!(
            "group {} cannot pop {}: its retry topic is invalid ({e})",
            req.consumer_group, req.topic
        ));
    }
    if req.max_msg_nums == 0 || req.max_msg_nums > MAX_POP_MESSAGES {
        return bad(format!(
            "max_msg_nums {} out of 1..={MAX_POP_MESSAGES}",
            req.max_msg_nums
        ));
    }
    check_invisible(req.invisible_time_ms)?;
    Ok(())
}

/// The filter of a pop (`*` when it names none): a tag or SQL92
/// expression, refused as a pull's is when it does not compile or is
/// SQL92 with `sql_enabled` false.
pub fn pop_filter(req: &PopMessageRequest, sql_enabled: bool) -> Result<Filter, ServiceError> {
    compile_filter(
        req.expression.as_deref(),
        req.expression_type.as_deref(),
        sql_enabled,
    )
    .map_err(filter_error)
}

fn check_invisible(ms: u64) -> Result<(), ServiceError> {
    if !(MIN_INVISIBLE_MS..=MAX_INVISIBLE_MS).contains(&ms) {
        return Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!("invisible time {ms} ms out of {MIN_INVISIBLE_MS}..={MAX_INVISIBLE_MS}"),
        ));
    }
    Ok(())
}

fn down(what: &str) -> ServiceError {
    ServiceError::busy(format!("{what} restarting"))
}

fn record(topic: &str, body: Vec<u8>, properties: Vec<u8>, tag_hash: i64) -> InternalMessage {
    InternalMessage {
        topic: topic.to_owned(),
        queue_id: 0,
        body: Bytes::from(body),
        properties,
        tag_hash,
        flags: 0,
        born_timestamp_ms: super::now_ms(),
        born_host: None,
        reconsume_times: 0,
        delay_level: 0,
    }
}

/// The timer-topic record of a checkpoint, delivered to the revive topic
/// when due.
pub fn checkpoint_message(ck: &Checkpoint) -> Result<InternalMessage, ServiceError> {
    let body = rmp_serde::to_vec_named(ck).map_err(|e| ServiceError::system(e.to_string()))?;
    let mut props = Vec::new();
    actormq_store::encode_properties_into(
        [
            (PROPERTY_REAL_TOPIC.as_bytes(), POP_REVIVE_TOPIC.as_bytes()),
            (PROPERTY_REAL_QUEUE_ID.as_bytes(), b"0".as_slice()),
        ],
        &mut props,
    )
    .map_err(|e| ServiceError::system(e.to_string()))?;
    Ok(record(
        TIMER_TOPIC,
        body,
        props,
        i64::try_from(ck.visible_at_ms).unwrap_or(i64::MAX),
    ))
}

/// A record of the pop log (`rmq_sys_pop_ack`) with `body`.
fn record_message(topic: &str, body: Vec<u8>) -> InternalMessage {
    record(topic, body, Vec::new(), 0)
}

fn ack_message(ack: &AckRecord) -> Result<InternalMessage, ServiceError> {
    let body = rmp_serde::to_vec_named(ack).map_err(|e| ServiceError::system(e.to_string()))?;
    Ok(record(POP_ACK_TOPIC, body, Vec::new(), 0))
}

/// Ask the [`PopService`] for its counters (tests, status).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PopStatus")]
pub struct GetPopStatus;

/// The [`PopService`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, MessageResponse)]
pub struct PopStatus {
    /// Acks not yet matched with their checkpoint.
    pub acked: usize,
    /// Next offset of the revive topic to read.
    pub revive_offset: u64,
    /// Messages revived since start (retry topic or DLQ).
    pub revived: u64,
}

/// Internal: what one pop attempt needs: the request, the group's max
/// retries and the request's filter (compiled once per request).
#[derive(Debug)]
struct Attempt {
    req: PopMessageRequest,
    max_retries: u32,
    filter: Arc<Filter>,
}

/// Internal: one pop attempt (the answer, or `None` when nothing found).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Reply<PopMessageResponse>>, ServiceError>")]
struct PopOnce(Attempt);

/// Internal: one attempt of a normal (not orderly) pop, which does not
/// wait for other pops.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Reply<PopMessageResponse>>, ServiceError>")]
struct PopFast(Attempt);

/// Internal: one revive pass.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct Revive;

/// Internal: before the first pop of `group` on `topic`, its queues
/// without a pop position take the offsets committed there.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
struct SeedPositions {
    group: String,
    topic: String,
}

/// A group's offsets on a topic were reset (`OffsetResetService`): its
/// pop positions there move to them, the queues' orderly batches are
/// dropped. Only for a group that popped the topic here.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ResetPopPositions {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// The new offset of each queue.
    pub offsets: BTreeMap<u32, u64>,
}

/// The pop service actor. See the module docs.
pub struct PopService {
    store: BrokerStore,
    view: TopicView,
    writer: ChildRef<CommitLogActor>,
    groups: ChildRef<SubscriptionGroupManager>,
    config: PopConfig,
    book: PopBook,
    state: Arc<persist::StateFile>,
    reviving: bool,
    revived: u64,
    /// Positions moved by normal pops since the state was last written.
    dirty: bool,
    /// Pops whose checkpoints are not stored yet: (token, position they
    /// took from) per position they moved.
    inflight: HashMap<PositionKey, Vec<(u64, u64)>>,
    next_token: u64,
    wake: Arc<tokio::sync::Notify>,
    /// Counts the messages pops hand out (`actormq_messages_out_total`).
    metrics: Option<Arc<super::metrics::BrokerMetrics>>,
    /// Where positions are committed as the group's offsets.
    offsets: ChildRef<OffsetManager>,
    /// The positions last committed there.
    committed: BTreeMap<PositionKey, u64>,
    /// (group, topic) whose positions were seeded from the offsets.
    seeded: BTreeSet<(String, String)>,
    logger: Logger,
    poison: Poison,
}

impl PopService {
    /// Counts the messages each pop hands out in `metrics` (builder style).
    pub fn with_metrics(mut self, metrics: Arc<super::metrics::BrokerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Shares positions with the group offsets of `offsets` (builder
    /// style; see the module docs).
    pub fn with_offsets(mut self, offsets: ChildRef<OffsetManager>) -> Self {
        self.offsets = offsets;
        self
    }

    /// Loads the state file and the acks stored (the supervisor's factory
    /// calls this on every restart).
    pub fn load(
        store: BrokerStore,
        view: TopicView,
        writer: ChildRef<CommitLogActor>,
        groups: ChildRef<SubscriptionGroupManager>,
        config: PopConfig,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "PopService"));
        let state: PopState = persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        let mut book = PopBook::from_state(state, super::now_ms());
        let (min, max) = (
            store.min_offset(POP_ACK_TOPIC, 0),
            store.max_offset(POP_ACK_TOPIC, 0),
        );
        // The pop log: acks, and the progress of normal pops (newer than
        // the state file's).
        let mut max_seq = 0;
        for at in min..max {
            let Some(v) = store.read_by_queue_offset(POP_ACK_TOPIC, 0, at) else {
                continue;
            };
            if let Ok(p) = rmp_serde::from_slice::<ProgressRecord>(v.body_slice()) {
                book.apply_progress(&p);
                max_seq = max_seq.max(p.seq);
                continue;
            }
            match rmp_serde::from_slice::<AckRecord>(v.body_slice()) {
                Ok(a) => {
                    for id in a.ids() {
                        // An orderly ack matters only while its batch is
                        // in flight.
                        if !a.orderly || book.is_orderly(id) {
                            book.mark_acked(id);
                        }
                    }
                }
                Err(e) => {
                    warn!(logger, "unreadable ack record skipped"; "offset" => at, "error" => %e)
                }
            }
        }
        book.progress_loaded(max_seq);
        // Acks whose checkpoint was read back already are done with.
        let processed = store.min_offset(POP_REVIVE_TOPIC, 0)..book.revive_offset;
        for at in processed {
            let Some(v) = store.read_by_queue_offset(POP_REVIVE_TOPIC, 0, at) else {
                continue;
            };
            if let Ok(ck) = rmp_serde::from_slice::<Checkpoint>(v.body_slice()) {
                for (id, _) in ck.entries() {
                    book.unmark(id);
                }
            }
        }
        info!(logger, "pop state loaded"; "acks" => book.acked_len(),
            "revive_offset" => book.revive_offset);
        Ok(Self {
            store,
            view,
            writer,
            groups,
            state: persist::StateFile::for_path(&config.path),
            config,
            book,
            reviving: false,
            revived: 0,
            dirty: false,
            inflight: HashMap::new(),
            next_token: 0,
            wake: Arc::new(tokio::sync::Notify::new()),
            logger,
            metrics: None,
            offsets: ChildRef::empty(),
            committed: BTreeMap::new(),
            seeded: BTreeSet::new(),
            poison: Poison::default(),
        })
    }

    /// Takes up to `req.max_msg_nums` messages: their stored form (handles
    /// in `POP_CK`) and checkpoints, positions advanced (the old ones
    /// returned for a rewind).
    fn take(
        &mut self,
        req: &PopMessageRequest,
        filter: &Filter,
        now: u64,
        max_retries: u32,
    ) -> Result<Taken, ServiceError> {
        let snapshot = self.view.snapshot();
        let cfg = snapshot
            .get(&req.topic)
            .ok_or_else(|| ServiceError::topic_not_exist(&req.topic))?;
        if !cfg.perm.is_readable() {
            return Err(ServiceError::new(
                ResponseCode::NoPermission,
                format!("topic {} is not readable", req.topic),
            ));
        }
        let n = cfg.read_queue_nums;
        let queues: Vec<u32> = match req.queue_id {
            Some(q) if q >= n => {
                return Err(ServiceError::new(
                    ResponseCode::InvalidParameter,
                    format!("queue {q} of {} does not exist ({n} queues)", req.topic),
                ));
            }
            Some(q) => vec![q],
            None => {
                let first = self.book.next_turn(n);
                (0..n).map(|i| (first + i) % n).collect()
            }
        };
        let group = &req.consumer_group;
        let mut sources = Vec::new();
        if !req.order {
            // Orderly pops hand out again in place, not through a retry topic.
            sources.push((system_topic::pop_retry_topic(group, &req.topic), 0u32));
        }
        sources.extend(queues.into_iter().map(|q| (req.topic.clone(), q)));
        let want = req.max_msg_nums as usize;
        let (mut msgs, mut cks, mut moved) = (Vec::new(), Vec::new(), Vec::new());
        let (mut dead, mut replaced) = (Vec::new(), Vec::new());
        let mut rest = 0u64;
        for (topic, q) in sources {
            let (min, max) = (
                self.store.min_offset(&topic, q),
                self.store.max_offset(&topic, q),
            );
            let pos = self.book.position(group, &topic, q).unwrap_or(min).max(min);
            let key = (group.clone(), topic.clone(), q);
            let orderly = if req.order {
                if msgs.len() >= want {
                    break;
                }
                let before = self.book.orderly.get(&key).cloned();
                match self.book.orderly_start(&key, pos, now, max_retries) {
                    None => {
                        rest += max.saturating_sub(pos);
                        continue;
                    }
                    Some(s) => {
                        replaced.push((key.clone(), before));
                        Some(s)
                    }
                }
            } else {
                None
            };
            if let Some((off, times)) = orderly.as_ref().and_then(|o| o.dead) {
                dead.push((topic.clone(), q, off, group.clone(), times));
            }
            let start = orderly.as_ref().map_or(pos, |o| o.from.max(min));
            let mut batch = OrderlyBatch {
                group: group.clone(),
                topic: topic.clone(),
                queue_id: q,
                offsets: Vec::new(),
                checkpoints: Vec::new(),
                reconsume: Vec::new(),
                visible_at_ms: now.saturating_add(req.invisible_time_ms),
                changed: Vec::new(),
            };
            // A normal pop's messages of this queue share one checkpoint
            // (ids `base + i`, at most 64).
            let mut ck: Option<Checkpoint> = None;
            let mut at = start;
            while at < max && msgs.len() < want {
                if orderly.as_ref().is_some_and(|o| o.skip.contains(&at)) {
                    at += 1;
                    continue;
                }
                let Some(view) = self.store.read_by_queue_offset(&topic, q, at) else {
                    at += 1;
                    continue;
                };
                // Not for this subscription: passed over (the position
                // moves past it), as RocketMQ's pop filters.
                if !filter.is_all() && !filter.matches(|k| filter_property(&view, k)) {
                    at += 1;
                    continue;
                }
                let reconsume = orderly
                    .as_ref()
                    .and_then(|o| o.again.get(&at).copied())
                    .unwrap_or(view.header().reconsume_times);
                let id = if orderly.is_some() {
                    self.book.new_checkpoint()
                } else {
                    if ck.as_ref().is_some_and(|c| c.offsets.len() >= 64) {
                        cks.extend(ck.take());
                    }
                    let c = ck.get_or_insert_with(|| Checkpoint {
                        id: self.book.new_checkpoint_block(),
                        group: group.clone(),
                        pop_topic: req.topic.clone(),
                        topic: topic.clone(),
                        queue_id: q,
                        queue_offset: at,
                        visible_at_ms: now.saturating_add(req.invisible_time_ms),
                        offsets: Vec::new(),
                    });
                    c.offsets.push(at);
                    c.id + c.offsets.len() as u64 - 1
                };
                let handle = ReceiptHandle {
                    checkpoint_id: id,
                    pop_time_ms: now,
                    invisible_time_ms: req.invisible_time_ms,
                    reconsume_times: reconsume,
                    topic: topic.clone(),
                    queue_id: q,
                    queue_offset: at,
                };
                let mut m = to_stored(&view);
                // A message delivered again shows under its topic.
                m.message.topic = req.topic.clone();
                m.reconsume_times = reconsume;
                m.message
                    .properties
                    .insert(PROPERTY_POP_CK.to_owned(), handle.encode());
                msgs.push(m);
                if orderly.is_some() {
                    batch.offsets.push(at);
                    batch.checkpoints.push(id);
                    batch.reconsume.push(reconsume);
                }
                at += 1;
            }
            cks.extend(ck);
            if !batch.offsets.is_empty() {
                self.book.orderly_handed_out(batch);
            }
            if at != pos {
                moved.push((key, pos));
                self.book.set_position(group, &topic, q, at);
            }
            rest += max.saturating_sub(at);
        }
        Ok(Taken {
            messages: msgs,
            checkpoints: cks,
            moved,
            rest,
            dead,
            replaced,
        })
    }

    /// Writes the state if it changed since the last write (normal pops
    /// move positions without waiting for the file: see the module docs).
    /// A failed write is logged; the next change writes again.
    fn persist_if_dirty(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.commit_offsets();
        let w = self.state.persist(&self.safe_state());
        let logger = self.logger.clone();
        actix_rt::spawn(async move {
            if let Err(e) = w.await {
                error!(logger, "cannot persist the pop state"; "error" => %e);
            }
        });
    }

    fn revive_pass(&mut self, ctx: &mut Context<Self>) {
        self.persist_if_dirty();
        self.book.prune_released(super::now_ms());
        if self.reviving {
            return;
        }
        let (min, max) = (
            self.store.min_offset(POP_REVIVE_TOPIC, 0),
            self.store.max_offset(POP_REVIVE_TOPIC, 0),
        );
        let from = self.book.revive_offset.max(min);
        if from >= max {
            return;
        }
        let until = max.min(from + self.config.revive_batch as u64);
        let mut due = Vec::new();
        let mut done = Vec::new();
        for at in from..until {
            let Some(v) = self.store.read_by_queue_offset(POP_REVIVE_TOPIC, 0, at) else {
                continue;
            };
            if v.body_slice().is_empty() {
                continue; // the marker that created the topic
            }
            match rmp_serde::from_slice::<Checkpoint>(v.body_slice()) {
                Ok(ck) => {
                    for (id, offset) in ck.entries() {
                        done.push(id);
                        if !self.book.is_acked(id) {
                            due.push((ck.clone(), offset));
                        }
                    }
                }
                Err(e) => {
                    error!(self.logger, "unreadable checkpoint skipped"; "offset" => at, "error" => %e)
                }
            }
        }
        let (Some(writer), Some(groups)) = (self.writer.addr(), self.groups.addr()) else {
            return;
        };
        self.reviving = true;
        let store = self.store.clone();
        let logger = self.logger.clone();
        let work = async move {
            let names: BTreeSet<String> = due.iter().map(|(c, _)| c.group.clone()).collect();
            let mut configs: HashMap<String, SubscriptionGroupConfig> = HashMap::new();
            for g in names {
                let cfg = match groups
                    .send(ResolveGroups {
                        groups: vec![g.clone()],
                    })
                    .await
                {
                    Ok(Ok(mut v)) => v.pop(),
                    Ok(Err(e)) if e.code == ResponseCode::SubscriptionGroupNotExist => None,
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(e.into()),
                };
                let cfg = cfg.unwrap_or_else(|| SubscriptionGroupConfig::new(&g));
                configs.insert(g, cfg);
            }
            let mut puts = Vec::new();
            for (ck, offset) in &due {
                let Some(unit) = store.unit(&ck.topic, ck.queue_id, *offset) else {
                    error!(logger, "popped message is gone (retention); not revived";
                        "topic" => &ck.topic, "queue" => ck.queue_id, "offset" => offset);
                    continue;
                };
                let Some(view) = store.read_at(unit.commit_log_offset) else {
                    continue;
                };
                let group = &configs[&ck.group];
                let req = ConsumerSendMsgBackRequest {
                    consumer_group: ck.group.clone(),
                    ..Default::default()
                };
                let to = match destination(&req, view.header().reconsume_times, group) {
                    // Visible at once: the invisible time was the delay.
                    Destination::Retry { .. } => Destination::Retry { delay_level: 0 },
                    d => d,
                };
                let origin = MessageId {
                    store_host: view.header().store_host.unwrap_or(UNKNOWN_HOST),
                    commit_log_offset: unit.commit_log_offset,
                }
                .encode();
                let mut msg = match retry_message(&view, &ck.group, &to, &origin, 0) {
                    Ok(m) => m,
                    Err(e) => {
                        error!(logger, "popped message cannot be revived; skipped";
                            "topic" => &ck.topic, "offset" => offset, "error" => %e.remark);
                        continue;
                    }
                };
                let create_as = match to {
                    Destination::Retry { .. } => {
                        msg.topic = system_topic::pop_retry_topic(&ck.group, &ck.pop_topic);
                        system_topic_config(&msg.topic)
                    }
                    Destination::DeadLetter => {
                        info!(logger, "popped message past its retries: dead letter";
                            "group" => &ck.group, "topic" => &ck.pop_topic);
                        dlq_topic_config(&ck.group)
                    }
                };
                puts.push(writer.send(PutInternal {
                    messages: vec![msg],
                    create_as: Some(create_as),
                }));
            }
            let mut n = 0u64;
            for p in puts {
                for a in p.await? {
                    match a {
                        Ok(_) => n += 1,
                        // One message that can never be written must not
                        // hold back every other revive.
                        Err(e) if put_failed_for_good(&e) => {
                            error!(logger, "popped message cannot be revived; skipped";
                                "error" => %e.remark)
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<u64, ServiceError>(n)
        };
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(work).map(move |res, act, ctx| {
                act.reviving = false;
                match res {
                    Ok(n) => {
                        act.revived += n;
                        act.book.revived(&done, until);
                        act.dirty = true;
                        act.persist_if_dirty();
                        if until < max {
                            // More checkpoints are due: read on at once.
                            ctx.notify(Revive);
                        }
                    }
                    Err(e) => {
                        warn!(act.logger, "revive pass failed; retried"; "error" => %e.remark)
                    }
                }
            }),
        );
    }
}

impl Actor for PopService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.revive_interval, |_, ctx| ctx.notify(Revive));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // A clean stop leaves the positions of the last pops on disk (a
        // small file, written once, here where nothing else waits).
        if self.dirty {
            let written = self
                .state
                .stage(&self.safe_state())
                .and_then(|seq| self.state.wait(seq));
            if let Err(e) = written {
                error!(self.logger, "cannot persist the pop state"; "error" => %e);
            }
        }
    }
}

impl Guarded for PopService {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Revive> for PopService {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: Revive, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| act.revive_pass(ctx))
    }
}

impl Handler<MessagesStored> for PopService {
    type Result = GuardedReply<()>;
    fn handle(&mut self, ev: MessagesStored, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            // Held pops look again (the broker's own topics wake nobody).
            if !system_topic::is_broker_only(&ev.topic) {
                act.wake.notify_waiters();
            }
        })
    }
}

impl Handler<GetPopStatus> for PopService {
    type Result = GuardedReply<PopStatus>;
    fn handle(&mut self, _: GetPopStatus, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| PopStatus {
            acked: act.book.acked_len(),
            revive_offset: act.book.revive_offset,
            revived: act.revived,
        })
    }
}

type PopResult = Result<Option<Reply<PopMessageResponse>>, ServiceError>;

/// A pop's work once [`PopService::take`] has moved the positions: the
/// writes to make and answer, and what to undo if they fail.
struct PopWork {
    fut:
        Pin<Box<dyn std::future::Future<Output = Result<Reply<PopMessageResponse>, ServiceError>>>>,
    found: bool,
    moved: Vec<(PositionKey, u64)>,
    replaced: Vec<(PositionKey, Option<OrderlyBatch>)>,
    /// Its entry in the in-flight table.
    token: u64,
}

impl PopService {
    /// Takes the messages of a pop and prepares its writes (checkpoints,
    /// dead letters); `None` when there is nothing to hand out.
    fn pop_work(&mut self, attempt: Attempt) -> Result<Option<PopWork>, ServiceError> {
        let Attempt {
            req,
            max_retries,
            filter,
        } = attempt;
        let now = super::now_ms();
        let taken = self.take(&req, &filter, now, max_retries)?;
        if taken.messages.is_empty()
            && taken.dead.is_empty()
            && taken.replaced.iter().all(|(_, before)| before.is_none())
        {
            return Ok(None);
        }
        let Taken {
            messages,
            checkpoints,
            moved,
            rest,
            dead,
            replaced,
        } = taken;
        let act = self;
        let found = !messages.is_empty();
        // Until its checkpoints are stored, a pop holds back what is
        // written of the positions it moved.
        let token = act.next_token;
        act.next_token += 1;
        for (key, old) in &moved {
            act.inflight
                .entry(key.clone())
                .or_default()
                .push((token, *old));
        }
        let writer = act.writer.addr();
        let store = act.store.clone();
        let revive_topic_missing = act.view.snapshot().get(POP_REVIVE_TOPIC).is_none();
        let counted = act.metrics.clone().map(|m| (m, req.consumer_group.clone()));
        let fut = async move {
            let writer = writer.ok_or_else(|| down("commit log"))?;
            if revive_topic_missing {
                // The timer delivers checkpoints there without
                // creating it: create it first (with an empty marker
                // record the revive pass skips), whatever the broker's
                // topic auto-creation says.
                for a in writer
                    .send(PutInternal {
                        messages: vec![record(POP_REVIVE_TOPIC, Vec::new(), Vec::new(), 0)],
                        create_as: Some(system_topic_config(POP_REVIVE_TOPIC)),
                    })
                    .await?
                {
                    a?;
                }
            }
            // Orderly messages past their retries: dead letters.
            for (topic, q, off, group, times) in dead {
                let Some(unit) = store.unit(&topic, q, off) else {
                    continue;
                };
                let Some(view) = store.read_at(unit.commit_log_offset) else {
                    continue;
                };
                let origin = MessageId {
                    store_host: view.header().store_host.unwrap_or(UNKNOWN_HOST),
                    commit_log_offset: unit.commit_log_offset,
                }
                .encode();
                let msg = retry_message(
                    &view,
                    &group,
                    &Destination::DeadLetter,
                    &origin,
                    times.saturating_sub(1),
                )?;
                for a in writer
                    .send(PutInternal {
                        messages: vec![msg],
                        create_as: Some(dlq_topic_config(&group)),
                    })
                    .await?
                {
                    a?;
                }
            }
            let puts = checkpoints
                .iter()
                .map(checkpoint_message)
                .collect::<Result<Vec<_>, _>>()?;
            if !puts.is_empty() {
                let answers = writer
                    .send(PutInternal {
                        messages: puts,
                        create_as: Some(system_topic_config(TIMER_TOPIC)),
                    })
                    .await?;
                for a in answers {
                    a?;
                }
            }
            if let Some((metrics, group)) = &counted {
                // One update per run of messages of one topic (a pop's
                // messages come from its topic and the group's retry topic).
                for run in messages.chunk_by(|a, b| a.message.topic == b.message.topic) {
                    metrics.delivered(&run[0].message.topic, group, run.len() as u64);
                }
            }
            let mut body = BytesMut::new();
            batch::encode_stored(&messages, &mut body);
            Ok(Reply::with_body(
                PopMessageResponse {
                    pop_time_ms: now,
                    invisible_time_ms: req.invisible_time_ms,
                    revive_queue_id: 0,
                    rest_num: rest,
                },
                body.freeze(),
            ))
        };
        Ok(Some(PopWork {
            fut: Box::pin(fut),
            found,
            moved,
            replaced,
            token,
        }))
    }

    /// The pop `token`'s checkpoints are stored (or failed): it no longer
    /// holds positions back.
    fn end_inflight(&mut self, token: u64) {
        self.inflight.retain(|_, pops| {
            pops.retain(|(t, _)| *t != token);
            !pops.is_empty()
        });
    }

    /// The position of `key` that may be written down: no further than
    /// where a pop whose checkpoints are not stored yet took from.
    fn safe_position(&self, key: &PositionKey) -> Option<u64> {
        let now = self.book.positions.get(key).copied()?;
        let held = self
            .inflight
            .get(key)
            .and_then(|pops| pops.iter().map(|(_, old)| *old).min());
        Some(held.map_or(now, |h| h.min(now)))
    }

    /// The state to write: the book's, positions held back by pops in
    /// flight.
    fn safe_state(&self) -> PopState {
        let mut state = self.book.state();
        for p in &mut state.positions {
            let key = (p.group.clone(), p.topic.clone(), p.queue_id);
            if let Some(o) = self.safe_position(&key) {
                p.offset = o;
            }
        }
        state
    }

    /// A progress record of `keys` (safe positions).
    fn progress(&mut self, keys: &[PositionKey]) -> ProgressRecord {
        let positions = keys
            .iter()
            .filter_map(|k| {
                self.safe_position(k).map(|offset| PopPosition {
                    group: k.0.clone(),
                    topic: k.1.clone(),
                    queue_id: k.2,
                    offset,
                })
            })
            .collect();
        self.book.progress_seq += 1;
        ProgressRecord {
            seq: self.book.progress_seq,
            positions,
        }
    }

    /// Changes the invisible time of an orderly pop's message: the same
    /// checkpoint under a handle with the new times (as RocketMQ's
    /// `processChangeInvisibleTimeForOrder`), answered once the state file
    /// holds it. Its queue stays blocked until then.
    fn change_orderly(&mut self, old: ReceiptHandle, now: u64, invisible_ms: u64) -> ChangeReply {
        let new = ReceiptHandle {
            pop_time_ms: now,
            invisible_time_ms: invisible_ms,
            ..old
        };
        self.book
            .change_orderly(new.checkpoint_id, new.visible_again_at_ms());
        let w = self.state.persist(&self.safe_state());
        Box::pin(
            persist::written_or_stop::<Self>(w, self.logger.clone(), "pop state").map(
                move |r, _, _| {
                    r.map(|()| {
                        Reply::ok(ChangeInvisibleTimeResponse {
                            pop_time_ms: new.pop_time_ms,
                            invisible_time_ms: new.invisible_time_ms,
                            revive_queue_id: 0,
                            extra_info: new.encode(),
                        })
                    })
                },
            ),
        )
    }

    /// Commits the positions written down since the last commit (safe
    /// ones, on the topics' queues) as the groups' offsets.
    fn commit_offsets(&mut self) {
        let Some(offsets) = self.offsets.addr() else {
            return;
        };
        let mut table = OffsetTable::default();
        let mut changed = 0;
        let keys: Vec<PositionKey> = self
            .book
            .positions
            .keys()
            .filter(|(_, topic, _)| !topic.starts_with(system_topic::RETRY_PREFIX))
            .cloned()
            .collect();
        for key in keys {
            let Some(at) = self.safe_position(&key) else {
                continue;
            };
            if self.committed.get(&key) != Some(&at) {
                table.commit(&key.0, &key.1, key.2, at);
                self.committed.insert(key, at);
                changed += 1;
            }
        }
        if changed > 0 {
            offsets.do_send(MergeOffsets(table));
        }
    }

    /// Gives the messages of a pop whose writes failed back.
    fn undo_pop(
        &mut self,
        moved: Vec<(PositionKey, u64)>,
        replaced: Vec<(PositionKey, Option<OrderlyBatch>)>,
    ) {
        for ((g, t, q), old) in moved {
            self.book.rewind(&g, &t, q, old);
        }
        for (key, batch) in replaced {
            match batch {
                Some(b) => self.book.orderly_handed_out(b),
                None => {
                    self.book.orderly.remove(&key);
                }
            }
        }
    }
}

/// An orderly pop: one at a time (the actor waits for its writes), and
/// answered once the state file holds its batch.
impl Handler<PopOnce> for PopService {
    type Result = GuardedReply<AtomicResponse<Self, PopResult>>;

    fn handle(&mut self, msg: PopOnce, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let work = match act.pop_work(msg.0) {
                Ok(Some(w)) => w,
                Ok(None) => return AtomicResponse::new(Box::pin(actix::fut::ready(Ok(None)))),
                Err(e) => return AtomicResponse::new(Box::pin(actix::fut::ready(Err(e)))),
            };
            let PopWork {
                fut,
                found,
                moved,
                replaced,
                token,
            } = work;
            let fut = actix::fut::wrap_future::<_, Self>(fut).then(
                move |res: Result<Reply<PopMessageResponse>, ServiceError>, act, _ctx| {
                    act.end_inflight(token);
                    let out: Pin<Box<dyn ActorFuture<Self, Output = PopResult>>> = match res {
                        Ok(reply) => {
                            let w = act.state.persist(&act.safe_state());
                            act.commit_offsets();
                            Box::pin(
                                persist::written_or_stop::<Self>(
                                    w,
                                    act.logger.clone(),
                                    "pop state",
                                )
                                .map(move |r, _, _| r.map(|()| found.then_some(reply))),
                            )
                        }
                        Err(e) => {
                            // Nothing handed out: the messages go back.
                            act.undo_pop(moved, replaced);
                            Box::pin(actix::fut::ready(Err(e)))
                        }
                    };
                    out
                },
            );
            AtomicResponse::new(Box::pin(fut))
        })
    }
}

/// A normal pop: answered once its checkpoints are stored, other pops
/// going on meanwhile; the moved positions reach the state file with the
/// next write (at most one revive interval later). A crash before that
/// hands those messages out again (their checkpoints bring them back as
/// well): twice, never lost.
impl Handler<PopFast> for PopService {
    type Result = GuardedReply<ResponseActFuture<Self, PopResult>>;

    fn handle(&mut self, msg: PopFast, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let work = match act.pop_work(msg.0) {
                Ok(Some(w)) => w,
                Ok(None) => {
                    return Box::pin(actix::fut::ready(Ok(None))) as ResponseActFuture<_, _>;
                }
                Err(e) => return Box::pin(actix::fut::ready(Err(e))) as ResponseActFuture<_, _>,
            };
            let PopWork {
                fut,
                found,
                moved,
                replaced,
                token,
            } = work;
            let writer = act.writer.addr();
            Box::pin(actix::fut::wrap_future::<_, Self>(fut).then(
                move |res: Result<Reply<PopMessageResponse>, ServiceError>, act, _ctx| {
                    act.end_inflight(token);
                    let out: Pin<Box<dyn ActorFuture<Self, Output = PopResult>>> = match res {
                        Ok(reply) => {
                            // Its checkpoints are stored: record how far
                            // the positions safely are, then answer.
                            let keys: Vec<PositionKey> =
                                moved.into_iter().map(|(k, _)| k).collect();
                            let record = act.progress(&keys);
                            let write = async move {
                                let body = rmp_serde::to_vec_named(&record)
                                    .map_err(|e| ServiceError::system(e.to_string()))?;
                                let writer = writer.ok_or_else(|| down("commit log"))?;
                                for a in writer
                                    .send(PutInternal {
                                        messages: vec![record_message(POP_ACK_TOPIC, body)],
                                        create_as: Some(system_topic_config(POP_ACK_TOPIC)),
                                    })
                                    .await?
                                {
                                    a?;
                                }
                                Ok::<(), ServiceError>(())
                            };
                            Box::pin(actix::fut::wrap_future::<_, Self>(write).map(
                                move |written, act, _| {
                                    act.dirty = true;
                                    // Not written: the pop fails, and its
                                    // messages come back through their
                                    // stored checkpoints.
                                    written.map(|()| found.then_some(reply))
                                },
                            ))
                        }
                        Err(e) => {
                            // Nothing handed out: the messages go back (a
                            // pop that moved the position further meanwhile
                            // hands them out again: a duplicate, never a
                            // loss).
                            act.undo_pop(moved, replaced);
                            act.dirty = true;
                            Box::pin(actix::fut::ready(Err(e)))
                        }
                    };
                    out
                },
            )) as ResponseActFuture<_, _>
        })
    }
}

type PopReply = ResponseFuture<Result<Reply<PopMessageResponse>, ServiceError>>;

impl Handler<Call<PopMessageRequest>> for PopService {
    type Result = GuardedReply<PopReply>;

    fn handle(&mut self, call: Call<PopMessageRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            let me = ctx.address();
            let groups = act.groups.addr();
            let max_poll = act.config.max_poll;
            let sql_enabled = act.config.property_filter;
            let wake = act.wake.clone();
            Box::pin(async move {
                let req = call.req;
                check_pop(&req)?;
                let filter = Arc::new(pop_filter(&req, sql_enabled)?);
                let groups = groups.ok_or_else(|| down("subscription group manager"))?;
                // Refuses a group the broker does not know (or creates it).
                let max_retries = groups
                    .send(ResolveGroups {
                        groups: vec![req.consumer_group.clone()],
                    })
                    .await??
                    .pop()
                    .map_or(16, |g| g.retry_max_times);
                // A group new to pops here goes on from its offsets.
                me.send(SeedPositions {
                    group: req.consumer_group.clone(),
                    topic: req.topic.clone(),
                })
                .await?;
                let hold = Duration::from_millis(req.poll_time_ms).min(max_poll);
                let deadline = Instant::now() + hold;
                loop {
                    // Listening before the look: a message stored during
                    // it wakes the wait below.
                    let woken = wake.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    let attempt = Attempt {
                        req: req.clone(),
                        max_retries,
                        filter: Arc::clone(&filter),
                    };
                    let attempt = if req.order {
                        me.send(PopOnce(attempt)).await
                    } else {
                        me.send(PopFast(attempt)).await
                    };
                    if let Some(reply) = attempt?? {
                        return Ok(reply);
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        let code = if hold.is_zero() {
                            ResponseCode::NoMessage
                        } else {
                            ResponseCode::PollingTimeout
                        };
                        return Ok(Reply::ok(PopMessageResponse {
                            pop_time_ms: super::now_ms(),
                            invisible_time_ms: req.invisible_time_ms,
                            revive_queue_id: 0,
                            rest_num: 0,
                        })
                        .with_code(code));
                    }
                    let _ = tokio::time::timeout(RECHECK.min(deadline - now), woken).await;
                }
            }) as PopReply
        })
    }
}

/// The handle an ack or change quotes, checked against the request.
fn quoted_handle(
    extra_info: &str,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
) -> Result<ReceiptHandle, HandleError> {
    let h = ReceiptHandle::parse(extra_info)
        .ok_or_else(|| HandleError::Malformed(extra_info.to_owned()))?;
    let topic_ok = h.topic == topic || h.topic == system_topic::pop_retry_topic(group, topic);
    if !topic_ok || h.queue_id != queue_id || h.queue_offset != offset {
        return Err(HandleError::Malformed(format!(
            "{extra_info} (it names another message than {topic} queue {queue_id} offset {offset})"
        )));
    }
    Ok(h)
}

type EmptyReply = ResponseActFuture<PopService, Result<Reply<Empty>, ServiceError>>;

impl Handler<Call<AckMessageRequest>> for PopService {
    type Result = GuardedReply<EmptyReply>;

    fn handle(&mut self, call: Call<AckMessageRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let req = call.req;
            let checked = quoted_handle(
                &req.extra_info,
                &req.consumer_group,
                &req.topic,
                req.queue_id,
                req.offset,
            )
            .and_then(|h| act.book.check(&h, super::now_ms()).map(|()| h));
            let h = match checked {
                Ok(h) => h,
                Err(e) => {
                    return Box::pin(actix::fut::ready(Err(receipt_handle_error(e)))) as EmptyReply;
                }
            };
            let id = h.checkpoint_id;
            let orderly = act.book.is_orderly(id);
            // Marked before it is stored: a revive pass meanwhile skips it.
            act.book.mark_acked(id);
            let writer = act.writer.addr();
            let fut = async move {
                let m = ack_message(&AckRecord {
                    id,
                    visible_at_ms: h.visible_again_at_ms(),
                    orderly,
                    more: Vec::new(),
                })?;
                let writer = writer.ok_or_else(|| down("commit log"))?;
                for a in writer
                    .send(PutInternal {
                        messages: vec![m],
                        create_as: Some(system_topic_config(POP_ACK_TOPIC)),
                    })
                    .await?
                {
                    a?;
                }
                Ok(Reply::ok(Empty {}))
            };
            Box::pin(
                actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, _| {
                    if res.is_err() {
                        act.book.unmark(id);
                    }
                    res
                }),
            ) as EmptyReply
        })
    }
}

type BatchAckReply =
    ResponseActFuture<PopService, Result<Reply<BatchAckMessageResponse>, ServiceError>>;

/// Many acks in one request: each handle checked as one `ACK_MESSAGE`'s,
/// the accepted ones stored as one record (two when orderly and normal
/// pops are mixed), the refused ones listed in the reply.
impl Handler<Call<BatchAckMessageRequest>> for PopService {
    type Result = GuardedReply<BatchAckReply>;

    fn handle(
        &mut self,
        call: Call<BatchAckMessageRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let req = call.req;
            let now = super::now_ms();
            let mut failed = Vec::new();
            // (id, visible again at) of the accepted, normal and orderly.
            let (mut normal, mut orderly) = (Vec::new(), Vec::new());
            for (i, a) in req.acks.iter().enumerate() {
                let checked = quoted_handle(
                    &a.extra_info,
                    &req.consumer_group,
                    &req.topic,
                    a.queue_id,
                    a.offset,
                )
                .and_then(|h| act.book.check(&h, now).map(|()| h));
                match checked {
                    Ok(h) => {
                        let id = h.checkpoint_id;
                        let to = if act.book.is_orderly(id) {
                            &mut orderly
                        } else {
                            &mut normal
                        };
                        to.push((id, h.visible_again_at_ms()));
                        // Marked before it is stored: a revive pass
                        // meanwhile skips it, a repeat in this batch is
                        // stale.
                        act.book.mark_acked(id);
                    }
                    Err(e) => {
                        let e = receipt_handle_error(e);
                        failed.push(BatchAckFailure {
                            index: u32::try_from(i).unwrap_or(u32::MAX),
                            code: e.code.as_u32(),
                            remark: e.remark,
                        });
                    }
                }
            }
            let ids: Vec<u64> = normal.iter().chain(&orderly).map(|(id, _)| *id).collect();
            let records = [(normal, false), (orderly, true)]
                .into_iter()
                .filter(|(acks, _)| !acks.is_empty())
                .map(|(acks, orderly)| {
                    ack_message(&AckRecord {
                        id: acks[0].0,
                        visible_at_ms: acks.iter().map(|(_, at)| *at).max().unwrap_or(0),
                        orderly,
                        more: acks[1..].iter().map(|(id, _)| *id).collect(),
                    })
                })
                .collect::<Result<Vec<_>, _>>();
            let writer = act.writer.addr();
            let fut = async move {
                let records = records?;
                if !records.is_empty() {
                    let writer = writer.ok_or_else(|| down("commit log"))?;
                    for a in writer
                        .send(PutInternal {
                            messages: records,
                            create_as: Some(system_topic_config(POP_ACK_TOPIC)),
                        })
                        .await?
                    {
                        a?;
                    }
                }
                Ok(Reply::ok(BatchAckMessageResponse { failed }))
            };
            Box::pin(
                actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, _| {
                    if res.is_err() {
                        for id in ids {
                            act.book.unmark(id);
                        }
                    }
                    res
                }),
            ) as BatchAckReply
        })
    }
}

type ChangeReply =
    ResponseActFuture<PopService, Result<Reply<ChangeInvisibleTimeResponse>, ServiceError>>;

impl Handler<Call<ChangeInvisibleTimeRequest>> for PopService {
    type Result = GuardedReply<ChangeReply>;

    fn handle(
        &mut self,
        call: Call<ChangeInvisibleTimeRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let req = call.req;
            let now = super::now_ms();
            let checked = check_invisible(req.invisible_time_ms).and_then(|()| {
                quoted_handle(
                    &req.extra_info,
                    &req.consumer_group,
                    &req.topic,
                    req.queue_id,
                    req.offset,
                )
                .and_then(|h| act.book.check(&h, now).map(|()| h))
                .map_err(receipt_handle_error)
            });
            let old = match checked {
                Ok(h) if act.book.is_orderly(h.checkpoint_id) => {
                    return act.change_orderly(h, now, req.invisible_time_ms);
                }
                Ok(h) => h,
                Err(e) => return Box::pin(actix::fut::ready(Err(e))) as ChangeReply,
            };
            act.book.mark_acked(old.checkpoint_id);
            let new = ReceiptHandle {
                checkpoint_id: act.book.new_checkpoint(),
                pop_time_ms: now,
                invisible_time_ms: req.invisible_time_ms,
                ..old.clone()
            };
            let ck = Checkpoint {
                id: new.checkpoint_id,
                group: req.consumer_group.clone(),
                pop_topic: req.topic.clone(),
                topic: new.topic.clone(),
                queue_id: new.queue_id,
                queue_offset: new.queue_offset,
                visible_at_ms: new.visible_again_at_ms(),
                offsets: Vec::new(),
            };
            let writer = act.writer.addr();
            let old_id = old.checkpoint_id;
            let fut = async move {
                let writer = writer.ok_or_else(|| down("commit log"))?;
                // The new checkpoint first: a crash between the two writes
                // delivers the message again, never loses it.
                for (m, topic) in [
                    (checkpoint_message(&ck)?, TIMER_TOPIC),
                    (
                        ack_message(&AckRecord {
                            id: old.checkpoint_id,
                            visible_at_ms: old.visible_again_at_ms(),
                            orderly: false,
                            more: Vec::new(),
                        })?,
                        POP_ACK_TOPIC,
                    ),
                ] {
                    for a in writer
                        .send(PutInternal {
                            messages: vec![m],
                            create_as: Some(system_topic_config(topic)),
                        })
                        .await?
                    {
                        a?;
                    }
                }
                Ok(Reply::ok(ChangeInvisibleTimeResponse {
                    pop_time_ms: new.pop_time_ms,
                    invisible_time_ms: new.invisible_time_ms,
                    revive_queue_id: 0,
                    extra_info: new.encode(),
                }))
            };
            Box::pin(
                actix::fut::wrap_future::<_, Self>(fut).map(move |res, act, _| {
                    if res.is_err() {
                        act.book.unmark(old_id);
                    }
                    res
                }),
            ) as ChangeReply
        })
    }
}

impl Handler<SeedPositions> for PopService {
    type Result = GuardedReply<ResponseActFuture<Self, ()>>;

    fn handle(&mut self, msg: SeedPositions, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let key = (msg.group, msg.topic);
            let offsets = match act.offsets.addr() {
                Some(o) if !act.seeded.contains(&key) => o,
                _ => return Box::pin(actix::fut::ready(())) as ResponseActFuture<Self, ()>,
            };
            let ask = offsets.send(GetGroupOffsets {
                group: key.0.clone(),
                topic: key.1.clone(),
            });
            Box::pin(
                actix::fut::wrap_future::<_, Self>(ask).map(move |committed, act, _| {
                    // Unanswered (the offset manager restarting): asked
                    // again at the next pop.
                    let Ok(committed) = committed else {
                        return;
                    };
                    let (group, topic) = &key;
                    for (q, offset) in committed {
                        if act.book.position(group, topic, q).is_none() {
                            act.book.set_position(group, topic, q, offset);
                            act.committed
                                .insert((group.clone(), topic.clone(), q), offset);
                            act.dirty = true;
                        }
                    }
                    act.seeded.insert(key);
                }),
            )
        })
    }
}

impl Handler<ResetPopPositions> for PopService {
    type Result = GuardedReply<()>;

    fn handle(&mut self, msg: ResetPopPositions, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let popped = act
                .book
                .positions
                .keys()
                .any(|(g, t, _)| *g == msg.group && *t == msg.topic);
            if !popped {
                return;
            }
            for (q, offset) in msg.offsets {
                let key = (msg.group.clone(), msg.topic.clone(), q);
                act.book.set_position(&msg.group, &msg.topic, q, offset);
                act.book.orderly.remove(&key);
                act.committed.insert(key, offset);
            }
            info!(act.logger, "pop positions reset"; "group" => &msg.group, "topic" => &msg.topic);
            act.dirty = true;
            act.persist_if_dirty();
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for PopService {
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

    fn handle(id: u64, pop: u64, inv: u64) -> ReceiptHandle {
        ReceiptHandle {
            checkpoint_id: id,
            pop_time_ms: pop,
            invisible_time_ms: inv,
            reconsume_times: 0,
            topic: "t".into(),
            queue_id: 1,
            queue_offset: 7,
        }
    }

    #[test]
    fn handles_are_valid_until_acked_or_visible_again() {
        let mut book = PopBook::default();
        let h = handle(1, 1_000, 2_000);
        assert_eq!(book.check(&h, 1_500), Ok(()));
        assert_eq!(
            book.check(&h, 3_000),
            Err(HandleError::Expired {
                visible_at_ms: 3_000
            })
        );
        book.mark_acked(1);
        assert_eq!(book.check(&h, 1_500), Err(HandleError::Stale));
        // A failed ack write forgets the mark.
        book.unmark(1);
        assert_eq!(book.check(&h, 1_500), Ok(()));
        // Revived (or skipped as acked): forgotten, progress kept.
        book.mark_acked(1);
        book.revived(&[1], 5);
        assert!(!book.is_acked(1));
        assert_eq!(book.state().revive_offset, 5);
        book.revived(&[], 3);
        assert_eq!(book.state().revive_offset, 5);
    }

    #[test]
    fn positions_and_checkpoint_ids_survive_a_restart() {
        let mut book = PopBook::from_state(PopState::default(), 10);
        let a = book.new_checkpoint();
        assert_eq!(a, 10 << 20);
        book.set_position("g", "t", 0, 5);
        book.rewind("g", "t", 0, 3);
        book.rewind("g", "t", 0, 4);
        assert_eq!(book.position("g", "t", 0), Some(3));
        assert_eq!(book.position("g", "t", 1), None);
        // Restarted in the same millisecond: ids go on from the state.
        let again = PopBook::from_state(book.state(), 10).new_checkpoint();
        assert!(again > a);
        let restored = PopBook::from_state(book.state(), 0);
        assert_eq!(restored.position("g", "t", 0), Some(3));
    }

    fn key() -> PositionKey {
        ("g".into(), "t".into(), 0)
    }

    fn batch(offsets: &[u64], checkpoints: &[u64], reconsume: &[u32], at: u64) -> OrderlyBatch {
        OrderlyBatch {
            group: "g".into(),
            topic: "t".into(),
            queue_id: 0,
            offsets: offsets.to_vec(),
            checkpoints: checkpoints.to_vec(),
            reconsume: reconsume.to_vec(),
            visible_at_ms: at,
            changed: Vec::new(),
        }
    }

    #[test]
    fn an_orderly_queue_waits_for_its_batch() {
        let mut book = PopBook::default();
        let start = book.orderly_start(&key(), 5, 0, 2).unwrap();
        assert_eq!((start.from, start.dead), (5, None));
        book.orderly_handed_out(batch(&[5, 6, 7], &[1, 2, 3], &[0, 0, 0], 1_000));
        assert!(book.is_orderly(2) && !book.is_orderly(9));
        // In flight: nothing more of the queue.
        assert_eq!(book.orderly_start(&key(), 8, 500, 2), None);
        // 5 and 7 acked, 6 not: from 6 again (once more), 7 skipped.
        book.mark_acked(1);
        book.mark_acked(3);
        assert_eq!(book.orderly_start(&key(), 8, 500, 2), None);
        let again = book.orderly_start(&key(), 8, 1_000, 2).unwrap();
        assert_eq!(again.from, 6);
        assert_eq!(again.again, BTreeMap::from([(6, 1)]));
        assert_eq!(again.skip, BTreeSet::from([7]));
        assert_eq!(again.dead, None);
        assert!(!book.is_orderly(2));
        // The released acks stay stale until they expire.
        assert_eq!(
            book.check(&handle(1, 0, 1_000), 10),
            Err(HandleError::Stale)
        );
        book.prune_released(1_000);
        assert!(!book.was_released(1));
        // Past its retries: a dead letter, the next one follows.
        book.orderly_handed_out(batch(&[6], &[4], &[2], 2_000));
        let dead = book.orderly_start(&key(), 7, 2_000, 2).unwrap();
        assert_eq!((dead.from, dead.dead), (7, Some((6, 3))));
        assert!(dead.again.is_empty());
        // All acked: released, from the position.
        book.orderly_handed_out(batch(&[7], &[5], &[0], 3_000));
        book.mark_acked(5);
        let next = book.orderly_start(&key(), 8, 10, 2).unwrap();
        assert_eq!((next.from, next.dead), (8, None));
        // Batches are persisted.
        book.orderly_handed_out(batch(&[8], &[6], &[0], 4_000));
        assert!(PopBook::from_state(book.state(), 0).is_orderly(6));
    }

    #[test]
    fn a_changed_invisible_time_keeps_an_orderly_queue_blocked() {
        let mut book = PopBook::default();
        book.orderly_handed_out(batch(&[5, 6], &[1, 2], &[0, 0], 1_000));
        // 5 acked; 6's invisible time extended (a push consumer's renewal).
        book.mark_acked(1);
        assert!(book.change_orderly(2, 5_000));
        assert!(!book.change_orderly(9, 5_000));
        assert_eq!(book.orderly_start(&key(), 7, 1_000, 2), None);
        assert_eq!(book.orderly_start(&key(), 7, 4_999, 2), None);
        // Persisted with the batch.
        let mut reloaded = PopBook::from_state(book.state(), 0);
        assert_eq!(reloaded.orderly_start(&key(), 7, 4_999, 2), None);
        // Its new time passed: 6 again, once more.
        let again = book.orderly_start(&key(), 7, 5_000, 2).unwrap();
        assert_eq!(again.from, 6);
        assert_eq!(again.again, BTreeMap::from([(6, 1)]));
        // The released ack of 5 stays stale until the last time passed.
        book.prune_released(4_999);
        assert!(book.was_released(1));
        book.prune_released(5_000);
        assert!(!book.was_released(1));
        // A shorter time than the batch's releases earlier once the rest
        // is acked.
        book.orderly_handed_out(batch(&[6, 7], &[3, 4], &[1, 0], 9_000));
        book.mark_acked(4);
        assert!(book.change_orderly(3, 6_000));
        assert_eq!(book.orderly_start(&key(), 8, 5_999, 2), None);
        assert_eq!(book.orderly_start(&key(), 8, 6_000, 2).unwrap().from, 6);
    }

    #[test]
    fn turns_rotate_over_the_queues() {
        let mut book = PopBook::default();
        let turns: Vec<u32> = (0..5).map(|_| book.next_turn(3)).collect();
        assert_eq!(turns, [0, 1, 2, 0, 1]);
        assert_eq!(book.next_turn(0), 0);
    }

    #[test]
    fn pops_are_checked() {
        let ok = PopMessageRequest {
            consumer_group: "g".into(),
            topic: "t".into(),
            max_msg_nums: 32,
            invisible_time_ms: 1_000,
            ..Default::default()
        };
        assert!(check_pop(&ok).is_ok());
        let code = |f: fn(&mut PopMessageRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            check_pop(&r).unwrap_err()
        };
        assert_eq!(
            code(|r| r.max_msg_nums = 33).code,
            ResponseCode::InvalidParameter
        );
        assert_eq!(
            code(|r| r.consumer_group = "g".repeat(120)).code,
            ResponseCode::InvalidParameter
        );
        assert_eq!(
            code(|r| r.max_msg_nums = 0).code,
            ResponseCode::InvalidParameter
        );
        assert_eq!(
            code(|r| r.invisible_time_ms = 999).code,
            ResponseCode::InvalidParameter
        );
        let mut orderly = ok.clone();
        orderly.order = true;
        assert!(check_pop(&orderly).is_ok());
        let mut star = ok.clone();
        star.expression = Some("*".into());
        star.expression_type = Some("TAG".into());
        assert!(check_pop(&star).is_ok());
        assert!(pop_filter(&star, true).unwrap().is_all());
    }

    #[test]
    fn pop_filters_compile_or_are_refused() {
        let with = |expr: &str, kind: &str| PopMessageRequest {
            consumer_group: "g".into(),
            topic: "t".into(),
            expression: Some(expr.into()),
            expression_type: Some(kind.into()),
            ..Default::default()
        };
        let tags = pop_filter(&with("A || B", "TAG"), true).unwrap();
        assert!(tags.matches(|k| (k == actormq_protocol::filter::PROPERTY_TAGS).then_some("B")));
        assert!(!tags.matches(|k| (k == actormq_protocol::filter::PROPERTY_TAGS).then_some("C")));
        let sql = pop_filter(&with("amount > 100", "SQL92"), true).unwrap();
        assert!(sql.matches(|k| (k == "amount").then_some("150")));
        assert!(!sql.matches(|k| (k == "amount").then_some("50")));
        assert!(pop_filter(&with("amount >", "SQL92"), true).is_err());
        // SQL92 with enable_property_filter = false, as a pull's.
        assert!(pop_filter(&with("amount > 100", "SQL92"), false).is_err());
        assert!(pop_filter(&with("a", "XPATH"), true).is_err());
    }

    #[test]
    fn quoted_handles_must_name_the_message() {
        let h = handle(9, 1, 1_000).encode();
        assert!(quoted_handle(&h, "g", "t", 1, 7).is_ok());
        assert!(matches!(
            quoted_handle(&h, "g", "t", 1, 8),
            Err(HandleError::Malformed(_))
        ));
        assert!(matches!(
            quoted_handle("junk", "g", "t", 1, 7),
            Err(HandleError::Malformed(_))
        ));
        let mut retried = handle(9, 1, 1_000);
        retried.topic = "%RETRY%g_t".into();
        assert!(quoted_handle(&retried.encode(), "g", "t", 1, 7).is_ok());
    }

    #[test]
    fn checkpoints_park_for_the_revive_topic() {
        let ck = Checkpoint {
            id: 1,
            group: "g".into(),
            pop_topic: "t".into(),
            topic: "t".into(),
            queue_id: 0,
            queue_offset: 3,
            visible_at_ms: 12_345,
            offsets: Vec::new(),
        };
        let m = checkpoint_message(&ck).unwrap();
        assert_eq!(m.topic, TIMER_TOPIC);
        assert_eq!(m.tag_hash, 12_345);
        assert_eq!(rmp_serde::from_slice::<Checkpoint>(&m.body).unwrap(), ck);
        let props: Vec<_> = actormq_store::record::properties_iter(&m.properties).collect();
        assert!(props.contains(&(PROPERTY_REAL_TOPIC, POP_REVIVE_TOPIC)));
    }
    #[test]
    fn a_batch_checkpoint_covers_its_messages_and_reads_old_records() {
        let single = Checkpoint {
            id: 70,
            group: "g".into(),
            pop_topic: "t".into(),
            topic: "t".into(),
            queue_id: 0,
            queue_offset: 3,
            visible_at_ms: 1,
            offsets: Vec::new(),
        };
        assert_eq!(single.entries(), [(70, 3)]);
        let batch = Checkpoint {
            id: 128,
            offsets: vec![3, 4, 6],
            ..single.clone()
        };
        assert_eq!(batch.entries(), [(128, 3), (129, 4), (130, 6)]);
        // A record of the single form (no `offsets` key) reads back as one.
        #[derive(Serialize)]
        struct Old<'a> {
            id: u64,
            group: &'a str,
            pop_topic: &'a str,
            topic: &'a str,
            queue_id: u32,
            queue_offset: u64,
            visible_at_ms: u64,
        }
        let old = rmp_serde::to_vec_named(&Old {
            id: 70,
            group: "g",
            pop_topic: "t",
            topic: "t",
            queue_id: 0,
            queue_offset: 3,
            visible_at_ms: 1,
        })
        .unwrap();
        assert_eq!(rmp_serde::from_slice::<Checkpoint>(&old).unwrap(), single);
        // Acks of either form.
        let ack = AckRecord {
            id: 128,
            visible_at_ms: 1,
            orderly: false,
            more: vec![129, 130],
        };
        assert_eq!(ack.ids().collect::<Vec<_>>(), [128, 129, 130]);
    }

    #[test]
    fn progress_records_newer_than_the_state_file_move_positions() {
        let state = PopState {
            positions: vec![PopPosition {
                group: "g".into(),
                topic: "t".into(),
                queue_id: 0,
                offset: 32,
            }],
            progress_seq: 5,
            ..PopState::default()
        };
        let mut book = PopBook::from_state(state, 0);
        let rec = |seq, offset| ProgressRecord {
            seq,
            positions: vec![PopPosition {
                group: "g".into(),
                topic: "t".into(),
                queue_id: 0,
                offset,
            }],
        };
        book.apply_progress(&rec(4, 10)); // older than the state file
        assert_eq!(book.position("g", "t", 0), Some(32));
        book.apply_progress(&rec(6, 64));
        assert_eq!(book.position("g", "t", 0), Some(64));
        // Records are applied in log order: a later one (a pop that
        // finished after) wins, even with a lower position.
        book.apply_progress(&rec(7, 48));
        assert_eq!(book.position("g", "t", 0), Some(48));
        book.progress_loaded(7);
        assert_eq!(book.state().progress_seq, 7);
        // A progress record is not read as an ack, nor an ack as progress.
        let bytes = rmp_serde::to_vec_named(&rec(8, 1)).unwrap();
        assert!(rmp_serde::from_slice::<AckRecord>(&bytes).is_err());
        let ack = rmp_serde::to_vec_named(&AckRecord {
            id: 1,
            visible_at_ms: 2,
            orderly: false,
            more: Vec::new(),
        })
        .unwrap();
        assert!(rmp_serde::from_slice::<ProgressRecord>(&ack).is_err());
    }

    #[test]
    fn acks_are_kept_as_bits_per_block_of_64_ids() {
        let mut book = PopBook::default();
        book.new_checkpoint(); // ids 0.. in use: blocks start past them
        let base = book.new_checkpoint_block();
        assert_eq!(base % 64, 0);
        assert!(base >= 1);
        assert_eq!(book.new_checkpoint_block(), base + 64);
        assert!(
            book.new_checkpoint() >= base + 128,
            "single ids follow blocks"
        );
        for id in [base, base + 5, base + 63, base + 64, 3] {
            assert!(!book.is_acked(id));
            book.mark_acked(id);
            assert!(book.is_acked(id));
        }
        assert!(!book.is_acked(base + 1));
        assert_eq!(book.acked_len(), 5);
        assert_eq!(book.acked.len(), 3, "one entry per block");
        book.revived(&[base, base + 5, base + 63], 0);
        assert_eq!(book.acked_len(), 2);
        assert_eq!(book.acked.len(), 2, "an empty block is dropped");
        book.unmark(3);
        assert!(!book.is_acked(3) && book.is_acked(base + 64));
    }
}

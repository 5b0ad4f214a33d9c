//! `CommitLogActor`: the broker's single writer.
//!
//! Serves `SEND_MESSAGE` ([`SendMessageRequest`], body = the message body)
//! and `SEND_BATCH_MESSAGE` ([`SendBatchMessageRequest`], body = a batch,
//! [`actormq_protocol::batch`]). A handler only validates, resolves the
//! topic and buffers the request with its arrival time; the real work
//! happens in one **drain** per mailbox pass:
//!
//! - the first buffered request schedules a drain with `ctx.notify`. actix
//!   runs notified messages (context items) only after the mailbox has
//!   been polled empty, so every request that is already waiting joins the
//!   same drain, and all of them go to the store in **one**
//!   [`Store::append_into`](actormq_store::Store::append_into) call (split
//!   only past [`CommitLogConfig::max_batch_messages`] /
//!   [`CommitLogConfig::max_batch_bytes`]). Once `max_batch_messages` are
//!   buffered the handler appends at once instead of waiting for the end
//!   of the pass, so a mailbox that never runs dry cannot starve the drain;
//! - **flow control**: a request that waited in the broker more than
//!   [`CommitLogConfig::max_wait`] (default 200 ms) before its append is
//!   refused with `SYSTEM_BUSY` (the producer does not retry it). The wait
//!   runs from the handler (arrival) to the drain; a topic auto-creation
//!   (persisted by the topic manager before it answers) does not count;
//! - **flush**: in `FlushMode::Async` every request is answered right after
//!   the append; in `FlushMode::Sync` one group-commit callback
//!   ([`Store::on_flushed`](actormq_store::Store::on_flushed)) per append
//!   answers the whole batch once the flush thread has the bytes on disk,
//!   or with `FLUSH_DISK_TIMEOUT` (message stored) after the store's sync
//!   flush timeout (5 s). The actor itself never fsyncs;
//! - after an append it nudges the [`super::Dispatcher`]
//!   ([`LogAppended`]) so consume queues follow at once; with a
//!   `nudge_interval` (a dispatcher on its own thread), at once after a
//!   quiet spell and at most once per interval while busy
//!   ([`NudgeThrottle`]).
//!
//! The append is a memcpy into the mapped segment (pre-faulted ahead by
//! the store). A node runs this actor on the sessions' arbiter by default
//! and on its own with `broker.writer_thread` (or
//! `CommitLogActor::start_in_arbiter`): on 2 cores the cross-thread hop
//! per request costs more than the second thread gives. Topic configs come
//! from the shared [`TopicView`] snapshot; only a miss asks the
//! [`super::TopicManager`] ([`ResolveTopic`], which may auto-create).
//!
//! The bookkeeping (arrival order, expiry, batch cuts) is [`SendBuffer`], a
//! plain struct tested without a runtime.
//!
//! **Idempotent producers**: a send carrying a producer id and sequence is
//! judged by the dedup window ([`super::dedup`]) in the drain, right
//! before the append (so the check is atomic with it): a duplicate is
//! answered with the original reply and not appended. Sends without the
//! fields skip it entirely.

use super::error_map::store_error;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::dev::{MessageResponse, OneshotSender};
use actix::prelude::*;
use actormq_protocol::request::{
    SendBatchMessageRequest, SendBatchMessageResponse, SendMessageRequest, SendMessageResponse,
};
use actormq_protocol::system_topic::{
    self, PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC, SCHEDULE_TOPIC, TIMER_TOPIC,
    TRANS_HALF_TOPIC,
};
use actormq_protocol::{
    BatchCheck, Delay, MessageId, MessageIdEncoder, ResponseCode, validate_message,
};
use actormq_store::{AppendMessage, Appended, FlushMode, FlushOutcome};
use bytes::Bytes;
use slog::{Logger, error, o, warn};

use super::broker_store::BrokerStore;
use super::dedup::{self, DedupConfig, DedupTable, DedupTag, Original, Verdict};
use super::dispatcher::LogAppended;
use super::ha::{HaRole, HaState};
use super::metrics::{BrokerMetrics, StoredCounters};
use super::stored_codec::{encode_property_parts_into, tag_hash_of};
use super::topic_manager::{ResolveTopic, TopicView, check_writable};
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Settings of the [`CommitLogActor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitLogConfig {
    /// This broker's address, stamped into every record and message id.
    /// Default: `127.0.0.1:10911`.
    pub store_host: SocketAddr,
    /// Longest a send may wait in the broker before its append; older ones
    /// are refused with `SYSTEM_BUSY`. Default: 200 ms.
    pub max_wait: Duration,
    /// Max body + properties of one message (and of a whole batch).
    /// Default: 4 MiB.
    pub max_message_size: usize,
    /// Most messages in one store append. Default: 4096.
    pub max_batch_messages: usize,
    /// Most body bytes in one store append (at least one request is always
    /// taken). Default: 16 MiB.
    pub max_batch_bytes: usize,
    /// Mailbox capacity for `send` (requests parked beyond it wait in their
    /// senders). Deep enough that a drain takes everything the sessions
    /// have in flight; flow control bounds the wait. Default: 8192.
    pub mailbox_capacity: usize,
    /// Least time between two dispatcher nudges ([`NudgeThrottle`]): an
    /// append after a quiet spell nudges at once, a busy log at most once
    /// per interval (RocketMQ's reput service polls every 1 ms). Default:
    /// zero (a nudge after every append), right for a dispatcher on the
    /// writer's thread; a node with `broker.dispatcher_thread` uses 1 ms,
    /// so many small appends do not cost a thread wake-up each.
    pub nudge_interval: Duration,
    /// Delay of each level in ms, level 1 first (`message_delay_level`).
    /// A message sent with level `l` is parked in `SCHEDULE_TOPIC_XXXX`,
    /// queue `min(l, max) - 1`, its consume-queue tag hash holding the
    /// time it is due; the [`super::ScheduleService`] moves it to its
    /// topic then. Default RocketMQ's table (`1s 5s 10s 30s 1m … 2h`).
    pub delay_levels_ms: Vec<u64>,
    /// Furthest a deliver-at time may be ahead; later ones are refused
    /// with `MESSAGE_ILLEGAL`. Default 400 days.
    pub max_deliver_delay_ms: u64,
    /// The idempotent producer's dedup window ([`super::dedup`]).
    pub dedup: DedupConfig,
}

/// RocketMQ's delay levels in ms (`1s 5s 10s 30s 1m 2m … 10m 20m 30m 1h 2h`).
pub const DEFAULT_DELAY_LEVELS_MS: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

impl Default for CommitLogConfig {
    fn default() -> Self {
        Self {
            store_host: SocketAddr::from(([127, 0, 0, 1], 10911)),
            max_wait: Duration::from_millis(200),
            max_message_size: actormq_protocol::validate::DEFAULT_MAX_MESSAGE_SIZE,
            max_batch_messages: 4096,
            max_batch_bytes: 16 << 20,
            mailbox_capacity: 8192,
            nudge_interval: Duration::ZERO,
            delay_levels_ms: DEFAULT_DELAY_LEVELS_MS.to_vec(),
            max_deliver_delay_ms: 400 * 86_400_000,
            dedup: DedupConfig::default(),
        }
    }
}

/// Where a delayed message waits: `SCHEDULE_TOPIC_XXXX`, queue `queue_id`,
/// due at `due_ms` (kept as its consume-queue tag hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parking {
    /// Queue of the schedule topic (level − 1).
    pub queue_id: u32,
    /// When it is due (ms since the Unix epoch).
    pub due_ms: u64,
}

/// Where a message sent with delay `level` at `now_ms` waits, given the
/// level table (a level above the max means the max). `None` for level 0
/// or an empty table (no delay).
pub fn park(levels_ms: &[u64], level: u8, now_ms: u64) -> Option<Parking> {
    if level == 0 || levels_ms.is_empty() {
        return None;
    }
    let level = usize::from(level).min(levels_ms.len());
    Some(Parking {
        queue_id: (level - 1) as u32,
        due_ms: now_ms.saturating_add(levels_ms[level - 1]),
    })
}

/// A message the broker writes itself (a delayed message coming due, a
/// consumer's send-back, a dead-letter resend): appended through the same
/// buffer as client sends ([`PutInternal`]).
#[derive(Debug, Clone)]
pub struct InternalMessage {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Body.
    pub body: Bytes,
    /// Encoded record properties ([`actormq_store::encode_properties`]).
    pub properties: Vec<u8>,
    /// Consume-queue tag hash (of the `TAGS` property; 0 for none).
    pub tag_hash: i64,
    /// Flags.
    pub flags: u32,
    /// Born timestamp of the original message.
    pub born_timestamp_ms: u64,
    /// Born host of the original message.
    pub born_host: Option<SocketAddr>,
    /// Redeliveries so far.
    pub reconsume_times: u32,
    /// Park it for this delay level first (0: deliver at once); the
    /// commit log adds `DELAY`, `REAL_TOPIC` and `REAL_QID`.
    pub delay_level: u8,
}

/// Append `messages` ([`InternalMessage`]); each answer is the message's
/// place, or why it was not stored. The topic is resolved with `create_as`
/// when given (a system topic, created whatever `auto_create` says).
/// A stored message counts as stored even when a sync flush timed out.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Result<Appended, ServiceError>>")]
pub struct PutInternal {
    /// The messages, each appended as its own request.
    pub messages: Vec<InternalMessage>,
    /// The topic config to create a missing topic with.
    pub create_as: Option<actormq_protocol::request::TopicConfig>,
}

/// What to do about the dispatcher after an append ([`NudgeThrottle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nudge {
    /// Nudge now.
    Now,
    /// Nudge at this instant (then call [`NudgeThrottle::fired`]).
    At(Instant),
    /// A nudge is already due: nothing to do.
    Pending,
}

/// Spaces the writer's [`LogAppended`] nudges: on a thread of its own, each
/// nudge wakes the dispatcher, and a wake-up per append costs more than
/// the dispatch itself under many small appends. Plain data.
#[derive(Debug, Default, Clone)]
pub struct NudgeThrottle {
    last: Option<Instant>,
    deferred: bool,
}

impl NudgeThrottle {
    /// An append happened at `now`: nudge at once when the last nudge is
    /// at least `interval` old, else once at `last + interval`.
    pub fn on_append(&mut self, now: Instant, interval: Duration) -> Nudge {
        if self.deferred {
            return Nudge::Pending;
        }
        match self.last {
            Some(last) if now < last + interval => {
                self.deferred = true;
                Nudge::At(last + interval)
            }
            _ => {
                self.last = Some(now);
                Nudge::Now
            }
        }
    }

    /// The deferred nudge went out at `now`.
    pub fn fired(&mut self, now: Instant) {
        self.deferred = false;
        self.last = Some(now);
    }
}

/// Requests waiting for the next append, in arrival order. Plain data.
#[derive(Debug)]
pub struct SendBuffer<T> {
    queue: VecDeque<Entry<T>>,
    messages: usize,
}

#[derive(Debug)]
struct Entry<T> {
    arrival: Instant,
    msgs: usize,
    bytes: usize,
    item: T,
}

impl<T> Default for SendBuffer<T> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            messages: 0,
        }
    }
}

impl<T> SendBuffer<T> {
    /// Buffers `item` (`msgs` messages, `bytes` bytes) that arrived at
    /// `arrival`. Returns whether the buffer was empty before (the caller
    /// schedules a drain then).
    pub fn push(&mut self, arrival: Instant, msgs: usize, bytes: usize, item: T) -> bool {
        let was_empty = self.queue.is_empty();
        self.messages += msgs;
        self.queue.push_back(Entry {
            arrival,
            msgs,
            bytes,
            item,
        });
        was_empty
    }

    /// Number of buffered requests.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Number of buffered messages (a batch request counts each).
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Removes the requests that waited more than `max_wait` at `now`
    /// (flow control), keeping the order of the rest.
    pub fn take_expired(&mut self, now: Instant, max_wait: Duration) -> Vec<T> {
        let mut expired = Vec::new();
        if !self
            .queue
            .iter()
            .any(|e| now.saturating_duration_since(e.arrival) > max_wait)
        {
            return expired;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for e in self.queue.drain(..) {
            if now.saturating_duration_since(e.arrival) > max_wait {
                self.messages -= e.msgs;
                expired.push(e.item);
            } else {
                kept.push_back(e);
            }
        }
        self.queue = kept;
        expired
    }

    /// Takes the oldest requests up to `max_msgs` messages and `max_bytes`
    /// bytes, always at least one request.
    pub fn take_batch(&mut self, max_msgs: usize, max_bytes: usize) -> Vec<T> {
        let (mut msgs, mut bytes, mut n) = (0usize, 0usize, 0usize);
        for e in &self.queue {
            if n > 0 && (msgs + e.msgs > max_msgs || bytes + e.bytes > max_bytes) {
                break;
            }
            msgs += e.msgs;
            bytes += e.bytes;
            n += 1;
        }
        self.messages -= msgs;
        self.queue.drain(..n).map(|e| e.item).collect()
    }
}

/// Adds an appended batch to `metrics`: one family update per run of
/// requests on the same topic (a batch is mostly one topic).
fn count_stored(metrics: &BrokerMetrics, cache: &mut StoredCounters, batch: &[Pending]) {
    let mut run: Option<(&str, u64, u64)> = None;
    for p in batch {
        let (n, b) = (p.parts.len() as u64, p.bytes() as u64);
        match &mut run {
            Some((t, msgs, bytes)) if *t == p.topic => {
                *msgs += n;
                *bytes += b;
            }
            _ => {
                if let Some((t, msgs, bytes)) = run.take() {
                    metrics.stored_cached(cache, t, msgs, bytes);
                }
                run = Some((&p.topic, n, b));
            }
        }
    }
    if let Some((t, msgs, bytes)) = run {
        metrics.stored_cached(cache, t, msgs, bytes);
    }
}

/// Refuses a client send to a topic only the broker writes
/// (`SCHEDULE_TOPIC_XXXX`, `%DLQ%…`, `RMQ_SYS_…`).
fn refuse_broker_only(topic: &str) -> Result<(), ServiceError> {
    if system_topic::is_broker_only(topic) {
        return Err(ServiceError::new(
            ResponseCode::NoPermission,
            format!("topic {topic} is written by the broker only"),
        ));
    }
    Ok(())
}

/// The response code of a stored send, given how its flush ended.
pub fn flush_code(outcome: FlushOutcome) -> ResponseCode {
    match outcome {
        FlushOutcome::Flushed => ResponseCode::Success,
        // Stored, but not known to be on disk: RocketMQ's FLUSH_DISK_TIMEOUT.
        FlushOutcome::Timeout | FlushOutcome::Failed | FlushOutcome::Closed => {
            ResponseCode::FlushDiskTimeout
        }
    }
}

/// Counters of the [`CommitLogActor`] ([`GetCommitLogStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitLogStats {
    /// Send requests received (single and batch).
    pub requests: u64,
    /// Messages appended.
    pub messages: u64,
    /// Store append calls (one per drain unless the limits split it).
    pub appends: u64,
    /// Most requests in one append.
    pub largest_append_requests: u64,
    /// Requests refused with `SYSTEM_BUSY` (waited over `max_wait`).
    pub refused_busy: u64,
    /// Requests failed by the store (disk full, ...).
    pub store_errors: u64,
    /// Sync-flush replies sent with `FLUSH_DISK_TIMEOUT`.
    pub flush_timeouts: u64,
    /// Idempotent sends answered as duplicates (not appended again).
    pub duplicates: u64,
    /// Idempotent sends refused as older than the dedup window.
    pub out_of_window: u64,
    /// Producers dropped from the dedup table to stay within its bounds.
    pub dedup_evicted: u64,
    /// Requests refused because this broker is a slave.
    pub refused_slave: u64,
}

/// Ask the [`CommitLogActor`] for its counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "CommitLogStats")]
pub struct GetCommitLogStats;

/// Internal: append everything buffered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Drain;

type Tx<T> = OneshotSender<Result<Reply<T>, ServiceError>>;

/// Where the caller's reply channel lands once actix hands it over (right
/// after the handler returns, before any drain runs).
type Slot<T> = Rc<RefCell<Option<Tx<T>>>>;

/// The reply of a send handler. The request's reply channel is kept in
/// the buffered request and answered by the drain (or, in sync flush mode,
/// by the flush thread), so no task or boxed future is spawned per request
/// on the writer's thread.
pub struct SendReply<T>(SendReplyInner<T>);

enum SendReplyInner<T> {
    Now(Result<Reply<T>, ServiceError>),
    Later(Slot<T>),
}

impl<T> SendReply<T> {
    fn now(r: Result<Reply<T>, ServiceError>) -> Self {
        Self(SendReplyInner::Now(r))
    }
}

impl<A, M, T> MessageResponse<A, M> for SendReply<T>
where
    A: Actor,
    M: actix::Message<Result = Result<Reply<T>, ServiceError>>,
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<M::Result>>) {
        match self.0 {
            SendReplyInner::Now(r) => {
                if let Some(tx) = tx {
                    // A dropped receiver means the caller gave up.
                    drop(tx.send(r));
                }
            }
            SendReplyInner::Later(slot) => *slot.borrow_mut() = tx,
        }
    }
}

/// The reply channel of a buffered request (not yet handed over by actix
/// while its handler runs).
enum Responder {
    Single(Slot<SendMessageResponse>),
    Batch(Slot<SendBatchMessageResponse>),
    Internal(InternalTx),
}

type InternalTx = tokio::sync::oneshot::Sender<Result<Appended, ServiceError>>;

impl Responder {
    fn single() -> (Self, SendReply<SendMessageResponse>) {
        let slot = Slot::default();
        (
            Responder::Single(Rc::clone(&slot)),
            SendReply(SendReplyInner::Later(slot)),
        )
    }

    fn batch() -> (Self, SendReply<SendBatchMessageResponse>) {
        let slot = Slot::default();
        (
            Responder::Batch(Rc::clone(&slot)),
            SendReply(SendReplyInner::Later(slot)),
        )
    }

    /// The channel itself (`Send`, for the flush thread).
    fn take(self) -> Answer {
        match self {
            Responder::Single(s) => Answer::Single(s.borrow_mut().take()),
            Responder::Batch(s) => Answer::Batch(s.borrow_mut().take()),
            Responder::Internal(tx) => Answer::Internal(tx),
        }
    }

    fn fail(self, err: ServiceError) {
        self.take().fail(err);
    }
}

/// A reply channel taken out of its slot (`None`: `do_send`, no reply).
enum Answer {
    Single(Option<Tx<SendMessageResponse>>),
    Batch(Option<Tx<SendBatchMessageResponse>>),
    Internal(InternalTx),
}

impl Answer {
    fn fail(self, err: ServiceError) {
        // A dropped receiver means the caller gave up: nothing to do.
        match self {
            Answer::Single(Some(tx)) => drop(tx.send(Err(err))),
            Answer::Batch(Some(tx)) => drop(tx.send(Err(err))),
            Answer::Internal(tx) => drop(tx.send(Err(err))),
            _ => {}
        }
    }

    fn succeed(
        self,
        store_host: SocketAddr,
        appended: &[Appended],
        queue_id: u32,
        code: ResponseCode,
    ) {
        let id = |a: &Appended| {
            MessageId {
                store_host,
                commit_log_offset: a.commit_log_offset,
            }
            .encode()
        };
        let first_offset = appended.first().map_or(0, |a| a.queue_offset);
        match self {
            Answer::Single(Some(tx)) => {
                let fields = SendMessageResponse {
                    msg_id: appended.first().map(id).unwrap_or_default(),
                    queue_id,
                    queue_offset: first_offset,
                    transaction_id: None,
                };
                drop(tx.send(Ok(Reply::ok(fields).with_code(code))));
            }
            Answer::Batch(Some(tx)) => {
                // All ids in one string: one allocation per reply, the
                // host's hex written once.
                let enc = MessageIdEncoder::new(store_host);
                let mut ids = Vec::with_capacity(appended.len() * 57);
                for (i, a) in appended.iter().enumerate() {
                    if i > 0 {
                        ids.push(b',');
                    }
                    enc.push(a.commit_log_offset, &mut ids);
                }
                // Hex digits and commas only: one check for the string.
                let msg_id = String::from_utf8(ids).unwrap_or_default();
                let fields = SendBatchMessageResponse {
                    msg_id,
                    queue_id,
                    queue_offset: first_offset,
                };
                drop(tx.send(Ok(Reply::ok(fields).with_code(code))));
            }
            Answer::Internal(tx) => {
                // Stored: a flush that timed out does not undo that.
                let res = appended.first().copied().ok_or_else(|| {
                    ServiceError::new(ResponseCode::SystemError, "nothing appended")
                });
                drop(tx.send(res));
            }
            _ => {}
        }
    }
}

/// One message of a pending send: where its body and its encoded
/// properties sit in the request's buffers.
struct Part {
    body: Range<usize>,
    props: Range<usize>,
    tag_hash: i64,
    flags: u32,
}

/// A validated send waiting for its append.
struct Pending {
    topic: String,
    queue_id: u32,
    /// The queue the sender asked for (answered; `queue_id` differs for a
    /// parked delayed message).
    reply_queue: u32,
    /// Park it in the schedule topic for this delay level first (0: no).
    delay_level: u8,
    /// Park it in the timer topic until this time (a client's deliver-at
    /// send; `None` for the broker's own writes).
    deliver_at_ms: Option<u64>,
    born_timestamp_ms: u64,
    born_host: Option<SocketAddr>,
    reconsume_times: u32,
    /// The request body: one message's body, or the whole batch (parts
    /// point into it, so a batch is never split into per-message buffers).
    body: Bytes,
    /// Every message's encoded properties, back to back.
    props: Vec<u8>,
    parts: Vec<Part>,
    responder: Responder,
    /// Idempotent send: its producer id and sequence.
    dedup: Option<DedupTag>,
    /// When the request arrived (set when it is buffered): the start of
    /// its put latency.
    arrival: Option<Instant>,
}

impl Pending {
    fn bytes(&self) -> usize {
        self.body.len() + self.props.len()
    }
}

/// The single writer of the commit log. See the module docs.
pub struct CommitLogActor {
    store: BrokerStore,
    topics: TopicView,
    topic_manager: Recipient<ResolveTopic>,
    dispatcher: Option<Recipient<LogAppended>>,
    config: CommitLogConfig,
    sync_flush: bool,
    max_record: usize,
    buffer: SendBuffer<Pending>,
    drain_scheduled: bool,
    nudges: NudgeThrottle,
    appended: Vec<Appended>,
    dedup: DedupTable,
    dedup_state: Option<Arc<super::persist::StateFile>>,
    stats: CommitLogStats,
    flush_timeouts: Arc<AtomicU64>,
    ha: Option<(Arc<HaState>, Duration)>,
    metrics: Option<Arc<BrokerMetrics>>,
    stored_counters: StoredCounters,
    logger: Logger,
    poison: Poison,
}

impl CommitLogActor {
    /// A writer over `store`; topic configs from `topics`, misses resolved
    /// (and auto-created) by `topic_manager`.
    pub fn new(
        store: BrokerStore,
        topics: TopicView,
        topic_manager: Recipient<ResolveTopic>,
        config: CommitLogConfig,
        logger: &Logger,
    ) -> Self {
        let sync_flush = store.config().flush_mode == FlushMode::Sync;
        let max_record = store.config().max_message_size;
        let logger = logger.new(o!("actor" => "CommitLogActor"));
        let dedup = dedup::recover(&store, &config.dedup, &logger);
        let dedup_state = config
            .dedup
            .path
            .as_deref()
            .map(super::persist::StateFile::for_path);
        Self {
            store,
            topics,
            topic_manager,
            dispatcher: None,
            config,
            sync_flush,
            max_record,
            buffer: SendBuffer::default(),
            drain_scheduled: false,
            nudges: NudgeThrottle::default(),
            appended: Vec::new(),
            dedup,
            dedup_state,
            stats: CommitLogStats::default(),
            flush_timeouts: Arc::new(AtomicU64::new(0)),
            ha: None,
            metrics: None,
            stored_counters: StoredCounters::default(),
            logger,
            poison: Poison::default(),
        }
    }

    /// Follows the replication role in `ha` (builder style): a slave
    /// refuses every append, a sync master answers a send once a slave
    /// acknowledged it (or after `sync_timeout`), and every append wakes
    /// the connections streaming to slaves.
    pub fn with_ha(mut self, ha: Arc<HaState>, sync_timeout: Duration) -> Self {
        self.ha = Some((ha, sync_timeout));
        self
    }

    /// Counts stored messages and put latencies in `metrics` (builder
    /// style).
    pub fn with_metrics(mut self, metrics: Arc<BrokerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Nudges `dispatcher` after every append (builder style).
    pub fn with_dispatcher(mut self, dispatcher: Recipient<LogAppended>) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    /// Checks the record size of one message and describes it.
    fn part(
        &self,
        topic: &str,
        body: Range<usize>,
        props: Range<usize>,
        tags: Option<&str>,
        flags: u32,
    ) -> Result<Part, ServiceError> {
        let record = actormq_store::record::HEADER_LEN + topic.len() + props.len() + body.len();
        if record > self.max_record {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                format!(
                    "message too large: record of {record} bytes > max {}",
                    self.max_record
                ),
            ));
        }
        Ok(Part {
            body,
            props,
            tag_hash: tag_hash_of(tags),
            flags,
        })
    }

    fn prepare_single(
        &self,
        call: Call<SendMessageRequest>,
        responder: Responder,
    ) -> Result<Pending, ServiceError> {
        let born_host = call.origin.map(|o| o.peer);
        let mut call = call;
        let (queue_id, born_timestamp_ms, reconsume_times) = (
            call.req.queue_id,
            call.req.born_timestamp_ms,
            call.req.reconsume_times,
        );
        let tag = match (call.req.producer_id.take(), call.req.sequence) {
            (None, None) => None,
            (id, seq) => DedupTag::from_request(id, seq, &call.req.topic, queue_id)?,
        };
        let msg = call.req.into_message(call.body)?;
        validate_message(&msg, self.config.max_message_size)?;
        refuse_broker_only(&msg.topic)?;
        let (delay_level, deliver_at_ms) = match msg.delay {
            Delay::None => (0, None),
            Delay::Level(l) => (l, None),
            Delay::DeliverAtMs(t) => {
                let max = super::now_ms().saturating_add(self.config.max_deliver_delay_ms);
                if t > max {
                    return Err(ServiceError::new(
                        ResponseCode::MessageIllegal,
                        format!(
                            "deliver-at {t} is more than {} ms ahead (the broker's max)",
                            self.config.max_deliver_delay_ms
                        ),
                    ));
                }
                (0, Some(t))
            }
        };
        let mut props = Vec::new();
        encode_property_parts_into(
            msg.tags.as_deref(),
            msg.keys.as_deref(),
            msg.delay,
            msg.properties
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            &mut props,
        )?;
        if let Some(tag) = &tag {
            tag.encode_properties(1, &mut props)?;
        }
        let part = self.part(
            &msg.topic,
            0..msg.body.len(),
            0..props.len(),
            msg.tags.as_deref(),
            msg.flags,
        )?;
        Ok(Pending {
            arrival: None,
            topic: msg.topic,
            queue_id,
            reply_queue: queue_id,
            delay_level,
            deliver_at_ms,
            born_timestamp_ms,
            born_host,
            reconsume_times,
            body: msg.body,
            props,
            parts: vec![part],
            responder,
            dedup: tag,
        })
    }

    fn prepare_batch(
        &self,
        call: Call<SendBatchMessageRequest>,
        responder: Responder,
    ) -> Result<Pending, ServiceError> {
        actormq_protocol::validate_topic(&call.req.topic)?;
        refuse_broker_only(&call.req.topic)?;
        let mut call = call;
        let tag = match (call.req.producer_id.take(), call.req.sequence) {
            (None, None) => None,
            (id, seq) => DedupTag::from_request(id, seq, &call.req.topic, call.req.queue_id)?,
        };
        // The first record of an idempotent batch says how many follow.
        let count = match tag {
            Some(_) => actormq_protocol::batch::iter_raw(&call.body).count(),
            None => 0,
        };
        // One pass over a borrowed view of the batch: checked, properties
        // encoded and parts noted per entry, no owned message or list of
        // entries.
        let mut check = BatchCheck::new(self.config.max_message_size);
        let base = call.body.as_ptr() as usize;
        let mut props = Vec::with_capacity(call.body.len() / 4);
        let mut parts = Vec::with_capacity(actormq_protocol::batch::estimate_count(&call.body));
        let topic = call.req.topic.as_str();
        // Topic and properties unchecked per entry: the topic must equal
        // the request's (so it is valid), the properties are checked as
        // UTF-8 together, in their stored encoding, after the loop.
        for m in actormq_protocol::batch::iter_raw(&call.body) {
            let m = m?;
            if m.topic != topic.as_bytes() {
                return Err(ServiceError::new(
                    ResponseCode::MessageIllegal,
                    "batch messages must be of the request's topic",
                ));
            }
            check.add_parts(topic, m.delay, m.size())?;
            let start = props.len();
            encode_property_parts_into(
                m.tags,
                m.keys,
                m.delay,
                m.properties.iter_bytes(),
                &mut props,
            )?;
            if parts.is_empty()
                && let Some(tag) = &tag
            {
                tag.encode_properties(count, &mut props)?;
            }
            // The body is a slice of `call.body`: keep its position only.
            let at = m.body.as_ptr() as usize - base;
            parts.push(self.part(
                topic,
                at..at + m.body.len(),
                start..props.len(),
                m.tags,
                m.flags,
            )?);
        }
        check.finish()?;
        // UTF-8 pieces joined by ASCII separators are UTF-8, and a bad
        // piece makes the whole invalid. (Values of reserved keys are
        // dropped, not stored, so they need no check.)
        if std::str::from_utf8(&props).is_err() {
            // Rare: name the culprit as the one-by-one check does.
            for m in actormq_protocol::batch::iter_messages(&call.body) {
                m?;
            }
            return Err(actormq_protocol::Error::InvalidUtf8.into());
        }
        Ok(Pending {
            arrival: None,
            topic: call.req.topic,
            queue_id: call.req.queue_id,
            reply_queue: call.req.queue_id,
            delay_level: 0,
            deliver_at_ms: None,
            born_timestamp_ms: call.req.born_timestamp_ms,
            born_host: call.origin.map(|o| o.peer),
            reconsume_times: 0,
            body: call.body,
            props,
            parts,
            responder,
            dedup: tag,
        })
    }

    /// Resolves the topic (snapshot first, the topic manager on a miss)
    /// and buffers the request. An error found at once is returned (the
    /// caller answers it: the reply slot is not filled yet while the
    /// handler runs).
    fn admit(
        &mut self,
        p: Pending,
        arrival: Instant,
        ctx: &mut Context<Self>,
    ) -> Result<(), ServiceError> {
        self.stats.requests += 1;
        let snapshot = self.topics.snapshot();
        if let Some(cfg) = snapshot.get(&p.topic) {
            check_writable(cfg, p.queue_id)?;
            let mut p = p;
            self.park(&mut p)?;
            self.enqueue(p, arrival, ctx);
            return Ok(());
        }
        let ask = self.topic_manager.send(ResolveTopic::send(p.topic.clone()));
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
                let cfg = match res {
                    Ok(Ok(cfg)) => cfg,
                    Ok(Err(e)) => return p.responder.fail(e),
                    Err(e) => return p.responder.fail(e.into()),
                };
                let mut p = p;
                match check_writable(&cfg, p.queue_id).and_then(|()| act.park(&mut p)) {
                    // Flow control measures the wait for the writer, not
                    // the topic creation (persisted before it answers).
                    Ok(()) => act.enqueue(p, Instant::now(), ctx),
                    Err(e) => p.responder.fail(e),
                }
            }),
        );
        Ok(())
    }

    /// As [`Self::admit`] for a message the broker writes itself: a
    /// system topic is created with `create_as` when missing; not counted
    /// as a client request.
    fn admit_internal(
        &mut self,
        p: Pending,
        create_as: Option<actormq_protocol::request::TopicConfig>,
        ctx: &mut Context<Self>,
    ) {
        let snapshot = self.topics.snapshot();
        if let Some(cfg) = snapshot.get(&p.topic) {
            let wide_enough = create_as
                .as_ref()
                .is_none_or(|want| cfg.write_queue_nums >= want.write_queue_nums);
            if wide_enough {
                let mut p = p;
                match check_writable(cfg, p.queue_id).and_then(|()| self.park(&mut p)) {
                    Ok(()) => self.enqueue(p, Instant::now(), ctx),
                    Err(e) => p.responder.fail(e),
                }
                return;
            }
        }
        let ask = self.topic_manager.send(ResolveTopic {
            topic: p.topic.clone(),
            create_as,
        });
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(ask).map(move |res, act, ctx| {
                let cfg = match res {
                    Ok(Ok(cfg)) => cfg,
                    Ok(Err(e)) => return p.responder.fail(e),
                    Err(e) => return p.responder.fail(e.into()),
                };
                let mut p = p;
                match check_writable(&cfg, p.queue_id).and_then(|()| act.park(&mut p)) {
                    Ok(()) => act.enqueue(p, Instant::now(), ctx),
                    Err(e) => p.responder.fail(e),
                }
            }),
        );
    }

    /// A delayed message (its topic resolved and writable) goes to the
    /// schedule topic instead, due at now + its level's delay, and a
    /// deliver-at one (due later than now) to the timer topic
    /// ([`super::TimerService`]); `REAL_TOPIC` and `REAL_QID` say where it
    /// is delivered then.
    fn park_if_delayed(&self, p: &mut Pending) -> Result<(), ServiceError> {
        if p.delay_level == 0 && p.deliver_at_ms.is_none() {
            return Ok(()); // the common case: no clock read
        }
        let now = super::now_ms();
        let (topic, parking) = match p.deliver_at_ms.take() {
            // Due already: delivered at once.
            Some(t) if t <= now => return Ok(()),
            Some(t) => (
                TIMER_TOPIC,
                Parking {
                    queue_id: 0,
                    due_ms: t,
                },
            ),
            None => match park(&self.config.delay_levels_ms, p.delay_level, now) {
                Some(parking) => (SCHEDULE_TOPIC, parking),
                None => return Ok(()),
            },
        };
        let [part] = &mut p.parts[..] else {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                "a batch cannot carry delayed messages",
            ));
        };
        let mut props = p.props[part.props.clone()].to_vec();
        let real_queue = p.queue_id.to_string();
        let added = [
            (PROPERTY_REAL_TOPIC.as_bytes(), p.topic.as_bytes()),
            (PROPERTY_REAL_QUEUE_ID.as_bytes(), real_queue.as_bytes()),
        ];
        actormq_store::encode_properties_into(added, &mut props)
            .map_err(|e| ServiceError::new(ResponseCode::MessageIllegal, e.to_string()))?;
        let record =
            actormq_store::record::HEADER_LEN + topic.len() + props.len() + part.body.len();
        if record > self.max_record {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                format!(
                    "message too large: record of {record} bytes > max {}",
                    self.max_record
                ),
            ));
        }
        part.props = 0..props.len();
        part.tag_hash = parking.due_ms as i64;
        p.props = props;
        p.topic = topic.to_owned();
        p.queue_id = parking.queue_id;
        Ok(())
    }

    /// A transactional half message (`TRAN_MSG=true`; its topic resolved
    /// and writable) goes to `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 instead,
    /// invisible until committed ([`super::half_message`]); a delay it
    /// carries applies from the commit.
    fn park_if_half(&self, p: &mut Pending) -> Result<(), ServiceError> {
        if p.topic == TRANS_HALF_TOPIC || !super::half_message::is_prepared(&p.props) {
            return Ok(());
        }
        let [part] = &mut p.parts[..] else {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                "a batch cannot carry transactional messages",
            ));
        };
        let props = super::half_message::half_properties(
            &p.props[part.props.clone()],
            &p.topic,
            p.queue_id,
        )?;
        let record = actormq_store::record::HEADER_LEN
            + TRANS_HALF_TOPIC.len()
            + props.len()
            + part.body.len();
        if record > self.max_record {
            return Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                format!(
                    "message too large: record of {record} bytes > max {}",
                    self.max_record
                ),
            ));
        }
        part.props = 0..props.len();
        p.props = props;
        p.topic = TRANS_HALF_TOPIC.to_owned();
        p.queue_id = 0;
        p.delay_level = 0;
        Ok(())
    }

    /// Where a resolved message really goes: a half message to the half
    /// topic, a delayed one to the schedule topic. Called before
    /// [`Self::enqueue`]; inside a send handler an error must be returned
    /// (its reply slot is not filled yet), elsewhere it fails the responder.
    fn park(&self, p: &mut Pending) -> Result<(), ServiceError> {
        self.park_if_half(p)?;
        self.park_if_delayed(p)
    }

    fn enqueue(&mut self, mut p: Pending, arrival: Instant, ctx: &mut Context<Self>) {
        p.arrival = Some(arrival);
        let (msgs, bytes) = (p.parts.len(), p.bytes());
        if self.buffer.messages() + msgs > self.config.max_batch_messages {
            // A full batch is waiting: append it now rather than at the end
            // of the pass, so a mailbox that never runs dry cannot starve
            // the drain (bounded latency and memory). Only requests whose
            // handlers returned are drained (their reply slots are filled).
            self.drain(ctx);
        }
        self.buffer.push(arrival, msgs, bytes, p);
        if !self.drain_scheduled {
            self.drain_scheduled = true;
            // Runs after the mailbox is polled empty: one drain per pass.
            ctx.notify(Drain);
        }
    }

    fn drain(&mut self, ctx: &mut Context<Self>) {
        for p in self
            .buffer
            .take_expired(Instant::now(), self.config.max_wait)
        {
            self.stats.refused_busy += 1;
            p.responder.fail(ServiceError::busy(format!(
                "[TIMEOUT_CLEAN_QUEUE] broker busy: the send waited more than {} ms",
                self.config.max_wait.as_millis()
            )));
        }
        let mut appended_any = false;
        while !self.buffer.is_empty() {
            let batch = self
                .buffer
                .take_batch(self.config.max_batch_messages, self.config.max_batch_bytes);
            appended_any |= self.append(batch);
        }
        if appended_any && self.dispatcher.is_some() {
            let now = Instant::now();
            match self.nudges.on_append(now, self.config.nudge_interval) {
                Nudge::Now => self.nudge(),
                Nudge::At(at) => {
                    ctx.run_later(at.saturating_duration_since(now), |act, _| {
                        act.nudges.fired(Instant::now());
                        act.nudge();
                    });
                }
                Nudge::Pending => {}
            }
        }
    }

    fn nudge(&self) {
        if let Some(d) = &self.dispatcher {
            d.do_send(LogAppended);
        }
    }

    /// Judges the idempotent sends of `batch` ([`super::dedup`]):
    /// duplicates of stored sends are answered here, sends below the
    /// window refused; returns the sends to append and the duplicates of
    /// sends in this very batch (answered after its append).
    fn screen(&mut self, batch: Vec<Pending>) -> (Vec<Pending>, Vec<Pending>) {
        let mut keep = Vec::with_capacity(batch.len());
        let mut held = Vec::new();
        let mut claimed = std::collections::HashSet::new();
        for p in batch {
            let Some(tag) = &p.dedup else {
                keep.push(p);
                continue;
            };
            match self.dedup.check(tag) {
                Verdict::New => {
                    if claimed.insert(tag.clone()) {
                        keep.push(p);
                    } else {
                        held.push(p);
                    }
                }
                Verdict::Duplicate(original) => self.answer_duplicate(p, &original),
                Verdict::OutOfWindow { floor } => {
                    self.stats.out_of_window += 1;
                    let err = dedup::out_of_window(tag, floor);
                    p.responder.fail(err);
                }
            }
        }
        (keep, held)
    }

    /// Answers a duplicate with its original's reply: at once, or in sync
    /// flush mode once the original is on disk (as the original was).
    fn answer_duplicate(&mut self, p: Pending, original: &Original) {
        self.stats.duplicates += 1;
        let appended = original.appended();
        let (answer, queue) = (p.responder.take(), p.reply_queue);
        let store_host = self.config.store_host;
        if self.sync_flush {
            self.store.on_flushed(
                original.end_offset,
                Box::new(move |outcome| {
                    answer.succeed(store_host, &appended, queue, flush_code(outcome));
                }),
            );
        } else {
            answer.succeed(store_host, &appended, queue, ResponseCode::Success);
        }
    }

    /// Writes the dedup table if it changed (every
    /// [`DedupConfig::snapshot_interval`]): as of the end of the log, since
    /// every append is in the table when this runs.
    fn snapshot_dedup(&mut self, ctx: &mut Context<Self>) {
        let Some(state) = &self.dedup_state else {
            return;
        };
        if !self.dedup.is_dirty() {
            return;
        }
        let snap = self.dedup.snapshot(self.store.commit_log_max_offset());
        let write = state.persist(&snap);
        let logger = self.logger.clone();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |res, act, _| {
                if let Err(e) = res {
                    // Exact anyway: a restart scans the log from the last
                    // good snapshot. Try again next time.
                    error!(logger, "cannot persist the dedup window"; "error" => %e);
                    act.dedup.mark_dirty();
                }
            }),
        );
    }

    /// One store append for `batch`; returns whether anything was stored.
    fn append(&mut self, batch: Vec<Pending>) -> bool {
        // Only a batch holding an idempotent send looks at the table.
        let (batch, held) = if batch.iter().any(|p| p.dedup.is_some()) {
            self.screen(batch)
        } else {
            (batch, Vec::new())
        };
        if batch.is_empty() {
            return false;
        }
        if let Some((ha, _)) = &self.ha
            && !ha.role().is_master()
        {
            self.stats.refused_slave += batch.len() as u64;
            let err = ServiceError::new(
                ResponseCode::ServiceNotAvailable,
                "this broker is a slave (no write permission): send to its master",
            );
            for p in batch.into_iter().chain(held) {
                p.responder.fail(err.clone());
            }
            return false;
        }
        let store_host = Some(self.config.store_host);
        // Sized up front: a flat map does not know its length, and growing
        // a vector of thousands of messages copies it again and again.
        let mut msgs: Vec<AppendMessage<'_>> =
            Vec::with_capacity(batch.iter().map(|p| p.parts.len()).sum());
        msgs.extend(batch.iter().flat_map(|p| {
            p.parts.iter().map(move |m| AppendMessage {
                topic: &p.topic,
                queue_id: p.queue_id,
                body: &p.body[m.body.clone()],
                properties: &p.props[m.props.clone()],
                tag_hash: m.tag_hash,
                flags: m.flags,
                born_timestamp_ms: p.born_timestamp_ms,
                born_host: p.born_host,
                store_host,
                reconsume_times: p.reconsume_times,
                prepared_tx_offset: 0,
            })
        }));
        self.appended.clear();
        let res = self.store.append_into(&msgs, &mut self.appended);
        let count = msgs.len();
        drop(msgs);
        let end = match res {
            Ok(end) => end,
            Err(e) => {
                error!(self.logger, "append failed"; "error" => %e, "requests" => batch.len());
                let err = store_error(e);
                self.stats.store_errors += batch.len() as u64;
                for p in batch.into_iter().chain(held) {
                    p.responder.fail(err.clone());
                }
                return false;
            }
        };
        self.stats.appends += 1;
        self.stats.messages += count as u64;
        self.stats.largest_append_requests =
            self.stats.largest_append_requests.max(batch.len() as u64);
        if let Some(m) = &self.metrics {
            count_stored(m, &mut self.stored_counters, &batch);
        }
        let store_host = self.config.store_host;
        let mut done = Vec::with_capacity(batch.len());
        let mut at = 0;
        for p in batch {
            let n = p.parts.len();
            let slots: Vec<Appended> = self.appended[at..at + n].to_vec();
            at += n;
            if let Some(tag) = p.dedup {
                self.dedup.record(tag, Original::of(&slots));
            }
            done.push((p.responder.take(), p.reply_queue, slots, p.arrival));
        }
        // Copies of a send appended just now get its reply.
        for p in held {
            let verdict = p.dedup.as_ref().map(|t| self.dedup.check(t));
            match verdict {
                Some(Verdict::Duplicate(original)) => self.answer_duplicate(p, &original),
                _ => p.responder.fail(ServiceError::new(
                    ResponseCode::SystemError,
                    "the original of this duplicate was not recorded",
                )),
            }
        }
        let sync_slave = match &self.ha {
            Some((ha, timeout)) => {
                ha.log_grew();
                (ha.role() == HaRole::SyncMaster).then(|| (Arc::clone(ha), *timeout))
            }
            None => None,
        };
        let requests = done.len() as u64;
        let metrics = self.metrics.clone();
        let reply = move |code: ResponseCode| {
            let now = Instant::now();
            for (r, q, slots, arrival) in done {
                r.succeed(store_host, &slots, q, code);
                if let (Some(m), Some(at)) = (&metrics, arrival) {
                    m.put_latency(now.saturating_duration_since(at).as_secs_f64());
                }
            }
        };
        // A sync master answers once a slave has the bytes: right after the
        // append, or (sync flush too) after the flush.
        let replicate = move |code: ResponseCode| match sync_slave {
            Some((ha, timeout)) if code == ResponseCode::Success => {
                ha.wait_replicated(end, timeout, Box::new(reply));
            }
            _ => reply(code),
        };
        if self.sync_flush {
            let timeouts = Arc::clone(&self.flush_timeouts);
            let logger = self.logger.clone();
            self.store.on_flushed(
                end,
                Box::new(move |outcome| {
                    let code = flush_code(outcome);
                    if code != ResponseCode::Success {
                        timeouts.fetch_add(requests, Ordering::Relaxed);
                        warn!(logger, "sync flush did not complete"; "outcome" => ?outcome, "end_offset" => end);
                    }
                    replicate(code);
                }),
            );
        } else {
            replicate(ResponseCode::Success);
        }
        true
    }
}

impl Actor for CommitLogActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Sends from every session land here: a deep mailbox is what lets
        // big batches form (flow control bounds the wait).
        ctx.set_mailbox_capacity(self.config.mailbox_capacity);
        if self.dedup_state.is_some() {
            let every = self
                .config
                .dedup
                .snapshot_interval
                .max(Duration::from_millis(10));
            ctx.run_interval(every, |act, ctx| act.snapshot_dedup(ctx));
        }
    }
}

impl Guarded for CommitLogActor {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<Call<SendMessageRequest>> for CommitLogActor {
    type Result = GuardedReply<SendReply<SendMessageResponse>>;

    fn handle(&mut self, call: Call<SendMessageRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            // Measured from the session's decode, so mailbox time counts.
            let arrival = call.received_at.unwrap_or_else(Instant::now);
            let (responder, reply) = Responder::single();
            match act
                .prepare_single(call, responder)
                .and_then(|p| act.admit(p, arrival, ctx))
            {
                Ok(()) => reply,
                Err(e) => SendReply::now(Err(e)),
            }
        })
    }
}

impl Handler<Call<SendBatchMessageRequest>> for CommitLogActor {
    type Result = GuardedReply<SendReply<SendBatchMessageResponse>>;

    fn handle(
        &mut self,
        call: Call<SendBatchMessageRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            // Measured from the session's decode, so mailbox time counts.
            let arrival = call.received_at.unwrap_or_else(Instant::now);
            let (responder, reply) = Responder::batch();
            match act
                .prepare_batch(call, responder)
                .and_then(|p| act.admit(p, arrival, ctx))
            {
                Ok(()) => reply,
                Err(e) => SendReply::now(Err(e)),
            }
        })
    }
}

impl Handler<PutInternal> for CommitLogActor {
    type Result = GuardedReply<ResponseFuture<Vec<Result<Appended, ServiceError>>>>;

    fn handle(&mut self, put: PutInternal, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            let mut answers = Vec::with_capacity(put.messages.len());
            let mut pending = Vec::with_capacity(put.messages.len());
            for m in put.messages {
                let (tx, rx) = tokio::sync::oneshot::channel();
                answers.push(rx);
                let part = match act.part(
                    &m.topic,
                    0..m.body.len(),
                    0..m.properties.len(),
                    None,
                    m.flags,
                ) {
                    Ok(mut part) => {
                        part.tag_hash = m.tag_hash;
                        part
                    }
                    Err(e) => {
                        drop(tx.send(Err(e)));
                        continue;
                    }
                };
                let p = Pending {
                    arrival: None,
                    topic: m.topic,
                    queue_id: m.queue_id,
                    reply_queue: m.queue_id,
                    delay_level: m.delay_level,
                    deliver_at_ms: None,
                    born_timestamp_ms: m.born_timestamp_ms,
                    born_host: m.born_host,
                    reconsume_times: m.reconsume_times,
                    body: m.body,
                    props: m.properties,
                    parts: vec![part],
                    responder: Responder::Internal(tx),
                    dedup: None,
                };
                pending.push(p);
            }
            // Topics to resolve (create) first: once, before any of the
            // messages is admitted, so they are stored in the order given.
            let snapshot = act.topics.snapshot();
            let mut missing: Vec<String> = pending
                .iter()
                .filter(|p| {
                    snapshot.get(&p.topic).is_none_or(|cfg| {
                        put.create_as
                            .as_ref()
                            .is_some_and(|want| cfg.write_queue_nums < want.write_queue_nums)
                    })
                })
                .map(|p| p.topic.clone())
                .collect();
            missing.sort();
            missing.dedup();
            let create_as = put.create_as;
            if missing.is_empty() {
                for p in pending {
                    act.admit_internal(p, create_as.clone(), ctx);
                }
            } else {
                let asks = missing.into_iter().map(|topic| {
                    act.topic_manager.send(ResolveTopic {
                        topic,
                        create_as: create_as.clone(),
                    })
                });
                let resolved = futures_util::future::join_all(asks);
                ctx.spawn(
                    actix::fut::wrap_future::<_, Self>(resolved).map(move |_, act, ctx| {
                        // A topic that could not be resolved fails its
                        // messages in `admit_internal` (it asks again).
                        for p in pending {
                            act.admit_internal(p, create_as.clone(), ctx);
                        }
                    }),
                );
            }
            Box::pin(async move {
                let mut out = Vec::with_capacity(answers.len());
                for rx in answers {
                    out.push(rx.await.unwrap_or_else(|_| {
                        Err(ServiceError::new(
                            ResponseCode::SystemError,
                            "the commit log dropped the message (restarting)",
                        ))
                    }));
                }
                out
            }) as ResponseFuture<_>
        })
    }
}

impl Handler<Drain> for CommitLogActor {
    type Result = GuardedReply<()>;
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            act.drain_scheduled = false;
            act.drain(ctx);
        })
    }
}

impl Handler<GetCommitLogStats> for CommitLogActor {
    type Result = GuardedReply<MessageResult<GetCommitLogStats>>;
    fn handle(&mut self, _: GetCommitLogStats, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let mut s = act.stats;
            s.flush_timeouts = act.flush_timeouts.load(Ordering::Relaxed);
            s.dedup_evicted = act.dedup.evicted();
            MessageResult(s)
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for CommitLogActor {
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

    #[test]
    fn a_delayed_message_parks_in_its_level_queue_until_due() {
        let levels = DEFAULT_DELAY_LEVELS_MS;
        assert_eq!(park(&levels, 0, 1_000), None);
        assert_eq!(
            park(&levels, 1, 1_000),
            Some(Parking {
                queue_id: 0,
                due_ms: 2_000
            })
        );
        assert_eq!(park(&levels, 3, 0).unwrap().due_ms, 10_000);
        // Above the max means the max.
        assert_eq!(
            park(&levels, 200, 0),
            Some(Parking {
                queue_id: 17,
                due_ms: 7_200_000
            })
        );
        assert_eq!(park(&[], 3, 0), None);
    }

    use super::*;

    #[test]
    fn nudges_at_once_after_quiet_then_at_most_once_per_interval() {
        let i = Duration::from_millis(1);
        let t = Instant::now();
        let mut n = NudgeThrottle::default();
        assert_eq!(n.on_append(t, i), Nudge::Now);
        let soon = t + Duration::from_micros(100);
        assert_eq!(n.on_append(soon, i), Nudge::At(t + i));
        assert_eq!(n.on_append(soon, i), Nudge::Pending);
        assert_eq!(n.on_append(t + i * 5, i), Nudge::Pending);
        n.fired(t + i);
        // Right after the deferred nudge: deferred again.
        assert_eq!(
            n.on_append(t + i + Duration::from_micros(10), i),
            Nudge::At(t + i * 2)
        );
        n.fired(t + i * 2);
        // A quiet spell: at once.
        assert_eq!(n.on_append(t + i * 10, i), Nudge::Now);
        // No interval: every append nudges.
        let mut n = NudgeThrottle::default();
        for _ in 0..3 {
            assert_eq!(n.on_append(t, Duration::ZERO), Nudge::Now);
        }
    }

    #[test]
    fn buffer_reports_first_push_and_cuts_batches() {
        let mut b = SendBuffer::default();
        let t = Instant::now();
        assert!(b.push(t, 1, 10, 'a'));
        assert!(!b.push(t, 3, 10, 'b'));
        assert!(!b.push(t, 1, 10, 'c'));
        assert_eq!(b.messages(), 5);
        assert_eq!(b.take_batch(4, 1000), vec!['a', 'b']);
        assert_eq!(b.messages(), 1);
        assert_eq!(b.take_batch(4, 1000), vec!['c']);
        assert!(b.is_empty());
        // At least one request even past the limits.
        b.push(t, 10, 10_000, 'd');
        assert_eq!(b.take_batch(1, 1), vec!['d']);
        b.push(t, 1, 600, 'e');
        b.push(t, 1, 600, 'f');
        assert_eq!(b.take_batch(100, 1000), vec!['e']);
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn buffer_expires_by_arrival() {
        let mut b = SendBuffer::default();
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(150);
        b.push(t0, 1, 1, 1);
        b.push(t1, 1, 1, 2);
        b.push(t0, 1, 1, 3);
        let now = t0 + Duration::from_millis(250);
        assert_eq!(b.take_expired(now, Duration::from_millis(200)), vec![1, 3]);
        assert_eq!(b.messages(), 1);
        assert_eq!(b.take_batch(10, 10), vec![2]);
        // Exactly max_wait is still fine; zero tolerance refuses any wait.
        b.push(t0, 1, 1, 4);
        assert!(
            b.take_expired(t0 + Duration::from_millis(200), Duration::from_millis(200))
                .is_empty()
        );
        assert_eq!(
            b.take_expired(t0 + Duration::from_nanos(1), Duration::ZERO),
            vec![4]
        );
    }

    #[test]
    fn flush_codes() {
        assert_eq!(flush_code(FlushOutcome::Flushed), ResponseCode::Success);
        assert_eq!(
            flush_code(FlushOutcome::Timeout),
            ResponseCode::FlushDiskTimeout
        );
        assert_eq!(
            flush_code(FlushOutcome::Failed),
            ResponseCode::FlushDiskTimeout
        );
    }
}

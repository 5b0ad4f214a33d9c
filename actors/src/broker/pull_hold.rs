//! `PullHold`: serves `PULL_MESSAGE` ([`PullMessageRequest`]) and holds
//! pulls that find nothing new (long polling).
//!
//! A pull reads the consume queue through
//! [`Store::get_messages`](actormq_store::Store::get_messages) (lock-free;
//! message bodies are views of the mapped segments), filtered by the
//! request's subscription, compiled once ([`FilterCache`],
//! [`actormq_protocol::filter`]): a tag expression (`"TagA || TagB"`,
//! `*` = all) by the consume queue's tag hashes, a SQL92 expression by
//! evaluating it on each record read (only SQL92 subscriptions pay for
//! that). A bad expression is refused with `SUBSCRIPTION_PARSE_FAILED`,
//! SQL92 with `enable_property_filter = false` with `SYSTEM_ERROR` (as
//! RocketMQ does). The
//! store status maps to a response code exactly as RocketMQ's
//! `PullMessageProcessor` maps `GetMessageStatus` ([`pull_code`]). Found
//! messages travel in the reply body as a stored-message batch
//! ([`actormq_protocol::batch`]), with `next_begin_offset`, `min_offset`
//! and `max_offset` in the fields; the other statuses are replies under
//! their code (`PULL_NOT_FOUND`, `PULL_OFFSET_MOVED`,
//! `PULL_RETRY_IMMEDIATELY`) carrying the same fields.
//!
//! A `PULL_NOT_FOUND` with `suspend_timeout_ms > 0` (and long polling on)
//! is **held**, keyed by topic and queue, for
//! `min(suspend_timeout_ms, long_polling_max)` (default max 15 s). The
//! [`super::Dispatcher`]'s [`MessagesStored`] event for that queue wakes it
//! and it is answered at once; a held pull that sees only messages its
//! filter rejects keeps waiting at the advanced offset. At its deadline it
//! is answered with whatever a pull finds then (normally
//! `PULL_NOT_FOUND`). At most [`PullHoldConfig::max_held`] pulls are held;
//! beyond that a pull is refused with `POLLING_FULL`.
//!
//! The bookkeeping is [`HoldTable`], a plain struct tested without a runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::filter::{self, Filter, FilterError};
use actormq_protocol::request::{
    PullMessageRequest, PullMessageResponse, UpdateConsumerOffsetRequest,
};
use actormq_store::GetStatus;
use bytes::Bytes;
use slog::{Logger, debug, o};
use tokio::sync::oneshot;

use actormq_protocol::records::encode_records;

use super::broker_store::BrokerStore;
use super::dispatcher::MessagesStored;
use super::error_map::filter_error;
use super::stored_codec::{encode_views, filter_property};
use super::topic_manager::TopicView;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Settings of the [`PullHold`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullHoldConfig {
    /// Hold pulls that find nothing (long polling). Default: true.
    pub long_polling_enabled: bool,
    /// Longest a pull is held, whatever it asks. Default: 15 s.
    pub long_polling_max: Duration,
    /// Most pulls held at once; beyond, `POLLING_FULL`. Default: 10 000.
    pub max_held: usize,
    /// How often held pulls are checked for their deadline. Default: 50 ms.
    pub check_interval: Duration,
    /// Most messages in one pull reply. Default: 256.
    pub max_pull_messages: usize,
    /// About the most bytes in one pull reply (at least one message).
    /// Default: 1 MiB.
    pub max_pull_bytes: usize,
    /// SQL92 subscriptions accepted (`enable_property_filter`). Default:
    /// true.
    pub property_filter: bool,
    /// Suggest the slave (broker id 1) to a pull whose first message lies
    /// more than this many bytes behind the end of the commit log
    /// (`slave_read_enable`); `None`: always the master. Default: `None`.
    pub suggest_slave_behind_bytes: Option<u64>,
}

impl Default for PullHoldConfig {
    fn default() -> Self {
        Self {
            long_polling_enabled: true,
            long_polling_max: Duration::from_secs(15),
            max_held: 10_000,
            check_interval: Duration::from_millis(50),
            max_pull_messages: 256,
            max_pull_bytes: 1 << 20,
            property_filter: true,
            suggest_slave_behind_bytes: None,
        }
    }
}

/// Compiles a pull's or heartbeat's subscription
/// ([`actormq_protocol::filter`]: the one tag grammar, and SQL92). With
/// `sql_enabled` false (`enable_property_filter = false`) a SQL92
/// subscription is refused, as RocketMQ refuses it without
/// `enablePropertyFilter`. The error is mapped by
/// [`super::error_map::filter_error`].
pub fn compile_filter(
    subscription: Option<&str>,
    expression_type: Option<&str>,
    sql_enabled: bool,
) -> Result<Filter, FilterError> {
    if !sql_enabled && filter::is_sql92(expression_type)? {
        return Err(FilterError::SqlDisabled);
    }
    Filter::compile(subscription, expression_type)
}

/// Compiled filters by expression type and text, so that a consumer's
/// subscription is compiled once, not on every pull. Bounded: when
/// full it starts over (a consumer's next pull compiles again).
#[derive(Debug)]
pub struct FilterCache {
    sql_enabled: bool,
    cap: usize,
    /// Tag filters and SQL92 filters by expression.
    maps: [HashMap<String, Arc<Filter>>; 2],
}

impl FilterCache {
    /// An empty cache of at most `cap` filters.
    pub fn new(sql_enabled: bool, cap: usize) -> Self {
        Self {
            sql_enabled,
            cap: cap.max(1),
            maps: [HashMap::new(), HashMap::new()],
        }
    }

    /// The compiled filter of a subscription ([`compile_filter`]).
    pub fn get(
        &mut self,
        subscription: Option<&str>,
        expression_type: Option<&str>,
    ) -> Result<Arc<Filter>, FilterError> {
        let sql = filter::is_sql92(expression_type)?;
        let text = subscription.unwrap_or("");
        // A hit allocates nothing; the key is built only on a miss.
        if let Some(f) = self.maps[usize::from(sql)].get(text) {
            return Ok(f.clone());
        }
        let f = Arc::new(compile_filter(
            subscription,
            expression_type,
            self.sql_enabled,
        )?);
        if self.len() >= self.cap {
            self.maps.iter_mut().for_each(HashMap::clear);
        }
        self.maps[usize::from(sql)].insert(text.to_string(), f.clone());
        Ok(f)
    }

    /// Filters held.
    pub fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    /// Whether no filter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// RocketMQ's `GetMessageStatus` → response code mapping
/// (`PullMessageProcessor`), and whether a pull with that result may be
/// held for long polling.
///
/// - `FOUND` → `SUCCESS`;
/// - `NO_MATCHED_MESSAGE` → `PULL_RETRY_IMMEDIATELY`;
/// - `NO_MATCHED_LOGIC_QUEUE` / `NO_MESSAGE_IN_QUEUE` → `PULL_OFFSET_MOVED`
///   unless the pull asked offset 0 (then `PULL_NOT_FOUND`, holdable); an
///   emptied queue asked exactly at its max offset is treated as
///   `OFFSET_OVERFLOW_ONE`;
/// - `OFFSET_OVERFLOW_ONE` → `PULL_NOT_FOUND` (holdable: the normal "caught
///   up" case);
/// - `OFFSET_FOUND_NULL` → `PULL_NOT_FOUND` (not held: the records were
///   removed, the consumer moves on at `next_begin_offset`);
/// - `OFFSET_OVERFLOW_BADLY` / `OFFSET_TOO_SMALL` → `PULL_OFFSET_MOVED`.
pub fn pull_code(status: GetStatus, offset: u64, max_offset: u64) -> (ResponseCode, bool) {
    match status {
        GetStatus::Found => (ResponseCode::Success, false),
        GetStatus::NoMatchedMessage => (ResponseCode::PullRetryImmediately, false),
        GetStatus::NoMatchedQueue | GetStatus::NoMessageInQueue => {
            let at_end = status == GetStatus::NoMessageInQueue && offset == max_offset;
            if offset == 0 || at_end {
                (ResponseCode::PullNotFound, true)
            } else {
                (ResponseCode::PullOffsetMoved, false)
            }
        }
        GetStatus::OffsetOverflowOne => (ResponseCode::PullNotFound, true),
        GetStatus::OffsetFoundNull => (ResponseCode::PullNotFound, false),
        GetStatus::OffsetOverflowBadly | GetStatus::OffsetTooSmall => {
            (ResponseCode::PullOffsetMoved, false)
        }
    }
}

/// Held pulls by topic and queue, each waiting for its queue to pass an
/// offset or for its deadline. Plain data; bounded.
#[derive(Debug)]
pub struct HoldTable<T> {
    queues: HashMap<String, HashMap<u32, Vec<Slot<T>>>>,
    len: usize,
    cap: usize,
}

#[derive(Debug)]
struct Slot<T> {
    offset: u64,
    deadline: Instant,
    item: T,
}

impl<T> HoldTable<T> {
    /// An empty table holding at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            queues: HashMap::new(),
            len: 0,
            cap,
        }
    }

    /// Items held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds `item` until (topic, queue) has a message at `offset` or
    /// `deadline` passes. Gives the item back when the table is full.
    pub fn hold(
        &mut self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        deadline: Instant,
        item: T,
    ) -> Result<(), T> {
        if self.len >= self.cap {
            return Err(item);
        }
        let per_topic = match self.queues.get_mut(topic) {
            Some(q) => q,
            None => self.queues.entry(topic.to_owned()).or_default(),
        };
        per_topic.entry(queue_id).or_default().push(Slot {
            offset,
            deadline,
            item,
        });
        self.len += 1;
        Ok(())
    }

    /// Removes and returns `(deadline, item)` of the pulls on (topic,
    /// queue) that a queue now ending at `max_offset` satisfies (their
    /// offset is below it), oldest first.
    pub fn take_ready(&mut self, topic: &str, queue_id: u32, max_offset: u64) -> Vec<(Instant, T)> {
        let Some(per_topic) = self.queues.get_mut(topic) else {
            return Vec::new();
        };
        let Some(slots) = per_topic.get_mut(&queue_id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut kept = Vec::new();
        for s in slots.drain(..) {
            if s.offset < max_offset {
                out.push((s.deadline, s.item));
            } else {
                kept.push(s);
            }
        }
        *slots = kept;
        if slots.is_empty() {
            per_topic.remove(&queue_id);
            if per_topic.is_empty() {
                self.queues.remove(topic);
            }
        }
        self.len -= out.len();
        out
    }

    /// Removes and returns the items whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<T> {
        let mut out = Vec::new();
        for per_topic in self.queues.values_mut() {
            for slots in per_topic.values_mut() {
                if slots.iter().any(|s| s.deadline <= now) {
                    let mut kept = Vec::with_capacity(slots.len());
                    for s in slots.drain(..) {
                        if s.deadline <= now {
                            out.push(s.item);
                        } else {
                            kept.push(s);
                        }
                    }
                    *slots = kept;
                }
            }
            per_topic.retain(|_, s| !s.is_empty());
        }
        self.queues.retain(|_, q| !q.is_empty());
        self.len -= out.len();
        out
    }
}

/// Counters of the [`PullHold`] ([`GetPullStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Pull requests received.
    pub pulls: u64,
    /// Pulls held (long polling), ever.
    pub held: u64,
    /// Pulls held right now.
    pub holding: u64,
    /// Held pulls answered because a message arrived.
    pub woken: u64,
    /// Held pulls answered at their deadline.
    pub expired: u64,
    /// Pulls refused with `POLLING_FULL`.
    pub polling_full: u64,
}

/// Ask the [`PullHold`] for its counters.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "PullStats")]
pub struct GetPullStats;

type Tx = oneshot::Sender<Result<Reply<PullMessageResponse>, ServiceError>>;

struct Held {
    req: PullMessageRequest,
    filter: Arc<Filter>,
    tx: Tx,
}

/// The pull handler and long-polling holder. See the module docs.
pub struct PullHold {
    store: BrokerStore,
    topics: TopicView,
    config: PullHoldConfig,
    table: HoldTable<Held>,
    filters: FilterCache,
    stats: PullStats,
    offsets: Option<Recipient<Call<UpdateConsumerOffsetRequest>>>,
    metrics: Option<std::sync::Arc<super::metrics::BrokerMetrics>>,
    logger: Logger,
    poison: Poison,
}

impl PullHold {
    /// A pull handler over `store`; topic configs from `topics`. Subscribe
    /// it to the dispatcher's events
    /// (`dispatcher.do_send(SubscribeStored(pull_hold.recipient()))`) so
    /// held pulls wake up.
    pub fn new(
        store: BrokerStore,
        topics: TopicView,
        config: PullHoldConfig,
        logger: &Logger,
    ) -> Self {
        let (cap, sql) = (config.max_held, config.property_filter);
        /// Compiled subscriptions kept (distinct expressions).
        const FILTER_CACHE_CAP: usize = 4096;
        Self {
            store,
            topics,
            config,
            table: HoldTable::new(cap),
            filters: FilterCache::new(sql, FILTER_CACHE_CAP),
            stats: PullStats::default(),
            offsets: None,
            metrics: None,
            logger: logger.new(o!("actor" => "PullHold")),
            poison: Poison::default(),
        }
    }

    /// Counts the messages each pull delivers in `metrics` (builder style).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<super::metrics::BrokerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Forwards the `commit_offset` a pull carries to `offsets` (the
    /// [`super::OffsetManager`]), as RocketMQ commits the consumer's
    /// progress piggybacked on its pulls (builder style).
    pub fn with_offset_manager(
        mut self,
        offsets: Recipient<Call<UpdateConsumerOffsetRequest>>,
    ) -> Self {
        self.offsets = Some(offsets);
        self
    }

    fn commit_offset(&self, req: &PullMessageRequest) {
        if let (Some(offset), Some(to)) = (req.commit_offset, &self.offsets) {
            to.do_send(Call::new(UpdateConsumerOffsetRequest {
                consumer_group: req.consumer_group.clone(),
                topic: req.topic.clone(),
                queue_id: req.queue_id,
                commit_offset: offset,
            }));
        }
    }

    fn check_topic(&self, req: &PullMessageRequest) -> Result<(), ServiceError> {
        let snapshot = self.topics.snapshot();
        let Some(cfg) = snapshot.get(&req.topic) else {
            return Err(ServiceError::topic_not_exist(&req.topic));
        };
        if !cfg.perm.is_readable() {
            return Err(ServiceError::new(
                ResponseCode::NoPermission,
                format!("topic {} is not readable", req.topic),
            ));
        }
        if req.queue_id >= cfg.read_queue_nums {
            return Err(ServiceError::new(
                ResponseCode::InvalidParameter,
                format!(
                    "queue {} out of range: topic {} has {} read queues",
                    req.queue_id, req.topic, cfg.read_queue_nums
                ),
            ));
        }
        Ok(())
    }

    /// Reads once; the reply and whether it may be held.
    fn execute(
        &self,
        req: &PullMessageRequest,
        filter: &Filter,
    ) -> (Reply<PullMessageResponse>, bool) {
        let max_count = (req.max_msg_nums as usize).clamp(1, self.config.max_pull_messages.max(1));
        // Tags: the consume queue's tag hashes (no record read for a
        // mismatch). SQL92: each record read is evaluated on its
        // properties, and the reply keeps the matching ones.
        let mut r = self.store.get_messages(
            &req.topic,
            req.queue_id,
            req.queue_offset,
            max_count,
            self.config.max_pull_bytes,
            filter.tag_codes(),
        );
        if let Some(sql) = filter.sql() {
            r.messages
                .retain(|m| sql.matches(|k| filter_property(m, k)));
            if r.status == GetStatus::Found && r.messages.is_empty() {
                r.status = GetStatus::NoMatchedMessage;
            }
        }
        let (code, holdable) = pull_code(r.status, req.queue_offset, r.max_offset);
        if let Some(m) = &self.metrics
            && r.status == GetStatus::Found
            && !r.messages.is_empty()
        {
            m.delivered(&req.topic, &req.consumer_group, r.messages.len() as u64);
        }
        let fields = PullMessageResponse {
            next_begin_offset: r.next_begin_offset,
            min_offset: r.min_offset,
            max_offset: r.max_offset,
            suggest_which_broker_id: self.suggest(&r.messages),
            records: req.records,
        };
        let body = if r.status != GetStatus::Found {
            Bytes::new()
        } else if req.records {
            // The records as stored: one copy, mapped segment -> reply.
            encode_records(r.messages.iter().map(|m| &m.record()[..]))
        } else {
            encode_views(&r.messages)
        };
        (Reply::with_body(fields, body).with_code(code), holdable)
    }

    /// Which broker the next pulls of a queue should go to (RocketMQ's
    /// `suggestWhichBrokerId`): the slave (1) while the messages read lie
    /// further behind the end of the log than memory keeps them, else the
    /// master (0). A slave answers the same way about its own log.
    fn suggest(&self, read: &[actormq_store::MessageView]) -> u64 {
        let (Some(limit), Some(first)) = (self.config.suggest_slave_behind_bytes, read.first())
        else {
            return 0;
        };
        let behind = self
            .store
            .commit_log_max_offset()
            .saturating_sub(first.header().physical_offset);
        u64::from(behind > limit)
    }

    fn hold_for(&self, req: &PullMessageRequest) -> Option<Duration> {
        (self.config.long_polling_enabled && req.suspend_timeout_ms > 0).then(|| {
            Duration::from_millis(req.suspend_timeout_ms).min(self.config.long_polling_max)
        })
    }

    fn on_stored(&mut self, ev: &MessagesStored) {
        let ready = self.table.take_ready(&ev.topic, ev.queue_id, ev.max_offset);
        for (deadline, mut h) in ready {
            if h.tx.is_closed() {
                continue;
            }
            let (reply, _) = self.execute(&h.req, &h.filter);
            if reply.code == ResponseCode::PullRetryImmediately && Instant::now() < deadline {
                // Only messages the filter rejects: keep waiting past them.
                h.req.queue_offset = reply.fields.next_begin_offset;
                let (t, q, o) = (h.req.topic.clone(), h.req.queue_id, h.req.queue_offset);
                if let Err(h) = self.table.hold(&t, q, o, deadline, h) {
                    drop(h.tx.send(Ok(reply)));
                }
                continue;
            }
            self.stats.woken += 1;
            debug!(self.logger, "held pull woken"; "topic" => &h.req.topic,
                "queue" => h.req.queue_id, "code" => ?reply.code);
            drop(h.tx.send(Ok(reply)));
        }
    }

    fn expire(&mut self) {
        if self.table.is_empty() {
            return;
        }
        for h in self.table.take_expired(Instant::now()) {
            self.stats.expired += 1;
            if h.tx.is_closed() {
                continue;
            }
            let (reply, _) = self.execute(&h.req, &h.filter);
            drop(h.tx.send(Ok(reply)));
        }
    }
}

impl Actor for PullHold {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.check_interval, |act, ctx| {
            let _ = guarded(act, ctx, |act, _| act.expire());
        });
    }
}

// Every handler (and the expiry timer) runs through `guarded`: a panic
// poisons the instance, the messages queued behind it are refused (their
// callers get an error), the pulls it held are answered
// SERVICE_NOT_AVAILABLE as it is dropped, and the supervisor starts a new
// one (consumers pull again).
impl Guarded for PullHold {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for PullHold {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

type PullResult = Result<Reply<PullMessageResponse>, ServiceError>;

impl Handler<Call<PullMessageRequest>> for PullHold {
    type Result = GuardedReply<ResponseFuture<PullResult>>;

    fn handle(&mut self, call: Call<PullMessageRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.pull(call))
    }
}

impl PullHold {
    fn pull(&mut self, call: Call<PullMessageRequest>) -> ResponseFuture<PullResult> {
        self.stats.pulls += 1;
        let req = call.req;
        let ready =
            |r: PullResult| -> ResponseFuture<PullResult> { Box::pin(std::future::ready(r)) };
        if let Err(e) = actormq_protocol::validate_topic(&req.topic) {
            return ready(Err(e.into()));
        }
        if let Err(e) = self.check_topic(&req) {
            return ready(Err(e));
        }
        self.commit_offset(&req);
        let filter = match self
            .filters
            .get(req.subscription.as_deref(), req.expression_type.as_deref())
        {
            Ok(f) => f,
            Err(e) => return ready(Err(filter_error(e))),
        };
        let (reply, holdable) = self.execute(&req, &filter);
        let hold_for = self.hold_for(&req);
        let (true, Some(hold_for)) = (holdable, hold_for) else {
            return ready(Ok(reply));
        };
        let (tx, rx) = oneshot::channel();
        let (topic, queue_id, offset) = (req.topic.clone(), req.queue_id, req.queue_offset);
        let held = Held { req, filter, tx };
        match self
            .table
            .hold(&topic, queue_id, offset, Instant::now() + hold_for, held)
        {
            Ok(()) => {
                self.stats.held += 1;
                debug!(self.logger, "pull held"; "topic" => &topic, "queue" => queue_id, "offset" => offset);
            }
            Err(_) => {
                self.stats.polling_full += 1;
                return ready(Err(ServiceError::new(
                    ResponseCode::PollingFull,
                    format!("too many held pulls ({})", self.config.max_held),
                )));
            }
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ServiceError::new(
                    ResponseCode::ServiceNotAvailable,
                    "pull holder stopped before answering",
                ))
            })
        })
    }
}

impl Handler<MessagesStored> for PullHold {
    type Result = GuardedReply<()>;
    fn handle(&mut self, ev: MessagesStored, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.on_stored(&ev))
    }
}

impl Handler<GetPullStats> for PullHold {
    type Result = GuardedReply<MessageResult<GetPullStats>>;
    fn handle(&mut self, _: GetPullStats, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let mut s = act.stats;
            s.holding = act.table.len() as u64;
            MessageResult(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compiled_once_and_refused_with_their_code() {
        let mut c = FilterCache::new(true, 3);
        let a = c.get(Some("TagA || TagB"), None).unwrap();
        let b = c.get(Some("TagA || TagB"), Some("TAG")).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "compiled once");
        assert_eq!(a.tag_codes().unwrap().len(), 2);
        assert!(c.get(Some(" * "), None).unwrap().is_all());
        let s = c.get(Some("a > 1"), Some("SQL92")).unwrap();
        assert!(Arc::ptr_eq(
            &s,
            &c.get(Some("a > 1"), Some("SQL92")).unwrap()
        ));
        assert!(s.sql().is_some() && s.tag_codes().is_none());
        // The same text as tags is another filter.
        assert!(c.get(Some("a > 1"), None).unwrap().sql().is_none());
        assert!(c.len() <= 3);
        let e = filter_error(c.get(Some("a >"), Some("SQL92")).unwrap_err());
        assert_eq!(e.code, ResponseCode::SubscriptionParseFailed);
        let e = filter_error(c.get(Some("||"), None).unwrap_err());
        assert_eq!(e.code, ResponseCode::SubscriptionParseFailed);
        let e = filter_error(c.get(Some("a"), Some("XPATH")).unwrap_err());
        assert_eq!(e.code, ResponseCode::SubscriptionParseFailed);
        // Property filtering off: SQL92 refused as RocketMQ does, tags not.
        let mut off = FilterCache::new(false, 8);
        let e = filter_error(off.get(Some("a > 1"), Some("SQL92")).unwrap_err());
        assert_eq!(e.code, ResponseCode::SystemError);
        assert!(e.remark.contains("enable_property_filter"), "{}", e.remark);
        assert!(off.get(Some("A"), None).is_ok());
    }

    #[test]
    fn rocketmq_status_mapping() {
        use GetStatus::*;
        use ResponseCode::*;
        assert_eq!(pull_code(Found, 3, 9), (Success, false));
        assert_eq!(
            pull_code(NoMatchedMessage, 3, 9),
            (PullRetryImmediately, false)
        );
        assert_eq!(pull_code(NoMatchedQueue, 0, 0), (PullNotFound, true));
        assert_eq!(pull_code(NoMatchedQueue, 5, 0), (PullOffsetMoved, false));
        assert_eq!(pull_code(NoMessageInQueue, 0, 0), (PullNotFound, true));
        assert_eq!(pull_code(NoMessageInQueue, 4, 0), (PullOffsetMoved, false));
        assert_eq!(pull_code(NoMessageInQueue, 7, 7), (PullNotFound, true));
        assert_eq!(pull_code(OffsetOverflowOne, 9, 9), (PullNotFound, true));
        assert_eq!(pull_code(OffsetFoundNull, 2, 9), (PullNotFound, false));
        assert_eq!(
            pull_code(OffsetOverflowBadly, 20, 9),
            (PullOffsetMoved, false)
        );
        assert_eq!(pull_code(OffsetTooSmall, 1, 9), (PullOffsetMoved, false));
    }

    #[test]
    fn hold_table_wakes_by_offset_and_expires_by_deadline() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = HoldTable::new(10);
        h.hold("t", 0, 5, t0 + s, "a").unwrap();
        h.hold("t", 0, 7, t0 + 2 * s, "b").unwrap();
        h.hold("t", 1, 0, t0 + s, "c").unwrap();
        h.hold("u", 0, 0, t0 + 3 * s, "d").unwrap();
        assert_eq!(h.len(), 4);
        assert!(h.take_ready("t", 0, 5).is_empty());
        assert!(h.take_ready("nope", 0, 100).is_empty());
        let woke: Vec<_> = h
            .take_ready("t", 0, 6)
            .into_iter()
            .map(|(_, x)| x)
            .collect();
        assert_eq!(woke, vec!["a"]);
        assert_eq!(h.len(), 3);
        let mut exp = h.take_expired(t0 + s);
        exp.sort();
        assert_eq!(exp, vec!["c"]);
        let mut exp = h.take_expired(t0 + 2 * s);
        exp.sort();
        assert_eq!(exp, vec!["b"]);
        assert_eq!(h.len(), 1);
        let woke = h.take_ready("u", 0, 1);
        assert_eq!(woke.len(), 1);
        assert_eq!(woke[0].0, t0 + 3 * s);
        assert!(h.is_empty());
        assert!(h.queues.is_empty());
    }

    #[test]
    fn hold_table_is_bounded() {
        let t0 = Instant::now();
        let mut h = HoldTable::new(2);
        h.hold("t", 0, 0, t0, 1).unwrap();
        h.hold("t", 0, 0, t0, 2).unwrap();
        assert_eq!(h.hold("t", 0, 0, t0, 3), Err(3));
        assert_eq!(h.take_expired(t0).len(), 2);
        h.hold("t", 0, 0, t0, 4).unwrap();
    }
}

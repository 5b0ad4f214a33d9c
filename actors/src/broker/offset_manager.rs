//! `OffsetManager`: consumer-group offsets per topic and queue (clustering
//! mode keeps them on the broker). Commits land in memory at once and are
//! persisted to `<data>/config/consumer_offsets.msgpack` every 5 s (when
//! something changed) and when the actor stops; the supervisor's factory
//! reloads the file on restart.
//!
//! The table is [`OffsetTable`], a plain struct.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    Empty, OffsetResponse, QueryConsumerOffsetRequest, UpdateConsumerOffsetRequest,
};
use serde::{Deserialize, Serialize};
use slog::{Logger, error, o};

use super::broker_store::BrokerStore;
use super::persist;
use super::topic_manager::TopicView;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Committed offsets: `group → topic → queue id → next offset to consume`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetTable {
    groups: BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>,
}

impl OffsetTable {
    /// Records `offset` for (group, topic, queue). Returns whether it changed.
    pub fn commit(&mut self, group: &str, topic: &str, queue_id: u32, offset: u64) -> bool {
        let slot = self
            .groups
            .entry(group.to_owned())
            .or_default()
            .entry(topic.to_owned())
            .or_default()
            .entry(queue_id)
            .or_insert(u64::MAX);
        let changed = *slot != offset;
        *slot = offset;
        changed
    }

    /// The committed offset of (group, topic, queue), if any.
    pub fn get(&self, group: &str, topic: &str, queue_id: u32) -> Option<u64> {
        self.groups.get(group)?.get(topic)?.get(&queue_id).copied()
    }

    /// Every committed offset: `(group, topic, queue id, offset)`, sorted.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, u32, u64)> + '_ {
        self.groups.iter().flat_map(|(g, topics)| {
            topics.iter().flat_map(move |(t, queues)| {
                queues
                    .iter()
                    .map(move |(q, o)| (g.as_str(), t.as_str(), *q, *o))
            })
        })
    }

    /// Every committed queue of `group` on `topic`.
    pub fn queues(&self, group: &str, topic: &str) -> BTreeMap<u32, u64> {
        self.groups
            .get(group)
            .and_then(|t| t.get(topic))
            .cloned()
            .unwrap_or_default()
    }

    /// Takes every offset of `other` (a slave copying its master's table);
    /// returns how many changed.
    pub fn merge_from(&mut self, other: &OffsetTable) -> usize {
        let mut changed = 0;
        for (group, topics) in &other.groups {
            for (topic, queues) in topics {
                for (&queue, &offset) in queues {
                    if self.commit(group, topic, queue, offset) {
                        changed += 1;
                    }
                }
            }
        }
        changed
    }

    /// Whether `group` committed an offset of any topic here.
    pub fn has_group(&self, group: &str) -> bool {
        self.groups.get(group).is_some_and(|t| !t.is_empty())
    }

    /// Resets `group` on `topic` (see [`reset_target`] for each queue);
    /// returns the offset each queue now has.
    pub fn reset(
        &mut self,
        group: &str,
        topic: &str,
        queues: &[QueueSpan],
        force: bool,
    ) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for q in queues {
            let committed = self.get(group, topic, q.queue_id);
            let offset = reset_target(q, committed, force);
            self.commit(group, topic, q.queue_id, offset);
            out.insert(q.queue_id, offset);
        }
        out
    }

    /// Forgets `topic` for every group (topic deleted).
    pub fn remove_topic(&mut self, topic: &str) {
        for topics in self.groups.values_mut() {
            topics.remove(topic);
        }
    }
}

/// What an offset reset needs to know of one queue, from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSpan {
    /// Queue.
    pub queue_id: u32,
    /// The offset of the first message stored at or after the reset's
    /// time (the store's search: the max offset when none is).
    pub by_time: u64,
    /// The queue's min offset (first kept message).
    pub min: u64,
    /// The queue's max offset (one past the last message).
    pub max: u64,
}

/// Where an offset reset puts one queue: the offset of the first message
/// stored at or after the time, within the queue's `[min, max]` (a time
/// after the last message gives `max`, one before the first gives `min`).
/// Without `force`, as RocketMQ does, a committed offset already before
/// that is kept: the reset only moves back. A queue never committed takes
/// the target either way.
pub fn reset_target(q: &QueueSpan, committed: Option<u64>, force: bool) -> u64 {
    let target = q.by_time.clamp(q.min, q.max.max(q.min));
    match committed {
        Some(c) if !force && c < target => c,
        _ => target,
    }
}

fn check_names(group: &str, topic: &str) -> Result<(), ServiceError> {
    if group.is_empty() {
        return Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            "consumer_group is required",
        ));
    }
    actormq_protocol::validate_topic(topic)?;
    Ok(())
}

/// Checks a commit against the topic's config and its queue's max offset:
/// unknown topic → `TOPIC_NOT_EXIST`; a queue id outside the topic's queue
/// count, or an offset beyond the queue's max offset → `INVALID_PARAMETER`.
/// `max_offset` is asked only when the queue exists.
pub fn check_commit(
    topic: Option<&actormq_protocol::request::TopicConfig>,
    topic_name: &str,
    queue_id: u32,
    offset: u64,
    max_offset: impl FnOnce() -> u64,
) -> Result<(), ServiceError> {
    let Some(cfg) = topic else {
        return Err(ServiceError::topic_not_exist(topic_name));
    };
    let queues = cfg.read_queue_nums.max(cfg.write_queue_nums);
    if queue_id >= queues {
        return Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!("queue {queue_id} of {topic_name} does not exist ({queues} queues)"),
        ));
    }
    let max = max_offset();
    if offset > max {
        return Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!("offset {offset} is beyond the max offset {max} of {topic_name}:{queue_id}"),
        ));
    }
    Ok(())
}

/// What commits are checked against: the topic table and the store.
#[derive(Debug, Clone)]
pub struct OffsetBounds {
    topics: TopicView,
    store: BrokerStore,
}

impl OffsetBounds {
    /// Bounds from the broker's topic view and store.
    pub fn new(topics: TopicView, store: BrokerStore) -> Self {
        Self { topics, store }
    }

    /// See [`check_commit`].
    pub fn check(&self, topic: &str, queue_id: u32, offset: u64) -> Result<(), ServiceError> {
        let table = self.topics.snapshot();
        check_commit(table.get(topic), topic, queue_id, offset, || {
            self.store.max_offset(topic, queue_id)
        })
    }
}

/// Settings of the offset manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetManagerConfig {
    /// State file (`<data>/config/consumer_offsets.msgpack`).
    pub path: PathBuf,
    /// How often dirty offsets are persisted. Default 5 s.
    pub persist_interval: Duration,
}

/// The offset manager actor. See the module docs.
pub struct OffsetManager {
    table: OffsetTable,
    state: std::sync::Arc<persist::StateFile>,
    bounds: Option<OffsetBounds>,
    dirty: bool,
    config: OffsetManagerConfig,
    logger: Logger,
    poison: Poison,
}

impl OffsetManager {
    /// Loads committed offsets from disk.
    pub fn load(
        config: OffsetManagerConfig,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "OffsetManager"));
        // A torn or garbage file: logged, and the last good copy is used.
        let table = persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        Ok(Self {
            table,
            state: persist::StateFile::for_path(&config.path),
            bounds: None,
            dirty: false,
            config,
            logger,
            poison: Poison::default(),
        })
    }

    /// Rejects commits outside the topic's queues or beyond a queue's
    /// max offset (see [`check_commit`]); without bounds every commit of a
    /// well-formed name is taken.
    pub fn with_bounds(mut self, bounds: OffsetBounds) -> Self {
        self.bounds = Some(bounds);
        self
    }

    /// Stages the table now (change order) and writes it on a blocking
    /// thread, coalesced with other writes of the file.
    fn write(&self) -> impl Future<Output = Result<(), persist::PersistError>> + use<> {
        self.state.persist(&self.table)
    }

    fn persist_async(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let logger = self.logger.clone();
        let write = self.write();
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(write).map(move |res, act, _ctx| {
                if res.is_err() {
                    error!(logger, "cannot persist consumer offsets; will retry");
                    act.dirty = true;
                }
            }),
        );
    }
}

impl Actor for OffsetManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.persist_interval, |act, ctx| {
            act.persist_async(ctx)
        });
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        // Last chance on a clean stop: write synchronously.
        if self.dirty {
            let res = self
                .state
                .stage(&self.table)
                .and_then(|seq| self.state.wait(seq));
            if let Err(e) = res {
                error!(self.logger, "cannot persist consumer offsets at stop"; "error" => %e);
            }
        }
    }
}

/// Persist now if anything changed (graceful shutdown, tests); replies once written.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "Result<(), ServiceError>")]
pub struct PersistOffsets;

impl Guarded for OffsetManager {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<PersistOffsets> for OffsetManager {
    type Result = GuardedReply<ResponseActFuture<Self, Result<(), ServiceError>>>;
    fn handle(&mut self, msg: PersistOffsets, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.persist_now(msg))
    }
}

impl OffsetManager {
    fn persist_now(
        &mut self,
        _: PersistOffsets,
    ) -> ResponseActFuture<Self, Result<(), ServiceError>> {
        self.dirty = false;
        let write = self.write();
        Box::pin(
            actix::fut::wrap_future::<_, Self>(write).map(|res, act, _| {
                res.map_err(|e| {
                    act.dirty = true;
                    ServiceError::system(e.to_string())
                })
            }),
        )
    }
}

/// The committed offsets of a group on a topic (admin: group progress).
#[derive(Debug, Clone, Message)]
#[rtype(result = "BTreeMap<u32, u64>")]
pub struct GetGroupOffsets {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
}

impl Handler<GetGroupOffsets> for OffsetManager {
    type Result = GuardedReply<MessageResult<GetGroupOffsets>>;
    fn handle(&mut self, msg: GetGroupOffsets, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            MessageResult(act.table.queues(&msg.group, &msg.topic))
        })
    }
}

/// A copy of the whole offset table (a master's, for its slaves).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "OffsetTable")]
pub struct GetOffsetTable;

impl Handler<GetOffsetTable> for OffsetManager {
    type Result = GuardedReply<MessageResult<GetOffsetTable>>;
    fn handle(&mut self, _: GetOffsetTable, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| MessageResult(act.table.clone()))
    }
}

/// Takes every offset of a master's table (a slave's config sync);
/// replies how many changed. Persisted with the next periodic write.
#[derive(Debug, Clone, Message)]
#[rtype(result = "usize")]
pub struct MergeOffsets(pub OffsetTable);

impl Handler<MergeOffsets> for OffsetManager {
    type Result = GuardedReply<MessageResult<MergeOffsets>>;
    fn handle(&mut self, msg: MergeOffsets, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let changed = act.table.merge_from(&msg.0);
            if changed > 0 {
                act.dirty = true;
            }
            MessageResult(changed)
        })
    }
}

impl Handler<Call<QueryConsumerOffsetRequest>> for OffsetManager {
    type Result = GuardedReply<Result<Reply<OffsetResponse>, ServiceError>>;
    fn handle(
        &mut self,
        msg: Call<QueryConsumerOffsetRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| act.query(msg))
    }
}

impl OffsetManager {
    fn query(
        &mut self,
        msg: Call<QueryConsumerOffsetRequest>,
    ) -> Result<Reply<OffsetResponse>, ServiceError> {
        let r = &msg.req;
        check_names(&r.consumer_group, &r.topic)?;
        match self.table.get(&r.consumer_group, &r.topic, r.queue_id) {
            Some(offset) => Ok(Reply::ok(OffsetResponse { offset })),
            None => Err(ServiceError::new(
                ResponseCode::QueryNotFound,
                format!(
                    "no offset committed by {} for {}:{}",
                    r.consumer_group, r.topic, r.queue_id
                ),
            )),
        }
    }
}

impl Handler<Call<UpdateConsumerOffsetRequest>> for OffsetManager {
    type Result = GuardedReply<Result<Reply<Empty>, ServiceError>>;
    fn handle(
        &mut self,
        msg: Call<UpdateConsumerOffsetRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| act.update(msg))
    }
}

/// Resets a group's offsets on a topic (`INVOKE_BROKER_TO_RESET_OFFSET`,
/// after the store was asked for each queue's [`QueueSpan`]). Replies the
/// new offset of each queue; `SUBSCRIPTION_GROUP_NOT_EXIST` when the group
/// has no member `online` and never committed an offset here. Persisted at
/// once.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<BTreeMap<u32, u64>, ServiceError>")]
pub struct ResetOffsets {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Every queue of the topic.
    pub queues: Vec<QueueSpan>,
    /// Move forward too (see [`reset_target`]).
    pub force: bool,
    /// Whether a member of the group is online.
    pub online: bool,
}

impl Handler<ResetOffsets> for OffsetManager {
    type Result = GuardedReply<Result<BTreeMap<u32, u64>, ServiceError>>;
    fn handle(&mut self, msg: ResetOffsets, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, ctx| {
            check_names(&msg.group, &msg.topic)?;
            if !msg.online && !act.table.has_group(&msg.group) {
                return Err(ServiceError::new(
                    ResponseCode::SubscriptionGroupNotExist,
                    format!(
                        "consumer group {} does not exist (no member online, no committed offset)",
                        msg.group
                    ),
                ));
            }
            let out = act
                .table
                .reset(&msg.group, &msg.topic, &msg.queues, msg.force);
            act.dirty = true;
            act.persist_async(ctx);
            Ok(out)
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for OffsetManager {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

impl OffsetManager {
    fn update(
        &mut self,
        msg: Call<UpdateConsumerOffsetRequest>,
    ) -> Result<Reply<Empty>, ServiceError> {
        let r = &msg.req;
        check_names(&r.consumer_group, &r.topic)?;
        if let Some(b) = &self.bounds {
            b.check(&r.topic, r.queue_id, r.commit_offset)?;
        }
        if self
            .table
            .commit(&r.consumer_group, &r.topic, r.queue_id, r.commit_offset)
        {
            self.dirty = true;
        }
        Ok(Reply::ok(Empty {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slave_takes_its_masters_offsets() {
        let mut master = OffsetTable::default();
        master.commit("g", "t", 0, 10);
        master.commit("g", "t", 1, 4);
        let mut slave = OffsetTable::default();
        slave.commit("g", "t", 0, 3);
        assert_eq!(slave.merge_from(&master), 2);
        assert_eq!(slave.get("g", "t", 0), Some(10));
        assert_eq!(slave.merge_from(&master), 0);
    }

    #[test]
    fn commit_and_read_back() {
        let mut t = OffsetTable::default();
        assert_eq!(t.get("g", "t", 0), None);
        assert!(t.commit("g", "t", 0, 10));
        assert!(!t.commit("g", "t", 0, 10));
        assert!(t.commit("g", "t", 0, 5), "offsets may move back (reset)");
        assert!(t.commit("g", "t", 3, 7));
        assert_eq!(t.get("g", "t", 0), Some(5));
        assert_eq!(
            t.queues("g", "t").into_iter().collect::<Vec<_>>(),
            vec![(0, 5), (3, 7)]
        );
        t.remove_topic("t");
        assert_eq!(t.get("g", "t", 0), None);
    }

    #[test]
    fn commits_are_bounded_by_topic_queues_and_max_offset() {
        let cfg = actormq_protocol::request::TopicConfig {
            topic_name: "t".into(),
            read_queue_nums: 4,
            write_queue_nums: 2,
            ..Default::default()
        };
        let code = |r: Result<(), ServiceError>| r.map_err(|e| e.code);
        assert_eq!(
            code(check_commit(None, "t", 0, 0, || 0)),
            Err(ResponseCode::TopicNotExist)
        );
        assert_eq!(code(check_commit(Some(&cfg), "t", 3, 10, || 10)), Ok(()));
        assert_eq!(
            code(check_commit(Some(&cfg), "t", 4, 0, || unreachable!())),
            Err(ResponseCode::InvalidParameter)
        );
        assert_eq!(
            code(check_commit(
                Some(&cfg),
                "t",
                u32::MAX,
                0,
                || unreachable!()
            )),
            Err(ResponseCode::InvalidParameter)
        );
        assert_eq!(
            code(check_commit(Some(&cfg), "t", 0, 11, || 10)),
            Err(ResponseCode::InvalidParameter)
        );
        assert_eq!(
            code(check_commit(Some(&cfg), "t", 0, u64::MAX, || 10)),
            Err(ResponseCode::InvalidParameter)
        );
    }

    #[test]
    fn reset_goes_to_the_time_within_the_queue_forward_or_back() {
        let q = |by_time, min, max| QueueSpan {
            queue_id: 0,
            by_time,
            min,
            max,
        };
        // Back: from 90 to the first message at or after the time (40).
        assert_eq!(reset_target(&q(40, 10, 100), Some(90), true), 40);
        assert_eq!(reset_target(&q(40, 10, 100), Some(90), false), 40);
        // Forward only with force; without, the earlier offset is kept.
        assert_eq!(reset_target(&q(95, 10, 100), Some(20), true), 95);
        assert_eq!(reset_target(&q(95, 10, 100), Some(20), false), 20);
        // A time after the last message: the max offset.
        assert_eq!(reset_target(&q(100, 10, 100), Some(20), true), 100);
        // Before the first kept message (older ones removed): the min.
        assert_eq!(reset_target(&q(3, 10, 100), Some(50), true), 10);
        // Beyond the max (the queue shrank meanwhile): the max.
        assert_eq!(reset_target(&q(120, 10, 100), None, false), 100);
        // Never committed: the target, with or without force.
        assert_eq!(reset_target(&q(60, 10, 100), None, false), 60);
        // An empty queue.
        assert_eq!(reset_target(&q(0, 0, 0), Some(0), true), 0);
    }

    #[test]
    fn table_reset_sets_every_queue_and_reports_it() {
        let mut t = OffsetTable::default();
        assert!(!t.has_group("g"));
        t.commit("g", "t", 0, 50);
        t.commit("g", "other", 0, 7);
        assert!(t.has_group("g"));
        let spans = [
            QueueSpan {
                queue_id: 0,
                by_time: 30,
                min: 0,
                max: 60,
            },
            QueueSpan {
                queue_id: 1,
                by_time: 60,
                min: 0,
                max: 60,
            },
        ];
        let out = t.reset("g", "t", &spans, true);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), vec![(0, 30), (1, 60)]);
        assert_eq!(t.get("g", "t", 0), Some(30));
        assert_eq!(t.get("g", "t", 1), Some(60));
        assert_eq!(t.get("g", "other", 0), Some(7), "other topics untouched");
        assert_eq!(t.get("h", "t", 0), None, "other groups untouched");
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            check_names("", "t").unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        assert!(check_names("g", "bad topic").is_err());
        assert!(check_names("g", "t").is_ok());
    }
}

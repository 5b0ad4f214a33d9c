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

    /// Every committed queue of `group` on `topic`.
    pub fn queues(&self, group: &str, topic: &str) -> BTreeMap<u32, u64> {
        self.groups
            .get(group)
            .and_then(|t| t.get(topic))
            .cloned()
            .unwrap_or_default()
    }

    /// Forgets `topic` for every group (topic deleted).
    pub fn remove_topic(&mut self, topic: &str) {
        for topics in self.groups.values_mut() {
            topics.remove(topic);
        }
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
    fn write(&self) -> actix_rt::task::JoinHandle<Result<(), persist::PersistError>> {
        let state = std::sync::Arc::clone(&self.state);
        let staged = state.stage(&self.table);
        actix_rt::task::spawn_blocking(move || state.wait(staged?))
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
                if !matches!(res, Ok(Ok(()))) {
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
            actix::fut::wrap_future::<_, Self>(write).map(|res, act, _| match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    act.dirty = true;
                    Err(ServiceError::system(e.to_string()))
                }
                Err(e) => {
                    act.dirty = true;
                    Err(ServiceError::system(e.to_string()))
                }
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
    fn names_are_checked() {
        assert_eq!(
            check_names("", "t").unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        assert!(check_names("g", "bad topic").is_err());
        assert!(check_names("g", "t").is_ok());
    }
}

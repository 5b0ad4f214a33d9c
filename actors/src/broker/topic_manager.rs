//! `TopicManager`: the broker's topic configs, persisted in
//! `<data>/config/topics.msgpack`, created explicitly by admins or
//! automatically on the first send when `auto_create_topic` is on.
//!
//! The decision logic is [`TopicTable`] (no actors). The actor owns the
//! table, persists every change, and publishes an immutable snapshot
//! through [`TopicView`], so the send path reads topic configs without an
//! actor round trip per message; only a miss (auto-create) asks the actor.
//! Every change bumps `data_version` and is announced with
//! [`TopicsChanged`] (the registrar re-registers at once).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    AllTopicConfig, CreateTopicRequest, DeleteTopicInBrokerRequest, Empty,
    GetAllTopicConfigRequest, Perm, TopicConfig,
};
use serde::{Deserialize, Serialize};
use slog::{Logger, info, o};

use super::persist;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::{Call, Reply, ServiceError};

/// Most queues a topic may have on one broker.
pub const MAX_QUEUES: u32 = 1024;

/// Topic configs and their version (what is persisted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicTable {
    topics: BTreeMap<String, TopicConfig>,
    data_version: u64,
}

impl TopicTable {
    /// The config of `topic`.
    pub fn get(&self, topic: &str) -> Option<&TopicConfig> {
        self.topics.get(topic)
    }

    /// Every topic config.
    pub fn all(&self) -> &BTreeMap<String, TopicConfig> {
        &self.topics
    }

    /// Version of the table; bumps on every change.
    pub fn data_version(&self) -> u64 {
        self.data_version
    }

    /// Creates or replaces `cfg`. Returns whether the table changed.
    pub fn upsert(&mut self, cfg: TopicConfig) -> Result<bool, ServiceError> {
        actormq_protocol::validate_topic(&cfg.topic_name)?;
        for (what, n) in [
            ("read", cfg.read_queue_nums),
            ("write", cfg.write_queue_nums),
        ] {
            if n == 0 || n > MAX_QUEUES {
                return Err(ServiceError::new(
                    ResponseCode::InvalidParameter,
                    format!("{what} queue count {n} is not in 1..={MAX_QUEUES}"),
                ));
            }
        }
        if self.topics.get(&cfg.topic_name) == Some(&cfg) {
            return Ok(false);
        }
        self.topics.insert(cfg.topic_name.clone(), cfg);
        self.data_version += 1;
        Ok(true)
    }

    /// Removes `topic`. Returns whether it existed.
    pub fn remove(&mut self, topic: &str) -> bool {
        let existed = self.topics.remove(topic).is_some();
        if existed {
            self.data_version += 1;
        }
        existed
    }

    /// The config a system topic written by the broker uses: `want` when
    /// missing, the existing one widened to `want`'s queue counts when it
    /// has fewer. `(cfg, changed)`.
    pub fn resolve_system(
        &mut self,
        want: &TopicConfig,
    ) -> Result<(TopicConfig, bool), ServiceError> {
        if let Some(cfg) = self.topics.get(&want.topic_name) {
            if cfg.write_queue_nums >= want.write_queue_nums
                && cfg.read_queue_nums >= want.read_queue_nums
            {
                return Ok((cfg.clone(), false));
            }
            let mut wider = cfg.clone();
            wider.write_queue_nums = wider.write_queue_nums.max(want.write_queue_nums);
            wider.read_queue_nums = wider.read_queue_nums.max(want.read_queue_nums);
            self.upsert(wider.clone())?;
            return Ok((wider, true));
        }
        self.upsert(want.clone())?;
        Ok((want.clone(), true))
    }

    /// The config a send to `topic` uses: the existing one, or a new one
    /// with `default_queues` when `auto_create` allows. `Ok((cfg, created))`.
    pub fn resolve_for_send(
        &mut self,
        topic: &str,
        auto_create: bool,
        default_queues: u32,
    ) -> Result<(TopicConfig, bool), ServiceError> {
        if let Some(cfg) = self.topics.get(topic) {
            return Ok((cfg.clone(), false));
        }
        if !auto_create {
            return Err(ServiceError::topic_not_exist(topic));
        }
        let cfg = TopicConfig {
            topic_name: topic.to_owned(),
            read_queue_nums: default_queues,
            write_queue_nums: default_queues,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        };
        self.upsert(cfg.clone())?;
        Ok((cfg, true))
    }
}

/// The config the broker creates a system topic it writes itself with
/// (retry, half, op, revive, ack, timer topics): one queue, read-write,
/// as RocketMQ does. Pass it as [`ResolveTopic::create_as`].
pub fn system_topic_config(topic: &str) -> TopicConfig {
    TopicConfig {
        topic_name: topic.to_owned(),
        read_queue_nums: 1,
        write_queue_nums: 1,
        perm: Perm::READ_WRITE,
        ..TopicConfig::default()
    }
}

/// Checks that `queue_id` is a writable queue of `cfg`.
pub fn check_writable(cfg: &TopicConfig, queue_id: u32) -> Result<(), ServiceError> {
    if !cfg.perm.is_writable() {
        return Err(ServiceError::new(
            ResponseCode::NoPermission,
            format!("topic {} is not writable", cfg.topic_name),
        ));
    }
    if queue_id >= cfg.write_queue_nums {
        return Err(ServiceError::new(
            ResponseCode::InvalidParameter,
            format!(
                "queue {queue_id} out of range: topic {} has {} write queues",
                cfg.topic_name, cfg.write_queue_nums
            ),
        ));
    }
    Ok(())
}

/// A cheap, shared, read-only view of the current topic table.
#[derive(Debug, Clone, Default)]
pub struct TopicView(Arc<RwLock<Arc<TopicTable>>>);

impl TopicView {
    /// The current snapshot (an `Arc` clone; readers never block writers for long).
    pub fn snapshot(&self) -> Arc<TopicTable> {
        Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn publish(&self, table: TopicTable) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }
}

/// Sent to subscribers after every change of the topic table.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct TopicsChanged {
    /// The new table.
    pub table: Arc<TopicTable>,
}

/// Subscribe to [`TopicsChanged`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeTopics(pub Recipient<TopicsChanged>);

/// Resolve the topic of a send, creating it when allowed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<TopicConfig, ServiceError>")]
pub struct ResolveTopic {
    /// Topic name.
    pub topic: String,
    /// A system topic the broker writes itself (`%RETRY%…`, `%DLQ%…`,
    /// `SCHEDULE_TOPIC_XXXX`): created with this config when missing,
    /// whatever `auto_create` says, and widened to its queue count when
    /// it has fewer. `None` for client sends.
    pub create_as: Option<TopicConfig>,
}

impl ResolveTopic {
    /// A client send's resolution (auto-create as configured).
    pub fn send(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            create_as: None,
        }
    }
}

/// Settings of the topic manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicManagerConfig {
    /// State file (`<data>/config/topics.msgpack`).
    pub path: PathBuf,
    /// Create topics on their first send.
    pub auto_create: bool,
    /// Queues of an auto-created topic.
    pub default_queues: u32,
}

/// The topic manager actor. See the module docs.
pub struct TopicManager {
    table: TopicTable,
    state: Arc<persist::StateFile>,
    view: TopicView,
    config: TopicManagerConfig,
    subscribers: Vec<Recipient<TopicsChanged>>,
    logger: Logger,
    poison: Poison,
}

impl TopicManager {
    /// Loads the table from disk (the supervisor's factory calls this on
    /// every restart) and publishes it into `view`.
    pub fn load(
        config: TopicManagerConfig,
        view: TopicView,
        logger: &Logger,
    ) -> Result<Self, persist::PersistError> {
        let logger = logger.new(o!("actor" => "TopicManager"));
        // A torn or garbage file: logged, and the last good copy is used.
        let table: TopicTable = persist::load_or_backup(&config.path, &logger)?.unwrap_or_default();
        view.publish(table.clone());
        Ok(Self {
            table,
            state: persist::StateFile::for_path(&config.path),
            view,
            config,
            subscribers: Vec::new(),
            logger,
            poison: Poison::default(),
        })
    }

    /// Publishes the new table, announces it, and persists it off the
    /// event loop; the returned future resolves once the file is written
    /// (so a change is acknowledged only when it would survive a crash).
    /// A failed write stops the actor, and the supervisor reloads the last
    /// good state.
    fn changed(&mut self) -> impl ActorFuture<Self, Output = Result<(), ServiceError>> + use<> {
        let snapshot = self.table.clone();
        self.view.publish(snapshot.clone());
        let table = Arc::new(snapshot);
        self.subscribers.retain(|s| s.connected());
        for s in &self.subscribers {
            s.do_send(TopicsChanged {
                table: Arc::clone(&table),
            });
        }
        // Staged here, in change order; written (coalesced with later
        // changes, one write in flight) on a blocking thread.
        let write = self.state.persist(&*table);
        persist::written_or_stop(write, self.logger.clone(), "topics")
    }
}

impl Actor for TopicManager {
    type Context = Context<Self>;
}

// Every handler runs through `guarded`: a panic poisons the instance, the
// messages queued behind it are refused (their callers get an error) and
// the supervisor reloads the table from its file.
impl Guarded for TopicManager {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<SubscribeTopics> for TopicManager {
    type Result = GuardedReply<()>;
    fn handle(&mut self, msg: SubscribeTopics, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.subscribers.push(msg.0))
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for TopicManager {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

impl Handler<ResolveTopic> for TopicManager {
    type Result = GuardedReply<ResponseActFuture<Self, Result<TopicConfig, ServiceError>>>;
    fn handle(&mut self, msg: ResolveTopic, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.resolve(msg))
    }
}

impl TopicManager {
    fn resolve(
        &mut self,
        msg: ResolveTopic,
    ) -> ResponseActFuture<Self, Result<TopicConfig, ServiceError>> {
        let resolved = match &msg.create_as {
            Some(want) => self.table.resolve_system(want),
            None => self.table.resolve_for_send(
                &msg.topic,
                self.config.auto_create,
                self.config.default_queues,
            ),
        };
        match resolved {
            Ok((cfg, true)) => {
                info!(self.logger, "topic auto-created"; "topic" => &msg.topic, "queues" => cfg.write_queue_nums);
                Box::pin(self.changed().map(move |res, _, _| res.map(|()| cfg)))
            }
            other => Box::pin(actix::fut::ready(other.map(|(cfg, _)| cfg))),
        }
    }
}

type EmptyReply = ResponseActFuture<TopicManager, Result<Reply<Empty>, ServiceError>>;

fn reply_when_persisted(
    fut: impl ActorFuture<TopicManager, Output = Result<(), ServiceError>> + 'static,
) -> EmptyReply {
    Box::pin(fut.map(|res, _, _| res.map(|()| Reply::ok(Empty {}))))
}

impl Handler<Call<CreateTopicRequest>> for TopicManager {
    type Result = GuardedReply<EmptyReply>;
    fn handle(&mut self, msg: Call<CreateTopicRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.create(msg))
    }
}

impl TopicManager {
    fn create(&mut self, msg: Call<CreateTopicRequest>) -> EmptyReply {
        let name = msg.req.config.topic_name.clone();
        match self.table.upsert(msg.req.config) {
            Ok(true) => {
                info!(self.logger, "topic created or updated"; "topic" => name);
                reply_when_persisted(self.changed())
            }
            Ok(false) => Box::pin(actix::fut::ready(Ok(Reply::ok(Empty {})))),
            Err(e) => Box::pin(actix::fut::ready(Err(e))),
        }
    }
}

impl Handler<Call<DeleteTopicInBrokerRequest>> for TopicManager {
    type Result = GuardedReply<EmptyReply>;
    fn handle(
        &mut self,
        msg: Call<DeleteTopicInBrokerRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| act.delete(msg))
    }
}

impl TopicManager {
    fn delete(&mut self, msg: Call<DeleteTopicInBrokerRequest>) -> EmptyReply {
        if !self.table.remove(&msg.req.topic) {
            return Box::pin(actix::fut::ready(Err(ServiceError::topic_not_exist(
                &msg.req.topic,
            ))));
        }
        info!(self.logger, "topic deleted"; "topic" => &msg.req.topic);
        reply_when_persisted(self.changed())
    }
}

impl Handler<Call<GetAllTopicConfigRequest>> for TopicManager {
    type Result = GuardedReply<Result<Reply<AllTopicConfig>, ServiceError>>;
    fn handle(
        &mut self,
        _: Call<GetAllTopicConfigRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            Ok(Reply::ok(AllTopicConfig {
                topic_config_table: act.table.all().clone(),
                data_version: act.table.data_version(),
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: &str, queues: u32) -> TopicConfig {
        TopicConfig {
            topic_name: name.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        }
    }

    #[test]
    fn upsert_validates_and_versions() {
        let mut t = TopicTable::default();
        assert!(t.upsert(cfg("orders", 8)).unwrap());
        assert!(
            !t.upsert(cfg("orders", 8)).unwrap(),
            "same config is no change"
        );
        assert_eq!(t.data_version(), 1);
        assert!(t.upsert(cfg("orders", 16)).unwrap());
        assert_eq!(t.data_version(), 2);
        let bad = actormq_protocol::validate_topic("bad name!")
            .unwrap_err()
            .response_code();
        assert_eq!(t.upsert(cfg("bad name!", 4)).unwrap_err().code, bad);
        assert_ne!(bad, ResponseCode::Success);
        assert_eq!(
            t.upsert(cfg("zero", 0)).unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        assert_eq!(
            t.upsert(cfg("huge", MAX_QUEUES + 1)).unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        assert!(t.remove("orders"));
        assert!(!t.remove("orders"));
        assert_eq!(t.data_version(), 3);
    }

    #[test]
    fn send_resolution_auto_creates_only_when_allowed() {
        let mut t = TopicTable::default();
        assert_eq!(
            t.resolve_for_send("new", false, 4).unwrap_err().code,
            ResponseCode::TopicNotExist
        );
        let (c, created) = t.resolve_for_send("new", true, 4).unwrap();
        assert!(created);
        assert_eq!(c.write_queue_nums, 4);
        let (_, created) = t.resolve_for_send("new", true, 4).unwrap();
        assert!(!created);
        assert!(t.resolve_for_send("bad topic", true, 4).is_err());
    }

    #[test]
    fn system_topics_are_created_whatever_auto_create_and_widened() {
        let mut t = TopicTable::default();
        let (c, changed) = t.resolve_system(&cfg("%RETRY%g", 1)).unwrap();
        assert!(changed);
        assert_eq!(c.write_queue_nums, 1);
        let (_, changed) = t.resolve_system(&cfg("%RETRY%g", 1)).unwrap();
        assert!(!changed);
        let (c, changed) = t.resolve_system(&cfg("%RETRY%g", 3)).unwrap();
        assert!(changed);
        assert_eq!((c.read_queue_nums, c.write_queue_nums), (3, 3));
        let (c, changed) = t.resolve_system(&cfg("%RETRY%g", 2)).unwrap();
        assert!(!changed, "never narrowed");
        assert_eq!(c.write_queue_nums, 3);
    }

    #[test]
    fn writability() {
        let mut c = cfg("t", 4);
        assert!(check_writable(&c, 3).is_ok());
        assert_eq!(
            check_writable(&c, 4).unwrap_err().code,
            ResponseCode::InvalidParameter
        );
        c.perm = Perm::READ;
        assert_eq!(
            check_writable(&c, 0).unwrap_err().code,
            ResponseCode::NoPermission
        );
    }
}

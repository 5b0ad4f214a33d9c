//! The broker's supervised wiring: the one function that starts every
//! broker actor under a supervisor and routes its request codes. The node,
//! the examples and every test call it, so the tests exercise the topology
//! production runs.
//!
//! ```text
//! supervisor (the caller's; one-for-one)
//! ├── topic-manager    ← 17, 21, 215; resolves topics for the writer
//! ├── offset-manager   ← 14, 15; commit offsets piggybacked on pulls
//! ├── subscription-group-manager ← 200, 201, 207; resolves a heartbeat's groups
//! ├── group-manager    ← 34, 38; group changes → the listener (notify)
//! ├── queue-locks      ← 41, 42 (orderly consumption; in memory)
//! ├── dispatcher       (own arbiter with `dispatcher_thread`)
//! ├── pull-hold        ← 11; stored events through the stored fan-out
//! ├── query            ← 12, 29, 30, 31, 33
//! ├── flush
//! ├── retention
//! ├── commit-log       ← 10, 320 (own arbiter with `writer_thread`)
//! ├── schedule         moves due delayed messages back to the writer
//! ├── timer            delivery at a time: a durable timing wheel
//! ├── retry            ← 36, 10001 (send-back to %RETRY%, dead letters)
//! ├── pop              ← 200050, 200051, 200053 (simple consumer; checkpoints
//! │                      through the timer, revive to %RETRY%<g>_<t> / %DLQ%)
//! ├── offset-reset     ← 222; moves pop positions, pushes 220 through the
//! │                      group notifier
//! ├── end-transaction  ← 37; re-puts committed half messages, op records
//! ├── transaction-checker (checks pushed through the group notifier)
//! ├── ha-replicator    master: the HA listener, one ha-connection per slave
//! └── ha-client        ← 10002; slave: replicates the master; the role switch
//! ```
//!
//! Every link between them goes through a [`ChildRef`] (routes and
//! [`Relay`]s), so it follows a child across restarts; the stored-event
//! fan-out is re-subscribed to every dispatcher incarnation.

use std::net::SocketAddr;
use std::sync::Arc;

use super::metrics::BrokerMetrics;
use super::status_service::StatusService;
use actormq_protocol::request::{
    GetBrokerConfigRequest, GetBrokerRuntimeInfoRequest, GetConsumerConnectionListRequest,
    GetProducerConnectionListRequest,
};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::request::PromoteBrokerRequest;
use actormq_protocol::request::{
    AckMessageRequest, BatchAckMessageRequest, ChangeInvisibleTimeRequest, PopMessageRequest,
};
use actormq_protocol::request::{ConsumerSendMsgBackRequest, ResendDeadLettersRequest};
use actormq_protocol::request::{
    CreateSubscriptionGroupRequest, DeleteSubscriptionGroupRequest, EndTransactionRequest,
    GetAllSubscriptionGroupRequest,
};
use actormq_protocol::request::{
    CreateTopicRequest, DeleteTopicInBrokerRequest, GetAllTopicConfigRequest,
    GetConsumerListByGroupRequest, GetMaxOffsetRequest, GetMinOffsetRequest, HeartbeatRequest,
    LockBatchMqRequest, PullMessageRequest, QueryConsumerOffsetRequest, QueryMessageRequest,
    ResetOffsetRequest, SearchOffsetByTimestampRequest, SendBatchMessageRequest,
    SendMessageRequest, UnlockBatchMqRequest, UpdateConsumerOffsetRequest, ViewMessageByIdRequest,
    ViewMessagesByQueueOffsetRequest,
};
use actormq_store::StoreConfig;
use slog::{Logger, info, o, warn};

use super::broker_store::BrokerStore;
use super::commit_log::{CommitLogActor, CommitLogConfig};
use super::dispatcher::{Dispatcher, DispatcherConfig, SubscribeStored};
use super::end_transaction::EndTransactionService;
use super::flush_service::{FlushAndCheckpoint, FlushService, FlushServiceConfig};
use super::group_manager::{GroupManager, GroupManagerConfig, SubscribeGroups};
use super::group_notifier::{ForeignSessions, GroupNotifier};
use super::ha::{
    ConfigSnapshot, HaClient, HaConfig, HaReplicator, HaState, SnapshotSink, SnapshotSource,
};
use super::offset_manager::{GetOffsetTable, MergeOffsets};
use super::offset_manager::{OffsetBounds, OffsetManager, OffsetManagerConfig};
use super::offset_reset::OffsetResetService;
use super::persist;
use super::pop_service::{PopConfig, PopService};
use super::pull_hold::{PullHold, PullHoldConfig};
use super::query_service::QueryService;
use super::queue_locks::{DEFAULT_LOCK_EXPIRY, QueueLockManager};
use super::retention_cleaner::{RetentionCleaner, RetentionConfig};
use super::retry_service::RetryService;
use super::schedule_service::{
    AdvanceDelayProgress, GetDelayProgress, ScheduleConfig, ScheduleService,
};
use super::stored_fanout::{StoredFanout, StoredSubscribers};
use super::subscription_group_manager::{SubscriptionGroupManager, SubscriptionGroupManagerConfig};
use super::timer_service::{TimerConfig, TimerService};
use super::topic_manager::{TopicManager, TopicManagerConfig, TopicView};
use super::transaction_checker::{TransactionChecker, TransactionConfig};
use crate::runtime::net::{Listener, Router};
use crate::runtime::{
    Call, CallRelay, ChildRef, ChildSpec, Relay, SpawnChild, SpawnChildInto, Supervisor,
    route_child,
};

/// Settings of every broker actor (each field documents its defaults).
#[derive(Debug, Clone)]
pub struct BrokerActorsConfig {
    /// The store (data dir, segment size, flush mode, ...).
    pub store: StoreConfig,
    /// Topics (`<data>/config/topics.msgpack`).
    pub topics: TopicManagerConfig,
    /// Consumer offsets (`<data>/config/consumer_offsets.msgpack`).
    pub offsets: OffsetManagerConfig,
    /// Producer and consumer groups.
    pub groups: GroupManagerConfig,
    /// Consumer group configs (`<data>/config/subscription_groups.msgpack`,
    /// auto-created on a group's first heartbeat by default).
    pub subscription_groups: SubscriptionGroupManagerConfig,
    /// The commit-log writer; `store_host` is the broker's advertised
    /// address, stamped into every message id; the idempotent producer's
    /// dedup window snapshot is `<data>/config/producer_dedup.msgpack`.
    pub writer: CommitLogConfig,
    /// The dispatcher.
    pub dispatcher: DispatcherConfig,
    /// Pulls and long polling.
    pub pull: PullHoldConfig,
    /// Flush ownership.
    pub flush: FlushServiceConfig,
    /// Retention.
    pub retention: RetentionConfig,
    /// Delayed delivery (`<data>/config/delay_offsets.msgpack`); its level
    /// count always follows `writer.delay_levels_ms`.
    pub schedule: ScheduleConfig,
    /// Delivery at a time (`<data>/timer`, `<data>/config/timer_state.msgpack`).
    pub timer: TimerConfig,
    /// Transactions: the checker's timing and its progress file
    /// (`<data>/config/transaction_checker.msgpack`).
    pub transactions: TransactionConfig,
    /// The simple (pop) consumer: pop positions and revive progress
    /// (`<data>/config/pop_state.msgpack`).
    pub pop: PopConfig,
    /// The broker's name, in the queues an offset reset pushes to
    /// consumers. Default `broker-a`.
    pub broker_name: String,
    /// Run the writer on an arbiter (thread) of its own. Default: off, the
    /// writer shares the supervisor's arbiter (one hop fewer per request).
    pub writer_thread: bool,
    /// Run the dispatcher on an arbiter of its own (writer nudges are then
    /// throttled to 1 ms and big rounds are not offloaded). Default: off.
    pub dispatcher_thread: bool,
    /// Replication (role, HA listener, master, sync timeout). Default: an
    /// async master without HA listener.
    pub ha: HaConfig,
    /// What `GET_BROKER_CONFIG` answers: the node's effective settings as
    /// `key = value` text (the node fills it). Default: empty.
    pub effective_config: std::collections::BTreeMap<String, String>,
}

impl BrokerActorsConfig {
    /// Defaults over `store`, with the state files under `data_dir/config`.
    pub fn new(store: StoreConfig, data_dir: &std::path::Path, store_host: SocketAddr) -> Self {
        Self {
            store,
            topics: TopicManagerConfig {
                path: data_dir.join("config/topics.msgpack"),
                auto_create: true,
                default_queues: 4,
            },
            offsets: OffsetManagerConfig {
                path: data_dir.join("config/consumer_offsets.msgpack"),
                persist_interval: Duration::from_secs(5),
            },
            groups: GroupManagerConfig::default(),
            subscription_groups: SubscriptionGroupManagerConfig {
                path: data_dir.join("config/subscription_groups.msgpack"),
                auto_create: true,
                default_retry_max: 16,
            },
            writer: CommitLogConfig {
                store_host,
                dedup: super::dedup::DedupConfig {
                    path: Some(data_dir.join("config/producer_dedup.msgpack")),
                    ..super::dedup::DedupConfig::default()
                },
                ..CommitLogConfig::default()
            },
            dispatcher: DispatcherConfig::default(),
            pull: PullHoldConfig::default(),
            flush: FlushServiceConfig::default(),
            retention: RetentionConfig::default(),
            timer: TimerConfig::new(data_dir),
            schedule: ScheduleConfig::new(
                data_dir.join("config/delay_offsets.msgpack"),
                super::commit_log::DEFAULT_DELAY_LEVELS_MS.len() as u32,
            ),
            transactions: TransactionConfig::new(
                data_dir.join("config/transaction_checker.msgpack"),
                store_host,
            ),
            pop: PopConfig::new(data_dir.join("config/pop_state.msgpack")),
            broker_name: "broker-a".into(),
            writer_thread: false,
            dispatcher_thread: false,
            ha: HaConfig::default(),
            effective_config: std::collections::BTreeMap::new(),
        }
    }
}

/// Why the broker's actors could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// The store could not be opened (recovery failed, corruption, ...).
    #[error("store: {0}")]
    Store(#[from] actormq_store::Error),
    /// The state directory could not be created.
    #[error("{dir}: {source}")]
    StateDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A supervised actor could not start (its supervisor is gone).
    #[error("cannot start {0}")]
    Start(String),
    /// The HA listener could not be bound.
    #[error("cannot listen for slaves on {addr}: {source}")]
    HaListen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// The broker's running actors, each a handle that follows its child
/// across restarts.
#[derive(Clone)]
pub struct BrokerActors {
    /// The shared store.
    pub store: BrokerStore,
    /// The shared topic snapshot.
    pub view: TopicView,
    /// Topics.
    pub topics: ChildRef<TopicManager>,
    /// Consumer offsets.
    pub offsets: ChildRef<OffsetManager>,
    /// Producer and consumer groups.
    pub groups: ChildRef<GroupManager>,
    /// Queue locks of orderly consumers.
    pub locks: ChildRef<QueueLockManager>,
    /// Consumer group configs.
    pub subscription_groups: ChildRef<SubscriptionGroupManager>,
    /// The single writer.
    pub writer: ChildRef<CommitLogActor>,
    /// The dispatcher.
    pub dispatcher: ChildRef<Dispatcher>,
    /// Pulls and long polling.
    pub pull: ChildRef<PullHold>,
    /// Offset and message queries.
    pub query: ChildRef<QueryService>,
    /// Flush ownership.
    pub flush: ChildRef<FlushService>,
    /// Retention.
    pub retention: ChildRef<RetentionCleaner>,
    /// Offset resets.
    pub offset_reset: ChildRef<OffsetResetService>,
    /// Delayed delivery.
    pub schedule: ChildRef<ScheduleService>,
    /// Delivery at a time.
    pub timer: ChildRef<TimerService>,
    /// Send-back and dead letters.
    pub retry: ChildRef<RetryService>,
    /// The simple (pop) consumer.
    pub pop: ChildRef<PopService>,
    /// Commits and rollbacks of half messages.
    pub end_transaction: ChildRef<EndTransactionService>,
    /// The transaction checker.
    pub transaction_checker: ChildRef<TransactionChecker>,
    /// The group notifier (empty until [`Self::notify_groups_through`]).
    pub notifier: ChildRef<GroupNotifier>,
    /// Where the notifier sends transaction checks for clients of other
    /// front doors (the gRPC endpoint installs its handler here).
    pub foreign_sessions: ForeignSessions,
    /// Where "message stored" events can be subscribed to (stable across
    /// dispatcher restarts).
    pub stored: Recipient<SubscribeStored>,
    /// Replication state: the role, slaves and their acknowledgements.
    pub ha: Arc<HaState>,
    /// The master's HA listener (empty on a slave or without `ha.listen`,
    /// until [`Self::listen_for_slaves`]).
    pub ha_replicator: ChildRef<HaReplicator>,
    /// The bound HA address (`None` without a listener).
    pub ha_addr: Option<SocketAddr>,
    /// The slave's replication and the role switch ([`super::ha::SwitchRole`]).
    pub ha_client: ChildRef<HaClient>,
    /// Traffic counters (`/metrics`, `/api/stats`).
    pub metrics: Arc<BrokerMetrics>,
    /// `GET_BROKER_RUNTIME_INFO` and `GET_BROKER_CONFIG`.
    pub status: ChildRef<StatusService>,
    ha_config: HaConfig,
    ha_source: SnapshotSource,
    writer_arbiter: Option<ArbiterHandle>,
    dispatcher_arbiter: Option<ArbiterHandle>,
    logger: Logger,
}

async fn spawn<A: Actor<Context = Context<A>>>(
    supervisor: &Addr<Supervisor>,
    spec: ChildSpec<A>,
) -> Result<ChildRef<A>, WiringError> {
    supervisor
        .send(SpawnChild(spec))
        .await
        .map_err(|e| WiringError::Start(e.to_string()))
}

impl BrokerActors {
    /// Opens the store (on a blocking thread) and starts every broker actor
    /// under `supervisor`, in dependency order.
    pub async fn start(
        supervisor: &Addr<Supervisor>,
        config: BrokerActorsConfig,
        logger: &Logger,
    ) -> Result<Self, WiringError> {
        let started = std::time::Instant::now();
        let store_cfg = config.store.clone();
        let store = actix_rt::task::spawn_blocking(move || BrokerStore::open(store_cfg))
            .await
            .map_err(|e| WiringError::Start(format!("store: {e}")))??;
        info!(logger, "store open"; "ms" => started.elapsed().as_millis() as u64,
            "report" => ?store.recovery_report());
        Self::start_on(supervisor, store, config, logger).await
    }

    /// Starts every broker actor on `store`, already open (and so holding
    /// the data-dir lock): a node opens its store before it binds any
    /// port, so a second node on a held data dir never listens.
    /// `config.store` is not used.
    pub async fn start_on(
        supervisor: &Addr<Supervisor>,
        store: BrokerStore,
        config: BrokerActorsConfig,
        logger: &Logger,
    ) -> Result<Self, WiringError> {
        let logger = logger.new(o!());
        for path in [
            &config.topics.path,
            &config.offsets.path,
            &config.subscription_groups.path,
            &config.schedule.path,
            &config.timer.state_path,
            &config.transactions.path,
            &config.pop.path,
        ] {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| WiringError::StateDir {
                    dir: dir.to_path_buf(),
                    source,
                })?;
            }
        }

        let view = TopicView::default();
        let metrics = Arc::new(BrokerMetrics::new());
        // State files are loaded once here first: one that cannot be
        // loaded (garbage and no good backup) stops the start at once with
        // that one line, not through the supervisor's restarts.
        TopicManager::load(config.topics.clone(), view.clone(), &logger)
            .map_err(|e| WiringError::Start(format!("topic manager: {e}")))?;
        OffsetManager::load(config.offsets.clone(), &logger)
            .map_err(|e| WiringError::Start(format!("offset manager: {e}")))?;
        SubscriptionGroupManager::load(config.subscription_groups.clone(), &logger)
            .map_err(|e| WiringError::Start(format!("subscription group manager: {e}")))?;
        let mut schedule_cfg = config.schedule.clone();
        schedule_cfg.levels = config.writer.delay_levels_ms.len() as u32;
        persist::load_or_backup::<super::schedule_service::DelayProgress>(
            &schedule_cfg.path,
            &logger,
        )
        .map_err(|e| WiringError::Start(format!("schedule service: {e}")))?;
        let (c, v, log) = (config.topics.clone(), view.clone(), logger.clone());
        let topics = spawn(
            supervisor,
            ChildSpec::new("topic-manager", move || {
                Ok(TopicManager::load(c.clone(), v.clone(), &log)?)
            }),
        )
        .await?;
        let (c, log) = (config.offsets.clone(), logger.clone());
        let bounds = OffsetBounds::new(view.clone(), store.clone());
        let offsets = spawn(
            supervisor,
            ChildSpec::new("offset-manager", move || {
                Ok(OffsetManager::load(c.clone(), &log)?.with_bounds(bounds.clone()))
            }),
        )
        .await?;
        let (c, log) = (config.subscription_groups.clone(), logger.clone());
        let subscription_groups = spawn(
            supervisor,
            ChildSpec::new("subscription-group-manager", move || {
                Ok(SubscriptionGroupManager::load(c.clone(), &log)?)
            }),
        )
        .await?;
        let (c, log) = (config.groups, logger.clone());
        let resolver = CallRelay::new(subscription_groups.clone()).start();
        let topic_resolver = CallRelay::new(topics.clone()).start();
        let groups = spawn(
            supervisor,
            ChildSpec::new("group-manager", move || {
                Ok(GroupManager::new(c, &log)
                    .with_subscription_groups(resolver.clone().recipient())
                    .with_retry_topics(topic_resolver.clone().recipient()))
            }),
        )
        .await?;
        let log = logger.clone();
        let locks = spawn(
            supervisor,
            ChildSpec::new("queue-locks", move || {
                Ok(QueueLockManager::new(DEFAULT_LOCK_EXPIRY, &log))
            }),
        )
        .await?;

        let dispatcher_arbiter = config.dispatcher_thread.then(|| Arbiter::new().handle());
        let mut dispatcher_cfg = config.dispatcher.clone();
        if config.dispatcher_thread {
            // On its own thread already: no hand-off of big rounds.
            dispatcher_cfg.offload_bytes = u64::MAX;
        }
        let (s, log) = (store.clone(), logger.clone());
        let spec = ChildSpec::new("dispatcher", move || {
            Ok(Dispatcher::new(s.clone(), dispatcher_cfg.clone(), &log))
        });
        let spec = match &dispatcher_arbiter {
            Some(a) => spec.on_arbiter(a.clone()),
            None => spec,
        };
        let dispatcher = spawn(supervisor, spec).await?;

        let (s, v, c, log) = (
            store.clone(),
            view.clone(),
            config.pull.clone(),
            logger.clone(),
        );
        let offsets_relay = CallRelay::new(offsets.clone()).start();
        let pull_metrics = Arc::clone(&metrics);
        let pull = spawn(
            supervisor,
            ChildSpec::new("pull-hold", move || {
                Ok(PullHold::new(s.clone(), v.clone(), c.clone(), &log)
                    .with_offset_manager(offsets_relay.clone().recipient())
                    .with_metrics(pull_metrics.clone()))
            }),
        )
        .await?;
        // Stored events reach the long-poll holder (and plugins) through a
        // supervised fan-out whose subscriber list outlives its restarts;
        // it is re-subscribed to every dispatcher incarnation. Subscribed
        // before the writer starts, so no event is missed; the store
        // dispatched everything older while it opened.
        let subscribers =
            StoredSubscribers::new(vec![Relay::new(pull.clone()).start().recipient()]);
        let fanout = spawn(
            supervisor,
            ChildSpec::new("stored-fanout", move || {
                Ok(StoredFanout::new(subscribers.clone()))
            }),
        )
        .await?;
        let to_fanout = Relay::new(fanout.clone()).start();
        follow(&dispatcher, move |d| {
            d.do_send(SubscribeStored(to_fanout.clone().recipient()))
        });

        let s = store.clone();
        let query = spawn(
            supervisor,
            ChildSpec::new("query", move || Ok(QueryService::new(s.clone()))),
        )
        .await?;
        let (s, c, log) = (store.clone(), config.flush.clone(), logger.clone());
        let flush = spawn(
            supervisor,
            ChildSpec::new("flush", move || {
                Ok(FlushService::new(s.clone(), c.clone(), &log))
            }),
        )
        .await?;
        let (s, c, log) = (store.clone(), config.retention.clone(), logger.clone());
        let retention = spawn(
            supervisor,
            ChildSpec::new("retention", move || {
                Ok(RetentionCleaner::new(s.clone(), c.clone(), &log))
            }),
        )
        .await?;

        let notifier = ChildRef::empty();

        // Replication: the listener is bound before any actor that could
        // fail to start after it, and before the writer takes sends.
        let ha = HaState::new(config.ha.role);
        let ha_socket = match (config.ha.role.is_master(), config.ha.listen) {
            (true, Some(addr)) => {
                let socket = std::net::TcpListener::bind(addr)
                    .and_then(|s| s.local_addr().map(|bound| (s, bound)))
                    .map_err(|source| WiringError::HaListen { addr, source })?;
                Some(socket)
            }
            _ => None,
        };
        let writer_arbiter = config.writer_thread.then(|| Arbiter::new().handle());
        let mut writer_cfg = config.writer.clone();
        if config.dispatcher_thread && writer_cfg.nudge_interval.is_zero() {
            // Waking a dispatcher on another thread per append costs more
            // than it saves; nudge at most every millisecond.
            writer_cfg.nudge_interval = Duration::from_millis(1);
        }
        let (s, v, h, sync_timeout, log) = (
            store.clone(),
            view.clone(),
            ha.clone(),
            config.ha.sync_timeout,
            logger.clone(),
        );
        let resolver = CallRelay::new(topics.clone()).start();
        let appended = Relay::new(dispatcher.clone()).start();
        let writer_metrics = Arc::clone(&metrics);
        let spec = ChildSpec::new("commit-log", move || {
            Ok(CommitLogActor::new(
                s.clone(),
                v.clone(),
                resolver.clone().recipient(),
                writer_cfg.clone(),
                &log,
            )
            .with_dispatcher(appended.clone().recipient())
            .with_ha(h.clone(), sync_timeout)
            .with_metrics(Arc::clone(&writer_metrics)))
        });
        let spec = match &writer_arbiter {
            Some(a) => spec.on_arbiter(a.clone()),
            None => spec,
        };
        let writer = spawn(supervisor, spec).await?;

        let (s, w, h, log) = (store.clone(), writer.clone(), ha.clone(), logger.clone());
        let schedule = spawn(
            supervisor,
            ChildSpec::new("schedule", move || {
                Ok(
                    ScheduleService::load(s.clone(), w.clone(), schedule_cfg.clone(), &log)?
                        .with_ha(h.clone()),
                )
            }),
        )
        .await?;
        let (s, w, c, h, log) = (
            store.clone(),
            writer.clone(),
            config.timer.clone(),
            ha.clone(),
            logger.clone(),
        );
        TimerService::load(store.clone(), writer.clone(), config.timer.clone(), &logger)
            .map_err(|e| WiringError::Start(format!("timer service: {e}")))?;
        let timer = spawn(
            supervisor,
            ChildSpec::new("timer", move || {
                TimerService::load(s.clone(), w.clone(), c.clone(), &log)
                    .map(|t| t.with_ha(h.clone()))
            }),
        )
        .await?;
        let (s, w, log) = (store.clone(), writer.clone(), logger.clone());
        let end_transaction = spawn(
            supervisor,
            ChildSpec::new("end-transaction", move || {
                Ok(EndTransactionService::new(s.clone(), w.clone(), &log))
            }),
        )
        .await?;
        TransactionChecker::load(
            config.transactions.clone(),
            store.clone(),
            writer.clone(),
            end_transaction.clone(),
            groups.clone(),
            notifier.clone(),
            &logger,
        )
        .map_err(|e| WiringError::Start(format!("transaction checker: {e}")))?;
        let (c, s, w, e, g, n, h, log) = (
            config.transactions.clone(),
            store.clone(),
            writer.clone(),
            end_transaction.clone(),
            groups.clone(),
            notifier.clone(),
            ha.clone(),
            logger.clone(),
        );
        let transaction_checker = spawn(
            supervisor,
            ChildSpec::new("transaction-checker", move || {
                Ok(TransactionChecker::load(
                    c.clone(),
                    s.clone(),
                    w.clone(),
                    e.clone(),
                    g.clone(),
                    n.clone(),
                    &log,
                )?
                .with_ha(h.clone()))
            }),
        )
        .await?;
        let (s, v, w, g, o, log) = (
            store.clone(),
            view.clone(),
            writer.clone(),
            subscription_groups.clone(),
            offsets.clone(),
            logger.clone(),
        );
        let retry = spawn(
            supervisor,
            ChildSpec::new("retry", move || {
                Ok(RetryService::new(
                    s.clone(),
                    v.clone(),
                    w.clone(),
                    g.clone(),
                    o.clone(),
                    &log,
                ))
            }),
        )
        .await?;

        // The simple (pop) consumer: after the writer, the timer (which
        // delivers its checkpoints) and the group configs.
        let pop_metrics = Arc::clone(&metrics);
        let (s, v, w, g, c, o, log) = (
            store.clone(),
            view.clone(),
            writer.clone(),
            subscription_groups.clone(),
            config.pop.clone(),
            offsets.clone(),
            logger.clone(),
        );
        persist::load_or_backup::<super::pop_service::PopState>(&c.path, &logger)
            .map_err(|e| WiringError::Start(format!("pop service: {e}")))?;
        let pop = spawn(
            supervisor,
            ChildSpec::new("pop", move || {
                Ok(
                    PopService::load(s.clone(), v.clone(), w.clone(), g.clone(), c.clone(), &log)?
                        .with_metrics(Arc::clone(&pop_metrics))
                        .with_offsets(o.clone()),
                )
            }),
        )
        .await?;
        // Resets move the pop positions too.
        let (s, v, o, g, n, p, name, log) = (
            store.clone(),
            view.clone(),
            offsets.clone(),
            groups.clone(),
            notifier.clone(),
            pop.clone(),
            config.broker_name.clone(),
            logger.clone(),
        );
        let offset_reset = spawn(
            supervisor,
            ChildSpec::new("offset-reset", move || {
                Ok(OffsetResetService::new(
                    s.clone(),
                    v.clone(),
                    o.clone(),
                    g.clone(),
                    n.clone(),
                    &name,
                    &log,
                )
                .with_pop(p.clone()))
            }),
        )
        .await?;
        let ha_source = config_source(&view, &subscription_groups, &offsets, &schedule);
        let ha_replicator = ChildRef::empty();
        let ha_addr = match ha_socket {
            Some((socket, bound)) => {
                spawn_replicator(
                    supervisor,
                    &ha_replicator,
                    socket,
                    bound,
                    (&store, &ha, &config.ha, &ha_source),
                    &logger,
                )
                .await?;
                Some(bound)
            }
            None => None,
        };
        let (s, h, c, name, log) = (
            store.clone(),
            ha.clone(),
            config.ha.clone(),
            config.broker_name.clone(),
            logger.clone(),
        );
        let appended = Relay::new(dispatcher.clone()).start();
        let sink = config_sink(&topics, &subscription_groups, &offsets, &schedule, &logger);
        let ha_client = spawn(
            supervisor,
            ChildSpec::new("ha-client", move || {
                Ok(HaClient::new(
                    s.clone(),
                    h.clone(),
                    c.clone(),
                    Some(appended.clone().recipient()),
                    Some(sink.clone()),
                    &name,
                    &log,
                ))
            }),
        )
        .await?;

        let (s, h, m, sup, log) = (
            store.clone(),
            ha.clone(),
            Arc::clone(&metrics),
            supervisor.clone(),
            logger.clone(),
        );
        let (effective, name, started) = (
            Arc::new(config.effective_config.clone()),
            config.broker_name.clone(),
            std::time::Instant::now(),
        );
        let status = spawn(
            supervisor,
            ChildSpec::new("status", move || {
                Ok(StatusService::new(
                    s.clone(),
                    h.clone(),
                    m.clone(),
                    sup.clone(),
                    effective.clone(),
                    name.clone(),
                    started,
                    &log,
                ))
            }),
        )
        .await?;

        // Held pops are woken by stored messages (the fan-out's subscriber
        // list outlives its restarts: subscribed once).
        if let Some(f) = fanout.addr() {
            f.do_send(SubscribeStored(Relay::new(pop.clone()).start().recipient()));
        }

        Ok(Self {
            metrics,
            status,
            store,
            view,
            topics,
            offsets,
            groups,
            locks,
            subscription_groups,
            writer,
            dispatcher,
            pull,
            query,
            flush,
            retention,
            offset_reset,
            schedule,
            timer,
            retry,
            pop,
            end_transaction,
            transaction_checker,
            notifier,
            foreign_sessions: ForeignSessions::default(),
            stored: Relay::new(fanout).start().recipient(),
            ha,
            ha_replicator,
            ha_addr,
            ha_client,
            ha_config: config.ha.clone(),
            ha_source,
            writer_arbiter,
            dispatcher_arbiter,
            logger,
        })
    }

    /// Routes every request code the broker serves (table in the module
    /// docs) to the actor that serves it.
    pub fn route(&self, router: &mut Router) {
        route_child::<SendMessageRequest, _>(router, &self.writer);
        route_child::<SendBatchMessageRequest, _>(router, &self.writer);
        route_child::<PullMessageRequest, _>(router, &self.pull);
        route_child::<GetMaxOffsetRequest, _>(router, &self.query);
        route_child::<GetMinOffsetRequest, _>(router, &self.query);
        route_child::<SearchOffsetByTimestampRequest, _>(router, &self.query);
        route_child::<ViewMessageByIdRequest, _>(router, &self.query);
        route_child::<ViewMessagesByQueueOffsetRequest, _>(router, &self.query);
        route_child::<QueryMessageRequest, _>(router, &self.query);
        route_child::<CreateTopicRequest, _>(router, &self.topics);
        route_child::<DeleteTopicInBrokerRequest, _>(router, &self.topics);
        route_child::<GetAllTopicConfigRequest, _>(router, &self.topics);
        route_child::<QueryConsumerOffsetRequest, _>(router, &self.offsets);
        route_child::<UpdateConsumerOffsetRequest, _>(router, &self.offsets);
        route_child::<HeartbeatRequest, _>(router, &self.groups);
        route_child::<GetConsumerListByGroupRequest, _>(router, &self.groups);
        route_child::<GetConsumerConnectionListRequest, _>(router, &self.groups);
        route_child::<GetProducerConnectionListRequest, _>(router, &self.groups);
        route_child::<GetBrokerRuntimeInfoRequest, _>(router, &self.status);
        route_child::<GetBrokerConfigRequest, _>(router, &self.status);
        route_child::<LockBatchMqRequest, _>(router, &self.locks);
        route_child::<UnlockBatchMqRequest, _>(router, &self.locks);
        route_child::<CreateSubscriptionGroupRequest, _>(router, &self.subscription_groups);
        route_child::<GetAllSubscriptionGroupRequest, _>(router, &self.subscription_groups);
        route_child::<DeleteSubscriptionGroupRequest, _>(router, &self.subscription_groups);
        route_child::<ResetOffsetRequest, _>(router, &self.offset_reset);
        route_child::<ConsumerSendMsgBackRequest, _>(router, &self.retry);
        route_child::<ResendDeadLettersRequest, _>(router, &self.retry);
        route_child::<EndTransactionRequest, _>(router, &self.end_transaction);
        route_child::<PopMessageRequest, _>(router, &self.pop);
        route_child::<AckMessageRequest, _>(router, &self.pop);
        route_child::<BatchAckMessageRequest, _>(router, &self.pop);
        route_child::<ChangeInvisibleTimeRequest, _>(router, &self.pop);
        route_child::<PromoteBrokerRequest, _>(router, &self.ha_client);
    }

    /// Turns consumer-group changes into `NOTIFY_CONSUMER_IDS_CHANGED`
    /// pushes over `listener`'s connections, so clients rebalance at once,
    /// and offset resets into `RESET_CONSUMER_CLIENT_OFFSET` pushes (a
    /// supervised `group-notifier` child).
    pub async fn notify_groups_through(
        &self,
        supervisor: &Addr<Supervisor>,
        listener: ChildRef<Listener>,
    ) -> Result<(), WiringError> {
        let foreign = self.foreign_sessions.clone();
        supervisor
            .send(SpawnChildInto {
                spec: ChildSpec::new("group-notifier", move || {
                    Ok(GroupNotifier::new(listener.clone()).with_foreign(foreign.clone()))
                }),
                handle: self.notifier.clone(),
            })
            .await
            .map_err(|e| WiringError::Start(e.to_string()))?;
        let to_notifier = Relay::new(self.notifier.clone()).start();
        follow(&self.groups, move |gm| {
            gm.do_send(SubscribeGroups(to_notifier.clone().recipient()))
        });
        Ok(())
    }

    /// Binds an HA listener on `addr` and starts the `ha-replicator` under
    /// `supervisor` (a promoted slave taking slaves of its own); returns
    /// the bound address. An error if one runs already.
    pub async fn listen_for_slaves(
        &self,
        supervisor: &Addr<Supervisor>,
        addr: SocketAddr,
    ) -> Result<SocketAddr, WiringError> {
        if self.ha_replicator.addr().is_some() {
            return Err(WiringError::Start(
                "ha-replicator: already listening".into(),
            ));
        }
        let (socket, bound) = std::net::TcpListener::bind(addr)
            .and_then(|s| s.local_addr().map(|bound| (s, bound)))
            .map_err(|source| WiringError::HaListen { addr, source })?;
        spawn_replicator(
            supervisor,
            &self.ha_replicator,
            socket,
            bound,
            (&self.store, &self.ha, &self.ha_config, &self.ha_source),
            &self.logger,
        )
        .await?;
        Ok(bound)
    }

    /// Final flush and checkpoint (call before stopping the supervisor).
    pub async fn flush_and_checkpoint(&self) {
        let Some(flush) = self.flush.addr() else {
            warn!(self.logger, "final flush skipped: flush service down");
            return;
        };
        match flush
            .send(FlushAndCheckpoint)
            .timeout(Duration::from_secs(30))
            .await
        {
            Ok(Ok(lag)) => info!(self.logger, "final flush done"; "lag" => ?lag),
            other => warn!(self.logger, "final flush failed"; "result" => ?other),
        }
    }

    /// Closes the store once every actor holding it has stopped (after the
    /// supervisor stopped them), and stops the extra arbiters.
    pub async fn close(self) {
        let Self {
            store,
            writer_arbiter,
            dispatcher_arbiter,
            logger,
            ..
        } = self;
        // Every other handle to the store lives in the stopped actors and
        // their factories, dropped with the supervisor.
        match store.close(Duration::from_secs(10)).await {
            Ok(Ok(())) => info!(logger, "store closed cleanly"),
            Ok(Err(e)) => warn!(logger, "store close failed"; "error" => %e),
            Err(_) => warn!(logger, "store still in use at exit; next start recovers"),
        }
        for arbiter in [writer_arbiter, dispatcher_arbiter].into_iter().flatten() {
            arbiter.stop();
        }
    }
}

/// Starts the `ha-replicator` child on `socket` into `handle`.
async fn spawn_replicator(
    supervisor: &Addr<Supervisor>,
    handle: &ChildRef<HaReplicator>,
    socket: std::net::TcpListener,
    bound: SocketAddr,
    (store, ha, config, source): (&BrokerStore, &Arc<HaState>, &HaConfig, &SnapshotSource),
    logger: &Logger,
) -> Result<(), WiringError> {
    let first = std::sync::Mutex::new(Some(socket));
    let (s, h, c, source, log) = (
        store.clone(),
        ha.clone(),
        config.clone(),
        source.clone(),
        logger.clone(),
    );
    supervisor
        .send(SpawnChildInto {
            spec: ChildSpec::new("ha-replicator", move || {
                let socket = match first.lock().ok().and_then(|mut f| f.take()) {
                    Some(socket) => socket,
                    None => std::net::TcpListener::bind(bound).map_err(|e| {
                        format!("cannot bind the HA listener again on {bound}: {e}")
                    })?,
                };
                Ok(HaReplicator::new(
                    socket,
                    s.clone(),
                    h.clone(),
                    c.clone(),
                    Some(source.clone()),
                    &log,
                ))
            }),
            handle: handle.clone(),
        })
        .await
        .map_err(|e| WiringError::Start(e.to_string()))
}

/// What a master sends its slaves besides the log: its topic configs
/// (from the shared snapshot), subscription groups and consumer offsets.
fn config_source(
    view: &TopicView,
    groups: &ChildRef<SubscriptionGroupManager>,
    offsets: &ChildRef<OffsetManager>,
    schedule: &ChildRef<ScheduleService>,
) -> SnapshotSource {
    let (v, groups, offsets, schedule) = (
        view.clone(),
        groups.clone(),
        offsets.clone(),
        schedule.clone(),
    );
    let view = v.clone();
    let snapshot: super::ha::config_sync::SnapshotFn = Arc::new(move || {
        let topics = view.snapshot().all().values().cloned().collect();
        let (groups, offsets, schedule) = (groups.addr(), offsets.addr(), schedule.addr());
        Box::pin(async move {
            let delay_progress = schedule?.send(GetDelayProgress).await.ok()?;
            let groups = groups?
                .send(Call::new(GetAllSubscriptionGroupRequest {}))
                .await
                .ok()?
                .ok()?
                .fields
                .subscription_group_table
                .into_values()
                .collect();
            let offsets = offsets?.send(GetOffsetTable).await.ok()?;
            Some(ConfigSnapshot {
                topics,
                subscription_groups: groups,
                offsets,
                delay_progress,
            })
        })
    });
    SnapshotSource {
        snapshot,
        version: Arc::new(move || v.snapshot().data_version()),
    }
}

/// How a slave takes its master's configs: upserts through its own
/// managers (unchanged entries cost nothing), offsets merged.
fn config_sink(
    topics: &ChildRef<TopicManager>,
    groups: &ChildRef<SubscriptionGroupManager>,
    offsets: &ChildRef<OffsetManager>,
    schedule: &ChildRef<ScheduleService>,
    logger: &Logger,
) -> SnapshotSink {
    let (topics, groups, offsets, schedule, logger) = (
        topics.clone(),
        groups.clone(),
        offsets.clone(),
        schedule.clone(),
        logger.clone(),
    );
    Arc::new(move |snap: ConfigSnapshot| {
        let (topics, groups, offsets, schedule, logger) = (
            topics.addr(),
            groups.addr(),
            offsets.addr(),
            schedule.addr(),
            logger.clone(),
        );
        Box::pin(async move {
            if let Some(t) = topics {
                for config in snap.topics {
                    if let Ok(Err(e)) = t.send(Call::new(CreateTopicRequest { config })).await {
                        warn!(logger, "cannot take the master's topic"; "error" => %e);
                    }
                }
            }
            if let Some(g) = groups {
                for config in snap.subscription_groups {
                    let call = Call::new(CreateSubscriptionGroupRequest { config });
                    if let Ok(Err(e)) = g.send(call).await {
                        warn!(logger, "cannot take the master's group"; "error" => %e);
                    }
                }
            }
            if let Some(o) = offsets {
                let _ = o.send(MergeOffsets(snap.offsets)).await;
            }
            if let Some(s) = schedule {
                let _ = s.send(AdvanceDelayProgress(snap.delay_progress)).await;
            }
        })
    })
}

/// Runs `on_start` for the current incarnation of `child` and for every
/// new one (re-subscribing stable relays after a restart).
pub fn follow<A, F>(child: &ChildRef<A>, on_start: F)
where
    A: Actor,
    F: Fn(&Addr<A>) + 'static,
{
    let mut incarnations = child.subscribe();
    if let Some(addr) = incarnations.borrow_and_update().clone() {
        on_start(&addr);
    }
    actix_rt::spawn(async move {
        while incarnations.changed().await.is_ok() {
            let current = incarnations.borrow_and_update().clone();
            if let Some(addr) = current {
                on_start(&addr);
            }
        }
    });
}

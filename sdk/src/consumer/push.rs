//! [`PushConsumer`]: a consumer group member that pulls its share of the
//! queues (long polling), hands messages to a listener on a worker pool,
//! rebalances on membership changes and commits offsets.
//!
//! How it runs (all on the current arbiter, never blocking it):
//! - the **service actor** (`ConsumerService`) drives the timers below;
//! - one **pull service** (`PullService`, an actor) per queue held runs
//!   that queue's pull loop (below);
//! - both run under the consumer's [`Supervisor`] (one-for-one, each child
//!   5 restarts in 60 s, backoff 10 ms doubling to 1 s), rebuilt from the
//!   shared consumer core: a restarted service heartbeats and rebalances
//!   at once, before anything is pulled again (a membership notification
//!   may have come while it was down); a restarted pull service pulls on
//!   from where its queue's [`ProcessQueue`] says the next pull starts;
//! - while the service actor is down (or catching up after a restart),
//!   **nothing is pulled or delivered**: the pull loops and queued
//!   deliveries wait for the next incarnation (no delivery from an
//!   assignment that may be stale). Once a child's
//!   restart budget is spent the consumer **fails**: every child is
//!   stopped, every queue dropped, what was consumed is committed, the
//!   broker connections close (the brokers drop the client from the group
//!   and the other members take its queues), the reason is logged at
//!   `ERROR` and reported by [`PushConsumer::state`] and
//!   [`PushConsumer::failed`]. A client library never stops the user's
//!   actix `System`: the supervisor escalates to a small client-side actor
//!   (`ServiceWatch`) that does the above;
//! - **rebalance**: at start, on every `NOTIFY_CONSUMER_IDS_CHANGED`
//!   pushed by a broker, and every 20 s: read the group's members from a
//!   broker, apply the [`AllocateStrategy`], stop the pull services of
//!   queues no longer ours (committing their offset) and start the new ones (at
//!   the committed offset, or the configured start position for a new
//!   group);
//! - **heartbeat**: every 30 s (and at start) to every broker of the
//!   subscribed topics;
//! - **commit**: every 5 s, changed offsets go to the broker
//!   (clustering) or to a local file (broadcasting);
//! - **offset reset** (`RESET_CONSUMER_CLIENT_OFFSET`, pushed by a broker
//!   when `actormq admin offset reset` moved the group's offsets): each
//!   queue named that this instance holds is released at once (its pull
//!   stopped, what it cached dropped undelivered, no old offset committed),
//!   the new offset is committed, and a rebalance takes the queue again
//!   from there; no restart;
//! - one **pull loop** per queue: long-polling pulls with the
//!   subscription (tags: the broker filters by tag hash, the client
//!   rechecks the tag string; SQL92: the broker evaluates it, the client
//!   rechecks with the same code), paused while the queue's [`ProcessQueue`] holds 1000
//!   messages or 100 MiB (or spans 2000 offsets);
//! - the **listener** runs in `spawn_blocking`, at most `workers` at once;
//! - **orderly** mode ([`PushConsumerBuilder::orderly`]): queues are locked
//!   at the broker before they are pulled, the locks renewed every 20 s and
//!   released (after the queue's listener call and offset commit) when
//!   rebalance drops a queue and on shutdown; one worker per queue delivers
//!   in queue order and retries a failed batch in place. See
//!   [`orderly`](super::orderly).
//!
//! **Retries** (clustering, concurrent mode; orderly mode retries in
//! place, see [`orderly`](super::orderly)): a "later" result or a listener panic sends
//! each message of the batch back to its broker (`CONSUMER_SEND_MSG_BACK`),
//! which stores it in the group's retry topic `%RETRY%<group>` for
//! redelivery after delay level `3 + reconsume times` (10 s, 30 s, 1 m, …)
//! or, after the group's `retry_max_times` (16), in its dead-letter topic
//! `%DLQ%<group>`, which no consumer is delivered. The queue's offset then
//! moves past the message as if it was consumed. Every clustering
//! consumer subscribes to its group's retry topic by itself (from its
//! first message), and a retried message reaches the listener under the
//! topic it was first consumed from (`RETRY_TOPIC`) with its
//! `reconsume_times`. Only when the broker cannot take a message back (or
//! when broadcasting) is it redelivered in process after `later_delay_ms`
//! with `reconsume_times` incremented, the offset held before it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::{
    ConsumeFromWhere, ConsumeType, ConsumerData, ConsumerSendMsgBackRequest,
    GetConsumerListByGroupRequest, HeartbeatRequest, MessageModel,
    ResetConsumerClientOffsetRequest, SendBackEntry, SubscriptionGroupConfig,
};
use actormq_protocol::system_topic;
use actormq_protocol::{MessageQueue, StoredMessage, StoredView};
use actormq_runtime::{
    ChildEscalated, ChildRef, ChildSpec, Escalation, FactoryError, RestartPolicy, ServiceError,
    SpawnChildInto, StopChild, StopSupervisor, Supervisor,
};
use serde::{Deserialize, Serialize};
use slog::{Logger, debug, error, info, o, warn};
use tokio::sync::{Notify, Semaphore, watch};

use super::client::{ClusterClient, NotifyFn, Pushes, ResetFn};
use super::offset_store::{LocalOffsetFile, OffsetTable};
use super::orderly::{LOCK_RETRY, LockTable, OrderlySlot};
use super::process_queue::{FlowLimits, ProcessQueue};
use super::pull::{Position, PullStatus, commit_offset, offset_at, pull_views, query_offset};
use super::{ConsumerError, TagFilter};
use crate::rebalance::{
    AllocateAveragely, AllocateAveragelyByCircle, AllocateConsistentHash, AllocateStrategy,
};

/// What the listener made of a batch of messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeResult {
    /// Consumed; the offset may move past them.
    Success,
    /// Not now: back to the broker for a delayed retry (see the module
    /// docs). In orderly mode: suspend the queue and deliver the same
    /// messages again (see [`orderly`](super::orderly)).
    Later,
    /// Not consumed, and not a failure: kept here and offered again after
    /// `later_delay_ms` (no retry, `reconsume_times` unchanged), the
    /// offset held before it. For a listener that is about to stop (e.g.
    /// a tool that printed the messages it was asked for) and leaves the
    /// rest to the next consumer of the group.
    Retain,
}

/// What a [`PushConsumer`] is doing; see [`PushConsumer::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// The services run; queues are pulled and delivered.
    Running,
    /// The service actor died and its supervisor is restarting it (or the
    /// new incarnation is catching up: heartbeat and rebalance): nothing
    /// is pulled or delivered until it has.
    Restarting,
    /// The services could not be restarted (restart budget spent): the
    /// consumer stopped pulling, dropped its queues and left the group.
    /// It stays so; shut it down and start a new one.
    Failed {
        /// Why, as the supervisor reported it.
        reason: String,
    },
    /// [`PushConsumer::shutdown`] was called.
    Stopped,
}

/// How a consumer ended (the core's `end` watch).
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Failed(String),
    Stopped,
}

/// The listener of a [`PushConsumer`]: called off the actor loop (in
/// `spawn_blocking`), up to `workers` calls at once, order not kept; in
/// orderly mode ([`PushConsumerBuilder::orderly`]) one call at a time per
/// queue, in queue order.
pub type Listener = Arc<dyn Fn(&[StoredMessage]) -> ConsumeResult + Send + Sync>;

/// A listener of borrowed messages ([`PushConsumerBuilder::view_listener`]):
/// each [`StoredView`] reads its fields where they lie in the pull reply,
/// so nothing is decoded or allocated per message for it. Called as a
/// [`Listener`] is.
pub type ViewListener = Arc<dyn Fn(&[StoredView]) -> ConsumeResult + Send + Sync>;

/// The listener a consumer was built with.
#[derive(Clone)]
pub(crate) enum AnyListener {
    /// Owned messages: each view is turned into a [`StoredMessage`] on the
    /// listener's thread, just before the call.
    Owned(Listener),
    /// Borrowed messages.
    Views(ViewListener),
}

impl AnyListener {
    fn call(&self, msgs: &[StoredView]) -> ConsumeResult {
        match self {
            AnyListener::Owned(f) => {
                let owned: Vec<StoredMessage> = msgs.iter().map(StoredView::to_stored).collect();
                f(&owned)
            }
            AnyListener::Views(f) => f(msgs),
        }
    }
}

/// Clustering (share the queues) or broadcasting (every instance gets
/// every message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageModelConfig {
    /// Queues shared out among the group; offsets on the broker.
    #[default]
    Clustering,
    /// Every instance gets every message; offsets in a local file.
    Broadcasting,
}

/// Where a new group (no committed offset) starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsumeFrom {
    /// After the last message (default).
    #[default]
    Last,
    /// At the first kept message.
    First,
    /// At the first message stored at or after this time (ms since epoch).
    Timestamp(u64),
}

/// Settings of a [`PushConsumer`]; load with figment
/// ([`PushConsumerConfig::from_figment`]) or set through the builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PushConsumerConfig {
    /// Consumer group.
    pub group: String,
    /// Name servers (`host:port`, comma-separated lists allowed).
    pub namesrv: Vec<String>,
    /// Topic → tag expression (`*`, `A || B`).
    pub subscriptions: BTreeMap<String, String>,
    /// Topic → SQL92 expression over properties (a topic is in one of
    /// the two maps, not both).
    pub sql_subscriptions: BTreeMap<String, String>,
    /// Clustering (default) or broadcasting.
    pub message_model: MessageModelConfig,
    /// Start position of a new group.
    pub consume_from: ConsumeFrom,
    /// `average` (default), `average_by_circle` or `consistent_hash`.
    pub allocate_strategy: String,
    /// Listener calls at once. Default 4.
    pub workers: usize,
    /// Messages per pull. Default 32.
    pub pull_batch_size: u32,
    /// Messages per listener call. Default 1.
    pub consume_batch_size: usize,
    /// Long-polling hold asked of the broker. Default 15 000.
    pub pull_suspend_ms: u64,
    /// Rebalance period. Default 20 000.
    pub rebalance_interval_ms: u64,
    /// Heartbeat period. Default 30 000.
    pub heartbeat_interval_ms: u64,
    /// Offset commit period. Default 5 000.
    pub commit_interval_ms: u64,
    /// Delay before redelivering a "later" batch. Default 1 000.
    pub later_delay_ms: u64,
    /// Flow control: cached messages per queue. Default 1000.
    pub cache_max_messages: usize,
    /// Flow control: cached bytes per queue. Default 100 MiB.
    pub cache_max_bytes: usize,
    /// Flow control: offset span per queue. Default 2000.
    pub cache_max_span: u64,
    /// Where broadcasting offsets are kept: `<offset_dir>/<group>.offsets`,
    /// or `<offset_dir>/<instance_name>/<group>.offsets` when an instance
    /// name is set (two broadcasting instances of a group on one host need
    /// different instance names or directories). Default
    /// `$HOME/.actormq_offsets` (`./actormq-offsets` without `HOME`).
    pub offset_dir: PathBuf,
    /// Instance name, the middle of the client id `HOST@INSTANCE@SUFFIX`
    /// (default: the process id). The id stays unique with any name: see
    /// [`crate::client_id`].
    pub instance_name: Option<String>,
    /// Orderly consumption (clustering only): each queue locked at the
    /// broker and consumed by one worker at a time, in queue order; see
    /// [`orderly`](super::orderly). Default false (concurrent).
    pub orderly: bool,
    /// Orderly: period of the lock renewal (every queue held, one
    /// `LOCK_BATCH_MQ` per broker). Default 20 000; at least 100.
    pub lock_renew_interval_ms: u64,
    /// Orderly: a queue whose lock was not granted for this long is not
    /// delivered any more (the broker keeps a lock 60 s). Default 30 000.
    pub lock_max_live_ms: u64,
    /// Orderly: how long a queue is suspended after a failed batch before
    /// the same batch is delivered again. Default 1 000.
    pub suspend_ms: u64,
}

/// `$HOME/.actormq_offsets`, or `./actormq-offsets` without `HOME`.
fn default_offset_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home).join(".actormq_offsets"),
        _ => PathBuf::from("actormq-offsets"),
    }
}

impl Default for PushConsumerConfig {
    fn default() -> Self {
        PushConsumerConfig {
            group: String::new(),
            namesrv: vec!["127.0.0.1:9876".into()],
            subscriptions: BTreeMap::new(),
            sql_subscriptions: BTreeMap::new(),
            message_model: MessageModelConfig::Clustering,
            consume_from: ConsumeFrom::Last,
            allocate_strategy: "average".into(),
            workers: 4,
            pull_batch_size: 32,
            consume_batch_size: 1,
            pull_suspend_ms: 15_000,
            rebalance_interval_ms: 20_000,
            heartbeat_interval_ms: 30_000,
            commit_interval_ms: 5_000,
            later_delay_ms: 1_000,
            cache_max_messages: 1000,
            cache_max_bytes: 100 * 1024 * 1024,
            cache_max_span: 2000,
            offset_dir: default_offset_dir(),
            instance_name: None,
            orderly: false,
            lock_renew_interval_ms: 20_000,
            lock_max_live_ms: 30_000,
            suspend_ms: 1_000,
        }
    }
}

impl PushConsumerConfig {
    /// Extracts the config from `figment` (missing keys take defaults).
    pub fn from_figment(figment: &figment::Figment) -> Result<Self, Box<figment::Error>> {
        figment.extract().map_err(Box::new)
    }

    fn strategy(&self) -> Result<Arc<dyn AllocateStrategy>, ConsumerError> {
        Ok(match self.allocate_strategy.as_str() {
            "" | "average" | "avg" => Arc::new(AllocateAveragely),
            "average_by_circle" | "circle" => Arc::new(AllocateAveragelyByCircle),
            "consistent_hash" => Arc::new(AllocateConsistentHash::default()),
            other => {
                return Err(ConsumerError::Config(format!(
                    "unknown allocate strategy {other:?}"
                )));
            }
        })
    }

    /// The compiled subscriptions by topic; a bad expression, or a topic
    /// subscribed both by tags and by SQL92, is refused.
    fn filters(&self) -> Result<BTreeMap<String, TagFilter>, ConsumerError> {
        let mut filters = BTreeMap::new();
        for (topic, expr) in &self.subscriptions {
            filters.insert(topic.clone(), TagFilter::parse(expr)?);
        }
        for (topic, expr) in &self.sql_subscriptions {
            if filters.contains_key(topic) {
                return Err(ConsumerError::Config(format!(
                    "topic {topic} is subscribed both by tags and by SQL92"
                )));
            }
            filters.insert(topic.clone(), TagFilter::sql(expr)?);
        }
        if self.message_model == MessageModelConfig::Clustering {
            // The group's failed messages come back through its retry
            // topic (see the module docs).
            filters.insert(
                system_topic::retry_topic(&self.group),
                TagFilter::parse("*")?,
            );
        }
        Ok(filters)
    }
}

/// Builds a [`PushConsumer`].
///
/// ```rust,ignore
/// let consumer = PushConsumerBuilder::new("my-group")
///     .namesrv("127.0.0.1:9876")
///     .subscribe("orders", "created || paid")
///     .listener(|msgs| { println!("{}", msgs.len()); ConsumeResult::Success })
///     .start()
///     .await?;
/// consumer.shutdown().await;
/// ```
pub struct PushConsumerBuilder {
    config: PushConsumerConfig,
    namesrv_set: bool,
    strategy: Option<Arc<dyn AllocateStrategy>>,
    listener: Option<AnyListener>,
    logger: Option<Logger>,
}

impl std::fmt::Debug for PushConsumerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumerBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl PushConsumerBuilder {
    /// A builder for a consumer of `group` with default settings.
    pub fn new(group: &str) -> PushConsumerBuilder {
        PushConsumerBuilder::from_config(PushConsumerConfig {
            group: group.to_string(),
            ..PushConsumerConfig::default()
        })
    }

    /// A builder starting from `config` (e.g. loaded with figment).
    pub fn from_config(config: PushConsumerConfig) -> PushConsumerBuilder {
        PushConsumerBuilder {
            config,
            namesrv_set: false,
            strategy: None,
            listener: None,
            logger: None,
        }
    }

    /// Adds a name server (`host:port` or a comma-separated list); the
    /// first call replaces the default `127.0.0.1:9876`.
    pub fn namesrv(mut self, addr: &str) -> Self {
        if !self.namesrv_set {
            self.config.namesrv.clear();
            self.namesrv_set = true;
        }
        self.config.namesrv.push(addr.to_string());
        self
    }

    /// Subscribes to `topic` with a tag expression (`*`, `A || B`).
    pub fn subscribe(mut self, topic: &str, tag_expr: &str) -> Self {
        self.config
            .subscriptions
            .insert(topic.to_string(), tag_expr.to_string());
        self
    }

    /// Subscribes to `topic` with a SQL92 expression over message
    /// properties (`a > 5 AND b IN ('x', 'y')`), evaluated by the broker;
    /// a bad expression fails [`start`](Self::start).
    pub fn subscribe_sql(mut self, topic: &str, expr: &str) -> Self {
        self.config
            .sql_subscriptions
            .insert(topic.to_string(), expr.to_string());
        self
    }

    /// Broadcasting instead of clustering.
    pub fn broadcasting(mut self) -> Self {
        self.config.message_model = MessageModelConfig::Broadcasting;
        self
    }

    /// Orderly consumption: each queue locked at the broker and consumed
    /// one batch at a time in queue order; a failed batch suspends its
    /// queue and is retried in place (see [`orderly`](super::orderly)).
    pub fn orderly(mut self) -> Self {
        self.config.orderly = true;
        self
    }

    /// Start position of a new group.
    pub fn consume_from(mut self, from: ConsumeFrom) -> Self {
        self.config.consume_from = from;
        self
    }

    /// Listener calls at once.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = n.max(1);
        self
    }

    /// Where broadcasting offsets are kept.
    pub fn offset_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.offset_dir = dir.into();
        self
    }

    /// The instance name (part of the client id).
    pub fn instance_name(mut self, name: &str) -> Self {
        self.config.instance_name = Some(name.to_string());
        self
    }

    /// Changes any other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut PushConsumerConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// A user queue allocation strategy (clustering).
    pub fn strategy(mut self, s: impl AllocateStrategy + 'static) -> Self {
        self.strategy = Some(Arc::new(s));
        self
    }

    /// The listener (required, this or [`view_listener`](Self::view_listener)).
    pub fn listener<F>(mut self, f: F) -> Self
    where
        F: Fn(&[StoredMessage]) -> ConsumeResult + Send + Sync + 'static,
    {
        self.listener = Some(AnyListener::Owned(Arc::new(f)));
        self
    }

    /// A listener of borrowed messages, the fastest way to consume: each
    /// [`StoredView`] reads its fields straight from the pull reply (no
    /// strings, no property map per message; `to_stored()` makes an owned
    /// copy where one is needed). Not for orderly consumption
    /// ([`orderly`](Self::orderly) takes [`listener`](Self::listener)).
    pub fn view_listener<F>(mut self, f: F) -> Self
    where
        F: Fn(&[StoredView]) -> ConsumeResult + Send + Sync + 'static,
    {
        self.listener = Some(AnyListener::Views(Arc::new(f)));
        self
    }

    /// The logger (default: discard).
    pub fn logger(mut self, logger: Logger) -> Self {
        self.logger = Some(logger);
        self
    }

    /// Starts the consumer: heartbeat, first rebalance, pull loops. Call
    /// inside an actix `System`.
    pub async fn start(self) -> Result<PushConsumer, ConsumerError> {
        let cfg = self.config;
        if cfg.group.is_empty() {
            return Err(ConsumerError::Config("empty consumer group".into()));
        }
        if cfg.subscriptions.is_empty() && cfg.sql_subscriptions.is_empty() {
            return Err(ConsumerError::Config("no subscription".into()));
        }
        if cfg.orderly && cfg.message_model == MessageModelConfig::Broadcasting {
            return Err(ConsumerError::Config(
                "orderly consumption needs clustering (queue locks are per group)".into(),
            ));
        }
        let filters = cfg.filters()?;
        let listener = self
            .listener
            .ok_or_else(|| ConsumerError::Config("no listener".into()))?;
        if cfg.orderly && matches!(listener, AnyListener::Views(_)) {
            return Err(ConsumerError::Config(
                "orderly consumption takes `listener` (owned messages), not `view_listener`".into(),
            ));
        }
        let strategy = match self.strategy {
            Some(s) => s,
            None => cfg.strategy()?,
        };
        let client_id = crate::client_id::new_client_id(&cfg.namesrv, cfg.instance_name.as_deref());
        let logger = self
            .logger
            .unwrap_or_else(|| Logger::root(slog::Discard, o!()))
            .new(o!("group" => cfg.group.clone(), "client" => client_id.clone()));
        let wake = Arc::new(Notify::new());
        let notify: NotifyFn = {
            let (wake, group) = (wake.clone(), cfg.group.clone());
            Arc::new(move |g: &str| {
                if g == group {
                    wake.notify_one();
                }
            })
        };
        // Offset resets are applied one at a time, off the session's
        // handler, by a task started once the core exists.
        let (reset_tx, mut reset_rx) =
            tokio::sync::mpsc::unbounded_channel::<ResetConsumerClientOffsetRequest>();
        let reset: ResetFn = Arc::new(move |req| {
            let _ = reset_tx.send(req);
        });
        let client = ClusterClient::new(
            &cfg.namesrv,
            logger.clone(),
            Pushes {
                notify: Some(notify),
                reset: Some(reset),
            },
            Duration::from_millis(cfg.pull_suspend_ms + 5_000),
        )?;
        let local = (cfg.message_model == MessageModelConfig::Broadcasting).then(|| {
            let dir = match &cfg.instance_name {
                Some(name) => cfg.offset_dir.join(
                    name.chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect::<String>(),
                ),
                None => cfg.offset_dir.clone(),
            };
            LocalOffsetFile::new(&dir, &cfg.group)
        });
        let cfg_lock_live = cfg.lock_max_live_ms;
        let core = Arc::new_cyclic(|weak: &Weak<Core>| Core {
            supervisor: start_supervisor(weak, &logger),
            workers: Arc::new(Semaphore::new(cfg.workers.max(1))),
            cfg,
            client_id,
            client,
            strategy,
            listener,
            filters,
            queues: Mutex::new(HashMap::new()),
            offsets: Mutex::new(OffsetTable::default()),
            local,
            wake,
            end: watch::Sender::new(None),
            service: ChildRef::empty(),
            incarnations: AtomicU64::new(0),
            ready: watch::Sender::new(0),
            pull_restarts: AtomicU64::new(0),
            group_config: Mutex::new(None),
            locks: Mutex::new(LockTable::new(Duration::from_millis(cfg_lock_live))),
            lock_pending: AtomicBool::new(false),
            releasing: Mutex::new(HashMap::new()),
            released: Notify::new(),
            logger,
        });
        let weak = Arc::downgrade(&core);
        actix_rt::spawn(async move {
            while let Some(req) = reset_rx.recv().await {
                let Some(core) = weak.upgrade() else { return };
                if core.halted() {
                    return;
                }
                core.reset_offsets(req).await;
            }
        });
        // Routes first (so the brokers are known), then heartbeat, then the
        // first rebalance (it starts the pull services, which wait for the
        // service actor), then the service actor, before returning.
        // (The retry topic is created by the brokers on the heartbeat.)
        let begun = async {
            for topic in core.filters.keys() {
                if !system_topic::is_retry_topic(topic) {
                    core.client.refresh(topic).await?;
                }
            }
            Ok::<_, ConsumerError>(())
        }
        .await;
        if let Err(e) = begun {
            core.supervisor.do_send(StopSupervisor);
            core.client.close();
            return Err(e);
        }
        // A broker refusing the consumer (a group it does not know and does
        // not create on first use, a bad subscription expression, or SQL92
        // with property filtering off) fails the start with its remark
        // instead of idling with no queues, as RocketMQ's client check does.
        if let Err(e) = core.heartbeat_checked().await {
            core.supervisor.do_send(StopSupervisor);
            core.client.close();
            return Err(e.into());
        }
        core.await_retry_route().await;
        core.rebalance().await;
        let weak = Arc::downgrade(&core);
        let spec = ChildSpec::new("service", move || ConsumerService::reload(&weak));
        core.supervisor.do_send(SpawnChildInto {
            spec,
            handle: core.service.clone(),
        });
        // The child starts on this arbiter once the supervisor handles it.
        if !core.service_ready().await {
            let reason = match core.state() {
                ConsumerState::Failed { reason } => reason,
                other => format!("consumer services did not start ({other:?})"),
            };
            core.client.close();
            return Err(ConsumerError::Failed(reason));
        }
        info!(core.logger, "push consumer started"; "queues" => core.assigned().len());
        Ok(PushConsumer { core })
    }
}

/// Starts the consumer's supervisor on the current arbiter; its children
/// (added later) and the escalation path:
///
/// ```text
/// push-consumer supervisor (one-for-one, RestartPolicy::default(): 5 restarts
/// │   in 60 s, backoff 10 ms → 1 s; budget spent → ServiceWatch fails the consumer)
/// ├── service             ConsumerService: rebalance / heartbeat / commit timers
/// └── pull BROKER:TOPIC:Q PullService per queue held (stopped when released)
/// ```
fn start_supervisor(core: &Weak<Core>, logger: &Logger) -> Addr<Supervisor> {
    let watch = ServiceWatch { core: core.clone() }.start();
    Supervisor::new(
        "push-consumer",
        logger,
        RestartPolicy::default(),
        Escalation::Notify(watch.recipient()),
    )
    .start()
}

/// A running push consumer; see the module docs. Stop it with
/// [`shutdown`](Self::shutdown) (dropping it without shutdown stops
/// nothing: its service actor and pull loops keep running until the
/// `System` stops).
pub struct PushConsumer {
    core: Arc<Core>,
}

/// Rebalance now (a membership notification, or the user).
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
struct RebalanceNow;

/// The consumer's service actor: the rebalance timer (20 s) and the
/// membership notifications, the heartbeat timer (30 s) and the commit
/// timer (5 s). Rebalances run one at a time (`ctx.wait`); the work itself
/// is async I/O on the [`Core`], so the actor never blocks. Supervised
/// (see [`start_supervisor`]); its state is the shared core, which each
/// incarnation reloads.
struct ConsumerService {
    core: Arc<Core>,
    /// This incarnation's number (1 = the first).
    incarnation: u64,
    /// Orderly: a rebalance is scheduled to lock queues assigned but not
    /// locked yet.
    lock_retry: bool,
}

impl ConsumerService {
    /// The factory: a new incarnation on the shared core.
    fn reload(core: &Weak<Core>) -> Result<ConsumerService, FactoryError> {
        let core = core.upgrade().ok_or("the consumer is gone")?;
        let incarnation = core.incarnations.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(ConsumerService {
            core,
            incarnation,
            lock_retry: false,
        })
    }

    fn rebalance(&mut self, ctx: &mut Context<Self>) {
        if self.core.halted() {
            return;
        }
        let core = self.core.clone();
        ctx.wait(
            async move { core.rebalance().await }
                .into_actor(self)
                .map(|(), act, ctx| act.retry_locks(ctx)),
        );
    }

    /// Orderly: while some assigned queue could not be locked (another
    /// instance still holds it), rebalance again after [`LOCK_RETRY`].
    fn retry_locks(&mut self, ctx: &mut Context<Self>) {
        if self.lock_retry || !self.core.lock_pending.load(Ordering::SeqCst) {
            return;
        }
        self.lock_retry = true;
        ctx.run_later(LOCK_RETRY, |act, ctx| {
            act.lock_retry = false;
            act.rebalance(ctx);
        });
    }
}

impl Actor for ConsumerService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.incarnation == 1 {
            // `start` did the first heartbeat and rebalance.
            self.core.ready.send_replace(self.incarnation);
            self.retry_locks(ctx);
        } else if !self.core.halted() {
            // Heartbeats and membership notifications may have been missed
            // while no incarnation ran: catch up before anything is pulled
            // or delivered (they wait for `ready`, and `ctx.wait` holds
            // this actor's messages until the rebalance is done).
            info!(self.core.logger, "consumer service restarted; heartbeat and rebalance";
                "incarnation" => self.incarnation);
            let core = self.core.clone();
            ctx.wait(
                async move {
                    let _ = core.heartbeat().await;
                    core.rebalance().await;
                }
                .into_actor(self)
                .map(|(), act, ctx| {
                    act.core.ready.send_replace(act.incarnation);
                    act.retry_locks(ctx);
                }),
            );
        }
        let cfg = &self.core.cfg;
        let every = |ms: u64| Duration::from_millis(ms.max(100));
        ctx.run_interval(every(cfg.rebalance_interval_ms), |act, ctx| {
            act.rebalance(ctx);
        });
        ctx.run_interval(every(cfg.heartbeat_interval_ms), |act, ctx| {
            let core = act.core.clone();
            ctx.spawn(
                async move {
                    for topic in core.filters.keys() {
                        let _ = core.client.refresh(topic).await;
                    }
                    let _ = core.heartbeat().await;
                }
                .into_actor(act),
            );
        });
        ctx.run_interval(every(cfg.commit_interval_ms), |act, ctx| {
            let core = act.core.clone();
            ctx.spawn(async move { core.persist().await }.into_actor(act));
        });
        if cfg.orderly {
            ctx.run_interval(every(cfg.lock_renew_interval_ms), |act, ctx| {
                let core = act.core.clone();
                ctx.spawn(async move { core.renew_locks().await }.into_actor(act));
            });
        }
        // Notifications pushed by brokers on the control connections.
        let (wake, me) = (self.core.wake.clone(), ctx.address());
        ctx.spawn(
            async move {
                loop {
                    wake.notified().await;
                    me.do_send(RebalanceNow);
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<RebalanceNow> for ConsumerService {
    type Result = ();
    fn handle(&mut self, _: RebalanceNow, ctx: &mut Context<Self>) {
        self.rebalance(ctx);
    }
}

/// Test hook (`fault-injection` feature): the handler panics, as a bug in
/// the service would.
#[cfg(feature = "fault-injection")]
impl Handler<actormq_runtime::guard::InjectPanic> for ConsumerService {
    type Result = ();
    fn handle(&mut self, msg: actormq_runtime::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

/// Pulls one queue (the pull loop runs in its context, so it ends with
/// the actor). Supervised; a restarted incarnation continues where the
/// queue's [`ProcessQueue`] says the next pull starts (what was pulled
/// and not yet consumed stays cached and is delivered as before).
struct PullService {
    core: Arc<Core>,
    slot: Arc<QueueSlot>,
}

impl PullService {
    /// The factory: a new incarnation for a queue still held.
    fn reload(core: &Weak<Core>, slot: &Weak<QueueSlot>) -> Result<PullService, FactoryError> {
        let core = core.upgrade().ok_or("the consumer is gone")?;
        let slot = slot
            .upgrade()
            .filter(|s| !s.dropped.load(Ordering::SeqCst))
            .ok_or("the queue was released")?;
        if slot.pull_starts.fetch_add(1, Ordering::SeqCst) > 0 {
            core.pull_restarts.fetch_add(1, Ordering::SeqCst);
            info!(core.logger, "pull service restarted"; "queue" => slot.mq.queue_id,
                "broker" => &slot.mq.broker_name, "offset" => slot.pq.lock().expect("pq lock").pulled_up_to());
        }
        Ok(PullService { core, slot })
    }
}

impl Actor for PullService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let offset = self.slot.pq.lock().expect("pq lock").pulled_up_to();
        let pull = self.core.clone().pull_loop(self.slot.clone(), offset);
        // When the loop ends (queue released, consumer stopped) the actor
        // idles until its supervisor stops it.
        ctx.spawn(pull.into_actor(self));
    }
}

/// Test hook (`fault-injection` feature): the handler panics, as a bug in
/// the pull loop would.
#[cfg(feature = "fault-injection")]
impl Handler<actormq_runtime::guard::InjectPanic> for PullService {
    type Result = ();
    fn handle(&mut self, msg: actormq_runtime::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

/// Receives the supervisor's escalation and fails the consumer (never
/// stops the user's `System`).
struct ServiceWatch {
    core: Weak<Core>,
}

impl Actor for ServiceWatch {
    type Context = Context<Self>;
}

impl Handler<ChildEscalated> for ServiceWatch {
    type Result = ();
    fn handle(&mut self, msg: ChildEscalated, ctx: &mut Context<Self>) {
        if let Some(core) = self.core.upgrade() {
            let reason = format!("consumer services failed: {}", msg.reason);
            actix_rt::spawn(async move { core.fail(reason).await });
        }
        ctx.stop();
    }
}

impl std::fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumer")
            .field("client_id", &self.core.client_id)
            .finish()
    }
}

impl PushConsumer {
    /// This instance's client id (as the broker lists it).
    pub fn client_id(&self) -> &str {
        &self.core.client_id
    }

    /// The group's config as the brokers hand it out with their heartbeat
    /// replies (the last one received; refreshed every heartbeat): retry
    /// max, orderly, broadcast allowed, where a new group starts. `None`
    /// until a broker answered. An orderly consumer takes its retry max
    /// from it (how often a failed message is retried in place before the
    /// after-max step); otherwise it only reports it.
    pub fn group_config(&self) -> Option<SubscriptionGroupConfig> {
        self.core
            .group_config
            .lock()
            .expect("group config lock")
            .clone()
    }

    /// The queues of the subscribed topics this instance consumes now,
    /// sorted (the group's retry queue, held too, is not listed).
    pub fn assigned_queues(&self) -> Vec<MessageQueue> {
        let mut q = self.core.assigned();
        q.retain(|mq| !system_topic::is_retry_topic(&mq.topic));
        q
    }

    /// Messages pulled but not yet consumed, over every queue held (flow
    /// control keeps it near `cache_max_messages` per queue at most).
    pub fn cached_messages(&self) -> usize {
        self.core
            .queues
            .lock()
            .expect("queues lock")
            .values()
            .map(|s| s.pq.lock().expect("pq lock").len())
            .sum()
    }

    /// Messages known to be waiting for this consumer: those cached and not
    /// consumed yet, plus, per queue held, how far the queue's max offset
    /// (as the last pull reply reported it) is past what was pulled. `0`
    /// means nothing is known to be pending, not that nothing arrived
    /// since the last reply.
    pub fn known_backlog(&self) -> u64 {
        self.core
            .queues
            .lock()
            .expect("queues lock")
            .values()
            .map(|s| {
                let pq = s.pq.lock().expect("pq lock");
                let behind = s
                    .broker_max
                    .load(Ordering::Relaxed)
                    .saturating_sub(pq.pulled_up_to());
                pq.len() as u64 + behind
            })
            .sum()
    }

    /// What the consumer is doing: running, restarting its services
    /// (nothing pulled meanwhile), failed (with the reason; it pulls
    /// nothing any more) or stopped.
    pub fn state(&self) -> ConsumerState {
        self.core.state()
    }

    /// How many times the service actor was restarted.
    pub fn service_restarts(&self) -> u64 {
        self.core
            .incarnations
            .load(Ordering::SeqCst)
            .saturating_sub(1)
    }

    /// Waits until the consumer has failed, and returns why. Never
    /// returns while it runs; use it in a `select!` beside other work.
    pub async fn failed(&self) -> String {
        let mut end = self.core.end.subscribe();
        loop {
            if let Some(End::Failed(reason)) = &*end.borrow_and_update() {
                return reason.clone();
            }
            if end.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Test hook (`fault-injection` feature): makes the running service
    /// actor panic in a handler. Returns false when no incarnation runs.
    #[cfg(feature = "fault-injection")]
    pub fn inject_service_panic(&self, reason: &str) -> bool {
        match self.core.service.addr() {
            Some(a) if a.connected() => {
                a.do_send(actormq_runtime::guard::InjectPanic(reason.to_string()));
                true
            }
            _ => false,
        }
    }

    /// How many times pull services were restarted (all queues).
    pub fn pull_restarts(&self) -> u64 {
        self.core.pull_restarts.load(Ordering::SeqCst)
    }

    /// Test hook (`fault-injection` feature): makes the pull service of
    /// `mq` panic. Returns false when `mq` is not held or its pull service
    /// does not run.
    #[cfg(feature = "fault-injection")]
    pub fn inject_pull_panic(&self, mq: &MessageQueue, reason: &str) -> bool {
        let slot = self
            .core
            .queues
            .lock()
            .expect("queues lock")
            .get(mq)
            .cloned();
        match slot.and_then(|s| s.pull.addr()) {
            Some(a) if a.connected() => {
                a.do_send(actormq_runtime::guard::InjectPanic(reason.to_string()));
                true
            }
            _ => false,
        }
    }

    /// Asks for a rebalance now (as a membership notification does).
    pub fn rebalance_now(&self) {
        if let Some(service) = self.core.service.addr() {
            service.do_send(RebalanceNow);
        }
    }

    /// Commits the consumed offsets now.
    pub async fn commit_now(&self) {
        self.core.persist().await;
    }

    /// Stops pulling, lets running listener calls finish (up to 5 s),
    /// commits offsets and stops heartbeating (the broker drops the client
    /// when its connections close).
    pub async fn shutdown(self) {
        let core = self.core;
        core.end.send_if_modified(|end| {
            let first = end.is_none();
            if first {
                *end = Some(End::Stopped);
            }
            first
        });
        // Stops the service and every pull service (an in-flight pull is
        // dropped with its actor).
        let _ = core.supervisor.send(StopSupervisor).await;
        let n = core.cfg.workers.max(1) as u32;
        let grace = tokio::time::Instant::now() + Duration::from_secs(5);
        let _idle = tokio::time::timeout_at(grace, core.workers.acquire_many(n)).await;
        if core.cfg.orderly {
            core.releases_done(grace).await;
        }
        core.persist().await;
        if core.cfg.orderly {
            // Offsets first, then the locks: the next holder starts where
            // this one stopped.
            let slots: Vec<Arc<QueueSlot>> = core
                .queues
                .lock()
                .expect("queues lock")
                .values()
                .cloned()
                .collect();
            core.unlock_idle(&slots).await;
        }
        core.client.close();
        info!(core.logger, "push consumer stopped");
    }
}

pub(crate) struct QueueSlot {
    pub(crate) mq: MessageQueue,
    pub(crate) pq: Mutex<ProcessQueue>,
    pub(crate) dropped: AtomicBool,
    /// Orderly mode: the queue's buffer, worker wake-ups and consume lock.
    pub(crate) orderly: Option<OrderlySlot>,
    /// The supervised child that pulls this queue, and its name.
    pull: ChildRef<PullService>,
    pull_name: String,
    /// Incarnations of its pull service built so far.
    pull_starts: AtomicU64,
    /// The queue's max offset as the last pull reply reported it.
    broker_max: AtomicU64,
}

impl QueueSlot {
    /// Marks the queue released, under its lock: a pull or delivery that
    /// finishes later records nothing (see `consume`).
    pub(crate) fn drop_queue(&self) {
        let _pq = self.pq.lock().expect("pq lock");
        self.dropped.store(true, Ordering::SeqCst);
    }

    /// Stops the queue's pull service for good (dropping a pull in
    /// flight).
    pub(crate) fn stop_pull(&self, supervisor: &Addr<Supervisor>) {
        supervisor.do_send(StopChild(self.pull_name.clone()));
    }
}

pub(crate) struct Core {
    /// Supervises the service actor and the pull services.
    pub(crate) supervisor: Addr<Supervisor>,
    pub(crate) cfg: PushConsumerConfig,
    pub(crate) client_id: String,
    pub(crate) client: ClusterClient,
    strategy: Arc<dyn AllocateStrategy>,
    pub(crate) listener: AnyListener,
    filters: BTreeMap<String, TagFilter>,
    pub(crate) queues: Mutex<HashMap<MessageQueue, Arc<QueueSlot>>>,
    pub(crate) offsets: Mutex<OffsetTable>,
    local: Option<LocalOffsetFile>,
    pub(crate) workers: Arc<Semaphore>,
    wake: Arc<Notify>,
    /// Set once: failed (services could not be restarted) or stopped.
    end: watch::Sender<Option<End>>,
    /// The current incarnation of the service actor.
    service: ChildRef<ConsumerService>,
    /// Incarnations of the service actor built so far.
    incarnations: AtomicU64,
    /// The last incarnation that has caught up (heartbeat and rebalance
    /// after a restart); pulls and deliveries wait for the current one.
    ready: watch::Sender<u64>,
    /// Restarts of pull services (all queues).
    pull_restarts: AtomicU64,
    /// The group's config from the last heartbeat reply that carried one.
    pub(crate) group_config: Mutex<Option<SubscriptionGroupConfig>>,
    /// Orderly: the queue locks as this client knows them.
    pub(crate) locks: Mutex<LockTable>,
    /// Orderly: queues rebalance dropped whose release (wait for the
    /// listener call, commit, unlock) is under way.
    pub(crate) releasing: Mutex<HashMap<MessageQueue, Arc<QueueSlot>>>,
    /// Orderly: a release finished.
    pub(crate) released: Notify,
    /// Orderly: the last rebalance could not lock every queue assigned
    /// (retried after [`LOCK_RETRY`]).
    lock_pending: AtomicBool,
    pub(crate) logger: Logger,
}

impl Core {
    /// Failed or stopped: nothing more is pulled or delivered.
    pub(crate) fn halted(&self) -> bool {
        self.end.borrow().is_some()
    }

    /// The current incarnation of the service runs and has caught up.
    pub(crate) fn service_up(&self) -> bool {
        self.service.addr().is_some_and(|a| a.connected())
            && *self.ready.borrow() == self.incarnations.load(Ordering::SeqCst)
    }

    fn state(&self) -> ConsumerState {
        match &*self.end.borrow() {
            Some(End::Failed(reason)) => ConsumerState::Failed {
                reason: reason.clone(),
            },
            Some(End::Stopped) => ConsumerState::Stopped,
            None if self.service_up() => ConsumerState::Running,
            None => ConsumerState::Restarting,
        }
    }

    /// Waits until the service actor runs (`true`), or the consumer
    /// failed or stopped (`false`). Pulls and deliveries pass here, so
    /// nothing is pulled or delivered while no incarnation runs.
    pub(crate) async fn service_ready(&self) -> bool {
        let mut service = self.service.subscribe();
        let mut ready = self.ready.subscribe();
        let mut end = self.end.subscribe();
        loop {
            if self.halted() {
                return false;
            }
            if self.service_up() {
                return true;
            }
            // A panicked incarnation's address stays in the handle until
            // the supervisor clears it: every change wakes us.
            tokio::select! {
                r = service.changed() => if r.is_err() { return false; },
                r = ready.changed() => if r.is_err() { return false; },
                r = end.changed() => if r.is_err() { return false; },
            }
        }
    }

    /// The services could not be restarted: stop pulling, drop every
    /// queue, commit what was consumed and leave the group (closing the
    /// broker connections makes the brokers drop this client and notify
    /// the other members).
    async fn fail(&self, reason: String) {
        let first = self.end.send_if_modified(|end| {
            let first = end.is_none();
            if first {
                *end = Some(End::Failed(reason.clone()));
            }
            first
        });
        if !first {
            return;
        }
        let slots: Vec<Arc<QueueSlot>> = self
            .queues
            .lock()
            .expect("queues lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for slot in &slots {
            slot.dropped.store(true, Ordering::SeqCst);
        }
        // The supervisor has stopped its children already (escalation);
        // the flags above also stop deliveries still queued.
        error!(self.logger, "consumer stopped pulling: its services cannot be restarted";
            "reason" => &reason, "queues_dropped" => slots.len());
        self.persist().await;
        self.unlock_idle(&slots).await;
        self.client.close();
    }

    fn broadcasting(&self) -> bool {
        self.cfg.message_model == MessageModelConfig::Broadcasting
    }

    fn assigned(&self) -> Vec<MessageQueue> {
        let mut v: Vec<MessageQueue> = self
            .queues
            .lock()
            .expect("queues lock")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    fn limits(&self) -> FlowLimits {
        FlowLimits {
            max_messages: self.cfg.cache_max_messages,
            max_bytes: self.cfg.cache_max_bytes,
            max_span: self.cfg.cache_max_span,
        }
    }

    async fn heartbeat(&self) {
        // Refusals are logged in `heartbeat_checked`; later heartbeats retry.
        let _ = self.heartbeat_checked().await;
    }

    /// Heartbeats every broker; keeps the group config of the replies.
    /// Fails only when a broker refuses the consumer: the group
    /// (`SUBSCRIPTION_GROUP_NOT_EXIST`) or a subscription (a bad expression,
    /// or SQL92 with property filtering off); other failures are logged.
    async fn heartbeat_checked(&self) -> Result<(), ServiceError> {
        let data = ConsumerData {
            group_name: self.cfg.group.clone(),
            consume_type: ConsumeType::ConsumePassively,
            message_model: if self.broadcasting() {
                MessageModel::Broadcasting
            } else {
                MessageModel::Clustering
            },
            consume_from_where: match self.cfg.consume_from {
                ConsumeFrom::Last => ConsumeFromWhere::LastOffset,
                ConsumeFrom::First => ConsumeFromWhere::FirstOffset,
                ConsumeFrom::Timestamp(_) => ConsumeFromWhere::Timestamp,
            },
            subscription_data_set: self
                .filters
                .iter()
                .map(|(t, f)| f.subscription(t))
                .collect(),
        };
        let req = HeartbeatRequest {
            client_id: self.client_id.clone(),
            producer_data_set: Vec::new(),
            consumer_data_set: vec![data],
            language: Some("RUST".into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        };
        let mut refused = Ok(());
        for broker in self.client.all_brokers() {
            match self.client.call(broker, req.clone()).await {
                Ok(reply) => {
                    let cfg = reply.fields.subscription_groups.into_iter().next();
                    if cfg.is_some() {
                        *self.group_config.lock().expect("group config lock") = cfg;
                    }
                }
                Err(e) => {
                    warn!(self.logger, "heartbeat failed"; "broker" => %broker, "error" => %e);
                    let subscription = e.code == ResponseCode::SubscriptionParseFailed
                        || (e.code == ResponseCode::SystemError && e.remark.contains("SQL92"));
                    let refusal = e.code == ResponseCode::SubscriptionGroupNotExist || subscription;
                    if refusal && refused.is_ok() {
                        refused = Err(e);
                    }
                }
            }
        }
        refused
    }

    async fn rebalance(self: &Arc<Self>) {
        self.lock_pending.store(false, Ordering::SeqCst);
        for topic in self.filters.keys() {
            let all = match self.client.queues(topic).await {
                Ok(q) => q,
                Err(e) => {
                    warn!(self.logger, "rebalance: no route"; "topic" => topic, "error" => %e);
                    continue;
                }
            };
            let mine = if self.broadcasting() {
                all
            } else {
                let mut ids = self.members(topic, &all).await;
                if ids
                    .as_ref()
                    .is_some_and(|ids| !ids.contains(&self.client_id))
                {
                    // The broker does not know us (e.g. it restarted since
                    // our last heartbeat): heartbeat, ask again, and keep
                    // our queues for now if we are still not listed.
                    let _ = self.heartbeat().await;
                    ids = self.members(topic, &all).await;
                }
                match ids {
                    Some(ids) if ids.contains(&self.client_id) => {
                        self.strategy
                            .allocate(&self.cfg.group, &self.client_id, &all, &ids)
                    }
                    _ => continue,
                }
            };
            self.apply(topic, mine).await;
        }
    }

    async fn members(&self, topic: &str, all: &[MessageQueue]) -> Option<Vec<String>> {
        let mut brokers = Vec::new();
        for mq in all {
            if let Ok(a) = self.client.broker_addr(topic, &mq.broker_name).await
                && !brokers.contains(&a)
            {
                brokers.push(a);
            }
        }
        for broker in brokers {
            let req = GetConsumerListByGroupRequest {
                consumer_group: self.cfg.group.clone(),
            };
            match self.client.call(broker, req).await {
                Ok(r) => {
                    let mut ids = r.fields.consumer_ids;
                    ids.sort();
                    return Some(ids);
                }
                Err(e) => {
                    warn!(self.logger, "rebalance: no member list"; "broker" => %broker, "error" => %e);
                }
            }
        }
        None
    }

    async fn apply(self: &Arc<Self>, topic: &str, mine: Vec<MessageQueue>) {
        let removed: Vec<Arc<QueueSlot>> = {
            let queues = self.queues.lock().expect("queues lock");
            queues
                .values()
                .filter(|s| s.mq.topic == topic && !mine.contains(&s.mq))
                .cloned()
                .collect()
        };
        for slot in removed {
            if slot.orderly.is_some() {
                self.release_orderly(slot);
                continue;
            }
            slot.drop_queue();
            slot.stop_pull(&self.supervisor);
            self.queues.lock().expect("queues lock").remove(&slot.mq);
            let offset = self.offsets.lock().expect("offsets lock").remove(&slot.mq);
            if let Some(offset) = offset {
                self.persist_one(&slot.mq, offset).await;
            }
            info!(self.logger, "queue released"; "queue" => slot.mq.queue_id, "broker" => &slot.mq.broker_name);
        }
        let mut new: Vec<MessageQueue> = {
            let queues = self.queues.lock().expect("queues lock");
            mine.into_iter()
                .filter(|mq| !queues.contains_key(mq))
                .collect()
        };
        if self.cfg.orderly && new.iter().any(|mq| self.is_releasing(mq)) {
            // Ours again before its release finished: taken on a retry.
            new.retain(|mq| !self.is_releasing(mq));
            self.lock_pending.store(true, Ordering::SeqCst);
        }
        if self.cfg.orderly && !new.is_empty() {
            // Nothing of a queue is pulled before it is locked; a queue
            // another instance still holds is tried again shortly.
            let locked = self.lock_queues(&new).await;
            let refused: Vec<u32> = new
                .iter()
                .filter(|mq| !locked.contains(mq))
                .map(|mq| mq.queue_id)
                .collect();
            if !refused.is_empty() {
                self.lock_pending.store(true, Ordering::SeqCst);
                info!(self.logger, "queues assigned but locked by another instance; retrying";
                    "topic" => topic, "queues" => ?refused);
            }
            new.retain(|mq| locked.contains(mq));
        }
        for mq in new {
            let start = match self.start_offset(&mq).await {
                Ok(o) => o,
                Err(e) => {
                    warn!(self.logger, "no start offset"; "queue" => mq.queue_id, "error" => %e);
                    if self.cfg.orderly {
                        self.unlock_queues(std::slice::from_ref(&mq)).await;
                    }
                    continue;
                }
            };
            if self.halted() {
                return;
            }
            let slot = Arc::new(QueueSlot {
                mq: mq.clone(),
                pq: Mutex::new(ProcessQueue::new(start)),
                dropped: AtomicBool::new(false),
                broker_max: AtomicU64::new(0),
                pull: ChildRef::empty(),
                pull_name: format!("pull {}:{}:{}", mq.broker_name, mq.topic, mq.queue_id),
                pull_starts: AtomicU64::new(0),
                orderly: self.cfg.orderly.then(OrderlySlot::default),
            });
            self.queues
                .lock()
                .expect("queues lock")
                .insert(mq.clone(), slot.clone());
            if self.cfg.orderly {
                actix_rt::spawn(self.clone().orderly_worker(slot.clone()));
            }
            let (core, weak) = (Arc::downgrade(self), Arc::downgrade(&slot));
            self.supervisor.do_send(SpawnChildInto {
                spec: ChildSpec::new(slot.pull_name.clone(), move || {
                    PullService::reload(&core, &weak)
                }),
                handle: slot.pull.clone(),
            });
            info!(self.logger, "queue taken"; "queue" => mq.queue_id, "broker" => &mq.broker_name, "offset" => start);
        }
    }

    /// The committed offset, or the start position of a new group (which is
    /// then committed, so a restart continues from it).
    async fn start_offset(&self, mq: &MessageQueue) -> Result<u64, ConsumerError> {
        let stored = match &self.local {
            Some(f) => {
                let f = f.clone();
                actix_rt::task::spawn_blocking(move || f.read())
                    .await
                    .map_err(|e| ConsumerError::Config(e.to_string()))??
                    .get(mq)
                    .copied()
            }
            None => query_offset(&self.client, &self.cfg.group, mq).await?,
        };
        let mut offsets = self.offsets.lock().expect("offsets lock");
        if let Some(o) = stored {
            offsets.load(mq, o);
            return Ok(o);
        }
        drop(offsets);
        let pos = match self.cfg.consume_from {
            // Everything in the retry topic is for the group, whenever it
            // failed (RocketMQ starts a retry topic at 0 too).
            _ if system_topic::is_retry_topic(&mq.topic) => Position::Min,
            ConsumeFrom::Last => Position::Max,
            ConsumeFrom::First => Position::Min,
            ConsumeFrom::Timestamp(ts) => Position::Time(ts),
        };
        let o = offset_at(&self.client, mq, pos).await?;
        self.offsets.lock().expect("offsets lock").update(mq, o);
        Ok(o)
    }

    async fn pull_loop(self: Arc<Self>, slot: Arc<QueueSlot>, mut offset: u64) {
        let Some(filter) = self.filters.get(&slot.mq.topic).cloned() else {
            return;
        };
        let limits = self.limits();
        let suspend = Duration::from_millis(self.cfg.pull_suspend_ms);
        loop {
            if slot.dropped.load(Ordering::SeqCst) || self.halted() {
                return;
            }
            if !self.service_up() && !self.service_ready().await {
                return;
            }
            if !self.may_consume(&slot.mq) {
                // Orderly: a queue whose lock was lost is not pulled.
                self.wait_lock(&slot).await;
                continue;
            }
            if slot.pq.lock().expect("pq lock").should_pause(&limits) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let began = Instant::now();
            let result = pull_views(
                &self.client,
                &self.cfg.group,
                &slot.mq,
                offset,
                self.cfg.pull_batch_size,
                &filter,
                suspend,
            )
            .await;
            if slot.dropped.load(Ordering::SeqCst) {
                return;
            }
            if !self.service_up() {
                // The service died while the pull was out: the queue may
                // be reassigned by the next incarnation. Discard; pull
                // again from the same offset once it runs (if still ours).
                continue;
            }
            if let Ok(r) = &result {
                slot.broker_max.fetch_max(r.max_offset, Ordering::Relaxed);
            }
            match result {
                Ok(r) => match r.status {
                    PullStatus::Found | PullStatus::NoMatchedMsg | PullStatus::OffsetIllegal => {
                        let items = r
                            .messages
                            .iter()
                            .map(|m| (m.queue_offset(), m.body().len()))
                            .collect::<Vec<_>>();
                        {
                            let mut pq = slot.pq.lock().expect("pq lock");
                            if slot.dropped.load(Ordering::SeqCst) {
                                return; // released meanwhile (reset, rebalance)
                            }
                            if r.status == PullStatus::OffsetIllegal {
                                pq.correct(r.next_begin_offset);
                            } else {
                                pq.put(items, r.next_begin_offset);
                            }
                            self.offsets
                                .lock()
                                .expect("offsets lock")
                                .update(&slot.mq, pq.commit_offset());
                        }
                        offset = r.next_begin_offset;
                        if let Some(o) = &slot.orderly {
                            // The queue's worker takes them in order.
                            let owned = r.messages.iter().map(StoredView::to_stored);
                            o.buffer.lock().expect("buffer lock").put(owned);
                            o.arrived.notify_one();
                            continue;
                        }
                        // Move the messages into their batches (no copy).
                        let size = self.cfg.consume_batch_size.max(1);
                        let mut rest = r.messages;
                        while !rest.is_empty() {
                            let tail = rest.split_off(size.min(rest.len()));
                            let batch = std::mem::replace(&mut rest, tail);
                            actix_rt::spawn(self.clone().consume(slot.clone(), batch));
                        }
                    }
                    PullStatus::NoNewMsg if r.next_begin_offset > offset => {
                        // The records at `offset` are gone (retention): go on
                        // where the broker says the queue continues.
                        {
                            let mut pq = slot.pq.lock().expect("pq lock");
                            if slot.dropped.load(Ordering::SeqCst) {
                                return;
                            }
                            pq.correct(r.next_begin_offset);
                            self.offsets
                                .lock()
                                .expect("offsets lock")
                                .update(&slot.mq, pq.commit_offset());
                        }
                        offset = r.next_begin_offset;
                    }
                    PullStatus::NoNewMsg => {
                        if began.elapsed() < Duration::from_millis(50) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                },
                Err(e) => {
                    debug!(self.logger, "pull failed"; "queue" => slot.mq.queue_id, "error" => %e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn consume(self: Arc<Self>, slot: Arc<QueueSlot>, mut msgs: Vec<StoredView>) {
        if system_topic::is_retry_topic(&slot.mq.topic) {
            // A retried message shows the topic it was first consumed from.
            for m in &mut msgs {
                m.show_origin_topic();
            }
        }
        // Shared with the listener's thread, not copied for it.
        let mut msgs = Arc::new(msgs);
        loop {
            if slot.dropped.load(Ordering::SeqCst) || self.halted() {
                return;
            }
            if !self.service_up() && !self.service_ready().await {
                return;
            }
            let Ok(permit) = self.workers.clone().acquire_owned().await else {
                return;
            };
            if slot.dropped.load(Ordering::SeqCst) || self.halted() {
                return;
            }
            if !self.service_up() {
                continue; // wait for the next incarnation (above)
            }
            let listener = self.listener.clone();
            let batch = msgs.clone();
            let result = actix_rt::task::spawn_blocking(move || listener.call(&batch[..])).await;
            drop(permit);
            let result = result.unwrap_or_else(|_| {
                warn!(self.logger, "listener panicked; redelivering later");
                ConsumeResult::Later
            });
            match result {
                ConsumeResult::Success => {
                    // Checked under the queue's lock, which a release
                    // (reset, rebalance) takes to set `dropped`: a released
                    // queue's old offset never reaches the table again.
                    let mut pq = slot.pq.lock().expect("pq lock");
                    if slot.dropped.load(Ordering::SeqCst) {
                        return;
                    }
                    let commit = pq.remove(msgs.iter().map(|m| m.queue_offset()));
                    self.offsets
                        .lock()
                        .expect("offsets lock")
                        .update(&slot.mq, commit);
                    return;
                }
                ConsumeResult::Retain => {
                    tokio::time::sleep(Duration::from_millis(self.cfg.later_delay_ms)).await;
                }
                ConsumeResult::Later => {
                    // Back to the broker (its retry topic): consumed here.
                    if self.send_back(&slot, &msgs).await {
                        let mut pq = slot.pq.lock().expect("pq lock");
                        if slot.dropped.load(Ordering::SeqCst) {
                            return;
                        }
                        let commit = pq.remove(msgs.iter().map(|m| m.queue_offset()));
                        self.offsets
                            .lock()
                            .expect("offsets lock")
                            .update(&slot.mq, commit);
                        return;
                    }
                    // The broker did not take them: redeliver here later.
                    // The listener's handle is gone: no copy unless shared.
                    for m in Arc::make_mut(&mut msgs).iter_mut() {
                        m.set_reconsume_times(m.reconsume_times() + 1);
                    }
                    tokio::time::sleep(Duration::from_millis(self.cfg.later_delay_ms)).await;
                }
            }
        }
    }

    /// Waits (up to 3 s) for the name servers to route the group's retry
    /// topic, which the brokers create on the first heartbeat and register
    /// at once; a slower registration is picked up by a later rebalance.
    async fn await_retry_route(&self) {
        if self.broadcasting() {
            return;
        }
        let topic = system_topic::retry_topic(&self.cfg.group);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while self.client.refresh(&topic).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                debug!(self.logger, "retry topic not routed yet"; "topic" => &topic);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Returns failed messages to the broker of their queue
    /// (`CONSUMER_SEND_MSG_BACK`): each goes to the group's retry topic
    /// with a delay, or to its dead-letter queue after the group's max.
    /// `false` when any was not taken (broadcasting never sends back).
    async fn send_back(&self, slot: &QueueSlot, msgs: &[StoredView]) -> bool {
        if self.broadcasting() {
            return false;
        }
        let broker = match self
            .client
            .broker_addr(&slot.mq.topic, &slot.mq.broker_name)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                warn!(self.logger, "send-back: no broker"; "broker" => &slot.mq.broker_name, "error" => %e);
                return false;
            }
        };
        // One request for the batch: the first message and the rest.
        let Some((first, rest)) = msgs.split_first() else {
            return true;
        };
        let req = ConsumerSendMsgBackRequest {
            consumer_group: self.cfg.group.clone(),
            commit_log_offset: first.commit_log_offset(),
            delay_level: 0,
            origin_msg_id: first.msg_id().encode(),
            origin_topic: first.topic().to_owned(),
            max_reconsume_times: None,
            reconsume_times: None,
            more: rest
                .iter()
                .map(|m| SendBackEntry {
                    commit_log_offset: m.commit_log_offset(),
                    origin_msg_id: m.msg_id().encode(),
                    origin_topic: m.topic().to_owned(),
                    reconsume_times: None,
                })
                .collect(),
        };
        if let Err(e) = self.client.call(broker, req).await {
            warn!(self.logger, "send-back failed; redelivering here";
                "queue" => slot.mq.queue_id, "offset" => first.queue_offset(),
                "messages" => msgs.len(), "error" => %e);
            return false;
        }
        true
    }

    /// Applies an offset reset pushed by a broker (see the module docs):
    /// each queue held is released without committing its old offset, its
    /// new offset is committed, and a rebalance takes it again from there.
    async fn reset_offsets(self: &Arc<Self>, req: ResetConsumerClientOffsetRequest) {
        if req.consumer_group != self.cfg.group {
            return;
        }
        let mut reset = Vec::new();
        let mut released = Vec::new();
        for qo in &req.offsets {
            let slot = self
                .queues
                .lock()
                .expect("queues lock")
                .remove(&qo.queue)
                .or_else(|| {
                    // Orderly: a queue being released gets the new offset
                    // too (its release commits what the table holds).
                    let releasing = self.releasing.lock().expect("releasing lock");
                    releasing.get(&qo.queue).cloned()
                });
            let Some(slot) = slot else {
                continue; // not ours: its holder (or the broker) has it
            };
            // Orderly: after the listener call in flight (the queue stays
            // locked: the rebalance below takes it again).
            let _consuming = match &slot.orderly {
                Some(o) => {
                    let guard = o.consume_lock.lock().await;
                    o.arrived.notify_one();
                    Some(guard)
                }
                None => None,
            };
            slot.drop_queue();
            slot.stop_pull(&self.supervisor);
            self.offsets
                .lock()
                .expect("offsets lock")
                .update(&qo.queue, qo.offset);
            reset.push((qo.queue.queue_id, qo.offset));
            released.push(qo.queue.clone());
        }
        if reset.is_empty() {
            return;
        }
        info!(self.logger, "offsets reset by the broker"; "topic" => &req.topic,
            "timestamp_ms" => req.timestamp_ms, "queues" => ?reset);
        // The broker set them already; committing them again overrides a
        // commit of the old offsets that crossed the reset.
        self.persist().await;
        if self.cfg.orderly {
            // Unlocked after their listener calls (waited for above) and
            // the new offsets: the rebalance below locks them again (or
            // their new holder does, if the group changed meanwhile).
            self.unlock_queues(&released).await;
        }
        self.wake.notify_one();
    }

    pub(crate) async fn persist_one(&self, mq: &MessageQueue, offset: u64) {
        self.write_offsets(vec![(mq.clone(), offset)]).await;
    }

    async fn persist(&self) {
        let dirty = self.offsets.lock().expect("offsets lock").take_dirty();
        if !dirty.is_empty() {
            self.write_offsets(dirty).await;
        }
    }

    async fn write_offsets(&self, offsets: Vec<(MessageQueue, u64)>) {
        match &self.local {
            Some(f) => {
                let f = f.clone();
                let saved = offsets.clone();
                let res = actix_rt::task::spawn_blocking(move || f.write(&saved)).await;
                if !matches!(res, Ok(Ok(()))) {
                    warn!(self.logger, "local offsets not written");
                    let mut t = self.offsets.lock().expect("offsets lock");
                    for (mq, _) in &offsets {
                        t.mark_dirty(mq);
                    }
                }
            }
            None => {
                for (mq, o) in offsets {
                    if let Err(e) = commit_offset(&self.client, &self.cfg.group, &mq, o).await {
                        warn!(self.logger, "offset commit failed"; "queue" => mq.queue_id, "error" => %e);
                        self.offsets.lock().expect("offsets lock").mark_dirty(&mq);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format, Toml};

    use super::*;

    #[test]
    fn config_loads_with_figment_and_defaults() {
        let toml = r#"
            group = "billing"
            namesrv = ["127.0.0.1:9876"]
            message_model = "broadcasting"
            consume_from = { timestamp = 1700000000000 }
            workers = 8
            allocate_strategy = "consistent_hash"
            [subscriptions]
            orders = "paid || shipped"
        "#;
        let cfg = PushConsumerConfig::from_figment(&Figment::from(Toml::string(toml))).unwrap();
        assert_eq!(cfg.group, "billing");
        assert_eq!(cfg.message_model, MessageModelConfig::Broadcasting);
        assert_eq!(cfg.consume_from, ConsumeFrom::Timestamp(1_700_000_000_000));
        assert_eq!(cfg.workers, 8);
        assert_eq!(cfg.subscriptions["orders"], "paid || shipped");
        assert_eq!(cfg.pull_suspend_ms, 15_000);
        assert_eq!(cfg.commit_interval_ms, 5_000);
        assert_eq!(cfg.cache_max_messages, 1000);
        assert_eq!(cfg.strategy().unwrap().name(), "CONSISTENT_HASH");
        let last: PushConsumerConfig = PushConsumerConfig::from_figment(&Figment::from(
            Toml::string("consume_from = \"first\""),
        ))
        .unwrap();
        assert_eq!(last.consume_from, ConsumeFrom::First);
        let bad = PushConsumerConfig {
            allocate_strategy: "nope".into(),
            ..PushConsumerConfig::default()
        };
        assert!(bad.strategy().is_err());
    }

    #[test]
    fn builder_sets_config() {
        let b = PushConsumerBuilder::new("g")
            .namesrv("10.0.0.1:9876")
            .namesrv("10.0.0.2:9876")
            .subscribe("t", "A || B")
            .broadcasting()
            .workers(0)
            .consume_from(ConsumeFrom::First);
        assert_eq!(b.config.namesrv, ["10.0.0.1:9876", "10.0.0.2:9876"]);
        assert_eq!(b.config.workers, 1);
        assert_eq!(b.config.message_model, MessageModelConfig::Broadcasting);
        assert_eq!(b.config.subscriptions["t"], "A || B");
    }

    #[actix_rt::test]
    async fn orderly_consumption_refuses_a_view_listener() {
        let started = PushConsumerBuilder::new("g")
            .namesrv("127.0.0.1:1")
            .subscribe("t", "*")
            .orderly()
            .view_listener(|_| ConsumeResult::Success)
            .start()
            .await;
        let Err(err) = started else {
            panic!("an orderly consumer with a view listener started");
        };
        assert!(err.to_string().contains("view_listener"), "{err}");
    }
}

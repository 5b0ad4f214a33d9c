//! [`Producer`]: sends messages of a producer group (sync, async, oneway,
//! batch, ordered by key).
//!
//! - **Queue choice**: round robin over the route's writable queues,
//!   skipping brokers that failed within the last
//!   [`ProducerConfig::fault_isolation_ms`] ([`LatencyFaultTolerance`]);
//!   or [`Producer::send_with_selector`]: queue = hash(key) % writable
//!   queues, for ordered messages ([`select_by_key`]).
//! - **Retries** ([`RetryPolicy`]): sync sends try 2 more times, each to
//!   another broker if the route has one; async sends retry 2 times on the
//!   same queue; oneway sends never retry. Flow-control refusals
//!   (`SYSTEM_BUSY`) and invalid messages are not retried. All tries of one
//!   send share the send timeout (3 s by default).
//! - **Idempotence** ([`ProducerConfig::idempotent`], opt-in): each send
//!   carries the producer's id and a per-queue sequence, and all its tries
//!   go to one queue with one sequence, so a retry after a lost reply is
//!   answered with the original result instead of being stored twice; each
//!   try then waits at most its share of the send timeout. See
//!   [`crate::idempotence`].
//! - **Checks**: topic rules and the max message size (4 MiB) before
//!   anything is sent; the unique key (`UNIQ_KEY`) is stamped on every
//!   message that has none.
//! - **Auto-created topics**: when no name server knows the topic, the
//!   message goes to a master broker of the cluster (which creates the
//!   topic with its default queue count); the real route is fetched again
//!   on later sends.
//! - **Heartbeats**: the group is announced to every broker it sends to,
//!   every 30 s.
//! - **Services**: the heartbeat and the route refresh are actors under a
//!   supervisor of the producer's own (`producer` supervisor: children
//!   `heartbeat` and `route-refresher`, restarted from a factory after a
//!   panic). Past the restart budget the supervisor gives up: an `ERROR`
//!   line says so and [`Producer::service_failure`] gives the reason;
//!   sends go on (routes are then fetched only when a send needs one), and
//!   the user's actix `System` is never stopped.
//!
//! ```rust,ignore
//! let producer = ProducerBuilder::new("orders-producer")
//!     .namesrv(["127.0.0.1:9876"])
//!     .logger(&log)
//!     .build()
//!     .await?;
//! let res = producer.send(Message::new("orders", "hello")).await?;
//! println!("{} stored at {}:{}", res.msg_id, res.queue_id, res.queue_offset);
//! producer.shutdown().await;
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actormq_protocol::request::{
    ClusterInfo, GetBrokerClusterInfoRequest, HeartbeatRequest, ProducerData,
    SendBatchMessageRequest, SendBatchMessageResponse, SendMessageRef, SendMessageRequest,
    SendMessageResponse,
};
use actormq_protocol::unique_key::system_time_ms;
use actormq_protocol::{
    Bytes, BytesMut, Message, MessageQueue, ResponseCode, UniqueKeyGenerator, batch, tag_hash,
    validate_batch, validate_message,
};
use actormq_runtime::{
    ChildEscalated, ChildRef, ChildSpec, Escalation, GetChildStatus, RestartPolicy, Rpc,
    StopSupervisor, Supervisor, spawn_child,
};
use serde::{Deserialize, Serialize};
use slog::{Logger, debug, error, o};

use crate::connections::Connections;
use crate::error::ClientError;
use crate::route::{RouteCache, TopicRoute, is_unreachable};

/// Property key of the unique key stamped on every message.
pub use actormq_protocol::message::PROPERTY_UNIQUE_KEY;

/// Producer settings; every field has a default, so a config file (TOML,
/// environment, through figment) may set only some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducerConfig {
    /// Producer group. Default `DEFAULT_PRODUCER`.
    pub group: String,
    /// Name server addresses. Default `["127.0.0.1:9876"]`.
    pub namesrv: Vec<String>,
    /// Budget of one send, all tries included, ms. Default 3000.
    pub send_timeout_ms: u64,
    /// Extra tries of a sync send (to another broker when possible).
    /// Default 2.
    pub retries: u32,
    /// Extra tries of an async send (same queue). Default 2.
    pub async_retries: u32,
    /// Max body + properties size, bytes. Default 4 MiB.
    pub max_message_size: usize,
    /// How long a broker that failed is avoided, ms. Default 30000.
    pub fault_isolation_ms: u64,
    /// Heartbeat period, ms. Default 30000.
    pub heartbeat_interval_ms: u64,
    /// Route refresh period, ms. Default 30000.
    pub route_refresh_interval_ms: u64,
    /// Queues assumed for a topic a broker will auto-create. Default 4.
    pub default_topic_queues: u32,
    /// Instance name, the middle of the client id `HOST@INSTANCE@SUFFIX`
    /// (default: the process id). The id stays unique with any name: see
    /// [`crate::client_id`].
    pub instance_name: Option<String>,
    /// Idempotent sends ([`crate::idempotence`]): a producer id and a
    /// per-queue sequence on every sync, async and batch send, retries to
    /// the same queue with the same sequence, each try waiting at most
    /// `send_timeout_ms / (retries + 1)`. Default `false`.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            group: "DEFAULT_PRODUCER".into(),
            namesrv: vec!["127.0.0.1:9876".into()],
            send_timeout_ms: 3000,
            retries: 2,
            async_retries: 2,
            max_message_size: actormq_protocol::DEFAULT_MAX_MESSAGE_SIZE,
            fault_isolation_ms: 30_000,
            heartbeat_interval_ms: 30_000,
            route_refresh_interval_ms: 30_000,
            default_topic_queues: 4,
            instance_name: None,
            idempotent: false,
        }
    }
}

impl ProducerConfig {
    /// Extracts a config from `figment` (missing keys take defaults).
    pub fn from_figment(figment: &figment::Figment) -> Result<ProducerConfig, ClientError> {
        figment
            .extract()
            .map_err(|e| ClientError::Invalid(format!("producer config: {e}")))
    }
}

/// How a stored message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SendStatus {
    /// Stored (and flushed / replicated as configured).
    #[serde(rename = "SEND_OK")]
    SendOk,
    /// Stored, but the sync flush did not finish in time.
    #[serde(rename = "FLUSH_DISK_TIMEOUT")]
    FlushDiskTimeout,
    /// Stored, but the sync replication did not finish in time.
    #[serde(rename = "FLUSH_SLAVE_TIMEOUT")]
    FlushSlaveTimeout,
    /// Stored, but no slave is available for sync replication.
    #[serde(rename = "SLAVE_NOT_AVAILABLE")]
    SlaveNotAvailable,
}

impl SendStatus {
    /// The status of a reply's response code.
    pub fn from_code(code: ResponseCode) -> SendStatus {
        match code {
            ResponseCode::FlushDiskTimeout => SendStatus::FlushDiskTimeout,
            ResponseCode::FlushSlaveTimeout => SendStatus::FlushSlaveTimeout,
            ResponseCode::SlaveNotAvailable => SendStatus::SlaveNotAvailable,
            _ => SendStatus::SendOk,
        }
    }

    /// RocketMQ's name (`SEND_OK`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::SendOk => "SEND_OK",
            SendStatus::FlushDiskTimeout => "FLUSH_DISK_TIMEOUT",
            SendStatus::FlushSlaveTimeout => "FLUSH_SLAVE_TIMEOUT",
            SendStatus::SlaveNotAvailable => "SLAVE_NOT_AVAILABLE",
        }
    }
}

impl std::fmt::Display for SendStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a stored send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    /// How it was stored.
    pub status: SendStatus,
    /// The message id (a batch: the ids joined by `,`).
    pub msg_id: String,
    /// Topic.
    pub topic: String,
    /// Queue it was stored in.
    pub queue_id: u32,
    /// Its queue offset (a batch: the first message's).
    pub queue_offset: u64,
    /// Broker name.
    pub broker: String,
}

/// Avoids brokers that failed recently: a failed broker is skipped by the
/// round robin for `isolation` (unless every broker is isolated).
#[derive(Debug, Clone)]
pub struct LatencyFaultTolerance {
    isolation: Duration,
    failed_until: HashMap<String, Instant>,
}

impl LatencyFaultTolerance {
    /// Isolates failed brokers for `isolation`.
    pub fn new(isolation: Duration) -> LatencyFaultTolerance {
        LatencyFaultTolerance {
            isolation,
            failed_until: HashMap::new(),
        }
    }

    /// `broker` failed at `now`.
    pub fn mark_failed(&mut self, broker: &str, now: Instant) {
        self.failed_until
            .insert(broker.to_owned(), now + self.isolation);
    }

    /// `broker` answered: available again.
    pub fn mark_ok(&mut self, broker: &str) {
        if !self.failed_until.is_empty() {
            self.failed_until.remove(broker);
        }
    }

    /// Whether no broker is isolated (the usual case: nothing to skip).
    pub fn is_clear(&self) -> bool {
        self.failed_until.is_empty()
    }

    /// Whether `broker` may be chosen at `now`.
    pub fn is_available(&self, broker: &str, now: Instant) -> bool {
        self.failed_until.is_empty()
            || self
                .failed_until
                .get(broker)
                .is_none_or(|until| now >= *until)
    }
}

/// Picks the queue for the `counter`-th send: round robin over `queues`,
/// skipping brokers `fault` isolates and the broker `avoid` (the one the
/// previous try failed on). Falls back to a queue of another broker, then to
/// plain round robin. `None` only if `queues` is empty.
pub fn select_queue<'a>(
    queues: &'a [MessageQueue],
    counter: usize,
    fault: &LatencyFaultTolerance,
    avoid: Option<&str>,
    now: Instant,
) -> Option<&'a MessageQueue> {
    let n = queues.len();
    if n == 0 {
        return None;
    }
    if avoid.is_none() && fault.is_clear() {
        return queues.get(counter % n);
    }
    let ring = || (0..n).map(move |i| &queues[(counter + i) % n]);
    ring()
        .find(|q| Some(q.broker_name.as_str()) != avoid && fault.is_available(&q.broker_name, now))
        .or_else(|| ring().find(|q| Some(q.broker_name.as_str()) != avoid))
        .or_else(|| ring().next())
}

/// The queue for ordering key `key`: `|java_hash(key)| % queues` (RocketMQ's
/// `SelectMessageQueueByHash`). `None` only if `queues` is empty.
pub fn select_by_key<'a>(queues: &'a [MessageQueue], key: &str) -> Option<&'a MessageQueue> {
    if queues.is_empty() {
        return None;
    }
    let h = tag_hash(key).unsigned_abs();
    let idx = usize::try_from(h % queues.len() as u64).unwrap_or(0);
    queues.get(idx)
}

/// Picks the queue of a message among its topic's writable queues (sorted
/// by broker name, then queue id), for [`Producer::send_with_queue_selector`].
/// Messages that must keep their order relative to each other go to one
/// queue; [`select_by_key`] is the built-in choice (hash of a key).
/// A closure `|queues: &[MessageQueue], msg: &Message| -> Option<usize>`
/// is one.
pub trait QueueSelector: Send + Sync {
    /// The index in `queues` of the queue for `msg`, or `None` to refuse
    /// the send (an index out of range refuses it too).
    fn select(&self, queues: &[MessageQueue], msg: &Message) -> Option<usize>;
}

impl<F> QueueSelector for F
where
    F: Fn(&[MessageQueue], &Message) -> Option<usize> + Send + Sync,
{
    fn select(&self, queues: &[MessageQueue], msg: &Message) -> Option<usize> {
        self(queues, msg)
    }
}

/// Which failures a send retries, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra tries after the first.
    pub retries: u32,
}

impl RetryPolicy {
    /// Tries in all (first + retries).
    pub fn attempts(self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// Whether a send that failed with `err` on try `attempt` (0-based) is
    /// tried again: not after the last try, not for flow control, invalid
    /// or too-large messages, or a shut-down client.
    pub fn should_retry(self, err: &ClientError, attempt: u32) -> bool {
        if attempt + 1 >= self.attempts() {
            return false;
        }
        match err {
            ClientError::Broker { code, .. } => !matches!(
                code,
                ResponseCode::SystemBusy
                    | ResponseCode::MessageIllegal
                    | ResponseCode::SequenceOutOfWindow
            ),
            ClientError::Timeout(_) | ClientError::NoRoute { .. } => true,
            _ => false,
        }
    }
}

/// Builds a [`Producer`].
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    config: ProducerConfig,
    logger: Option<Logger>,
}

impl ProducerBuilder {
    /// A builder for producer group `group` with default settings.
    pub fn new(group: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder {
            config: ProducerConfig {
                group: group.into(),
                ..ProducerConfig::default()
            },
            logger: None,
        }
    }

    /// A builder from a whole config.
    pub fn from_config(config: ProducerConfig) -> ProducerBuilder {
        ProducerBuilder {
            config,
            logger: None,
        }
    }

    /// Name server addresses (`host:port`).
    #[must_use]
    pub fn namesrv<I, S>(mut self, addrs: I) -> ProducerBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.namesrv = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Budget of one send, all tries included (default 3 s).
    #[must_use]
    pub fn send_timeout(mut self, timeout: Duration) -> ProducerBuilder {
        self.config.send_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Extra tries of sync and async sends (default 2).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> ProducerBuilder {
        self.config.retries = retries;
        self.config.async_retries = retries;
        self
    }

    /// Route refresh period (default 30 s).
    #[must_use]
    pub fn route_refresh(mut self, every: Duration) -> ProducerBuilder {
        self.config.route_refresh_interval_ms =
            u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The instance name (the middle of the client id).
    pub fn instance_name(mut self, name: &str) -> ProducerBuilder {
        self.config.instance_name = Some(name.to_owned());
        self
    }

    /// Idempotent sends (see [`ProducerConfig::idempotent`]).
    #[must_use]
    pub fn idempotent(mut self) -> ProducerBuilder {
        self.config.idempotent = true;
        self
    }

    /// The logger (default: discard).
    #[must_use]
    pub fn logger(mut self, logger: &Logger) -> ProducerBuilder {
        self.logger = Some(logger.clone());
        self
    }

    /// Starts the producer (its route refresher and heartbeat run on the
    /// current arbiter). Must run inside an actix `System`.
    pub async fn build(self) -> Result<Producer, ClientError> {
        Producer::start(self.config, self.logger, None).await
    }

    /// Starts a transactional producer: `listener` runs each local
    /// transaction and answers the broker's checks (see
    /// [`crate::transaction`]).
    pub async fn build_transactional(
        self,
        listener: impl crate::transaction::TransactionListener,
    ) -> Result<crate::transaction::TransactionProducer, ClientError> {
        let listener: Arc<dyn crate::transaction::TransactionListener> = Arc::new(listener);
        let producer = Producer::start(self.config, self.logger, Some(listener.clone())).await?;
        Ok(crate::transaction::TransactionProducer::new(
            producer, listener,
        ))
    }
}

pub(crate) struct Inner {
    config: ProducerConfig,
    client_id: String,
    routes: RouteCache,
    conns: Connections,
    fault: Mutex<LatencyFaultTolerance>,
    counter: AtomicUsize,
    fallback: Mutex<HashMap<String, (Arc<TopicRoute>, Instant)>>,
    brokers: Mutex<HashMap<String, String>>,
    closed: AtomicBool,
    /// The supervisor of the services below (stopped with the producer).
    services: Addr<Supervisor>,
    /// Why the services were given up, once they were.
    service_failure: Arc<Mutex<Option<String>>>,
    heartbeat: ChildRef<HeartbeatService>,
    /// Answers the broker's transaction checks (transactional producers).
    checks: ChildRef<crate::transaction::CheckService>,
    /// Topics whose brokers always get heartbeats (transactional
    /// producers: their brokers check with them).
    announced: Mutex<std::collections::BTreeSet<String>>,
    /// Idempotent producers: the producer id.
    producer_id: Option<String>,
    /// Idempotent producers: the next sequence per queue.
    sequences: Mutex<crate::idempotence::Sequencer>,
    logger: Logger,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: so are the services.
        self.services.do_send(StopSupervisor);
    }
}

/// Receives the producer supervisor's escalation.
struct ServicesWatch {
    failure: Arc<Mutex<Option<String>>>,
    logger: Logger,
}

impl Actor for ServicesWatch {
    type Context = Context<Self>;
}

impl Handler<ChildEscalated> for ServicesWatch {
    type Result = ();
    fn handle(&mut self, msg: ChildEscalated, ctx: &mut Context<Self>) {
        let reason = format!("producer services failed: {}", msg.reason);
        error!(self.logger, "producer services given up: no more heartbeats, routes are fetched only when a send needs one";
            "reason" => &reason);
        *lock(&self.failure) = Some(reason);
        ctx.stop();
    }
}

/// A producer of one group. Cheap to clone (clones share everything).
/// See the module docs.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("group", &self.inner.config.group)
            .field("client_id", &self.inner.client_id)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Producer {
    async fn start(
        config: ProducerConfig,
        logger: Option<Logger>,
        listener: Option<Arc<dyn crate::transaction::TransactionListener>>,
    ) -> Result<Producer, ClientError> {
        if config.group.is_empty() {
            return Err(ClientError::Invalid("empty producer group".into()));
        }
        let logger = logger
            .unwrap_or_else(|| Logger::root(slog::Discard, o!()))
            .new(o!("producer_group" => config.group.clone()));
        let checks = ChildRef::empty();
        let conns = match &listener {
            // The broker's CHECK_TRANSACTION_STATE reaches the check
            // service's current incarnation.
            Some(_) => {
                Connections::serving(crate::transaction::check_router(checks.clone()), &logger)
            }
            None => Connections::new(&logger),
        };
        let routes = RouteCache::new(
            config.namesrv.clone(),
            conns.clone(),
            ms(config.send_timeout_ms),
            &logger,
        )?;
        let refresher = routes.refresher(ms(config.route_refresh_interval_ms.max(1)));
        let service_failure = Arc::new(Mutex::new(None));
        let watch = ServicesWatch {
            failure: service_failure.clone(),
            logger: logger.clone(),
        }
        .start();
        let services = Supervisor::new(
            "producer",
            &logger,
            RestartPolicy::default(),
            Escalation::Notify(watch.recipient()),
        )
        .start();
        spawn_child(
            &services,
            ChildSpec::new("route-refresher", move || Ok(refresher.clone())),
        );
        let client_id =
            crate::client_id::new_client_id(&config.namesrv, config.instance_name.as_deref());
        let inner = Arc::new(Inner {
            fault: Mutex::new(LatencyFaultTolerance::new(ms(config.fault_isolation_ms))),
            // Start the round robin somewhere else in every producer, so
            // many short-lived producers spread over the queues.
            counter: AtomicUsize::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos() as usize / 1000),
            ),
            fallback: Mutex::new(HashMap::new()),
            brokers: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            services,
            service_failure,
            heartbeat: ChildRef::empty(),
            checks,
            announced: Mutex::new(std::collections::BTreeSet::new()),
            producer_id: config.idempotent.then(crate::idempotence::new_producer_id),
            sequences: Mutex::new(crate::idempotence::Sequencer::default()),
            client_id,
            routes,
            conns,
            config,
            logger,
        });
        let hb = HeartbeatService {
            producer: Arc::downgrade(&inner),
            interval: ms(inner.config.heartbeat_interval_ms.max(1)),
        };
        inner.services.do_send(actormq_runtime::SpawnChildInto {
            spec: ChildSpec::new("heartbeat", move || Ok(hb.clone())),
            handle: inner.heartbeat.clone(),
        });
        if let Some(listener) = listener {
            let service = crate::transaction::CheckService::new(Arc::downgrade(&inner), listener);
            inner.services.do_send(actormq_runtime::SpawnChildInto {
                spec: ChildSpec::new("transaction-check", move || Ok(service.clone())),
                handle: inner.checks.clone(),
            });
        }
        Ok(Producer { inner })
    }

    /// The producer's config.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The client id announced in heartbeats.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    /// The producer id of an idempotent producer (32 hex digits, stable
    /// for the producer's life); `None` when not idempotent.
    pub fn producer_id(&self) -> Option<&str> {
        self.inner.producer_id.as_deref()
    }

    /// An idempotent send's (producer id, sequence) on `mq`, taken once per
    /// send; `None` when not idempotent.
    fn sequence_for(&self, mq: &MessageQueue) -> Option<u64> {
        self.inner.producer_id.as_ref()?;
        Some(lock(&self.inner.sequences).next(&mq.broker_name, &mq.topic, mq.queue_id))
    }

    /// When one try gives up waiting: the send's deadline, or for an
    /// idempotent producer its share of the send timeout.
    fn try_deadline(&self, deadline: Instant, now: Instant, policy: RetryPolicy) -> Instant {
        if self.inner.producer_id.is_none() {
            return deadline;
        }
        crate::idempotence::attempt_deadline(
            deadline,
            now,
            ms(self.inner.config.send_timeout_ms),
            policy.attempts(),
        )
    }

    /// Why the producer's services (heartbeat, route refresh) were given
    /// up after spending their restart budget; `None` while they run.
    pub fn service_failure(&self) -> Option<String> {
        lock(&self.inner.service_failure).clone()
    }

    /// Restarts of the producer's services so far (0 once they were given
    /// up: the supervisor is gone).
    pub async fn service_restarts(&self) -> u64 {
        match self.inner.services.send(GetChildStatus).await {
            Ok(children) => children.iter().map(|c| c.restarts).sum(),
            Err(_) => 0,
        }
    }

    /// Test hook (`fault-injection` feature): makes the running heartbeat
    /// service panic. Returns false when no incarnation runs.
    #[cfg(feature = "fault-injection")]
    pub fn inject_heartbeat_panic(&self, reason: &str) -> bool {
        match self.inner.heartbeat.addr() {
            Some(a) if a.connected() => {
                a.do_send(actormq_runtime::guard::InjectPanic(reason.to_string()));
                true
            }
            _ => false,
        }
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Producer {
        Producer { inner }
    }

    pub(crate) fn logger(&self) -> &Logger {
        &self.inner.logger
    }

    /// Keeps heartbeating the brokers of `topic`, even after its route
    /// was dropped.
    pub(crate) fn announce(&self, topic: &str) {
        let mut a = lock(&self.inner.announced);
        if !a.contains(topic) {
            a.insert(topic.to_owned());
        }
    }

    /// The address of broker `name` as last sent to.
    pub(crate) fn broker_addr(&self, name: &str) -> Option<String> {
        lock(&self.inner.brokers).get(name).cloned()
    }

    /// Calls `req` on the broker at `addr` within the send timeout.
    pub(crate) async fn call_broker<R: Rpc>(
        &self,
        addr: &str,
        req: R,
    ) -> Result<actormq_runtime::Reply<R::Response>, ClientError> {
        self.check_open()?;
        self.inner
            .conns
            .call(
                addr,
                req,
                Bytes::new(),
                ms(self.inner.config.send_timeout_ms),
            )
            .await
    }

    /// The route cache (shared with whoever else uses this producer's
    /// connections).
    pub fn routes(&self) -> &RouteCache {
        &self.inner.routes
    }

    /// Sends `msg` and waits until it is stored, retrying as the module
    /// docs say.
    pub async fn send(&self, msg: Message) -> Result<SendResult, ClientError> {
        let policy = RetryPolicy {
            retries: self.inner.config.retries,
        };
        self.send_with_policy(msg, policy, Mode::OtherBroker).await
    }

    /// Like [`Producer::send`], but returns a `'static` future (spawn it,
    /// or collect many and await them together); retries go to the same
    /// queue.
    pub fn send_async(
        &self,
        msg: Message,
    ) -> impl Future<Output = Result<SendResult, ClientError>> + 'static {
        let this = self.clone();
        async move {
            let policy = RetryPolicy {
                retries: this.inner.config.async_retries,
            };
            this.send_with_policy(msg, policy, Mode::SameQueue).await
        }
    }

    /// Sends `msg` without waiting for the broker: returns once the request
    /// is queued on the connection. Never retried.
    pub async fn send_oneway(&self, mut msg: Message) -> Result<(), ClientError> {
        self.prepare(&mut msg)?;
        let route = self.route_for(&msg.topic).await?;
        let (mq, addr) = self.pick(&route, None, Instant::now())?;
        self.note_broker(&mq.broker_name, addr);
        let req = SendMessageRef::new(
            &self.inner.config.group,
            mq.queue_id,
            system_time_ms(),
            &msg,
        );
        self.inner
            .conns
            .session(addr)?
            .oneway_paced(SEND_MESSAGE, &req, &msg.body)
            .await
            .map_err(ClientError::from)
    }

    /// Sends `msg` to the queue `hash(key) % writable queues`, so messages
    /// with one key keep their order. Retries stay on that queue.
    pub async fn send_with_selector(
        &self,
        msg: Message,
        key: &str,
    ) -> Result<SendResult, ClientError> {
        let policy = RetryPolicy {
            retries: self.inner.config.retries,
        };
        self.send_with_policy(msg, policy, Mode::Key(key.to_owned()))
            .await
    }

    /// Sends `msg` to the queue `selector` picks among the topic's writable
    /// queues (e.g. by an order id, so an order's events keep their
    /// order). Retries stay on that queue. A selector that picks no queue
    /// refuses the send ([`ClientError::Invalid`]).
    pub async fn send_with_queue_selector(
        &self,
        msg: Message,
        selector: impl QueueSelector + 'static,
    ) -> Result<SendResult, ClientError> {
        let policy = RetryPolicy {
            retries: self.inner.config.retries,
        };
        self.send_with_policy(msg, policy, Mode::Selector(Box::new(selector)))
            .await
    }

    /// Sends `msgs` (one topic, no delay) as one batch to one queue;
    /// retried like [`Producer::send`]. The result's `msg_id` holds the ids
    /// joined by `,` and `queue_offset` the first message's offset.
    ///
    /// `msgs` may be borrowed (`&[Message]`, `&Vec<Message>`) or owned: the
    /// messages are only read, and each send stamps fresh unique keys into
    /// its encoding, so one batch can be sent again and again.
    pub async fn send_batch(&self, msgs: impl AsRef<[Message]>) -> Result<SendResult, ClientError> {
        self.check_open()?;
        let (topic, body) = {
            let msgs = msgs.as_ref();
            let Some(first) = msgs.first() else {
                return Err(ClientError::Invalid("empty batch".into()));
            };
            validate_batch(msgs, self.inner.config.max_message_size)?;
            // Unique keys are stamped into the encoding (one clock read for
            // the batch); retries resend these same bytes, so the keys stay.
            let mut body = BytesMut::new();
            batch::encode_messages_keyed(msgs, UniqueKeyGenerator::global(), &mut body);
            (first.topic.clone(), body)
        };
        drop(msgs);
        let body = body.freeze();
        let total = body.len();
        if total > self.inner.config.max_message_size {
            return Err(ClientError::MessageTooLarge {
                size: total,
                max: self.inner.config.max_message_size,
            });
        }
        let policy = RetryPolicy {
            retries: self.inner.config.retries,
        };
        let deadline = Instant::now() + ms(self.inner.config.send_timeout_ms);
        let mut avoid: Option<String> = None;
        let mut attempt = 0;
        // Idempotent: the queue and sequence of the first try, kept.
        let mut fixed: Option<MessageQueue> = None;
        let mut sequence: Option<u64> = None;
        loop {
            let route = self.route_for(&topic).await?;
            let now = Instant::now();
            let (mq, addr) = match &fixed {
                Some(q) => route
                    .master_addr(&q.broker_name)
                    .map(|a| (q, a))
                    .ok_or_else(|| ClientError::NoRoute {
                        topic: topic.clone(),
                    })?,
                None => self.pick(&route, avoid.as_deref(), now)?,
            };
            if sequence.is_none() {
                sequence = self.sequence_for(mq);
            }
            self.note_broker(&mq.broker_name, addr);
            let req = SendBatchRef {
                producer_group: &self.inner.config.group,
                topic: &topic,
                queue_id: mq.queue_id,
                born_timestamp_ms: system_time_ms(),
                producer_id: sequence.and(self.inner.producer_id.as_deref()),
                sequence,
            };
            remaining_at(deadline, now)?;
            let try_deadline = self.try_deadline(deadline, now, policy);
            let res = match self.inner.conns.session(addr) {
                Ok(session) => session
                    .call_until::<_, SendBatchMessageResponse>(
                        SEND_BATCH_MESSAGE,
                        &req,
                        &body,
                        try_deadline,
                    )
                    .await
                    .map_err(ClientError::from),
                Err(e) => Err(e),
            };
            match res {
                Ok(reply) => {
                    self.mark_ok(&mq.broker_name);
                    return Ok(SendResult {
                        status: SendStatus::from_code(reply.code),
                        msg_id: reply.fields.msg_id,
                        topic,
                        queue_id: reply.fields.queue_id,
                        queue_offset: reply.fields.queue_offset,
                        broker: mq.broker_name.clone(),
                    });
                }
                Err(e) => {
                    let mq = mq.clone();
                    drop(route);
                    self.on_failure(&topic, &mq, &e).await;
                    if !policy.should_retry(&e, attempt) {
                        return Err(e);
                    }
                    if sequence.is_some() && fixed.is_none() {
                        fixed = Some(mq.clone());
                    }
                    avoid = Some(mq.broker_name);
                    attempt += 1;
                }
            }
        }
    }

    /// Stops the heartbeat and route refresh, lets queued requests (oneway
    /// sends) reach the socket (within the send timeout) and forgets the
    /// connections. Later sends fail with [`ClientError::Shutdown`].
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.inner
            .conns
            .drain(ms(self.inner.config.send_timeout_ms))
            .await;
        self.inner.services.do_send(StopSupervisor);
        self.inner.conns.close_all();
        debug!(self.inner.logger, "producer shut down");
    }

    fn check_open(&self) -> Result<(), ClientError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            Err(ClientError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Validates `msg` and stamps its unique key.
    fn prepare(&self, msg: &mut Message) -> Result<(), ClientError> {
        self.check_open()?;
        stamp(msg);
        validate_message(msg, self.inner.config.max_message_size)?;
        Ok(())
    }

    async fn send_with_policy(
        &self,
        mut msg: Message,
        policy: RetryPolicy,
        mode: Mode,
    ) -> Result<SendResult, ClientError> {
        self.prepare(&mut msg)?;
        let mut now = Instant::now();
        let deadline = now + ms(self.inner.config.send_timeout_ms);
        let mut avoid: Option<String> = None;
        // The queue retries stay on (SameQueue, Key, idempotent), once
        // chosen; an idempotent send's sequence, taken at its first try.
        let mut fixed: Option<MessageQueue> = None;
        let mut sequence: Option<u64> = None;
        let mut attempt = 0;
        // The last broker that did not answer: when the route then empties
        // (the name servers dropped it) or time runs out, the error names
        // that broker rather than "no route".
        let mut unreachable: Option<ClientError> = None;
        let explain = |e: ClientError, unreachable: &Option<ClientError>| match (&e, unreachable) {
            (ClientError::NoRoute { .. } | ClientError::Timeout(_), Some(u)) => u.clone(),
            _ => e,
        };
        loop {
            let route = match self.route_for(&msg.topic).await {
                Ok(r) => r,
                Err(e) => return Err(explain(e, &unreachable)),
            };
            if attempt > 0 {
                now = Instant::now();
            }
            let no_route = || ClientError::NoRoute {
                topic: msg.topic.clone(),
            };
            // Borrowed from the route: nothing is cloned on the way out.
            // An ordered topic (`admin topic create --order`) keeps every
            // send on the queue it was first given, whatever the mode.
            let ordered = route.is_ordered();
            let picked = match (&mode, &fixed) {
                (Mode::OtherBroker, Some(q)) if ordered || sequence.is_some() => route
                    .master_addr(&q.broker_name)
                    .ok_or_else(no_route)
                    .map(|a| (q, a)),
                (Mode::OtherBroker, _) | (Mode::SameQueue, None) => {
                    self.pick(&route, avoid.as_deref(), now)
                }
                (Mode::SameQueue, Some(q))
                | (Mode::Key(_), Some(q))
                | (Mode::Selector(_), Some(q)) => route
                    .master_addr(&q.broker_name)
                    .ok_or_else(no_route)
                    .map(|a| (q, a)),
                (Mode::Key(key), None) => select_by_key(&route.write_queues, key)
                    .ok_or_else(no_route)
                    .and_then(|q| {
                        route
                            .master_addr(&q.broker_name)
                            .ok_or_else(no_route)
                            .map(|a| (q, a))
                    }),
                (Mode::Selector(_), None) if route.write_queues.is_empty() => Err(no_route()),
                (Mode::Selector(selector), None) => selector
                    .select(&route.write_queues, &msg)
                    .and_then(|i| route.write_queues.get(i))
                    .ok_or_else(|| {
                        ClientError::Invalid("the queue selector picked no queue".into())
                    })
                    .and_then(|q| {
                        route
                            .master_addr(&q.broker_name)
                            .ok_or_else(no_route)
                            .map(|a| (q, a))
                    }),
            };
            let (mq, addr): (&MessageQueue, &str) = match picked {
                Ok(p) => p,
                Err(e) => return Err(explain(e, &unreachable)),
            };
            let mut req = SendMessageRef::new(
                &self.inner.config.group,
                mq.queue_id,
                system_time_ms(),
                &msg,
            );
            if sequence.is_none() {
                sequence = self.sequence_for(mq);
            }
            if let (Some(id), Some(seq)) = (self.inner.producer_id.as_deref(), sequence) {
                req = req.idempotent(id, seq);
            }
            if let Err(e) = remaining_at(deadline, now) {
                return Err(explain(e, &unreachable));
            }
            let try_deadline = self.try_deadline(deadline, now, policy);
            self.note_broker(&mq.broker_name, addr);
            let res = match self.inner.conns.session(addr) {
                Ok(session) => session
                    .call_encoded::<SendMessageResponse>(
                        SEND_MESSAGE,
                        |dst| {
                            req.encode_fields(dst);
                            Ok(())
                        },
                        &msg.body,
                        try_deadline,
                    )
                    .await
                    .map_err(ClientError::from),
                Err(e) => Err(e),
            };
            match res {
                Ok(reply) => {
                    self.mark_ok(&mq.broker_name);
                    let broker = mq.broker_name.clone();
                    return Ok(SendResult {
                        status: SendStatus::from_code(reply.code),
                        msg_id: reply.fields.msg_id,
                        topic: msg.topic,
                        queue_id: reply.fields.queue_id,
                        queue_offset: reply.fields.queue_offset,
                        broker,
                    });
                }
                Err(e) => {
                    let mq = mq.clone();
                    if is_unreachable(&e) {
                        unreachable = Some(ClientError::BrokerUnreachable {
                            broker: mq.broker_name.clone(),
                            addr: addr.to_owned(),
                            cause: e.to_string(),
                        });
                    }
                    drop(route);
                    debug!(self.inner.logger, "send failed"; "topic" => &msg.topic,
                        "broker" => &mq.broker_name, "attempt" => attempt, "error" => %e);
                    self.on_failure(&msg.topic, &mq, &e).await;
                    if !policy.should_retry(&e, attempt) {
                        return Err(match unreachable.take() {
                            Some(u) if is_unreachable(&e) => u,
                            _ => e,
                        });
                    }
                    // An idempotent send's retries carry its sequence, and an
                    // ordered topic's sends keep their queue: same queue.
                    let same_queue =
                        ordered || sequence.is_some() || !matches!(mode, Mode::OtherBroker);
                    if same_queue && fixed.is_none() {
                        fixed = Some(mq.clone());
                    }
                    avoid = Some(mq.broker_name);
                    attempt += 1;
                    // A broker that did not answer may be restarting: give it
                    // a moment (within the send timeout) before the next try.
                    if is_unreachable(&e) {
                        let left = remaining(deadline).map_err(|t| explain(t, &unreachable))?;
                        tokio::time::sleep(ms(100 * u64::from(attempt)).min(left)).await;
                    }
                }
            }
        }
    }

    /// A broker answered: it is available again.
    fn mark_ok(&self, broker: &str) {
        let mut fault = lock(&self.inner.fault);
        if !fault.is_clear() {
            fault.mark_ok(broker);
        }
    }

    /// After a failed try: isolate the broker and, if it did not answer,
    /// fetch the route again (its address may have changed).
    async fn on_failure(&self, topic: &str, mq: &MessageQueue, e: &ClientError) {
        lock(&self.inner.fault).mark_failed(&mq.broker_name, Instant::now());
        if is_unreachable(e) || e.code() == Some(ResponseCode::TopicNotExist) {
            let _ = self.inner.routes.refresh(topic).await;
        }
    }

    /// Remembers the broker a send goes to; a broker (or address) seen for
    /// the first time gets a heartbeat at once, not only at the next tick.
    fn note_broker(&self, name: &str, addr: &str) {
        let new = {
            let mut b = lock(&self.inner.brokers);
            // One broker (the usual case): compare without hashing.
            let known = if b.len() == 1 {
                b.iter().next().is_some_and(|(n, a)| n == name && a == addr)
            } else {
                b.get(name).map(String::as_str) == Some(addr)
            };
            if known {
                false
            } else {
                b.insert(name.to_owned(), addr.to_owned());
                true
            }
        };
        if new {
            let this = self.clone();
            let addr = addr.to_owned();
            actix_rt::spawn(async move { this.heartbeat_to(&addr).await });
        }
    }

    fn heartbeat_request(&self) -> HeartbeatRequest {
        HeartbeatRequest {
            client_id: self.inner.client_id.clone(),
            producer_data_set: vec![ProducerData {
                group_name: self.inner.config.group.clone(),
            }],
            consumer_data_set: vec![],
            language: Some("RUST".into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }
    }

    async fn heartbeat_to(&self, addr: &str) {
        let res = self
            .inner
            .conns
            .call(
                addr,
                self.heartbeat_request(),
                Bytes::new(),
                ms(self.inner.config.send_timeout_ms),
            )
            .await;
        if let Err(e) = res {
            debug!(self.inner.logger, "heartbeat failed"; "broker" => addr, "error" => %e);
        }
    }

    /// A queue and its broker's address by round robin (borrowed from
    /// `route`).
    fn pick<'r>(
        &self,
        route: &'r TopicRoute,
        avoid: Option<&str>,
        now: Instant,
    ) -> Result<(&'r MessageQueue, &'r str), ClientError> {
        let counter = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let no_route = || ClientError::NoRoute {
            topic: route.topic.clone(),
        };
        let mq = {
            let fault = lock(&self.inner.fault);
            select_queue(&route.write_queues, counter, &fault, avoid, now).ok_or_else(no_route)?
        };
        let addr = route.master_addr(&mq.broker_name).ok_or_else(no_route)?;
        Ok((mq, addr))
    }

    /// The route of `topic`; for a topic no name server knows, a route to
    /// every master broker of the cluster (which auto-create it).
    async fn route_for(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        self.check_open()?;
        if let Some(r) = self.inner.routes.cached(topic)
            && !r.write_queues.is_empty()
        {
            return Ok(r);
        }
        // Known as missing: retry the name server at most every second.
        let fallback = lock(&self.inner.fallback).get(topic).cloned();
        if let Some((route, at)) = &fallback
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(route.clone());
        }
        match self.inner.routes.refresh(topic).await {
            Ok(r) if !r.write_queues.is_empty() => {
                lock(&self.inner.fallback).remove(topic);
                return Ok(r);
            }
            Ok(_) | Err(ClientError::NoRoute { .. }) => {}
            Err(e) => return fallback.map(|(r, _)| r).ok_or(e),
        }
        let info = self
            .inner
            .routes
            .namesrv_call(GetBrokerClusterInfoRequest {})
            .await?
            .fields;
        let route = Arc::new(auto_create_route(
            topic,
            &info,
            self.inner.config.default_topic_queues,
        ));
        if route.write_queues.is_empty() {
            return Err(ClientError::NoRoute {
                topic: topic.to_owned(),
            });
        }
        lock(&self.inner.fallback).insert(topic.to_owned(), (route.clone(), Instant::now()));
        Ok(route)
    }

    /// Brokers to heartbeat: every master of a cached route and every
    /// broker sent to.
    fn heartbeat_targets(&self) -> Vec<String> {
        let mut addrs: Vec<String> = lock(&self.inner.brokers).values().cloned().collect();
        for topic in self.inner.routes.cached_topics() {
            if let Some(r) = self.inner.routes.cached(&topic) {
                for name in r.broker_names() {
                    if let Some(a) = r.master_addr(name) {
                        addrs.push(a.to_owned());
                    }
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Sends one heartbeat of the group to every known broker, all at
    /// once: a broker that does not answer (restarted elsewhere) does not
    /// hold up the others.
    pub async fn heartbeat(&self) {
        // Topics whose brokers must hear from this producer (transactional
        // producers answer checks): a route dropped while its broker was
        // away (restarting) is fetched again.
        let announced: Vec<String> = lock(&self.inner.announced).iter().cloned().collect();
        for topic in announced {
            if self.inner.routes.cached(&topic).is_none() {
                let _ = self.inner.routes.refresh(&topic).await;
            }
        }
        let targets = self.heartbeat_targets();
        futures_util::future::join_all(targets.iter().map(|addr| self.heartbeat_to(addr))).await;
    }
}

enum Mode {
    OtherBroker,
    SameQueue,
    Key(String),
    Selector(Box<dyn QueueSelector>),
}

fn remaining(deadline: Instant) -> Result<Duration, ClientError> {
    remaining_at(deadline, Instant::now())
}

fn remaining_at(deadline: Instant, now: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(now);
    if left.is_zero() {
        Err(ClientError::Timeout("send timeout".into()))
    } else {
        Ok(left)
    }
}

const SEND_MESSAGE: u32 = <SendMessageRequest as Rpc>::CODE;
const SEND_BATCH_MESSAGE: u32 = <SendBatchMessageRequest as Rpc>::CODE;

/// [`SendBatchMessageRequest`] borrowed (same bytes, tested).
#[derive(Debug, Serialize)]
struct SendBatchRef<'a> {
    producer_group: &'a str,
    topic: &'a str,
    queue_id: u32,
    born_timestamp_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
}

/// Stamps the unique key on `msg` unless it has one.
pub fn stamp(msg: &mut Message) {
    if msg.unique_key().is_none() {
        msg.properties.insert(
            PROPERTY_UNIQUE_KEY.to_owned(),
            UniqueKeyGenerator::global().next_key(),
        );
    }
}

/// The route used for a topic no name server knows: `queues` writable
/// queues on every master broker in `info` (the broker creates the topic on
/// the first send).
pub fn auto_create_route(topic: &str, info: &ClusterInfo, queues: u32) -> TopicRoute {
    use actormq_protocol::request::{Perm, QueueData, TopicRouteData};
    let brokers: Vec<_> = info
        .broker_addr_table
        .values()
        .filter(|b| b.master_addr().is_some())
        .cloned()
        .collect();
    let data = TopicRouteData {
        queue_datas: brokers
            .iter()
            .map(|b| QueueData {
                broker_name: b.broker_name.clone(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                perm: Perm::READ_WRITE,
                topic_sys_flag: 0,
            })
            .collect(),
        broker_datas: brokers,
        order_topic_conf: None,
    };
    TopicRoute::new(topic, data)
}

/// The actor that heartbeats a producer's group to its brokers.
#[derive(Debug, Clone)]
pub struct HeartbeatService {
    producer: Weak<Inner>,
    interval: Duration,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Actor for HeartbeatService {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| match act.producer.upgrade() {
            Some(inner) => {
                let p = Producer { inner };
                ctx.spawn(async move { p.heartbeat().await }.into_actor(act));
            }
            None => ctx.stop(),
        });
    }
}

/// Test hook (`fault-injection` feature): the handler panics, as a bug in
/// the service would.
#[cfg(feature = "fault-injection")]
impl Handler<actormq_runtime::guard::InjectPanic> for HeartbeatService {
    type Result = ();
    fn handle(&mut self, msg: actormq_runtime::guard::InjectPanic, _: &mut Context<Self>) {
        panic!("{}", msg.0);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use actormq_protocol::request::BrokerData;

    use super::*;

    fn queues(spec: &[(&str, u32)]) -> Vec<MessageQueue> {
        spec.iter()
            .flat_map(|(b, n)| {
                (0..*n).map(move |q| MessageQueue {
                    topic: "t".into(),
                    broker_name: (*b).into(),
                    queue_id: q,
                })
            })
            .collect()
    }

    fn name(q: Option<&MessageQueue>) -> (&str, u32) {
        let q = q.expect("a queue");
        (q.broker_name.as_str(), q.queue_id)
    }

    #[test]
    fn round_robin_walks_every_queue() {
        let qs = queues(&[("a", 2), ("b", 2)]);
        let f = LatencyFaultTolerance::new(Duration::from_secs(30));
        let now = Instant::now();
        let picked: Vec<_> = (0..5)
            .map(|c| name(select_queue(&qs, c, &f, None, now)))
            .collect();
        assert_eq!(picked, [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("a", 0)]);
        assert!(select_queue(&[], 0, &f, None, now).is_none());
    }

    #[test]
    fn failed_broker_is_skipped_until_isolation_ends() {
        let qs = queues(&[("a", 2), ("b", 2)]);
        let mut f = LatencyFaultTolerance::new(Duration::from_secs(30));
        let now = Instant::now();
        f.mark_failed("a", now);
        assert!(!f.is_available("a", now));
        assert_eq!(name(select_queue(&qs, 0, &f, None, now)), ("b", 0));
        assert_eq!(name(select_queue(&qs, 1, &f, None, now)), ("b", 0));
        let later = now + Duration::from_secs(31);
        assert!(f.is_available("a", later));
        assert_eq!(name(select_queue(&qs, 0, &f, None, later)), ("a", 0));
        f.mark_ok("a");
        assert!(f.is_available("a", now));
    }

    #[test]
    fn retry_avoids_the_failed_broker_and_falls_back_when_alone() {
        let qs = queues(&[("a", 1), ("b", 1)]);
        let mut f = LatencyFaultTolerance::new(Duration::from_secs(30));
        let now = Instant::now();
        assert_eq!(name(select_queue(&qs, 0, &f, Some("a"), now)), ("b", 0));
        // Every broker isolated: still another broker than the last failed.
        f.mark_failed("a", now);
        f.mark_failed("b", now);
        assert_eq!(name(select_queue(&qs, 0, &f, Some("a"), now)), ("b", 0));
        // One broker only: it is used again.
        let one = queues(&[("a", 2)]);
        assert_eq!(name(select_queue(&one, 1, &f, Some("a"), now)), ("a", 1));
    }

    #[test]
    fn key_selection_is_stable_java_hash_modulo() {
        let qs = queues(&[("a", 4), ("b", 4)]);
        let a = select_by_key(&qs, "order-42");
        assert_eq!(a, select_by_key(&qs, "order-42"));
        // Java: "abc".hashCode() = 96354; 96354 % 8 = 2.
        assert_eq!(name(select_by_key(&qs, "abc")), ("a", 2));
        // Negative hashes use the absolute value.
        let neg = tag_hash("polygenelubricants");
        assert!(neg < 0);
        let idx = (neg.unsigned_abs() % 8) as usize;
        assert_eq!(select_by_key(&qs, "polygenelubricants"), qs.get(idx));
        assert!(select_by_key(&[], "k").is_none());
    }

    #[test]
    fn retry_policy() {
        let p = RetryPolicy { retries: 2 };
        assert_eq!(p.attempts(), 3);
        let lost = ClientError::Broker {
            code: ResponseCode::SystemError,
            remark: "connection lost".into(),
        };
        assert!(p.should_retry(&lost, 0));
        assert!(p.should_retry(&lost, 1));
        assert!(!p.should_retry(&lost, 2));
        assert!(p.should_retry(&ClientError::Timeout("t".into()), 0));
        let busy = ClientError::Broker {
            code: ResponseCode::SystemBusy,
            remark: "flow control".into(),
        };
        assert!(!p.should_retry(&busy, 0));
        assert!(!p.should_retry(&ClientError::MessageTooLarge { size: 9, max: 1 }, 0));
        assert!(!RetryPolicy { retries: 0 }.should_retry(&lost, 0));
    }

    #[test]
    fn stamp_adds_a_unique_key_once() {
        let mut m = Message::new("t", "x");
        stamp(&mut m);
        let k = m.unique_key().expect("stamped").to_owned();
        stamp(&mut m);
        assert_eq!(m.unique_key(), Some(k.as_str()));
        let mut other = Message::new("t", "y");
        stamp(&mut other);
        assert_ne!(other.unique_key(), Some(k.as_str()));
    }

    #[test]
    fn borrowed_batch_request_encodes_like_the_owned_one() {
        let enc = |v: &dyn erased::Ser| v.bytes();
        let owned = SendBatchMessageRequest {
            producer_group: "g".into(),
            topic: "t".into(),
            queue_id: 2,
            born_timestamp_ms: 5,
            producer_id: None,
            sequence: None,
        };
        let borrowed = SendBatchRef {
            producer_group: "g",
            topic: "t",
            queue_id: 2,
            born_timestamp_ms: 5,
            producer_id: None,
            sequence: None,
        };
        assert_eq!(enc(&borrowed), enc(&owned));
        let owned = SendBatchMessageRequest {
            producer_id: Some("ab".into()),
            sequence: Some(9),
            ..owned
        };
        let borrowed = SendBatchRef {
            producer_id: Some("ab"),
            sequence: Some(9),
            ..borrowed
        };
        assert_eq!(enc(&borrowed), enc(&owned));
    }

    mod erased {
        pub trait Ser {
            fn bytes(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Ser for T {
            fn bytes(&self) -> Vec<u8> {
                rmp_serde::to_vec_named(self).unwrap()
            }
        }
    }

    #[test]
    fn status_names() {
        assert_eq!(
            SendStatus::from_code(ResponseCode::Success).as_str(),
            "SEND_OK"
        );
        assert_eq!(
            SendStatus::from_code(ResponseCode::FlushDiskTimeout).to_string(),
            "FLUSH_DISK_TIMEOUT"
        );
    }

    #[test]
    fn auto_create_route_covers_every_master() {
        let b = |n: &str, id: u64| BrokerData {
            cluster: "c".into(),
            broker_name: n.into(),
            broker_addrs: BTreeMap::from([(id, "127.0.0.1:1".to_owned())]),
        };
        let info = ClusterInfo {
            broker_addr_table: BTreeMap::from([("a".into(), b("a", 0)), ("s".into(), b("s", 1))]),
            cluster_addr_table: BTreeMap::new(),
        };
        let r = auto_create_route("new", &info, 4);
        assert_eq!(r.write_queues.len(), 4);
        assert!(r.write_queues.iter().all(|q| q.broker_name == "a"));
    }

    #[test]
    fn config_defaults_and_figment() {
        use figment::providers::{Format, Toml};
        let c = ProducerConfig::from_figment(&figment::Figment::from(Toml::string(
            "group = \"g\"\nsend_timeout_ms = 500\n",
        )))
        .unwrap();
        assert_eq!(c.group, "g");
        assert_eq!(c.send_timeout_ms, 500);
        assert_eq!(c.retries, 2);
        assert_eq!(c.max_message_size, 4 * 1024 * 1024);
    }
}

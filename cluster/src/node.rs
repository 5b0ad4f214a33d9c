//! Node assembly: the same actors arranged as a name server, a broker, or
//! both (combined), by configuration.
//!
//! ```text
//! node supervisor (one-for-one; escalation stops the node with exit code 1)
//! ├── registry            (namesrv role)   ← namesrv listener routes 103-106, 206, 216
//! ├── topic-manager       (broker role)    ← broker listener routes 17, 21, 215
//! ├── offset-manager                       ← 14, 15
//! ├── group-manager                        ← 34, 38
//! └── registrar           → every name server: the local registry by a
//!                           local recipient (combined), remote ones
//!                           through RemoteClient proxies (`--namesrv`)
//! ```
//!
//! Routes and event subscriptions go through [`route_child`] and
//! [`Relay`], so they follow a child across restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::broker_store::BrokerStore;
use actormq_actors::broker::commit_log::{CommitLogActor, CommitLogConfig};
use actormq_actors::broker::dispatcher::{Dispatcher, DispatcherConfig, SubscribeStored};
use actormq_actors::broker::flush_service::{FlushAndCheckpoint, FlushService, FlushServiceConfig};
use actormq_actors::broker::group_manager::SubscribeGroups;
use actormq_actors::broker::plugin::{BrokerContext, BrokerPlugin};
use actormq_actors::broker::pull_hold::{PullHold, PullHoldConfig};
use actormq_actors::broker::query_service::QueryService;
use actormq_actors::broker::registrar::{
    BrokerIdentity, NamesrvLink, Registrar, RegistrarConfig, UnregisterAll,
};
use actormq_actors::broker::retention_cleaner::{RetentionCleaner, RetentionConfig};
use actormq_actors::broker::topic_manager::SubscribeTopics;
use actormq_actors::broker::{
    GroupManager, GroupManagerConfig, GroupNotifier, OffsetManager, OffsetManagerConfig,
    StoredFanout, StoredSubscribers, TopicManager, TopicManagerConfig, TopicView,
};
use actormq_actors::namesrv::{Registry, RegistryConfig};
use actormq_actors::runtime::net::{
    ConnectionClosed, Listener, ListenerOptions, RemoteClient, Router, SessionLimits,
};
use actormq_actors::runtime::{
    CallRelay, ChildRef, ChildSpec, Escalation, Relay, RestartPolicy, SpawnChild, StopChild,
    StopSupervisor, Supervisor, route_child,
};
use actormq_protocol::request::{
    CreateTopicRequest, DeleteTopicInBrokerRequest, DeleteTopicInNamesrvRequest,
    GetAllTopicConfigRequest, GetAllTopicListFromNamesrvRequest, GetBrokerClusterInfoRequest,
    GetConsumerListByGroupRequest, GetMaxOffsetRequest, GetMinOffsetRequest,
    GetRouteInfoByTopicRequest, HeartbeatRequest, PullMessageRequest, QueryConsumerOffsetRequest,
    QueryMessageRequest, RegisterBrokerRequest, SearchOffsetByTimestampRequest,
    SendBatchMessageRequest, SendMessageRequest, UnregisterBrokerRequest,
    UpdateConsumerOffsetRequest, ViewMessageByIdRequest,
};
use slog::{Logger, info, o, warn};

use actormq_store::StoreConfig;

use crate::config::{FlushMode, NodeConfig, Role};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A listener could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The data directory is unusable.
    #[error("data dir {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A supervised service could not start.
    #[error("cannot start {0}")]
    Start(String),
    /// The store could not be opened (recovery failed, corruption, ...).
    #[error("store: {0}")]
    Store(#[from] actormq_store::Error),
    /// A broker plugin failed to install (it panicked).
    #[error("{0}")]
    Plugin(#[from] actormq_actors::broker::plugin::PluginError),
}

/// A running node; dropping it does not stop it, [`Node::shutdown`] does.
pub struct Node {
    /// Bound name-server address (namesrv and combined roles).
    pub namesrv_addr: Option<SocketAddr>,
    /// Bound broker address (broker and combined roles).
    pub broker_addr: Option<SocketAddr>,
    supervisor: Addr<Supervisor>,
    /// Names of the supervised listener children (stopped first at shutdown).
    listeners: Vec<&'static str>,
    registrar: Option<ChildRef<Registrar>>,
    flush: Option<ChildRef<FlushService>>,
    stored: Option<ChildRef<StoredFanout>>,
    store: Option<BrokerStore>,
    writer_arbiter: Option<Arbiter>,
    dispatcher_arbiter: Option<Arbiter>,
    logger: Logger,
}

impl Node {
    /// Starts the actors of `config.node.role` inside the current actix
    /// `System` and binds their listeners.
    pub async fn start(config: &NodeConfig, logger: &Logger) -> Result<Node, NodeError> {
        Node::start_with(config, logger, Vec::new()).await
    }

    /// Like [`Node::start`], installing `plugins` into the broker (they are
    /// ignored by a name-server-only node).
    pub async fn start_with(
        config: &NodeConfig,
        logger: &Logger,
        plugins: Vec<Box<dyn BrokerPlugin>>,
    ) -> Result<Node, NodeError> {
        let logger = logger.new(o!("role" => format!("{:?}", config.node.role).to_lowercase()));
        let supervisor = Supervisor::new(
            "node",
            &logger,
            RestartPolicy::default(),
            Escalation::StopSystem,
        )
        .start();
        let mut node = Node {
            namesrv_addr: None,
            broker_addr: None,
            supervisor,
            listeners: Vec::new(),
            registrar: None,
            flush: None,
            stored: None,
            store: None,
            writer_arbiter: None,
            dispatcher_arbiter: None,
            logger,
        };
        let role = config.node.role;
        let registry = if matches!(role, Role::Namesrv | Role::Combined) {
            Some(node.start_namesrv(config).await?)
        } else {
            None
        };
        if matches!(role, Role::Broker | Role::Combined) {
            node.start_broker(config, registry.as_ref(), plugins)
                .await?;
        }
        Ok(node)
    }

    async fn spawn<A: Actor<Context = Context<A>>>(
        &self,
        spec: ChildSpec<A>,
    ) -> Result<ChildRef<A>, NodeError> {
        self.supervisor
            .send(SpawnChild(spec))
            .await
            .map_err(|e| NodeError::Start(e.to_string()))
    }

    async fn start_namesrv(
        &mut self,
        config: &NodeConfig,
    ) -> Result<ChildRef<Registry>, NodeError> {
        let log = self.logger.clone();
        let registry = self
            .spawn(ChildSpec::new("registry", move || {
                Ok(Registry::new(RegistryConfig::default(), &log))
            }))
            .await?;
        let mut router = Router::new();
        route_child::<RegisterBrokerRequest, _>(&mut router, &registry);
        route_child::<UnregisterBrokerRequest, _>(&mut router, &registry);
        route_child::<GetRouteInfoByTopicRequest, _>(&mut router, &registry);
        route_child::<GetBrokerClusterInfoRequest, _>(&mut router, &registry);
        route_child::<GetAllTopicListFromNamesrvRequest, _>(&mut router, &registry);
        route_child::<DeleteTopicInNamesrvRequest, _>(&mut router, &registry);
        let closed: Recipient<ConnectionClosed> = Relay::new(registry.clone()).start().recipient();
        let (_listener, bound) = self
            .listen(
                "namesrv-listener",
                config.namesrv.listen,
                router,
                vec![closed],
            )
            .await?;
        self.namesrv_addr = Some(bound);
        Ok(registry)
    }

    async fn start_broker(
        &mut self,
        config: &NodeConfig,
        local_registry: Option<&ChildRef<Registry>>,
        plugins: Vec<Box<dyn BrokerPlugin>>,
    ) -> Result<(), NodeError> {
        let b = &config.broker;
        // Bind first: the port `:0` picks is stamped into every stored
        // message (its id) and registered with the name servers.
        let socket = std::net::TcpListener::bind(b.listen).map_err(|source| NodeError::Bind {
            addr: b.listen,
            source,
        })?;
        let bound = socket.local_addr().map_err(|source| NodeError::Bind {
            addr: b.listen,
            source,
        })?;
        let advertised = b.advertise.unwrap_or(bound);
        let data_dir = config.node.data_dir.clone();
        std::fs::create_dir_all(data_dir.join("config")).map_err(|source| NodeError::DataDir {
            dir: data_dir.clone(),
            source,
        })?;

        let view = TopicView::default();
        let topic_cfg = TopicManagerConfig {
            path: data_dir.join("config/topics.msgpack"),
            auto_create: b.auto_create_topic,
            default_queues: b.default_queues,
        };
        let (log, v) = (self.logger.clone(), view.clone());
        let topics = self
            .spawn(ChildSpec::new("topic-manager", move || {
                Ok(TopicManager::load(topic_cfg.clone(), v.clone(), &log)?)
            }))
            .await?;
        let offset_cfg = OffsetManagerConfig {
            path: data_dir.join("config/consumer_offsets.msgpack"),
            persist_interval: Duration::from_secs(5),
        };
        let log = self.logger.clone();
        let offsets = self
            .spawn(ChildSpec::new("offset-manager", move || {
                Ok(OffsetManager::load(offset_cfg.clone(), &log)?)
            }))
            .await?;
        let log = self.logger.clone();
        let groups = self
            .spawn(ChildSpec::new("group-manager", move || {
                Ok(GroupManager::new(GroupManagerConfig::default(), &log))
            }))
            .await?;

        let mut router = Router::new();
        self.start_data_path(config, advertised, &view, &topics, &offsets, &mut router)
            .await?;
        route_child::<CreateTopicRequest, _>(&mut router, &topics);
        route_child::<DeleteTopicInBrokerRequest, _>(&mut router, &topics);
        route_child::<GetAllTopicConfigRequest, _>(&mut router, &topics);
        route_child::<QueryConsumerOffsetRequest, _>(&mut router, &offsets);
        route_child::<UpdateConsumerOffsetRequest, _>(&mut router, &offsets);
        route_child::<HeartbeatRequest, _>(&mut router, &groups);
        route_child::<GetConsumerListByGroupRequest, _>(&mut router, &groups);
        if let Some(fanout) = &self.stored {
            let mut ctx = BrokerContext::new(
                self.supervisor.clone(),
                router,
                Relay::new(fanout.clone()).start().recipient(),
                &self.logger,
            );
            for plugin in plugins {
                info!(self.logger, "installing plugin"; "plugin" => plugin.name());
                actormq_actors::broker::plugin::install_plugin(plugin, &mut ctx)?;
            }
            router = ctx.into_router();
        }
        let closed: Recipient<ConnectionClosed> = Relay::new(groups.clone()).start().recipient();
        let options = ListenerOptions {
            subscribers: vec![closed],
            ..ListenerOptions::default()
        };
        let (spec, bound) = Listener::supervised(
            "broker-listener",
            socket,
            router,
            SessionLimits::default(),
            options,
            &self.logger,
        )
        .map_err(|source| NodeError::Bind {
            addr: bound,
            source,
        })?;
        let listener = self.spawn(spec).await?;
        self.listeners.push("broker-listener");
        self.broker_addr = Some(bound);

        // Registration: the local registry without a socket, others remote.
        let mut links = Vec::new();
        if let Some(registry) = local_registry {
            links.push(local_link(registry));
        }
        for addr in &b.namesrv {
            if Some(*addr) == self.namesrv_addr {
                continue; // our own registry is already linked locally
            }
            // Supervised, and linked through its handle: a proxy that died
            // is re-created and used again.
            let (remote, log) = (*addr, self.logger.clone());
            let proxy = self
                .spawn(ChildSpec::new(
                    format!("namesrv-proxy {remote}"),
                    move || Ok(RemoteClient::new(remote, &log)),
                ))
                .await?;
            links.push(NamesrvLink::through(remote.to_string(), &proxy));
        }
        let identity = BrokerIdentity {
            cluster: b.cluster.clone(),
            broker_name: b.broker_name.clone(),
            broker_id: b.broker_id,
            broker_addr: advertised.to_string(),
            ha_server_addr: b.ha_listen.map(|a| a.to_string()).unwrap_or_default(),
        };
        let (log, v) = (self.logger.clone(), view.clone());
        let registrar = self
            .spawn(ChildSpec::new("registrar", move || {
                Ok(Registrar::new(
                    identity.clone(),
                    links.clone(),
                    v.snapshot(),
                    RegistrarConfig::default(),
                    &log,
                ))
            }))
            .await?;
        let relay = Relay::new(registrar.clone()).start();
        follow(&topics, move |tm| {
            tm.do_send(SubscribeTopics(relay.clone().recipient()))
        });
        let notifier = self
            .spawn(ChildSpec::new("group-notifier", move || {
                Ok(GroupNotifier::new(listener.clone()))
            }))
            .await?;
        let to_notifier = Relay::new(notifier).start();
        follow(&groups, move |gm| {
            gm.do_send(SubscribeGroups(to_notifier.clone().recipient()))
        });
        self.registrar = Some(registrar);
        info!(self.logger, "broker started"; "addr" => %bound, "data_dir" => %data_dir.display());
        Ok(())
    }

    /// The commit-log writer (on its own arbiter with `broker.writer_thread`), dispatcher, long-poll
    /// holder, queries, flush and retention, all supervised, over one store.
    async fn start_data_path(
        &mut self,
        config: &NodeConfig,
        store_host: SocketAddr,
        view: &TopicView,
        topics: &ChildRef<TopicManager>,
        offsets: &ChildRef<OffsetManager>,
        router: &mut Router,
    ) -> Result<(), NodeError> {
        let b = &config.broker;
        let mut store_cfg = StoreConfig::new(&config.node.data_dir);
        store_cfg.segment_size = b.commit_log_segment_size;
        // A record must fit a segment: with small segments, large messages
        // are refused (MESSAGE_ILLEGAL) rather than the node.
        let fits =
            usize::try_from(b.commit_log_segment_size.saturating_sub(8)).unwrap_or(usize::MAX);
        store_cfg.max_message_size = store_cfg.max_message_size.min(fits);
        store_cfg.file_reserved_hours = u64::from(b.file_reserved_hours);
        store_cfg.flush_mode = match b.flush {
            FlushMode::Async => actormq_store::FlushMode::Async,
            FlushMode::Sync => actormq_store::FlushMode::Sync,
        };
        let started = std::time::Instant::now();
        let store = actix_rt::task::spawn_blocking(move || BrokerStore::open(store_cfg))
            .await
            .map_err(|e| NodeError::Start(format!("store: {e}")))??;
        let report = store.recovery_report();
        info!(self.logger, "store open"; "ms" => started.elapsed().as_millis() as u64,
            "report" => ?report);

        let (s, log) = (store.clone(), self.logger.clone());
        let dispatcher_arbiter = b.dispatcher_thread.then(Arbiter::new);
        let dispatcher_cfg = DispatcherConfig {
            // On its own thread already: no hand-off of big rounds.
            offload_bytes: if b.dispatcher_thread {
                u64::MAX
            } else {
                DispatcherConfig::default().offload_bytes
            },
            ..DispatcherConfig::default()
        };
        let spec = ChildSpec::new("dispatcher", move || {
            Ok(Dispatcher::new(s.clone(), dispatcher_cfg.clone(), &log))
        });
        let spec = match &dispatcher_arbiter {
            Some(a) => spec.on_arbiter(a.handle()),
            None => spec,
        };
        let dispatcher = self.spawn(spec).await?;
        self.dispatcher_arbiter = dispatcher_arbiter;
        let (s, v, log) = (store.clone(), view.clone(), self.logger.clone());
        let long_polling_max = Duration::from_millis(b.long_polling_max_ms);
        let offsets_relay = CallRelay::new(offsets.clone()).start();
        let pull = self
            .spawn(ChildSpec::new("pull-hold", move || {
                let cfg = PullHoldConfig {
                    long_polling_enabled: long_polling_max > Duration::ZERO,
                    long_polling_max,
                    ..PullHoldConfig::default()
                };
                Ok(PullHold::new(s.clone(), v.clone(), cfg, &log)
                    .with_offset_manager(offsets_relay.clone().recipient()))
            }))
            .await?;
        // Stored events reach the long-poll holder (and plugins) through a
        // fan-out that is re-subscribed to every dispatcher incarnation.
        let subscribers =
            StoredSubscribers::new(vec![Relay::new(pull.clone()).start().recipient()]);
        let fanout = self
            .spawn(ChildSpec::new("stored-fanout", move || {
                Ok(StoredFanout::new(subscribers.clone()))
            }))
            .await?;
        let to_fanout = Relay::new(fanout.clone()).start();
        follow(&dispatcher, move |d| {
            d.do_send(SubscribeStored(to_fanout.clone().recipient()))
        });
        self.stored = Some(fanout);

        let s = store.clone();
        let query = self
            .spawn(ChildSpec::new("query", move || {
                Ok(QueryService::new(s.clone()))
            }))
            .await?;
        let (s, log) = (store.clone(), self.logger.clone());
        let flush = self
            .spawn(ChildSpec::new("flush", move || {
                Ok(FlushService::new(
                    s.clone(),
                    FlushServiceConfig::default(),
                    &log,
                ))
            }))
            .await?;
        let (s, log) = (store.clone(), self.logger.clone());
        self.spawn(ChildSpec::new("retention", move || {
            Ok(RetentionCleaner::new(
                s.clone(),
                RetentionConfig::default(),
                &log,
            ))
        }))
        .await?;

        let writer_arbiter = b.writer_thread.then(Arbiter::new);
        let dispatcher_thread = b.dispatcher_thread;
        let (s, v, log) = (store.clone(), view.clone(), self.logger.clone());
        let resolver = CallRelay::new(topics.clone()).start();
        let appended = Relay::new(dispatcher.clone()).start();
        let spec = ChildSpec::new("commit-log", move || {
            let cfg = CommitLogConfig {
                store_host,
                nudge_interval: if dispatcher_thread {
                    Duration::from_millis(1)
                } else {
                    Duration::ZERO
                },
                ..CommitLogConfig::default()
            };
            Ok(CommitLogActor::new(
                s.clone(),
                v.clone(),
                resolver.clone().recipient(),
                cfg,
                &log,
            )
            .with_dispatcher(appended.clone().recipient()))
        });
        // The sessions' arbiter by default: one hop fewer per request,
        // which on 2 cores beats a thread of its own (broker.writer_thread).
        let spec = match &writer_arbiter {
            Some(a) => spec.on_arbiter(a.handle()),
            None => spec,
        };
        let writer = self.spawn(spec).await?;

        route_child::<SendMessageRequest, _>(router, &writer);
        route_child::<SendBatchMessageRequest, _>(router, &writer);
        route_child::<PullMessageRequest, _>(router, &pull);
        route_child::<GetMaxOffsetRequest, _>(router, &query);
        route_child::<GetMinOffsetRequest, _>(router, &query);
        route_child::<SearchOffsetByTimestampRequest, _>(router, &query);
        route_child::<ViewMessageByIdRequest, _>(router, &query);
        route_child::<QueryMessageRequest, _>(router, &query);
        self.flush = Some(flush);
        self.store = Some(store);
        self.writer_arbiter = writer_arbiter;
        Ok(())
    }

    /// Binds `addr` and serves it with a supervised listener named `name`
    /// (a restart binds the same port again).
    async fn listen(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        subscribers: Vec<Recipient<ConnectionClosed>>,
    ) -> Result<(ChildRef<Listener>, SocketAddr), NodeError> {
        let options = ListenerOptions {
            subscribers,
            ..ListenerOptions::default()
        };
        let socket =
            std::net::TcpListener::bind(addr).map_err(|source| NodeError::Bind { addr, source })?;
        let (spec, bound) = Listener::supervised(
            name,
            socket,
            router,
            SessionLimits::default(),
            options,
            &self.logger,
        )
        .map_err(|source| NodeError::Bind { addr, source })?;
        let listener = self.spawn(spec).await?;
        self.listeners.push(name);
        Ok((listener, bound))
    }

    /// The line scripts wait for: `actormq ready namesrv=… broker=…`
    /// (an absent role is omitted).
    pub fn ready_line(&self) -> String {
        let mut line = String::from("actormq ready");
        if let Some(a) = self.namesrv_addr {
            line.push_str(&format!(" namesrv={a}"));
        }
        if let Some(a) = self.broker_addr {
            line.push_str(&format!(" broker={a}"));
        }
        line
    }

    /// Graceful stop: stop accepting and close sessions, unregister from
    /// name servers, then stop every actor (state is persisted by their
    /// `stopped` hooks).
    pub async fn shutdown(self) {
        info!(self.logger, "shutting down");
        for name in &self.listeners {
            let _ = self.supervisor.send(StopChild((*name).into())).await;
        }
        if let Some(registrar) = self.registrar.as_ref().and_then(ChildRef::addr) {
            let unregister = registrar
                .send(UnregisterAll)
                .timeout(Duration::from_secs(5));
            if unregister.await.is_err() {
                warn!(self.logger, "unregister timed out");
            }
        }
        if let Some(flush) = self.flush.as_ref().and_then(ChildRef::addr) {
            match flush
                .send(FlushAndCheckpoint)
                .timeout(Duration::from_secs(30))
                .await
            {
                Ok(Ok(lag)) => info!(self.logger, "final flush done"; "lag" => ?lag),
                other => warn!(self.logger, "final flush failed"; "result" => ?other),
            }
        }
        let _ = self.supervisor.send(StopSupervisor).await;
        if let Some(store) = self.store {
            match store.close(Duration::from_secs(10)).await {
                Ok(Ok(())) => info!(self.logger, "store closed cleanly"),
                Ok(Err(e)) => warn!(self.logger, "store close failed"; "error" => %e),
                Err(_) => warn!(
                    self.logger,
                    "store still in use at exit; next start recovers"
                ),
            }
        }
        for arbiter in [self.writer_arbiter, self.dispatcher_arbiter]
            .into_iter()
            .flatten()
        {
            arbiter.stop();
        }
        info!(self.logger, "stopped");
    }
}

fn local_link(registry: &ChildRef<Registry>) -> NamesrvLink {
    NamesrvLink::through("local", registry)
}

/// Runs `on_start` for the current incarnation of `child` and for every
/// new one (re-subscribing stable relays after a restart).
fn follow<A, F>(child: &ChildRef<A>, on_start: F)
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

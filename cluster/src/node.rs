//! Node assembly: the same actors arranged as a name server, a broker, or
//! both (combined), by configuration.
//!
//! ```text
//! node supervisor (one-for-one; escalation stops the node with exit code 1)
//! ├── registry            (namesrv role)   ← namesrv listener routes 103-106, 206, 216
//! ├── the broker's actors (broker role)    ← broker listener; started by
//! │                                          `BrokerActors::start_on` (actors crate)
//! └── registrar           → every name server: the local registry by a
//!                           local recipient (combined), remote ones
//!                           through client sessions (`--namesrv`)
//! └── client-session ADDR  (one per remote name server)
//! ```
//!
//! Routes and event subscriptions go through [`route_child`] and
//! [`Relay`], so they follow a child across restarts.
//!
//! Start order ([`Node::start`]):
//! 1. the broker's store opens (broker roles): it takes the data-dir lock,
//!    so a second node on a held data dir fails here, before it binds any
//!    port;
//! 2. the name-server listener binds (namesrv roles);
//! 3. the broker's listener binds and its actors start;
//! 4. one registration round with every name server, awaited (a name
//!    server that refuses or does not answer within 3 s is logged and
//!    retried by the registrar every 30 s).
//!
//! Only then does `start` return, and the binaries print their `actormq
//! ready` line: a client that starts on it finds the broker registered.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::ha::{HaConfig, HaRole as ActorHaRole};
use actormq_actors::broker::plugin::{BrokerContext, BrokerPlugin};
use actormq_actors::broker::registrar::{
    BrokerIdentity, ChangeIdentity, NamesrvLink, RegisterNow, Registrar, RegistrarConfig,
    UnregisterAll,
};
use actormq_actors::broker::topic_manager::SubscribeTopics;
use actormq_actors::broker::wiring::follow;
use actormq_actors::broker::{BrokerActors, BrokerActorsConfig, BrokerStore, WiringError};
use actormq_actors::namesrv::{Registry, RegistryConfig};
use actormq_actors::runtime::net::{
    ClientHandle, ClientOptions, ConnectionClosed, Listener, ListenerOptions, Router, SessionLimits,
};
use actormq_actors::runtime::{
    ChildRef, ChildSpec, Escalation, Relay, RestartPolicy, SpawnChild, StopChild, StopSupervisor,
    Supervisor, route_child,
};
use actormq_grpc::{
    GrpcClients, GrpcClientsConfig, GrpcServer, GrpcSession, GrpcSessionConfig, GrpcTargets,
};
use actormq_http::{
    ApiConfig, BrokerSources, CountSource, Extra, HttpServer, NodeMetrics, Sampler, Sources,
    StatsHistory,
};
use actormq_protocol::request::{
    DeleteTopicInNamesrvRequest, GetAllTopicListFromNamesrvRequest, GetBrokerClusterInfoRequest,
    GetRouteInfoByTopicRequest, RegisterBrokerRequest, UnregisterBrokerRequest,
};
use actormq_store::StoreConfig;
use slog::{Logger, info, o, warn};

use crate::config::{FlushMode, HaRole, NodeConfig, Role, parse_delay_levels};

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
    /// The bound HA address of a master (`None`: not a master, or no HA listener).
    pub ha_addr: Option<SocketAddr>,
    /// The bound RocketMQ 5 gRPC address (`None`: off, or no broker).
    pub grpc_addr: Option<SocketAddr>,
    /// The bound HTTP address: metrics, admin API, dashboard (`None`: off).
    pub http_addr: Option<SocketAddr>,
    role_watch: Option<actix_rt::task::JoinHandle<()>>,
    supervisor: Addr<Supervisor>,
    /// Names of the supervised listener children (stopped first at shutdown).
    listeners: Vec<&'static str>,
    /// The client listeners by kind (`native`, `namesrv`), for metrics.
    client_listeners: Vec<(String, ChildRef<Listener>)>,
    /// Other front doors counted in `actormq_connections` (`grpc`).
    counted_doors: Vec<(String, CountSource)>,
    registrar: Option<ChildRef<Registrar>>,
    broker: Option<BrokerActors>,
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
            ha_addr: None,
            grpc_addr: None,
            http_addr: None,
            role_watch: None,
            supervisor,
            listeners: Vec::new(),
            client_listeners: Vec::new(),
            counted_doors: Vec::new(),
            registrar: None,
            broker: None,
            logger,
        };
        let role = config.node.role;
        // The data dir first: opening the store takes its lock, so a second
        // node on a held dir stops here, before it binds any port.
        let store = if matches!(role, Role::Broker | Role::Combined) {
            Some(open_store(config, &node.logger).await?)
        } else {
            None
        };
        let registry = if matches!(role, Role::Namesrv | Role::Combined) {
            match node.start_namesrv(config).await {
                Ok(registry) => Some(registry),
                Err(e) => {
                    close_unused(store, &node.logger).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        if let Some(store) = store {
            node.start_broker(config, store, registry.as_ref(), plugins)
                .await?;
        }
        if let Some(addr) = config.http_listen_addr() {
            node.http_addr = Some(node.listen_http(addr, config).await?);
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
        let options = ListenerOptions {
            subscribers: vec![closed],
            max_connections: Some(config.namesrv.max_connections),
            max_connection_memory: Some(config.namesrv.max_connection_memory),
            ..ListenerOptions::default()
        };
        let (listener, bound) = self
            .listen("namesrv-listener", config.namesrv.listen, router, options)
            .await?;
        self.client_listeners.push(("namesrv".to_owned(), listener));
        self.namesrv_addr = Some(bound);
        Ok(registry)
    }

    async fn start_broker(
        &mut self,
        config: &NodeConfig,
        store: BrokerStore,
        local_registry: Option<&ChildRef<Registry>>,
        plugins: Vec<Box<dyn BrokerPlugin>>,
    ) -> Result<(), NodeError> {
        let b = &config.broker;
        // Bind before the actors start: the port `:0` picks is stamped into
        // every stored message (its id) and registered with the name
        // servers.
        let bound = std::net::TcpListener::bind(b.listen)
            .and_then(|socket| socket.local_addr().map(|bound| (socket, bound)));
        let (socket, bound) = match bound {
            Ok(ok) => ok,
            Err(source) => {
                close_unused(Some(store), &self.logger).await;
                return Err(NodeError::Bind {
                    addr: b.listen,
                    source,
                });
            }
        };
        let advertised = b.advertise.unwrap_or(bound);
        let data_dir = config.node.data_dir.clone();

        let actors_config = broker_actors_config(config, advertised);
        // What a gRPC client may send (`publishing.max_body_size`): what
        // the writer and a commit-log record both take.
        let max_body_size = actors_config
            .writer
            .max_message_size
            .min(store.config().max_message_size);
        let broker = BrokerActors::start_on(&self.supervisor, store, actors_config, &self.logger)
            .await
            .map_err(|e| match e {
                WiringError::Store(e) => NodeError::Store(e),
                WiringError::StateDir { dir, source } => NodeError::DataDir { dir, source },
                WiringError::Start(what) => NodeError::Start(what),
                WiringError::HaListen { addr, source } => NodeError::Bind { addr, source },
                other => NodeError::Start(other.to_string()),
            })?;
        let mut router = Router::new();
        broker.route(&mut router);
        let mut ctx = BrokerContext::new(
            self.supervisor.clone(),
            router,
            broker.stored.clone(),
            &self.logger,
        );
        for plugin in plugins {
            info!(self.logger, "installing plugin"; "plugin" => plugin.name());
            actormq_actors::broker::plugin::install_plugin(plugin, &mut ctx)?;
        }
        let router = ctx.into_router();
        let closed: Recipient<ConnectionClosed> =
            Relay::new(broker.groups.clone()).start().recipient();
        let options = ListenerOptions {
            subscribers: vec![closed],
            max_connections: Some(b.max_connections),
            max_connection_memory: Some(b.max_connection_memory),
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
        self.client_listeners
            .push(("native".to_owned(), listener.clone()));
        self.broker_addr = Some(bound);
        broker
            .notify_groups_through(&self.supervisor, listener)
            .await
            .map_err(|e| NodeError::Start(e.to_string()))?;
        if let Some(addr) = config.grpc_listen_addr() {
            self.grpc_addr = Some(
                self.listen_grpc(addr, &broker, b, advertised, max_body_size, &config.grpc)
                    .await?,
            );
        }

        // Registration: the local registry without a socket, others remote.
        let mut links = Vec::new();
        if let Some(registry) = local_registry {
            links.push(local_link(registry));
        }
        for addr in &b.namesrv {
            if Some(*addr) == self.namesrv_addr {
                continue; // our own registry is already linked locally
            }
            // A supervised client session, linked through its handle: one
            // that died is re-created and used again.
            let remote = *addr;
            let session = ClientHandle::new(remote, ClientOptions::default(), None, &self.logger);
            session.spawn_under(&self.supervisor, format!("client-session {remote}"));
            links.push(NamesrvLink::through(remote.to_string(), session.child()));
        }
        // The HA address slaves are told: the advertised host with the
        // bound HA port.
        let ha_addr = broker.ha_addr.map(|mut a| {
            if b.advertise.is_some() {
                a.set_ip(advertised.ip());
            }
            a
        });
        self.ha_addr = broker.ha_addr;
        let identity = BrokerIdentity {
            cluster: b.cluster.clone(),
            broker_name: b.broker_name.clone(),
            broker_id: b.broker_id,
            broker_addr: advertised.to_string(),
            ha_server_addr: ha_addr.map(|a| a.to_string()).unwrap_or_default(),
        };
        // A promoted slave registers as the master (id 0), with the HA
        // listener it opens then, also after a restart of the registrar.
        let promoted_ha: std::sync::Arc<std::sync::Mutex<Option<SocketAddr>>> = Default::default();
        let current = {
            let (ha, promoted_ha) = (broker.ha.clone(), promoted_ha.clone());
            move || {
                let mut id = identity.clone();
                if ha.role().is_master() {
                    id.broker_id = 0;
                }
                if let Some(a) = promoted_ha.lock().ok().and_then(|a| *a) {
                    id.ha_server_addr = a.to_string();
                }
                id
            }
        };
        let namesrvs = links.len();
        let (log, v, who) = (self.logger.clone(), broker.view.clone(), current.clone());
        let registrar = self
            .spawn(ChildSpec::new("registrar", move || {
                Ok(Registrar::new(
                    who(),
                    links.clone(),
                    v.snapshot(),
                    RegistrarConfig::default(),
                    &log,
                ))
            }))
            .await?;
        {
            let mut roles = broker.ha.watch_role();
            let registrar = registrar.clone();
            let (actors, supervisor, log) =
                (broker.clone(), self.supervisor.clone(), self.logger.clone());
            let (listen, advertise) = (config.ha_listen_rule(), b.advertise);
            // Holds the broker's actors (and so its store): aborted by
            // `shutdown` before the store is closed.
            self.role_watch = Some(actix_rt::spawn(async move {
                while roles.changed().await.is_ok() {
                    let promoted = actors.ha.role().is_master();
                    if promoted && actors.ha_addr.is_none() && actors.ha_replicator.addr().is_none()
                    {
                        // A promoted slave takes slaves of its own.
                        match actors.listen_for_slaves(&supervisor, listen).await {
                            Ok(mut bound) => {
                                info!(log, "listening for slaves after promotion"; "ha" => %bound);
                                if let Some(adv) = advertise {
                                    bound.set_ip(adv.ip());
                                }
                                if let Ok(mut a) = promoted_ha.lock() {
                                    *a = Some(bound);
                                }
                            }
                            Err(e) => warn!(log, "no HA listener after promotion"; "error" => %e),
                        }
                    }
                    if let Some(r) = registrar.addr() {
                        r.do_send(ChangeIdentity(current()));
                    }
                }
            }));
        }
        let relay = Relay::new(registrar.clone()).start();
        follow(&broker.topics, move |tm| {
            tm.do_send(SubscribeTopics(relay.clone().recipient()))
        });
        self.register_once(&registrar, namesrvs).await;
        self.registrar = Some(registrar);
        self.broker = Some(broker);
        info!(self.logger, "broker started"; "addr" => %bound, "data_dir" => %data_dir.display());
        Ok(())
    }

    /// One registration round with every name server, awaited: the node
    /// reports ready only after it, so a client that starts on the ready
    /// line finds the broker in its name servers (no "no route" window).
    /// A name server that refuses or does not answer within the call
    /// timeout (3 s) is logged and left to the registrar's 30 s retries;
    /// the broker still starts (a name server may come up later).
    async fn register_once(&self, registrar: &ChildRef<Registrar>, namesrvs: usize) {
        let accepted = match registrar.addr() {
            Some(r) => r.send(RegisterNow).await.unwrap_or(0),
            None => 0,
        };
        if accepted == namesrvs {
            info!(self.logger, "registered with every name server"; "count" => namesrvs);
        } else {
            warn!(self.logger, "not registered with every name server yet; retrying every 30 s";
                "accepted" => accepted, "count" => namesrvs);
        }
    }

    /// Binds the RocketMQ 5 gRPC endpoint on `addr` and serves it with a
    /// supervised `grpc-server` child (a `GrpcSession` in front of the
    /// broker's actors); returns the bound address.
    async fn listen_grpc(
        &mut self,
        addr: SocketAddr,
        broker: &BrokerActors,
        b: &crate::config::BrokerSection,
        advertised: SocketAddr,
        max_body_size: usize,
        grpc: &crate::config::GrpcSection,
    ) -> Result<SocketAddr, NodeError> {
        let auto_renew_invisible_ms = grpc.auto_renew_invisible_ms();
        let (socket, bound) = std::net::TcpListener::bind(addr)
            .and_then(|s| s.local_addr().map(|bound| (s, bound)))
            .map_err(|source| NodeError::Bind { addr, source })?;
        // Clients are told the advertised host with the bound gRPC port.
        let mut endpoint = bound;
        if b.advertise.is_some() {
            endpoint.set_ip(advertised.ip());
        }
        // The connected clients (one session per client id): a supervised
        // child; the broker's transaction checks for gRPC producers reach
        // it through the group notifier.
        let (groups, pop, log) = (
            broker.groups.clone(),
            broker.pop.clone(),
            self.logger.clone(),
        );
        let clients = self
            .spawn(ChildSpec::new("grpc-clients", move || {
                Ok(GrpcClients::new(
                    GrpcClientsConfig {
                        idle_timeout: std::time::Duration::from_millis(
                            actormq_actors::broker::group_manager::DEFAULT_CLIENT_TIMEOUT_MS,
                        ),
                        tick: std::time::Duration::from_millis(200),
                        endpoint,
                    },
                    groups.clone(),
                    pop.clone(),
                    &log,
                ))
            }))
            .await?;
        let counted = clients.clone();
        self.counted_doors.push((
            "grpc".to_owned(),
            std::sync::Arc::new(move || counted.addr().map(|a| a.recipient())),
        ));
        broker.foreign_sessions.install(
            actormq_actors::runtime::CallRelay::new(clients.clone())
                .start()
                .recipient(),
        );
        let session = std::sync::Arc::new(GrpcSession::new(
            GrpcSessionConfig {
                broker_name: b.broker_name.clone(),
                endpoint,
                max_body_size,
                auto_create_queues: b.auto_create_topic.then_some(b.default_queues),
                max_poll_ms: b.long_polling_max_ms,
                auto_renew_invisible_ms,
            },
            GrpcTargets {
                writer: broker.writer.clone(),
                view: broker.view.clone(),
                pop: broker.pop.clone(),
                end_transaction: broker.end_transaction.clone(),
                subscription_groups: broker.subscription_groups.clone(),
                clients,
                retry: broker.retry.clone(),
                store: broker.store.clone(),
            },
            &self.logger,
        ));
        let log = self.logger.clone();
        self.spawn(ChildSpec::new("grpc-server", move || {
            Ok(GrpcServer::new(
                socket.try_clone()?,
                std::sync::Arc::clone(&session),
                &log,
            ))
        }))
        .await?;
        self.listeners.push("grpc-server");
        info!(self.logger, "grpc endpoint listening"; "addr" => %bound);
        Ok(bound)
    }

    /// The name servers this node's admin API asks: its own (a wildcard
    /// bind asked on loopback) and the broker's `--namesrv`.
    fn admin_namesrvs(&self, config: &NodeConfig) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(mut a) = self.namesrv_addr {
            if a.ip().is_unspecified() {
                a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            out.push(a.to_string());
        }
        if config.node.role != Role::Namesrv {
            for a in &config.broker.namesrv {
                if !out.contains(&a.to_string()) {
                    out.push(a.to_string());
                }
            }
        }
        out
    }

    /// Binds the HTTP endpoint (metrics, admin API, dashboard) on `addr`
    /// and serves it with a supervised `http-server` child; returns the
    /// bound address.
    async fn listen_http(
        &mut self,
        addr: SocketAddr,
        config: &NodeConfig,
    ) -> Result<SocketAddr, NodeError> {
        let (socket, bound) = std::net::TcpListener::bind(addr)
            .and_then(|s| s.local_addr().map(|bound| (s, bound)))
            .map_err(|source| NodeError::Bind { addr, source })?;
        let api = ApiConfig::new(self.admin_namesrvs(config));
        let metrics = NodeMetrics::new(self.broker.as_ref().map(|b| b.metrics.as_ref()));
        let stats = std::sync::Arc::new(StatsHistory::new());
        let sources = Sources {
            broker: self.broker.as_ref().map(|b| BrokerSources {
                metrics: b.metrics.clone(),
                store: b.store.clone(),
                offsets: b.offsets.clone(),
                ha: b.ha.clone(),
            }),
            supervisor: self.supervisor.clone(),
            listeners: self.client_listeners.clone(),
            others: self.counted_doors.clone(),
        };
        let (m, st, log) = (metrics.clone(), stats.clone(), self.logger.clone());
        self.spawn(ChildSpec::new("metrics-sampler", move || {
            Ok(Sampler::new(sources.clone(), m.clone(), st.clone(), &log))
        }))
        .await?;
        let render: std::sync::Arc<dyn Fn() -> String + Send + Sync> =
            std::sync::Arc::new(move || metrics.render());
        let extra = std::sync::Arc::new(Extra {
            metrics: Some(render),
            stats: self.broker.is_some().then_some(stats),
        });
        let log = self.logger.clone();
        self.spawn(ChildSpec::new("http-server", move || {
            Ok(HttpServer::new(
                socket.try_clone()?,
                api.clone(),
                std::sync::Arc::clone(&extra),
                &log,
            ))
        }))
        .await?;
        self.listeners.push("http-server");
        info!(self.logger, "http endpoint listening"; "addr" => %bound);
        Ok(bound)
    }

    /// Binds `addr` and serves it with a supervised listener named `name`
    /// (a restart binds the same port again).
    async fn listen(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        options: ListenerOptions,
    ) -> Result<(ChildRef<Listener>, SocketAddr), NodeError> {
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
        if let Some(a) = self.ha_addr {
            line.push_str(&format!(" ha={a}"));
        }
        if let Some(a) = self.grpc_addr {
            line.push_str(&format!(" grpc={a}"));
        }
        if let Some(a) = self.http_addr {
            line.push_str(&format!(" http={a}"));
        }
        line
    }

    /// The broker's actors (broker and combined roles).
    pub fn broker(&self) -> Option<&BrokerActors> {
        self.broker.as_ref()
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
        if let Some(watch) = &self.role_watch {
            watch.abort();
        }
        if let Some(broker) = &self.broker {
            broker.flush_and_checkpoint().await;
        }
        let _ = self.supervisor.send(StopSupervisor).await;
        if let Some(broker) = self.broker {
            broker.close().await;
        }
        info!(self.logger, "stopped");
    }
}

/// Opens the broker's store, which locks the data dir (one node per data
/// dir, `actormq_store::DirLock`).
async fn open_store(config: &NodeConfig, logger: &Logger) -> Result<BrokerStore, NodeError> {
    let cfg = store_config(config);
    let started = std::time::Instant::now();
    let store = actix_rt::task::spawn_blocking(move || BrokerStore::open(cfg))
        .await
        .map_err(|e| NodeError::Start(format!("store: {e}")))??;
    info!(logger, "store open"; "ms" => started.elapsed().as_millis() as u64,
        "report" => ?store.recovery_report());
    Ok(store)
}

/// Closes a store opened for a start that failed before the broker's
/// actors took it (flushed, checkpointed, the data dir unlocked).
async fn close_unused(store: Option<BrokerStore>, logger: &Logger) {
    if let Some(store) = store
        && let Err(e) = store
            .close(Duration::from_secs(10))
            .await
            .unwrap_or(Err(actormq_store::Error::Closed))
    {
        warn!(logger, "store not closed cleanly"; "error" => %e);
    }
}

fn local_link(registry: &ChildRef<Registry>) -> NamesrvLink {
    NamesrvLink::through("local", registry)
}

/// The broker actors' settings from the node's configuration.
fn broker_actors_config(config: &NodeConfig, store_host: SocketAddr) -> BrokerActorsConfig {
    let b = &config.broker;
    let mut c = BrokerActorsConfig::new(store_config(config), &config.node.data_dir, store_host);
    c.topics.auto_create = b.auto_create_topic;
    c.topics.default_queues = b.default_queues;
    c.subscription_groups.auto_create = b.auto_create_subscription_group;
    c.subscription_groups.default_retry_max = b.max_reconsume_times;
    // Validated with the config: a bad table never gets here.
    c.writer.delay_levels_ms = parse_delay_levels(&b.message_delay_level)
        .unwrap_or_else(|_| actormq_actors::broker::commit_log::DEFAULT_DELAY_LEVELS_MS.to_vec());
    c.broker_name = b.broker_name.clone();
    c.effective_config = effective_config(config);
    c.writer.dedup.window = b.producer_dedup_window as usize;
    c.writer.dedup.max_producers = b.producer_dedup_max_producers as usize;
    let long_polling_max = Duration::from_millis(b.long_polling_max_ms);
    c.pull.long_polling_enabled = long_polling_max > Duration::ZERO;
    c.pull.long_polling_max = long_polling_max;
    c.pull.property_filter = b.enable_property_filter;
    c.pull.suggest_slave_behind_bytes = b.slave_read_enable.then(|| {
        memory_bytes().saturating_mul(u64::from(b.access_message_in_memory_max_ratio)) / 100
    });
    c.groups.property_filter = b.enable_property_filter;
    c.pop.property_filter = b.enable_property_filter;
    // The sessions' arbiter by default: one hop fewer per request, which
    // on 2 cores beats a thread of its own (broker.writer_thread).
    c.writer_thread = b.writer_thread;
    c.dispatcher_thread = b.dispatcher_thread;
    c.transactions.timeout = Duration::from_millis(b.transaction_timeout_ms);
    c.transactions.check_interval = Duration::from_millis(b.transaction_check_interval_ms);
    c.transactions.check_max = b.transaction_check_max;
    c.ha = HaConfig {
        role: match b.ha_role {
            HaRole::AsyncMaster => ActorHaRole::AsyncMaster,
            HaRole::SyncMaster => ActorHaRole::SyncMaster,
            HaRole::Slave => ActorHaRole::Slave,
        },
        listen: config.ha_listen_addr(),
        master: b.master,
        sync_timeout: Duration::from_millis(b.ha_sync_timeout_ms),
        config_sync: Duration::from_millis(b.ha_config_sync_ms),
        ..HaConfig::default()
    };
    c
}

/// The node's configuration as `key = value` text by dotted key
/// (`broker.flush = async`), what `GET_BROKER_CONFIG` answers.
pub fn effective_config(config: &NodeConfig) -> std::collections::BTreeMap<String, String> {
    fn flatten(
        prefix: &str,
        v: &toml::Value,
        out: &mut std::collections::BTreeMap<String, String>,
    ) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            toml::Value::String(s) => {
                out.insert(prefix.to_owned(), s.clone());
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(config) {
        flatten("", &v, &mut out);
    }
    out
}

/// The store's settings from the node's configuration.
fn store_config(config: &NodeConfig) -> StoreConfig {
    let b = &config.broker;
    let mut store = StoreConfig::new(&config.node.data_dir);
    store.segment_size = b.commit_log_segment_size;
    // A record must fit a segment: with small segments, large messages
    // are refused (MESSAGE_ILLEGAL) rather than the node.
    let fits = usize::try_from(b.commit_log_segment_size.saturating_sub(8)).unwrap_or(usize::MAX);
    store.max_message_size = store.max_message_size.min(fits);
    store.file_reserved_hours = u64::from(b.file_reserved_hours);
    store.flush_mode = match b.flush {
        FlushMode::Async => actormq_store::FlushMode::Async,
        FlushMode::Sync => actormq_store::FlushMode::Sync,
    };
    store
}

/// The machine's memory (`MemTotal` of `/proc/meminfo`), bytes; 0 when
/// it cannot be read.
fn memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb.saturating_mul(1024))
}

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
use actormq_actors::broker::registrar::{
    BrokerIdentity, NamesrvLink, Registrar, RegistrarConfig, UnregisterAll,
};
use actormq_actors::broker::topic_manager::SubscribeTopics;
use actormq_actors::broker::{
    GroupManager, GroupManagerConfig, OffsetManager, OffsetManagerConfig, TopicManager,
    TopicManagerConfig, TopicView,
};
use actormq_actors::namesrv::{Registry, RegistryConfig};
use actormq_actors::runtime::net::{
    ConnectionClosed, Listener, ListenerOptions, RemoteClient, Router, SessionLimits, StopListener,
};
use actormq_actors::runtime::{
    CallRelay, ChildRef, ChildSpec, Escalation, Relay, RestartPolicy, SpawnChild, StopSupervisor,
    Supervisor, route_child,
};
use actormq_protocol::request::{
    CreateTopicRequest, DeleteTopicInBrokerRequest, DeleteTopicInNamesrvRequest,
    GetAllTopicConfigRequest, GetAllTopicListFromNamesrvRequest, GetBrokerClusterInfoRequest,
    GetConsumerListByGroupRequest, GetRouteInfoByTopicRequest, HeartbeatRequest,
    QueryConsumerOffsetRequest, RegisterBrokerRequest, UnregisterBrokerRequest,
    UpdateConsumerOffsetRequest,
};
use slog::{Logger, info, o, warn};

use crate::config::{NodeConfig, Role};

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
}

/// A running node; dropping it does not stop it, [`Node::shutdown`] does.
pub struct Node {
    /// Bound name-server address (namesrv and combined roles).
    pub namesrv_addr: Option<SocketAddr>,
    /// Bound broker address (broker and combined roles).
    pub broker_addr: Option<SocketAddr>,
    supervisor: Addr<Supervisor>,
    listeners: Vec<Addr<Listener>>,
    registrar: Option<ChildRef<Registrar>>,
    logger: Logger,
}

impl Node {
    /// Starts the actors of `config.node.role` inside the current actix
    /// `System` and binds their listeners.
    pub async fn start(config: &NodeConfig, logger: &Logger) -> Result<Node, NodeError> {
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
            logger,
        };
        let role = config.node.role;
        let registry = if matches!(role, Role::Namesrv | Role::Combined) {
            Some(node.start_namesrv(config).await?)
        } else {
            None
        };
        if matches!(role, Role::Broker | Role::Combined) {
            node.start_broker(config, registry.as_ref()).await?;
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
        let (listener, bound) = self.listen(config.namesrv.listen, router, vec![closed])?;
        self.listeners.push(listener);
        self.namesrv_addr = Some(bound);
        Ok(registry)
    }

    async fn start_broker(
        &mut self,
        config: &NodeConfig,
        local_registry: Option<&ChildRef<Registry>>,
    ) -> Result<(), NodeError> {
        let b = &config.broker;
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
        route_child::<CreateTopicRequest, _>(&mut router, &topics);
        route_child::<DeleteTopicInBrokerRequest, _>(&mut router, &topics);
        route_child::<GetAllTopicConfigRequest, _>(&mut router, &topics);
        route_child::<QueryConsumerOffsetRequest, _>(&mut router, &offsets);
        route_child::<UpdateConsumerOffsetRequest, _>(&mut router, &offsets);
        route_child::<HeartbeatRequest, _>(&mut router, &groups);
        route_child::<GetConsumerListByGroupRequest, _>(&mut router, &groups);
        let closed: Recipient<ConnectionClosed> = Relay::new(groups.clone()).start().recipient();
        let (listener, bound) = self.listen(b.listen, router, vec![closed])?;
        self.listeners.push(listener);
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
            let client = RemoteClient::connect(*addr, &self.logger);
            links.push(NamesrvLink {
                name: addr.to_string(),
                register: client.clone().recipient(),
                unregister: client.recipient(),
            });
        }
        let identity = BrokerIdentity {
            cluster: b.cluster.clone(),
            broker_name: b.broker_name.clone(),
            broker_id: b.broker_id,
            broker_addr: b.advertise.unwrap_or(bound).to_string(),
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
        if let Some(tm) = topics.addr() {
            tm.do_send(SubscribeTopics(relay.recipient()));
        }
        self.registrar = Some(registrar);
        info!(self.logger, "broker started"; "addr" => %bound, "data_dir" => %data_dir.display());
        Ok(())
    }

    fn listen(
        &self,
        addr: SocketAddr,
        router: Router,
        subscribers: Vec<Recipient<ConnectionClosed>>,
    ) -> Result<(Addr<Listener>, SocketAddr), NodeError> {
        let options = ListenerOptions {
            subscribers,
            ..ListenerOptions::default()
        };
        Listener::bind_with(
            addr,
            router,
            SessionLimits::default(),
            options,
            &self.logger,
        )
        .map_err(|source| NodeError::Bind { addr, source })
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
        for l in &self.listeners {
            let _ = l.send(StopListener).await;
        }
        if let Some(registrar) = self.registrar.as_ref().and_then(ChildRef::addr) {
            let unregister = registrar
                .send(UnregisterAll)
                .timeout(Duration::from_secs(5));
            if unregister.await.is_err() {
                warn!(self.logger, "unregister timed out");
            }
        }
        let _ = self.supervisor.send(StopSupervisor).await;
        info!(self.logger, "stopped");
    }
}

fn local_link(registry: &ChildRef<Registry>) -> NamesrvLink {
    let relay = CallRelay::new(registry.clone()).start();
    NamesrvLink {
        name: "local".into(),
        register: relay.clone().recipient(),
        unregister: relay.recipient(),
    }
}

//! `Registrar`: keeps the broker registered with every name server.
//!
//! It registers every 30 s and at once when the topic table changes
//! ([`TopicsChanged`]), and unregisters on a clean stop. Each name server is
//! a [`NamesrvLink`] of recipients: the in-process `Registry` in a combined
//! node, or a remote proxy in a split deployment. The registrar cannot tell
//! which; a name server that is down only delays its own registration (the
//! others are independent, and each retry is the next tick).

use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use actormq_protocol::request::{RegisterBrokerRequest, TopicConfig, UnregisterBrokerRequest};
use slog::{Logger, debug, info, o, warn};

use super::topic_manager::{TopicTable, TopicsChanged};
use crate::runtime::{Call, CallRelay, ChildRef};

/// The way to one name server.
#[derive(Clone)]
pub struct NamesrvLink {
    /// For logs: `local` or the remote address.
    pub name: String,
    /// Serves `REGISTER_BROKER`.
    pub register: Recipient<Call<RegisterBrokerRequest>>,
    /// Serves `UNREGISTER_BROKER`.
    pub unregister: Recipient<Call<UnregisterBrokerRequest>>,
}

impl NamesrvLink {
    /// A link to whichever incarnation of `child` runs now: a supervised
    /// proxy (or registry) that was restarted is used again, where a
    /// plain `Recipient` would point at the dead one forever. While the
    /// child is down, calls fail with `SYSTEM_BUSY`.
    pub fn through<A>(name: impl Into<String>, child: &ChildRef<A>) -> NamesrvLink
    where
        A: Actor + Handler<Call<RegisterBrokerRequest>> + Handler<Call<UnregisterBrokerRequest>>,
        A::Context: ToEnvelope<A, Call<RegisterBrokerRequest>>
            + ToEnvelope<A, Call<UnregisterBrokerRequest>>,
    {
        let relay = CallRelay::new(child.clone()).start();
        NamesrvLink {
            name: name.into(),
            register: relay.clone().recipient(),
            unregister: relay.recipient(),
        }
    }
}

/// Who this broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerIdentity {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker_name: String,
    /// Broker id (0 = master).
    pub broker_id: u64,
    /// Address clients connect to (the bound or advertised one).
    pub broker_addr: String,
    /// HA address, empty if none.
    pub ha_server_addr: String,
}

/// Settings of the registrar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Registration interval. Default 30 s.
    pub interval: Duration,
    /// Timeout of one registration call. Default 3 s.
    pub call_timeout: Duration,
    /// Broker timeout announced to name servers. Default 120 s.
    pub heartbeat_timeout: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            call_timeout: Duration::from_secs(3),
            heartbeat_timeout: Duration::from_secs(120),
        }
    }
}

/// The registrar actor. See the module docs.
pub struct Registrar {
    identity: BrokerIdentity,
    links: Vec<NamesrvLink>,
    topics: Arc<TopicTable>,
    config: RegistrarConfig,
    logger: Logger,
}

impl Registrar {
    /// A registrar for `identity`, registering with every link, starting
    /// from the topic table `topics`.
    pub fn new(
        identity: BrokerIdentity,
        links: Vec<NamesrvLink>,
        topics: Arc<TopicTable>,
        config: RegistrarConfig,
        logger: &Logger,
    ) -> Self {
        let logger =
            logger.new(o!("actor" => "Registrar", "broker" => identity.broker_name.clone()));
        Self {
            identity,
            links,
            topics,
            config,
            logger,
        }
    }

    fn request(&self) -> RegisterBrokerRequest {
        RegisterBrokerRequest {
            cluster_name: self.identity.cluster.clone(),
            broker_name: self.identity.broker_name.clone(),
            broker_addr: self.identity.broker_addr.clone(),
            broker_id: self.identity.broker_id,
            ha_server_addr: self.identity.ha_server_addr.clone(),
            topic_configs: self
                .topics
                .all()
                .values()
                .cloned()
                .collect::<Vec<TopicConfig>>(),
            data_version: self.topics.data_version(),
            heartbeat_timeout_ms: u64::try_from(self.config.heartbeat_timeout.as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    fn register_all(&self, ctx: &mut Context<Self>) {
        let req = self.request();
        for link in &self.links {
            let call = link
                .register
                .send(Call::new(req.clone()))
                .timeout(self.config.call_timeout);
            let (logger, name) = (self.logger.clone(), link.name.clone());
            ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
                match call.await {
                    Ok(Ok(_)) => debug!(logger, "registered"; "namesrv" => name),
                    Ok(Err(e)) => {
                        warn!(logger, "registration refused"; "namesrv" => name, "error" => %e)
                    }
                    Err(e) => {
                        warn!(logger, "name server unreachable"; "namesrv" => name, "error" => %e)
                    }
                }
            }));
        }
    }
}

impl Actor for Registrar {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.logger, "registering with name servers";
            "count" => self.links.len(), "addr" => &self.identity.broker_addr);
        self.register_all(ctx);
        ctx.run_interval(self.config.interval, |act, ctx| act.register_all(ctx));
    }
}

impl Handler<TopicsChanged> for Registrar {
    type Result = ();
    fn handle(&mut self, msg: TopicsChanged, ctx: &mut Context<Self>) {
        self.topics = msg.table;
        self.register_all(ctx);
    }
}

/// This broker's identity changed (a slave promoted to master registers
/// as broker id 0): leave the name servers under the old one, register
/// under the new one at once.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ChangeIdentity(pub BrokerIdentity);

impl Handler<ChangeIdentity> for Registrar {
    type Result = ();
    fn handle(&mut self, msg: ChangeIdentity, ctx: &mut Context<Self>) {
        if msg.0 == self.identity {
            return;
        }
        let old = UnregisterBrokerRequest {
            cluster_name: self.identity.cluster.clone(),
            broker_name: self.identity.broker_name.clone(),
            broker_addr: self.identity.broker_addr.clone(),
            broker_id: self.identity.broker_id,
        };
        for link in &self.links {
            let call = link
                .unregister
                .send(Call::new(old.clone()))
                .timeout(self.config.call_timeout);
            ctx.spawn(actix::fut::wrap_future::<_, Self>(async move {
                let _ = call.await;
            }));
        }
        info!(self.logger, "identity changed"; "from_id" => self.identity.broker_id,
            "to_id" => msg.0.broker_id);
        self.identity = msg.0;
        self.register_all(ctx);
    }
}

/// Register with every name server now; replies with how many accepted.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct RegisterNow;

impl Handler<RegisterNow> for Registrar {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _: RegisterNow, _: &mut Context<Self>) -> Self::Result {
        let req = self.request();
        let calls: Vec<_> = self
            .links
            .iter()
            .map(|l| {
                l.register
                    .send(Call::new(req.clone()))
                    .timeout(self.config.call_timeout)
            })
            .collect();
        Box::pin(async move {
            let mut ok = 0;
            for call in calls {
                if matches!(call.await, Ok(Ok(_))) {
                    ok += 1;
                }
            }
            ok
        })
    }
}

/// Leave every name server (clean stop); replies when all answered or
/// timed out.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct UnregisterAll;

impl Handler<UnregisterAll> for Registrar {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: UnregisterAll, _: &mut Context<Self>) -> Self::Result {
        let req = UnregisterBrokerRequest {
            cluster_name: self.identity.cluster.clone(),
            broker_name: self.identity.broker_name.clone(),
            broker_addr: self.identity.broker_addr.clone(),
            broker_id: self.identity.broker_id,
        };
        let calls: Vec<_> = self
            .links
            .iter()
            .map(|l| {
                l.unregister
                    .send(Call::new(req.clone()))
                    .timeout(self.config.call_timeout)
            })
            .collect();
        let logger = self.logger.clone();
        Box::pin(async move {
            for call in calls {
                let _ = call.await;
            }
            info!(logger, "unregistered from name servers");
        })
    }
}

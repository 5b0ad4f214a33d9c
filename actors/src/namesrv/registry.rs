//! `Registry`: the name server's one stateful actor. A thin shell over
//! [`RouteTable`]: it answers broker registrations and route queries, and
//! scans for silent brokers every 10 s (drop after 120 s of silence).
//!
//! Its handlers take `Call<R>`, so a broker's `Registrar` may hold a local
//! `Recipient<Call<RegisterBrokerRequest>>` (combined node) or a remote one
//! (split deployment) without knowing which.

use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::request::{
    ClusterInfo, DeleteTopicInNamesrvRequest, Empty, GetAllTopicListFromNamesrvRequest,
    GetBrokerClusterInfoRequest, GetRouteInfoByTopicRequest, RegisterBrokerRequest,
    RegisterBrokerResponse, TopicList, TopicRouteData, UnregisterBrokerRequest,
};
use actormq_protocol::unique_key::system_time_ms;
use slog::{Logger, info, o, warn};

use super::route_table::{Dropped, RouteTable};
use crate::runtime::net::ConnectionClosed;
use crate::runtime::{Call, Reply, ServiceError};

/// Tunables of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    /// How often silent brokers are looked for. Default 10 s.
    pub scan_interval: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            scan_interval: Duration::from_secs(10),
        }
    }
}

/// The route registry actor. See the module docs.
pub struct Registry {
    table: RouteTable,
    config: RegistryConfig,
    logger: Logger,
    now_ms: fn() -> u64,
}

impl Registry {
    /// An empty registry; state is rebuilt from broker registrations.
    pub fn new(config: RegistryConfig, logger: &Logger) -> Self {
        Self::with_clock(config, logger, system_time_ms)
    }

    /// Like [`Registry::new`] with an injected clock (tests).
    pub fn with_clock(config: RegistryConfig, logger: &Logger, now_ms: fn() -> u64) -> Self {
        Self {
            table: RouteTable::new(),
            config,
            logger: logger.new(o!("actor" => "Registry")),
            now_ms,
        }
    }

    fn log_dropped(&self, dropped: &[Dropped]) {
        for d in dropped {
            warn!(self.logger, "broker dropped";
                "broker" => &d.broker_name, "addr" => &d.broker_addr, "reason" => ?d.reason);
        }
    }
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.scan_interval, |act, _ctx| {
            let dropped = act.table.scan_inactive((act.now_ms)());
            act.log_dropped(&dropped);
        });
    }
}

/// Runs the silent-broker scan now (tests and admin use; the actor also
/// runs it on its interval). Replies with the number of brokers dropped.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "usize")]
pub struct ScanInactiveBrokers;

impl Handler<ScanInactiveBrokers> for Registry {
    type Result = usize;
    fn handle(&mut self, _: ScanInactiveBrokers, _: &mut Context<Self>) -> usize {
        let dropped = self.table.scan_inactive((self.now_ms)());
        self.log_dropped(&dropped);
        dropped.len()
    }
}

/// A connection closed: brokers registered over it leave at once.
impl Handler<ConnectionClosed> for Registry {
    type Result = ();
    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        let dropped = self.table.connection_closed(msg.conn_id);
        self.log_dropped(&dropped);
    }
}

type CallResult<T> = Result<Reply<T>, ServiceError>;

impl Handler<Call<RegisterBrokerRequest>> for Registry {
    type Result = CallResult<RegisterBrokerResponse>;
    fn handle(&mut self, msg: Call<RegisterBrokerRequest>, _: &mut Context<Self>) -> Self::Result {
        let req = &msg.req;
        if req.broker_name.is_empty() || req.broker_addr.is_empty() || req.cluster_name.is_empty() {
            return Err(ServiceError::new(
                actormq_protocol::ResponseCode::InvalidParameter,
                "cluster_name, broker_name and broker_addr are required",
            ));
        }
        let first = !self.table.is_live(&req.broker_addr);
        let reply = self.table.register(req, (self.now_ms)(), msg.conn_id());
        if first {
            info!(self.logger, "broker registered";
                "cluster" => &req.cluster_name, "broker" => &req.broker_name,
                "addr" => &req.broker_addr, "id" => req.broker_id,
                "topics" => req.topic_configs.len());
        }
        Ok(Reply::ok(reply))
    }
}

impl Handler<Call<UnregisterBrokerRequest>> for Registry {
    type Result = CallResult<Empty>;
    fn handle(
        &mut self,
        msg: Call<UnregisterBrokerRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        if let Some(d) = self.table.unregister(&msg.req) {
            self.log_dropped(&[d]);
        }
        Ok(Reply::ok(Empty {}))
    }
}

impl Handler<Call<GetRouteInfoByTopicRequest>> for Registry {
    type Result = CallResult<TopicRouteData>;
    fn handle(
        &mut self,
        msg: Call<GetRouteInfoByTopicRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        self.table
            .route(&msg.req.topic)
            .map(Reply::ok)
            .ok_or_else(|| ServiceError::topic_not_exist(&msg.req.topic))
    }
}

impl Handler<Call<GetBrokerClusterInfoRequest>> for Registry {
    type Result = CallResult<ClusterInfo>;
    fn handle(
        &mut self,
        _: Call<GetBrokerClusterInfoRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        Ok(Reply::ok(self.table.cluster_info()))
    }
}

impl Handler<Call<GetAllTopicListFromNamesrvRequest>> for Registry {
    type Result = CallResult<TopicList>;
    fn handle(
        &mut self,
        _: Call<GetAllTopicListFromNamesrvRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        Ok(Reply::ok(self.table.topic_list()))
    }
}

impl Handler<Call<DeleteTopicInNamesrvRequest>> for Registry {
    type Result = CallResult<Empty>;
    fn handle(
        &mut self,
        msg: Call<DeleteTopicInNamesrvRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        if !self
            .table
            .delete_topic(&msg.req.topic, msg.req.cluster_name.as_deref())
        {
            return Err(ServiceError::topic_not_exist(&msg.req.topic));
        }
        info!(self.logger, "topic deleted from routes"; "topic" => &msg.req.topic);
        Ok(Reply::ok(Empty {}))
    }
}

//! The consumers' view of the cluster: topic routes through the SDK's
//! [`RouteCache`] (name-server failover, cached routes) and one
//! [`RemoteClient`] per broker for consumer traffic.
//!
//! Consumer connections to brokers differ from the shared
//! [`Connections`](crate::Connections), and there are two per broker:
//! - the **control** connection carries heartbeats, member lists and
//!   offsets, and serves `NOTIFY_CONSUMER_IDS_CHANGED`, which the broker
//!   pushes on the connection the heartbeat went over;
//! - the **pull** connection carries long-polling pulls, with a call
//!   timeout above the broker's hold (15 s).
//!
//! Keeping held pulls off the control connection matters at shutdown: a
//! broker session ends (and drops the client from its groups, notifying
//! the others) only once its in-flight requests are answered, so a held
//! pull on the heartbeat connection would keep a stopped consumer listed
//! for up to 15 s, holding its queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::MessageQueue;
use actormq_protocol::request::{Empty, NotifyConsumerIdsChangedRequest};
use actormq_runtime::net::{GetLinkState, RemoteClient, RemoteOptions, Router};
use actormq_runtime::{Call, Reply, Rpc, ServiceError};
use slog::Logger;

use super::ConsumerError;
use crate::connections::Connections;
use crate::route::{RouteCache, TopicRoute};

/// Callback for a broker's "group membership changed" push (the group).
pub(crate) type NotifyFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Splits `host:port[,host:port...]` lists.
pub(crate) fn split_addrs(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Routes and broker connections shared by one consumer.
#[derive(Clone)]
pub(crate) struct ClusterClient {
    routes: RouteCache,
    conns: Arc<Mutex<HashMap<SocketAddr, Addr<RemoteClient>>>>,
    pulls: Arc<Mutex<HashMap<SocketAddr, Addr<RemoteClient>>>>,
    logger: Logger,
    notify: Option<NotifyFn>,
    call_timeout: Duration,
}

impl ClusterClient {
    pub(crate) fn new(
        namesrv: &[String],
        logger: Logger,
        notify: Option<NotifyFn>,
        call_timeout: Duration,
    ) -> Result<ClusterClient, ConsumerError> {
        let routes = RouteCache::new(
            split_addrs(namesrv),
            Connections::new(&logger),
            Duration::from_secs(3),
            &logger,
        )?;
        Ok(ClusterClient {
            routes,
            conns: Arc::new(Mutex::new(HashMap::new())),
            pulls: Arc::new(Mutex::new(HashMap::new())),
            logger,
            notify,
            call_timeout,
        })
    }

    fn conn(&self, addr: SocketAddr, pull: bool) -> Addr<RemoteClient> {
        let table = if pull { &self.pulls } else { &self.conns };
        let mut conns = table.lock().expect("client lock");
        if let Some(c) = conns.get(&addr)
            && c.connected()
        {
            return c.clone();
        }
        let opts = RemoteOptions {
            call_timeout: if pull {
                self.call_timeout
            } else {
                Duration::from_secs(5)
            },
            ..RemoteOptions::default()
        };
        let mut client = RemoteClient::with_options(addr, opts, &self.logger);
        if !pull && let Some(notify) = self.notify.clone() {
            let mut router = Router::new();
            router.route_fn::<NotifyConsumerIdsChangedRequest, _, _>(move |call| {
                notify(&call.req.consumer_group);
                async { Ok(Reply::ok(Empty {})) }
            });
            client = client.with_router(router);
        }
        let started = client.start();
        conns.insert(addr, started.clone());
        started
    }

    /// One call to the broker at `addr`.
    pub(crate) async fn call<R: Rpc>(
        &self,
        addr: SocketAddr,
        req: R,
    ) -> Result<Reply<R::Response>, ServiceError> {
        let conn = self.conn(addr, false);
        conn.send(Call::new(req)).await?
    }

    /// A pull (possibly held by the broker) on the pull connection.
    pub(crate) async fn call_pull<R: Rpc>(
        &self,
        addr: SocketAddr,
        req: R,
    ) -> Result<Reply<R::Response>, ServiceError> {
        let conn = self.conn(addr, true);
        conn.send(Call::new(req)).await?
    }

    /// The route of `topic`, refreshed from the name servers (the cached
    /// one while none answers).
    pub(crate) async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>, ConsumerError> {
        Ok(self.routes.refresh(topic).await?)
    }

    /// The readable queues of `topic`, sorted (route refreshed first).
    pub(crate) async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, ConsumerError> {
        Ok(self.refresh(topic).await?.read_queues.clone())
    }

    /// The master address of `broker_name` in the route of `topic`.
    pub(crate) async fn broker_addr(
        &self,
        topic: &str,
        broker_name: &str,
    ) -> Result<SocketAddr, ConsumerError> {
        let route = self.routes.route(topic).await?;
        let addr = match route.master_addr(broker_name) {
            Some(a) => a.to_string(),
            None => {
                let fresh = self.refresh(topic).await?;
                fresh
                    .master_addr(broker_name)
                    .ok_or_else(|| ConsumerError::NoRoute(format!("{topic} on {broker_name}")))?
                    .to_string()
            }
        };
        addr.parse()
            .map_err(|_| ConsumerError::Config(format!("bad broker address {addr:?}")))
    }

    /// Master addresses of every broker of the cached routes.
    pub(crate) fn all_brokers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .routes
            .cached_topics()
            .iter()
            .filter_map(|t| self.routes.cached(t))
            .flat_map(|r| {
                r.broker_names()
                    .into_iter()
                    .filter_map(|b| r.master_addr(b).and_then(|a| a.parse().ok()))
                    .collect::<Vec<SocketAddr>>()
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Closes every broker connection of this consumer (a connection with
    /// a pull still held by the broker closes when that pull is answered).
    pub(crate) fn close(&self) {
        let mut all: Vec<Addr<RemoteClient>> = Vec::new();
        all.extend(
            self.conns
                .lock()
                .expect("client lock")
                .drain()
                .map(|(_, a)| a),
        );
        all.extend(
            self.pulls
                .lock()
                .expect("client lock")
                .drain()
                .map(|(_, a)| a),
        );
        for client in all {
            // A client notices it has no users left when it next runs:
            // wake it with a message sent after the last address is gone.
            let wake = client.clone().recipient::<GetLinkState>();
            drop(client);
            wake.do_send(GetLinkState);
        }
        self.routes.connections().close_all();
    }
}

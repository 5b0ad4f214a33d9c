//! The consumers' view of the cluster: topic routes from the name servers
//! and one [`RemoteClient`] per broker, with the calls consumers make.
//!
//! Consumer connections to brokers use a call timeout above the long
//! polling hold (15 s), and serve `NOTIFY_CONSUMER_IDS_CHANGED` pushed by
//! the broker on the connection the heartbeat went over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::runtime::net::{RemoteClient, RemoteOptions, Router};
use actormq_actors::runtime::{Call, Reply, Rpc, ServiceError};
use actormq_protocol::MessageQueue;
use actormq_protocol::request::{
    Empty, GetRouteInfoByTopicRequest, NotifyConsumerIdsChangedRequest, TopicRouteData,
};
use slog::Logger;

use super::ConsumerError;

/// Callback for a broker's "group membership changed" push (the group).
pub(crate) type NotifyFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Routes and broker connections shared by one consumer.
#[derive(Clone)]
pub(crate) struct ClusterClient {
    namesrv: Arc<Vec<SocketAddr>>,
    inner: Arc<Mutex<Inner>>,
    logger: Logger,
    notify: Option<NotifyFn>,
    call_timeout: Duration,
}

#[derive(Default)]
struct Inner {
    conns: HashMap<SocketAddr, Addr<RemoteClient>>,
    routes: HashMap<String, TopicRouteData>,
    next_namesrv: usize,
}

/// Parses `host:port[,host:port...]`.
pub(crate) fn parse_addrs(list: &[String]) -> Result<Vec<SocketAddr>, ConsumerError> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let addr = std::net::ToSocketAddrs::to_socket_addrs(item)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ConsumerError::Config(format!("bad address {item:?}")))?;
        out.push(addr);
    }
    if out.is_empty() {
        return Err(ConsumerError::Config("no name server address".into()));
    }
    Ok(out)
}

impl ClusterClient {
    pub(crate) fn new(
        namesrv: Vec<SocketAddr>,
        logger: Logger,
        notify: Option<NotifyFn>,
        call_timeout: Duration,
    ) -> ClusterClient {
        ClusterClient {
            namesrv: Arc::new(namesrv),
            inner: Arc::new(Mutex::new(Inner::default())),
            logger,
            notify,
            call_timeout,
        }
    }

    fn conn(&self, addr: SocketAddr) -> Addr<RemoteClient> {
        let mut inner = self.inner.lock().expect("client lock");
        if let Some(c) = inner.conns.get(&addr)
            && c.connected()
        {
            return c.clone();
        }
        let opts = RemoteOptions {
            call_timeout: self.call_timeout,
            ..RemoteOptions::default()
        };
        let mut client = RemoteClient::with_options(addr, opts, &self.logger);
        if let Some(notify) = self.notify.clone() {
            let mut router = Router::new();
            router.route_fn::<NotifyConsumerIdsChangedRequest, _, _>(move |call| {
                notify(&call.req.consumer_group);
                async { Ok(Reply::ok(Empty {})) }
            });
            client = client.with_router(router);
        }
        let addr_ = client.start();
        inner.conns.insert(addr, addr_.clone());
        addr_
    }

    /// One call to `addr`.
    pub(crate) async fn call<R: Rpc>(
        &self,
        addr: SocketAddr,
        req: R,
    ) -> Result<Reply<R::Response>, ServiceError> {
        let conn = self.conn(addr);
        conn.send(Call::new(req)).await?
    }

    /// The route of `topic`, from the first name server that answers (the
    /// cached one when none does).
    pub(crate) async fn route(&self, topic: &str) -> Result<TopicRouteData, ConsumerError> {
        let n = self.namesrv.len();
        let start = self.inner.lock().expect("client lock").next_namesrv;
        let mut last_err = None;
        for i in 0..n {
            let addr = self.namesrv[(start + i) % n];
            match self
                .call(
                    addr,
                    GetRouteInfoByTopicRequest {
                        topic: topic.to_string(),
                    },
                )
                .await
            {
                Ok(reply) => {
                    let mut inner = self.inner.lock().expect("client lock");
                    inner.next_namesrv = (start + i) % n;
                    inner.routes.insert(topic.to_string(), reply.fields.clone());
                    return Ok(reply.fields);
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(r) = self.inner.lock().expect("client lock").routes.get(topic) {
            return Ok(r.clone());
        }
        Err(last_err.map_or_else(
            || ConsumerError::Config("no name server".into()),
            ConsumerError::Service,
        ))
    }

    /// The readable queues of `topic`, sorted.
    pub(crate) async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, ConsumerError> {
        let route = self.route(topic).await?;
        let mut v: Vec<MessageQueue> = route
            .queue_datas
            .iter()
            .filter(|q| q.perm.is_readable())
            .flat_map(|q| {
                (0..q.read_queue_nums).map(move |id| MessageQueue {
                    topic: topic.to_string(),
                    broker_name: q.broker_name.clone(),
                    queue_id: id,
                })
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The master address of `broker_name` (from cached routes, refreshed
    /// from the name server for `topic` when unknown).
    pub(crate) async fn broker_addr(
        &self,
        topic: &str,
        broker_name: &str,
    ) -> Result<SocketAddr, ConsumerError> {
        if let Some(a) = self.cached_broker_addr(broker_name) {
            return Ok(a);
        }
        self.route(topic).await?;
        self.cached_broker_addr(broker_name)
            .ok_or_else(|| ConsumerError::NoRoute(format!("{topic} on {broker_name}")))
    }

    fn cached_broker_addr(&self, broker_name: &str) -> Option<SocketAddr> {
        let inner = self.inner.lock().expect("client lock");
        inner
            .routes
            .values()
            .flat_map(|r| r.broker_datas.iter())
            .find(|b| b.broker_name == broker_name)
            .and_then(|b| b.master_addr())
            .and_then(|a| a.parse().ok())
    }

    /// Master addresses of every broker of the cached routes.
    pub(crate) fn all_brokers(&self) -> Vec<SocketAddr> {
        let inner = self.inner.lock().expect("client lock");
        let mut v: Vec<SocketAddr> = inner
            .routes
            .values()
            .flat_map(|r| r.broker_datas.iter())
            .filter_map(|b| b.master_addr())
            .filter_map(|a| a.parse().ok())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Drops every connection (they close once no call is pending).
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock().expect("client lock");
        inner.conns.clear();
    }
}

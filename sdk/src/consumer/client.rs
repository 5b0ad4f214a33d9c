//! The consumers' view of the cluster: topic routes through the SDK's
//! [`RouteCache`] (name-server failover, cached routes), and broker calls
//! through the same table of client sessions the route cache uses (one
//! table per consumer, [`Connections`]).
//!
//! A consumer has two sessions per broker, two [`Lane`]s of that table:
//! - [`Lane::Main`] carries heartbeats, member lists and offsets, and
//!   serves `NOTIFY_CONSUMER_IDS_CHANGED` and
//!   `RESET_CONSUMER_CLIENT_OFFSET`, which the broker pushes on the
//!   connection the heartbeat went over;
//! - [`Lane::LongPoll`] carries long-polling pulls, with a deadline above
//!   the broker's hold (15 s).
//!
//! Keeping held pulls off the main connection matters at shutdown: a
//! broker session ends (and drops the client from its groups, notifying
//! the others) only once its in-flight requests are answered, so a held
//! pull on the heartbeat connection would keep a stopped consumer listed
//! for up to 15 s, holding its queues.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actormq_protocol::MessageQueue;
use actormq_protocol::request::{
    Empty, NotifyConsumerIdsChangedRequest, ResetConsumerClientOffsetRequest,
};
use actormq_runtime::net::Router;
use actormq_runtime::{Reply, Rpc, ServiceError};
use slog::Logger;
use tokio::time::Instant;

use super::ConsumerError;
use crate::connections::{Connections, Lane};
use crate::route::{RouteCache, TopicRoute};

/// Callback for a broker's "group membership changed" push (the group).
pub(crate) type NotifyFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Callback for a broker's "offsets reset" push.
pub(crate) type ResetFn = Arc<dyn Fn(ResetConsumerClientOffsetRequest) + Send + Sync>;

/// What a consumer serves on its control connections.
#[derive(Clone, Default)]
pub(crate) struct Pushes {
    /// `NOTIFY_CONSUMER_IDS_CHANGED`.
    pub(crate) notify: Option<NotifyFn>,
    /// `RESET_CONSUMER_CLIENT_OFFSET`.
    pub(crate) reset: Option<ResetFn>,
}

/// Splits `host:port[,host:port...]` lists.
pub(crate) fn split_addrs(list: &[String]) -> Vec<String> {
    list.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Control calls (heartbeat, members, offsets) wait this long at most.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Routes and broker sessions shared by one consumer.
#[derive(Clone)]
pub(crate) struct ClusterClient {
    routes: RouteCache,
    conns: Connections,
    call_timeout: Duration,
    /// The broker id each queue's pulls go to, when a broker suggested
    /// one other than the master (`suggest_which_broker_id`).
    pull_from: Arc<Mutex<HashMap<MessageQueue, u64>>>,
}

impl ClusterClient {
    pub(crate) fn new(
        namesrv: &[String],
        logger: Logger,
        pushes: Pushes,
        call_timeout: Duration,
    ) -> Result<ClusterClient, ConsumerError> {
        let conns = if pushes.notify.is_none() && pushes.reset.is_none() {
            Connections::new(&logger)
        } else {
            let mut handlers = Router::new();
            if let Some(notify) = pushes.notify {
                handlers.route_fn::<NotifyConsumerIdsChangedRequest, _, _>(move |call| {
                    notify(&call.req.consumer_group);
                    async { Ok(Reply::ok(Empty {})) }
                });
            }
            if let Some(reset) = pushes.reset {
                handlers.route_fn::<ResetConsumerClientOffsetRequest, _, _>(move |call| {
                    reset(call.req);
                    async { Ok(Reply::ok(Empty {})) }
                });
            }
            Connections::serving(handlers, &logger)
        };
        let routes = RouteCache::new(
            split_addrs(namesrv),
            conns.clone(),
            Duration::from_secs(3),
            &logger,
        )?;
        Ok(ClusterClient {
            routes,
            conns,
            call_timeout,
            pull_from: Arc::default(),
        })
    }

    /// One call to the broker at `addr`.
    pub(crate) async fn call<R: Rpc>(
        &self,
        addr: SocketAddr,
        req: R,
    ) -> Result<Reply<R::Response>, ServiceError> {
        self.conns
            .session_at(addr, Lane::Main)
            .call_until(R::CODE, &req, &[], Instant::now() + CONTROL_TIMEOUT)
            .await
    }

    /// A pull (possibly held by the broker) on the long-poll session.
    pub(crate) async fn call_pull<R: Rpc>(
        &self,
        addr: SocketAddr,
        req: R,
    ) -> Result<Reply<R::Response>, ServiceError> {
        self.conns
            .session_at(addr, Lane::LongPoll)
            .call_until(R::CODE, &req, &[], Instant::now() + self.call_timeout)
            .await
    }

    /// The route of `topic`, refreshed from the name servers (the cached
    /// one while none answers).
    pub(crate) async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>, ConsumerError> {
        Ok(self.routes.refresh(topic).await?)
    }

    /// The route of `topic`: cached, or fetched once.
    pub(crate) async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ConsumerError> {
        Ok(self.routes.route(topic).await?)
    }

    /// The readable queues of `topic`, sorted (route refreshed first).
    pub(crate) async fn queues(&self, topic: &str) -> Result<Vec<MessageQueue>, ConsumerError> {
        Ok(self.refresh(topic).await?.read_queues.clone())
    }

    /// The master address of `broker_name` in the route of `topic`; with
    /// no master in a fresh route (it is down), a slave's: consumers read
    /// from slaves while their master is away (HA).
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
                    .or_else(|| fresh.any_addr(broker_name))
                    .ok_or_else(|| ConsumerError::NoRoute(format!("{topic} on {broker_name}")))?
                    .to_string()
            }
        };
        addr.parse()
            .map_err(|_| ConsumerError::Config(format!("bad broker address {addr:?}")))
    }

    /// Where the next pull of `mq` goes: the broker id the last reply
    /// suggested (a slave, while the consumer is far behind), if the
    /// route has it; else the master ([`broker_addr`](Self::broker_addr)).
    pub(crate) async fn pull_addr(&self, mq: &MessageQueue) -> Result<SocketAddr, ConsumerError> {
        let suggested = self
            .pull_from
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(mq)
            .copied();
        if let Some(id) = suggested {
            let route = self.routes.route(&mq.topic).await?;
            if let Some(a) = route
                .addr_of(&mq.broker_name, id)
                .and_then(|a| a.parse().ok())
            {
                return Ok(a);
            }
        }
        self.broker_addr(&mq.topic, &mq.broker_name).await
    }

    /// Records the broker id a pull reply for `mq` suggested (0: the
    /// master).
    pub(crate) fn suggest_pull_from(&self, mq: &MessageQueue, broker_id: u64) {
        let mut t = self.pull_from.lock().unwrap_or_else(|p| p.into_inner());
        if broker_id == 0 {
            t.remove(mq);
        } else if t.get(mq) != Some(&broker_id) {
            t.insert(mq.clone(), broker_id);
        }
    }

    /// Every address (masters and slaves, as RocketMQ's consumers
    /// heartbeat) of every broker of the cached routes: a slave knows the
    /// group's members when the consumers read from it (its master down).
    pub(crate) fn all_brokers(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .routes
            .cached_topics()
            .iter()
            .filter_map(|t| self.routes.cached(t))
            .flat_map(|r| {
                r.all_addrs()
                    .into_iter()
                    .filter_map(|a| a.parse().ok())
                    .collect::<Vec<SocketAddr>>()
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Closes every connection of this consumer (pending calls, a held
    /// pull included, fail at once).
    pub(crate) fn close(&self) {
        self.conns.close_all();
    }
}

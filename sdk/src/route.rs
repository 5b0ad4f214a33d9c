//! [`RouteCache`]: per-topic routes from the name servers, with failover,
//! periodic refresh, and the last known route kept while every name server
//! is down.
//!
//! - **Lookup**: [`RouteCache::route`] answers from the cache, or asks the
//!   name servers (in turn, starting with the last one that answered) and
//!   caches the answer.
//! - **Refresh**: [`RouteCache::start_refresh`] starts a small actor
//!   ([`RouteRefresher`]; [`RouteCache::refresher`] builds one for a
//!   supervisor's factory) that refreshes every cached topic every
//!   `interval` (30 s by default). A refresh that reaches no name server
//!   keeps the cached route, so producers and consumers keep working on it.
//!   A topic a name server reports as gone (`TOPIC_NOT_EXIST`) is dropped.
//! - **Admin calls**: [`RouteCache::namesrv_call`] sends any request to the
//!   first name server that answers (the same failover).
//!
//! The decision logic is in plain structs: [`NamesrvSelector`] (failover
//! order) and [`TopicRoute`] (writable / readable queues, broker
//! addresses).
//!
//! ```rust,ignore
//! let conns = Connections::new(&log);
//! let routes = RouteCache::new(vec!["127.0.0.1:9876".into()], conns, Duration::from_secs(3), &log)?;
//! let _refresher = routes.start_refresh(ROUTE_REFRESH_INTERVAL);
//! let route = routes.route("orders").await?;
//! for mq in &route.write_queues { println!("{} {}", mq.broker_name, mq.queue_id); }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::request::{GetRouteInfoByTopicRequest, TopicRouteData};
use actormq_protocol::{Bytes, MessageQueue, ResponseCode};
use actormq_runtime::{Reply, Rpc};
use slog::{Logger, debug, o, warn};

use crate::connections::{Connections, parse_addr};
use crate::error::ClientError;

/// How often cached routes are refreshed by default (RocketMQ: 30 s).
pub const ROUTE_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// The failover order over a list of name servers: start with the last one
/// that answered, then the others in list order (wrapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesrvSelector {
    addrs: Vec<String>,
    last_good: usize,
}

impl NamesrvSelector {
    /// A selector over `addrs` (at least one).
    pub fn new(addrs: Vec<String>) -> Result<NamesrvSelector, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Invalid("no name server address".into()));
        }
        for a in &addrs {
            parse_addr(a)?;
        }
        Ok(NamesrvSelector {
            addrs,
            last_good: 0,
        })
    }

    /// The addresses to try, in order.
    pub fn order(&self) -> Vec<&str> {
        let n = self.addrs.len();
        (0..n)
            .map(|i| self.addrs[(self.last_good + i) % n].as_str())
            .collect()
    }

    /// Remembers that `addr` answered.
    pub fn mark_good(&mut self, addr: &str) {
        if let Some(i) = self.addrs.iter().position(|a| a == addr) {
            self.last_good = i;
        }
    }

    /// Every address, in list order.
    pub fn all(&self) -> &[String] {
        &self.addrs
    }
}

/// A topic's route, processed for sending and pulling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// The topic.
    pub topic: String,
    /// The route as the name server sent it.
    pub data: TopicRouteData,
    /// Writable queues of brokers that have a master, sorted by broker
    /// name then queue id (the producer's round robin runs over these).
    pub write_queues: Vec<MessageQueue>,
    /// Readable queues, sorted the same way (consumers divide these).
    pub read_queues: Vec<MessageQueue>,
    masters: HashMap<String, String>,
}

impl TopicRoute {
    /// Whether the topic is ordered (`admin topic create --order`: the
    /// name servers send its order config): sends stay on their queue.
    pub fn is_ordered(&self) -> bool {
        self.data.order_topic_conf.is_some()
    }

    /// Processes `data` for `topic`.
    pub fn new(topic: &str, data: TopicRouteData) -> TopicRoute {
        let masters: HashMap<String, String> = data
            .broker_datas
            .iter()
            .filter_map(|b| {
                b.master_addr()
                    .map(|a| (b.broker_name.clone(), a.to_owned()))
            })
            .collect();
        let mut write_queues = Vec::new();
        let mut read_queues = Vec::new();
        for q in &data.queue_datas {
            let mq = |queue_id| MessageQueue {
                topic: topic.to_owned(),
                broker_name: q.broker_name.clone(),
                queue_id,
            };
            if q.perm.is_writable() && masters.contains_key(&q.broker_name) {
                write_queues.extend((0..q.write_queue_nums).map(mq));
            }
            if q.perm.is_readable() {
                read_queues.extend((0..q.read_queue_nums).map(mq));
            }
        }
        write_queues.sort();
        read_queues.sort();
        TopicRoute {
            topic: topic.to_owned(),
            data,
            write_queues,
            read_queues,
            masters,
        }
    }

    /// The master address of broker `broker_name`, if the route has one.
    pub fn master_addr(&self, broker_name: &str) -> Option<&str> {
        self.masters.get(broker_name).map(String::as_str)
    }

    /// Any address of broker `broker_name` (master first, then slaves): where
    /// a consumer may pull from.
    pub fn any_addr(&self, broker_name: &str) -> Option<&str> {
        self.data
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker_name)
            .and_then(|b| b.broker_addrs.values().next())
            .map(String::as_str)
    }

    /// The address of broker `broker_name`'s member `broker_id` (0: the
    /// master), if the route has it.
    pub fn addr_of(&self, broker_name: &str, broker_id: u64) -> Option<&str> {
        self.data
            .broker_datas
            .iter()
            .find(|b| b.broker_name == broker_name)
            .and_then(|b| b.broker_addrs.get(&broker_id))
            .map(String::as_str)
    }

    /// Every address of every broker in this route, masters and slaves.
    pub fn all_addrs(&self) -> Vec<&str> {
        self.data
            .broker_datas
            .iter()
            .flat_map(|b| b.broker_addrs.values().map(String::as_str))
            .collect()
    }

    /// Names of the brokers with a master in this route.
    pub fn broker_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.masters.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

struct Inner {
    namesrvs: Mutex<NamesrvSelector>,
    routes: Mutex<HashMap<String, Arc<TopicRoute>>>,
    conns: Connections,
    timeout: Duration,
    logger: Logger,
}

/// The shared route cache. Cheap to clone; see the module docs.
#[derive(Clone)]
pub struct RouteCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("namesrvs", &self.namesrvs())
            .field("topics", &self.cached_topics())
            .finish()
    }
}

impl RouteCache {
    /// A cache asking the name servers `namesrvs` (`host:port` each) over
    /// `conns`, each call bounded by `timeout`.
    pub fn new(
        namesrvs: Vec<String>,
        conns: Connections,
        timeout: Duration,
        logger: &Logger,
    ) -> Result<RouteCache, ClientError> {
        Ok(RouteCache {
            inner: Arc::new(Inner {
                namesrvs: Mutex::new(NamesrvSelector::new(namesrvs)?),
                routes: Mutex::new(HashMap::new()),
                conns,
                timeout,
                logger: logger.new(o!("actor" => "RouteCache")),
            }),
        })
    }

    /// The connection table the cache uses (shared with its owner).
    pub fn connections(&self) -> &Connections {
        &self.inner.conns
    }

    /// The name server addresses, in list order.
    pub fn namesrvs(&self) -> Vec<String> {
        lock(&self.inner.namesrvs).all().to_vec()
    }

    /// Topics with a cached route.
    pub fn cached_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = lock(&self.inner.routes).keys().cloned().collect();
        t.sort();
        t
    }

    /// The cached route of `topic`, without asking anyone.
    pub fn cached(&self, topic: &str) -> Option<Arc<TopicRoute>> {
        lock(&self.inner.routes).get(topic).cloned()
    }

    /// The route of `topic`: cached, or fetched (and cached).
    pub async fn route(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        match self.cached(topic) {
            Some(r) => Ok(r),
            None => self.refresh(topic).await,
        }
    }

    /// Fetches the route of `topic` from the name servers and caches it.
    /// If no name server answers, the cached route (if any) is returned
    /// and kept. If one answers `TOPIC_NOT_EXIST`, the topic is dropped
    /// from the cache and [`ClientError::NoRoute`] returned.
    pub async fn refresh(&self, topic: &str) -> Result<Arc<TopicRoute>, ClientError> {
        let req = GetRouteInfoByTopicRequest {
            topic: topic.to_owned(),
        };
        match self.namesrv_call(req).await {
            Ok(reply) => {
                let route = Arc::new(TopicRoute::new(topic, reply.fields));
                lock(&self.inner.routes).insert(topic.to_owned(), route.clone());
                Ok(route)
            }
            Err(ClientError::Broker {
                code: ResponseCode::TopicNotExist,
                ..
            }) => {
                lock(&self.inner.routes).remove(topic);
                Err(ClientError::NoRoute {
                    topic: topic.to_owned(),
                })
            }
            Err(e) => match self.cached(topic) {
                Some(r) => {
                    debug!(self.inner.logger, "keeping cached route"; "topic" => topic, "error" => %e);
                    Ok(r)
                }
                None => Err(e),
            },
        }
    }

    /// Refreshes every cached topic (errors are logged; cached routes are
    /// kept while the name servers are unreachable).
    pub async fn refresh_all(&self) {
        for topic in self.cached_topics() {
            if let Err(e) = self.refresh(&topic).await {
                warn!(self.inner.logger, "route refresh failed"; "topic" => &topic, "error" => %e);
            }
        }
    }

    /// Forgets the cached route of `topic`.
    pub fn invalidate(&self, topic: &str) {
        lock(&self.inner.routes).remove(topic);
    }

    /// Sends `req` to the name servers in failover order and returns the
    /// first answer (success or a refusal). Fails with
    /// [`ClientError::AllNamesrvsDown`] if none answers.
    pub async fn namesrv_call<R: Rpc + Clone>(
        &self,
        req: R,
    ) -> Result<Reply<R::Response>, ClientError> {
        let order: Vec<String> = lock(&self.inner.namesrvs)
            .order()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut not_namesrv = None;
        for addr in order {
            let res = self
                .inner
                .conns
                .call(&addr, req.clone(), Bytes::new(), self.inner.timeout)
                .await;
            match res {
                Err(e) if is_unreachable(&e) => {
                    debug!(self.inner.logger, "name server unreachable"; "addr" => &addr, "error" => %e);
                }
                Err(ClientError::Broker {
                    code: ResponseCode::RequestCodeNotSupported,
                    ..
                }) => {
                    // Something answers there, but not as a name server
                    // (a broker port, say): try the others, then say so.
                    debug!(self.inner.logger, "not a name server"; "addr" => &addr);
                    not_namesrv.get_or_insert(addr);
                }
                other => {
                    lock(&self.inner.namesrvs).mark_good(&addr);
                    return other;
                }
            }
        }
        Err(match not_namesrv {
            Some(addr) => ClientError::NotANameServer { addr },
            None => ClientError::AllNamesrvsDown,
        })
    }

    /// Starts a [`RouteRefresher`] on the current arbiter that refreshes
    /// every cached route each `interval`. It stops when every clone of
    /// this cache is dropped, or on [`StopRefresher`].
    pub fn start_refresh(&self, interval: Duration) -> Addr<RouteRefresher> {
        self.refresher(interval).start()
    }

    /// A [`RouteRefresher`] for this cache, not started (it holds the
    /// cache weakly; clone it in a supervisor's factory).
    pub fn refresher(&self, interval: Duration) -> RouteRefresher {
        RouteRefresher {
            cache: Arc::downgrade(&self.inner),
            interval,
        }
    }
}

/// Whether `e` means "the server did not answer" (as opposed to a refusal).
pub fn is_unreachable(e: &ClientError) -> bool {
    match e {
        ClientError::Timeout(_) => true,
        ClientError::Broker { code, .. } => {
            *code == ResponseCode::SystemError || *code == ResponseCode::SystemBusy
        }
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The actor that drives a [`RouteCache`]'s periodic refresh.
#[derive(Debug, Clone)]
pub struct RouteRefresher {
    cache: Weak<Inner>,
    interval: Duration,
}

/// Stops a [`RouteRefresher`].
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopRefresher;

impl Actor for RouteRefresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |act, ctx| match act.cache.upgrade() {
            Some(inner) => {
                let cache = RouteCache { inner };
                ctx.spawn(async move { cache.refresh_all().await }.into_actor(act));
            }
            None => ctx.stop(),
        });
    }
}

impl Handler<StopRefresher> for RouteRefresher {
    type Result = ();

    fn handle(&mut self, _: StopRefresher, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use actormq_protocol::request::{BrokerData, Perm, QueueData};

    use super::*;

    fn data() -> TopicRouteData {
        let broker = |name: &str, addr: Option<&str>| BrokerData {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_addrs: addr
                .map(|a| BTreeMap::from([(0, a.to_owned())]))
                .unwrap_or_else(|| BTreeMap::from([(1, "127.0.0.1:3".to_owned())])),
        };
        let queues = |name: &str, n, perm| QueueData {
            broker_name: name.into(),
            read_queue_nums: n,
            write_queue_nums: n,
            perm,
            topic_sys_flag: 0,
        };
        TopicRouteData {
            queue_datas: vec![
                queues("b", 2, Perm::READ_WRITE),
                queues("a", 1, Perm::READ_WRITE),
                queues("ro", 2, Perm::READ),
                queues("slaveonly", 1, Perm::READ_WRITE),
            ],
            broker_datas: vec![
                broker("a", Some("127.0.0.1:1")),
                broker("b", Some("127.0.0.1:2")),
                broker("ro", Some("127.0.0.1:4")),
                broker("slaveonly", None),
            ],
            order_topic_conf: None,
        }
    }

    #[test]
    fn writable_queues_need_write_perm_and_a_master() {
        let r = TopicRoute::new("t", data());
        let w: Vec<(&str, u32)> = r
            .write_queues
            .iter()
            .map(|q| (q.broker_name.as_str(), q.queue_id))
            .collect();
        assert_eq!(w, [("a", 0), ("b", 0), ("b", 1)]);
        assert_eq!(r.read_queues.len(), 1 + 2 + 2 + 1);
        assert_eq!(r.master_addr("b"), Some("127.0.0.1:2"));
        assert_eq!(r.master_addr("slaveonly"), None);
        assert_eq!(r.any_addr("slaveonly"), Some("127.0.0.1:3"));
        assert_eq!(r.broker_names(), ["a", "b", "ro"]);
    }

    #[test]
    fn failover_starts_with_the_last_good_namesrv() {
        let mut s = NamesrvSelector::new(vec![
            "127.0.0.1:1".into(),
            "127.0.0.1:2".into(),
            "127.0.0.1:3".into(),
        ])
        .unwrap();
        assert_eq!(s.order(), ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        s.mark_good("127.0.0.1:3");
        assert_eq!(s.order(), ["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]);
        s.mark_good("unknown");
        assert_eq!(s.order()[0], "127.0.0.1:3");
    }

    #[test]
    fn selector_rejects_empty_and_bad_addresses() {
        assert!(NamesrvSelector::new(vec![]).is_err());
        assert!(NamesrvSelector::new(vec!["x".into()]).is_err());
    }

    #[test]
    fn unreachable_is_timeout_or_system_error() {
        assert!(is_unreachable(&ClientError::Timeout("t".into())));
        assert!(!is_unreachable(&ClientError::Broker {
            code: ResponseCode::TopicNotExist,
            remark: String::new()
        }));
    }

    #[actix_rt::test]
    async fn cached_route_survives_when_no_namesrv_answers() {
        let log = Logger::root(slog::Discard, o!());
        // Nothing listens on port 1.
        let cache = RouteCache::new(
            vec!["127.0.0.1:1".into()],
            Connections::new(&log),
            Duration::from_millis(500),
            &log,
        )
        .unwrap();
        assert!(matches!(
            cache.route("t").await,
            Err(ClientError::AllNamesrvsDown)
        ));
        lock(&cache.inner.routes).insert("t".into(), Arc::new(TopicRoute::new("t", data())));
        let r = cache.refresh("t").await.expect("cached route kept");
        assert_eq!(r.write_queues.len(), 3);
        cache.refresh_all().await;
        assert!(cache.cached("t").is_some());
    }
}

//! The name server's route table as a plain struct (no actors, no clock):
//! topics → queues per broker name, broker names → member addresses,
//! clusters → broker names, and the liveness of every broker address.
//!
//! The [`Registry`](super::registry::Registry) actor feeds it requests and
//! the current time; everything here is tested without a runtime.
//!
//! Semantics follow RocketMQ's `RouteInfoManager`:
//! - a **master** (broker id 0) registration carries the broker's topic
//!   configs; when its `data_version` changed (or on first registration)
//!   the broker name's queue data is replaced by those topics, so a topic
//!   deleted on the broker disappears from its route;
//! - a **slave** registration only adds its address (and learns its
//!   master's address in the reply);
//! - a broker address not heard from for its heartbeat timeout (default
//!   120 s) is dropped by [`RouteTable::scan_inactive`], and at once by
//!   [`RouteTable::connection_closed`] when the connection that registered
//!   it closes; when the last address of a broker name goes, the broker
//!   name leaves its cluster and its queues leave every topic route.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use actormq_protocol::request::{
    BrokerData, ClusterInfo, MASTER_ID, QueueData, RegisterBrokerRequest, RegisterBrokerResponse,
    TopicList, TopicRouteData, UnregisterBrokerRequest,
};

/// Default time after which a silent broker is dropped (120 s).
pub const DEFAULT_BROKER_TIMEOUT_MS: u64 = 120_000;

/// What the table knows about one live broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LiveBroker {
    broker_name: String,
    cluster: String,
    broker_id: u64,
    last_update_ms: u64,
    timeout_ms: u64,
    data_version: u64,
    ha_server_addr: String,
    conn_id: Option<u64>,
}

/// One broker address that was dropped, and why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The broker's address.
    pub broker_addr: String,
    /// Its broker name.
    pub broker_name: String,
    /// Why it was dropped.
    pub reason: DropReason,
}

/// Why a broker address left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not heard from within its heartbeat timeout.
    Silent,
    /// The connection it registered on closed.
    ConnectionClosed,
    /// It unregistered (clean stop).
    Unregistered,
}

/// The route table. See the module docs for its rules.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// topic → broker name → queues.
    topics: BTreeMap<String, BTreeMap<String, QueueData>>,
    /// broker name → cluster and member addresses.
    brokers: BTreeMap<String, BrokerData>,
    /// cluster → broker names.
    clusters: BTreeMap<String, BTreeSet<String>>,
    /// broker address → liveness.
    live: HashMap<String, LiveBroker>,
    /// Ordered topics (`admin topic create --order`): topic → the broker
    /// names whose config marks it ordered.
    ordered: BTreeMap<String, BTreeSet<String>>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers (or refreshes) a broker at `now_ms`, seen on connection
    /// `conn_id` (`None` for an in-process registrar).
    pub fn register(
        &mut self,
        req: &RegisterBrokerRequest,
        now_ms: u64,
        conn_id: Option<u64>,
    ) -> RegisterBrokerResponse {
        self.clusters
            .entry(req.cluster_name.clone())
            .or_default()
            .insert(req.broker_name.clone());
        let broker = self
            .brokers
            .entry(req.broker_name.clone())
            .or_insert_with(|| BrokerData {
                cluster: req.cluster_name.clone(),
                broker_name: req.broker_name.clone(),
                broker_addrs: BTreeMap::new(),
            });
        broker.cluster = req.cluster_name.clone();
        // An address moving to another id (a slave promoted, say) leaves its old slot.
        broker
            .broker_addrs
            .retain(|id, addr| *id == req.broker_id || *addr != req.broker_addr);
        broker
            .broker_addrs
            .insert(req.broker_id, req.broker_addr.clone());

        let timeout_ms = if req.heartbeat_timeout_ms == 0 {
            DEFAULT_BROKER_TIMEOUT_MS
        } else {
            req.heartbeat_timeout_ms
        };
        let previous = self.live.insert(
            req.broker_addr.clone(),
            LiveBroker {
                broker_name: req.broker_name.clone(),
                cluster: req.cluster_name.clone(),
                broker_id: req.broker_id,
                last_update_ms: now_ms,
                timeout_ms,
                data_version: req.data_version,
                ha_server_addr: req.ha_server_addr.clone(),
                conn_id,
            },
        );
        // Re-read the topics on first sight, on a new table version, and when
        // the address changed role (a slave promoted to master).
        let topics_changed = previous
            .is_none_or(|p| p.data_version != req.data_version || p.broker_id != req.broker_id);
        if req.broker_id == MASTER_ID && topics_changed {
            self.replace_queues(&req.broker_name, req);
        }

        if req.broker_id == MASTER_ID {
            return RegisterBrokerResponse::default();
        }
        let master_addr = self
            .brokers
            .get(&req.broker_name)
            .and_then(|b| b.master_addr())
            .map(str::to_owned);
        let ha_server_addr = master_addr
            .as_ref()
            .and_then(|m| self.live.get(m))
            .map(|l| l.ha_server_addr.clone())
            .filter(|a| !a.is_empty());
        RegisterBrokerResponse {
            ha_server_addr,
            master_addr,
        }
    }

    fn replace_queues(&mut self, broker_name: &str, req: &RegisterBrokerRequest) {
        for queues in self.topics.values_mut() {
            queues.remove(broker_name);
        }
        for brokers in self.ordered.values_mut() {
            brokers.remove(broker_name);
        }
        for cfg in req.topic_configs.iter().filter(|c| c.order) {
            self.ordered
                .entry(cfg.topic_name.clone())
                .or_default()
                .insert(broker_name.to_owned());
        }
        self.ordered.retain(|_, brokers| !brokers.is_empty());
        for cfg in &req.topic_configs {
            self.topics
                .entry(cfg.topic_name.clone())
                .or_default()
                .insert(
                    broker_name.to_owned(),
                    QueueData {
                        broker_name: broker_name.to_owned(),
                        read_queue_nums: cfg.read_queue_nums,
                        write_queue_nums: cfg.write_queue_nums,
                        perm: cfg.perm,
                        topic_sys_flag: cfg.topic_sys_flag,
                    },
                );
        }
        self.topics.retain(|_, queues| !queues.is_empty());
    }

    /// A broker leaves (clean stop). Returns what was dropped.
    pub fn unregister(&mut self, req: &UnregisterBrokerRequest) -> Option<Dropped> {
        self.drop_addr(&req.broker_addr, DropReason::Unregistered)
    }

    /// Drops every broker not heard from within its timeout, as of `now_ms`.
    pub fn scan_inactive(&mut self, now_ms: u64) -> Vec<Dropped> {
        let silent: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| now_ms.saturating_sub(l.last_update_ms) > l.timeout_ms)
            .map(|(addr, _)| addr.clone())
            .collect();
        silent
            .iter()
            .filter_map(|addr| self.drop_addr(addr, DropReason::Silent))
            .collect()
    }

    /// Drops every broker registered over connection `conn_id`.
    pub fn connection_closed(&mut self, conn_id: u64) -> Vec<Dropped> {
        let gone: Vec<String> = self
            .live
            .iter()
            .filter(|(_, l)| l.conn_id == Some(conn_id))
            .map(|(addr, _)| addr.clone())
            .collect();
        gone.iter()
            .filter_map(|addr| self.drop_addr(addr, DropReason::ConnectionClosed))
            .collect()
    }

    fn drop_addr(&mut self, addr: &str, reason: DropReason) -> Option<Dropped> {
        let live = self.live.remove(addr)?;
        let mut name_gone = false;
        if let Some(broker) = self.brokers.get_mut(&live.broker_name) {
            broker.broker_addrs.retain(|_, a| a != addr);
            name_gone = broker.broker_addrs.is_empty();
        }
        if name_gone {
            // Slaves keep a name (and its queues, for reads) alive without
            // its master; once nobody is left the name leaves every route.
            self.brokers.remove(&live.broker_name);
            if let Some(names) = self.clusters.get_mut(&live.cluster) {
                names.remove(&live.broker_name);
                if names.is_empty() {
                    self.clusters.remove(&live.cluster);
                }
            }
            for queues in self.topics.values_mut() {
                queues.remove(&live.broker_name);
            }
            self.topics.retain(|_, queues| !queues.is_empty());
            for brokers in self.ordered.values_mut() {
                brokers.remove(&live.broker_name);
            }
            self.ordered.retain(|_, brokers| !brokers.is_empty());
        }
        Some(Dropped {
            broker_addr: addr.to_owned(),
            broker_name: live.broker_name,
            reason,
        })
    }

    /// The route of `topic`, or `None` when no live broker serves it.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let queues = self.topics.get(topic)?;
        let queue_datas: Vec<QueueData> = queues.values().cloned().collect();
        let broker_datas: Vec<BrokerData> = queues
            .keys()
            .filter_map(|name| self.brokers.get(name))
            .cloned()
            .collect();
        if broker_datas.is_empty() {
            return None;
        }
        // RocketMQ's form: `brokerName:queueNum;...` of the brokers that
        // mark the topic ordered.
        let order_topic_conf = self.ordered.get(topic).map(|brokers| {
            queue_datas
                .iter()
                .filter(|q| brokers.contains(&q.broker_name))
                .map(|q| format!("{}:{}", q.broker_name, q.write_queue_nums))
                .collect::<Vec<_>>()
                .join(";")
        });
        Some(TopicRouteData {
            queue_datas,
            broker_datas,
            order_topic_conf,
        })
    }

    /// Every cluster and broker known.
    pub fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            broker_addr_table: self.brokers.clone(),
            cluster_addr_table: self
                .clusters
                .iter()
                .map(|(c, names)| (c.clone(), names.iter().cloned().collect()))
                .collect(),
        }
    }

    /// Every topic with at least one live broker.
    pub fn topic_list(&self) -> TopicList {
        TopicList {
            topics: self.topics.keys().cloned().collect(),
        }
    }

    /// Removes `topic` from the routes (of `cluster` only, when given).
    /// Returns whether anything was removed.
    pub fn delete_topic(&mut self, topic: &str, cluster: Option<&str>) -> bool {
        let Some(queues) = self.topics.get_mut(topic) else {
            return false;
        };
        let before = queues.len();
        match cluster {
            None => queues.clear(),
            Some(c) => {
                let names = self.clusters.get(c).cloned().unwrap_or_default();
                queues.retain(|broker_name, _| !names.contains(broker_name));
            }
        }
        let removed = queues.len() != before;
        if queues.is_empty() {
            self.topics.remove(topic);
        }
        removed
    }

    /// Whether `broker_addr` is registered and live.
    pub fn is_live(&self, broker_addr: &str) -> bool {
        self.live.contains_key(broker_addr)
    }

    /// Number of live broker addresses.
    pub fn live_brokers(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::request::{Perm, TopicConfig};

    use super::*;

    fn topic(name: &str, queues: u32) -> TopicConfig {
        TopicConfig {
            topic_name: name.into(),
            read_queue_nums: queues,
            write_queue_nums: queues,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        }
    }

    fn reg(
        name: &str,
        addr: &str,
        id: u64,
        version: u64,
        topics: &[TopicConfig],
    ) -> RegisterBrokerRequest {
        RegisterBrokerRequest {
            cluster_name: "DefaultCluster".into(),
            broker_name: name.into(),
            broker_addr: addr.into(),
            broker_id: id,
            ha_server_addr: format!("{addr}-ha"),
            topic_configs: topics.to_vec(),
            data_version: version,
            heartbeat_timeout_ms: 0,
        }
    }

    #[test]
    fn ordered_topics_carry_their_order_conf() {
        let mut t = RouteTable::new();
        let mut ordered = topic("ledger", 1);
        ordered.order = true;
        t.register(
            &reg("a", "h:1", 0, 1, &[ordered, topic("plain", 4)]),
            0,
            Some(1),
        );
        assert_eq!(
            t.route("ledger").unwrap().order_topic_conf.as_deref(),
            Some("a:1")
        );
        assert_eq!(t.route("plain").unwrap().order_topic_conf, None);
        // A new registration without the flag clears it.
        t.register(&reg("a", "h:1", 0, 2, &[topic("ledger", 1)]), 0, Some(1));
        assert_eq!(t.route("ledger").unwrap().order_topic_conf, None);
    }

    #[test]
    fn a_topic_spread_over_two_brokers() {
        let mut t = RouteTable::new();
        t.register(&reg("a", "h:1", 0, 1, &[topic("orders", 4)]), 0, Some(1));
        t.register(
            &reg("b", "h:2", 0, 1, &[topic("orders", 8), topic("pay", 2)]),
            0,
            Some(2),
        );
        let route = t.route("orders").unwrap();
        assert_eq!(route.queue_datas.len(), 2);
        assert_eq!(route.broker_datas.len(), 2);
        let total: u32 = route.queue_datas.iter().map(|q| q.write_queue_nums).sum();
        assert_eq!(total, 12);
        assert_eq!(t.topic_list().topics, vec!["orders", "pay"]);
        assert!(t.route("missing").is_none());
        let info = t.cluster_info();
        assert_eq!(info.cluster_addr_table["DefaultCluster"], vec!["a", "b"]);
    }

    #[test]
    fn new_data_version_replaces_the_brokers_topics() {
        let mut t = RouteTable::new();
        t.register(
            &reg("a", "h:1", 0, 1, &[topic("x", 4), topic("y", 4)]),
            0,
            None,
        );
        // Same version: topic list not re-read (even if it differs).
        t.register(&reg("a", "h:1", 0, 1, &[topic("x", 4)]), 1, None);
        assert!(t.route("y").is_some());
        // New version without y: y is gone.
        t.register(&reg("a", "h:1", 0, 2, &[topic("x", 4)]), 2, None);
        assert!(t.route("y").is_none());
        assert!(t.route("x").is_some());
    }

    #[test]
    fn silent_brokers_are_dropped_after_their_timeout() {
        let mut t = RouteTable::new();
        t.register(&reg("a", "h:1", 0, 1, &[topic("x", 4)]), 0, None);
        t.register(&reg("b", "h:2", 0, 1, &[topic("x", 4)]), 100_000, None);
        assert!(
            t.scan_inactive(DEFAULT_BROKER_TIMEOUT_MS).is_empty(),
            "exactly at the limit stays"
        );
        let dropped = t.scan_inactive(DEFAULT_BROKER_TIMEOUT_MS + 1);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].broker_name, "a");
        assert_eq!(dropped[0].reason, DropReason::Silent);
        let route = t.route("x").unwrap();
        assert_eq!(route.broker_datas.len(), 1);
        assert_eq!(route.broker_datas[0].broker_name, "b");
        assert_eq!(
            t.cluster_info().cluster_addr_table["DefaultCluster"],
            vec!["b"]
        );
    }

    #[test]
    fn a_closed_connection_drops_its_brokers_at_once() {
        let mut t = RouteTable::new();
        t.register(&reg("a", "h:1", 0, 1, &[topic("x", 4)]), 0, Some(7));
        t.register(&reg("b", "h:2", 0, 1, &[topic("x", 4)]), 0, Some(8));
        let dropped = t.connection_closed(7);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].reason, DropReason::ConnectionClosed);
        assert!(t.connection_closed(7).is_empty());
        assert_eq!(t.live_brokers(), 1);
        // The last broker of a topic leaving removes the topic.
        t.connection_closed(8);
        assert!(t.route("x").is_none());
        assert!(t.topic_list().topics.is_empty());
        assert!(t.cluster_info().cluster_addr_table.is_empty());
    }

    #[test]
    fn slave_learns_its_master_and_keeps_the_name_alive() {
        let mut t = RouteTable::new();
        assert_eq!(
            t.register(&reg("a", "h:1", 0, 1, &[topic("x", 4)]), 0, None),
            Default::default()
        );
        let reply = t.register(&reg("a", "h:9", 1, 1, &[]), 0, None);
        assert_eq!(reply.master_addr.as_deref(), Some("h:1"));
        assert_eq!(reply.ha_server_addr.as_deref(), Some("h:1-ha"));
        // The slave's empty topic list does not wipe the master's topics.
        assert!(t.route("x").is_some());
        // Master gone: the slave still serves reads for the name.
        t.unregister(&UnregisterBrokerRequest {
            cluster_name: "DefaultCluster".into(),
            broker_name: "a".into(),
            broker_addr: "h:1".into(),
            broker_id: 0,
        });
        let route = t.route("x").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 1);
        assert!(route.broker_datas[0].master_addr().is_none());
    }

    #[test]
    fn delete_topic_everywhere_or_per_cluster() {
        let mut t = RouteTable::new();
        let mut other = reg("c", "h:3", 0, 1, &[topic("x", 4)]);
        other.cluster_name = "Other".into();
        t.register(&reg("a", "h:1", 0, 1, &[topic("x", 4)]), 0, None);
        t.register(&other, 0, None);
        assert!(t.delete_topic("x", Some("Other")));
        assert_eq!(t.route("x").unwrap().broker_datas.len(), 1);
        assert!(t.delete_topic("x", None));
        assert!(t.route("x").is_none());
        assert!(!t.delete_topic("x", None));
    }

    #[test]
    fn re_registering_an_address_under_a_new_id_moves_it() {
        let mut t = RouteTable::new();
        t.register(&reg("a", "h:1", 1, 1, &[]), 0, None);
        t.register(&reg("a", "h:1", 0, 1, &[topic("x", 1)]), 1, None);
        let route = t.route("x").unwrap();
        assert_eq!(route.broker_datas[0].broker_addrs.len(), 1);
        assert_eq!(route.broker_datas[0].master_addr(), Some("h:1"));
    }
}

//! `GroupManager`: producer and consumer groups as seen through client
//! heartbeats. A client not heard from for 120 s is dropped (scan every
//! 10 s), and at once when its connection closes. When the membership of a
//! consumer group changes, subscribers get [`ConsumerGroupChanged`] (the
//! session layer turns it into `NOTIFY_CONSUMER_IDS_CHANGED` for the
//! group's clients, which then rebalance). A heartbeat whose subscription
//! does not compile (a bad tag or SQL92 expression, or SQL92 with
//! `enable_property_filter = false`) is refused whole.
//!
//! A heartbeat's consumer groups are first resolved by the
//! [`SubscriptionGroupManager`](super::SubscriptionGroupManager) when one
//! is attached ([`GroupManager::with_subscription_groups`]): it creates
//! unknown groups or refuses the heartbeat, and the reply carries each
//! group's config to the consumer. A clustering group's retry topic
//! `%RETRY%<group>` is created then too (with
//! [`GroupManager::with_retry_topics`]), so its consumers can subscribe to
//! it before anything failed.
//!
//! A member whose consumer data says `ConsumePop` (a RocketMQ 5 gRPC
//! consumer, which pops) is listed with its group's connections but takes
//! no part in the group's rebalance: it is not in the consumer id list,
//! is not notified, and its joining or leaving is no membership change.
//!
//! The decision logic is [`GroupTable`], a plain struct.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use actix::prelude::*;
use actormq_protocol::ResponseCode;
use actormq_protocol::request::heartbeat::ConsumeType;
use actormq_protocol::request::{
    ClientConnection, ConnectionList, ConsumerData, GetConsumerConnectionListRequest,
    GetConsumerListByGroupRequest, GetConsumerListByGroupResponse,
    GetProducerConnectionListRequest, HeartbeatRequest, HeartbeatResponse, MessageModel,
};
use actormq_protocol::unique_key::system_time_ms;
use slog::{Logger, info, o};

use super::error_map::filter_error;
use super::pull_hold::compile_filter;
use super::retry_service::retry_topic_config;
use super::subscription_group_manager::ResolveGroups;
use super::topic_manager::ResolveTopic;
use crate::runtime::guard::{Guarded, GuardedReply, Poison, guarded};
use crate::runtime::net::ConnectionClosed;
use crate::runtime::{Call, Reply, ServiceError};

/// Default idle time after which a client is dropped (120 s).
pub const DEFAULT_CLIENT_TIMEOUT_MS: u64 = 120_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    last_seen_ms: u64,
    conn_id: Option<u64>,
    /// Where its heartbeats come from, its language and version
    /// (`admin connections`).
    addr: Option<std::net::SocketAddr>,
    language: String,
    version: String,
}

impl Member {
    fn connection(&self, client_id: &str) -> ClientConnection {
        ClientConnection {
            client_id: client_id.to_owned(),
            addr: self.addr.map(|a| a.to_string()).unwrap_or_default(),
            language: self.language.clone(),
            version: self.version.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ConsumerGroup {
    members: BTreeMap<String, Member>,
    /// The latest consumer data (subscriptions, model) by client id.
    data: BTreeMap<String, ConsumerData>,
}

impl ConsumerGroup {
    /// Whether member `id` pops (takes no part in the rebalance).
    fn pops(&self, id: &str) -> bool {
        self.data
            .get(id)
            .is_some_and(|d| d.consume_type == ConsumeType::ConsumePop)
    }

    /// The members that take part in the rebalance.
    fn rebalancing(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.members.iter().filter(|(id, _)| !self.pops(id))
    }
}

/// Groups and their members. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct GroupTable {
    consumers: BTreeMap<String, ConsumerGroup>,
    producers: BTreeMap<String, BTreeMap<String, Member>>,
}

impl GroupTable {
    /// Applies a heartbeat from `client_id` at `now_ms` over `conn_id`.
    /// Returns the consumer groups whose membership changed.
    pub fn heartbeat(
        &mut self,
        hb: &HeartbeatRequest,
        now_ms: u64,
        conn_id: Option<u64>,
    ) -> Vec<String> {
        self.heartbeat_from(hb, now_ms, conn_id, None)
    }

    /// [`heartbeat`](Self::heartbeat) from the peer `addr`.
    pub fn heartbeat_from(
        &mut self,
        hb: &HeartbeatRequest,
        now_ms: u64,
        conn_id: Option<u64>,
        addr: Option<std::net::SocketAddr>,
    ) -> Vec<String> {
        let member = Member {
            last_seen_ms: now_ms,
            conn_id,
            addr,
            language: hb.language.clone().unwrap_or_default(),
            version: hb.version.clone().unwrap_or_default(),
        };
        for p in &hb.producer_data_set {
            self.producers
                .entry(p.group_name.clone())
                .or_default()
                .insert(hb.client_id.clone(), member.clone());
        }
        let mut changed = Vec::new();
        for c in &hb.consumer_data_set {
            let group = self.consumers.entry(c.group_name.clone()).or_default();
            let joined = group
                .members
                .insert(hb.client_id.clone(), member.clone())
                .is_none();
            group.data.insert(hb.client_id.clone(), c.clone());
            if joined && c.consume_type != ConsumeType::ConsumePop {
                changed.push(c.group_name.clone());
            }
        }
        changed
    }

    /// Drops every client idle for longer than `timeout_ms`.
    pub fn scan_idle(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<String> {
        self.remove_where(|m| now_ms.saturating_sub(m.last_seen_ms) > timeout_ms)
    }

    /// Drops every client whose heartbeats came over `conn_id`.
    pub fn connection_closed(&mut self, conn_id: u64) -> Vec<String> {
        self.remove_where(|m| m.conn_id == Some(conn_id))
    }

    /// A client leaves a consumer group (clean shutdown).
    pub fn unregister_consumer(&mut self, group: &str, client_id: &str) -> bool {
        let Some(g) = self.consumers.get_mut(group) else {
            return false;
        };
        g.data.remove(client_id);
        let removed = g.members.remove(client_id).is_some();
        if g.members.is_empty() {
            self.consumers.remove(group);
        }
        removed
    }

    fn remove_where(&mut self, gone: impl Fn(&Member) -> bool) -> Vec<String> {
        for members in self.producers.values_mut() {
            members.retain(|_, m| !gone(m));
        }
        self.producers.retain(|_, m| !m.is_empty());
        let mut changed = Vec::new();
        for (name, group) in &mut self.consumers {
            let before = group.rebalancing().count();
            group.members.retain(|_, m| !gone(m));
            let members = &group.members;
            group.data.retain(|id, _| members.contains_key(id));
            if group.rebalancing().count() != before {
                changed.push(name.clone());
            }
        }
        self.consumers.retain(|_, g| !g.members.is_empty());
        changed
    }

    /// Client ids of `group`, sorted (every member must see the same order
    /// for the allocation strategies to agree).
    pub fn consumer_ids(&self, group: &str) -> Vec<String> {
        self.consumers
            .get(group)
            .map(|g| g.rebalancing().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// The connections of `group`'s members (to notify them).
    pub fn consumer_connections(&self, group: &str) -> BTreeSet<u64> {
        self.consumers
            .get(group)
            .map(|g| g.rebalancing().filter_map(|(_, m)| m.conn_id).collect())
            .unwrap_or_default()
    }

    /// The latest consumer data a member of `group` reported.
    pub fn consumer_data(&self, group: &str) -> Vec<ConsumerData> {
        self.consumers
            .get(group)
            .map(|g| g.data.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Names of every consumer group with members.
    pub fn consumer_groups(&self) -> Vec<String> {
        self.consumers.keys().cloned().collect()
    }

    /// The connections of producer group `group`'s members (to ask one
    /// of them for a transaction's state).
    pub fn producer_connections(&self, group: &str) -> BTreeSet<u64> {
        self.producers
            .get(group)
            .map(|m| m.values().filter_map(|m| m.conn_id).collect())
            .unwrap_or_default()
    }

    /// The clients online in consumer group `group`, by client id.
    pub fn consumer_connection_list(&self, group: &str) -> Vec<ClientConnection> {
        self.consumers
            .get(group)
            .map(|g| g.members.iter().map(|(id, m)| m.connection(id)).collect())
            .unwrap_or_default()
    }

    /// The clients online in producer group `group`, by client id.
    pub fn producer_connection_list(&self, group: &str) -> Vec<ClientConnection> {
        self.producers
            .get(group)
            .map(|g| g.iter().map(|(id, m)| m.connection(id)).collect())
            .unwrap_or_default()
    }

    /// Client ids of producer group `group`.
    pub fn producer_ids(&self, group: &str) -> Vec<String> {
        self.producers
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

/// Announced after a consumer group's membership changed.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ConsumerGroupChanged {
    /// The group.
    pub group: String,
    /// Its members now, sorted.
    pub consumer_ids: Vec<String>,
    /// Connections of its members (to send `NOTIFY_CONSUMER_IDS_CHANGED`).
    pub connections: BTreeSet<u64>,
}

/// Subscribe to [`ConsumerGroupChanged`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeGroups(pub Recipient<ConsumerGroupChanged>);

/// Settings of the group manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupManagerConfig {
    /// Idle time after which a client is dropped. Default 120 s.
    pub client_timeout: Duration,
    /// Scan interval. Default 10 s.
    pub scan_interval: Duration,
    /// SQL92 subscriptions accepted (`enable_property_filter`). Default
    /// true.
    pub property_filter: bool,
}

impl Default for GroupManagerConfig {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_millis(DEFAULT_CLIENT_TIMEOUT_MS),
            scan_interval: Duration::from_secs(10),
            property_filter: true,
        }
    }
}

/// The group manager actor. See the module docs.
pub struct GroupManager {
    table: GroupTable,
    config: GroupManagerConfig,
    subscribers: Vec<Recipient<ConsumerGroupChanged>>,
    subscription_groups: Option<Recipient<ResolveGroups>>,
    topics: Option<Recipient<ResolveTopic>>,
    logger: Logger,
    now_ms: fn() -> u64,
    poison: Poison,
}

impl GroupManager {
    /// An empty manager (membership is rebuilt from heartbeats after a restart).
    pub fn new(config: GroupManagerConfig, logger: &Logger) -> Self {
        Self::with_clock(config, logger, system_time_ms)
    }

    /// Like [`GroupManager::new`] with an injected clock (tests).
    pub fn with_clock(config: GroupManagerConfig, logger: &Logger, now_ms: fn() -> u64) -> Self {
        Self {
            table: GroupTable::default(),
            config,
            subscribers: Vec::new(),
            subscription_groups: None,
            topics: None,
            logger: logger.new(o!("actor" => "GroupManager")),
            now_ms,
            poison: Poison::default(),
        }
    }

    /// Resolves every heartbeat's consumer groups through `resolver`
    /// before applying it (see the module docs). Without one, heartbeats
    /// are applied as they come and their replies carry no configs.
    pub fn with_subscription_groups(mut self, resolver: Recipient<ResolveGroups>) -> Self {
        self.subscription_groups = Some(resolver);
        self
    }

    /// Creates a clustering group's retry topic through `topics` when its
    /// heartbeat is resolved (see the module docs).
    pub fn with_retry_topics(mut self, topics: Recipient<ResolveTopic>) -> Self {
        self.topics = Some(topics);
        self
    }

    fn announce(&mut self, groups: Vec<String>) {
        if groups.is_empty() {
            return;
        }
        self.subscribers.retain(|s| s.connected());
        for group in groups {
            let consumer_ids = self.table.consumer_ids(&group);
            info!(self.logger, "consumer group changed"; "group" => &group, "members" => consumer_ids.len());
            let connections = self.table.consumer_connections(&group);
            for s in &self.subscribers {
                s.do_send(ConsumerGroupChanged {
                    group: group.clone(),
                    consumer_ids: consumer_ids.clone(),
                    connections: connections.clone(),
                });
            }
        }
    }
}

impl Actor for GroupManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.scan_interval, |act, ctx| {
            let _ = guarded(act, ctx, |act, _| {
                let timeout =
                    u64::try_from(act.config.client_timeout.as_millis()).unwrap_or(u64::MAX);
                let changed = act.table.scan_idle((act.now_ms)(), timeout);
                act.announce(changed);
            });
        });
    }
}

// Every handler (and the idle scan) runs through `guarded`: a panic
// poisons the instance, the messages queued behind it are refused (their
// callers get an error) and the supervisor starts an empty table, rebuilt
// from the next heartbeats.
impl Guarded for GroupManager {
    fn poison(&mut self) -> &mut Poison {
        &mut self.poison
    }
}

impl Handler<SubscribeGroups> for GroupManager {
    type Result = GuardedReply<()>;
    fn handle(&mut self, msg: SubscribeGroups, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.subscribers.push(msg.0))
    }
}

/// A client connection closed: its members leave at once.
impl Handler<ConnectionClosed> for GroupManager {
    type Result = GuardedReply<()>;
    fn handle(&mut self, msg: ConnectionClosed, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let changed = act.table.connection_closed(msg.conn_id);
            act.announce(changed);
        })
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::runtime::guard::InjectPanic> for GroupManager {
    type Result = GuardedReply<()>;
    fn handle(
        &mut self,
        msg: crate::runtime::guard::InjectPanic,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |_, _| panic!("{}", msg.0))
    }
}

type HeartbeatReply =
    ResponseActFuture<GroupManager, Result<Reply<HeartbeatResponse>, ServiceError>>;

impl Handler<Call<HeartbeatRequest>> for GroupManager {
    type Result = GuardedReply<HeartbeatReply>;
    fn handle(&mut self, msg: Call<HeartbeatRequest>, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| act.heartbeat(msg))
    }
}

impl GroupManager {
    fn heartbeat(&mut self, msg: Call<HeartbeatRequest>) -> HeartbeatReply {
        if msg.req.client_id.is_empty() {
            return Box::pin(actix::fut::ready(Err(ServiceError::new(
                ResponseCode::InvalidParameter,
                "client_id is required",
            ))));
        }
        // A subscription whose expression does not compile (or SQL92 with
        // property filtering off) is refused at subscribe time, the whole
        // heartbeat with it.
        for c in &msg.req.consumer_data_set {
            for sub in &c.subscription_data_set {
                let compiled = compile_filter(
                    Some(&sub.sub_string),
                    Some(&sub.expression_type),
                    self.config.property_filter,
                )
                .map_err(|e| {
                    let mut e = filter_error(e);
                    e.remark = format!("topic {}: {}", sub.topic, e.remark);
                    e
                });
                if let Err(e) = compiled {
                    return Box::pin(actix::fut::ready(Err(e)));
                }
            }
        }
        let mut groups: Vec<String> = msg
            .req
            .consumer_data_set
            .iter()
            .map(|c| c.group_name.clone())
            .collect();
        groups.dedup();
        let resolver = match &self.subscription_groups {
            Some(r) if !groups.is_empty() => r.clone(),
            _ => {
                self.apply_heartbeat(&msg);
                return Box::pin(actix::fut::ready(Ok(Reply::ok(
                    HeartbeatResponse::default(),
                ))));
            }
        };
        // Applied only once its groups are known (or created): a refused
        // heartbeat does not make its client a member.
        let retry: Vec<String> = msg
            .req
            .consumer_data_set
            .iter()
            .filter(|c| c.message_model == MessageModel::Clustering)
            .map(|c| c.group_name.clone())
            .collect();
        let topics = self.topics.clone();
        let resolved = async move {
            let cfgs = resolver.send(ResolveGroups { groups }).await??;
            if let Some(topics) = topics {
                for group in retry {
                    topics
                        .send(ResolveTopic {
                            topic: retry_topic_config(&group).topic_name,
                            create_as: Some(retry_topic_config(&group)),
                        })
                        .await??;
                }
            }
            Ok::<_, ServiceError>(cfgs)
        };
        Box::pin(
            actix::fut::wrap_future::<_, Self>(resolved).map(move |res, act, _| {
                let subscription_groups = res?;
                act.apply_heartbeat(&msg);
                Ok(Reply::ok(HeartbeatResponse {
                    subscription_groups,
                }))
            }),
        )
    }

    fn apply_heartbeat(&mut self, msg: &Call<HeartbeatRequest>) {
        let changed = self.table.heartbeat_from(
            &msg.req,
            (self.now_ms)(),
            msg.conn_id(),
            msg.origin.as_ref().map(|o| o.peer),
        );
        if !changed.is_empty() {
            // A line about one client carries its client id (and the
            // connection it came over, as the session's own lines do).
            info!(self.logger, "client joined consumer groups";
                "client_id" => &msg.req.client_id,
                "groups" => changed.join(","),
                "conn" => msg.conn_id(),
                "peer" => msg.origin.as_ref().map(|o| o.peer.to_string()),
                "language" => msg.req.language.as_deref().unwrap_or(""));
        }
        self.announce(changed);
    }
}

impl Handler<Call<GetConsumerListByGroupRequest>> for GroupManager {
    type Result = GuardedReply<Result<Reply<GetConsumerListByGroupResponse>, ServiceError>>;
    fn handle(
        &mut self,
        msg: Call<GetConsumerListByGroupRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| act.consumer_list(msg))
    }
}

impl GroupManager {
    fn consumer_list(
        &mut self,
        msg: Call<GetConsumerListByGroupRequest>,
    ) -> Result<Reply<GetConsumerListByGroupResponse>, ServiceError> {
        // A group with no member online (unknown, or every member gone)
        // answers an empty list: "who is in it" has an answer, nobody. The
        // RocketMQ broker answers SYSTEM_ERROR "no consumer for this group"
        // here and its clients treat that as an empty list (the rebalance
        // skips); an empty list says the same without a fake server fault.
        let consumer_ids = self.table.consumer_ids(&msg.req.consumer_group);
        Ok(Reply::ok(GetConsumerListByGroupResponse { consumer_ids }))
    }
}

impl Handler<Call<GetConsumerConnectionListRequest>> for GroupManager {
    type Result = GuardedReply<Result<Reply<ConnectionList>, ServiceError>>;
    fn handle(
        &mut self,
        msg: Call<GetConsumerConnectionListRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let connections = act.table.consumer_connection_list(&msg.req.consumer_group);
            Ok(Reply::ok(ConnectionList { connections }))
        })
    }
}

impl Handler<Call<GetProducerConnectionListRequest>> for GroupManager {
    type Result = GuardedReply<Result<Reply<ConnectionList>, ServiceError>>;
    fn handle(
        &mut self,
        msg: Call<GetProducerConnectionListRequest>,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        guarded(self, ctx, |act, _| {
            let connections = act.table.producer_connection_list(&msg.req.producer_group);
            Ok(Reply::ok(ConnectionList { connections }))
        })
    }
}

/// The connections of a consumer group's members online (to push to them,
/// e.g. an offset reset); empty when none is.
#[derive(Debug, Clone, Message)]
#[rtype(result = "BTreeSet<u64>")]
pub struct GetConsumerConnections {
    /// Consumer group.
    pub group: String,
}

impl Handler<GetConsumerConnections> for GroupManager {
    type Result = GuardedReply<MessageResult<GetConsumerConnections>>;
    fn handle(&mut self, msg: GetConsumerConnections, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            MessageResult(act.table.consumer_connections(&msg.group))
        })
    }
}

/// The connections of a producer group's members online (to ask one for
/// a transaction's state); empty when none is.
#[derive(Debug, Clone, Message)]
#[rtype(result = "BTreeSet<u64>")]
pub struct GetProducerConnections {
    /// Producer group.
    pub group: String,
}

impl Handler<GetProducerConnections> for GroupManager {
    type Result = GuardedReply<MessageResult<GetProducerConnections>>;
    fn handle(&mut self, msg: GetProducerConnections, ctx: &mut Context<Self>) -> Self::Result {
        guarded(self, ctx, |act, _| {
            MessageResult(act.table.producer_connections(&msg.group))
        })
    }
}

#[cfg(test)]
mod tests {
    use actormq_protocol::request::ProducerData;

    use super::*;

    fn hb(client: &str, groups: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            client_id: client.into(),
            producer_data_set: vec![ProducerData {
                group_name: "pg".into(),
            }],
            consumer_data_set: groups
                .iter()
                .map(|g| ConsumerData {
                    group_name: (*g).into(),
                    ..ConsumerData::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn connection_lists_carry_address_language_and_version() {
        let mut t = GroupTable::default();
        let mut h = hb("c1", &["g"]);
        h.language = Some("RUST".into());
        h.version = Some("0.1.0".into());
        let peer: std::net::SocketAddr = "10.0.0.1:4000".parse().unwrap();
        t.heartbeat_from(&h, 0, Some(1), Some(peer));
        t.heartbeat(&hb("c2", &["g"]), 0, Some(2));
        let list = t.consumer_connection_list("g");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].client_id, "c1");
        assert_eq!(list[0].addr, "10.0.0.1:4000");
        assert_eq!(
            (list[0].language.as_str(), list[0].version.as_str()),
            ("RUST", "0.1.0")
        );
        assert_eq!(list[1].addr, "");
        assert_eq!(t.producer_connection_list("pg").len(), 2);
        assert!(t.consumer_connection_list("none").is_empty());
    }

    #[test]
    fn joins_are_changes_refreshes_are_not() {
        let mut t = GroupTable::default();
        assert_eq!(t.heartbeat(&hb("c2", &["g"]), 0, Some(2)), vec!["g"]);
        assert_eq!(
            t.heartbeat(&hb("c1", &["g", "h"]), 0, Some(1)),
            vec!["g", "h"]
        );
        assert!(t.heartbeat(&hb("c1", &["g", "h"]), 10, Some(1)).is_empty());
        assert_eq!(t.consumer_ids("g"), vec!["c1", "c2"], "sorted");
        assert_eq!(
            t.consumer_connections("g").into_iter().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(t.producer_ids("pg"), vec!["c1", "c2"]);
        assert_eq!(t.consumer_groups(), vec!["g", "h"]);
    }

    #[test]
    fn idle_and_disconnected_clients_leave() {
        let mut t = GroupTable::default();
        t.heartbeat(&hb("c1", &["g"]), 0, Some(1));
        t.heartbeat(&hb("c2", &["g"]), 50_000, Some(2));
        assert!(
            t.scan_idle(DEFAULT_CLIENT_TIMEOUT_MS, DEFAULT_CLIENT_TIMEOUT_MS)
                .is_empty()
        );
        assert_eq!(
            t.scan_idle(DEFAULT_CLIENT_TIMEOUT_MS + 1, DEFAULT_CLIENT_TIMEOUT_MS),
            vec!["g"]
        );
        assert_eq!(t.consumer_ids("g"), vec!["c2"]);
        assert_eq!(t.connection_closed(2), vec!["g"]);
        assert!(t.consumer_ids("g").is_empty());
        assert!(t.consumer_groups().is_empty());
        assert!(t.producer_ids("pg").is_empty());
    }

    #[test]
    fn pop_members_are_listed_but_not_rebalanced() {
        let mut t = GroupTable::default();
        t.heartbeat(&hb("native", &["g"]), 0, Some(1));
        let mut pop = hb("grpc", &["g"]);
        pop.consumer_data_set[0].consume_type = ConsumeType::ConsumePop;
        // Joining is no membership change ...
        assert!(t.heartbeat(&pop, 0, Some(2)).is_empty());
        // ... it is listed, not in the ids nor notified.
        let listed: Vec<String> = t
            .consumer_connection_list("g")
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(listed, ["grpc", "native"]);
        assert_eq!(t.consumer_ids("g"), ["native"]);
        assert_eq!(
            t.consumer_connections("g").into_iter().collect::<Vec<_>>(),
            [1]
        );
        // Leaving is none either; the native member's leaving is.
        assert!(t.connection_closed(2).is_empty());
        assert_eq!(t.consumer_connection_list("g").len(), 1);
        assert_eq!(t.connection_closed(1), ["g"]);
        // A group of pop members only: listed, no ids.
        assert!(t.heartbeat(&pop, 0, Some(2)).is_empty());
        assert_eq!(t.consumer_groups(), ["g"]);
        assert!(t.consumer_ids("g").is_empty());
    }

    #[test]
    fn unregister() {
        let mut t = GroupTable::default();
        t.heartbeat(&hb("c1", &["g"]), 0, None);
        assert!(t.unregister_consumer("g", "c1"));
        assert!(!t.unregister_consumer("g", "c1"));
        assert!(t.consumer_data("g").is_empty());
    }
}

//! Cluster administration: the one implementation behind `actormq admin`
//! and the node's HTTP admin API (`/api/...`).
//!
//! Every operation returns typed, `Serialize` results; the CLI prints them
//! (one JSON object per line with `--json`, `spec/cli.md`) and the HTTP
//! handlers return them as JSON, so both show the same data. Requests go
//! through the name servers and the brokers they list, like any client.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actormq_protocol::request::{
    BrokerRuntimeInfo, ClusterInfo, ConnectionList, CreateSubscriptionGroupRequest,
    CreateTopicRequest, DeleteSubscriptionGroupRequest, DeleteTopicInBrokerRequest,
    DeleteTopicInNamesrvRequest, GetAllSubscriptionGroupRequest, GetAllTopicListFromNamesrvRequest,
    GetBrokerClusterInfoRequest, GetBrokerConfigRequest, GetBrokerRuntimeInfoRequest,
    GetConsumerConnectionListRequest, GetMaxOffsetRequest, GetMinOffsetRequest,
    GetProducerConnectionListRequest, GetRouteInfoByTopicRequest, QueryConsumerOffsetRequest,
    ResendDeadLettersRequest, SubscriptionGroupConfig, TopicConfig, TopicRouteData,
};
use actormq_protocol::system_topic;
use actormq_protocol::{Bytes, MessageQueue, ResponseCode, StoredMessage};
use actormq_runtime::Rpc;
use serde::Serialize;
use slog::Logger;

use crate::connections::Connections;
use crate::error::ClientError;
use crate::query::{DEFAULT_MAX_PER_KEY, MessageQuery};
use crate::route::{RouteCache, TopicRoute};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The topic, group, message or broker named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a bad name, a bad range).
    #[error("{0}")]
    Invalid(String),
    /// A name server or broker failed or could not be reached.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A request to one broker failed.
    #[error("{what} on {broker} ({addr}): {source}")]
    Broker {
        /// What was asked.
        what: &'static str,
        /// The broker name.
        broker: String,
        /// Its address.
        addr: String,
        /// The cause.
        source: Box<ClientError>,
    },
}

/// `Result` of the admin operations.
pub type Result<T> = std::result::Result<T, AdminError>;

/// One broker address the name servers know (`admin cluster list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerEntry {
    /// Cluster name.
    pub cluster: String,
    /// Broker name.
    pub broker: String,
    /// Broker id (0: master).
    pub broker_id: u64,
    /// Address.
    pub addr: String,
    /// `master` or `slave`.
    pub role: String,
}

/// One queue's offsets (`admin topic status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker: String,
    /// Queue id.
    pub queue_id: u32,
    /// First kept offset.
    pub min_offset: u64,
    /// One past the last offset.
    pub max_offset: u64,
}

/// One broker of a topic's route (`admin topic route`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteEntry {
    /// Topic.
    pub topic: String,
    /// Cluster.
    pub cluster: String,
    /// Broker name.
    pub broker: String,
    /// Master address ("" when none is registered).
    pub master: String,
    /// Addresses by broker id.
    pub addrs: BTreeMap<String, String>,
    /// Read queues.
    pub read_queues: u32,
    /// Write queues.
    pub write_queues: u32,
    /// Permission bits.
    pub perm: u32,
    /// Whether the topic is ordered.
    pub order: bool,
}

/// A topic with its size (`GET /api/topics`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicSummary {
    /// Topic.
    pub topic: String,
    /// Readable queues over all brokers.
    pub queues: u32,
    /// Messages kept: the sum over its queues of max − min offset.
    pub messages: u64,
    /// A system topic (`%RETRY%…`, `%DLQ%…`, `RMQ_SYS_…`, …).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
}

/// A topic's route and queues (`GET /api/topics/{topic}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDetail {
    /// Topic.
    pub topic: String,
    /// Its route, one entry per broker.
    pub route: Vec<RouteEntry>,
    /// Its queues.
    pub queues: Vec<QueueStatus>,
}

/// The topic options of [`Admin::create_topic`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateTopic {
    /// Topic.
    pub topic: String,
    /// Queues per broker (default 8; 1 when ordered).
    pub queues: Option<u32>,
    /// Only on this broker.
    pub broker: Option<String>,
    /// Only on this cluster's masters.
    pub cluster: Option<String>,
    /// An ordered topic.
    pub order: bool,
}

/// One broker a topic was created on (`admin topic create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCreated {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker: String,
    /// Its address.
    pub addr: String,
    /// Queues.
    pub queues: u32,
    /// Ordered.
    pub order: bool,
    /// Always true.
    pub created: bool,
}

/// A deleted topic (`admin topic delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDeleted {
    /// Topic.
    pub topic: String,
    /// Always true.
    pub deleted: bool,
    /// Brokers it was deleted from.
    pub brokers: Vec<String>,
    /// Name servers it was deleted from.
    pub namesrvs: Vec<String>,
}

/// A consumer group's config on one broker (`admin group list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupConfigView {
    /// Group.
    pub group: String,
    /// Broker name.
    pub broker: String,
    /// May consume.
    pub consume_enable: bool,
    /// `last`, `first` or `timestamp`.
    pub consume_from: String,
    /// With `timestamp`: from when.
    pub consume_timestamp_ms: u64,
    /// Broadcasting allowed.
    pub broadcast_enable: bool,
    /// Orderly.
    pub orderly: bool,
    /// Retries before the DLQ.
    pub retry_max: u32,
    /// First retry's delay level.
    pub retry_first_delay_level: u32,
    /// Set by `create` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// The options of [`Admin::create_group`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateGroup {
    /// Group.
    pub group: String,
    /// Orderly.
    pub orderly: bool,
    /// Retries before the DLQ (0..=64).
    pub retry_max: u32,
}

/// A deleted group (`admin group delete`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDeleted {
    /// Group.
    pub group: String,
    /// Always true.
    pub deleted: bool,
    /// Brokers it was deleted from.
    pub brokers: Vec<String>,
}

/// A group's progress on one queue (`admin group progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueProgress {
    /// Topic.
    pub topic: String,
    /// Broker name.
    pub broker: String,
    /// Queue id.
    pub queue_id: u32,
    /// One past the queue's last offset.
    pub broker_offset: u64,
    /// The group's committed offset (0 when none).
    pub consumer_offset: u64,
    /// `broker_offset − consumer_offset`.
    pub lag: u64,
}

/// A consumer group at a glance (`GET /api/groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupSummary {
    /// Group.
    pub group: String,
    /// Orderly.
    pub orderly: bool,
    /// Retries before the DLQ.
    pub retry_max: u32,
    /// Clients online (over every master broker, distinct ids).
    pub consumers: usize,
    /// Sum of the lag over every queue it committed on.
    pub total_lag: u64,
}

pub use actormq_protocol::request::ClientConnection;

/// One broker's runtime status (`admin broker status`): its identity and
/// what it answered to `GET_BROKER_RUNTIME_INFO`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BrokerStatusView {
    /// Broker name.
    pub broker: String,
    /// Broker id (0: master).
    pub broker_id: u64,
    /// Address.
    pub addr: String,
    /// What it reported.
    #[serde(flatten)]
    pub info: BrokerRuntimeInfo,
}

/// One broker's effective configuration (`admin broker config`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerConfigView {
    /// Broker name.
    pub broker: String,
    /// Broker id (0: master).
    pub broker_id: u64,
    /// Address.
    pub addr: String,
    /// Settings by key (`broker.flush`, `http.listen`, ...).
    pub config: BTreeMap<String, String>,
}

/// A consumer group in detail (`GET /api/groups/{group}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDetail {
    /// Group.
    pub group: String,
    /// Per queue.
    pub progress: Vec<QueueProgress>,
    /// Sum of the lags.
    pub total_lag: u64,
    /// Clients online.
    pub connections: Vec<ClientConnection>,
}

/// A message as `consume --json` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    /// Store message id.
    pub msg_id: String,
    /// Topic.
    pub topic: String,
    /// Tags ("" when none).
    pub tags: String,
    /// Keys ("" when none).
    pub keys: String,
    /// Properties.
    pub props: BTreeMap<String, String>,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
    /// Body, lossily decoded as UTF-8.
    pub body: String,
    /// Body length in bytes.
    pub body_len: usize,
    /// Redeliveries so far.
    pub reconsume_times: u32,
    /// Born timestamp, ms.
    pub born_ts: u64,
    /// Store timestamp, ms.
    pub store_ts: u64,
}

impl From<&StoredMessage> for MessageView {
    fn from(m: &StoredMessage) -> Self {
        let msg = &m.message;
        MessageView {
            msg_id: m.msg_id().to_string(),
            topic: msg.topic.clone(),
            tags: msg.tags.clone().unwrap_or_default(),
            keys: msg.keys.clone().unwrap_or_default(),
            props: msg
                .properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            body: String::from_utf8_lossy(&msg.body).into_owned(),
            body_len: msg.body.len(),
            reconsume_times: m.reconsume_times,
            born_ts: m.born_timestamp_ms,
            store_ts: m.store_timestamp_ms,
        }
    }
}

/// One resent dead letter (`admin dlq resend`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResentView {
    /// Id of the new message.
    pub msg_id: String,
    /// Id of the dead letter's first message.
    pub origin_msg_id: String,
    /// Topic it went back to.
    pub topic: String,
    /// Broker.
    pub broker: String,
    /// Queue id.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
}

/// What a resend did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResendSummary {
    /// The messages resent.
    pub messages: Vec<ResentView>,
    /// How many were resent.
    pub resent: u64,
    /// How many dead letters are left.
    pub remaining: u64,
}

/// A group's dead letters (`GET /api/dlq/{group}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetters {
    /// Group.
    pub group: String,
    /// The dead letters, oldest first per queue.
    pub messages: Vec<MessageView>,
}

/// Whether `topic` is one the brokers keep for themselves or for groups.
pub fn is_system_topic(topic: &str) -> bool {
    system_topic::is_retry_topic(topic)
        || system_topic::is_dlq_topic(topic)
        || system_topic::is_broker_only(topic)
        || topic.starts_with("RMQ_SYS_")
        || topic.starts_with("rmq_sys_")
        || topic == system_topic::SCHEDULE_TOPIC
}

/// The admin client. Use inside an actix `System`.
#[derive(Debug, Clone)]
pub struct Admin {
    routes: RouteCache,
    query: MessageQuery,
    timeout: Duration,
}

impl Admin {
    /// An admin client of the name servers `namesrv`, each request bounded
    /// by `timeout`.
    pub fn new(namesrv: &[String], timeout: Duration, logger: &Logger) -> Result<Admin> {
        let routes = RouteCache::new(namesrv.to_vec(), Connections::new(logger), timeout, logger)?;
        let query = MessageQuery::new(namesrv, logger)?;
        Ok(Admin {
            routes,
            query,
            timeout,
        })
    }

    /// The route cache (and its connections) used.
    pub fn routes(&self) -> &RouteCache {
        &self.routes
    }

    async fn call<R: Rpc>(
        &self,
        broker: &str,
        addr: &str,
        what: &'static str,
        req: R,
    ) -> Result<R::Response> {
        self.routes
            .connections()
            .call(addr, req, Bytes::new(), self.timeout)
            .await
            .map(|r| r.fields)
            .map_err(|source| AdminError::Broker {
                what,
                broker: broker.to_owned(),
                addr: addr.to_owned(),
                source: Box::new(source),
            })
    }

    /// The name servers' cluster table.
    pub async fn cluster_info(&self) -> Result<ClusterInfo> {
        Ok(self
            .routes
            .namesrv_call(GetBrokerClusterInfoRequest {})
            .await?
            .fields)
    }

    /// Every master broker: `(name, addr)`, sorted by name.
    pub async fn masters(&self) -> Result<Vec<(String, String)>> {
        let info = self.cluster_info().await?;
        let targets: Vec<(String, String)> = info
            .broker_addr_table
            .iter()
            .filter_map(|(name, data)| Some((name.clone(), data.master_addr()?.to_owned())))
            .collect();
        if targets.is_empty() {
            return Err(AdminError::NotFound(
                "no master broker registered".to_owned(),
            ));
        }
        Ok(targets)
    }

    /// Every broker address (`admin cluster list`).
    pub async fn cluster_list(&self) -> Result<Vec<BrokerEntry>> {
        let info = self.cluster_info().await?;
        let cluster_of = |broker: &str| {
            info.cluster_addr_table
                .iter()
                .find(|(_, names)| names.iter().any(|n| n == broker))
                .map(|(c, _)| c.clone())
        };
        let mut out = Vec::new();
        for (name, data) in &info.broker_addr_table {
            let cluster = cluster_of(name).unwrap_or_else(|| data.cluster.clone());
            for (id, addr) in &data.broker_addrs {
                out.push(BrokerEntry {
                    cluster: cluster.clone(),
                    broker: name.clone(),
                    broker_id: *id,
                    addr: addr.clone(),
                    role: if *id == 0 { "master" } else { "slave" }.to_owned(),
                });
            }
        }
        Ok(out)
    }

    /// The route of `topic`, or [`AdminError::NotFound`].
    pub async fn route_data(&self, topic: &str) -> Result<TopicRouteData> {
        match self
            .routes
            .namesrv_call(GetRouteInfoByTopicRequest {
                topic: topic.to_owned(),
            })
            .await
        {
            Ok(r) => Ok(r.fields),
            Err(ClientError::Broker {
                code: ResponseCode::TopicNotExist,
                ..
            }) => Err(AdminError::NotFound(format!(
                "topic {topic} does not exist"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Every topic name the name servers know, sorted (`admin topic list`).
    pub async fn topic_names(&self) -> Result<Vec<String>> {
        let mut topics = self
            .routes
            .namesrv_call(GetAllTopicListFromNamesrvRequest {})
            .await?
            .fields
            .topics;
        topics.sort();
        Ok(topics)
    }

    /// The route of `topic`, one entry per broker (`admin topic route`).
    pub async fn topic_route(&self, topic: &str) -> Result<Vec<RouteEntry>> {
        let data = self.route_data(topic).await?;
        Ok(route_entries(topic, &data))
    }

    /// Min and max offsets of every queue (`admin topic status`), readable
    /// or not: a dead-letter topic is write-only (RocketMQ's perm for
    /// `%DLQ%` topics) and its queues are still shown.
    pub async fn topic_status(&self, topic: &str) -> Result<Vec<QueueStatus>> {
        let data = self.route_data(topic).await?;
        self.queue_status(topic, data).await
    }

    async fn queue_status(&self, topic: &str, data: TopicRouteData) -> Result<Vec<QueueStatus>> {
        let route = TopicRoute::new(topic, data);
        let mut queues: Vec<MessageQueue> = route
            .data
            .queue_datas
            .iter()
            .flat_map(|q| {
                (0..q.read_queue_nums.max(q.write_queue_nums)).map(|queue_id| MessageQueue {
                    topic: topic.to_owned(),
                    broker_name: q.broker_name.clone(),
                    queue_id,
                })
            })
            .collect();
        queues.sort();
        let mut out = Vec::new();
        for mq in &queues {
            let Some(addr) = route.any_addr(&mq.broker_name) else {
                continue;
            };
            let (max, min) = self.queue_offsets(mq, addr).await?;
            out.push(QueueStatus {
                topic: topic.to_owned(),
                broker: mq.broker_name.clone(),
                queue_id: mq.queue_id,
                min_offset: min,
                max_offset: max,
            });
        }
        Ok(out)
    }

    async fn queue_offsets(&self, mq: &MessageQueue, addr: &str) -> Result<(u64, u64)> {
        let max = self
            .call(
                &mq.broker_name,
                addr,
                "max offset",
                GetMaxOffsetRequest {
                    topic: mq.topic.clone(),
                    queue_id: mq.queue_id,
                },
            )
            .await?
            .offset;
        let min = self
            .call(
                &mq.broker_name,
                addr,
                "min offset",
                GetMinOffsetRequest {
                    topic: mq.topic.clone(),
                    queue_id: mq.queue_id,
                },
            )
            .await?
            .offset;
        Ok((max, min))
    }

    /// Every topic with its queue count and kept messages.
    pub async fn topics(&self) -> Result<Vec<TopicSummary>> {
        let mut out = Vec::new();
        for topic in self.topic_names().await? {
            // A topic deleted between the list and this look-up is skipped.
            let queues = match self.topic_status(&topic).await {
                Ok(q) => q,
                Err(AdminError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            out.push(TopicSummary {
                system: is_system_topic(&topic),
                queues: u32::try_from(queues.len()).unwrap_or(u32::MAX),
                messages: queues
                    .iter()
                    .map(|q| q.max_offset.saturating_sub(q.min_offset))
                    .sum(),
                topic,
            });
        }
        Ok(out)
    }

    /// A topic's route and queues.
    pub async fn topic(&self, topic: &str) -> Result<TopicDetail> {
        let data = self.route_data(topic).await?;
        let route = route_entries(topic, &data);
        let queues = self.queue_status(topic, data).await?;
        Ok(TopicDetail {
            topic: topic.to_owned(),
            route,
            queues,
        })
    }

    /// Creates (or updates) a topic on master brokers and waits (within the
    /// timeout) until the name servers route it (`admin topic create`).
    pub async fn create_topic(&self, a: &CreateTopic) -> Result<Vec<TopicCreated>> {
        let queues = a.queues.unwrap_or(if a.order { 1 } else { 8 });
        if !(1..=1024).contains(&queues) {
            return Err(AdminError::Invalid(format!(
                "queues must be 1..=1024, not {queues}"
            )));
        }
        actormq_protocol::validate_topic(&a.topic)
            .map_err(|e| AdminError::Invalid(e.to_string()))?;
        let info = self.cluster_info().await?;
        let mut targets: Vec<(String, String)> = Vec::new();
        for (name, data) in &info.broker_addr_table {
            let wanted = match (&a.broker, &a.cluster) {
                (Some(b), _) => b == name,
                (None, Some(c)) => info
                    .cluster_addr_table
                    .get(c)
                    .is_some_and(|names| names.contains(name)),
                (None, None) => true,
            };
            if let (true, Some(addr)) = (wanted, data.master_addr()) {
                targets.push((name.clone(), addr.to_owned()));
            }
        }
        if targets.is_empty() {
            return Err(AdminError::NotFound(match (&a.broker, &a.cluster) {
                (Some(b), _) => format!("no master broker named {b}"),
                (None, Some(c)) => format!("no master broker in cluster {c}"),
                (None, None) => "no master broker registered".to_owned(),
            }));
        }
        let mut out = Vec::new();
        for (name, addr) in &targets {
            let req = CreateTopicRequest {
                config: TopicConfig {
                    topic_name: a.topic.clone(),
                    read_queue_nums: queues,
                    write_queue_nums: queues,
                    perm: actormq_protocol::request::Perm::READ_WRITE,
                    topic_sys_flag: 0,
                    order: a.order,
                },
            };
            self.call(name, addr, "create", req).await?;
            out.push(TopicCreated {
                topic: a.topic.clone(),
                broker: name.clone(),
                addr: addr.clone(),
                queues,
                order: a.order,
                created: true,
            });
        }
        // The brokers re-register the topic; wait (within the timeout)
        // until the name servers route it, so a following look-up sees it.
        let until = Instant::now() + self.timeout;
        while Instant::now() < until {
            if let Ok(r) = self.route_data(&a.topic).await
                && targets
                    .iter()
                    .all(|(n, _)| r.queue_datas.iter().any(|q| &q.broker_name == n))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(out)
    }

    /// Deletes a topic from its brokers and every name server
    /// (`admin topic delete`).
    pub async fn delete_topic(&self, topic: &str) -> Result<TopicDeleted> {
        let data = self.route_data(topic).await?;
        let mut brokers = Vec::new();
        for b in &data.broker_datas {
            for addr in b.broker_addrs.values() {
                let req = DeleteTopicInBrokerRequest {
                    topic: topic.to_owned(),
                };
                self.call(&b.broker_name, addr, "delete", req).await?;
            }
            brokers.push(b.broker_name.clone());
        }
        let mut namesrvs = Vec::new();
        for ns in self.routes.namesrvs() {
            let req = DeleteTopicInNamesrvRequest {
                topic: topic.to_owned(),
                cluster_name: None,
            };
            match self
                .routes
                .connections()
                .call(&ns, req, Bytes::new(), self.timeout)
                .await
            {
                Ok(_)
                | Err(ClientError::Broker {
                    code: ResponseCode::TopicNotExist,
                    ..
                }) => namesrvs.push(ns),
                Err(source) => {
                    return Err(AdminError::Broker {
                        what: "delete",
                        broker: "name server".to_owned(),
                        addr: ns,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(TopicDeleted {
            topic: topic.to_owned(),
            deleted: true,
            brokers,
            namesrvs,
        })
    }

    /// Every consumer group config of every master broker, one entry per
    /// group and broker (`admin group list`).
    pub async fn group_configs(&self) -> Result<Vec<GroupConfigView>> {
        let mut out = Vec::new();
        for (name, addr) in self.masters().await? {
            let all = self
                .call(&name, &addr, "list", GetAllSubscriptionGroupRequest {})
                .await?;
            for cfg in all.subscription_group_table.values() {
                out.push(group_view(&name, cfg));
            }
        }
        Ok(out)
    }

    /// Creates or replaces a group's config on every master broker
    /// (`admin group create`).
    pub async fn create_group(&self, a: &CreateGroup) -> Result<Vec<GroupConfigView>> {
        if a.group.is_empty() {
            return Err(AdminError::Invalid("a group name is required".to_owned()));
        }
        if a.retry_max > 64 {
            return Err(AdminError::Invalid(format!(
                "retry_max must be 0..=64, not {}",
                a.retry_max
            )));
        }
        let config = SubscriptionGroupConfig {
            consume_message_orderly: a.orderly,
            retry_max_times: a.retry_max,
            ..SubscriptionGroupConfig::new(&a.group)
        };
        let mut out = Vec::new();
        for (name, addr) in self.masters().await? {
            let req = CreateSubscriptionGroupRequest {
                config: config.clone(),
            };
            self.call(&name, &addr, "create group", req).await?;
            let mut view = group_view(&name, &config);
            view.created = Some(true);
            out.push(view);
        }
        Ok(out)
    }

    /// Deletes a group's config from every master broker; not found when
    /// no broker has it (`admin group delete`).
    pub async fn delete_group(&self, group: &str) -> Result<GroupDeleted> {
        let mut deleted = Vec::new();
        for (name, addr) in self.masters().await? {
            let req = DeleteSubscriptionGroupRequest {
                group_name: group.to_owned(),
            };
            match self
                .routes
                .connections()
                .call(&addr, req, Bytes::new(), self.timeout)
                .await
            {
                Ok(_) => deleted.push(name),
                Err(ClientError::Broker {
                    code: ResponseCode::SubscriptionGroupNotExist,
                    ..
                }) => {}
                Err(source) => {
                    return Err(AdminError::Broker {
                        what: "delete group",
                        broker: name,
                        addr,
                        source: Box::new(source),
                    });
                }
            }
        }
        if deleted.is_empty() {
            return Err(AdminError::NotFound(format!(
                "subscription group {group} does not exist on any broker"
            )));
        }
        Ok(GroupDeleted {
            group: group.to_owned(),
            deleted: true,
            brokers: deleted,
        })
    }

    /// A group's progress on every queue of `topic`, or of every topic it
    /// committed on (`admin group progress`); returns the queues and the
    /// total lag.
    pub async fn group_progress(
        &self,
        group: &str,
        topic: Option<&str>,
    ) -> Result<(Vec<QueueProgress>, u64)> {
        let topics = match topic {
            Some(t) => vec![t.to_owned()],
            None => self.topic_names().await?,
        };
        let mut rows = Vec::new();
        for t in &topics {
            let data = match self.route_data(t).await {
                Ok(d) => d,
                Err(e) if topic.is_some() => return Err(e),
                Err(_) => continue,
            };
            let route = TopicRoute::new(t, data);
            let mut lines = Vec::new();
            let mut any_committed = false;
            for mq in &route.read_queues {
                let Some(addr) = route.master_addr(&mq.broker_name) else {
                    continue;
                };
                let broker_offset = self
                    .call(
                        &mq.broker_name,
                        addr,
                        "max offset",
                        GetMaxOffsetRequest {
                            topic: mq.topic.clone(),
                            queue_id: mq.queue_id,
                        },
                    )
                    .await?
                    .offset;
                let committed = match self
                    .routes
                    .connections()
                    .call(
                        addr,
                        QueryConsumerOffsetRequest {
                            consumer_group: group.to_owned(),
                            topic: mq.topic.clone(),
                            queue_id: mq.queue_id,
                        },
                        Bytes::new(),
                        self.timeout,
                    )
                    .await
                {
                    Ok(r) => Some(r.fields.offset),
                    Err(ClientError::Broker {
                        code: ResponseCode::QueryNotFound,
                        ..
                    }) => None,
                    Err(source) => {
                        return Err(AdminError::Broker {
                            what: "consumer offset",
                            broker: mq.broker_name.clone(),
                            addr: addr.to_owned(),
                            source: Box::new(source),
                        });
                    }
                };
                any_committed |= committed.is_some();
                let consumer_offset = committed.unwrap_or(0);
                lines.push(QueueProgress {
                    topic: mq.topic.clone(),
                    broker: mq.broker_name.clone(),
                    queue_id: mq.queue_id,
                    broker_offset,
                    consumer_offset,
                    lag: broker_offset.saturating_sub(consumer_offset),
                });
            }
            if !any_committed && topic.is_none() {
                continue;
            }
            rows.extend(lines);
        }
        let total = rows.iter().map(|r| r.lag).sum();
        Ok((rows, total))
    }

    /// A consumer group's clients online over every master broker (the
    /// first broker's answer per client id), sorted by client id
    /// (`admin connections -g`).
    pub async fn group_clients(&self, group: &str) -> Result<Vec<ClientConnection>> {
        self.clients_online(|| GetConsumerConnectionListRequest {
            consumer_group: group.to_owned(),
        })
        .await
    }

    /// A producer group's clients online over every master broker, sorted
    /// by client id (`admin connections --producer-group`).
    pub async fn producer_clients(&self, group: &str) -> Result<Vec<ClientConnection>> {
        self.clients_online(|| GetProducerConnectionListRequest {
            producer_group: group.to_owned(),
        })
        .await
    }

    /// The clients each master answers `request()` with, the first
    /// broker's answer per client id, sorted by client id.
    async fn clients_online<R>(&self, request: impl Fn() -> R) -> Result<Vec<ClientConnection>>
    where
        R: Rpc<Response = ConnectionList>,
    {
        let mut by_id = BTreeMap::new();
        for (name, addr) in self.masters().await? {
            for c in self
                .call(&name, &addr, "connections", request())
                .await?
                .connections
            {
                by_id.entry(c.client_id.clone()).or_insert(c);
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// Every broker address the name servers list, `(name, id, addr)`
    /// sorted, only those named `broker` when given; not found when none
    /// is.
    pub async fn brokers(&self, broker: Option<&str>) -> Result<Vec<(String, u64, String)>> {
        let info = self.cluster_info().await?;
        let mut out: Vec<(String, u64, String)> = info
            .broker_addr_table
            .iter()
            .filter(|(name, _)| broker.is_none_or(|b| b == name.as_str()))
            .flat_map(|(name, d)| {
                d.broker_addrs
                    .iter()
                    .map(move |(id, a)| (name.clone(), *id, a.clone()))
            })
            .collect();
        out.sort();
        if out.is_empty() {
            return Err(AdminError::NotFound(match broker {
                Some(b) => format!("no broker named {b} is registered"),
                None => "no broker registered".to_owned(),
            }));
        }
        Ok(out)
    }

    /// The runtime status of every broker (or of those named `broker`)
    /// (`admin broker status`).
    pub async fn broker_status(&self, broker: Option<&str>) -> Result<Vec<BrokerStatusView>> {
        let mut out = Vec::new();
        for (name, id, addr) in self.brokers(broker).await? {
            let info = self
                .call(&name, &addr, "status", GetBrokerRuntimeInfoRequest {})
                .await?;
            out.push(BrokerStatusView {
                broker: name,
                broker_id: id,
                addr,
                info,
            });
        }
        Ok(out)
    }

    /// The effective configuration of every broker (or of those named
    /// `broker`) (`admin broker config`).
    pub async fn broker_config(&self, broker: Option<&str>) -> Result<Vec<BrokerConfigView>> {
        let mut out = Vec::new();
        for (name, id, addr) in self.brokers(broker).await? {
            let config = self
                .call(&name, &addr, "config", GetBrokerConfigRequest {})
                .await?
                .config;
            out.push(BrokerConfigView {
                broker: name,
                broker_id: id,
                addr,
                config,
            });
        }
        Ok(out)
    }

    /// Every consumer group (over every master broker) with its clients
    /// online and total lag.
    pub async fn groups(&self) -> Result<Vec<GroupSummary>> {
        let mut by_name: BTreeMap<String, GroupConfigView> = BTreeMap::new();
        for g in self.group_configs().await? {
            by_name.entry(g.group.clone()).or_insert(g);
        }
        let mut out = Vec::new();
        for (name, cfg) in by_name {
            let consumers = self.group_clients(&name).await?.len();
            let (_, total_lag) = self.group_progress(&name, None).await?;
            out.push(GroupSummary {
                group: name,
                orderly: cfg.orderly,
                retry_max: cfg.retry_max,
                consumers,
                total_lag,
            });
        }
        Ok(out)
    }

    /// A group's progress and clients; not found when no broker has its
    /// config and no client of it is online.
    pub async fn group(&self, group: &str) -> Result<GroupDetail> {
        let known = self.group_configs().await?.iter().any(|g| g.group == group);
        let connections = self.group_clients(group).await?;
        let (progress, total_lag) = self.group_progress(group, None).await?;
        if !known && connections.is_empty() && progress.is_empty() {
            return Err(AdminError::NotFound(format!(
                "consumer group {group} does not exist"
            )));
        }
        Ok(GroupDetail {
            group: group.to_owned(),
            progress,
            total_lag,
            connections,
        })
    }

    /// The message with id `id` (`admin msg get`).
    pub async fn message(&self, id: &str) -> Result<MessageView> {
        match self.query.by_id(id).await {
            Ok(Some(m)) => Ok(MessageView::from(&m)),
            Ok(None) => Err(AdminError::NotFound(format!("no message with id {id}"))),
            Err(ClientError::Invalid(e)) => Err(AdminError::Invalid(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// The messages of `topic` with key `key` stored within
    /// `begin_ms..=end_ms` (`admin msg query`).
    pub async fn messages_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: Option<u64>,
        end_ms: Option<u64>,
    ) -> Result<Vec<MessageView>> {
        self.route_data(topic).await?;
        match self
            .query
            .by_key(
                topic,
                key,
                begin_ms.unwrap_or(0),
                end_ms.unwrap_or(u64::MAX),
                DEFAULT_MAX_PER_KEY,
            )
            .await
        {
            Ok(found) => Ok(found.iter().map(MessageView::from).collect()),
            Err(ClientError::Invalid(e)) => Err(AdminError::Invalid(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` dead letters of `group` (its `%DLQ%` topic, from each
    /// queue's first kept offset); none when it has no DLQ topic.
    pub async fn dead_letters(&self, group: &str, limit: usize) -> Result<DeadLetters> {
        let topic = system_topic::dlq_topic(group);
        let mut messages = Vec::new();
        let queues = match self.topic_status(&topic).await {
            Ok(q) => q,
            Err(AdminError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        'queues: for q in queues {
            let mq = MessageQueue {
                topic: q.topic.clone(),
                broker_name: q.broker.clone(),
                queue_id: q.queue_id,
            };
            let mut offset = q.min_offset;
            while offset < q.max_offset {
                if messages.len() >= limit {
                    break 'queues;
                }
                let want = u32::try_from(limit - messages.len()).unwrap_or(u32::MAX);
                let batch = self.query.from_offset(&mq, offset, want).await?;
                let Some(last) = batch.last() else { break };
                offset = last.queue_offset + 1;
                messages.extend(
                    batch
                        .iter()
                        .take(limit - messages.len())
                        .map(MessageView::from),
                );
            }
        }
        Ok(DeadLetters {
            group: group.to_owned(),
            messages,
        })
    }

    /// Sends up to `count` (all when `None`) dead letters of `group` back to
    /// the topics they failed on (`admin dlq resend`).
    pub async fn resend_dead_letters(
        &self,
        group: &str,
        count: Option<u64>,
    ) -> Result<ResendSummary> {
        let mut left = count.unwrap_or(u64::MAX);
        let (mut resent, mut remaining) = (0u64, 0u64);
        let mut messages = Vec::new();
        for (name, addr) in self.masters().await? {
            if left == 0 {
                break;
            }
            let req = ResendDeadLettersRequest {
                consumer_group: group.to_owned(),
                // 0 asks for all.
                max_count: u32::try_from(left).unwrap_or(u32::MAX),
            };
            let reply = self.call(&name, &addr, "resend", req).await?;
            for m in &reply.resent {
                messages.push(ResentView {
                    msg_id: m.msg_id.clone(),
                    origin_msg_id: m.origin_msg_id.clone(),
                    topic: m.topic.clone(),
                    broker: name.clone(),
                    queue_id: m.queue_id,
                    queue_offset: m.queue_offset,
                });
            }
            let n = reply.resent.len() as u64;
            resent += n;
            remaining += reply.remaining;
            left = left.saturating_sub(n.max(1));
        }
        Ok(ResendSummary {
            messages,
            resent,
            remaining,
        })
    }
}

fn route_entries(topic: &str, data: &TopicRouteData) -> Vec<RouteEntry> {
    data.queue_datas
        .iter()
        .map(|q| {
            let broker = data
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name);
            RouteEntry {
                topic: topic.to_owned(),
                cluster: broker.map(|b| b.cluster.clone()).unwrap_or_default(),
                broker: q.broker_name.clone(),
                master: broker
                    .and_then(|b| b.master_addr())
                    .unwrap_or_default()
                    .to_owned(),
                addrs: broker
                    .map(|b| {
                        b.broker_addrs
                            .iter()
                            .map(|(id, a)| (id.to_string(), a.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
                read_queues: q.read_queue_nums,
                write_queues: q.write_queue_nums,
                perm: u32::from(q.perm.0),
                order: data.order_topic_conf.is_some(),
            }
        })
        .collect()
}

fn group_view(broker: &str, cfg: &SubscriptionGroupConfig) -> GroupConfigView {
    use actormq_protocol::request::ConsumeFromWhere;
    GroupConfigView {
        group: cfg.group_name.clone(),
        broker: broker.to_owned(),
        consume_enable: cfg.consume_enable,
        consume_from: match cfg.consume_from_where {
            ConsumeFromWhere::LastOffset => "last",
            ConsumeFromWhere::FirstOffset => "first",
            ConsumeFromWhere::Timestamp => "timestamp",
        }
        .to_owned(),
        consume_timestamp_ms: cfg.consume_timestamp_ms,
        broadcast_enable: cfg.consume_broadcast_enable,
        orderly: cfg.consume_message_orderly,
        retry_max: cfg.retry_max_times,
        retry_first_delay_level: cfg.retry_policy.first_delay_level,
        created: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_topics_are_recognised() {
        for t in [
            "%RETRY%g",
            "%DLQ%g",
            "RMQ_SYS_TRANS_HALF_TOPIC",
            "SCHEDULE_TOPIC_XXXX",
            "rmq_sys_wheel_timer",
        ] {
            assert!(is_system_topic(t), "{t}");
        }
        assert!(!is_system_topic("orders"));
    }

    #[test]
    fn summary_hides_system_false() {
        let s = TopicSummary {
            topic: "t".into(),
            queues: 4,
            messages: 3,
            system: false,
        };
        let v = serde_json_like(&s);
        assert!(!v.contains("system"), "{v}");
    }

    fn serde_json_like<T: Serialize>(v: &T) -> String {
        // rmp's JSON-free check: the field names the serializer emits.
        let bytes = rmp_serde::to_vec_named(v).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

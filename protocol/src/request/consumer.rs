//! Consumer groups: `GET_CONSUMER_LIST_BY_GROUP` (38),
//! `NOTIFY_CONSUMER_IDS_CHANGED` (40), `LOCK_BATCH_MQ` (41),
//! `UNLOCK_BATCH_MQ` (42), `CONSUMER_SEND_MSG_BACK` (36).

use serde::{Deserialize, Serialize};

use crate::message::MessageQueue;

/// Client ids of the live members of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetConsumerListByGroupRequest {
    /// Consumer group.
    pub consumer_group: String,
}

/// Reply to [`GetConsumerListByGroupRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetConsumerListByGroupResponse {
    /// Client ids, sorted.
    pub consumer_ids: Vec<String>,
}

/// Broker → consumer (oneway): the group's membership changed; rebalance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyConsumerIdsChangedRequest {
    /// Consumer group.
    pub consumer_group: String,
}

/// Lock queues for orderly consumption (expiry 60 s, renewed every 20 s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBatchMqRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Client id of the locker.
    pub client_id: String,
    /// Queues to lock.
    pub mq_set: Vec<MessageQueue>,
}

/// Reply to [`LockBatchMqRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBatchMqResponse {
    /// The queues now locked by this client.
    pub lock_ok_mq_set: Vec<MessageQueue>,
}

/// Release queue locks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockBatchMqRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Client id of the locker.
    pub client_id: String,
    /// Queues to unlock.
    pub mq_set: Vec<MessageQueue>,
}

/// A consumer returns a message it failed to consume: the broker stores it
/// in `%RETRY%<group>` with delay level `delay_level` (0 = the group's
/// retry policy: `first_delay_level + reconsume times`), or in
/// `%DLQ%<group>` once its reconsume times reach the max. Reply:
/// [`Empty`](super::Empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerSendMsgBackRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Commit log offset of the failed message.
    pub commit_log_offset: u64,
    /// Delay level for the retry (0 = default).
    #[serde(default)]
    pub delay_level: u8,
    /// Message id of the failed message.
    pub origin_msg_id: String,
    /// Topic it was consumed from.
    pub origin_topic: String,
    /// Retries before the dead-letter queue; `None`: the group's
    /// `retry_max_times` (RocketMQ default 16).
    #[serde(default)]
    pub max_reconsume_times: Option<u32>,
    /// Deliveries the consumer counted beyond the stored record's (an
    /// orderly consumer retries locally): the broker uses the larger.
    #[serde(default)]
    pub reconsume_times: Option<u32>,
    /// More failed messages of the group returned with this one, on the
    /// same terms (actormq's: one request for a listener call's batch;
    /// stored together, answered together).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<SendBackEntry>,
}

impl ConsumerSendMsgBackRequest {
    /// This message and each of [`more`](Self::more) as a request of its
    /// own.
    pub fn each(&self) -> Vec<ConsumerSendMsgBackRequest> {
        let one = ConsumerSendMsgBackRequest {
            more: Vec::new(),
            ..self.clone()
        };
        let mut out = Vec::with_capacity(1 + self.more.len());
        for e in &self.more {
            out.push(ConsumerSendMsgBackRequest {
                commit_log_offset: e.commit_log_offset,
                origin_msg_id: e.origin_msg_id.clone(),
                origin_topic: e.origin_topic.clone(),
                reconsume_times: e.reconsume_times,
                ..one.clone()
            });
        }
        out.insert(0, one);
        out
    }
}

/// One more message of a [`ConsumerSendMsgBackRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendBackEntry {
    /// Commit log offset of the failed message.
    pub commit_log_offset: u64,
    /// Message id of the failed message.
    pub origin_msg_id: String,
    /// Topic it was consumed from.
    pub origin_topic: String,
    /// As [`ConsumerSendMsgBackRequest::reconsume_times`].
    #[serde(default)]
    pub reconsume_times: Option<u32>,
}

/// Put a group's dead letters back on the topics they first failed on
/// (actormq's; `actormq admin dlq resend`). The broker resends from the
/// group's offset on its `%DLQ%<group>` topic and commits past what it
/// resent, so a second call resends only newer dead letters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendDeadLettersRequest {
    /// Consumer group.
    pub consumer_group: String,
    /// Most dead letters to resend (0: all).
    #[serde(default)]
    pub max_count: u32,
}

/// One resent dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResentMessage {
    /// The new message's id.
    pub msg_id: String,
    /// The id of the message that first failed.
    pub origin_msg_id: String,
    /// Where it went.
    pub topic: String,
    /// Queue.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
}

/// Reply to [`ResendDeadLettersRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendDeadLettersResponse {
    /// What was resent, in dead-letter order.
    pub resent: Vec<ResentMessage>,
    /// Dead letters still waiting (beyond `max_count`).
    pub remaining: u64,
}

/// The clients online in a consumer group
/// (`GET_CONSUMER_CONNECTION_LIST`, 203).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetConsumerConnectionListRequest {
    /// Consumer group.
    pub consumer_group: String,
}

/// The clients online in a producer group
/// (`GET_PRODUCER_CONNECTION_LIST`, 204).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetProducerConnectionListRequest {
    /// Producer group.
    pub producer_group: String,
}

/// One client connected to a broker, as its heartbeats describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConnection {
    /// Client id.
    pub client_id: String,
    /// The address its heartbeats came from ("" when not over TCP).
    pub addr: String,
    /// Its language (`RUST` for actormq's SDK; "" when it does not say).
    pub language: String,
    /// Its version ("" when it does not say).
    pub version: String,
}

/// Reply to the connection-list requests: sorted by client id, empty when
/// no client of the group is online.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionList {
    /// The clients.
    pub connections: Vec<ClientConnection>,
}

//! Plain decisions of the gRPC front door, no runtime in them: a gRPC
//! message to the broker's typed send, a topic's config to route entries,
//! a client's settings to the completed settings the broker answers with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use actormq_actors::broker::error_map::{grpc, grpc_code};
use actormq_protocol::MessageId;
use actormq_protocol::ResponseCode;
use actormq_protocol::StoredMessage;
use actormq_protocol::message::{PROPERTY_POP_CK, PROPERTY_UNIQUE_KEY};
use actormq_protocol::request::consumer::ConsumerSendMsgBackRequest;
use actormq_protocol::request::pop::{
    AckMessageRequest, BatchAckEntry, ChangeInvisibleTimeRequest, PopMessageRequest, ReceiptHandle,
};
use actormq_protocol::request::send::SendMessageRequest;
use actormq_protocol::request::topic::TopicConfig;
use actormq_protocol::request::transaction::{EndTransactionRequest, TransactionDecision};
use actormq_protocol::system_topic::{
    PROPERTY_ORIGIN_MESSAGE_ID, PROPERTY_PRODUCER_GROUP, PROPERTY_REAL_QUEUE_ID,
    PROPERTY_REAL_TOPIC, PROPERTY_RETRY_TOPIC, PROPERTY_TRANSACTION_CHECK_TIMES,
    PROPERTY_TRANSACTION_PREPARED,
};
use bytes::Bytes;

use crate::pb;

/// Where a FIFO message's group is kept (RocketMQ's `__SHARDINGKEY`).
pub const PROPERTY_SHARDING_KEY: &str = "__SHARDINGKEY";

/// The queue of message group `group` among `write_queues` (FNV-1a: the
/// same group always lands in the same queue).
pub fn group_queue(group: &str, write_queues: u32) -> u32 {
    let hash = group.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    u32::try_from(hash % u64::from(write_queues.max(1))).unwrap_or(0)
}

/// The producer group recorded for sends over gRPC: RocketMQ 5 producers
/// have no group, so, as RocketMQ's proxy does, the topic is the group. A
/// transaction check for a half message of `topic` goes to a live gRPC
/// producer that publishes `topic` (its Telemetry settings name it).
pub fn producer_group(topic: &str) -> String {
    topic.to_string()
}

/// A subscription of a consumer's settings as the broker's group table
/// keeps it (`admin connections`, the heartbeat's filter check): its
/// topic, and its expression (`*` when none) with the expression's type.
pub fn subscription_data(
    entry: &pb::SubscriptionEntry,
) -> actormq_protocol::request::heartbeat::SubscriptionData {
    let (sub_string, expression_type) = filter(entry.expression.as_ref())
        .unwrap_or_else(|| ("*".to_string(), actormq_protocol::filter::TYPE_TAG));
    actormq_protocol::request::heartbeat::SubscriptionData {
        topic: entry
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        sub_string,
        expression_type: expression_type.to_string(),
        ..Default::default()
    }
}

/// A filter expression and its type (`TAG` or `SQL92`); `None` when
/// there is none.
fn filter(f: Option<&pb::FilterExpression>) -> Option<(String, &'static str)> {
    let f = f.filter(|f| !f.expression.is_empty())?;
    let kind = match pb::FilterType::try_from(f.r#type).unwrap_or_default() {
        pb::FilterType::Sql => actormq_protocol::filter::TYPE_SQL92,
        _ => actormq_protocol::filter::TYPE_TAG,
    };
    Some((f.expression.clone(), kind))
}

/// A `Status` with `code` and `message`.
pub fn status(code: i32, message: impl Into<String>) -> pb::Status {
    pb::Status {
        code,
        message: message.into(),
    }
}

/// `Status{OK}`.
pub fn ok() -> pb::Status {
    status(grpc::OK, "OK")
}

/// The status of an actormq response code (through
/// [`grpc_code`], the one table) with `message`.
pub fn status_of(code: ResponseCode, message: impl Into<String>) -> pb::Status {
    status(grpc_code(code), message)
}

/// `Status{NOT_IMPLEMENTED}` for an RPC or a feature this version does not
/// serve over gRPC yet.
pub fn not_implemented(what: &str) -> pb::Status {
    status(
        grpc::NOT_IMPLEMENTED,
        format!("{what} is not implemented by this actormq version"),
    )
}

/// Why a message cannot be sent as it is (the entry's status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The gRPC status code.
    pub code: i32,
    /// Detail for the client.
    pub message: String,
}

impl Refusal {
    fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// As a `Status`.
    pub fn status(&self) -> pb::Status {
        status(self.code, self.message.clone())
    }
}

/// A gRPC message as the broker's typed send: the request, its body, and
/// the client's message id (kept as the `UNIQ_KEY` property, echoed in the
/// result). `write_queues` is the topic's write queue count: a queue id
/// the client left unset or out of range is folded into it.
pub fn send_request(
    msg: pb::Message,
    write_queues: u32,
    now_ms: u64,
) -> Result<(SendMessageRequest, Bytes, String), Refusal> {
    let topic = msg.topic.map(|t| t.name).unwrap_or_default();
    if topic.is_empty() {
        return Err(Refusal::new(grpc::ILLEGAL_TOPIC, "message without topic"));
    }
    let sys = msg.system_properties.unwrap_or_default();
    let message_type = pb::MessageType::try_from(sys.message_type).unwrap_or_default();
    match message_type {
        pb::MessageType::Normal
        | pb::MessageType::Unspecified
        | pb::MessageType::Delay
        | pb::MessageType::Fifo
        | pb::MessageType::Transaction => {}
        other => {
            return Err(Refusal::new(
                grpc::NOT_IMPLEMENTED,
                format!(
                    "{} messages are not implemented over gRPC by this actormq version",
                    other.as_str_name()
                ),
            ));
        }
    }
    let message_group = sys.message_group.clone().filter(|g| !g.is_empty());
    if message_type == pb::MessageType::Fifo && message_group.is_none() {
        return Err(Refusal::new(
            grpc::ILLEGAL_MESSAGE_GROUP,
            "a FIFO message needs a message group",
        ));
    }
    // DELAY: delivered at the client's delivery timestamp (the broker's
    // timer, as a native send with a delivery time).
    let deliver_at_ms = sys.delivery_timestamp.as_ref().map(timestamp_ms);
    if message_type == pb::MessageType::Delay && deliver_at_ms.is_none() {
        return Err(Refusal::new(
            grpc::ILLEGAL_DELIVERY_TIME,
            "a DELAY message needs a delivery timestamp",
        ));
    }
    if sys.message_id.is_empty() {
        return Err(Refusal::new(
            grpc::BAD_REQUEST,
            "message without message_id",
        ));
    }
    let mut properties: BTreeMap<String, String> = msg.user_properties.into_iter().collect();
    properties.insert(PROPERTY_UNIQUE_KEY.to_string(), sys.message_id.clone());
    if message_type == pb::MessageType::Transaction {
        // A half message, as the native transactional producer sends it.
        properties.insert(PROPERTY_TRANSACTION_PREPARED.to_string(), "true".into());
        properties.insert(PROPERTY_PRODUCER_GROUP.to_string(), producer_group(&topic));
    }
    let keys = sys.keys.join(" ");
    let born_timestamp_ms = sys.born_timestamp.as_ref().map_or(now_ms, timestamp_ms);
    // FIFO: one queue per message group, so a group keeps its order.
    let queue_id = match &message_group {
        Some(g) => group_queue(g, write_queues),
        None => u32::try_from(sys.queue_id).unwrap_or(0) % write_queues.max(1),
    };
    if let Some(g) = message_group {
        properties.insert(PROPERTY_SHARDING_KEY.to_string(), g);
    }
    let req = SendMessageRequest {
        producer_group: producer_group(&topic),
        topic,
        queue_id,
        born_timestamp_ms,
        tags: sys.tag.filter(|t| !t.is_empty()),
        keys: (!keys.is_empty()).then_some(keys),
        properties,
        deliver_at_ms,
        ..SendMessageRequest::default()
    };
    Ok((req, Bytes::from(msg.body), sys.message_id))
}

/// `Endpoints` of one socket address.
pub fn endpoints(addr: SocketAddr) -> pb::Endpoints {
    pb::Endpoints {
        scheme: if addr.is_ipv4() {
            pb::AddressScheme::IPv4
        } else {
            pb::AddressScheme::IPv6
        } as i32,
        addresses: vec![pb::Address {
            host: addr.ip().to_string(),
            port: i32::from(addr.port()),
        }],
    }
}

/// The route of `cfg` served by this node: one queue per queue id (the
/// larger of the read and write counts), each with its permission, on
/// broker `broker_name` (id 0, the master) at `endpoint` (the node's gRPC
/// endpoint). NORMAL, FIFO, DELAY and TRANSACTION messages are accepted
/// ([`ACCEPTED_TYPES`]).
pub fn route(cfg: &TopicConfig, broker_name: &str, endpoint: SocketAddr) -> Vec<pb::MessageQueue> {
    let broker = pb::Broker {
        name: broker_name.to_string(),
        id: 0,
        endpoints: Some(endpoints(endpoint)),
    };
    let n = cfg.read_queue_nums.max(cfg.write_queue_nums);
    (0..n)
        .map(|id| {
            let read = id < cfg.read_queue_nums && cfg.perm.is_readable();
            let write = id < cfg.write_queue_nums && cfg.perm.is_writable();
            let permission = match (read, write) {
                (true, true) => pb::Permission::ReadWrite,
                (true, false) => pb::Permission::Read,
                (false, true) => pb::Permission::Write,
                (false, false) => pb::Permission::None,
            };
            pb::MessageQueue {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: cfg.topic_name.clone(),
                }),
                id: i32::try_from(id).unwrap_or(i32::MAX),
                permission: permission as i32,
                broker: Some(broker.clone()),
                accept_message_types: ACCEPTED_TYPES.iter().map(|t| *t as i32).collect(),
            }
        })
        .collect()
}

/// What a push consumer of `cfg` is assigned (`QueryAssignment`): as
/// RocketMQ's proxy does, one entry per broker with readable queues, queue
/// id -1 (the pop takes from any queue); for a FIFO group one entry per
/// readable queue.
pub fn assignments(
    cfg: &TopicConfig,
    broker_name: &str,
    endpoint: SocketAddr,
    fifo: bool,
) -> Vec<pb::Assignment> {
    if !cfg.perm.is_readable() || cfg.read_queue_nums == 0 {
        return Vec::new();
    }
    if fifo {
        return route(cfg, broker_name, endpoint)
            .into_iter()
            .filter(|q| {
                q.permission == pb::Permission::Read as i32
                    || q.permission == pb::Permission::ReadWrite as i32
            })
            .map(|q| pb::Assignment {
                message_queue: Some(q),
            })
            .collect();
    }
    let mut queue = route(cfg, broker_name, endpoint)
        .into_iter()
        .next()
        .unwrap_or_default();
    queue.id = -1;
    queue.permission = pb::Permission::ReadWrite as i32;
    vec![pb::Assignment {
        message_queue: Some(queue),
    }]
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The broker's answer to a client's `Settings` (Telemetry): the client's
/// settings completed with an exponential backoff policy, the broker's
/// max message size as `publishing.max_body_size`, subscription defaults,
/// and metrics off. Clients depend on each: without a backoff policy the
/// Node.js producer crashes, with `max_body_size` 0 every send is refused.
/// `long_polling_ms` is the broker's long-polling cap (a subscription's
/// `long_polling_timeout` when the client names none).
/// `fifo` is the subscription group's `consume_message_orderly`.
pub fn complete_settings(
    mut s: pb::Settings,
    max_body_size: usize,
    long_polling_ms: u64,
    fifo: bool,
) -> pb::Settings {
    s.backoff_policy = Some(pb::RetryPolicy {
        max_attempts: 16,
        strategy: Some(pb::retry_policy::Strategy::ExponentialBackoff(
            pb::ExponentialBackoff {
                initial: Some(duration(Duration::from_millis(10))),
                max: Some(duration(Duration::from_secs(1))),
                multiplier: 2.0,
            },
        )),
    });
    if s.request_timeout.is_none() {
        s.request_timeout = Some(duration(Duration::from_secs(3)));
    }
    s.metric = Some(pb::Metric {
        on: false,
        endpoints: None,
    });
    match &mut s.pub_sub {
        Some(pb::settings::PubSub::Publishing(p)) => {
            p.max_body_size = i32::try_from(max_body_size).unwrap_or(i32::MAX);
        }
        Some(pb::settings::PubSub::Subscription(sub)) => {
            sub.fifo = Some(fifo);
            sub.receive_batch_size = Some(sub.receive_batch_size.unwrap_or(32));
            if sub.long_polling_timeout.is_none() {
                sub.long_polling_timeout = Some(duration(Duration::from_millis(long_polling_ms)));
            }
        }
        None => {}
    }
    s
}

/// The transaction id a gRPC client gets for a stored half message: what
/// ends it later (`EndTransaction` names only ids), the broker's message
/// id (it holds the commit-log offset) and the half message's queue
/// offset, as `<msg id>:<queue offset>`.
pub fn transaction_id(msg_id: &str, queue_offset: u64) -> String {
    format!("{msg_id}:{queue_offset}")
}

/// An `EndTransaction` as the broker's end of transaction: commit or
/// rollback of the half message its transaction id names.
pub fn end_transaction_request(
    req: &pb::EndTransactionRequest,
) -> Result<EndTransactionRequest, Refusal> {
    let bad = || {
        Refusal::new(
            grpc::INVALID_TRANSACTION_ID,
            format!("malformed transaction id {:?}", req.transaction_id),
        )
    };
    let (msg_id, queue_offset) = req.transaction_id.split_once(':').ok_or_else(bad)?;
    let queue_offset: u64 = queue_offset.parse().map_err(|_| bad())?;
    let id = MessageId::decode(msg_id).map_err(|_| bad())?;
    let topic = req.topic.as_ref().map(|t| t.name.as_str()).unwrap_or("");
    if topic.is_empty() {
        return Err(Refusal::new(
            grpc::ILLEGAL_TOPIC,
            "end of transaction without topic",
        ));
    }
    let decision = match pb::TransactionResolution::try_from(req.resolution).unwrap_or_default() {
        pb::TransactionResolution::Commit => TransactionDecision::Commit,
        pb::TransactionResolution::Rollback => TransactionDecision::Rollback,
        pb::TransactionResolution::Unspecified => TransactionDecision::Unknown,
    };
    Ok(EndTransactionRequest {
        producer_group: producer_group(topic),
        tran_state_table_offset: queue_offset,
        commit_log_offset: id.commit_log_offset,
        decision,
        from_transaction_check: pb::TransactionSource::try_from(req.source).unwrap_or_default()
            == pb::TransactionSource::SourceServerCheck,
        msg_id: msg_id.to_string(),
        transaction_id: Some(req.message_id.clone()),
    })
}

/// A `Timestamp` as ms since the epoch (before it: 0).
pub fn timestamp_ms(t: &prost_types::Timestamp) -> u64 {
    let secs = u64::try_from(t.seconds).unwrap_or(0);
    let nanos = u64::try_from(t.nanos).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// What a route accepts over gRPC so far.
pub const ACCEPTED_TYPES: [pb::MessageType; 4] = [
    pb::MessageType::Normal,
    pb::MessageType::Fifo,
    pb::MessageType::Delay,
    pb::MessageType::Transaction,
];

/// A `Duration` as milliseconds (negative: 0).
pub fn millis(d: &prost_types::Duration) -> u64 {
    let secs = u64::try_from(d.seconds).unwrap_or(0);
    let nanos = u64::try_from(d.nanos).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// ms since the epoch as a `Timestamp`.
pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// Default invisible duration of a receive that names none (RocketMQ's
/// clients always name one).
pub const DEFAULT_INVISIBLE_MS: u64 = 30_000;

/// Most messages one receive returns (RocketMQ's proxy caps at 32).
pub const MAX_RECEIVE_BATCH: u32 = 32;

/// A `ReceiveMessage` as the broker's pop: the group, the topic of the
/// message queue (any of its queues on this broker), the batch size (1 to
/// [`MAX_RECEIVE_BATCH`]), the invisible duration, the long-polling time
/// (capped at `max_poll_ms`), the filter.
/// `fifo`: the group consumes in order (its subscription group's
/// `consume_message_orderly`): an orderly pop, one delivery in flight per
/// queue, and a queue id the client names (>= 0) is popped alone.
pub fn pop_request(
    req: &pb::ReceiveMessageRequest,
    fifo: bool,
    max_poll_ms: u64,
    now_ms: u64,
) -> Result<PopMessageRequest, Refusal> {
    let group = req
        .group
        .as_ref()
        .map(|g| g.name.clone())
        .unwrap_or_default();
    if group.is_empty() {
        return Err(Refusal::new(
            grpc::ILLEGAL_CONSUMER_GROUP,
            "receive without consumer group",
        ));
    }
    let topic = req
        .message_queue
        .as_ref()
        .and_then(|q| q.topic.as_ref())
        .map(|t| t.name.clone())
        .unwrap_or_default();
    if topic.is_empty() {
        return Err(Refusal::new(grpc::ILLEGAL_TOPIC, "receive without topic"));
    }
    let (expression, expression_type) = match filter(req.filter_expression.as_ref()) {
        Some((e, kind)) => (Some(e), Some(kind.to_string())),
        None => (None, None),
    };
    let invisible_time_ms = req
        .invisible_duration
        .as_ref()
        .map_or(DEFAULT_INVISIBLE_MS, millis)
        .max(1);
    let poll_time_ms = req
        .long_polling_timeout
        .as_ref()
        .map_or(0, millis)
        .min(max_poll_ms);
    Ok(PopMessageRequest {
        consumer_group: group,
        topic,
        // A FIFO push consumer receives per assigned queue; any other
        // receive takes from any queue, as RocketMQ's proxy does.
        queue_id: req
            .message_queue
            .as_ref()
            .filter(|_| fifo)
            .and_then(|q| u32::try_from(q.id).ok()),
        max_msg_nums: u32::try_from(req.batch_size)
            .unwrap_or(1)
            .clamp(1, MAX_RECEIVE_BATCH),
        invisible_time_ms,
        poll_time_ms,
        born_time_ms: now_ms,
        expression,
        expression_type,
        order: fifo,
    })
}

/// MD5 of `body` as RocketMQ's clients check it (upper-case hex).
pub fn md5_hex(body: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Properties the broker keeps for itself, never shown as a delivered
/// message's user properties.
const BROKER_PROPERTIES: [&str; 7] = [
    PROPERTY_RETRY_TOPIC,
    PROPERTY_ORIGIN_MESSAGE_ID,
    PROPERTY_REAL_TOPIC,
    PROPERTY_REAL_QUEUE_ID,
    PROPERTY_PRODUCER_GROUP,
    PROPERTY_TRANSACTION_PREPARED,
    PROPERTY_TRANSACTION_CHECK_TIMES,
];

/// A popped message as a delivered gRPC message: the client's id (its
/// `UNIQ_KEY`, else the broker's message id), tag, keys, user properties,
/// the receipt handle (`POP_CK`), `delivery_attempt` (from 1), queue,
/// offset, timestamps, hosts and an MD5 body digest.
pub fn delivered(m: StoredMessage) -> pb::Message {
    let message_id = m
        .message
        .unique_key()
        .map_or_else(|| m.msg_id().encode(), str::to_string);
    let mut props = m.message.properties;
    let receipt = props.remove(PROPERTY_POP_CK);
    props.remove(PROPERTY_UNIQUE_KEY);
    // The broker's bookkeeping (retries, transactions) is not the user's,
    // as RocketMQ's proxy leaves its system properties out.
    props.retain(|k, _| {
        actormq_protocol::records::is_user_property(k) && !BROKER_PROPERTIES.contains(&k.as_str())
    });
    let message_group = props.remove(PROPERTY_SHARDING_KEY);
    let message_type = if message_group.is_some() {
        pb::MessageType::Fifo
    } else {
        pb::MessageType::Normal
    };
    let keys = m
        .message
        .keys
        .as_deref()
        .map(|k| {
            k.split(' ')
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    pb::Message {
        topic: Some(pb::Resource {
            resource_namespace: String::new(),
            name: m.message.topic,
        }),
        system_properties: Some(pb::SystemProperties {
            tag: m.message.tags,
            keys,
            message_id,
            body_digest: Some(pb::Digest {
                r#type: pb::DigestType::Md5 as i32,
                checksum: md5_hex(&m.message.body),
            }),
            body_encoding: pb::Encoding::Identity as i32,
            message_type: message_type as i32,
            message_group,
            born_timestamp: Some(timestamp(m.born_timestamp_ms)),
            born_host: m.born_host.ip().to_string(),
            store_timestamp: Some(timestamp(m.store_timestamp_ms)),
            store_host: m.store_host.to_string(),
            receipt_handle: receipt,
            queue_id: i32::try_from(m.queue_id).unwrap_or(i32::MAX),
            queue_offset: Some(i64::try_from(m.queue_offset).unwrap_or(i64::MAX)),
            delivery_attempt: Some(
                i32::try_from(m.reconsume_times.saturating_add(1)).unwrap_or(i32::MAX),
            ),
            ..Default::default()
        }),
        user_properties: props.into_iter().collect(),
        body: m.message.body.to_vec(),
    }
}

/// A half message as the message of a `RecoverOrphanedTransactionCommand`:
/// as delivered, under its real topic and queue (the half message is
/// stored in the half topic), typed TRANSACTION, without receipt handle.
pub fn orphaned(mut m: StoredMessage) -> pb::Message {
    let props = &mut m.message.properties;
    let real_topic = props.remove(PROPERTY_REAL_TOPIC);
    let real_queue = props
        .remove(PROPERTY_REAL_QUEUE_ID)
        .and_then(|q| q.parse::<u32>().ok());
    for internal in [
        PROPERTY_TRANSACTION_PREPARED,
        PROPERTY_TRANSACTION_CHECK_TIMES,
        PROPERTY_PRODUCER_GROUP,
        PROPERTY_POP_CK,
    ] {
        props.remove(internal);
    }
    if let Some(topic) = real_topic {
        m.message.topic = topic;
    }
    if let Some(q) = real_queue {
        m.queue_id = q;
    }
    let mut msg = delivered(m);
    if let Some(sys) = msg.system_properties.as_mut() {
        sys.message_type = pb::MessageType::Transaction as i32;
        sys.receipt_handle = None;
        sys.delivery_attempt = None;
    }
    msg
}

/// A receipt handle a client returns, checked: the parsed handle, or
/// `INVALID_RECEIPT_HANDLE`.
pub fn receipt_handle(raw: &str) -> Result<ReceiptHandle, Refusal> {
    ReceiptHandle::parse(raw).ok_or_else(|| {
        Refusal::new(
            grpc::INVALID_RECEIPT_HANDLE,
            format!("malformed receipt handle {raw:?}"),
        )
    })
}

/// An ack entry as the broker's ack (the handle names queue and offset).
pub fn ack_request(group: &str, topic: &str, raw: &str) -> Result<AckMessageRequest, Refusal> {
    let h = receipt_handle(raw)?;
    Ok(AckMessageRequest {
        consumer_group: group.to_string(),
        topic: topic.to_string(),
        queue_id: h.queue_id,
        offset: h.queue_offset,
        extra_info: raw.to_string(),
    })
}

/// A `ForwardMessageToDeadLetterQueue` as the broker's send-back straight
/// to the group's dead-letter queue (`%DLQ%<group>`, no retries left:
/// `max_reconsume_times` 0) of the message at `commit_log_offset` (the
/// one the receipt handle names).
pub fn dead_letter_request(
    group: &str,
    topic: &str,
    commit_log_offset: u64,
) -> ConsumerSendMsgBackRequest {
    ConsumerSendMsgBackRequest {
        consumer_group: group.to_string(),
        commit_log_offset,
        delay_level: 0,
        origin_msg_id: String::new(),
        origin_topic: topic.to_string(),
        max_reconsume_times: Some(0),
        reconsume_times: None,
        more: Vec::new(),
    }
}

/// An ack entry as one entry of the broker's batch ack.
pub fn batch_ack_entry(raw: &str) -> Result<BatchAckEntry, Refusal> {
    let h = receipt_handle(raw)?;
    Ok(BatchAckEntry {
        queue_id: h.queue_id,
        offset: h.queue_offset,
        extra_info: raw.to_string(),
    })
}

/// A change of invisible duration as the broker's request.
pub fn change_invisible_request(
    req: &pb::ChangeInvisibleDurationRequest,
) -> Result<ChangeInvisibleTimeRequest, Refusal> {
    let h = receipt_handle(&req.receipt_handle)?;
    Ok(ChangeInvisibleTimeRequest {
        consumer_group: req
            .group
            .as_ref()
            .map(|g| g.name.clone())
            .unwrap_or_default(),
        topic: req
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        queue_id: h.queue_id,
        offset: h.queue_offset,
        extra_info: req.receipt_handle.clone(),
        invisible_time_ms: req
            .invisible_duration
            .as_ref()
            .map_or(DEFAULT_INVISIBLE_MS, millis)
            .max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actormq_protocol::request::topic::Perm;

    fn message(id: &str) -> pb::Message {
        pb::Message {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "T".into(),
            }),
            user_properties: [("color".to_string(), "red".to_string())].into(),
            system_properties: Some(pb::SystemProperties {
                tag: Some("TagA".into()),
                keys: vec!["k1".into(), "k2".into()],
                message_id: id.into(),
                message_type: pb::MessageType::Normal as i32,
                queue_id: 9,
                ..Default::default()
            }),
            body: b"hello".to_vec(),
        }
    }

    #[test]
    fn normal_message_becomes_a_typed_send() {
        let (req, body, id) = send_request(message("ID1"), 4, 77).expect("normal message");
        assert_eq!(id, "ID1");
        assert_eq!(req.topic, "T");
        assert_eq!(req.queue_id, 1); // 9 folded into 4 queues
        assert_eq!(req.tags.as_deref(), Some("TagA"));
        assert_eq!(req.keys.as_deref(), Some("k1 k2"));
        assert_eq!(req.properties["color"], "red");
        assert_eq!(req.properties[PROPERTY_UNIQUE_KEY], "ID1");
        assert_eq!(req.born_timestamp_ms, 77);
        assert_eq!(&body[..], b"hello");
    }

    #[test]
    fn delay_messages_carry_their_delivery_time() {
        let mut m = message("ID4");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Delay as i32;
            s.delivery_timestamp = Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 5_000_000,
            });
        }
        let (req, _, _) = send_request(m, 4, 0).expect("delay message");
        assert_eq!(req.deliver_at_ms, Some(100_005));
        let mut m = message("ID5");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Delay as i32;
        }
        assert_eq!(
            send_request(m, 4, 0).expect_err("no time").code,
            grpc::ILLEGAL_DELIVERY_TIME
        );
    }

    #[test]
    fn transactions_are_half_messages_ended_by_their_id() {
        let mut m = message("ID6");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Transaction as i32;
        }
        let topic = m.topic.as_ref().map(|t| t.name.clone()).expect("topic");
        let (req, _, _) = send_request(m, 4, 0).expect("half message");
        assert_eq!(req.properties[PROPERTY_TRANSACTION_PREPARED], "true");
        // The topic is the producer group (transaction checks go to a
        // producer publishing it).
        assert_eq!(req.properties[PROPERTY_PRODUCER_GROUP], topic);
        assert_eq!(req.producer_group, topic);
        let id = MessageId {
            store_host: "127.0.0.1:10911".parse().expect("addr"),
            commit_log_offset: 4096,
        }
        .encode();
        let end = end_transaction_request(&pb::EndTransactionRequest {
            topic: Some(pb::Resource {
                resource_namespace: String::new(),
                name: topic.clone(),
            }),
            message_id: "ID6".into(),
            transaction_id: transaction_id(&id, 7),
            resolution: pb::TransactionResolution::Commit as i32,
            source: pb::TransactionSource::SourceClient as i32,
            trace_context: String::new(),
        })
        .expect("end");
        assert_eq!(
            (end.commit_log_offset, end.tran_state_table_offset),
            (4096, 7)
        );
        assert_eq!(end.decision, TransactionDecision::Commit);
        assert!(!end.from_transaction_check);
        assert_eq!(end.transaction_id.as_deref(), Some("ID6"));
        assert_eq!(end.producer_group, topic);
        let bad = pb::EndTransactionRequest {
            transaction_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            end_transaction_request(&bad).expect_err("bad id").code,
            grpc::INVALID_TRANSACTION_ID
        );
    }

    fn stored(message: actormq_protocol::Message, reconsume_times: u32) -> StoredMessage {
        let host: SocketAddr = "127.0.0.1:10911".parse().expect("addr");
        StoredMessage {
            message,
            queue_id: 0,
            queue_offset: 9,
            commit_log_offset: 4096,
            store_size: 0,
            born_timestamp_ms: 1,
            store_timestamp_ms: 2,
            born_host: host,
            store_host: host,
            body_crc: 0,
            reconsume_times,
            prepared_transaction_offset: 0,
        }
    }

    #[test]
    fn a_retried_message_shows_only_the_users_properties() {
        let mut message = actormq_protocol::Message::new("orders", Bytes::from_static(b"again"));
        for (k, v) in [
            (PROPERTY_RETRY_TOPIC, "orders"),
            (
                PROPERTY_ORIGIN_MESSAGE_ID,
                "7F00000100002A9F0000000000000000",
            ),
            (PROPERTY_POP_CK, "1 2 3 4 1 0 9 orders"),
            ("region", "eu"),
        ] {
            message.properties.insert(k.to_string(), v.to_string());
        }
        let m = delivered(stored(message, 1));
        assert_eq!(
            m.user_properties.into_iter().collect::<Vec<_>>(),
            [("region".to_string(), "eu".to_string())]
        );
        let sys = m.system_properties.expect("system properties");
        assert_eq!(sys.delivery_attempt, Some(2));
        assert_eq!(sys.receipt_handle.as_deref(), Some("1 2 3 4 1 0 9 orders"));
    }

    #[test]
    fn an_orphaned_half_message_is_shown_under_its_real_topic() {
        let mut message = actormq_protocol::Message::new(
            actormq_protocol::system_topic::TRANS_HALF_TOPIC,
            Bytes::from_static(b"paid"),
        );
        message.tags = Some("TxTag".into());
        for (k, v) in [
            (PROPERTY_REAL_TOPIC, "orders"),
            (PROPERTY_REAL_QUEUE_ID, "3"),
            (PROPERTY_TRANSACTION_PREPARED, "true"),
            (PROPERTY_TRANSACTION_CHECK_TIMES, "2"),
            (PROPERTY_PRODUCER_GROUP, "orders"),
            (PROPERTY_UNIQUE_KEY, "CLIENT-ID"),
            ("region", "eu"),
        ] {
            message.properties.insert(k.to_string(), v.to_string());
        }
        let m = orphaned(stored(message, 0));
        assert_eq!(m.topic.map(|t| t.name).as_deref(), Some("orders"));
        let sys = m.system_properties.expect("system properties");
        assert_eq!(sys.queue_id, 3);
        assert_eq!(sys.message_id, "CLIENT-ID");
        assert_eq!(sys.message_type, pb::MessageType::Transaction as i32);
        assert_eq!(sys.tag.as_deref(), Some("TxTag"));
        assert_eq!(sys.receipt_handle, None);
        assert_eq!(sys.body_digest.map(|d| d.checksum), Some(md5_hex(b"paid")));
        // Only the user's properties are left.
        assert_eq!(
            m.user_properties.into_iter().collect::<Vec<_>>(),
            [("region".to_string(), "eu".to_string())]
        );
    }

    #[test]
    fn fifo_messages_keep_their_group_in_one_queue() {
        let fifo = |id: &str, group: &str| {
            let mut m = message(id);
            if let Some(s) = m.system_properties.as_mut() {
                s.message_type = pb::MessageType::Fifo as i32;
                s.message_group = Some(group.into());
            }
            m
        };
        let (a1, _, _) = send_request(fifo("A1", "a"), 8, 0).expect("fifo");
        let (a2, _, _) = send_request(fifo("A2", "a"), 8, 0).expect("fifo");
        assert_eq!(a1.queue_id, a2.queue_id);
        assert_eq!(a1.queue_id, group_queue("a", 8));
        assert_eq!(a1.properties[PROPERTY_SHARDING_KEY], "a");
        let mut m = fifo("A3", "a");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_group = None;
        }
        assert_eq!(
            send_request(m, 8, 0).expect_err("no group").code,
            grpc::ILLEGAL_MESSAGE_GROUP
        );
        let mut m = message("ID3");
        m.topic = None;
        assert_eq!(
            send_request(m, 4, 0).expect_err("no topic").code,
            grpc::ILLEGAL_TOPIC
        );
        let mut m = message("ID7");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Lite as i32;
        }
        assert_eq!(
            send_request(m, 4, 0).expect_err("lite").code,
            grpc::NOT_IMPLEMENTED
        );
    }

    #[test]
    fn route_has_one_queue_per_id_with_permissions() {
        let cfg = TopicConfig {
            topic_name: "T".into(),
            read_queue_nums: 4,
            write_queue_nums: 2,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        };
        let addr: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let qs = route(&cfg, "broker-a", addr);
        assert_eq!(qs.len(), 4);
        assert_eq!(qs[0].permission, pb::Permission::ReadWrite as i32);
        assert_eq!(qs[3].permission, pb::Permission::Read as i32);
        let b = qs[0].broker.as_ref().expect("broker");
        assert_eq!(b.id, 0);
        assert_eq!(b.name, "broker-a");
        let ep = b.endpoints.as_ref().expect("endpoints");
        assert_eq!(ep.addresses[0].port, 8081);
        assert_eq!(
            qs[0].accept_message_types,
            vec![
                pb::MessageType::Normal as i32,
                pb::MessageType::Fifo as i32,
                pb::MessageType::Delay as i32,
                pb::MessageType::Transaction as i32,
            ]
        );
    }

    #[test]
    fn one_assignment_per_broker_with_any_queue() {
        let mut cfg = TopicConfig {
            topic_name: "T".into(),
            read_queue_nums: 4,
            write_queue_nums: 4,
            perm: Perm::READ_WRITE,
            ..TopicConfig::default()
        };
        let addr: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        let a = assignments(&cfg, "b", addr, false);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].message_queue.as_ref().map(|q| q.id), Some(-1));
        assert_eq!(assignments(&cfg, "b", addr, true).len(), 4);
        cfg.perm = Perm::WRITE;
        assert!(assignments(&cfg, "b", addr, false).is_empty());
    }

    #[test]
    fn settings_are_completed() {
        let s = pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing::default())),
            ..Default::default()
        };
        let s = complete_settings(s, 4 << 20, 15_000, false);
        assert!(matches!(
            s.backoff_policy.and_then(|p| p.strategy),
            Some(pb::retry_policy::Strategy::ExponentialBackoff(_))
        ));
        assert_eq!(s.metric.map(|m| m.on), Some(false));
        match s.pub_sub {
            Some(pb::settings::PubSub::Publishing(p)) => assert_eq!(p.max_body_size, 4 << 20),
            other => panic!("not publishing: {other:?}"),
        }
    }

    #[test]
    fn receive_becomes_a_pop_and_handles_are_checked() {
        let req = pb::ReceiveMessageRequest {
            group: Some(pb::Resource {
                resource_namespace: String::new(),
                name: "g".into(),
            }),
            message_queue: route(
                &TopicConfig {
                    topic_name: "T".into(),
                    read_queue_nums: 1,
                    write_queue_nums: 1,
                    perm: Perm::READ_WRITE,
                    ..TopicConfig::default()
                },
                "b",
                "127.0.0.1:1".parse().expect("addr"),
            )
            .pop(),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "A || B".into(),
            }),
            batch_size: 100,
            invisible_duration: Some(prost_types::Duration {
                seconds: 20,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 60,
                nanos: 0,
            }),
            attempt_id: None,
        };
        let pop = pop_request(&req, false, 15_000, 5).expect("pop");
        assert_eq!(
            (pop.consumer_group.as_str(), pop.topic.as_str()),
            ("g", "T")
        );
        assert_eq!(pop.max_msg_nums, MAX_RECEIVE_BATCH);
        assert_eq!(pop.invisible_time_ms, 20_000);
        assert_eq!(pop.poll_time_ms, 15_000);
        assert_eq!(pop.expression.as_deref(), Some("A || B"));
        assert_eq!(pop.expression_type.as_deref(), Some("TAG"));
        assert_eq!(pop.queue_id, None);
        let fifo = pop_request(&req, true, 15_000, 5).expect("pop");
        assert!(fifo.order);
        assert_eq!(fifo.queue_id, Some(0));
        assert_eq!(
            ack_request("g", "T", "nope").expect_err("bad handle").code,
            grpc::INVALID_RECEIPT_HANDLE
        );
        let h = ReceiptHandle {
            checkpoint_id: 1,
            pop_time_ms: 2,
            invisible_time_ms: 3,
            reconsume_times: 0,
            topic: "T".into(),
            queue_id: 4,
            queue_offset: 5,
        };
        let ack = ack_request("g", "T", &h.encode()).expect("ack");
        assert_eq!((ack.queue_id, ack.offset), (4, 5));
        assert_eq!(md5_hex(b"hello"), "5D41402ABC4B2A76B9719D911017C592");
    }

    /// The numbers of the code table are the `.proto`'s.
    #[test]
    fn code_constants_match_the_proto() {
        use pb::Code as C;
        for (ours, theirs) in [
            (grpc::OK, C::Ok),
            (grpc::BAD_REQUEST, C::BadRequest),
            (grpc::ILLEGAL_TOPIC, C::IllegalTopic),
            (grpc::ILLEGAL_MESSAGE_GROUP, C::IllegalMessageGroup),
            (grpc::ILLEGAL_DELIVERY_TIME, C::IllegalDeliveryTime),
            (grpc::ILLEGAL_CONSUMER_GROUP, C::IllegalConsumerGroup),
            (grpc::INVALID_TRANSACTION_ID, C::InvalidTransactionId),
            (grpc::ILLEGAL_FILTER_EXPRESSION, C::IllegalFilterExpression),
            (grpc::INVALID_RECEIPT_HANDLE, C::InvalidReceiptHandle),
            (grpc::ILLEGAL_OFFSET, C::IllegalOffset),
            (grpc::FORBIDDEN, C::Forbidden),
            (grpc::MESSAGE_NOT_FOUND, C::MessageNotFound),
            (grpc::TOPIC_NOT_FOUND, C::TopicNotFound),
            (grpc::CONSUMER_GROUP_NOT_FOUND, C::ConsumerGroupNotFound),
            (grpc::MESSAGE_BODY_TOO_LARGE, C::MessageBodyTooLarge),
            (grpc::PRECONDITION_FAILED, C::PreconditionFailed),
            (grpc::TOO_MANY_REQUESTS, C::TooManyRequests),
            (grpc::INTERNAL_SERVER_ERROR, C::InternalServerError),
            (grpc::HA_NOT_AVAILABLE, C::HaNotAvailable),
            (grpc::NOT_IMPLEMENTED, C::NotImplemented),
            (
                grpc::MASTER_PERSISTENCE_TIMEOUT,
                C::MasterPersistenceTimeout,
            ),
            (grpc::SLAVE_PERSISTENCE_TIMEOUT, C::SlavePersistenceTimeout),
            (grpc::VERSION_UNSUPPORTED, C::VersionUnsupported),
        ] {
            assert_eq!(ours, theirs as i32, "{theirs:?}");
        }
    }
}

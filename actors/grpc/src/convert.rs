//! Plain decisions of the gRPC front door, no runtime in them: a gRPC
//! message to the broker's typed send, a topic's config to route entries,
//! a client's settings to the completed settings the broker answers with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use actormq_actors::broker::error_map::{grpc, grpc_code};
use actormq_protocol::ResponseCode;
use actormq_protocol::message::PROPERTY_UNIQUE_KEY;
use actormq_protocol::request::send::SendMessageRequest;
use actormq_protocol::request::topic::TopicConfig;
use bytes::Bytes;

use crate::pb;

/// The producer group recorded for sends over gRPC (RocketMQ 5 producers
/// have no group).
pub const GRPC_PRODUCER_GROUP: &str = "GRPC_PRODUCER_GROUP";

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
        pb::MessageType::Normal | pb::MessageType::Unspecified => {}
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
    if sys.delivery_timestamp.is_some() || sys.message_group.is_some() {
        return Err(Refusal::new(
            grpc::NOT_IMPLEMENTED,
            "delayed and FIFO messages are not implemented over gRPC by this actormq version",
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
    let keys = sys.keys.join(" ");
    let born_timestamp_ms = sys
        .born_timestamp
        .and_then(|t| {
            u64::try_from(t.seconds)
                .ok()
                .map(|s| s * 1000 + u64::try_from(t.nanos).unwrap_or(0) / 1_000_000)
        })
        .unwrap_or(now_ms);
    let queue_id = u32::try_from(sys.queue_id).unwrap_or(0) % write_queues.max(1);
    let req = SendMessageRequest {
        producer_group: GRPC_PRODUCER_GROUP.into(),
        topic,
        queue_id,
        born_timestamp_ms,
        tags: sys.tag.filter(|t| !t.is_empty()),
        keys: (!keys.is_empty()).then_some(keys),
        properties,
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
/// endpoint). Only NORMAL messages are accepted over gRPC so far.
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
                accept_message_types: vec![pb::MessageType::Normal as i32],
            }
        })
        .collect()
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
pub fn complete_settings(mut s: pb::Settings, max_body_size: usize) -> pb::Settings {
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
            sub.fifo = Some(sub.fifo.unwrap_or(false));
            sub.receive_batch_size = Some(sub.receive_batch_size.unwrap_or(32));
            if sub.long_polling_timeout.is_none() {
                sub.long_polling_timeout = Some(duration(Duration::from_secs(30)));
            }
        }
        None => {}
    }
    s
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
    fn other_message_types_are_not_implemented_yet() {
        let mut m = message("ID2");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Fifo as i32;
            s.message_group = Some("g".into());
        }
        let e = send_request(m, 4, 0).expect_err("fifo refused");
        assert_eq!(e.code, grpc::NOT_IMPLEMENTED);
        let mut m = message("ID3");
        m.topic = None;
        assert_eq!(
            send_request(m, 4, 0).expect_err("no topic").code,
            grpc::ILLEGAL_TOPIC
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
            vec![pb::MessageType::Normal as i32]
        );
    }

    #[test]
    fn settings_are_completed() {
        let s = pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing::default())),
            ..Default::default()
        };
        let s = complete_settings(s, 4 << 20);
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

    /// The numbers of the code table are the `.proto`'s.
    #[test]
    fn code_constants_match_the_proto() {
        use pb::Code as C;
        for (ours, theirs) in [
            (grpc::OK, C::Ok),
            (grpc::BAD_REQUEST, C::BadRequest),
            (grpc::ILLEGAL_TOPIC, C::IllegalTopic),
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

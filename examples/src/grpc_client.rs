//! The RocketMQ 5 gRPC API from Rust: a node's gRPC endpoint called with
//! the tonic client generated from RocketMQ's protos (`actormq_grpc::pb`,
//! the API every official RocketMQ 5 client speaks). An order sent over
//! gRPC is read by a native pull consumer, its tag, keys and property
//! kept; an order sent natively is received over gRPC and acked, and then
//! nothing is left for the group. The book's "Using existing RocketMQ
//! clients" chapter includes this file.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use actormq_grpc::pb;
use actormq_grpc::pb::messaging_service_client::MessagingServiceClient;
use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::PullConsumer;
use actormq_sdk::protocol::Message;
use tonic::transport::Channel;

/// What the scenario saw.
#[derive(Debug, Clone, Default)]
pub struct GrpcReport {
    /// The gRPC-sent order as the native consumer read it: body, tag,
    /// keys and its `region` property.
    pub read_natively: Option<(String, String, String, String)>,
    /// Bodies received over gRPC.
    pub received_over_grpc: Vec<String>,
    /// Status code of the ack (20000 is OK).
    pub ack_code: i32,
    /// Status code of a receive after the ack (40401: no message).
    pub after_ack_code: i32,
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

fn seconds(s: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: s,
        nanos: 0,
    })
}

// ANCHOR: send
/// Sends one NORMAL message over gRPC; the status code of the send.
async fn send(client: &mut MessagingServiceClient<Channel>) -> Result<i32, tonic::Status> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let message = pb::Message {
        topic: resource("orders"),
        user_properties: HashMap::from([("region".to_string(), "eu".to_string())]),
        system_properties: Some(pb::SystemProperties {
            tag: Some("created".into()),
            keys: vec!["order-1".into()],
            // The client names the message id (RocketMQ's format).
            message_id: "0100000000000000000000000001".into(),
            message_type: pb::MessageType::Normal as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            }),
            ..Default::default()
        }),
        body: b"order 1 created".to_vec(),
    };
    let reply = client
        .send_message(pb::SendMessageRequest {
            messages: vec![message],
        })
        .await?
        .into_inner();
    Ok(reply.status.map_or(0, |s| s.code))
}
// ANCHOR_END: send

// ANCHOR: receive
/// One receive of `group` (long polling 1 s): its status and messages.
async fn receive(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
) -> Result<(pb::Status, Vec<pb::Message>), tonic::Status> {
    let mut stream = client
        .receive_message(pb::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(pb::MessageQueue {
                topic: resource("orders"),
                id: -1, // any queue
                ..Default::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 16,
            invisible_duration: seconds(30),
            auto_renew: false,
            long_polling_timeout: seconds(1),
            attempt_id: None,
        })
        .await?
        .into_inner();
    // A status, the delivery time, then the messages.
    let (mut status, mut messages) = (pb::Status::default(), Vec::new());
    while let Some(r) = stream.message().await? {
        match r.content {
            Some(pb::receive_message_response::Content::Status(s)) => status = s,
            Some(pb::receive_message_response::Content::Message(m)) => messages.push(m),
            _ => {}
        }
    }
    Ok((status, messages))
}

/// Acks `m` with its receipt handle; the entry's status code.
async fn ack(
    client: &mut MessagingServiceClient<Channel>,
    group: &str,
    m: &pb::Message,
) -> Result<i32, tonic::Status> {
    let sys = m.system_properties.clone().unwrap_or_default();
    let reply = client
        .ack_message(pb::AckMessageRequest {
            group: resource(group),
            topic: resource("orders"),
            entries: vec![pb::AckMessageEntry {
                message_id: sys.message_id,
                receipt_handle: sys.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            }],
        })
        .await?
        .into_inner();
    Ok(reply
        .entries
        .first()
        .and_then(|e| e.status.as_ref())
        .map_or(0, |s| s.code))
}
// ANCHOR_END: receive

/// Runs the scenario.
pub async fn run() -> Result<GrpcReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let grpc = example
        .node
        .grpc_addr
        .ok_or("the node has no gRPC endpoint")?;
    let mut client = MessagingServiceClient::connect(format!("http://{grpc}")).await?;
    let mut report = GrpcReport::default();

    // gRPC in, native out.
    let code = send(&mut client).await?;
    if code != pb::Code::Ok as i32 {
        return Err(format!("gRPC send answered {code}").into());
    }
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let consumer = PullConsumer::new("audit", &namesrv, log)?;
    for mq in consumer.fetch_queues("orders").await? {
        for m in consumer.pull(&mq, 0, 32).await?.messages {
            let m = m.message;
            report.read_natively = Some((
                String::from_utf8_lossy(&m.body).into_owned(),
                m.tags.clone().unwrap_or_default(),
                m.keys.clone().unwrap_or_default(),
                m.property("region").unwrap_or_default().to_string(),
            ));
        }
    }

    // Native in, gRPC out: received, acked, gone.
    let producer = ProducerBuilder::new("shop")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    producer
        .send(Message::new("orders", "order 2 created"))
        .await?;
    producer.shutdown().await;
    let group = "billing";
    // A new group starts at the first message kept: both orders come.
    // Each receive waits up to 1 s for messages (long polling).
    for _ in 0..20 {
        let (_, messages) = receive(&mut client, group).await?;
        for m in &messages {
            report.ack_code = ack(&mut client, group, m).await?;
            report
                .received_over_grpc
                .push(String::from_utf8_lossy(&m.body).into_owned());
        }
        if report.received_over_grpc.len() >= 2 {
            break;
        }
    }
    report.received_over_grpc.sort();
    report.after_ack_code = receive(&mut client, group).await?.0.code;

    example.node.shutdown().await;
    Ok(report)
}

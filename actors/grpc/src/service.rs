//! `GrpcSession`: the `MessagingService` implementation, one more kind of
//! client session in front of the broker's actors. Each RPC becomes the
//! same typed message ([`Call`]) a native session sends; the answers come
//! back as `Status{code}` through the one code table
//! ([`actormq_actors::broker::error_map::grpc_code`]).
//!
//! Served: `QueryRoute`, `Heartbeat`, `SendMessage` (NORMAL messages),
//! `Telemetry` (settings), `NotifyClientTermination`. Every other RPC
//! answers `Status{NOT_IMPLEMENTED}`.

use std::net::SocketAddr;
use std::pin::Pin;

use actormq_actors::broker::{CommitLogActor, TopicView, now_ms};
use actormq_actors::runtime::{Call, ChildRef, ServiceError};
use actormq_protocol::ResponseCode;
use actormq_protocol::request::topic::TopicConfig;
use futures_util::{Stream, StreamExt, stream};
use slog::{Logger, debug};
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, not_implemented, ok, status_of};
use crate::pb;
use crate::pb::messaging_service_server::MessagingService;

/// What a [`GrpcSession`] needs of its node.
#[derive(Debug, Clone)]
pub struct GrpcSessionConfig {
    /// The broker's name (route entries).
    pub broker_name: String,
    /// The gRPC endpoint clients are told to use (route entries).
    pub endpoint: SocketAddr,
    /// The broker's max message size (`publishing.max_body_size`).
    pub max_body_size: usize,
    /// Queues of an auto-created topic when the broker creates topics on
    /// their first send (`broker.auto_create_topic`), else `None`: a
    /// route query for a missing topic then answers the route the topic
    /// will have (as RocketMQ's default-topic route does), without
    /// creating it.
    pub auto_create_queues: Option<u32>,
}

/// The broker actors a [`GrpcSession`] talks to.
#[derive(Clone)]
pub struct GrpcTargets {
    /// The single writer (sends).
    pub writer: ChildRef<CommitLogActor>,
    /// The topic table (routes).
    pub view: TopicView,
}

/// The `apache.rocketmq.v2.MessagingService` in front of the broker
/// actors (shared by every gRPC connection of a node).
pub struct GrpcSession {
    config: GrpcSessionConfig,
    targets: GrpcTargets,
    logger: Logger,
}

impl GrpcSession {
    /// A session serving `targets`.
    pub fn new(config: GrpcSessionConfig, targets: GrpcTargets, logger: &Logger) -> Self {
        Self {
            config,
            targets,
            logger: logger.clone(),
        }
    }

    async fn send_one(&self, msg: pb::Message) -> pb::SendResultEntry {
        let topic = msg
            .topic
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        let write_queues = self
            .targets
            .view
            .snapshot()
            .get(&topic)
            .map_or(1, |c| c.write_queue_nums);
        let client_id = msg
            .system_properties
            .as_ref()
            .map(|s| s.message_id.clone())
            .unwrap_or_default();
        let refused = |status: pb::Status| pb::SendResultEntry {
            status: Some(status),
            message_id: client_id.clone(),
            ..Default::default()
        };
        let (req, body, message_id) = match convert::send_request(msg, write_queues, now_ms()) {
            Ok(ok) => ok,
            Err(r) => return refused(r.status()),
        };
        let Some(writer) = self.targets.writer.addr() else {
            return refused(status_of(
                ResponseCode::SystemBusy,
                "the commit-log writer is restarting",
            ));
        };
        let result = writer
            .send(Call::with_body(req, body))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r);
        match result {
            Ok(reply) => pb::SendResultEntry {
                status: Some(if reply.code == ResponseCode::Success {
                    ok()
                } else {
                    status_of(reply.code, reply.code.to_string())
                }),
                message_id,
                transaction_id: String::new(),
                offset: i64::try_from(reply.fields.queue_offset).unwrap_or(i64::MAX),
                recall_handle: String::new(),
            },
            Err(e) => refused(status_of(e.code, e.remark)),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn once<T: Send + 'static>(item: T) -> BoxStream<T> {
    Box::pin(stream::iter([Ok(item)]))
}

#[tonic::async_trait]
impl MessagingService for GrpcSession {
    async fn query_route(
        &self,
        request: Request<pb::QueryRouteRequest>,
    ) -> Result<Response<pb::QueryRouteResponse>, Status> {
        let topic = request
            .into_inner()
            .topic
            .map(|t| t.name)
            .unwrap_or_default();
        let table = self.targets.view.snapshot();
        let auto = self
            .config
            .auto_create_queues
            .filter(|_| actormq_protocol::validate::validate_topic(&topic).is_ok())
            .map(|queues| TopicConfig {
                topic_name: topic.clone(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                ..TopicConfig::default()
            });
        let reply = match table.get(&topic).or(auto.as_ref()) {
            Some(cfg) => pb::QueryRouteResponse {
                status: Some(ok()),
                message_queues: convert::route(cfg, &self.config.broker_name, self.config.endpoint),
            },
            None => pb::QueryRouteResponse {
                status: Some(status_of(
                    ResponseCode::TopicNotExist,
                    format!("topic {topic} does not exist"),
                )),
                message_queues: Vec::new(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn heartbeat(
        &self,
        _request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(pb::HeartbeatResponse { status: Some(ok()) }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let messages = request.into_inner().messages;
        if messages.is_empty() {
            return Ok(Response::new(pb::SendMessageResponse {
                status: Some(convert::status(
                    actormq_actors::broker::error_map::grpc::BAD_REQUEST,
                    "no message to send",
                )),
                entries: Vec::new(),
            }));
        }
        let mut entries = Vec::with_capacity(messages.len());
        for msg in messages {
            entries.push(self.send_one(msg).await);
        }
        let first = entries
            .first()
            .and_then(|e| e.status.clone())
            .unwrap_or_else(ok);
        let same = entries
            .iter()
            .all(|e| e.status.as_ref().map(|s| s.code) == Some(first.code));
        let status = if same {
            first
        } else {
            convert::status(
                pb::Code::MultipleResults as i32,
                "results differ per message",
            )
        };
        debug!(self.logger, "grpc send"; "messages" => entries.len(), "code" => status.code);
        Ok(Response::new(pb::SendMessageResponse {
            status: Some(status),
            entries,
        }))
    }

    async fn query_assignment(
        &self,
        _request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        Ok(Response::new(pb::QueryAssignmentResponse {
            status: Some(not_implemented("QueryAssignment")),
            assignments: Vec::new(),
        }))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        _request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        Ok(Response::new(once(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::Status(
                not_implemented("ReceiveMessage"),
            )),
        })))
    }

    async fn ack_message(
        &self,
        _request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        Ok(Response::new(pb::AckMessageResponse {
            status: Some(not_implemented("AckMessage")),
            entries: Vec::new(),
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        _request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
            status: Some(not_implemented("ForwardMessageToDeadLetterQueue")),
        }))
    }

    type PullMessageStream = BoxStream<pb::PullMessageResponse>;

    async fn pull_message(
        &self,
        _request: Request<pb::PullMessageRequest>,
    ) -> Result<Response<Self::PullMessageStream>, Status> {
        Ok(Response::new(once(pb::PullMessageResponse {
            content: Some(pb::pull_message_response::Content::Status(not_implemented(
                "PullMessage",
            ))),
        })))
    }

    async fn update_offset(
        &self,
        _request: Request<pb::UpdateOffsetRequest>,
    ) -> Result<Response<pb::UpdateOffsetResponse>, Status> {
        Ok(Response::new(pb::UpdateOffsetResponse {
            status: Some(not_implemented("UpdateOffset")),
        }))
    }

    async fn get_offset(
        &self,
        _request: Request<pb::GetOffsetRequest>,
    ) -> Result<Response<pb::GetOffsetResponse>, Status> {
        Ok(Response::new(pb::GetOffsetResponse {
            status: Some(not_implemented("GetOffset")),
            offset: 0,
        }))
    }

    async fn query_offset(
        &self,
        _request: Request<pb::QueryOffsetRequest>,
    ) -> Result<Response<pb::QueryOffsetResponse>, Status> {
        Ok(Response::new(pb::QueryOffsetResponse {
            status: Some(not_implemented("QueryOffset")),
            offset: 0,
        }))
    }

    async fn end_transaction(
        &self,
        _request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        Ok(Response::new(pb::EndTransactionResponse {
            status: Some(not_implemented("EndTransaction")),
        }))
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let max_body_size = self.config.max_body_size;
        let logger = self.logger.clone();
        let inbound = request.into_inner();
        // One answer per client `Settings`; other commands (thread stack
        // traces, verify results) need no answer yet.
        let answers = inbound.filter_map(move |cmd| {
            let out = match cmd {
                Ok(pb::TelemetryCommand {
                    command: Some(pb::telemetry_command::Command::Settings(s)),
                    ..
                }) => Some(Ok(pb::TelemetryCommand {
                    status: Some(ok()),
                    command: Some(pb::telemetry_command::Command::Settings(
                        convert::complete_settings(s, max_body_size),
                    )),
                })),
                Ok(_) => None,
                Err(e) => {
                    debug!(logger, "telemetry stream ended"; "status" => %e);
                    None
                }
            };
            std::future::ready(out)
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn notify_client_termination(
        &self,
        _request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        Ok(Response::new(pb::NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        _request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        Ok(Response::new(pb::ChangeInvisibleDurationResponse {
            status: Some(not_implemented("ChangeInvisibleDuration")),
            receipt_handle: String::new(),
        }))
    }

    async fn recall_message(
        &self,
        _request: Request<pb::RecallMessageRequest>,
    ) -> Result<Response<pb::RecallMessageResponse>, Status> {
        Ok(Response::new(pb::RecallMessageResponse {
            status: Some(not_implemented("RecallMessage")),
            message_id: String::new(),
        }))
    }

    async fn sync_lite_subscription(
        &self,
        _request: Request<pb::SyncLiteSubscriptionRequest>,
    ) -> Result<Response<pb::SyncLiteSubscriptionResponse>, Status> {
        Ok(Response::new(pb::SyncLiteSubscriptionResponse {
            status: Some(not_implemented("SyncLiteSubscription")),
        }))
    }
}

//! `GrpcSession`: the `MessagingService` implementation, one more kind of
//! client session in front of the broker's actors. Each RPC becomes the
//! same typed message ([`Call`]) a native session sends; the answers come
//! back as `Status{code}` through the one code table
//! ([`actormq_actors::broker::error_map::grpc_code`]).
//!
//! Served: `QueryRoute`, `Heartbeat`, `SendMessage` (NORMAL, FIFO,
//! DELAY, TRANSACTION), `Telemetry` (settings, and the broker's
//! transaction checks as `RecoverOrphanedTransactionCommand`),
//! `NotifyClientTermination`, and the consumers' `QueryAssignment`,
//! `ReceiveMessage` (a pop; `auto_renew` deliveries are kept invisible
//! while their client lives), `AckMessage`, `ChangeInvisibleDuration`
//! and `ForwardMessageToDeadLetterQueue` (the native send-back's
//! dead-letter path, then an ack), and `EndTransaction`. Every other RPC
//! answers
//! `Status{NOT_IMPLEMENTED}`.
//!
//! The clients themselves, one per `x-mq-client-id`, are kept by the
//! [`GrpcClients`] registry actor.

use std::net::SocketAddr;
use std::pin::Pin;

use actormq_actors::broker::subscription_group_manager::ResolveGroups;
use actormq_actors::broker::{
    BrokerStore, CommitLogActor, EndTransactionService, PopService, RetryService,
    SubscriptionGroupManager, TopicView, now_ms,
};
use actormq_actors::runtime::{Call, ChildRef, ServiceError};
use actormq_protocol::ResponseCode;
use actormq_protocol::request::pop::BatchAckMessageRequest;
use actormq_protocol::request::topic::TopicConfig;
use futures_util::{Stream, StreamExt, stream};
use slog::{Logger, debug};
use tonic::{Request, Response, Status, Streaming};

use crate::clients::{
    Agent, ClientSeen, ClientTerminated, CloseTelemetry, GrpcClients, OpenTelemetry, Renewal, Role,
    TelemetrySender, TrackDelivery, UntrackDeliveries,
};
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
    /// Longest a receive is held when nothing is there (the broker's
    /// long-polling cap).
    pub max_poll_ms: u64,
    /// The invisible duration of `auto_renew` deliveries (the client's
    /// own is ignored, as RocketMQ's proxy does); renewed ahead of it.
    pub auto_renew_invisible_ms: u64,
}

/// The broker actors a [`GrpcSession`] talks to.
#[derive(Clone)]
pub struct GrpcTargets {
    /// The single writer (sends).
    pub writer: ChildRef<CommitLogActor>,
    /// The topic table (routes).
    pub view: TopicView,
    /// The pop service (receive, ack, change of invisible duration).
    pub pop: ChildRef<PopService>,
    /// Ends transactions (commit, rollback of half messages).
    pub end_transaction: ChildRef<EndTransactionService>,
    /// Subscription groups (auto-created on first use as configured; a
    /// group consuming in order is a FIFO group).
    pub subscription_groups: ChildRef<SubscriptionGroupManager>,
    /// The connected clients (sessions by client id, Telemetry streams,
    /// renewed deliveries).
    pub clients: ChildRef<GrpcClients>,
    /// Send-back and dead letters (`ForwardMessageToDeadLetterQueue`).
    pub retry: ChildRef<RetryService>,
    /// The store (the message a receipt handle names).
    pub store: BrokerStore,
}

/// The client id a request carries (`x-mq-client-id`), if any.
fn client_id_of<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get("x-mq-client-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// What a client's settings say it is.
fn role_of(settings: &pb::Settings) -> Role {
    match &settings.pub_sub {
        Some(pb::settings::PubSub::Publishing(p)) => {
            Role::Producer(p.topics.iter().map(|t| t.name.clone()).collect())
        }
        Some(pb::settings::PubSub::Subscription(sub)) => Role::Consumer(
            sub.group
                .as_ref()
                .map(|g| g.name.clone())
                .unwrap_or_default(),
            sub.subscriptions
                .iter()
                .map(convert::subscription_data)
                .collect(),
        ),
        None => Role::Unknown,
    }
}

/// Whether `group` consumes in order (`consume_message_orderly`),
/// resolving (and, when allowed, auto-creating) it as a native heartbeat
/// does. A group that cannot be resolved is not FIFO.
async fn group_is_fifo(groups: &ChildRef<SubscriptionGroupManager>, group: &str) -> bool {
    if group.is_empty() {
        return false;
    }
    let Some(manager) = groups.addr() else {
        return false;
    };
    match manager
        .send(ResolveGroups {
            groups: vec![group.to_string()],
        })
        .await
    {
        Ok(Ok(configs)) => configs.first().is_some_and(|c| c.consume_message_orderly),
        _ => false,
    }
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

    /// The receipt handles the broker holds for the deliveries the client
    /// knows as `handles` (renewed ones changed), no longer renewed.
    async fn untrack(&self, handles: Vec<String>) -> Vec<String> {
        match self.targets.clients.addr() {
            Some(clients) if !handles.is_empty() => {
                let fallback = handles.clone();
                clients
                    .send(UntrackDeliveries { handles })
                    .await
                    .unwrap_or(fallback)
            }
            _ => handles,
        }
    }

    fn seen(&self, client_id: Option<String>, role: Option<Role>) {
        if let (Some(client_id), Some(clients)) = (client_id, self.targets.clients.addr()) {
            clients.do_send(ClientSeen {
                client_id,
                role,
                agent: None,
            });
        }
    }

    /// The topic's config, or the one it will have once auto-created
    /// (see [`GrpcSessionConfig::auto_create_queues`]).
    fn topic_config(&self, topic: &str) -> Option<TopicConfig> {
        if let Some(cfg) = self.targets.view.snapshot().get(topic) {
            return Some(cfg.clone());
        }
        self.config
            .auto_create_queues
            .filter(|_| actormq_protocol::validate::validate_topic(topic).is_ok())
            .map(|queues| TopicConfig {
                topic_name: topic.to_string(),
                read_queue_nums: queues,
                write_queue_nums: queues,
                ..TopicConfig::default()
            })
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
        let half = req
            .properties
            .contains_key(actormq_protocol::system_topic::PROPERTY_TRANSACTION_PREPARED);
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
                transaction_id: if half {
                    convert::transaction_id(&reply.fields.msg_id, reply.fields.queue_offset)
                } else {
                    String::new()
                },
                offset: i64::try_from(reply.fields.queue_offset).unwrap_or(i64::MAX),
                recall_handle: String::new(),
            },
            Err(e) => refused(status_of(e.code, e.remark)),
        }
    }
}

/// The status of a response with one entry per item: the entries' status
/// when they agree, else `MULTIPLE_RESULTS`.
fn overall(statuses: impl Iterator<Item = Option<pb::Status>>) -> pb::Status {
    let mut first: Option<pb::Status> = None;
    for s in statuses {
        let s = s.unwrap_or_else(ok);
        match &first {
            None => first = Some(s),
            Some(f) if f.code == s.code => {}
            Some(_) => {
                return convert::status(
                    pb::Code::MultipleResults as i32,
                    "results differ per entry",
                );
            }
        }
    }
    first.unwrap_or_else(ok)
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
        let cfg = self.topic_config(&topic);
        let reply = match cfg {
            Some(cfg) => pb::QueryRouteResponse {
                status: Some(ok()),
                message_queues: convert::route(
                    &cfg,
                    &self.config.broker_name,
                    self.config.endpoint,
                ),
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
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.seen(client_id_of(&request), None);
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
        request: Request<pb::QueryAssignmentRequest>,
    ) -> Result<Response<pb::QueryAssignmentResponse>, Status> {
        let req = request.into_inner();
        let topic = req.topic.map(|t| t.name).unwrap_or_default();
        let group = req.group.map(|g| g.name).unwrap_or_default();
        let fifo = group_is_fifo(&self.targets.subscription_groups, &group).await;
        let reply = match self.topic_config(&topic) {
            Some(cfg) => pb::QueryAssignmentResponse {
                status: Some(ok()),
                assignments: convert::assignments(
                    &cfg,
                    &self.config.broker_name,
                    self.config.endpoint,
                    fifo,
                ),
            },
            None => pb::QueryAssignmentResponse {
                status: Some(status_of(
                    ResponseCode::TopicNotExist,
                    format!("topic {topic} does not exist"),
                )),
                assignments: Vec::new(),
            },
        };
        Ok(Response::new(reply))
    }

    type ReceiveMessageStream = BoxStream<pb::ReceiveMessageResponse>;

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Result<Response<Self::ReceiveMessageStream>, Status> {
        let status_only = |status: pb::Status| {
            once(pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Status(status)),
            })
        };
        let client_id = client_id_of(&request);
        let req = request.into_inner();
        let group = req
            .group
            .as_ref()
            .map(|g| g.name.as_str())
            .unwrap_or_default();
        let fifo = group_is_fifo(&self.targets.subscription_groups, group).await;
        let pop = match convert::pop_request(&req, fifo, self.config.max_poll_ms, now_ms()) {
            Ok(mut pop) => {
                if req.auto_renew {
                    pop.invisible_time_ms = self.config.auto_renew_invisible_ms;
                }
                pop
            }
            Err(r) => return Ok(Response::new(status_only(r.status()))),
        };
        let Some(pop_service) = self.targets.pop.addr() else {
            return Ok(Response::new(status_only(status_of(
                ResponseCode::SystemBusy,
                "the pop service is restarting",
            ))));
        };
        // The pop happens after `born_time_ms`: a renewal planned from it
        // is never late.
        let (pop_group, pop_invisible_ms, popped_at) = (
            pop.consumer_group.clone(),
            pop.invisible_time_ms,
            pop.born_time_ms,
        );
        let result = pop_service
            .send(Call::new(pop))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r);
        let empty = |code| {
            matches!(
                code,
                ResponseCode::NoMessage | ResponseCode::PollingTimeout | ResponseCode::PullNotFound
            )
        };
        let reply = match result {
            Ok(r) if empty(r.code) => None,
            Ok(r) => Some(r),
            Err(e) if empty(e.code) => None,
            Err(e) => return Ok(Response::new(status_only(status_of(e.code, e.remark)))),
        };
        let messages = match reply.map(|r| actormq_protocol::batch::decode_stored(&r.body)) {
            None => Vec::new(),
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                return Ok(Response::new(status_only(status_of(
                    ResponseCode::SystemError,
                    e.to_string(),
                ))));
            }
        };
        if messages.is_empty() {
            return Ok(Response::new(status_only(status_of(
                ResponseCode::NoMessage,
                "no new message",
            ))));
        }
        // As RocketMQ's proxy: the status, the delivery time (clients
        // measure delivery latency from it; the Python push consumer fails
        // without it), then the messages.
        let mut out = Vec::with_capacity(messages.len() + 2);
        out.push(Ok(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::Status(ok())),
        }));
        out.push(Ok(pb::ReceiveMessageResponse {
            content: Some(pb::receive_message_response::Content::DeliveryTimestamp(
                convert::timestamp(now_ms()),
            )),
        }));
        let delivered: Vec<pb::Message> = messages.into_iter().map(convert::delivered).collect();
        // auto_renew (push consumers): kept invisible while the client
        // lives, until it acks, changes or forwards them.
        if let (true, Some(client_id), Some(clients)) =
            (req.auto_renew, client_id, self.targets.clients.addr())
        {
            for m in &delivered {
                let Some(handle) = m
                    .system_properties
                    .as_ref()
                    .and_then(|s| s.receipt_handle.clone())
                else {
                    continue;
                };
                clients.do_send(TrackDelivery {
                    renewal: Renewal {
                        client_id: client_id.clone(),
                        group: pop_group.clone(),
                        topic: m.topic.as_ref().map(|t| t.name.clone()).unwrap_or_default(),
                        current: handle.clone(),
                        invisible_ms: pop_invisible_ms,
                        visible_at_ms: popped_at + pop_invisible_ms,
                        in_flight: false,
                        untracked: false,
                    },
                    handle,
                });
            }
        }
        out.extend(delivered.into_iter().map(|m| {
            Ok(pb::ReceiveMessageResponse {
                content: Some(pb::receive_message_response::Content::Message(m)),
            })
        }));
        Ok(Response::new(Box::pin(stream::iter(out))))
    }

    async fn ack_message(
        &self,
        request: Request<pb::AckMessageRequest>,
    ) -> Result<Response<pb::AckMessageResponse>, Status> {
        let req = request.into_inner();
        let group = req.group.map(|g| g.name).unwrap_or_default();
        let topic = req.topic.map(|t| t.name).unwrap_or_default();
        let current = self
            .untrack(
                req.entries
                    .iter()
                    .map(|e| e.receipt_handle.clone())
                    .collect(),
            )
            .await;
        // One batch ack (one record) for the well-formed handles; a
        // malformed one is answered alone.
        let mut statuses: Vec<Option<pb::Status>> = vec![None; req.entries.len()];
        let mut batch = Vec::with_capacity(req.entries.len());
        let mut index_of = Vec::with_capacity(req.entries.len());
        for (i, handle) in current.iter().enumerate() {
            match convert::batch_ack_entry(handle) {
                Ok(entry) => {
                    batch.push(entry);
                    index_of.push(i);
                }
                Err(r) => statuses[i] = Some(r.status()),
            }
        }
        if !batch.is_empty() {
            let ack = BatchAckMessageRequest {
                consumer_group: group,
                topic,
                acks: batch,
            };
            let result = match self.targets.pop.addr() {
                None => Err(ServiceError::busy("the pop service is restarting")),
                Some(pop) => pop
                    .send(Call::new(ack))
                    .await
                    .map_err(ServiceError::from)
                    .and_then(|r| r),
            };
            match result {
                Ok(reply) => {
                    for f in reply.fields.failed {
                        if let Some(&i) =
                            usize::try_from(f.index).ok().and_then(|k| index_of.get(k))
                        {
                            let code =
                                ResponseCode::try_from(f.code).unwrap_or(ResponseCode::SystemError);
                            statuses[i] = Some(status_of(code, f.remark));
                        }
                    }
                    for &i in &index_of {
                        statuses[i].get_or_insert_with(ok);
                    }
                }
                Err(e) => {
                    for &i in &index_of {
                        statuses[i] = Some(status_of(e.code, e.remark.clone()));
                    }
                }
            }
        }
        let entries: Vec<pb::AckMessageResultEntry> = req
            .entries
            .into_iter()
            .zip(statuses)
            .map(|(e, status)| pb::AckMessageResultEntry {
                message_id: e.message_id,
                receipt_handle: e.receipt_handle,
                status: Some(status.unwrap_or_else(ok)),
            })
            .collect();
        let status = overall(entries.iter().map(|e| e.status.clone()));
        Ok(Response::new(pb::AckMessageResponse {
            status: Some(status),
            entries,
        }))
    }

    async fn forward_message_to_dead_letter_queue(
        &self,
        request: Request<pb::ForwardMessageToDeadLetterQueueRequest>,
    ) -> Result<Response<pb::ForwardMessageToDeadLetterQueueResponse>, Status> {
        let req = request.into_inner();
        let answer = |status: pb::Status| {
            Ok(Response::new(pb::ForwardMessageToDeadLetterQueueResponse {
                status: Some(status),
            }))
        };
        let group = req.group.map(|g| g.name).unwrap_or_default();
        let topic = req.topic.map(|t| t.name).unwrap_or_default();
        if group.is_empty() {
            return answer(convert::status(
                actormq_actors::broker::error_map::grpc::ILLEGAL_CONSUMER_GROUP,
                "forward without consumer group",
            ));
        }
        let handle = self
            .untrack(vec![req.receipt_handle.clone()])
            .await
            .pop()
            .unwrap_or(req.receipt_handle);
        // The message the handle names, and its ack (checked first: a
        // stale or expired handle forwards nothing).
        let h = match convert::receipt_handle(&handle) {
            Ok(h) => h,
            Err(r) => return answer(r.status()),
        };
        let ack = match convert::ack_request(&group, &topic, &handle) {
            Ok(ack) => ack,
            Err(r) => return answer(r.status()),
        };
        let Some(view) =
            self.targets
                .store
                .read_by_queue_offset(&h.topic, h.queue_id, h.queue_offset)
        else {
            return answer(status_of(
                ResponseCode::PullNotFound,
                format!(
                    "no message at {}/{}@{}",
                    h.topic, h.queue_id, h.queue_offset
                ),
            ));
        };
        let (Some(retry), Some(pop)) = (self.targets.retry.addr(), self.targets.pop.addr()) else {
            return answer(status_of(
                ResponseCode::SystemBusy,
                "the retry or pop service is restarting",
            ));
        };
        let dead = convert::dead_letter_request(&group, &topic, view.commit_log_offset());
        if let Err(e) = retry
            .send(Call::new(dead))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r)
        {
            return answer(status_of(e.code, e.remark));
        }
        // Stored in the dead-letter queue: the delivery is done.
        match pop
            .send(Call::new(ack))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r)
        {
            Ok(_) => answer(ok()),
            Err(e) => answer(status_of(e.code, e.remark)),
        }
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
        request: Request<pb::EndTransactionRequest>,
    ) -> Result<Response<pb::EndTransactionResponse>, Status> {
        let req = request.into_inner();
        let answer = |status: pb::Status| {
            Ok(Response::new(pb::EndTransactionResponse {
                status: Some(status),
            }))
        };
        let end = match convert::end_transaction_request(&req) {
            Ok(end) => end,
            Err(r) => return answer(r.status()),
        };
        let Some(service) = self.targets.end_transaction.addr() else {
            return answer(status_of(
                ResponseCode::SystemBusy,
                "the end-transaction service is restarting",
            ));
        };
        match service
            .send(Call::new(end))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r)
        {
            Ok(_) => answer(ok()),
            Err(e) => answer(status_of(e.code, e.remark)),
        }
    }

    type TelemetryStream = BoxStream<pb::TelemetryCommand>;

    async fn telemetry(
        &self,
        request: Request<Streaming<pb::TelemetryCommand>>,
    ) -> Result<Response<Self::TelemetryStream>, Status> {
        let max_body_size = self.config.max_body_size;
        let long_polling_ms = self.config.max_poll_ms;
        let logger = self.logger.clone();
        let groups = self.targets.subscription_groups.clone();
        let clients = self.targets.clients.clone();
        let client_id = client_id_of(&request);
        let mut inbound = request.into_inner();
        // The stream's answers (settings) and the broker's commands
        // (transaction checks, sent by the registry) share one channel.
        let (sender, mut out): (TelemetrySender, _) = tokio::sync::mpsc::channel(64);
        let generation = match (&client_id, clients.addr()) {
            (Some(id), Some(registry)) => registry
                .send(OpenTelemetry {
                    client_id: id.clone(),
                    sender: sender.clone(),
                })
                .await
                .ok(),
            _ => None,
        };
        tokio::spawn(async move {
            while let Some(cmd) = inbound.next().await {
                match cmd {
                    Ok(pb::TelemetryCommand {
                        command: Some(pb::telemetry_command::Command::Settings(s)),
                        ..
                    }) => {
                        let role = role_of(&s);
                        let fifo = match &role {
                            Role::Consumer(g, _) => group_is_fifo(&groups, g).await,
                            _ => false,
                        };
                        if let (Some(id), Some(registry)) = (&client_id, clients.addr()) {
                            registry.do_send(ClientSeen {
                                client_id: id.clone(),
                                role: Some(role),
                                agent: Agent::of(s.user_agent.as_ref()),
                            });
                        }
                        let answer = pb::TelemetryCommand {
                            status: Some(ok()),
                            command: Some(pb::telemetry_command::Command::Settings(
                                convert::complete_settings(s, max_body_size, long_polling_ms, fifo),
                            )),
                        };
                        if sender.send(Ok(answer)).await.is_err() {
                            break; // the client is gone
                        }
                    }
                    // Thread stack traces, verify results: no answer.
                    Ok(_) => {}
                    Err(e) => {
                        debug!(logger, "telemetry stream ended"; "status" => %e);
                        break;
                    }
                }
            }
            if let (Some(client_id), Some(generation), Some(registry)) =
                (client_id, generation, clients.addr())
            {
                registry.do_send(CloseTelemetry {
                    client_id,
                    generation,
                });
            }
        });
        let answers = stream::poll_fn(move |cx| out.poll_recv(cx));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn notify_client_termination(
        &self,
        request: Request<pb::NotifyClientTerminationRequest>,
    ) -> Result<Response<pb::NotifyClientTerminationResponse>, Status> {
        if let (Some(client_id), Some(clients)) =
            (client_id_of(&request), self.targets.clients.addr())
        {
            clients.do_send(ClientTerminated { client_id });
        }
        Ok(Response::new(pb::NotifyClientTerminationResponse {
            status: Some(ok()),
        }))
    }

    async fn change_invisible_duration(
        &self,
        request: Request<pb::ChangeInvisibleDurationRequest>,
    ) -> Result<Response<pb::ChangeInvisibleDurationResponse>, Status> {
        let mut req = request.into_inner();
        if let Some(current) = self.untrack(vec![req.receipt_handle.clone()]).await.pop() {
            req.receipt_handle = current;
        }
        let refused = |status: pb::Status| {
            Ok(Response::new(pb::ChangeInvisibleDurationResponse {
                status: Some(status),
                receipt_handle: String::new(),
            }))
        };
        let change = match convert::change_invisible_request(&req) {
            Ok(c) => c,
            Err(r) => return refused(r.status()),
        };
        let Some(pop) = self.targets.pop.addr() else {
            return refused(status_of(
                ResponseCode::SystemBusy,
                "the pop service is restarting",
            ));
        };
        match pop
            .send(Call::new(change))
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r)
        {
            Ok(reply) => Ok(Response::new(pb::ChangeInvisibleDurationResponse {
                status: Some(ok()),
                receipt_handle: reply.fields.extra_info,
            })),
            Err(e) => refused(status_of(e.code, e.remark)),
        }
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

//! The connected gRPC clients, one entry per `x-mq-client-id`: what the
//! client is (producer of some topics, consumer of a group), when it was
//! last seen, its Telemetry stream (the channel for the broker's
//! transaction checks), and the deliveries it asked to have renewed
//! (`auto_renew`).
//!
//! [`ClientTable`] holds the decisions, no runtime in it; [`GrpcClients`]
//! is the supervised actor around it: it registers producers with the
//! broker's `GroupManager` (so the `TransactionChecker` finds them; their
//! connection ids carry [`FOREIGN_CONN_BIT`]) and consumers (as
//! `ConsumePop` members: listed by `admin connections -g`, outside the
//! native rebalance), sends the checks over
//! Telemetry, renews deliveries before they become visible again, and
//! forgets a client on `NotifyClientTermination`, at the end of its
//! Telemetry stream, or when it has not been seen for `idle_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actormq_actors::broker::group_manager::GroupManager;
use actormq_actors::broker::group_notifier::{FOREIGN_CONN_BIT, PushTransactionCheck};
use actormq_actors::broker::{PopService, now_ms};
use actormq_actors::runtime::net::ConnectionClosed;
use actormq_actors::runtime::{Call, ChildRef, Origin, ServiceError};
use actormq_protocol::request::heartbeat::{
    ConsumeType, ConsumerData, HeartbeatRequest, ProducerData, SubscriptionData,
};
use actormq_protocol::request::pop::ChangeInvisibleTimeRequest;
use slog::{Logger, debug, info, o};
use tokio::sync::mpsc;

use crate::convert;
use crate::pb;

/// What a client is, from its Telemetry settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Role {
    /// No settings seen yet.
    #[default]
    Unknown,
    /// A producer publishing these topics (a transaction check for a half
    /// message of one of them may go to it).
    Producer(Vec<String>),
    /// A consumer of this group, with its subscriptions.
    Consumer(String, Vec<SubscriptionData>),
}

/// One connected client.
#[derive(Debug, Clone)]
pub struct Client<S> {
    /// Its connection id for the broker's group tables (carries
    /// [`FOREIGN_CONN_BIT`]).
    pub conn_id: u64,
    /// What it is.
    pub role: Role,
    /// When it was last seen (any RPC naming it), ms since the epoch.
    pub last_seen_ms: u64,
    /// Its open Telemetry stream: the stream's generation and its sender.
    pub telemetry: Option<(u64, S)>,
    /// The SDK it says it is (its settings' user agent), once known.
    pub agent: Option<Agent>,
}

/// A client's SDK, as `admin connections` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// RocketMQ's language code name (`JAVA`, `PYTHON`, `GO`, `NODE_JS`, ...).
    pub language: String,
    /// The SDK's version.
    pub version: String,
}

impl Agent {
    /// The agent a client's settings carry: RocketMQ's language code for
    /// the gRPC `Language` (as its proxy names them: `GOLANG` is `GO`,
    /// `DOT_NET` is `DOTNET`), or `None` when the settings carry no user
    /// agent.
    pub fn of(ua: Option<&pb::Ua>) -> Option<Self> {
        let ua = ua?;
        let language = match pb::Language::try_from(ua.language) {
            Ok(pb::Language::Golang) => "GO".to_string(),
            Ok(pb::Language::DotNet) => "DOTNET".to_string(),
            Ok(pb::Language::Unspecified) | Err(_) => "OTHER".to_string(),
            Ok(l) => l.as_str_name().to_string(),
        };
        Some(Self {
            language,
            version: ua.version.clone(),
        })
    }
}

/// A delivery kept invisible while its client lives (`auto_renew`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    /// The client that received it.
    pub client_id: String,
    /// Consumer group and topic.
    pub group: String,
    /// The topic it was received from.
    pub topic: String,
    /// The receipt handle the broker holds now (the client keeps the
    /// one it was delivered with).
    pub current: String,
    /// The invisible duration each renewal sets.
    pub invisible_ms: u64,
    /// When the delivery becomes visible unless renewed.
    pub visible_at_ms: u64,
    /// A renewal of it is under way.
    pub in_flight: bool,
    /// Acked (or changed) while a renewal was under way: dropped once it
    /// ends.
    pub untracked: bool,
}

/// A renewal is due this long before the delivery would become visible:
/// half its invisible duration, at most 10 s (RocketMQ's proxy renews
/// 10 s ahead), so a loaded broker has time to store it.
pub fn renew_ahead_ms(invisible_ms: u64) -> u64 {
    (invisible_ms / 2).min(10_000)
}

/// The connected clients. See the module docs. `S` is a Telemetry
/// stream's sender.
#[derive(Debug)]
pub struct ClientTable<S> {
    clients: HashMap<String, Client<S>>,
    /// By the client's original receipt handle.
    renewals: HashMap<String, Renewal>,
    next_conn: u64,
    next_generation: u64,
}

impl<S> Default for ClientTable<S> {
    fn default() -> Self {
        Self {
            clients: HashMap::new(),
            renewals: HashMap::new(),
            next_conn: 1,
            next_generation: 1,
        }
    }
}

impl<S: Clone> ClientTable<S> {
    /// Notes `client_id` seen at `now_ms` (a new client gets a connection
    /// id); returns it.
    pub fn seen(&mut self, client_id: &str, now_ms: u64) -> &mut Client<S> {
        let next_conn = &mut self.next_conn;
        let client = self
            .clients
            .entry(client_id.to_string())
            .or_insert_with(|| {
                let conn_id = FOREIGN_CONN_BIT | *next_conn;
                *next_conn += 1;
                Client {
                    conn_id,
                    role: Role::Unknown,
                    last_seen_ms: now_ms,
                    telemetry: None,
                    agent: None,
                }
            });
        client.last_seen_ms = client.last_seen_ms.max(now_ms);
        client
    }

    /// The client's Telemetry stream is `sender` from now on (a stream
    /// opened before it is replaced); returns the stream's generation.
    pub fn open_telemetry(&mut self, client_id: &str, sender: S, now_ms: u64) -> u64 {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.seen(client_id, now_ms).telemetry = Some((generation, sender));
        generation
    }

    /// Telemetry stream `generation` of `client_id` ended: the client is
    /// gone (a live client opens a new stream and is known again) unless
    /// a newer stream replaced it. Returns the client removed.
    pub fn close_telemetry(&mut self, client_id: &str, generation: u64) -> Option<Client<S>> {
        let current = self
            .clients
            .get(client_id)
            .and_then(|c| c.telemetry.as_ref())
            .map(|(g, _)| *g);
        if current == Some(generation) {
            self.remove(client_id)
        } else {
            None
        }
    }

    /// Forgets `client_id` and its renewals; returns what it was.
    pub fn remove(&mut self, client_id: &str) -> Option<Client<S>> {
        let client = self.clients.remove(client_id)?;
        self.renewals.retain(|_, r| r.client_id != client_id);
        Some(client)
    }

    /// Forgets every client not seen for longer than `timeout_ms`;
    /// returns them.
    pub fn scan_idle(&mut self, now_ms: u64, timeout_ms: u64) -> Vec<(String, Client<S>)> {
        let idle: Vec<String> = self
            .clients
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_seen_ms) > timeout_ms)
            .map(|(id, _)| id.clone())
            .collect();
        idle.into_iter()
            .filter_map(|id| self.remove(&id).map(|c| (id, c)))
            .collect()
    }

    /// The client with connection id `conn_id`.
    pub fn by_conn(&self, conn_id: u64) -> Option<(&str, &Client<S>)> {
        self.clients
            .iter()
            .find(|(_, c)| c.conn_id == conn_id)
            .map(|(id, c)| (id.as_str(), c))
    }

    /// The client `client_id`.
    pub fn get(&self, client_id: &str) -> Option<&Client<S>> {
        self.clients.get(client_id)
    }

    /// How many clients are connected.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Keeps the delivery with receipt `handle` invisible while
    /// `client_id` lives (a delivery to an unknown client is not kept).
    pub fn track(&mut self, handle: &str, renewal: Renewal) -> bool {
        if !self.clients.contains_key(&renewal.client_id) {
            return false;
        }
        self.renewals.insert(handle.to_string(), renewal);
        true
    }

    /// Stops renewing the delivery the client knows as `handle` (acked,
    /// changed, forwarded): the handle the broker holds now (`handle`
    /// itself when it was not renewed), or `None` while a renewal of it
    /// is under way (the handle is then [`Self::renewed`]'s answer).
    pub fn untrack(&mut self, handle: &str) -> Option<String> {
        match self.renewals.get_mut(handle) {
            None => Some(handle.to_string()),
            Some(r) if r.in_flight => {
                r.untracked = true;
                None
            }
            Some(_) => self.renewals.remove(handle).map(|r| r.current),
        }
    }

    /// The renewals due at `now_ms` (marked in flight): the client's
    /// handle and the renewal.
    pub fn due(&mut self, now_ms: u64) -> Vec<(String, Renewal)> {
        self.renewals
            .iter_mut()
            .filter(|(_, r)| {
                !r.in_flight
                    && now_ms.saturating_add(renew_ahead_ms(r.invisible_ms)) >= r.visible_at_ms
            })
            .map(|(h, r)| {
                r.in_flight = true;
                (h.clone(), r.clone())
            })
            .collect()
    }

    /// The renewal of `handle` ended: the broker now holds `new_handle`,
    /// visible at `visible_at_ms`; `None`: it failed (acked meanwhile,
    /// or gone), and is not retried. Returns the handle for those waiting
    /// on an [`Self::untrack`] of it (`Some` once it is no longer
    /// renewed).
    pub fn renewed(&mut self, handle: &str, outcome: Option<(String, u64)>) -> Option<String> {
        let r = self.renewals.get_mut(handle)?;
        match outcome {
            Some((new_handle, visible_at_ms)) => {
                r.current = new_handle;
                r.visible_at_ms = visible_at_ms;
                r.in_flight = false;
                if r.untracked {
                    return self.renewals.remove(handle).map(|r| r.current);
                }
                None
            }
            None => self.renewals.remove(handle).map(|r| r.current),
        }
    }

    /// How many deliveries are being renewed.
    pub fn renewals(&self) -> usize {
        self.renewals.len()
    }
}

/// A Telemetry stream's sender.
pub type TelemetrySender = mpsc::Sender<Result<pb::TelemetryCommand, tonic::Status>>;

/// Settings of [`GrpcClients`].
#[derive(Debug, Clone)]
pub struct GrpcClientsConfig {
    /// A client not seen for this long is gone (default 120 s, as
    /// RocketMQ's proxy and the broker's native client table).
    pub idle_timeout: Duration,
    /// How often idle clients and due renewals are looked for (1 s).
    pub tick: Duration,
    /// The peer address the broker's group tables show for gRPC clients
    /// (the endpoint).
    pub endpoint: SocketAddr,
}

/// The registry actor. See the module docs.
pub struct GrpcClients {
    table: ClientTable<TelemetrySender>,
    /// Untracks waiting for a renewal under way, by the client's handle.
    waiting: HashMap<String, Vec<tokio::sync::oneshot::Sender<String>>>,
    groups: ChildRef<GroupManager>,
    pop: ChildRef<PopService>,
    config: GrpcClientsConfig,
    logger: Logger,
}

impl GrpcClients {
    /// An empty registry registering producers with `groups` and renewing
    /// through `pop`.
    pub fn new(
        config: GrpcClientsConfig,
        groups: ChildRef<GroupManager>,
        pop: ChildRef<PopService>,
        logger: &Logger,
    ) -> Self {
        Self {
            table: ClientTable::default(),
            waiting: HashMap::new(),
            groups,
            pop,
            config,
            logger: logger.new(o!("actor" => "GrpcClients")),
        }
    }

    /// A heartbeat of the client into the broker's group table.
    fn register(
        &self,
        client_id: &str,
        conn_id: u64,
        producer_data_set: Vec<ProducerData>,
        consumer_data_set: Vec<ConsumerData>,
        agent: Option<Agent>,
    ) {
        let Some(groups) = self.groups.addr() else {
            return;
        };
        let req = HeartbeatRequest {
            client_id: client_id.to_string(),
            producer_data_set,
            consumer_data_set,
            language: agent.as_ref().map(|a| a.language.clone()),
            version: agent.map(|a| a.version),
        };
        let mut call = Call::new(req);
        call.origin = Some(Origin {
            conn_id,
            peer: self.config.endpoint,
        });
        groups.do_send(call);
    }

    fn forget(&self, client_id: &str, client: &Client<TelemetrySender>, why: &str) {
        info!(self.logger, "grpc client gone"; "client_id" => client_id, "why" => why);
        if let Some(groups) = self.groups.addr() {
            groups.do_send(ConnectionClosed {
                conn_id: client.conn_id,
                peer: self.config.endpoint,
            });
        }
    }

    /// A renewal ended: the table learns it, and untracks waiting for it
    /// get the handle the broker holds (when the delivery is gone from
    /// the table, the renewal's new handle, else the client's).
    fn renewal_ended(&mut self, handle: &str, outcome: Option<(String, u64)>) {
        let fallback = outcome
            .as_ref()
            .map_or_else(|| handle.to_string(), |(h, _)| h.clone());
        let answer = self.table.renewed(handle, outcome);
        if let Some(waiters) = self.waiting.remove(handle) {
            let current = answer.unwrap_or(fallback);
            for w in waiters {
                let _ = w.send(current.clone());
            }
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let timeout = u64::try_from(self.config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        for (id, client) in self.table.scan_idle(now, timeout) {
            self.forget(&id, &client, "idle");
        }
        for (handle, r) in self.table.due(now) {
            let Some(pop) = self.pop.addr() else {
                self.renewal_ended(&handle, None);
                continue;
            };
            let req = match convert::receipt_handle(&r.current) {
                Ok(h) => ChangeInvisibleTimeRequest {
                    consumer_group: r.group.clone(),
                    topic: r.topic.clone(),
                    queue_id: h.queue_id,
                    offset: h.queue_offset,
                    extra_info: r.current.clone(),
                    invisible_time_ms: r.invisible_ms,
                },
                Err(_) => {
                    self.renewal_ended(&handle, None);
                    continue;
                }
            };
            let fut = pop.send(Call::new(req));
            ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
                let outcome = match res {
                    // Visible again when the broker says (its clock, its
                    // time of the change).
                    Ok(Ok(reply)) => Some((
                        reply.fields.extra_info,
                        reply
                            .fields
                            .pop_time_ms
                            .saturating_add(reply.fields.invisible_time_ms),
                    )),
                    Ok(Err(e)) => {
                        debug!(act.logger, "renewal refused"; "handle" => &handle, "error" => %e);
                        None
                    }
                    Err(_) => None,
                };
                act.renewal_ended(&handle, outcome);
            }));
        }
    }
}

impl Actor for GrpcClients {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.tick, |act, ctx| act.tick(ctx));
    }
}

/// The clients connected now, as a listener's counters (the node's
/// `actormq_connections{kind="grpc"}`): one per client id.
impl Handler<actormq_actors::runtime::net::GetListenerStats> for GrpcClients {
    type Result = MessageResult<actormq_actors::runtime::net::GetListenerStats>;
    fn handle(
        &mut self,
        _: actormq_actors::runtime::net::GetListenerStats,
        _: &mut Context<Self>,
    ) -> Self::Result {
        // Only the count means something here: gRPC connections are
        // tonic's, with no caps or buffers of actormq's to report.
        MessageResult(actormq_actors::runtime::net::ListenerStats {
            connections: self.table.len(),
            refused: 0,
            session_panics: 0,
            buffered_bytes: 0,
            max_buffered_bytes: 0,
            max_connections: None,
            max_connection_memory: None,
        })
    }
}

/// A client was seen (any RPC carrying `x-mq-client-id`); `role` when
/// its settings say what it is.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ClientSeen {
    /// The client id.
    pub client_id: String,
    /// What it is, when known from this RPC.
    pub role: Option<Role>,
    /// Its SDK, when known from this RPC (its settings).
    pub agent: Option<Agent>,
}

impl Handler<ClientSeen> for GrpcClients {
    type Result = ();
    fn handle(&mut self, msg: ClientSeen, _: &mut Context<Self>) {
        let client = self.table.seen(&msg.client_id, now_ms());
        if let Some(role) = msg.role {
            client.role = role;
        }
        if msg.agent.is_some() {
            client.agent = msg.agent;
        }
        // Producers and consumers are refreshed in the broker's group
        // table at every sighting (heartbeats every 10 s keep them there).
        let (conn_id, agent) = (client.conn_id, client.agent.clone());
        match client.role.clone() {
            Role::Producer(topics) => {
                let producers = topics
                    .iter()
                    .map(|t| ProducerData {
                        group_name: convert::producer_group(t),
                    })
                    .collect();
                self.register(&msg.client_id, conn_id, producers, Vec::new(), agent);
            }
            Role::Consumer(group, subscriptions) if !group.is_empty() => {
                let consumer = ConsumerData {
                    group_name: group,
                    consume_type: ConsumeType::ConsumePop,
                    subscription_data_set: subscriptions,
                    ..ConsumerData::default()
                };
                self.register(&msg.client_id, conn_id, Vec::new(), vec![consumer], agent);
            }
            _ => {}
        }
    }
}

/// A Telemetry stream of `client_id` opened; replies its generation.
#[derive(Debug, Clone, Message)]
#[rtype(result = "u64")]
pub struct OpenTelemetry {
    /// The client id.
    pub client_id: String,
    /// Where commands for the client go.
    pub sender: TelemetrySender,
}

impl Handler<OpenTelemetry> for GrpcClients {
    type Result = u64;
    fn handle(&mut self, msg: OpenTelemetry, _: &mut Context<Self>) -> u64 {
        self.table
            .open_telemetry(&msg.client_id, msg.sender, now_ms())
    }
}

/// Telemetry stream `generation` of `client_id` ended.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct CloseTelemetry {
    /// The client id.
    pub client_id: String,
    /// The stream's generation ([`OpenTelemetry`]'s reply).
    pub generation: u64,
}

impl Handler<CloseTelemetry> for GrpcClients {
    type Result = ();
    fn handle(&mut self, msg: CloseTelemetry, _: &mut Context<Self>) {
        if let Some(client) = self.table.close_telemetry(&msg.client_id, msg.generation) {
            self.forget(&msg.client_id, &client, "telemetry stream ended");
        }
    }
}

/// The client said it terminates (`NotifyClientTermination`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct ClientTerminated {
    /// The client id.
    pub client_id: String,
}

impl Handler<ClientTerminated> for GrpcClients {
    type Result = ();
    fn handle(&mut self, msg: ClientTerminated, _: &mut Context<Self>) {
        if let Some(client) = self.table.remove(&msg.client_id) {
            self.forget(&msg.client_id, &client, "terminated");
        }
    }
}

/// Keep a delivery invisible while its client lives (`auto_renew`).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct TrackDelivery {
    /// The receipt handle the client got.
    pub handle: String,
    /// The renewal.
    pub renewal: Renewal,
}

impl Handler<TrackDelivery> for GrpcClients {
    type Result = ();
    fn handle(&mut self, msg: TrackDelivery, _: &mut Context<Self>) {
        self.table.track(&msg.handle, msg.renewal);
    }
}

/// Stop renewing the deliveries the client knows as `handles`; replies
/// the handles the broker holds now, in order.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Vec<String>")]
pub struct UntrackDeliveries {
    /// The receipt handles the client got.
    pub handles: Vec<String>,
}

impl Handler<UntrackDeliveries> for GrpcClients {
    type Result = ResponseFuture<Vec<String>>;
    fn handle(&mut self, msg: UntrackDeliveries, _: &mut Context<Self>) -> Self::Result {
        let answers: Vec<Result<String, (String, tokio::sync::oneshot::Receiver<String>)>> = msg
            .handles
            .into_iter()
            .map(|h| match self.table.untrack(&h) {
                Some(current) => Ok(current),
                None => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    self.waiting.entry(h.clone()).or_default().push(tx);
                    Err((h, rx))
                }
            })
            .collect();
        Box::pin(async move {
            let mut out = Vec::with_capacity(answers.len());
            for a in answers {
                out.push(match a {
                    Ok(current) => current,
                    // The actor went away meanwhile: the client's handle.
                    Err((h, rx)) => rx.await.unwrap_or(h),
                });
            }
            out
        })
    }
}

/// How many clients are connected and how many deliveries are renewed.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "(usize, usize)")]
pub struct GetClientCounts;

impl Handler<GetClientCounts> for GrpcClients {
    type Result = MessageResult<GetClientCounts>;
    fn handle(&mut self, _: GetClientCounts, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.table.len(), self.table.renewals()))
    }
}

/// A transaction check for one of the gRPC producers: sent on its
/// Telemetry stream as a `RecoverOrphanedTransactionCommand`.
impl Handler<PushTransactionCheck> for GrpcClients {
    type Result = Result<(), ServiceError>;
    fn handle(&mut self, msg: PushTransactionCheck, _: &mut Context<Self>) -> Self::Result {
        let (client_id, client) = self
            .table
            .by_conn(msg.conn_id)
            .ok_or_else(|| ServiceError::system("the gRPC client is gone"))?;
        let (_, sender) = client
            .telemetry
            .as_ref()
            .ok_or_else(|| ServiceError::system("the gRPC client has no telemetry stream"))?;
        let stored = actormq_protocol::batch::decode_stored(&msg.body)
            .map_err(|e| ServiceError::system(format!("half message: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::system("half message missing"))?;
        let transaction_id =
            convert::transaction_id(&msg.req.msg_id, msg.req.tran_state_table_offset);
        let command = pb::TelemetryCommand {
            status: Some(convert::ok()),
            command: Some(
                pb::telemetry_command::Command::RecoverOrphanedTransactionCommand(
                    pb::RecoverOrphanedTransactionCommand {
                        message: Some(convert::orphaned(stored)),
                        transaction_id: transaction_id.clone(),
                    },
                ),
            ),
        };
        sender
            .try_send(Ok(command))
            .map_err(|e| ServiceError::system(format!("telemetry stream: {e}")))?;
        debug!(self.logger, "transaction check sent over telemetry";
            "client_id" => client_id, "transaction_id" => transaction_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_are_named_as_rocketmq_names_languages() {
        let ua = |language: pb::Language| pb::Ua {
            language: language as i32,
            version: "5.1.0".into(),
            ..Default::default()
        };
        let named = |language| Agent::of(Some(&ua(language))).unwrap().language;
        assert_eq!(named(pb::Language::Python), "PYTHON");
        assert_eq!(named(pb::Language::NodeJs), "NODE_JS");
        assert_eq!(named(pb::Language::Java), "JAVA");
        assert_eq!(named(pb::Language::Golang), "GO");
        assert_eq!(named(pb::Language::DotNet), "DOTNET");
        assert_eq!(named(pb::Language::Unspecified), "OTHER");
        assert_eq!(
            Agent::of(Some(&ua(pb::Language::Rust))).unwrap().version,
            "5.1.0"
        );
        assert_eq!(Agent::of(None), None);
    }

    type Table = ClientTable<u32>;

    #[test]
    fn a_client_has_one_entry_and_a_foreign_connection_id() {
        let mut t = Table::default();
        let a = t.seen("a", 10).conn_id;
        let b = t.seen("b", 10).conn_id;
        assert_ne!(a, b);
        assert!(actormq_actors::broker::group_notifier::is_foreign_conn(a));
        assert_eq!(t.seen("a", 20).conn_id, a);
        assert_eq!(t.len(), 2);
        assert_eq!(t.by_conn(b).map(|(id, _)| id), Some("b"));
    }

    #[test]
    fn the_end_of_the_current_telemetry_stream_forgets_the_client() {
        let mut t = Table::default();
        let first = t.open_telemetry("a", 1, 0);
        let second = t.open_telemetry("a", 2, 0);
        // The first stream's end does not drop a client that reopened.
        assert!(t.close_telemetry("a", first).is_none());
        assert_eq!(t.get("a").and_then(|c| c.telemetry), Some((second, 2)));
        assert!(t.close_telemetry("a", second).is_some());
        assert!(t.get("a").is_none());
    }

    #[test]
    fn idle_clients_and_their_renewals_are_dropped() {
        let mut t = Table::default();
        t.seen("old", 0);
        t.seen("new", 0);
        t.seen("new", 9_000);
        assert!(t.track("h1", renewal("old", 0, 1_000)));
        assert!(t.track("h2", renewal("new", 0, 1_000)));
        assert!(!t.track("h3", renewal("unknown", 0, 1_000)));
        let gone: Vec<String> = t
            .scan_idle(10_000, 5_000)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(gone, vec!["old".to_string()]);
        assert_eq!(t.renewals(), 1);
        assert!(t.remove("new").is_some());
        assert_eq!(t.renewals(), 0);
    }

    fn renewal(client: &str, now: u64, invisible: u64) -> Renewal {
        Renewal {
            client_id: client.into(),
            group: "g".into(),
            topic: "t".into(),
            current: "h0".into(),
            invisible_ms: invisible,
            visible_at_ms: now + invisible,
            in_flight: false,
            untracked: false,
        }
    }

    #[test]
    fn renewals_fall_due_ahead_of_visibility_and_keep_the_latest_handle() {
        let mut t = Table::default();
        t.seen("c", 0);
        t.track("h", renewal("c", 0, 3_000));
        // Due half the duration ahead: at 1.5 s.
        assert!(t.due(1_499).is_empty());
        let due = t.due(1_500);
        assert_eq!(due.len(), 1);
        // In flight: not handed out twice.
        assert!(t.due(2_500).is_empty());
        t.renewed("h", Some(("h1".into(), 5_000)));
        assert!(t.due(3_000).is_empty());
        assert_eq!(t.due(3_500).len(), 1);
        t.renewed("h", Some(("h2".into(), 7_000)));
        // The client acks with the handle it got; the broker's is h2.
        assert_eq!(t.untrack("h").as_deref(), Some("h2"));
        assert_eq!(t.untrack("other").as_deref(), Some("other"));
        assert_eq!(t.renewals(), 0);
    }

    #[test]
    fn an_ack_during_a_renewal_gets_the_renewed_handle() {
        let mut t = Table::default();
        t.seen("c", 0);
        t.track("h", renewal("c", 0, 3_000));
        assert_eq!(t.due(2_000).len(), 1);
        // Acked while the renewal is under way: wait for it.
        assert_eq!(t.untrack("h"), None);
        assert_eq!(
            t.renewed("h", Some(("h1".into(), 5_000))).as_deref(),
            Some("h1")
        );
        assert_eq!(t.renewals(), 0);
        // A failed renewal leaves the handle the broker had.
        t.track("g", renewal("c", 0, 3_000));
        assert_eq!(t.due(2_000).len(), 1);
        assert_eq!(t.untrack("g"), None);
        assert_eq!(t.renewed("g", None).as_deref(), Some("h0"));
    }

    #[test]
    fn a_failed_renewal_is_dropped() {
        let mut t = Table::default();
        t.seen("c", 0);
        t.track("h", renewal("c", 0, 3_000));
        assert_eq!(t.due(2_000).len(), 1);
        assert_eq!(t.renewed("h", None).as_deref(), Some("h0"));
        assert_eq!(t.renewals(), 0);
        assert!(t.due(10_000).is_empty());
    }

    #[test]
    fn renewing_ahead_is_capped() {
        assert_eq!(renew_ahead_ms(3_000), 1_500);
        assert_eq!(renew_ahead_ms(60_000), 10_000);
    }
}

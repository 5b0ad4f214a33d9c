//! `actormq bench produce --grpc ADDR` and `bench consume --simple --grpc
//! ADDR`: the same runs over the RocketMQ 5 gRPC endpoint
//! (`apache.rocketmq.v2.MessagingService`), driven by a client generated
//! from the same vendored protos as the node's server, on hyper's HTTP/2
//! client connections.
//!
//! * produce: `--concurrency` workers, each with one unbatched
//!   `SendMessage` in flight, over one HTTP/2 connection per 64 workers;
//!   the latency is that of each call.
//! * consume: `--concurrency` loops of `ReceiveMessage` (up to 32
//!   messages, invisible 60 s, long polling 1 s) and one `AckMessage` of
//!   what came, until `--messages` are acked or 10 s pass without one;
//!   the latency is store to ack.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actormq_grpc::pb;
use actormq_grpc::pb::messaging_service_client::MessagingServiceClient;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::codegen::Service;

use super::CliError;
use super::bench::{Stats, Summary};

/// Workers sharing one HTTP/2 connection.
const WORKERS_PER_CONNECTION: usize = 64;
/// Consumers stop waiting after this long with nothing new acked.
const IDLE: Duration = Duration::from_secs(10);
/// A receive's long polling.
const LONG_POLLING: Duration = Duration::from_secs(1);

/// What a gRPC produce run does.
#[derive(Debug, Clone)]
pub struct GrpcProducePlan {
    /// The node's gRPC endpoint.
    pub addr: SocketAddr,
    /// Topic.
    pub topic: String,
    /// Messages to send.
    pub messages: u64,
    /// Body of each.
    pub body: Vec<u8>,
    /// Sends in flight.
    pub concurrency: usize,
    /// Call timeout.
    pub timeout: Duration,
}

/// One HTTP/2 connection as the service tonic's generated client calls:
/// each request goes straight to hyper's connection (tonic's `Channel`
/// adds a buffer task, reconnection and per-call layers the load driver
/// does not want in what it measures). Call timeouts are the caller's.
#[derive(Clone)]
struct H2Connection(SendRequest<tonic::body::Body>);

type Client = MessagingServiceClient<H2Connection>;

impl Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Client, CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError(format!("gRPC endpoint {addr}: {e}"));
    let origin: http::Uri = format!("http://{addr}")
        .parse()
        .map_err(|e: http::uri::InvalidUri| failed(&e))?;
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
    stream.set_nodelay(true).map_err(|e| failed(&e))?;
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| failed(&e))?;
    // The connection's task ends when every client clone is dropped.
    tokio::spawn(conn);
    Ok(MessagingServiceClient::with_origin(
        H2Connection(send),
        origin,
    ))
}

async fn clients(
    addr: SocketAddr,
    workers: usize,
    timeout: Duration,
) -> Result<Vec<Client>, CliError> {
    let n = workers.div_ceil(WORKERS_PER_CONNECTION).max(1);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(connect(addr, timeout).await?);
    }
    Ok(out)
}

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.to_string(),
    })
}

fn message(topic: &str, body: &[u8], id: String) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id,
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            ..Default::default()
        }),
        body: body.to_vec(),
    }
}

/// One send; `Err` with the refusal.
async fn send_one(c: &mut Client, m: pb::Message, timeout: Duration) -> Result<(), String> {
    let call = c.send_message(pb::SendMessageRequest { messages: vec![m] });
    let reply = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer in {timeout:?}"))?
        .map_err(|s| s.to_string())?
        .into_inner();
    match reply.status {
        Some(s) if s.code == pb::Code::Ok as i32 => Ok(()),
        Some(s) => Err(format!("{}: {}", s.code, s.message)),
        None => Err("no status".into()),
    }
}

/// `bench produce --grpc`: see the module docs.
pub async fn produce(plan: GrpcProducePlan) -> Result<Summary, CliError> {
    let conns = clients(plan.addr, plan.concurrency, plan.timeout).await?;
    // Message ids: unique per run (a random-enough prefix and a counter).
    let prefix = format!(
        "{:016X}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            & u128::from(u64::MAX)
    );
    // Warm-up: the topic exists (or is created) and the node answers.
    let mut first = conns[0].clone();
    send_one(
        &mut first,
        message(&plan.topic, &plan.body, format!("{prefix}W")),
        plan.timeout,
    )
    .await
    .map_err(|e| CliError(format!("warm-up send over gRPC refused: {e}")))?;
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats::new()));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let began = Instant::now();
    let workers = (0..plan.concurrency).map(|w| {
        let mut c = conns[w % conns.len()].clone();
        let (plan, next, stats, first_error, prefix) = (
            plan.clone(),
            next.clone(),
            stats.clone(),
            first_error.clone(),
            prefix.clone(),
        );
        async move {
            let mut local = Stats::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= plan.messages {
                    break;
                }
                let m = message(&plan.topic, &plan.body, format!("{prefix}{i:016X}"));
                let sent_at = Instant::now();
                match send_one(&mut c, m, plan.timeout).await {
                    Ok(()) => {
                        local.record_us(
                            u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX),
                        );
                        local.ok(1, plan.body.len() as u64);
                    }
                    Err(e) => {
                        local.errors += 1;
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            }
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(&local);
        }
    });
    futures_util::future::join_all(workers).await;
    let elapsed = began.elapsed();
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("actormq: first failed send: {e}");
    }
    let total = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(total.summary(elapsed.as_secs_f64()))
}

/// What a gRPC receive + ack run does.
#[derive(Debug, Clone)]
pub struct GrpcConsumePlan {
    /// The node's gRPC endpoint.
    pub addr: SocketAddr,
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Messages to ack.
    pub messages: u64,
    /// Receives in flight.
    pub concurrency: usize,
    /// Call timeout (the receive's is this plus its long polling).
    pub timeout: Duration,
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn millis_of(t: &prost_types::Timestamp) -> u64 {
    u64::try_from(t.seconds)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(u64::try_from(t.nanos).unwrap_or(0) / 1_000_000)
}

async fn receive(c: &mut Client, plan: &GrpcConsumePlan) -> Result<Vec<pb::Message>, String> {
    // The call's deadline: the call timeout past the long polling.
    let deadline = tokio::time::Instant::now() + plan.timeout + LONG_POLLING;
    let call = c.receive_message(pb::ReceiveMessageRequest {
        group: resource(&plan.group),
        message_queue: Some(pb::MessageQueue {
            topic: resource(&plan.topic),
            id: -1,
            ..Default::default()
        }),
        filter_expression: Some(pb::FilterExpression {
            r#type: pb::FilterType::Tag as i32,
            expression: "*".into(),
        }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: LONG_POLLING.as_secs().try_into().unwrap_or(1),
            nanos: 0,
        }),
        attempt_id: None,
    });
    let late = || format!("no answer in {:?}", plan.timeout + LONG_POLLING);
    let mut stream = tokio::time::timeout_at(deadline, call)
        .await
        .map_err(|_| late())?
        .map_err(|s| s.to_string())?
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout_at(deadline, stream.message())
        .await
        .map_err(|_| late())?
        .map_err(|s| s.to_string())?
    {
        match r.content {
            Some(pb::receive_message_response::Content::Message(m)) => out.push(m),
            Some(pb::receive_message_response::Content::Status(s))
                if s.code != pb::Code::Ok as i32 && s.code != pb::Code::MessageNotFound as i32 =>
            {
                return Err(format!("{}: {}", s.code, s.message));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `bench consume --simple --grpc`: see the module docs.
pub async fn consume(plan: GrpcConsumePlan) -> Result<Summary, CliError> {
    let conns = clients(plan.addr, plan.concurrency, plan.timeout).await?;
    let plan = Arc::new(plan);
    let acked = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let last = Arc::new(Mutex::new(began));
    let stats = Arc::new(Mutex::new(Stats::new()));
    let workers = (0..plan.concurrency).map(|w| {
        let mut c = conns[w % conns.len()].clone();
        let (plan, acked, last, stats) = (plan.clone(), acked.clone(), last.clone(), stats.clone());
        async move {
            let mut local = Stats::new();
            loop {
                let idle = last.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                if acked.load(Ordering::Relaxed) >= plan.messages || idle >= IDLE {
                    break;
                }
                let got = match receive(&mut c, &plan).await {
                    Ok(got) => got,
                    Err(_) => {
                        local.errors += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if got.is_empty() {
                    continue;
                }
                let entries: Vec<pb::AckMessageEntry> = got
                    .iter()
                    .filter_map(|m| {
                        let s = m.system_properties.as_ref()?;
                        Some(pb::AckMessageEntry {
                            message_id: s.message_id.clone(),
                            receipt_handle: s.receipt_handle.clone()?,
                            lite_topic: None,
                        })
                    })
                    .collect();
                let ack = c.ack_message(pb::AckMessageRequest {
                    group: resource(&plan.group),
                    topic: resource(&plan.topic),
                    entries,
                });
                let Ok(Ok(reply)) = tokio::time::timeout(plan.timeout, ack).await else {
                    local.errors += got.len() as u64;
                    continue;
                };
                let now = now_us();
                let mut n = 0;
                for (m, e) in got.iter().zip(reply.into_inner().entries) {
                    if e.status.is_some_and(|s| s.code != pb::Code::Ok as i32) {
                        local.errors += 1;
                        continue;
                    }
                    let stored_ms = m
                        .system_properties
                        .as_ref()
                        .and_then(|s| s.store_timestamp.as_ref())
                        .map_or(0, millis_of);
                    local.record_us(now.saturating_sub(stored_ms.saturating_mul(1000)));
                    local.ok(1, m.body.len() as u64);
                    n += 1;
                }
                acked.fetch_add(n, Ordering::Relaxed);
                *last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            }
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .merge(&local);
        }
    });
    futures_util::future::join_all(workers).await;
    let secs = last
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .duration_since(began)
        .as_secs_f64();
    let total = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(total.summary(secs))
}

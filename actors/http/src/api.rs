//! The routes: `/metrics`, the JSON admin API (`/api/...`) and the
//! dashboard's static files.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/api/cluster` | `{"brokers":[…]}` as `admin cluster list --json` |
//! | GET | `/api/brokers/status[?broker=NAME]` | `{"brokers":[…]}` as `admin broker status --json` |
//! | GET | `/api/brokers/config[?broker=NAME]` | one broker's object as `admin broker config --json` |
//! | GET | `/api/topics` | `{"topics":[{"topic","queues","messages"[,"system"]}…]}` |
//! | GET | `/api/topics/{topic}` | `{"topic","route":[…],"queues":[…]}` |
//! | POST | `/api/topics` | body `{"topic","queues"?,"order"?}` → `{"created":[…]}` |
//! | DELETE | `/api/topics/{topic}` | as `admin topic delete --json` |
//! | GET | `/api/groups` | `{"groups":[{"group","orderly","retry_max","consumers","total_lag"}…]}` |
//! | GET | `/api/groups/{group}` | `{"group","progress":[…],"total_lag","connections":[…]}` |
//! | POST | `/api/groups` | body `{"group","orderly"?,"retry_max"?}` → `{"created":[…]}` |
//! | DELETE | `/api/groups/{group}` | as `admin group delete --json` |
//! | GET | `/api/messages/{msg_id}` | as `admin msg get --json` |
//! | GET | `/api/messages?topic=T&key=K[&begin_ms=&end_ms=]` | `{"messages":[…]}` |
//! | GET | `/api/dlq/{group}?limit=N` | `{"group","messages":[…]}` |
//! | POST | `/api/dlq/{group}/resend` | body `{"count"?}` → `{"resent":[…],"total":N,"remaining":M}` |
//! | GET | `/api/stats` | `{"now_ms","samples":[…]}` (2 s samples, last 5 min) |
//!
//! Every request gets a `request_id` (also sent back as `x-request-id`)
//! carried by the log lines about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::Service as _;
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use actormq_protocol::ResponseCode;
use actormq_sdk::ClientError;
use actormq_sdk::admin::{Admin, AdminError, CreateGroup, CreateTopic};
use serde::Deserialize;
use serde_json::json;
use slog::{Logger, debug, info, o, warn};

use crate::stats::StatsHistory;

include!(concat!(env!("OUT_DIR"), "/static_files.rs"));

/// Default cap on a request body (64 KiB): larger ones get 413.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// What the API needs to reach the cluster.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The name servers the admin client asks (the node's own, or its
    /// `--namesrv`).
    pub namesrv: Vec<String>,
    /// Timeout of each request to a name server or broker.
    pub timeout: Duration,
    /// Largest request body, bytes.
    pub body_limit: usize,
}

impl ApiConfig {
    /// Defaults for `namesrv`: 3 s timeout, 64 KiB bodies.
    pub fn new(namesrv: Vec<String>) -> Self {
        Self {
            namesrv,
            timeout: Duration::from_secs(3),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// The node's own data the endpoint shows besides the admin API: metrics
/// text and the stats history (absent on a name-server-only node).
#[derive(Default)]
pub struct Extra {
    /// Renders `/metrics`.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// `/api/stats`.
    pub stats: Option<Arc<StatsHistory>>,
}

/// An error answer: `{"error":"…"}` with a status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "error": self.message }))
    }
}

fn not_found_code(code: ResponseCode) -> bool {
    matches!(
        code,
        ResponseCode::TopicNotExist
            | ResponseCode::SubscriptionGroupNotExist
            | ResponseCode::QueryNotFound
    )
}

/// The status of an admin failure (the one place they are mapped).
pub fn status_of(e: &AdminError) -> StatusCode {
    let client = match e {
        AdminError::NotFound(_) => return StatusCode::NOT_FOUND,
        AdminError::Invalid(_) => return StatusCode::BAD_REQUEST,
        AdminError::Client(c) => c,
        AdminError::Broker { source, .. } => source.as_ref(),
        _ => return StatusCode::BAD_GATEWAY,
    };
    match client {
        ClientError::Broker { code, .. } if not_found_code(*code) => StatusCode::NOT_FOUND,
        ClientError::Invalid(_) => StatusCode::BAD_REQUEST,
        ClientError::NoRoute { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        ApiError::new(status_of(&e), e.to_string())
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

/// The admin client of one worker (made on its thread).
struct State {
    admin: Result<Admin, String>,
    extra: Arc<Extra>,
}

impl State {
    fn admin(&self) -> Result<&Admin, ApiError> {
        self.admin
            .as_ref()
            .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.clone()))
    }
}

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Adds every route to an actix-web app (called on each worker's thread).
pub fn configure(cfg: &mut web::ServiceConfig, config: ApiConfig, extra: Arc<Extra>, log: &Logger) {
    let admin = Admin::new(&config.namesrv, config.timeout, log).map_err(|e| e.to_string());
    let state = web::Data::new(State { admin, extra });
    let limit = config.body_limit;
    let json_cfg = web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|err, _| {
            let status = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            ApiError::new(status, err.to_string()).into()
        });
    let query_cfg = web::QueryConfig::default().error_handler(|err: QueryPayloadError, _| {
        ApiError::new(StatusCode::BAD_REQUEST, err.to_string()).into()
    });
    let path_cfg = web::PathConfig::default()
        .error_handler(|err, _| ApiError::new(StatusCode::BAD_REQUEST, err.to_string()).into());
    let log = log.clone();
    cfg.service(
        web::scope("")
            .app_data(state)
            .app_data(json_cfg)
            .app_data(query_cfg)
            .app_data(path_cfg)
            .app_data(web::PayloadConfig::default().limit(limit))
            .wrap_fn(move |req, srv| {
                let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
                let rlog = log.new(o!("request_id" => id));
                let (method, path) = (req.method().to_string(), req.path().to_owned());
                let started = Instant::now();
                let fut = srv.call(req);
                async move {
                    let mut res = fut.await;
                    match &mut res {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                                r.headers_mut().insert(
                                    actix_web::http::header::HeaderName::from_static(
                                        "x-request-id",
                                    ),
                                    v,
                                );
                            }
                            let ms = started.elapsed().as_millis() as u64;
                            if status >= 500 {
                                warn!(rlog, "http request"; "method" => method, "path" => path, "status" => status, "ms" => ms);
                            } else if status >= 400 {
                                info!(rlog, "http request"; "method" => method, "path" => path, "status" => status, "ms" => ms);
                            } else {
                                debug!(rlog, "http request"; "method" => method, "path" => path, "status" => status, "ms" => ms);
                            }
                        }
                        Err(e) => {
                            warn!(rlog, "http request failed"; "method" => method, "path" => path, "error" => %e);
                        }
                    }
                    res
                }
            })
            .route("/metrics", web::get().to(metrics))
            .route("/api/cluster", web::get().to(cluster))
            .route("/api/brokers/status", web::get().to(broker_status))
            .route("/api/brokers/config", web::get().to(broker_config))
            .route("/api/topics", web::get().to(topics))
            .route("/api/topics", web::post().to(create_topic))
            .route("/api/topics/{topic}", web::get().to(topic))
            .route("/api/topics/{topic}", web::delete().to(delete_topic))
            .route("/api/groups", web::get().to(groups))
            .route("/api/groups", web::post().to(create_group))
            .route("/api/groups/{group}", web::get().to(group))
            .route("/api/groups/{group}", web::delete().to(delete_group))
            .route("/api/messages", web::get().to(messages_by_key))
            .route("/api/messages/{msg_id}", web::get().to(message))
            .route("/api/dlq/{group}", web::get().to(dead_letters))
            .route("/api/dlq/{group}/resend", web::post().to(resend))
            .route("/api/stats", web::get().to(stats))
            .route("/", web::get().to(index))
            .route("/{file:.*}", web::get().to(static_file))
            .default_service(web::to(no_route)),
    );
}

async fn no_route(req: HttpRequest) -> ApiResult {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route {} {}", req.method(), req.path()),
    ))
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn serve_static(path: &str) -> ApiResult {
    match STATIC_FILES.iter().find(|(p, _)| *p == path) {
        Some((p, bytes)) => Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, content_type(p)))
            .body(*bytes)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no file /{path}"),
        )),
    }
}

async fn index() -> ApiResult {
    serve_static("index.html")
}

async fn static_file(path: web::Path<String>) -> ApiResult {
    let path = path.into_inner();
    if path.starts_with("api/") || path == "api" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route GET /{path}"),
        ));
    }
    serve_static(&path)
}

async fn metrics(state: web::Data<State>) -> ApiResult {
    match &state.extra.metrics {
        Some(render) => Ok(HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8"))
            .body(render())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this node has no metrics",
        )),
    }
}

async fn stats(state: web::Data<State>) -> ApiResult {
    match &state.extra.stats {
        Some(h) => Ok(HttpResponse::Ok().json(h.snapshot())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this node has no broker: no stats",
        )),
    }
}

async fn cluster(state: web::Data<State>) -> ApiResult {
    let brokers = state.admin()?.cluster_list().await?;
    Ok(HttpResponse::Ok().json(json!({ "brokers": brokers })))
}

/// `?broker=NAME`.
#[derive(Debug, Deserialize)]
struct BrokerQuery {
    broker: Option<String>,
}

async fn broker_status(state: web::Data<State>, q: web::Query<BrokerQuery>) -> ApiResult {
    let brokers = state.admin()?.broker_status(q.broker.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({ "brokers": brokers })))
}

/// The effective config of the broker named (its master first; without a
/// name, the first broker listed).
async fn broker_config(state: web::Data<State>, q: web::Query<BrokerQuery>) -> ApiResult {
    let configs = state.admin()?.broker_config(q.broker.as_deref()).await?;
    match configs.into_iter().next() {
        Some(c) => Ok(HttpResponse::Ok().json(c)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no broker registered")),
    }
}

async fn topics(state: web::Data<State>) -> ApiResult {
    let topics = state.admin()?.topics().await?;
    Ok(HttpResponse::Ok().json(json!({ "topics": topics })))
}

async fn topic(state: web::Data<State>, topic: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.admin()?.topic(&topic).await?))
}

/// `POST /api/topics` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTopicBody {
    topic: String,
    queues: Option<u32>,
    #[serde(default)]
    order: bool,
}

async fn create_topic(state: web::Data<State>, body: web::Json<CreateTopicBody>) -> ApiResult {
    let b = body.into_inner();
    let created = state
        .admin()?
        .create_topic(&CreateTopic {
            topic: b.topic,
            queues: b.queues,
            order: b.order,
            ..CreateTopic::default()
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "created": created })))
}

async fn delete_topic(state: web::Data<State>, topic: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.admin()?.delete_topic(&topic).await?))
}

async fn groups(state: web::Data<State>) -> ApiResult {
    let groups = state.admin()?.groups().await?;
    Ok(HttpResponse::Ok().json(json!({ "groups": groups })))
}

async fn group(state: web::Data<State>, group: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.admin()?.group(&group).await?))
}

/// `POST /api/groups` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateGroupBody {
    group: String,
    #[serde(default)]
    orderly: bool,
    retry_max: Option<u32>,
}

async fn create_group(state: web::Data<State>, body: web::Json<CreateGroupBody>) -> ApiResult {
    let b = body.into_inner();
    let created = state
        .admin()?
        .create_group(&CreateGroup {
            group: b.group,
            orderly: b.orderly,
            retry_max: b.retry_max.unwrap_or(16),
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "created": created })))
}

async fn delete_group(state: web::Data<State>, group: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.admin()?.delete_group(&group).await?))
}

async fn message(state: web::Data<State>, id: web::Path<String>) -> ApiResult {
    Ok(HttpResponse::Ok().json(state.admin()?.message(&id).await?))
}

/// `GET /api/messages` query.
#[derive(Debug, Deserialize)]
struct KeyQuery {
    topic: String,
    key: String,
    begin_ms: Option<u64>,
    end_ms: Option<u64>,
}

async fn messages_by_key(state: web::Data<State>, q: web::Query<KeyQuery>) -> ApiResult {
    let found = state
        .admin()?
        .messages_by_key(&q.topic, &q.key, q.begin_ms, q.end_ms)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "messages": found })))
}

/// `GET /api/dlq/{group}` query.
#[derive(Debug, Deserialize)]
struct DlqQuery {
    limit: Option<usize>,
}

async fn dead_letters(
    state: web::Data<State>,
    group: web::Path<String>,
    q: web::Query<DlqQuery>,
) -> ApiResult {
    let limit = q.limit.unwrap_or(100).min(1000);
    Ok(HttpResponse::Ok().json(state.admin()?.dead_letters(&group, limit).await?))
}

/// `POST /api/dlq/{group}/resend` body (may be empty).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResendBody {
    count: Option<u64>,
}

async fn resend(state: web::Data<State>, group: web::Path<String>, body: web::Bytes) -> ApiResult {
    let b: ResendBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResendBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad JSON: {e}")))?
    };
    let r = state.admin()?.resend_dead_letters(&group, b.count).await?;
    Ok(HttpResponse::Ok().json(json!({
        "group": group.into_inner(),
        "resent": r.messages,
        "total": r.resent,
        "remaining": r.remaining,
    })))
}

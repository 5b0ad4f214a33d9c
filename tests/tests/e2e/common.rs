//! Helpers shared by the e2e modules.

use std::net::SocketAddr;
use std::time::Duration;

use actormq_protocol::request::{
    ClusterInfo, CreateTopicRequest, GetBrokerClusterInfoRequest, GetRouteInfoByTopicRequest, Perm,
    TopicConfig, TopicRouteData,
};
use actormq_protocol::{Bytes, ResponseCode};
use actormq_tests::client::{Client, within};
use actormq_tests::eventually;
use actormq_tests::node::NodeProcess;

/// Bound on the convergence of registrations and routes.
pub const CONVERGE: Duration = Duration::from_secs(15);

/// Bound on a whole test body.
pub const TEST_LIMIT: Duration = Duration::from_secs(120);

/// Runs a test body under [`TEST_LIMIT`].
pub async fn bounded<F: std::future::Future<Output = ()>>(body: F) {
    within(TEST_LIMIT, body)
        .await
        .expect("test body exceeded its time bound");
}

pub const NO_ARGS: &[&str] = &[];

pub fn combined(args: &[&str]) -> NodeProcess {
    NodeProcess::combined(args).expect("start a combined node")
}

pub async fn connect(addr: SocketAddr) -> Client {
    Client::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"))
}

pub fn topic_config(name: &str, queues: u32) -> TopicConfig {
    TopicConfig {
        topic_name: name.into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: Perm::READ_WRITE,
        topic_sys_flag: 0,
        order: false,
    }
}

pub async fn create_topic(broker: SocketAddr, name: &str, queues: u32) {
    let mut c = connect(broker).await;
    c.call(
        &CreateTopicRequest {
            config: topic_config(name, queues),
        },
        Bytes::new(),
    )
    .await
    .expect("create topic call")
    .ok()
    .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
}

/// One route lookup on a fresh connection: `Ok(None)` for
/// `TOPIC_NOT_EXIST`.
pub async fn route(namesrv: SocketAddr, topic: &str) -> Result<Option<TopicRouteData>, String> {
    let mut c = Client::connect(namesrv).await.map_err(|e| e.to_string())?;
    let reply = c
        .call(
            &GetRouteInfoByTopicRequest {
                topic: topic.into(),
            },
            Bytes::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    match reply.code {
        ResponseCode::TopicNotExist => Ok(None),
        _ => reply.ok().map(Some).map_err(|e| e.to_string()),
    }
}

/// Whether `namesrv` routes `topic` to `broker_name` at `broker` with
/// `queues` queues (one lookup); `Err` says what differs.
pub async fn check_route(
    namesrv: SocketAddr,
    topic: &str,
    broker_name: &str,
    broker: SocketAddr,
    queues: u32,
) -> Result<TopicRouteData, String> {
    let r = route(namesrv, topic)
        .await?
        .ok_or_else(|| format!("no route for {topic}"))?;
    let q = r
        .queue_datas
        .iter()
        .find(|q| q.broker_name == broker_name)
        .ok_or_else(|| format!("no queues on {broker_name}: {r:?}"))?;
    if q.read_queue_nums != queues || q.write_queue_nums != queues {
        return Err(format!("queue counts {q:?}"));
    }
    let b = r
        .broker_datas
        .iter()
        .find(|b| b.broker_name == broker_name)
        .ok_or_else(|| format!("no broker data: {r:?}"))?;
    if b.master_addr() != Some(broker.to_string().as_str()) {
        return Err(format!("master addr {:?} != {broker}", b.master_addr()));
    }
    Ok(r)
}

/// Waits until `namesrv` routes `topic` to `broker_name` at `broker` with
/// `queues` queues. For a topic created (or changed) on a running broker:
/// the broker re-registers it after answering the create, so the route
/// follows shortly after.
pub async fn wait_route(
    namesrv: SocketAddr,
    topic: &str,
    broker_name: &str,
    broker: SocketAddr,
    queues: u32,
) -> TopicRouteData {
    eventually(CONVERGE, || {
        check_route(namesrv, topic, broker_name, broker, queues)
    })
    .await
    .unwrap_or_else(|e| panic!("route of {topic} on {namesrv}: {e}"))
}

/// Asserts, with one lookup, that `namesrv` routes `topic` as
/// [`check_route`] says: for topics a broker had when it started, which it
/// registered before printing its ready line.
pub async fn assert_route(
    namesrv: SocketAddr,
    topic: &str,
    broker_name: &str,
    broker: SocketAddr,
    queues: u32,
) {
    if let Err(e) = check_route(namesrv, topic, broker_name, broker, queues).await {
        panic!("route of {topic} on {namesrv} at the broker's ready line: {e}");
    }
}

/// Waits until `topic` has no route on `namesrv`.
pub async fn wait_no_route(namesrv: SocketAddr, topic: &str) {
    eventually(CONVERGE, || async move {
        match route(namesrv, topic).await? {
            None => Ok(()),
            Some(r) => Err(format!("still routed: {r:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{topic} on {namesrv}: {e}"));
}

pub async fn cluster_info(namesrv: SocketAddr) -> Result<ClusterInfo, String> {
    let mut c = Client::connect(namesrv).await.map_err(|e| e.to_string())?;
    c.call(&GetBrokerClusterInfoRequest {}, Bytes::new())
        .await
        .map_err(|e| e.to_string())?
        .ok()
        .map_err(|e| e.to_string())
}

/// Whether `info` lists `broker_name` in `cluster` with master `addr`.
pub fn lists_broker(
    info: &ClusterInfo,
    cluster: &str,
    broker_name: &str,
    addr: SocketAddr,
) -> bool {
    let in_cluster = info
        .cluster_addr_table
        .get(cluster)
        .is_some_and(|names| names.iter().any(|n| n == broker_name));
    let at_addr = info
        .broker_addr_table
        .get(broker_name)
        .and_then(|b| b.master_addr())
        == Some(addr.to_string().as_str());
    in_cluster && at_addr
}

/// Asserts, with one lookup, that `namesrv` lists `broker_name` in
/// `cluster` at `addr`. A broker prints its ready line only after its
/// first registration round was answered, so this holds as soon as the
/// broker's [`NodeProcess`] started: no waiting.
pub async fn assert_broker_listed(
    namesrv: SocketAddr,
    cluster: &str,
    broker_name: &str,
    addr: SocketAddr,
) {
    let info = cluster_info(namesrv)
        .await
        .unwrap_or_else(|e| panic!("cluster info from {namesrv}: {e}"));
    assert!(
        lists_broker(&info, cluster, broker_name, addr),
        "{broker_name} at {addr} not listed on {namesrv} at its ready line: {info:?}"
    );
}

// ---- data path helpers (t40, t50) ----

use actormq_protocol::StoredMessage;
use actormq_protocol::batch;
use actormq_protocol::request::{
    GetMaxOffsetRequest, PullMessageRequest, PullMessageResponse, SendMessageRequest,
};

/// A SEND_MESSAGE request for `body` to `topic`/`queue`, with a tag, keys
/// and a property so the round trip checks more than the body.
pub fn send_request(topic: &str, queue: u32, tag: &str, key: &str) -> SendMessageRequest {
    let mut props = std::collections::BTreeMap::new();
    props.insert("e2e-prop".to_string(), format!("v-{key}"));
    SendMessageRequest {
        producer_group: "e2e-producer".into(),
        topic: topic.into(),
        queue_id: queue,
        born_timestamp_ms: actormq_tests::now_ms(),
        tags: Some(tag.into()),
        keys: Some(key.into()),
        properties: props,
        ..SendMessageRequest::default()
    }
}

pub async fn max_offset(c: &mut Client, topic: &str, queue: u32) -> u64 {
    c.call(
        &GetMaxOffsetRequest {
            topic: topic.into(),
            queue_id: queue,
        },
        Bytes::new(),
    )
    .await
    .expect("GET_MAX_OFFSET")
    .ok()
    .expect("GET_MAX_OFFSET succeeds")
    .offset
}

pub fn pull_request(
    topic: &str,
    queue: u32,
    offset: u64,
    max: u32,
    suspend_ms: u64,
) -> PullMessageRequest {
    PullMessageRequest {
        consumer_group: "e2e-consumer".into(),
        topic: topic.into(),
        queue_id: queue,
        queue_offset: offset,
        max_msg_nums: max,
        suspend_timeout_ms: suspend_ms,
        ..PullMessageRequest::default()
    }
}

/// Waits (bounded) until the max offset of `topic`/`queue` is at least
/// `at_least`, and returns it. Sends are acknowledged once appended to the
/// commit log; the consume queue that GET_MAX_OFFSET and pulls read is
/// built asynchronously, so it may trail an acknowledged send briefly.
pub async fn wait_max_offset(c: &mut Client, topic: &str, queue: u32, at_least: u64) -> u64 {
    let deadline = std::time::Instant::now() + CONVERGE;
    loop {
        let max = max_offset(c, topic, queue).await;
        if max >= at_least {
            return max;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "max offset of {topic}/{queue} stuck at {max} < {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Pulls every message of `topic`/`queue` from offset 0 up to the queue's
/// max offset (no long polling), checking the offsets are consecutive.
/// Having reached the max it asks again, so a consume queue that trailed
/// the last acknowledged sends is read to its end; use
/// [`pull_all_at_least`] when the count is known.
pub async fn pull_all(c: &mut Client, topic: &str, queue: u32) -> Vec<StoredMessage> {
    pull_all_at_least(c, topic, queue, 0).await
}

/// [`pull_all`] after waiting for the max offset to reach `at_least`.
pub async fn pull_all_at_least(
    c: &mut Client,
    topic: &str,
    queue: u32,
    at_least: u64,
) -> Vec<StoredMessage> {
    let mut max = wait_max_offset(c, topic, queue, at_least).await;
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut next = 0u64;
    loop {
        if next >= max {
            let again = max_offset(c, topic, queue).await;
            if again <= next {
                return out;
            }
            max = again;
        }
        let reply = c
            .call(&pull_request(topic, queue, next, 32, 0), Bytes::new())
            .await
            .expect("PULL_MESSAGE");
        let code = reply.code;
        let (fields, body): (PullMessageResponse, Bytes) = reply
            .expect_code(ResponseCode::Success)
            .unwrap_or_else(|e| panic!("pull {topic}/{queue}@{next} (max {max}): {e}"));
        let msgs = batch::decode_stored(&body).expect("pulled batch decodes");
        assert!(!msgs.is_empty(), "SUCCESS without messages ({code})");
        for m in msgs {
            assert_eq!(m.queue_id, queue);
            assert_eq!(
                m.queue_offset, next,
                "offsets consecutive in {topic}/{queue}"
            );
            assert_eq!(m.message.topic, topic);
            next += 1;
            out.push(m);
        }
        assert_eq!(fields.next_begin_offset, next, "next_begin_offset");
    }
}

/// Waits until `cond` holds (checked every 20 ms), or panics naming
/// `what` after `limit`. For conditions a test observes through its own
/// state (deliveries a listener recorded, a consumer's queues).
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------- the CLI

/// Runs the `actormq` CLI against the name server `namesrv` with `args`
/// (stdin closed) and returns what it did.
pub fn actormq(namesrv: impl std::fmt::Display, args: &[&str]) -> std::process::Output {
    let exe = actormq_tests::node::bin_dir()
        .expect("binaries built")
        .join("actormq");
    std::process::Command::new(&exe)
        .arg("-n")
        .arg(namesrv.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()))
}

/// The stdout JSON lines of a successful run.
pub fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

// ------------------------------------------------------ Debian packages

/// Makes sure `binary` exists, installing Debian `package` with apt-get
/// when it does not (once at a time in this test binary: two apt-gets
/// would fight over dpkg's lock), with an `apt-get update` first when the
/// package lists are missing. Panics naming the package when it cannot.
pub fn apt_provided(binary: &str, package: &str) -> std::path::PathBuf {
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = APT.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::path::PathBuf::from(binary);
    if path.exists() {
        return path;
    }
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let mut out = install();
    if !path.exists() {
        let _ = std::process::Command::new("apt-get")
            .args(["update", "-qq"])
            .output();
        out = install();
    }
    assert!(
        path.exists(),
        "{binary} is missing and `apt-get install {package}` did not provide it: {}",
        match &out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
            Err(e) => e.to_string(),
        }
    );
    path
}

// ---------------------------------------------------------------- HTTP

/// One plain HTTP/1.0 GET: the status code and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_fmt(
        &mut s,
        format_args!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    )
    .unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).expect("read the reply");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    (code, body.to_string())
}

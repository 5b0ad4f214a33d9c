//! Operations: a node's HTTP endpoint read by a monitoring script. Six
//! orders are sent, a pull consumer reads and commits them all, two more
//! are sent; then `/metrics` says how many messages came in and
//! `/api/groups/{group}` how far behind the group is. The book's
//! "Operating a cluster" chapter includes this file.

use std::time::Duration;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::PullConsumer;
use actormq_sdk::protocol::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scenario read.
#[derive(Debug, Clone, Default)]
pub struct OperationsReport {
    /// `actormq_messages_in_total{topic="orders"}` from `/metrics`.
    pub messages_in: u64,
    /// `total_lag` of `/api/groups/billing`.
    pub total_lag: u64,
    /// Whether `/metrics` has the process metrics too.
    pub has_process_metrics: bool,
}

/// `GET path` on `addr`: the response body (HTTP/1.1, one request).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// Runs the scenario.
pub async fn run() -> Result<OperationsReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let http = example
        .node
        .http_addr
        .ok_or("the node has no HTTP endpoint")?;
    let producer = ProducerBuilder::new("operations-producer")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for i in 0..6 {
        producer
            .send(Message::new("orders", format!("order {i}")))
            .await?;
    }
    // The group reads everything there is and commits it.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let consumer = PullConsumer::new("billing", &namesrv, log)?;
    for mq in consumer.fetch_queues("orders").await? {
        let r = consumer.pull(&mq, 0, 32).await?;
        consumer.commit(&mq, r.next_begin_offset).await?;
    }
    for i in 6..8 {
        producer
            .send(Message::new("orders", format!("order {i}")))
            .await?;
    }
    producer.shutdown().await;

    // ANCHOR: scrape
    // The metrics sampler runs every 2 s: wait until it saw the last sends.
    let mut report = OperationsReport::default();
    for _ in 0..50 {
        let metrics = http_get(http, "/metrics").await?;
        report.messages_in = metrics
            .lines()
            .find_map(|l| l.strip_prefix(r#"actormq_messages_in_total{topic="orders"} "#))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        report.has_process_metrics = metrics.contains("process_resident_memory_bytes");
        let group: serde_json::Value =
            serde_json::from_str(&http_get(http, "/api/groups/billing").await?)?;
        report.total_lag = group["total_lag"].as_u64().unwrap_or(0);
        if report.messages_in == 8 && report.total_lag == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ANCHOR_END: scrape

    example.node.shutdown().await;
    Ok(report)
}

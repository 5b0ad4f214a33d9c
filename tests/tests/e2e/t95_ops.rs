//! The operations endpoint (`--http-listen`) of a child-process combined
//! node: `/metrics` follows real traffic exactly and `promtool check
//! metrics` accepts it; the JSON admin API answers what the CLI's
//! `--json` prints; bad input gets 4xx answers while the node keeps
//! serving; `admin broker status | config` and `admin connections`
//! against the API's answers.
//!
//! HTTP is spoken by a few lines of std TCP here (HTTP/1.1, one request
//! per connection), so the test sees exactly what goes over the wire.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// One HTTP/1.1 exchange: status, content type, body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A body over the limit may be refused before it is all read: the
    // answer still comes.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    assert_ne!(
        header("transfer-encoding").as_deref(),
        Some("chunked"),
        "this client reads whole bodies only"
    );
    (
        status,
        header("content-type").unwrap_or_default(),
        raw[split + 4..].to_vec(),
    )
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, b"");
    let v = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {path}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}

fn ok_json(addr: SocketAddr, path: &str) -> Value {
    let (status, v) = get_json(addr, path);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

fn send_json(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, raw) = http(addr, method, path, body.to_string().as_bytes());
    let v = serde_json::from_slice(&raw).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    (status, v)
}

/// The value of the sample `name{labels}` (labels exactly as printed), or
/// of the label-less `name`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}

/// Sum of the samples of `name` whose labels contain every one of `with`.
fn sum_samples(metrics: &str, name: &str, with: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn scrape(addr: SocketAddr) -> String {
    let (status, ctype, body) = http(addr, "GET", "/metrics", b"");
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    String::from_utf8(body).expect("UTF-8 metrics")
}

/// Scrapes until `cond` holds (the sampler sets gauges every 2 s), or
/// panics with the last scrape after 20 s.
async fn scrape_until(addr: SocketAddr, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(addr);
        if cond(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}; last scrape:\n{m}");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `promtool`: on PATH, or installed from Debian's `prometheus` package
/// (as root, where apt works). Without it the test fails, saying so.
fn promtool() -> std::path::PathBuf {
    let find = || {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|f| f.is_file())
        })
    };
    match find() {
        Some(p) => p,
        None => crate::common::apt_provided("/usr/bin/promtool", "prometheus"),
    }
}

fn promtool_check(metrics: &str) {
    let mut child = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {:?}\n{}{}\n--- input:\n{metrics}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn produce(ns: SocketAddr, topic: &str, count: u32, size: u32) {
    let out = actormq(
        ns,
        &[
            "produce",
            "-t",
            topic,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
            "--json",
        ],
    );
    assert_eq!(json_lines(&out).len(), count as usize);
}

fn consume(ns: SocketAddr, topic: &str, group: &str, count: u32) {
    let out = actormq(
        ns,
        &[
            "consume",
            "-t",
            topic,
            "-g",
            group,
            "--from",
            "first",
            "--count",
            &count.to_string(),
            "--idle-exit-ms",
            "10000",
            "--json",
        ],
    );
    assert_eq!(json_lines(&out).len(), count as usize);
}

#[actix_rt::test]
async fn t95_metrics_follow_traffic_exactly_and_promtool_accepts_them() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, h) = (node.namesrv(), node.http());
        // Topic a: 20 sent, all 20 consumed by group g.
        produce(ns, "t95-a", 20, 16);
        consume(ns, "t95-a", "t95-g", 20);
        // Topic b: 5 sent and consumed by group h, then 7 more sent.
        produce(ns, "t95-b", 5, 8);
        consume(ns, "t95-b", "t95-h", 5);
        produce(ns, "t95-b", 7, 8);

        let m = scrape_until(h, "counters and lags to match the traffic", |m| {
            sample(m, r#"actormq_messages_in_total{topic="t95-a"}"#) == Some(20.0)
                && sample(m, r#"actormq_messages_in_total{topic="t95-b"}"#) == Some(12.0)
                && sum_samples(
                    m,
                    "actormq_consumer_lag",
                    &[r#"group="t95-h""#, r#"topic="t95-b""#],
                ) == 7.0
        })
        .await;
        // Delivered: every message of a exactly once to g.
        assert_eq!(
            sample(
                &m,
                r#"actormq_messages_out_total{topic="t95-a",group="t95-g"}"#
            ),
            Some(20.0),
            "{m}"
        );
        // Group g consumed everything of a: no lag on any queue.
        assert_eq!(
            sum_samples(
                &m,
                "actormq_consumer_lag",
                &[r#"group="t95-g""#, r#"topic="t95-a""#]
            ),
            0.0
        );
        // Bytes: bodies plus properties, so more than the bodies alone.
        let bytes_a = sample(&m, r#"actormq_bytes_in_total{topic="t95-a"}"#).unwrap();
        assert!(bytes_a >= 20.0 * 16.0, "{bytes_a}");
        // Every send was answered and timed.
        assert!(sample(&m, "actormq_put_latency_seconds_count").unwrap() >= 32.0);
        assert!(sample(&m, r#"actormq_put_latency_seconds_bucket{le="+Inf"}"#).unwrap() >= 32.0);
        // The other families are there (replication lag shows once a
        // slave is connected: this master has none).
        for family in [
            "actormq_disk_used_ratio ",
            "actormq_flush_lag_bytes ",
            "actormq_actor_restarts_total{actor=\"commit-log\"} 0",
            "actormq_connections{kind=\"native\"}",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
        ] {
            assert!(m.contains(family), "{family} missing:\n{m}");
        }
        let ratio = sample(&m, "actormq_disk_used_ratio").unwrap();
        assert!((0.0..=1.0).contains(&ratio), "{ratio}");
        assert!(sample(&m, "process_resident_memory_bytes").unwrap() > 1e6);

        // The lag the metrics show is the CLI's.
        let progress = json_lines(&actormq(
            ns,
            &[
                "admin", "group", "progress", "-g", "t95-h", "-t", "t95-b", "--json",
            ],
        ));
        assert_eq!(progress.last().unwrap()["total_lag"], 7);

        promtool_check(&m);

        // Pops count too: a simple consumer of group s receives all 20 of a.
        let got = json_lines(&actormq(
            ns,
            &[
                "consume", "-t", "t95-a", "-g", "t95-s", "--simple", "--count", "20", "--json",
            ],
        ));
        assert_eq!(got.len(), 20);
        scrape_until(h, "the pops to be counted", |m| {
            sample(
                m,
                r#"actormq_messages_out_total{topic="t95-a",group="t95-s"}"#,
            ) == Some(20.0)
                && m.contains("actormq_connections{kind=\"grpc\"}")
        })
        .await;

        // /api/stats: samples every 2 s with the totals and the lag.
        let stats = ok_json(h, "/api/stats");
        let samples = stats["samples"].as_array().unwrap();
        assert!(!samples.is_empty(), "{stats}");
        let last = samples.last().unwrap();
        assert!(last["messages_in_total"].as_u64().unwrap() >= 32, "{stats}");
        assert!(
            last["messages_out_total"].as_u64().unwrap() >= 25,
            "{stats}"
        );
        assert!(stats["now_ms"].as_u64().unwrap() >= last["ts_ms"].as_u64().unwrap());
    })
    .await;
}

#[actix_rt::test]
async fn t95_api_answers_what_the_cli_prints() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, h) = (node.namesrv(), node.http());

        // Cluster.
        let cli = json_lines(&actormq(ns, &["admin", "cluster", "list", "--json"]));
        assert_eq!(ok_json(h, "/api/cluster")["brokers"], Value::Array(cli));

        // Topic created through the API, read back through both.
        let (status, created) = send_json(
            h,
            "POST",
            "/api/topics",
            &json!({"topic": "t95-api", "queues": 2}),
        );
        assert_eq!(status, 200, "{created}");
        assert_eq!(created["created"][0]["queues"], 2);
        assert_eq!(created["created"][0]["broker"], "broker-a");
        let topic = ok_json(h, "/api/topics/t95-api");
        let cli_status = json_lines(&actormq(
            ns,
            &["admin", "topic", "status", "-t", "t95-api", "--json"],
        ));
        assert_eq!(topic["queues"], Value::Array(cli_status));
        let cli_route = json_lines(&actormq(
            ns,
            &["admin", "topic", "route", "-t", "t95-api", "--json"],
        ));
        assert_eq!(topic["route"], Value::Array(cli_route));

        // Messages by key and by id.
        let sent = json_lines(&actormq(
            ns,
            &[
                "produce", "-t", "t95-api", "--keys", "k95", "--body", "hello", "--count", "3",
                "--json",
            ],
        ));
        let topics = ok_json(h, "/api/topics");
        let row = topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic"] == "t95-api")
            .cloned()
            .unwrap_or_else(|| panic!("t95-api not in {topics}"));
        assert_eq!(row["queues"], 2);
        assert_eq!(row["messages"], 3);
        let by_key = ok_json(h, "/api/messages?topic=t95-api&key=k95");
        let cli_by_key = json_lines(&actormq(
            ns,
            &[
                "admin", "msg", "query", "-t", "t95-api", "--key", "k95", "--json",
            ],
        ));
        assert_eq!(by_key["messages"], Value::Array(cli_by_key));
        assert_eq!(by_key["messages"].as_array().unwrap().len(), 3);
        let id = sent[0]["msg_id"].as_str().unwrap();
        let one = ok_json(h, &format!("/api/messages/{id}"));
        let cli_one = json_lines(&actormq(ns, &["admin", "msg", "get", "--id", id, "--json"]));
        assert_eq!(one, cli_one[0]);
        assert_eq!(one["body"], "hello");

        // Groups: created through the API, consumed, read back.
        let (status, g) = send_json(
            h,
            "POST",
            "/api/groups",
            &json!({"group": "t95-grp", "retry_max": 3}),
        );
        assert_eq!(status, 200, "{g}");
        assert_eq!(g["created"][0]["retry_max"], 3);
        let listed = json_lines(&actormq(ns, &["admin", "group", "list", "--json"]));
        assert!(
            listed
                .iter()
                .any(|l| l["group"] == "t95-grp" && l["retry_max"] == 3),
            "{listed:?}"
        );
        consume(ns, "t95-api", "t95-grp", 3);
        let detail = ok_json(h, "/api/groups/t95-grp");
        let cli_progress = json_lines(&actormq(
            ns,
            &["admin", "group", "progress", "-g", "t95-grp", "--json"],
        ));
        let (rows, total) = cli_progress.split_at(cli_progress.len() - 1);
        assert_eq!(detail["progress"], Value::Array(rows.to_vec()));
        assert_eq!(detail["total_lag"], total[0]["total_lag"]);
        let groups = ok_json(h, "/api/groups");
        let row = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == "t95-grp")
            .cloned()
            .unwrap_or_else(|| panic!("t95-grp not in {groups}"));
        assert_eq!(row["retry_max"], 3);
        assert_eq!(row["total_lag"], 0);

        // No dead letters yet; resending none says so.
        let dlq = ok_json(h, "/api/dlq/t95-grp?limit=10");
        assert_eq!(dlq["messages"], json!([]));
        let (status, r) = send_json(h, "POST", "/api/dlq/t95-grp/resend", &json!({}));
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["resent"], json!([]));

        // Delete both through the API.
        let (status, d) = send_json(h, "DELETE", "/api/groups/t95-grp", &json!(null));
        assert_eq!((status, &d["deleted"]), (200, &json!(true)), "{d}");
        let (status, d) = send_json(h, "DELETE", "/api/topics/t95-api", &json!(null));
        assert_eq!((status, &d["deleted"]), (200, &json!(true)), "{d}");
        let (status, _) = get_json(h, "/api/topics/t95-api");
        assert_eq!(status, 404);
    })
    .await;
}

#[actix_rt::test]
async fn t95_bad_api_input_gets_4xx_and_the_node_keeps_serving() {
    bounded(async {
        let mut node = combined(NO_ARGS);
        let h = node.http();
        let error_of = |(status, v): (u16, Value)| {
            assert!(v["error"].is_string(), "{v}");
            status
        };
        assert_eq!(error_of(get_json(h, "/api/topics/t95-no-such")), 404);
        assert_eq!(error_of(get_json(h, "/api/groups/t95-no-such")), 404);
        assert_eq!(error_of(get_json(h, "/api/no-such-route")), 404);
        assert_eq!(error_of(get_json(h, "/api/messages/nonsense")), 400);
        assert_eq!(error_of(get_json(h, "/api/messages?topic=x")), 400);
        assert_eq!(error_of(get_json(h, "/api/dlq/g?limit=many")), 400);
        let (status, _, body) = http(h, "POST", "/api/topics", b"{\"topic\": ");
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        let (status, _, _) = http(h, "POST", "/api/topics", b"{\"topic\":\"bad name!\"}");
        assert_eq!(status, 400);
        let (status, _, _) = http(h, "POST", "/api/topics", b"[1,2,3]");
        assert_eq!(status, 400);
        let huge = vec![b'a'; 1 << 20];
        let (status, _, body) = http(h, "POST", "/api/topics", &huge);
        assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert!(error["error"].is_string(), "{error}");

        // Still serving, and still alive.
        assert_eq!(
            ok_json(h, "/api/cluster")["brokers"][0]["broker"],
            "broker-a"
        );
        assert!(scrape(h).contains("actormq_connections"));
        assert!(node.is_alive());
        let (status, ctype, page) = http(h, "GET", "/", b"");
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert!(!page.is_empty());
    })
    .await;
}

#[actix_rt::test]
async fn t95_admin_broker_status_config_and_connections() {
    bounded(async {
        let node = combined(NO_ARGS);
        let (ns, h) = (node.namesrv(), node.http());
        produce(ns, "t95-c", 4, 8);

        // Status: one line per broker address, the supervised children
        // with their restart counts.
        let status = json_lines(&actormq(ns, &["admin", "broker", "status", "--json"]));
        assert_eq!(status.len(), 1, "{status:?}");
        let s = &status[0];
        assert_eq!(s["broker"], "broker-a");
        assert_eq!(s["broker_id"], 0);
        assert_eq!(s["role"], "master");
        assert_eq!(s["ha_role"], "async-master");
        assert!(!s["version"].as_str().unwrap().is_empty());
        assert!(s["messages_in_total"].as_u64().unwrap() >= 4, "{s}");
        assert!(s["commit_log_max_offset"].as_u64().unwrap() > 0, "{s}");
        let children = s["children"].as_array().unwrap();
        let commit_log = children
            .iter()
            .find(|c| c["name"] == "commit-log")
            .unwrap_or_else(|| panic!("no commit-log child in {s}"));
        assert_eq!(commit_log["restarts"], 0);
        assert_eq!(commit_log["running"], true);
        // The API's: the same broker and children (times and rates move).
        let api = ok_json(h, "/api/brokers/status?broker=broker-a");
        let a = &api["brokers"][0];
        for key in ["broker", "broker_id", "addr", "role", "ha_role", "version"] {
            assert_eq!(a[key], s[key], "{key}");
        }
        let names = |v: &Value| -> Vec<Value> {
            v["children"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].clone())
                .collect()
        };
        assert_eq!(names(a), names(s));
        let out = actormq(ns, &["admin", "broker", "status", "--broker", "nope"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("no broker named nope"));

        // Config: the effective settings, the same through both.
        let config = json_lines(&actormq(ns, &["admin", "broker", "config", "--json"]));
        assert_eq!(config.len(), 1);
        assert_eq!(config[0]["config"]["broker.broker_name"], "broker-a");
        assert_eq!(config[0]["config"]["broker.flush"], "async");
        assert_eq!(ok_json(h, "/api/brokers/config?broker=broker-a"), config[0]);

        // Connections: a consumer online, with its address, language and
        // version, the same through both.
        let exe = actormq_tests::node::bin_dir().unwrap().join("actormq");
        let mut consumer = std::process::Command::new(exe)
            .args([
                "-n",
                &ns.to_string(),
                "consume",
                "-t",
                "t95-c",
                "-g",
                "t95-cg",
            ])
            .args(["--count", "1000", "--idle-exit-ms", "60000"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a consumer");
        let deadline = Instant::now() + Duration::from_secs(15);
        let lines = loop {
            let out = actormq(ns, &["admin", "connections", "-g", "t95-cg", "--json"]);
            if out.status.success() {
                break json_lines(&out);
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        };
        let _ = consumer.kill();
        let _ = consumer.wait();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["language"], "RUST");
        assert_eq!(lines[0]["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            lines[0]["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{lines:?}"
        );
        assert!(!lines[0]["client_id"].as_str().unwrap().is_empty());
        // No producer online in this group: a one-line error.
        let out = actormq(
            ns,
            &["admin", "connections", "--producer-group", "t95-none"],
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("no client of producer group t95-none"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1);
    })
    .await;
}

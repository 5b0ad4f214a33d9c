//! The RocketMQ 5 gRPC endpoint (`apache.rocketmq.v2.MessagingService`):
//! a tonic client generated from the same vendored protos sends, the
//! native SDK reads back (and the other way round for routes). **Needs
//! the gRPC endpoint wired into the node.**

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use actormq_grpc::pb;
use actormq_grpc::pb::messaging_service_client::MessagingServiceClient;
use actormq_protocol::Message;
use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{Received, SimpleConsumer};
use actormq_tests::node::{Bin, NodeProcess};
use tonic::transport::Channel;

use crate::common::{bounded, create_topic};

const OK: i32 = pb::Code::Ok as i32;
const WAIT: Duration = Duration::from_secs(40);

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource {
        resource_namespace: String::new(),
        name: name.into(),
    })
}

async fn client(addr: SocketAddr) -> MessagingServiceClient<Channel> {
    MessagingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("grpc connect {addr}: {e}"))
}

fn grpc_message(topic: &str, id: &str, body: &str) -> pb::Message {
    pb::Message {
        topic: resource(topic),
        user_properties: HashMap::from([("color".to_string(), format!("c-{id}"))]),
        system_properties: Some(pb::SystemProperties {
            tag: Some("TagA".into()),
            keys: vec![format!("k-{id}"), "shared".into()],
            message_id: id.into(),
            message_type: pb::MessageType::Normal as i32,
            born_timestamp: Some(prost_timestamp()),
            ..Default::default()
        }),
        body: body.as_bytes().to_vec(),
    }
}

fn prost_timestamp() -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: now.as_secs() as i64,
        nanos: now.subsec_nanos() as i32,
    }
}

async fn receive_n(c: &SimpleConsumer, n: usize) -> Vec<Received> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n {
        assert!(start.elapsed() < WAIT, "only {} of {n} received", out.len());
        match c.receive(32, Duration::from_secs(10)).await {
            Ok(got) => out.extend(got),
            Err(_) => actix_rt::time::sleep(Duration::from_millis(100)).await,
        }
    }
    out
}

#[actix_rt::test]
async fn t90_grpc_send_is_read_by_the_native_consumer() {
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-grpc";
        create_topic(node.broker(), topic, 4).await;
        let mut c = client(node.grpc()).await;

        // Route: 4 queues on the master, at the gRPC endpoint.
        let route = c
            .query_route(pb::QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            })
            .await
            .expect("query route")
            .into_inner();
        assert_eq!(route.status.as_ref().map(|s| s.code), Some(OK), "{route:?}");
        assert_eq!(route.message_queues.len(), 4);
        for q in &route.message_queues {
            let b = q.broker.as_ref().expect("broker");
            assert_eq!(b.id, 0);
            let a = &b.endpoints.as_ref().expect("endpoints").addresses[0];
            assert_eq!(a.port, i32::from(node.grpc().port()));
            assert_eq!(q.permission, pb::Permission::ReadWrite as i32);
            assert!(
                q.accept_message_types
                    .contains(&(pb::MessageType::Normal as i32))
            );
        }

        // Telemetry: the client's settings come back completed.
        let settings = pb::TelemetryCommand {
            status: None,
            command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
                client_type: Some(pb::ClientType::Producer as i32),
                pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                    topics: vec![resource(topic).unwrap_or_default()],
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        let mut answers = c
            .telemetry(futures_util::stream::iter([settings]))
            .await
            .expect("telemetry")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("telemetry answer")
            .expect("one answer");
        let Some(pb::telemetry_command::Command::Settings(s)) = answer.command else {
            panic!("not settings: {answer:?}");
        };
        assert!(matches!(
            s.backoff_policy.and_then(|p| p.strategy),
            Some(pb::retry_policy::Strategy::ExponentialBackoff(_))
        ));
        assert_eq!(s.metric.map(|m| m.on), Some(false));
        let Some(pb::settings::PubSub::Publishing(p)) = s.pub_sub else {
            panic!("no publishing settings");
        };
        assert!(
            p.max_body_size >= 4 << 20,
            "max_body_size {}",
            p.max_body_size
        );

        let hb = c
            .heartbeat(pb::HeartbeatRequest {
                group: None,
                client_type: pb::ClientType::Producer as i32,
            })
            .await
            .expect("heartbeat")
            .into_inner();
        assert_eq!(hb.status.map(|s| s.code), Some(OK));

        // Send: one entry per message, the client's ids echoed.
        let ids = ["01GRPCID0000000000000000A1", "01GRPCID0000000000000000B2"];
        let sent = c
            .send_message(pb::SendMessageRequest {
                messages: vec![
                    grpc_message(topic, ids[0], "hello"),
                    grpc_message(topic, ids[1], "world"),
                ],
            })
            .await
            .expect("send")
            .into_inner();
        assert_eq!(sent.status.as_ref().map(|s| s.code), Some(OK), "{sent:?}");
        assert_eq!(sent.entries.len(), 2);
        for (e, id) in sent.entries.iter().zip(ids) {
            assert_eq!(e.status.as_ref().map(|s| s.code), Some(OK));
            assert_eq!(e.message_id, id);
        }

        // The native consumer reads both, everything kept.
        let consumer = SimpleConsumer::new(
            "t90-native",
            &node.namesrv().to_string(),
            topic,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .expect("simple consumer")
        .with_await_duration(Duration::from_secs(1));
        let got = receive_n(&consumer, 2).await;
        for r in &got {
            let m = &r.message.message;
            let id = m.unique_key().expect("UNIQ_KEY").to_string();
            assert!(ids.contains(&id.as_str()), "{id}");
            let body = if id == ids[0] { "hello" } else { "world" };
            assert_eq!(&m.body[..], body.as_bytes());
            assert_eq!(m.topic, topic);
            assert_eq!(m.tags.as_deref(), Some("TagA"));
            assert_eq!(m.keys.as_deref(), Some(format!("k-{id} shared").as_str()));
            assert_eq!(
                m.properties.get("color").map(String::as_str),
                Some(format!("c-{id}").as_str())
            );
            consumer.ack(&r.receipt).await.expect("ack");
        }

        // A push consumer's assignment: this broker, any queue. Unserved
        // RPCs say so in their status, never a fake success.
        let assignment = c
            .query_assignment(pb::QueryAssignmentRequest {
                topic: resource(topic),
                group: resource("g"),
                endpoints: None,
            })
            .await
            .expect("query assignment")
            .into_inner();
        assert_eq!(assignment.status.map(|s| s.code), Some(OK));
        assert_eq!(assignment.assignments.len(), 1);
        let q = assignment.assignments[0]
            .message_queue
            .as_ref()
            .expect("queue");
        assert_eq!((q.id, q.broker.as_ref().map(|b| b.id)), (-1, Some(0)));
        let end = c
            .end_transaction(pb::EndTransactionRequest {
                topic: resource(topic),
                ..Default::default()
            })
            .await
            .expect("end transaction")
            .into_inner();
        assert_eq!(
            end.status.map(|s| s.code),
            Some(pb::Code::InvalidTransactionId as i32)
        );
        let dlq = c
            .forward_message_to_dead_letter_queue(pb::ForwardMessageToDeadLetterQueueRequest {
                topic: resource(topic),
                ..Default::default()
            })
            .await
            .expect("forward to DLQ")
            .into_inner();
        assert_eq!(
            dlq.status.map(|s| s.code),
            Some(pb::Code::IllegalConsumerGroup as i32),
            "a forward without group is refused"
        );
        let offset = c
            .update_offset(pb::UpdateOffsetRequest {
                group: resource("g"),
                ..Default::default()
            })
            .await
            .expect("update offset")
            .into_inner();
        assert_eq!(
            offset.status.map(|s| s.code),
            Some(pb::Code::NotImplemented as i32)
        );
        let bye = c
            .notify_client_termination(pb::NotifyClientTerminationRequest { group: None })
            .await
            .expect("notify termination")
            .into_inner();
        assert_eq!(bye.status.map(|s| s.code), Some(OK));
    })
    .await;
}

#[actix_rt::test]
async fn t90_native_send_is_routed_over_grpc() {
    bounded(async {
        let node = NodeProcess::start_with_env(
            Bin::Node,
            &[] as &[&str],
            &[("ACTORMQ_BROKER__AUTO_CREATE_TOPIC", "false")],
        )
        .expect("start a combined node");
        let mut c = client(node.grpc()).await;
        let missing = c
            .query_route(pb::QueryRouteRequest {
                topic: resource("t90-nowhere"),
                endpoints: None,
            })
            .await
            .expect("query route")
            .into_inner();
        assert_eq!(
            missing.status.map(|s| s.code),
            Some(pb::Code::TopicNotFound as i32)
        );
        // Created natively, sent to by a native producer: gRPC routes it.
        let topic = "t90-native";
        create_topic(node.broker(), topic, 2).await;
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        p.send(Message::new(topic, "x")).await.expect("native send");
        let route = c
            .query_route(pb::QueryRouteRequest {
                topic: resource(topic),
                endpoints: None,
            })
            .await
            .expect("query route")
            .into_inner();
        assert_eq!(route.status.as_ref().map(|s| s.code), Some(OK), "{route:?}");
        assert_eq!(route.message_queues.len(), 2);
    })
    .await;
}

/// The official Python client (PyPI `rocketmq-python-client`), installed
/// by the test into a venv cached under the target dir
/// (`CARGO_TARGET_TMPDIR`). Machines without python3 or PyPI access set
/// `ACTORMQ_TESTS_NO_PYPI=1` to skip (the test says so on stderr).
const PY_CLIENT: &str = "rocketmq-python-client==5.1.2";

fn python_client() -> Option<std::path::PathBuf> {
    if std::env::var_os("ACTORMQ_TESTS_NO_PYPI").is_some() {
        eprintln!("skipped: ACTORMQ_TESTS_NO_PYPI is set");
        return None;
    }
    let venv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-rocketmq-5.1.2");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".installed");
    // The tests of this binary run in parallel: one installs, the others
    // wait for it (two pips in one venv break each other).
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if !marker.exists() {
        // A half-made venv (an install that died) is made again.
        let _ = std::fs::remove_dir_all(&venv);
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert!(
                out.status.success(),
                "{cmd:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv));
        run(std::process::Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PY_CLIENT,
        ]));
        std::fs::write(&marker, PY_CLIENT).expect("venv marker");
    }
    Some(python)
}

/// Runs `tests/scripts/<script>` with the client's `python` and `args`
/// (off the actor loop); its stdout, once it exited 0.
async fn run_python(python: &std::path::Path, script: &str, args: &[&str]) -> String {
    let path = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let (python, args) = (
        python.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let out = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&path)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {path}: {e}"))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The JSON lines a script printed.
fn lines_of(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[actix_rt::test]
async fn t90_python_client_producer_is_read_by_the_native_consumer() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        // Not created first: routed as auto-created, created by the send.
        let topic = "t90-python";
        let grpc = node.grpc().to_string();
        let stdout = run_python(
            &python,
            "rocketmq-python-producer.py",
            &[grpc.as_str(), topic, "5"],
        )
        .await;
        let sent = lines_of(&stdout);
        assert_eq!(sent.len(), 5, "{stdout}");

        let consumer = SimpleConsumer::new(
            "t90-python-native",
            &node.namesrv().to_string(),
            topic,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .expect("simple consumer")
        .with_await_duration(Duration::from_secs(1));
        let got = receive_n(&consumer, 5).await;
        for r in &got {
            let m = &r.message.message;
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let s = sent
                .iter()
                .find(|s| s["body"] == body.as_str())
                .unwrap_or_else(|| panic!("unexpected body {body}"));
            assert_eq!(m.unique_key(), s["message_id"].as_str(), "client's id kept");
            assert_eq!(m.tags.as_deref(), Some("PyTag"));
            let i = body.trim_start_matches("py-");
            assert_eq!(m.keys.as_deref(), Some(format!("py-key-{i}").as_str()));
            assert_eq!(m.properties.get("lang").map(String::as_str), Some("python"));
            consumer.ack(&r.receipt).await.expect("ack");
        }
    })
    .await;
}

fn native_message(topic: &str, i: usize) -> Message {
    Message {
        tags: Some("NativeTag".into()),
        keys: Some(format!("nk-{i} shared")),
        properties: [("origin".to_string(), "native".to_string())].into(),
        ..Message::new(topic, format!("n-{i}"))
    }
}

async fn receive(
    c: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
) -> (pb::Status, Vec<pb::Message>) {
    receive_for(c, group, topic, 20).await
}

/// [`receive`] with an invisible duration of `invisible_s` seconds.
async fn receive_for(
    c: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    invisible_s: i64,
) -> (pb::Status, Vec<pb::Message>) {
    let mut stream = c
        .receive_message(pb::ReceiveMessageRequest {
            group: resource(group),
            message_queue: Some(pb::MessageQueue {
                topic: resource(topic),
                id: -1,
                ..Default::default()
            }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: 16,
            invisible_duration: Some(prost_types::Duration {
                seconds: invisible_s,
                nanos: 0,
            }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            attempt_id: None,
        })
        .await
        .expect("receive")
        .into_inner();
    let (mut status, mut messages) = (None, Vec::new());
    while let Some(r) = stream.message().await.expect("receive stream") {
        match r.content {
            Some(pb::receive_message_response::Content::Status(s)) => status = Some(s),
            Some(pb::receive_message_response::Content::Message(m)) => messages.push(m),
            _ => {}
        }
    }
    (status.expect("a status"), messages)
}

async fn ack(
    c: &mut MessagingServiceClient<Channel>,
    group: &str,
    topic: &str,
    m: &pb::Message,
    handle: &str,
) -> i32 {
    let sys = m.system_properties.as_ref().expect("system properties");
    let r = c
        .ack_message(pb::AckMessageRequest {
            group: resource(group),
            topic: resource(topic),
            entries: vec![pb::AckMessageEntry {
                message_id: sys.message_id.clone(),
                receipt_handle: handle.into(),
                lite_topic: None,
            }],
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(r.entries.len(), 1);
    r.entries[0].status.as_ref().map_or(0, |s| s.code)
}

#[actix_rt::test]
async fn t90_native_sends_are_received_and_acked_over_grpc() {
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-receive";
        let group = "t90-grpc-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..3 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let mut c = client(node.grpc()).await;
        let start = Instant::now();
        let mut got = Vec::new();
        while got.len() < 3 {
            assert!(start.elapsed() < WAIT, "only {} of 3 received", got.len());
            let (status, messages) = receive(&mut c, group, topic).await;
            assert!(
                status.code == OK || status.code == pb::Code::MessageNotFound as i32,
                "{status:?}"
            );
            got.extend(messages);
        }
        assert_eq!(got.len(), 3);
        for m in &got {
            let sys = m.system_properties.as_ref().expect("system properties");
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let i = body.trim_start_matches("n-");
            assert_eq!(sys.tag.as_deref(), Some("NativeTag"));
            assert_eq!(sys.keys, vec![format!("nk-{i}"), "shared".to_string()]);
            assert_eq!(
                m.user_properties.get("origin").map(String::as_str),
                Some("native")
            );
            assert_eq!(sys.delivery_attempt, Some(1));
            assert!(sys.receipt_handle.is_some());
            assert!(sys.queue_offset.is_some());
            let digest = sys.body_digest.as_ref().expect("body digest");
            assert_eq!(digest.r#type, pb::DigestType::Md5 as i32);
            assert_eq!(digest.checksum.len(), 32);
            assert!(!sys.message_id.is_empty());
        }
        // One gets 1 s more first (a new handle); the old handle is void.
        let first = &got[0];
        let old = first
            .system_properties
            .as_ref()
            .and_then(|s| s.receipt_handle.clone())
            .expect("handle");
        let changed = c
            .change_invisible_duration(pb::ChangeInvisibleDurationRequest {
                group: resource(group),
                topic: resource(topic),
                receipt_handle: old.clone(),
                invisible_duration: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
                message_id: String::new(),
                lite_topic: None,
                suspend: None,
            })
            .await
            .expect("change invisible duration")
            .into_inner();
        assert_eq!(changed.status.map(|s| s.code), Some(OK));
        assert_ne!(changed.receipt_handle, old);
        assert_eq!(
            ack(&mut c, group, topic, first, &old).await,
            pb::Code::InvalidReceiptHandle as i32
        );
        assert_eq!(
            ack(&mut c, group, topic, first, &changed.receipt_handle).await,
            OK
        );
        for m in &got[1..] {
            let h = m
                .system_properties
                .as_ref()
                .and_then(|s| s.receipt_handle.clone())
                .expect("handle");
            assert_eq!(ack(&mut c, group, topic, m, &h).await, OK);
        }
        let (status, messages) = receive(&mut c, group, topic).await;
        assert_eq!(
            status.code,
            pb::Code::MessageNotFound as i32,
            "{messages:?}"
        );
        assert!(messages.is_empty());
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_simple_consumer_receives_native_sends() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-python-consume";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..4 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        let stdout = run_python(
            &python,
            "rocketmq-python-simple-consumer.py",
            &[grpc.as_str(), "t90-python-group", topic, "4"],
        )
        .await;
        let got = lines_of(&stdout);
        assert_eq!(got.len(), 4, "{stdout}");
        let mut bodies: Vec<String> = got
            .iter()
            .map(|g| g["body"].as_str().unwrap_or_default().to_string())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["n-0", "n-1", "n-2", "n-3"]);
        for g in &got {
            let i = g["body"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("n-");
            assert_eq!(g["tag"], "NativeTag");
            assert_eq!(g["keys"], serde_json::json!([format!("nk-{i}"), "shared"]));
            assert_eq!(g["properties"]["origin"], "native");
            assert_eq!(g["delivery_attempt"], 1);
        }
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_simple_consumer_with_a_tag_filter_gets_only_its_tags() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-python-tags";
        let group = "t90-python-tags-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        let tags = ["created", "paid", "shipped"];
        for i in 0..6 {
            let m = Message {
                tags: Some(tags[i % 3].into()),
                ..Message::new(topic, format!("{}-{i}", tags[i % 3]))
            };
            p.send(m).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        let stdout = run_python(
            &python,
            "rocketmq-python-simple-consumer.py",
            &[grpc.as_str(), group, topic, "4", "paid || shipped"],
        )
        .await;
        let got = lines_of(&stdout);
        let mut bodies: Vec<&str> = got.iter().filter_map(|g| g["body"].as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(
            bodies,
            ["paid-1", "paid-4", "shipped-2", "shipped-5"],
            "{stdout}"
        );
        // The others were passed over: the group's position is past them.
        let mut c = client(node.grpc()).await;
        let (status, messages) = receive(&mut c, group, topic).await;
        assert_eq!(
            status.code,
            pb::Code::MessageNotFound as i32,
            "{messages:?}"
        );
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_push_consumer_consumes_and_acks_native_sends() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-python-push";
        let group = "t90-python-push-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..4 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        let stdout = run_python(
            &python,
            "rocketmq-python-push-consumer.py",
            &[grpc.as_str(), group, topic, "4"],
        )
        .await;
        let mut bodies: Vec<String> = lines_of(&stdout)
            .iter()
            .map(|g| g["body"].as_str().unwrap_or_default().to_string())
            .collect();
        bodies.sort();
        bodies.dedup();
        assert_eq!(bodies, ["n-0", "n-1", "n-2", "n-3"]);
        // The push consumer acked them: nothing left for its group.
        let mut c = client(node.grpc()).await;
        let (status, messages) = receive(&mut c, group, topic).await;
        assert_eq!(
            status.code,
            pb::Code::MessageNotFound as i32,
            "{messages:?}"
        );
        // Its positions are the group's offsets: `admin group progress`
        // shows every queue consumed (committed with the pop service's
        // next state write, within a revive interval).
        let start = Instant::now();
        loop {
            let out = crate::common::actormq(
                node.namesrv(),
                &[
                    "admin", "group", "progress", "-g", group, "-t", topic, "--json",
                ],
            );
            if out.status.success() {
                let lines = crate::common::json_lines(&out);
                let (queues, total) = lines.split_at(lines.len() - 1);
                let consumed: u64 = queues
                    .iter()
                    .map(|q| q["consumer_offset"].as_u64().unwrap_or(0))
                    .sum();
                if consumed == 4 {
                    assert_eq!(total[0]["total_lag"], 0, "{lines:?}");
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no progress: {out:?}"
            );
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[actix_rt::test]
async fn t90_grpc_delay_message_is_delivered_at_its_time() {
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-delay";
        let mut c = client(node.grpc()).await;
        let deliver_at = std::time::SystemTime::now() + Duration::from_secs(2);
        let since_epoch = deliver_at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let mut m = grpc_message(topic, "01GRPCDELAY000000000000001", "later");
        if let Some(s) = m.system_properties.as_mut() {
            s.message_type = pb::MessageType::Delay as i32;
            s.delivery_timestamp = Some(prost_types::Timestamp {
                seconds: since_epoch.as_secs() as i64,
                nanos: since_epoch.subsec_nanos() as i32,
            });
        }
        let sent = c
            .send_message(pb::SendMessageRequest { messages: vec![m] })
            .await
            .expect("send")
            .into_inner();
        assert_eq!(sent.status.map(|s| s.code), Some(OK), "{:?}", sent.entries);
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < WAIT, "the delayed message never came");
            let (_, messages) = receive(&mut c, "t90-delay-group", topic).await;
            if let Some(m) = messages.first() {
                assert_eq!(&m.body[..], b"later");
                // Not before its time (the timer's tick is 100 ms or less).
                let now = std::time::SystemTime::now();
                assert!(
                    now + Duration::from_millis(200) >= deliver_at,
                    "delivered {:?} early",
                    deliver_at.duration_since(now).unwrap_or_default()
                );
                break;
            }
        }
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_send_survives_a_node_restart_before_the_receive() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let mut node =
            NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-python-restart";
        let grpc = node.grpc().to_string();
        let sent = run_python(
            &python,
            "rocketmq-python-producer.py",
            &[grpc.as_str(), topic, "3"],
        )
        .await;
        assert_eq!(sent.lines().count(), 3, "{sent}");
        node.terminate().expect("terminate");
        node.restart().expect("restart");
        let grpc = node.grpc().to_string();
        let got = run_python(
            &python,
            "rocketmq-python-simple-consumer.py",
            &[grpc.as_str(), "t90-restart-group", topic, "3"],
        )
        .await;
        let mut bodies: Vec<String> = lines_of(&got)
            .iter()
            .map(|g| g["body"].as_str().unwrap_or_default().to_string())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["py-0", "py-1", "py-2"]);
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_transactions_commit_and_roll_back() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-python-tx";
        let grpc = node.grpc().to_string();
        let stdout = run_python(
            &python,
            "rocketmq-python-transaction-producer.py",
            &[grpc.as_str(), topic, "2"],
        )
        .await;
        assert_eq!(stdout.lines().count(), 4, "{stdout}");
        // The committed ones are delivered, the rolled-back ones never.
        let mut c = client(node.grpc()).await;
        let group = "t90-tx-group";
        let start = Instant::now();
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            assert!(start.elapsed() < WAIT, "committed: {bodies:?}");
            let (_, messages) = receive(&mut c, group, topic).await;
            bodies.extend(
                messages
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
            );
        }
        let (status, more) = receive(&mut c, group, topic).await;
        assert_eq!(status.code, pb::Code::MessageNotFound as i32, "{more:?}");
        bodies.sort();
        assert_eq!(bodies, ["commit-0", "commit-1"]);
    })
    .await;
}

/// A Python script started with piped stdin and stdout (the test reads
/// its lines as they come and closes its stdin to end it).
fn spawn_python(python: &std::path::Path, script: &str, args: &[&str]) -> std::process::Child {
    let path = format!("{}/scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    std::process::Command::new(python)
        .arg(&path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {path}: {e}"))
}

/// A node whose transaction checker runs every 200 ms and checks half
/// messages older than 300 ms.
fn fast_checks_node() -> NodeProcess {
    NodeProcess::start_with_env(
        Bin::Node,
        &[] as &[&str],
        &[
            ("ACTORMQ_BROKER__TRANSACTION_TIMEOUT_MS", "300"),
            ("ACTORMQ_BROKER__TRANSACTION_CHECK_INTERVAL_MS", "200"),
        ],
    )
    .expect("start a combined node")
}

/// The check-back, end to end: `child` (a client's check script, see
/// `rocketmq-python-transaction-check.py`) sent two half messages to
/// `topic` and left them to the broker's check; its checker commits
/// "check-commit" and rolls back "check-rollback". `lang` is the `lang`
/// property it set, `language` the language code `admin connections`
/// shows for it (from its settings' user agent).
async fn assert_check_back(
    node: &NodeProcess,
    mut child: std::process::Child,
    topic: &str,
    lang: &str,
    language: &str,
) {
    use actormq_protocol::system_topic::TRANS_OP_HALF_TOPIC;
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    // The script's lines until it was asked about both messages.
    let lines = actix_rt::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let mut checked = std::collections::BTreeSet::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.expect("line");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
            if let Some(body) = v["checked"].as_str() {
                checked.insert(body.to_string());
            }
            lines.push(v);
            if checked.len() == 2 {
                break;
            }
        }
        lines
    })
    .await
    .expect("join");
    let sent: Vec<String> = lines
        .iter()
        .find_map(|l| l["sent"].as_array().cloned())
        .unwrap_or_else(|| panic!("no sends: {lines:?}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    let checks: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["checked"].is_string()).collect();
    assert!(checks.len() >= 2, "{lines:?}");
    for c in &checks {
        // The check carries the half message as sent.
        assert_eq!(c["topic"], topic, "{c}");
        assert_eq!(c["tag"], "TxTag", "{c}");
        assert_eq!(c["lang"], lang, "{c}");
        assert!(
            sent.iter().any(|id| c["message_id"] == id.as_str()),
            "{c} not among {sent:?}"
        );
    }
    // The client's answers (EndTransaction from the check) are recorded
    // as one decision each.
    let mut conn = crate::common::connect(node.broker()).await;
    let decisions = crate::common::pull_all_at_least(&mut conn, TRANS_OP_HALF_TOPIC, 0, 2).await;
    let mut kinds: Vec<String> = decisions
        .iter()
        .filter_map(|m| m.message.properties.get("TRAN_DECISION").cloned())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["commit", "rollback"], "{decisions:?}");
    // The producer, still online, is listed in its group (the topic) with
    // its SDK's language and version.
    let out = crate::common::actormq(
        node.namesrv(),
        &["admin", "connections", "--producer-group", topic, "--json"],
    );
    let producers = crate::common::json_lines(&out);
    assert_eq!(producers.len(), 1, "{producers:?}");
    assert_eq!(producers[0]["language"], language, "{producers:?}");
    assert!(
        !producers[0]["version"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{producers:?}"
    );
    drop(child.stdin.take());
    let status = actix_rt::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("script exits");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    // The committed one is delivered, the rolled-back one never.
    let mut c = client(node.grpc()).await;
    let group = format!("{topic}-group");
    let start = Instant::now();
    let mut bodies = Vec::new();
    while bodies.is_empty() {
        assert!(start.elapsed() < WAIT, "committed: {bodies:?}");
        let (_, messages) = receive(&mut c, &group, topic).await;
        bodies.extend(
            messages
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned()),
        );
    }
    let (status, more) = receive(&mut c, &group, topic).await;
    assert_eq!(status.code, pb::Code::MessageNotFound as i32, "{more:?}");
    assert_eq!(bodies, ["check-commit"]);
}

#[actix_rt::test]
async fn t90_python_transaction_check_is_answered_over_telemetry() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = fast_checks_node();
        let topic = "t90-python-tx-check";
        let grpc = node.grpc().to_string();
        let child = spawn_python(
            &python,
            "rocketmq-python-transaction-check.py",
            &[grpc.as_str(), topic],
        );
        assert_check_back(&node, child, topic, "python", "PYTHON").await;
    })
    .await;
}

#[actix_rt::test]
async fn t90_nodejs_transaction_check_is_answered_over_telemetry() {
    let Some(node_modules) = nodejs_client() else {
        return;
    };
    bounded(async {
        let node = fast_checks_node();
        let topic = "t90-nodejs-tx-check";
        let grpc = node.grpc().to_string();
        let path = format!(
            "{}/scripts/rocketmq-nodejs-client.js",
            env!("CARGO_MANIFEST_DIR")
        );
        let child = std::process::Command::new("node")
            .arg(&path)
            .args(["check", grpc.as_str(), topic])
            .env("NODE_PATH", &node_modules)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {path}: {e}"));
        assert_check_back(&node, child, topic, "nodejs", "NODE_JS").await;
    })
    .await;
}

/// Deliveries to `auto_renew` clients are invisible this long (renewed
/// ahead of it): short, so a slow listener outlives it.
const AUTO_RENEW_ENV: [(&str, &str); 1] = [("ACTORMQ_GRPC__AUTO_RENEW_INVISIBLE_MS", "3000")];

#[actix_rt::test]
async fn t90_python_slow_push_consumer_gets_no_duplicates_while_alive() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start_with_env(Bin::Node, &[] as &[&str], &AUTO_RENEW_ENV)
            .expect("start a combined node");
        let topic = "t90-python-slow-push";
        let group = "t90-python-slow-push-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..3 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        // Each consumption takes 7 s, 2.3 times the invisible duration.
        let stdout = run_python(
            &python,
            "rocketmq-python-slow-push-consumer.py",
            &[grpc.as_str(), group, topic, "3", "7"],
        )
        .await;
        let lines = lines_of(&stdout);
        let mut bodies: Vec<&str> = lines.iter().filter_map(|l| l["body"].as_str()).collect();
        bodies.sort_unstable();
        // Renewed while the listener worked: each delivered once.
        assert_eq!(bodies, ["n-0", "n-1", "n-2"], "{stdout}");
        assert!(lines.iter().all(|l| l["delivery_attempt"] == 1), "{stdout}");
        // And acked with the handles the renewals left: nothing comes
        // back once the invisible duration has passed.
        let mut c = client(node.grpc()).await;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let (status, messages) = receive(&mut c, group, topic).await;
            assert_eq!(
                status.code,
                pb::Code::MessageNotFound as i32,
                "{messages:?}"
            );
        }
    })
    .await;
}

#[actix_rt::test]
async fn t90_python_killed_push_consumer_messages_come_back() {
    use std::io::BufRead;
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start_with_env(Bin::Node, &[] as &[&str], &AUTO_RENEW_ENV)
            .expect("start a combined node");
        let topic = "t90-python-killed-push";
        let group = "t90-python-killed-push-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..2 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        // Consumptions that never end: the deliveries stay renewed ...
        let mut child = spawn_python(
            &python,
            "rocketmq-python-slow-push-consumer.py",
            &[grpc.as_str(), group, topic, "2", "0"],
        );
        let stdout = child.stdout.take().expect("stdout");
        // Every line it prints, as it prints them (until it dies).
        let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let started = actix_rt::task::spawn_blocking(move || {
            let first: Vec<String> = lines_rx.iter().take(2).collect();
            (first, lines_rx)
        })
        .await
        .expect("join");
        let (started, lines_rx) = started;
        assert_eq!(started.len(), 2, "{started:?}");
        // ... while the client lives: nothing for another receive of the
        // group past the invisible duration.
        let mut c = client(node.grpc()).await;
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            let (status, messages) = receive(&mut c, group, topic).await;
            assert_eq!(
                status.code,
                pb::Code::MessageNotFound as i32,
                "renewed deliveries came back: {messages:?}"
            );
        }
        // It is listed among the group's clients, with its SDK.
        let out = crate::common::actormq(
            node.namesrv(),
            &["admin", "connections", "-g", group, "--json"],
        );
        let consumers = crate::common::json_lines(&out);
        assert_eq!(consumers.len(), 1, "{consumers:?}");
        assert_eq!(consumers[0]["language"], "PYTHON", "{consumers:?}");
        // Killed (no termination notice): its stream ends, the renewals
        // stop, the messages come back.
        child.kill().expect("kill the consumer");
        let _ = child.wait();
        reader.join().expect("reader");
        let later: Vec<String> = lines_rx.try_iter().collect();
        assert!(later.is_empty(), "delivered again while alive: {later:?}");
        let start = Instant::now();
        let mut back: Vec<pb::Message> = Vec::new();
        while back.len() < 2 {
            assert!(start.elapsed() < WAIT, "back: {back:?}");
            let (_, messages) = receive(&mut c, group, topic).await;
            back.extend(messages);
        }
        let mut bodies: Vec<String> = back
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).into_owned())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["n-0", "n-1"]);
        // Gone from the group's clients.
        let out = crate::common::actormq(
            node.namesrv(),
            &["admin", "connections", "-g", group, "--json"],
        );
        assert!(!out.status.success(), "still listed: {out:?}");
        // Delivered again (a receive the dead client left held in the
        // broker may take them once more before they come here).
        for m in &back {
            let attempt = m
                .system_properties
                .as_ref()
                .and_then(|s| s.delivery_attempt);
            assert!(attempt.is_some_and(|a| a >= 2), "{m:?}");
        }
    })
    .await;
}

#[actix_rt::test]
async fn t90_grpc_forward_to_dead_letter_queue() {
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-dlq";
        let group = "t90-dlq-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        p.send(native_message(topic, 0)).await.expect("native send");
        let mut c = client(node.grpc()).await;
        let start = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(start.elapsed() < WAIT, "nothing received");
            got = receive_for(&mut c, group, topic, 1).await.1;
        }
        let m = &got[0];
        let sys = m.system_properties.clone().expect("system properties");
        let forward = |handle: String| pb::ForwardMessageToDeadLetterQueueRequest {
            group: resource(group),
            topic: resource(topic),
            receipt_handle: handle,
            message_id: sys.message_id.clone(),
            delivery_attempt: 1,
            max_delivery_attempts: 16,
            lite_topic: None,
        };
        // A malformed handle: refused, nothing forwarded.
        let bad = c
            .forward_message_to_dead_letter_queue(forward("nope".into()))
            .await
            .expect("forward")
            .into_inner();
        assert_eq!(
            bad.status.map(|s| s.code),
            Some(pb::Code::InvalidReceiptHandle as i32)
        );
        let handle = sys.receipt_handle.clone().expect("receipt handle");
        let done = c
            .forward_message_to_dead_letter_queue(forward(handle))
            .await
            .expect("forward")
            .into_inner();
        assert_eq!(done.status.map(|s| s.code), Some(OK));
        // Acked: it does not come back once its 1 s invisible time passed.
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            let (status, messages) = receive_for(&mut c, group, topic, 1).await;
            assert_eq!(
                status.code,
                pb::Code::MessageNotFound as i32,
                "{messages:?}"
            );
        }
        // It is the group's one dead letter: resent, it is delivered again.
        let out = crate::common::actormq(
            node.namesrv(),
            &["admin", "dlq", "resend", "-g", group, "--json"],
        );
        assert!(out.status.success(), "{out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let resent: Vec<serde_json::Value> = lines_of(&stdout)
            .into_iter()
            .filter(|l| l.get("msg_id").is_some())
            .collect();
        assert_eq!(resent.len(), 1, "{stdout}");
        assert_eq!(resent[0]["topic"], topic, "{stdout}");
        let start = Instant::now();
        let mut again = Vec::new();
        while again.is_empty() {
            assert!(start.elapsed() < WAIT, "resent dead letter not delivered");
            again = receive(&mut c, group, topic).await.1;
        }
        assert_eq!(again[0].body, b"n-0");
        assert_eq!(
            again[0]
                .system_properties
                .as_ref()
                .map(|s| s.message_id.clone()),
            Some(sys.message_id.clone())
        );
    })
    .await;
}

/// The official Node.js client (npm `rocketmq-client-nodejs`), installed
/// by the test under the target dir (`CARGO_TARGET_TMPDIR`); returns its
/// `node_modules`. Machines without node or npm registry access set
/// `ACTORMQ_TESTS_NO_NPM=1` to skip (the test says so on stderr).
const NODE_CLIENT: &str = "rocketmq-client-nodejs@1.0.8";

fn nodejs_client() -> Option<std::path::PathBuf> {
    if std::env::var_os("ACTORMQ_TESTS_NO_NPM").is_some() {
        eprintln!("skipped: ACTORMQ_TESTS_NO_NPM is set");
        return None;
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm-rocketmq-1.0.8");
    let marker = dir.join(".installed");
    // One install, the other tests of this binary wait for it.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|p| p.into_inner());
    if !marker.exists() {
        // A half-made install (one that died) is made again.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("npm dir");
        std::fs::write(dir.join("package.json"), "{\"private\": true}\n").expect("package.json");
        let mut cmd = std::process::Command::new("npm");
        cmd.current_dir(&dir).args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            NODE_CLIENT,
        ]);
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, NODE_CLIENT).expect("npm marker");
    }
    Some(dir.join("node_modules"))
}

/// Runs `tests/scripts/rocketmq-nodejs-client.js` with `args` (off the
/// actor loop); its stdout, once it exited 0.
async fn run_node(node_modules: &std::path::Path, args: &[&str]) -> String {
    let path = format!(
        "{}/scripts/rocketmq-nodejs-client.js",
        env!("CARGO_MANIFEST_DIR")
    );
    let (node_modules, args) = (
        node_modules.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    let out = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(&path)
            .args(args)
            .env("NODE_PATH", node_modules)
            .output()
            .unwrap_or_else(|e| panic!("run {path}: {e}"))
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "node client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[actix_rt::test]
async fn t90_nodejs_producer_is_read_by_the_native_consumer() {
    let Some(node_modules) = nodejs_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-nodejs";
        let grpc = node.grpc().to_string();
        let stdout = run_node(&node_modules, &["produce", grpc.as_str(), topic]).await;
        let sent = lines_of(&stdout);
        assert_eq!(sent.len(), 8, "{stdout}");
        let consumer = SimpleConsumer::new(
            "t90-nodejs-native",
            &node.namesrv().to_string(),
            topic,
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .expect("simple consumer")
        .with_await_duration(Duration::from_secs(1));
        // Everything but the rolled-back one.
        let got = receive_n(&consumer, 7).await;
        let mut fifo = Vec::new();
        for r in &got {
            let m = &r.message.message;
            let body = String::from_utf8_lossy(&m.body).into_owned();
            let s = sent
                .iter()
                .find(|s| s["body"] == body.as_str())
                .unwrap_or_else(|| panic!("unexpected body {body}"));
            assert_ne!(s["kind"], "rollback", "a rolled-back message was delivered");
            assert_eq!(m.unique_key(), s["message_id"].as_str(), "client's id kept");
            assert_eq!(m.tags.as_deref(), Some("NodeTag"));
            match s["kind"].as_str() {
                Some("normal") => {
                    let i = body.trim_start_matches("node-");
                    assert_eq!(m.keys.as_deref(), Some(format!("node-key-{i}").as_str()));
                    assert_eq!(m.properties.get("lang").map(String::as_str), Some("nodejs"));
                }
                Some("fifo") => fifo.push((r.message.queue_id, r.message.queue_offset, body)),
                Some("delay") => {
                    // Stored again by the timer when due, 2 s after the send.
                    let sent_at = s["sent_at_ms"].as_u64().expect("sent_at_ms");
                    assert!(
                        r.message.store_timestamp_ms + 100 >= sent_at + 2000,
                        "delivered early: stored {} sent {sent_at}",
                        r.message.store_timestamp_ms
                    );
                }
                _ => {}
            }
            consumer.ack(&r.receipt).await.expect("ack");
        }
        // One message group: one queue, in send order.
        fifo.sort();
        assert!(fifo.windows(2).all(|w| w[0].0 == w[1].0), "{fifo:?}");
        let order: Vec<&str> = fifo.iter().map(|f| f.2.as_str()).collect();
        assert_eq!(order, ["fifo-0", "fifo-1", "fifo-2"]);
    })
    .await;
}

#[actix_rt::test]
async fn t90_nodejs_simple_consumer_receives_changes_and_acks() {
    let Some(node_modules) = nodejs_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-nodejs-simple";
        let group = "t90-nodejs-simple-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..3 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        let stdout = run_node(
            &node_modules,
            &["consume", grpc.as_str(), group, topic, "3"],
        )
        .await;
        let lines = lines_of(&stdout);
        // The first one came back after its invisible duration was changed.
        let first = lines.first().expect("a delivery");
        assert_eq!(first["attempt"], 1, "{stdout}");
        let again: Vec<_> = lines
            .iter()
            .filter(|l| l["body"] == first["body"] && l["attempt"] == 2)
            .collect();
        assert_eq!(again.len(), 1, "{stdout}");
        let mut bodies: Vec<&str> = lines.iter().filter_map(|l| l["body"].as_str()).collect();
        bodies.sort_unstable();
        bodies.dedup();
        assert_eq!(bodies, ["n-0", "n-1", "n-2"], "{stdout}");
        for l in &lines {
            assert_eq!(l["tag"], "NativeTag", "{l}");
            // The user's properties, not the broker's retry bookkeeping.
            let props = l["properties"].as_object().expect("properties");
            assert_eq!(props.len(), 1, "{l}");
            assert_eq!(props["origin"], "native", "{l}");
        }
        // All acked: nothing left for the group.
        let mut c = client(node.grpc()).await;
        let (status, messages) = receive(&mut c, group, topic).await;
        assert_eq!(
            status.code,
            pb::Code::MessageNotFound as i32,
            "{messages:?}"
        );
    })
    .await;
}

#[actix_rt::test]
async fn t90_grpc_fifo_groups_keep_their_order() {
    bounded(async {
        let node = NodeProcess::start(Bin::Node, &[] as &[&str]).expect("start a combined node");
        let topic = "t90-fifo";
        let group = "t90-fifo-group";
        fifo_topic_and_group(&node, topic, group).await;
        let mut c = client(node.grpc()).await;

        // The group's settings and assignment say FIFO.
        let settings = pb::TelemetryCommand {
            status: None,
            command: Some(pb::telemetry_command::Command::Settings(pb::Settings {
                client_type: Some(pb::ClientType::PushConsumer as i32),
                pub_sub: Some(pb::settings::PubSub::Subscription(pb::Subscription {
                    group: resource(group),
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        let mut answers = c
            .telemetry(futures_util::stream::iter([settings]))
            .await
            .expect("telemetry")
            .into_inner();
        let answer = answers.message().await.expect("answer").expect("one");
        let Some(pb::telemetry_command::Command::Settings(pb::Settings {
            pub_sub: Some(pb::settings::PubSub::Subscription(sub)),
            ..
        })) = answer.command
        else {
            panic!("no subscription settings: {answer:?}");
        };
        assert_eq!(sub.fifo, Some(true));
        let assignment = c
            .query_assignment(pb::QueryAssignmentRequest {
                topic: resource(topic),
                group: resource(group),
                endpoints: None,
            })
            .await
            .expect("query assignment")
            .into_inner();
        assert_eq!(assignment.assignments.len(), 4);

        send_fifo(&mut c, topic, 3).await;

        let start = Instant::now();
        let mut got: Vec<pb::Message> = Vec::new();
        while got.len() < 6 {
            assert!(start.elapsed() < WAIT, "only {} of 6", got.len());
            let (_, batch) = receive(&mut c, group, topic).await;
            for m in &batch {
                let h = m
                    .system_properties
                    .as_ref()
                    .and_then(|s| s.receipt_handle.clone())
                    .expect("handle");
                assert_eq!(ack(&mut c, group, topic, m, &h).await, OK);
            }
            got.extend(batch);
        }
        for g in ["a", "b"] {
            let of_group: Vec<&pb::Message> = got
                .iter()
                .filter(|m| {
                    m.system_properties
                        .as_ref()
                        .and_then(|s| s.message_group.as_deref())
                        == Some(g)
                })
                .collect();
            let bodies: Vec<String> = of_group
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body).into_owned())
                .collect();
            assert_eq!(
                bodies,
                [format!("{g}-0"), format!("{g}-1"), format!("{g}-2")]
            );
            let queues: Vec<i32> = of_group
                .iter()
                .filter_map(|m| m.system_properties.as_ref().map(|s| s.queue_id))
                .collect();
            assert!(queues.iter().all(|q| *q == queues[0]), "{queues:?}");
            assert!(of_group.iter().all(|m| {
                m.system_properties.as_ref().map(|s| s.message_type)
                    == Some(pb::MessageType::Fifo as i32)
            }));
        }
    })
    .await;
}

/// Creates `topic` with 4 queues and `group` as an orderly (FIFO) group.
async fn fifo_topic_and_group(node: &NodeProcess, topic: &str, group: &str) {
    use actormq_protocol::request::{CreateSubscriptionGroupRequest, SubscriptionGroupConfig};
    create_topic(node.broker(), topic, 4).await;
    let mut native = crate::common::connect(node.broker()).await;
    native
        .call(
            &CreateSubscriptionGroupRequest {
                config: SubscriptionGroupConfig {
                    consume_message_orderly: true,
                    ..SubscriptionGroupConfig::new(group)
                },
            },
            actormq_protocol::Bytes::new(),
        )
        .await
        .expect("create an orderly group");
}

/// Sends FIFO messages `<g>-<i>` (`i < per_group`) of the message
/// groups `a` and `b` to `topic` over gRPC, interleaved.
async fn send_fifo(c: &mut MessagingServiceClient<Channel>, topic: &str, per_group: usize) {
    let mut messages = Vec::new();
    for i in 0..per_group {
        for g in ["a", "b"] {
            let mut m = grpc_message(topic, &format!("01FIFO{g}{i:020}"), &format!("{g}-{i}"));
            if let Some(s) = m.system_properties.as_mut() {
                s.message_type = pb::MessageType::Fifo as i32;
                s.message_group = Some(g.into());
            }
            messages.push(m);
        }
    }
    let sent = c
        .send_message(pb::SendMessageRequest { messages })
        .await
        .expect("send")
        .into_inner();
    assert_eq!(sent.status.map(|s| s.code), Some(OK), "{:?}", sent.entries);
}

/// A push consumer's consumption starts (JSON lines with `body`, `group`
/// and the delivery attempt under `attempt_key`) of messages `<g>-<i>`,
/// `i < per_group`, of each message group `g` of `groups`: each consumed
/// once, at its first delivery, each group in order.
fn assert_fifo_consumed_once(
    lines: &[serde_json::Value],
    groups: &[&str],
    per_group: usize,
    attempt_key: &str,
) {
    assert!(
        lines.iter().all(|l| l[attempt_key] == 1),
        "delivered again: {lines:?}"
    );
    assert_eq!(lines.len(), groups.len() * per_group, "{lines:?}");
    for g in groups {
        let of_group: Vec<&str> = lines
            .iter()
            .filter(|l| l["group"] == *g)
            .filter_map(|l| l["body"].as_str())
            .collect();
        let expected: Vec<String> = (0..per_group).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(of_group, expected, "{lines:?}");
    }
}

/// Receives for `group` over gRPC until `for_` passed: nothing comes.
async fn assert_nothing_for(node: &NodeProcess, group: &str, topic: &str, for_: Duration) {
    let mut c = client(node.grpc()).await;
    let until = Instant::now() + for_;
    while Instant::now() < until {
        let (status, messages) = receive(&mut c, group, topic).await;
        assert_eq!(
            status.code,
            pb::Code::MessageNotFound as i32,
            "{messages:?}"
        );
    }
}

#[actix_rt::test]
async fn t90_python_fifo_push_consumer_keeps_group_order_while_renewed() {
    let Some(python) = python_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start_with_env(Bin::Node, &[] as &[&str], &AUTO_RENEW_ENV)
            .expect("start a combined node");
        let topic = "t90-python-fifo-push";
        let group = "t90-python-fifo-push-group";
        fifo_topic_and_group(&node, topic, group).await;
        let grpc = node.grpc().to_string();
        // FIFO sends of the Python producer: a-0, b-0, a-1, b-1.
        let sent = run_python(
            &python,
            "rocketmq-python-producer.py",
            &[grpc.as_str(), topic, "4", "a,b"],
        )
        .await;
        assert_eq!(lines_of(&sent).len(), 4, "{sent}");
        // Each consumption takes 4 s, longer than the 3 s invisible
        // duration: the broker renews the orderly deliveries meanwhile.
        let stdout = run_python(
            &python,
            "rocketmq-python-slow-push-consumer.py",
            &[grpc.as_str(), group, topic, "4", "4"],
        )
        .await;
        assert_fifo_consumed_once(&lines_of(&stdout), &["a", "b"], 2, "delivery_attempt");
        assert_nothing_for(&node, group, topic, Duration::from_secs(4)).await;
    })
    .await;
}

#[actix_rt::test]
async fn t90_nodejs_push_consumer_consumes_native_sends_while_renewed() {
    let Some(node_modules) = nodejs_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start_with_env(Bin::Node, &[] as &[&str], &AUTO_RENEW_ENV)
            .expect("start a combined node");
        let topic = "t90-nodejs-push";
        let group = "t90-nodejs-push-group";
        let p = ProducerBuilder::new("t90-producer")
            .namesrv([node.namesrv().to_string()])
            .build()
            .await
            .expect("producer");
        for i in 0..3 {
            p.send(native_message(topic, i)).await.expect("native send");
        }
        let grpc = node.grpc().to_string();
        // 4 s a message, past the 3 s invisible duration.
        let stdout = run_node(
            &node_modules,
            &["push", grpc.as_str(), group, topic, "3", "4000"],
        )
        .await;
        let lines = lines_of(&stdout);
        let mut bodies: Vec<&str> = lines.iter().filter_map(|l| l["body"].as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, ["n-0", "n-1", "n-2"], "{stdout}");
        assert!(lines.iter().all(|l| l["attempt"] == 1), "{stdout}");
        assert_nothing_for(&node, group, topic, Duration::from_secs(4)).await;
    })
    .await;
}

#[actix_rt::test]
async fn t90_nodejs_fifo_push_consumer_keeps_group_order_while_renewed() {
    let Some(node_modules) = nodejs_client() else {
        return;
    };
    bounded(async {
        let node = NodeProcess::start_with_env(Bin::Node, &[] as &[&str], &AUTO_RENEW_ENV)
            .expect("start a combined node");
        let topic = "t90-nodejs-fifo-push";
        let group = "t90-nodejs-fifo-push-group";
        fifo_topic_and_group(&node, topic, group).await;
        let mut c = client(node.grpc()).await;
        send_fifo(&mut c, topic, 2).await;
        let grpc = node.grpc().to_string();
        let stdout = run_node(
            &node_modules,
            &["push", grpc.as_str(), group, topic, "4", "4000"],
        )
        .await;
        assert_fifo_consumed_once(&lines_of(&stdout), &["a", "b"], 2, "attempt");
        assert_nothing_for(&node, group, topic, Duration::from_secs(4)).await;
    })
    .await;
}

//! An in-process node on ephemeral ports stamps the port it really bound
//! into message ids and registers that address.

use actormq_actors::runtime::Call;
use actormq_actors::runtime::net::{ClientSessions, Lane};
use actormq_cluster::config::{NodeConfig, Overrides};
use actormq_cluster::node::Node;
use actormq_protocol::MessageId;
use actormq_protocol::request::{GetRouteInfoByTopicRequest, SendMessageRequest};
use bytes::Bytes;

#[actix_rt::test]
async fn ephemeral_broker_port_is_stamped_into_ids_and_routes() {
    // The writer on the sessions' arbiter (default) and on its own; the
    // dispatcher on the writer's thread (default) and on its own.
    for (writer_thread, dispatcher_thread) in
        [("false", "false"), ("true", "false"), ("false", "true")]
    {
        stamps_the_bound_port(writer_thread, dispatcher_thread).await;
    }
}

async fn stamps_the_bound_port(writer_thread: &str, dispatcher_thread: &str) {
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        namesrv_listen: Some(([127, 0, 0, 1], 0).into()),
        broker_listen: Some(([127, 0, 0, 1], 0).into()),
        ..Overrides::default()
    };
    let env = [
        ("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", "8388608"),
        ("ACTORMQ_BROKER__WRITER_THREAD", writer_thread),
        ("ACTORMQ_BROKER__DISPATCHER_THREAD", dispatcher_thread),
    ];
    let config = NodeConfig::load(None, env, flags).unwrap();
    assert_eq!(config.broker.writer_thread.to_string(), writer_thread);
    assert_eq!(
        config.broker.dispatcher_thread.to_string(),
        dispatcher_thread
    );
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let node = Node::start(&config, &log).await.unwrap();
    let broker = node.broker_addr.unwrap();
    assert_ne!(broker.port(), 0);

    let clients = ClientSessions::new(&log);
    let client = clients.session_at(broker, Lane::Main);
    let req = SendMessageRequest {
        topic: "ids".into(),
        ..SendMessageRequest::default()
    };
    let reply = client
        .send(Call::with_body(req, Bytes::from_static(b"x")))
        .await
        .unwrap();
    let id = MessageId::decode(&reply.fields.msg_id).unwrap();
    assert_eq!(id.store_host, broker, "the id names the bound address");

    let namesrv = clients.session_at(node.namesrv_addr.unwrap(), Lane::Main);
    let route = namesrv.send(Call::new(GetRouteInfoByTopicRequest {
        topic: "ids".into(),
    }));
    let route = route.await.unwrap().fields;
    assert_eq!(
        route.broker_datas[0].master_addr(),
        Some(broker.to_string().as_str())
    );
    node.shutdown().await;
}

// ------------------------------------------------- refused, not ignored

/// Runs a binary of this crate with `args` and `env`; stdin closed.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap_or_else(|e| panic!("run {bin}: {e}"))
}

/// The one stderr line of a refused run (non-zero exit, nothing on stdout).
fn refusal(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "must be refused: {out:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn node_refuses_flags_and_keys_of_missing_features_and_bad_roles() {
    let node = env!("CARGO_BIN_EXE_actormq-node");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let base = [
        "--data-dir",
        data,
        "--namesrv-listen",
        "127.0.0.1:0",
        "--broker-listen",
        "127.0.0.1:0",
    ];
    // Replication roles that do not fit the broker id or addresses.
    for (flags, needle) in [
        (&["--ha-role", "slave"][..], "broker.broker_id"),
        (
            &["--ha-role", "slave", "--broker-id", "1"][..],
            "broker.master",
        ),
        (
            &[
                "--ha-role",
                "slave",
                "--broker-id",
                "1",
                "--master",
                "127.0.0.1:1",
                "--ha-listen",
                "127.0.0.1:0",
            ][..],
            "broker.ha_listen",
        ),
        (&["--master", "127.0.0.1:10912"][..], "broker.master"),
        (&["--broker-id", "3"][..], "broker.broker_id"),
        (&["--grpc-listen", "nowhere"][..], "grpc.listen"),
        (&["--http-listen", "nowhere"][..], "http.listen"),
    ] {
        let args: Vec<&str> = base.iter().chain(flags).copied().collect();
        let err = refusal(&run(node, &args, &[]));
        assert!(err.contains(needle), "{err:?} names {needle}");
    }
    {
        let (var, value, key) = ("ACTORMQ_BROKER__HA_ROLE", "slave", "broker.broker_id");
        let err = refusal(&run(node, &base, &[(var, value)]));
        assert!(err.contains(key), "{err:?} names {key}");
    }
    // --print-config still works, and the default spelled out is accepted.
    let out = run(
        node,
        &[
            "--print-config",
            "--ha-role",
            "async-master",
            "--grpc-listen",
            "off",
            "--http-listen",
            "off",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ha_role = \"async-master\""), "{text}");
}

#[test]
fn produce_refuses_invalid_messages_with_one_line_and_no_panic() {
    let cli = env!("CARGO_BIN_EXE_actormq");
    let long = "t".repeat(300);
    let n = ["-n", "127.0.0.1:1", "--timeout-ms", "300", "produce"];
    for (args, needle) in [
        (vec!["-t", "has space"], "invalid topic"),
        (vec!["-t", ""], "invalid topic"),
        (vec!["-t", long.as_str()], "invalid topic"),
        (vec!["-t", "T", "--size", "4194305"], "too large"),
        (vec!["-t", "T", "--size", "20971520"], "too large"),
    ] {
        let all: Vec<&str> = n.iter().copied().chain(args).collect();
        let err = refusal(&run(cli, &all, &[]));
        assert!(err.contains(needle), "{err:?} should say {needle}");
    }
}

/// Panics in `install`.
struct Broken;

impl actormq_actors::broker::plugin::BrokerPlugin for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn install(self: Box<Self>, _: &mut actormq_actors::broker::plugin::BrokerContext) {
        panic!("plugin install fails (expected in this test)");
    }
}

#[actix_rt::test]
async fn a_panicking_plugin_install_is_an_error_not_a_panic() {
    use actormq_actors::broker::plugin::PluginError;
    use actormq_cluster::node::NodeError;
    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        namesrv_listen: Some(([127, 0, 0, 1], 0).into()),
        broker_listen: Some(([127, 0, 0, 1], 0).into()),
        ..Overrides::default()
    };
    let env: [(&str, &str); 0] = [];
    let config = NodeConfig::load(None, env, flags).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let err = match Node::start_with(&config, &log, vec![Box::new(Broken)]).await {
        Ok(_) => panic!("started with a broken plugin"),
        Err(e) => e,
    };
    match err {
        NodeError::Plugin(PluginError::InstallPanicked { plugin, reason }) => {
            assert_eq!(plugin, "broken");
            assert!(reason.contains("plugin install fails"), "{reason}");
        }
        other => panic!("unexpected error {other}"),
    }
}

/// Stopping the `grpc-server` child (here by the node's shutdown) closes
/// the HTTP/2 connections it was serving, rather than leaving them to a
/// dead actor.
#[actix_rt::test]
async fn stopping_the_grpc_server_closes_its_connections() {
    use actormq_grpc::pb;
    use actormq_grpc::pb::messaging_service_client::MessagingServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let flags = Overrides {
        data_dir: Some(dir.path().to_path_buf()),
        namesrv_listen: Some(([127, 0, 0, 1], 0).into()),
        broker_listen: Some(([127, 0, 0, 1], 0).into()),
        grpc_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("off".into()),
        ..Overrides::default()
    };
    let env = [("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", "8388608")];
    let config = NodeConfig::load(None, env, flags).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let node = Node::start(&config, &log).await.unwrap();
    let addr = node.grpc_addr.unwrap();
    let mut client = MessagingServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let route = |c: &mut MessagingServiceClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            c.query_route(pb::QueryRouteRequest {
                topic: Some(pb::Resource {
                    resource_namespace: String::new(),
                    name: "auto".into(),
                }),
                endpoints: None,
            })
            .await
        }
    };
    let served = route(&mut client).await.unwrap().into_inner();
    assert_eq!(
        served.status.unwrap().code,
        pb::Code::Ok as i32,
        "the endpoint answers before the stop (the topic is auto-created)"
    );
    node.shutdown().await;
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), route(&mut client))
        .await
        .expect("a call on a stopped server's connection is refused, not left hanging");
    assert!(after.is_err(), "no answer after the stop: {after:?}");
}

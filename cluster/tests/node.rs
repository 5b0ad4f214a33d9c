//! An in-process node on ephemeral ports stamps the port it really bound
//! into message ids and registers that address.

use actormq_actors::runtime::Call;
use actormq_actors::runtime::net::RemoteClient;
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

    let client = RemoteClient::connect(broker, &log);
    let req = SendMessageRequest {
        topic: "ids".into(),
        ..SendMessageRequest::default()
    };
    let reply = client
        .send(Call::with_body(req, Bytes::from_static(b"x")))
        .await
        .unwrap()
        .unwrap();
    let id = MessageId::decode(&reply.fields.msg_id).unwrap();
    assert_eq!(id.store_host, broker, "the id names the bound address");

    let namesrv = RemoteClient::connect(node.namesrv_addr.unwrap(), &log);
    let route = namesrv.send(Call::new(GetRouteInfoByTopicRequest {
        topic: "ids".into(),
    }));
    let route = route.await.unwrap().unwrap().fields;
    assert_eq!(
        route.broker_datas[0].master_addr(),
        Some(broker.to_string().as_str())
    );
    node.shutdown().await;
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

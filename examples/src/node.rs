//! An in-process combined node for the examples: temp data dir, ports
//! picked by the OS, small commit-log segments.

use actormq_cluster::actors::broker::plugin::BrokerPlugin;
use actormq_cluster::config::{NodeConfig, Overrides};
use actormq_cluster::node::{Node, NodeError};

/// A running in-process node and the temp dir holding its data.
pub struct ExampleNode {
    /// The node (its `broker_addr` and `namesrv_addr` are bound).
    pub node: Node,
    _data: tempfile::TempDir,
}

impl ExampleNode {
    /// The name server address clients are given.
    pub fn namesrv(&self) -> Result<String, &'static str> {
        self.node
            .namesrv_addr
            .map(|a| a.to_string())
            .ok_or("no name server")
    }
}

/// Starts a combined node with `plugins` inside the current actix `System`.
pub async fn start(plugins: Vec<Box<dyn BrokerPlugin>>) -> Result<ExampleNode, NodeError> {
    start_with(plugins, &[]).await
}

/// As [`start`], with extra `ACTORMQ_*` settings (e.g.
/// `ACTORMQ_BROKER__TRANSACTION_TIMEOUT_MS`).
pub async fn start_with(
    plugins: Vec<Box<dyn BrokerPlugin>>,
    settings: &[(&str, &str)],
) -> Result<ExampleNode, NodeError> {
    let data = tempfile::tempdir().map_err(|source| NodeError::DataDir {
        dir: std::env::temp_dir(),
        source,
    })?;
    let flags = Overrides {
        data_dir: Some(data.path().to_path_buf()),
        namesrv_listen: Some(([127, 0, 0, 1], 0).into()),
        broker_listen: Some(([127, 0, 0, 1], 0).into()),
        ..Overrides::default()
    };
    let mut env = vec![("ACTORMQ_BROKER__COMMIT_LOG_SEGMENT_SIZE", "8388608")];
    env.extend_from_slice(settings);
    let config = NodeConfig::load(None, env, flags).expect("example config is valid");
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let node = Node::start_with(&config, &log, plugins).await?;
    Ok(ExampleNode { node, _data: data })
}

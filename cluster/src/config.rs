//! Node configuration: every key of `spec/cli.md`, its default, its bounds.
//!
//! Layering (lowest to highest): [`NodeConfig::default`] → a TOML file →
//! the environment (`ACTORMQ_<TABLE>__<KEY>`, e.g.
//! `ACTORMQ_BROKER__FLUSH=sync`) → command-line flags ([`Overrides`]). The
//! binaries call [`NodeConfig::load`]; tests pass their own environment, so
//! this library never reads the process environment by itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use serde::{Deserialize, Deserializer, Serialize};

/// Which actors a node hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Name server and broker in one process; the broker reaches the
    /// registry by a local actor address.
    Combined,
    /// Name server only.
    Namesrv,
    /// Broker only; needs at least one name server in `broker.namesrv`.
    Broker,
}

/// Flush policy of the commit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Flush every 500 ms or at 4 dirty pages; acknowledge on append.
    Async,
    /// Group commit: acknowledge only once the bytes are on disk.
    Sync,
}

/// Replication role of a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaRole {
    /// Master that acknowledges before slaves have the bytes.
    AsyncMaster,
    /// Master that acknowledges after a slave has the bytes.
    SyncMaster,
    /// Slave replicating from `broker.master`.
    Slave,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[node]`: role and data directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Actors this node hosts. Default `combined`.
    pub role: Role,
    /// Root of all persistent data. Default `./actormq-data`.
    pub data_dir: PathBuf,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            role: Role::Combined,
            data_dir: PathBuf::from("./actormq-data"),
        }
    }
}

/// `[namesrv]`: the name server's listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamesrvSection {
    /// Listen address; port 0 binds an ephemeral port. Default `127.0.0.1:9876`.
    pub listen: SocketAddr,
    /// Most connections open at once on the name-server listener; one
    /// accepted past it is closed at once. >0. Default `4096`.
    pub max_connections: usize,
    /// Cap on the bytes all connections of the name-server listener hold
    /// together (read buffers, requests being served, unsent replies);
    /// past it connections stop reading until memory is freed. At least
    /// 1 MiB. Default `1073741824` (1 GiB).
    pub max_connection_memory: usize,
}

impl Default for NamesrvSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9876)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connection_memory: DEFAULT_MAX_CONNECTION_MEMORY,
        }
    }
}

/// Default of the `max_connections` keys.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default of the `max_connection_memory` keys: 1 GiB.
pub const DEFAULT_MAX_CONNECTION_MEMORY: usize = 1 << 30;
/// Least `max_connection_memory` accepted: 1 MiB.
pub const MIN_CONNECTION_MEMORY: usize = 1 << 20;

/// `[broker]`: the broker's identity, storage and feature switches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// Listen address; port 0 binds an ephemeral port. Default `127.0.0.1:10911`.
    pub listen: SocketAddr,
    /// Address registered with name servers instead of the bound one. Default none.
    pub advertise: Option<SocketAddr>,
    /// Extra name servers to register with (a combined node always registers
    /// with its own). Required non-empty for `role = "broker"`. Default empty.
    /// The environment may give a comma-separated list.
    #[serde(deserialize_with = "addr_list")]
    pub namesrv: Vec<SocketAddr>,
    /// Cluster name. Default `DefaultCluster`.
    pub cluster: String,
    /// Broker name (master and slaves share it). Default `broker-a`.
    pub broker_name: String,
    /// `0` = master, `> 0` = slave. Default `0`.
    pub broker_id: u64,
    /// Commit-log flush policy. Default `async`.
    pub flush: FlushMode,
    /// Replication role. Default `async-master`. A `slave` needs `master`
    /// and a `broker_id` > 0 (and its master's `broker_name`); a master
    /// has `broker_id` 0.
    pub ha_role: HaRole,
    /// HA listener of a master (slaves connect here). Default none, which
    /// means RocketMQ's rule: the broker listen address with port + 1, or
    /// port 0 (any free port) when the broker port is 0. Not allowed on a
    /// slave.
    pub ha_listen: Option<SocketAddr>,
    /// HA address of the master a slave replicates from. Default none;
    /// required for (and only allowed on) a slave.
    pub master: Option<SocketAddr>,
    /// How long a `sync-master` send waits for a slave to acknowledge it
    /// before the reply says `FLUSH_SLAVE_TIMEOUT` (the message is stored
    /// on the master anyway), 1..=60000. Default `5000`.
    pub ha_sync_timeout_ms: u64,
    /// How often a slave copies its master's topic configs, consumer
    /// offsets and subscription groups, 100..=600000. Default `10000`
    /// (RocketMQ's `SlaveSynchronize`).
    pub ha_config_sync_ms: u64,
    /// Create a topic on its first send. Default `true`.
    pub auto_create_topic: bool,
    /// Queues of an auto-created topic, 1..=1024. Default `4`.
    pub default_queues: u32,
    /// Create a consumer group's config (defaults: retry max 16, not
    /// orderly, broadcast allowed) on the group's first heartbeat. Default
    /// `true` (RocketMQ's `autoCreateSubscriptionGroup`). With `false`, a
    /// consumer of a group not created with `actormq admin group create` is
    /// refused with `SUBSCRIPTION_GROUP_NOT_EXIST`.
    pub auto_create_subscription_group: bool,
    /// Delay levels, space-separated durations (`s`, `m`, `h`, `d`).
    /// Default `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`.
    /// At most 255 levels. Shorter tables (e.g. `"1s 1s 1s"`) make retries
    /// quick in tests.
    pub message_delay_level: String,
    /// Redeliveries before a message goes to `%DLQ%<group>`, 0..=64, as
    /// the `retry_max_times` of an auto-created subscription group (a
    /// group created with `admin group create --retry-max` keeps its own).
    /// Default `16`.
    pub max_reconsume_times: u32,
    /// Allow SQL92 property filters (subscriptions with `--sql`). Default
    /// `true`; with `false` a SQL92 subscription is refused (heartbeat and
    /// pull) with "the broker does not support consumer to filter message
    /// by SQL92".
    pub enable_property_filter: bool,
    /// Longest a pull that found nothing is held, ms, 0..=60000. Default `15000`.
    pub long_polling_max_ms: u64,
    /// Let consumers read from this broker's slave when they are far
    /// behind (RocketMQ's `slaveReadEnable`): a pull whose first message
    /// lies more than `access_message_in_memory_max_ratio` % of the
    /// machine's memory behind the end of the commit log is answered with
    /// `suggest_which_broker_id = 1`, and the SDK pulls that queue from the
    /// slave (id 1) until a reply suggests the master again. Default
    /// `false`.
    pub slave_read_enable: bool,
    /// See `slave_read_enable`: percent of the machine's memory, 0..=100.
    /// Default `40`.
    pub access_message_in_memory_max_ratio: u32,
    /// Idempotent producers: sequences remembered per (producer, topic,
    /// queue), 1..=4096; an older one is refused with
    /// `SEQUENCE_OUT_OF_WINDOW`. Default `64`.
    pub producer_dedup_window: u32,
    /// Idempotent producers: most (producer, topic, queue) windows kept
    /// (least recently used dropped first), at least 1. Default `10000`.
    pub producer_dedup_max_producers: u32,
    /// Age of an undecided transactional half message before the broker
    /// asks a producer of its group for its state, ms. Default `6000`.
    pub transaction_timeout_ms: u64,
    /// Interval of the transaction checker, ms, >0. Default `60000`.
    pub transaction_check_interval_ms: u64,
    /// Checks before a half message is rolled back. Default `15`.
    pub transaction_check_max: u32,
    /// Hours commit-log segments are kept, >0. Default `72`.
    pub file_reserved_hours: u32,
    /// Size of one commit-log segment file in bytes, 64 KiB..=16 GiB.
    /// Default `1073741824` (1 GiB). Small values suit tests.
    pub commit_log_segment_size: u64,
    /// Run the commit-log writer on its own arbiter (thread) instead of
    /// the sessions' one. Default `false`: on the 2-core reference machine
    /// the cross-thread hop per request costs more than the parallelism
    /// gives (BENCHMARKS.md, "Writer thread"); try `true` on machines with
    /// more cores.
    pub writer_thread: bool,
    /// Run the dispatcher (consume queues, key index, "stored" events) on
    /// its own arbiter (thread), nudged by the writer at most once per
    /// millisecond. Default `false`. `true` takes the per-record indexing
    /// off the writer's thread: batches of 1000 go 1.6-1.8 M -> 1.9-2.1 M
    /// msgs/s on the 2-core reference machine, for up to ~2 ms more
    /// produce-to-consume latency (BENCHMARKS.md, "Dispatcher thread").
    pub dispatcher_thread: bool,
    /// Most client connections open at once on the broker listener; one
    /// accepted past it is closed at once (logged once per second with a
    /// count). >0. Default `4096`.
    pub max_connections: usize,
    /// Cap on the bytes all connections of the broker listener hold
    /// together (read buffers, requests being served, unsent replies).
    /// Past it a connection reads a new request only when it has nothing
    /// in flight and nothing unsent: peers that do not read their replies
    /// stop being read (backpressure), the others are still served; no
    /// request already read is dropped or refused. At least 1 MiB.
    /// Default `1073741824` (1 GiB).
    pub max_connection_memory: usize,
}

impl Default for BrokerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 10911)),
            advertise: None,
            namesrv: Vec::new(),
            cluster: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            flush: FlushMode::Async,
            ha_role: HaRole::AsyncMaster,
            ha_listen: None,
            master: None,
            ha_sync_timeout_ms: 5000,
            ha_config_sync_ms: 10_000,
            auto_create_topic: true,
            default_queues: 4,
            auto_create_subscription_group: true,
            message_delay_level: DEFAULT_DELAY_LEVELS.into(),
            max_reconsume_times: 16,
            enable_property_filter: true,
            long_polling_max_ms: 15_000,
            slave_read_enable: false,
            access_message_in_memory_max_ratio: 40,
            producer_dedup_window: 64,
            producer_dedup_max_producers: 10_000,
            transaction_timeout_ms: 6_000,
            transaction_check_interval_ms: 60_000,
            transaction_check_max: 15,
            file_reserved_hours: 72,
            commit_log_segment_size: 1 << 30,
            writer_thread: false,
            dispatcher_thread: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connection_memory: DEFAULT_MAX_CONNECTION_MEMORY,
        }
    }
}

/// RocketMQ's delay levels.
pub const DEFAULT_DELAY_LEVELS: &str = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";

/// `[log]`: format and level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` or `json`. Default `text`.
    pub format: LogFormat,
    /// `trace`, `debug`, `info`, `warn`, `error` or `critical`. Default `info`.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// `[node]`.
    pub node: NodeSection,
    /// `[namesrv]`.
    pub namesrv: NamesrvSection,
    /// `[broker]`.
    pub broker: BrokerSection,
    /// `[grpc]`.
    pub grpc: GrpcSection,
    /// `[http]`.
    pub http: HttpSection,
    /// `[log]`.
    pub log: LogSection,
}

/// `[grpc]`: the RocketMQ 5 gRPC endpoint (`apache.rocketmq.v2`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSection {
    /// `HOST:PORT` or `off`. Unset: `127.0.0.1:8081` (RocketMQ's proxy
    /// port), or port 0 when the broker port is 0 (so nodes started on
    /// ephemeral ports never collide on 8081).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The invisible duration of deliveries to clients asking for
    /// `auto_renew` (push consumers), renewed while they live (RocketMQ
    /// proxy's `defaultInvisibleTimeMills`). Unset: 60 000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_renew_invisible_ms: Option<u64>,
}

/// The default of `grpc.auto_renew_invisible_ms`.
pub const DEFAULT_AUTO_RENEW_INVISIBLE_MS: u64 = 60_000;

impl GrpcSection {
    /// `auto_renew_invisible_ms`, or its default (at least 1 s).
    pub fn auto_renew_invisible_ms(&self) -> u64 {
        self.auto_renew_invisible_ms
            .unwrap_or(DEFAULT_AUTO_RENEW_INVISIBLE_MS)
            .max(1_000)
    }
}

/// RocketMQ's proxy port, the default gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 8081;

/// `[http]`: the operations endpoint (`/metrics`, `/api/...`, the
/// dashboard at `/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// `HOST:PORT` or `off`. Unset: `127.0.0.1:8082`, or port 0 when the
    /// node's broker (or, on a name-server node, name-server) port is 0,
    /// so nodes started on ephemeral ports never collide on 8082.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
}

/// The default HTTP (metrics, admin API, dashboard) port.
pub const DEFAULT_HTTP_PORT: u16 = 8082;

/// Values given as command-line flags; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--role`.
    pub role: Option<Role>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--namesrv-listen`.
    pub namesrv_listen: Option<SocketAddr>,
    /// `--broker-listen`.
    pub broker_listen: Option<SocketAddr>,
    /// `--broker-advertise`.
    pub broker_advertise: Option<SocketAddr>,
    /// `--namesrv` (comma-separated on the command line).
    pub namesrv: Option<Vec<SocketAddr>>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--broker-name`.
    pub broker_name: Option<String>,
    /// `--broker-id`.
    pub broker_id: Option<u64>,
    /// `--flush`.
    pub flush: Option<FlushMode>,
    /// `--ha-role`.
    pub ha_role: Option<HaRole>,
    /// `--ha-listen`.
    pub ha_listen: Option<SocketAddr>,
    /// `--master`.
    pub master: Option<SocketAddr>,
    /// `--grpc-listen` (`HOST:PORT` or `off`).
    pub grpc_listen: Option<String>,
    /// `--http-listen` (`HOST:PORT` or `off`).
    pub http_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

impl Overrides {
    fn apply(self, c: &mut NodeConfig) {
        fn set<T>(slot: &mut T, v: Option<T>) {
            if let Some(v) = v {
                *slot = v;
            }
        }
        set(&mut c.node.role, self.role);
        set(&mut c.node.data_dir, self.data_dir);
        set(&mut c.namesrv.listen, self.namesrv_listen);
        set(&mut c.broker.listen, self.broker_listen);
        set(&mut c.broker.advertise, self.broker_advertise.map(Some));
        set(&mut c.broker.namesrv, self.namesrv);
        set(&mut c.broker.cluster, self.cluster);
        set(&mut c.broker.broker_name, self.broker_name);
        set(&mut c.broker.broker_id, self.broker_id);
        set(&mut c.broker.flush, self.flush);
        set(&mut c.broker.ha_role, self.ha_role);
        set(&mut c.broker.ha_listen, self.ha_listen.map(Some));
        set(&mut c.broker.master, self.master.map(Some));
        set(&mut c.grpc.listen, self.grpc_listen.map(Some));
        set(&mut c.http.listen, self.http_listen.map(Some));
        set(&mut c.log.format, self.log_format);
        set(&mut c.log.level, self.log_level);
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file, the environment or a value could not be parsed.
    #[error("config: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// The configuration file does not exist.
    #[error("config file {0} not found")]
    FileNotFound(PathBuf),
    /// A value is out of its documented bounds or contradicts another.
    #[error("config: {key}: {reason}")]
    Invalid {
        /// The offending key, `table.key`.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl NodeConfig {
    /// Layers defaults, the TOML `file` (if any), the `ACTORMQ_` variables
    /// among `env`, and `flags`, then validates.
    pub fn load<K, V>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (K, V)>,
        flags: Overrides,
    ) -> Result<NodeConfig, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound(path.to_path_buf()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only `ACTORMQ_<TABLE>__<KEY>` pairs, given explicitly: the library
        // never reads the process environment itself. Values are parsed the
        // way figment's `Env` provider parses them (numbers, booleans, arrays).
        for (k, v) in env {
            let Some(rest) = k.as_ref().strip_prefix("ACTORMQ_") else {
                continue;
            };
            if !rest.contains("__") {
                continue; // e.g. ACTORMQ_CRASH_ROUNDS: not a config key
            }
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let value: Value = v.as_ref().parse().unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::global(&key, value));
        }
        let mut config: NodeConfig = figment.extract().map_err(Box::new)?;
        flags.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks every documented bound and cross-field rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.broker;
        let invalid = |key: &'static str, reason: String| Err(ConfigError::Invalid { key, reason });
        if self.node.role == Role::Broker && b.namesrv.is_empty() {
            return invalid(
                "broker.namesrv",
                "a broker-only node needs --namesrv ADDR".into(),
            );
        }
        if b.cluster.is_empty() {
            return invalid("broker.cluster", "must not be empty".into());
        }
        if b.broker_name.is_empty() {
            return invalid("broker.broker_name", "must not be empty".into());
        }
        if !(1..=1024).contains(&b.default_queues) {
            return invalid(
                "broker.default_queues",
                format!("{} is not in 1..=1024", b.default_queues),
            );
        }
        if b.max_reconsume_times > 64 {
            return invalid(
                "broker.max_reconsume_times",
                format!("{} > 64", b.max_reconsume_times),
            );
        }
        if b.long_polling_max_ms > 60_000 {
            return invalid(
                "broker.long_polling_max_ms",
                format!("{} > 60000", b.long_polling_max_ms),
            );
        }
        if b.access_message_in_memory_max_ratio > 100 {
            return invalid(
                "broker.access_message_in_memory_max_ratio",
                format!("{} > 100", b.access_message_in_memory_max_ratio),
            );
        }
        if !(1..=4096).contains(&b.producer_dedup_window) {
            return invalid(
                "broker.producer_dedup_window",
                format!("{} is not in 1..=4096", b.producer_dedup_window),
            );
        }
        if b.producer_dedup_max_producers == 0 {
            return invalid("broker.producer_dedup_max_producers", "must be > 0".into());
        }
        if b.transaction_check_interval_ms == 0 {
            return invalid("broker.transaction_check_interval_ms", "must be > 0".into());
        }
        if b.file_reserved_hours == 0 {
            return invalid("broker.file_reserved_hours", "must be > 0".into());
        }
        if !(64 << 10..=16 << 30).contains(&b.commit_log_segment_size) {
            return invalid(
                "broker.commit_log_segment_size",
                format!(
                    "{} is not in 65536..=17179869184",
                    b.commit_log_segment_size
                ),
            );
        }
        for (key, max_connections) in [
            ("broker.max_connections", b.max_connections),
            ("namesrv.max_connections", self.namesrv.max_connections),
        ] {
            if max_connections == 0 {
                return invalid(key, "must be > 0".into());
            }
        }
        for (key, memory) in [
            ("broker.max_connection_memory", b.max_connection_memory),
            (
                "namesrv.max_connection_memory",
                self.namesrv.max_connection_memory,
            ),
        ] {
            if memory < MIN_CONNECTION_MEMORY {
                return invalid(key, format!("{memory} < {MIN_CONNECTION_MEMORY} (1 MiB)"));
            }
        }
        if let Err(reason) = parse_delay_levels(&b.message_delay_level) {
            return invalid("broker.message_delay_level", reason);
        }
        if let Some((key, reason)) = self.ha_mismatch() {
            return invalid(key, reason.into());
        }
        if !(1..=60_000).contains(&b.ha_sync_timeout_ms) {
            return invalid(
                "broker.ha_sync_timeout_ms",
                format!("{} is not in 1..=60000", b.ha_sync_timeout_ms),
            );
        }
        if !(100..=600_000).contains(&b.ha_config_sync_ms) {
            return invalid(
                "broker.ha_config_sync_ms",
                format!("{} is not in 100..=600000", b.ha_config_sync_ms),
            );
        }
        if let Some(listen) = self.grpc.listen.as_deref()
            && listen != "off"
            && listen.parse::<SocketAddr>().is_err()
        {
            return invalid(
                "grpc.listen",
                format!("{listen:?} is neither HOST:PORT nor \"off\""),
            );
        }
        if let Some(listen) = self.http.listen.as_deref()
            && listen != "off"
            && listen.parse::<SocketAddr>().is_err()
        {
            return invalid(
                "http.listen",
                format!("{listen:?} is neither HOST:PORT nor \"off\""),
            );
        }
        if let Some((key, reason)) = self.unavailable() {
            return invalid(key, format!("not available yet: {reason}"));
        }
        if !matches!(
            self.log.level.as_str(),
            "trace" | "debug" | "info" | "warn" | "error" | "critical"
        ) {
            return invalid("log.level", format!("unknown level {:?}", self.log.level));
        }
        Ok(())
    }

    /// The first key set to a non-default value whose feature does not exist
    /// yet, with why: such a value would be accepted and ignored, so
    /// [`validate`](Self::validate) refuses it (`spec/cli.md`). None today.
    pub fn unavailable(&self) -> Option<(&'static str, &'static str)> {
        None
    }

    /// A replication role that does not fit the broker id or addresses,
    /// with why (the key named is the one to change).
    pub fn ha_mismatch(&self) -> Option<(&'static str, &'static str)> {
        let b = &self.broker;
        match b.ha_role {
            HaRole::Slave => {
                if b.broker_id == 0 {
                    Some((
                        "broker.broker_id",
                        "a slave needs a broker id > 0 (--broker-id N); id 0 is the master",
                    ))
                } else if b.master.is_none() {
                    Some((
                        "broker.master",
                        "a slave needs its master's HA address (--master HOST:PORT)",
                    ))
                } else if b.ha_listen.is_some() {
                    Some((
                        "broker.ha_listen",
                        "a slave has no HA listener (only a master listens for slaves)",
                    ))
                } else {
                    None
                }
            }
            HaRole::AsyncMaster | HaRole::SyncMaster => {
                if b.broker_id != 0 {
                    Some((
                        "broker.broker_id",
                        "a master has broker id 0 (use --ha-role slave for id > 0)",
                    ))
                } else if b.master.is_some() {
                    Some((
                        "broker.master",
                        "only a slave has a master (--ha-role slave)",
                    ))
                } else {
                    None
                }
            }
        }
    }

    /// Where a master's HA listener binds: `ha_listen`, or the broker
    /// listen address with port + 1 (port 0 when the broker port is 0).
    /// `None` on a slave.
    pub fn ha_listen_addr(&self) -> Option<SocketAddr> {
        (self.broker.ha_role != HaRole::Slave).then(|| self.ha_listen_rule())
    }

    /// Where the gRPC endpoint listens (`None`: off, or no broker on this
    /// node): `grpc.listen`; unset, `127.0.0.1:8081`, or port 0 on the
    /// broker's IP when the broker port is 0.
    pub fn grpc_listen_addr(&self) -> Option<SocketAddr> {
        if self.node.role == Role::Namesrv {
            return None;
        }
        match self.grpc.listen.as_deref() {
            Some("off") => None,
            Some(addr) => addr.parse().ok(),
            None if self.broker.listen.port() == 0 => {
                let mut a = self.broker.listen;
                a.set_port(0);
                Some(a)
            }
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_GRPC_PORT))),
        }
    }

    /// Where the HTTP endpoint listens (`None`: off): `http.listen`;
    /// unset, `127.0.0.1:8082`, or port 0 on the node's main listener's IP
    /// when that listener's port is 0 (the broker's; a name-server-only
    /// node's name-server listener).
    pub fn http_listen_addr(&self) -> Option<SocketAddr> {
        let main = if self.node.role == Role::Namesrv {
            self.namesrv.listen
        } else {
            self.broker.listen
        };
        match self.http.listen.as_deref() {
            Some("off") => None,
            Some(addr) => addr.parse().ok(),
            None if main.port() == 0 => {
                let mut a = main;
                a.set_port(0);
                Some(a)
            }
            None => Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
        }
    }

    /// `ha_listen`, or the broker listen address with port + 1 (port 0
    /// when the broker port is 0), whatever the role: where a slave
    /// listens for slaves of its own once promoted.
    pub fn ha_listen_rule(&self) -> SocketAddr {
        let b = &self.broker;
        b.ha_listen.unwrap_or_else(|| {
            let mut a = b.listen;
            a.set_port(match a.port() {
                0 => 0,
                p => p.checked_add(1).unwrap_or(0),
            });
            a
        })
    }

    /// The effective configuration as TOML (`--print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Parses `message_delay_level` into milliseconds per level (level 1 first).
pub fn parse_delay_levels(levels: &str) -> Result<Vec<u64>, String> {
    let out: Vec<u64> = levels
        .split_whitespace()
        .map(|item| {
            let split = item
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(item.len());
            let (num, unit) = item.split_at(split);
            let n: u64 = num.parse().map_err(|_| format!("bad delay {item:?}"))?;
            let scale = match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return Err(format!("bad unit in {item:?} (use s, m, h or d)")),
            };
            n.checked_mul(scale)
                .filter(|ms| *ms > 0)
                .ok_or_else(|| format!("bad delay {item:?}"))
        })
        .collect::<Result<_, _>>()?;
    if out.is_empty() {
        return Err("no delay levels".into());
    }
    if out.len() > usize::from(u8::MAX) {
        return Err(format!("{} delay levels > 255", out.len()));
    }
    Ok(out)
}

/// Accepts a list of addresses or one comma-separated string.
fn addr_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    let items = match Either::deserialize(d)? {
        Either::List(items) => items,
        Either::One(s) => s.split(',').map(str::to_owned).collect(),
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| serde::de::Error::custom(format!("bad address {s:?}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    #[test]
    fn http_listen_rule() {
        let c = NodeConfig::default();
        assert_eq!(
            c.http_listen_addr(),
            Some("127.0.0.1:8082".parse().unwrap())
        );
        let c = NodeConfig::load(
            None,
            NO_ENV,
            Overrides {
                broker_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.http_listen_addr(), Some("127.0.0.1:0".parse().unwrap()));
        let c = NodeConfig::load(
            None,
            NO_ENV,
            Overrides {
                http_listen: Some("off".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.http_listen_addr(), None);
        let bad = NodeConfig::load(
            None,
            NO_ENV,
            Overrides {
                http_listen: Some("nowhere".into()),
                ..Overrides::default()
            },
        );
        assert!(bad.unwrap_err().to_string().contains("http.listen"));
    }

    #[test]
    fn grpc_listen_rule() {
        let load = |flags: Overrides| NodeConfig::load(None, NO_ENV, flags).unwrap();
        let c = load(Overrides::default());
        assert_eq!(
            c.grpc_listen_addr(),
            Some("127.0.0.1:8081".parse().unwrap())
        );
        // Ephemeral broker port: ephemeral gRPC port (no collision on 8081).
        let c = load(Overrides {
            broker_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        });
        assert_eq!(c.grpc_listen_addr(), Some("127.0.0.1:0".parse().unwrap()));
        let c = load(Overrides {
            grpc_listen: Some("off".into()),
            ..Overrides::default()
        });
        assert_eq!(c.grpc_listen_addr(), None);
        let c = load(Overrides {
            grpc_listen: Some("0.0.0.0:9000".into()),
            broker_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Overrides::default()
        });
        assert_eq!(c.grpc_listen_addr(), Some("0.0.0.0:9000".parse().unwrap()));
        let c = load(Overrides {
            role: Some(Role::Namesrv),
            ..Overrides::default()
        });
        assert_eq!(c.grpc_listen_addr(), None);
        let dir = tempfile::tempdir().unwrap();
        let c = NodeConfig::load(
            Some(&write(&dir, "[grpc]\nlisten = \"off\"\n")),
            NO_ENV,
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.grpc_listen_addr(), None);
        let bad = NodeConfig::load(
            None,
            NO_ENV,
            Overrides {
                grpc_listen: Some("nowhere".into()),
                ..Overrides::default()
            },
        );
        assert!(bad.unwrap_err().to_string().contains("grpc.listen"));
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = NodeConfig::load(None, NO_ENV, Overrides::default()).unwrap();
        assert_eq!(c.node.role, Role::Combined);
        assert_eq!(c.node.data_dir, PathBuf::from("./actormq-data"));
        assert_eq!(c.namesrv.listen.to_string(), "127.0.0.1:9876");
        assert_eq!(c.broker.listen.to_string(), "127.0.0.1:10911");
        assert_eq!(c.broker.cluster, "DefaultCluster");
        assert_eq!(c.broker.broker_name, "broker-a");
        assert_eq!(c.broker.flush, FlushMode::Async);
        assert_eq!(c.broker.default_queues, 4);
        assert_eq!(c.broker.max_reconsume_times, 16);
        assert_eq!(c.broker.long_polling_max_ms, 15_000);
        assert_eq!(c.broker.transaction_check_max, 15);
        assert_eq!(c.broker.file_reserved_hours, 72);
        assert!(!c.broker.writer_thread);
        assert!(!c.broker.dispatcher_thread);
        assert_eq!(c.broker.max_connections, 4096);
        assert_eq!(c.broker.max_connection_memory, 1 << 30);
        assert_eq!(c.namesrv.max_connections, 4096);
        assert_eq!(c.namesrv.max_connection_memory, 1 << 30);
        assert_eq!(
            parse_delay_levels(&c.broker.message_delay_level)
                .unwrap()
                .len(),
            18
        );
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            &dir,
            "[broker]\nflush = \"sync\"\ndefault_queues = 8\ncluster = \"FromFile\"\n\
             [log]\nlevel = \"debug\"\n",
        );
        let env = [
            ("ACTORMQ_BROKER__DEFAULT_QUEUES", "16"),
            ("ACTORMQ_BROKER__CLUSTER", "FromEnv"),
            ("ACTORMQ_BROKER__NAMESRV", "127.0.0.1:1,127.0.0.1:2"),
            ("ACTORMQ_BROKER__MAX_CONNECTIONS", "3"),
            ("ACTORMQ_NAMESRV__MAX_CONNECTION_MEMORY", "2097152"),
            ("ACTORMQ_CRASH_ROUNDS", "5"), // not a config key: ignored
            ("PATH", "/bin"),
        ];
        let flags = Overrides {
            cluster: Some("FromFlag".into()),
            ..Overrides::default()
        };
        let c = NodeConfig::load(Some(&file), env, flags).unwrap();
        assert_eq!(c.broker.flush, FlushMode::Sync, "file beats default");
        assert_eq!(c.broker.default_queues, 16, "env beats file");
        assert_eq!(c.broker.cluster, "FromFlag", "flag beats env");
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.broker.max_connections, 3);
        assert_eq!(c.namesrv.max_connection_memory, 2 << 20);
        let ns: Vec<String> = c.broker.namesrv.iter().map(|a| a.to_string()).collect();
        assert_eq!(ns, ["127.0.0.1:1", "127.0.0.1:2"]);
    }

    #[test]
    fn print_config_round_trips() {
        let flags = Overrides {
            role: Some(Role::Broker),
            namesrv: Some(vec!["127.0.0.1:9876".parse().unwrap()]),
            broker_advertise: Some("10.0.0.1:10911".parse().unwrap()),
            ..Overrides::default()
        };
        let c = NodeConfig::load(None, NO_ENV, flags).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, &c.to_toml());
        let again = NodeConfig::load(Some(&file), NO_ENV, Overrides::default()).unwrap();
        assert_eq!(c, again);
        assert!(c.to_toml().contains("[broker]"));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        // (file text, environment, what the error must mention)
        type Case<'a> = (Option<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (Some("[broker]\nflush = \"sometimes\"\n"), vec![], "flush"),
            (Some("[broker]\nflsuh = \"sync\"\n"), vec![], "flsuh"),
            (Some("[broker\n"), vec![], "config"),
            (
                None,
                vec![("ACTORMQ_BROKER__DEFAULT_QUEUES", "0")],
                "broker.default_queues",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__DEFAULT_QUEUES", "many")],
                "default_queues",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__NAMESRV", "nowhere")],
                "nowhere",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__MESSAGE_DELAY_LEVEL", "1s 5x")],
                "message_delay_level",
            ),
            (
                None,
                vec![("ACTORMQ_NODE__ROLE", "broker")],
                "broker.namesrv",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__HA_ROLE", "slave")],
                "broker.broker_id",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__HA_SYNC_TIMEOUT_MS", "0")],
                "broker.ha_sync_timeout_ms",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__HA_CONFIG_SYNC_MS", "5")],
                "broker.ha_config_sync_ms",
            ),
            (None, vec![("ACTORMQ_LOG__LEVEL", "loud")], "log.level"),
            (
                None,
                vec![("ACTORMQ_BROKER__LONG_POLLING_MAX_MS", "600000")],
                "long_polling",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__ACCESS_MESSAGE_IN_MEMORY_MAX_RATIO", "101")],
                "broker.access_message_in_memory_max_ratio",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__MAX_CONNECTIONS", "0")],
                "broker.max_connections",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__PRODUCER_DEDUP_WINDOW", "0")],
                "broker.producer_dedup_window",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__PRODUCER_DEDUP_MAX_PRODUCERS", "0")],
                "broker.producer_dedup_max_producers",
            ),
            (
                None,
                vec![("ACTORMQ_NAMESRV__MAX_CONNECTIONS", "0")],
                "namesrv.max_connections",
            ),
            (
                None,
                vec![("ACTORMQ_BROKER__MAX_CONNECTION_MEMORY", "4096")],
                "broker.max_connection_memory",
            ),
            (
                None,
                vec![("ACTORMQ_NAMESRV__MAX_CONNECTION_MEMORY", "1000")],
                "namesrv.max_connection_memory",
            ),
        ];
        for (text, env, needle) in cases {
            let file = text.map(|t| write(&dir, t));
            let err = NodeConfig::load(file.as_deref(), env.clone(), Overrides::default())
                .expect_err(&format!("{text:?} {env:?} must be refused"));
            let msg = err.to_string();
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
        let missing = dir.path().join("absent.toml");
        assert!(matches!(
            NodeConfig::load(Some(&missing), NO_ENV, Overrides::default()),
            Err(ConfigError::FileNotFound(_))
        ));
    }

    #[test]
    fn transaction_keys_are_taken() {
        let env = [
            ("ACTORMQ_BROKER__TRANSACTION_TIMEOUT_MS", "1000"),
            ("ACTORMQ_BROKER__TRANSACTION_CHECK_INTERVAL_MS", "500"),
            ("ACTORMQ_BROKER__TRANSACTION_CHECK_MAX", "3"),
        ];
        let c = NodeConfig::load(None, env, Overrides::default()).expect("accepted");
        assert_eq!(c.broker.transaction_timeout_ms, 1000);
        assert_eq!(c.broker.transaction_check_interval_ms, 500);
        assert_eq!(c.broker.transaction_check_max, 3);
        let zero = [("ACTORMQ_BROKER__TRANSACTION_CHECK_INTERVAL_MS", "0")];
        let err = NodeConfig::load(None, zero, Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("transaction_check_interval_ms"));
    }

    #[test]
    fn ha_roles_must_fit_the_broker_id_and_addresses() {
        let slave = [
            ("ACTORMQ_BROKER__HA_ROLE", "slave"),
            ("ACTORMQ_BROKER__BROKER_ID", "1"),
            ("ACTORMQ_BROKER__MASTER", "127.0.0.1:10912"),
        ];
        let c = NodeConfig::load(None, slave, Overrides::default()).expect("a good slave");
        assert_eq!(c.broker.ha_role, HaRole::Slave);
        assert_eq!(
            c.ha_listen_addr(),
            None,
            "a slave does not listen for slaves"
        );
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&slave[..1], "broker.broker_id"),
            (&slave[..2], "broker.master"),
            (
                &[
                    ("ACTORMQ_BROKER__HA_ROLE", "slave"),
                    ("ACTORMQ_BROKER__BROKER_ID", "1"),
                    ("ACTORMQ_BROKER__MASTER", "127.0.0.1:10912"),
                    ("ACTORMQ_BROKER__HA_LISTEN", "127.0.0.1:10913"),
                ],
                "broker.ha_listen",
            ),
            (&[("ACTORMQ_BROKER__BROKER_ID", "2")], "broker.broker_id"),
            (
                &[
                    ("ACTORMQ_BROKER__HA_ROLE", "sync-master"),
                    ("ACTORMQ_BROKER__MASTER", "127.0.0.1:10912"),
                ],
                "broker.master",
            ),
        ];
        for (env, key) in cases {
            let err = NodeConfig::load(None, env.iter().copied(), Overrides::default())
                .expect_err(&format!("{env:?} must be refused"))
                .to_string();
            assert!(err.contains(key), "{err:?} names {key}");
            assert_eq!(err.lines().count(), 1, "{err:?}");
        }
        // The same through flags.
        let flags = Overrides {
            master: Some("127.0.0.1:1".parse().unwrap()),
            ..Overrides::default()
        };
        let err = NodeConfig::load(None, NO_ENV, flags).unwrap_err();
        assert!(err.to_string().contains("broker.master"), "{err}");
        // Spelling out the defaults is fine (e.g. a file from --print-config).
        let dir = tempfile::tempdir().unwrap();
        let text = NodeConfig::default().to_toml();
        assert!(text.contains("ha_role = \"async-master\""), "{text}");
        let file = write(&dir, &text);
        NodeConfig::load(Some(&file), NO_ENV, Overrides::default()).unwrap();
    }

    #[test]
    fn the_ha_port_defaults_to_the_broker_port_plus_one() {
        let mut c = NodeConfig::default();
        c.broker.listen = "127.0.0.1:10911".parse().unwrap();
        assert_eq!(c.ha_listen_addr(), Some("127.0.0.1:10912".parse().unwrap()));
        c.broker.listen = "127.0.0.1:0".parse().unwrap();
        assert_eq!(c.ha_listen_addr(), Some("127.0.0.1:0".parse().unwrap()));
        c.broker.listen = "127.0.0.1:65535".parse().unwrap();
        assert_eq!(c.ha_listen_addr(), Some("127.0.0.1:0".parse().unwrap()));
        c.broker.ha_listen = Some("0.0.0.0:7000".parse().unwrap());
        assert_eq!(c.ha_listen_addr(), Some("0.0.0.0:7000".parse().unwrap()));
        c.broker.ha_role = HaRole::SyncMaster;
        assert_eq!(c.ha_listen_addr(), Some("0.0.0.0:7000".parse().unwrap()));
    }

    #[test]
    fn delay_levels_parse_to_millis() {
        assert_eq!(
            parse_delay_levels("1s 2m 1h 1d").unwrap(),
            [1_000, 120_000, 3_600_000, 86_400_000]
        );
        assert!(parse_delay_levels("").is_err());
        assert!(parse_delay_levels("0s").is_err());
        assert!(parse_delay_levels("s").is_err());
        assert!(parse_delay_levels("99999999999999999999h").is_err());
    }
}

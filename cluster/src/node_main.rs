//! The shared `main` of `actormq-node`, `actormq-namesrv` and
//! `actormq-broker`: flags exactly as `spec/cli.md`, config layering,
//! logging, the `actormq ready …` line, and graceful shutdown on
//! SIGTERM/SIGINT (a second signal exits at once).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use slog::{error, info};

use crate::config::{FlushMode, HaRole, LogFormat, NodeConfig, Overrides, Role};
use crate::logging;
use crate::node::Node;

/// Flags of the node binaries (see `spec/cli.md`).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct NodeArgs {
    /// TOML config file; the environment (`ACTORMQ_<TABLE>__<KEY>`) and these
    /// flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which actors this node hosts [default: combined].
    #[arg(long, value_enum)]
    pub role: Option<RoleArg>,
    /// Root of all persistent data [default: ./actormq-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name-server listen address; port 0 picks a free port [default: 127.0.0.1:9876].
    #[arg(long, value_name = "ADDR")]
    pub namesrv_listen: Option<SocketAddr>,
    /// Broker listen address; port 0 picks a free port [default: 127.0.0.1:10911].
    #[arg(long, value_name = "ADDR")]
    pub broker_listen: Option<SocketAddr>,
    /// Address the broker registers instead of the bound one.
    #[arg(long, value_name = "ADDR")]
    pub broker_advertise: Option<SocketAddr>,
    /// Name servers a broker registers with (comma-separated); required for --role broker.
    #[arg(long, value_name = "ADDR[,ADDR...]", value_delimiter = ',')]
    pub namesrv: Option<Vec<SocketAddr>>,
    /// Cluster name [default: DefaultCluster].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Broker name [default: broker-a].
    #[arg(long, value_name = "NAME")]
    pub broker_name: Option<String>,
    /// Broker id: 0 = master, >0 = slave [default: 0].
    #[arg(long, value_name = "N")]
    pub broker_id: Option<u64>,
    /// Commit-log flush: async (default) or sync (group commit).
    #[arg(long, value_enum)]
    pub flush: Option<FlushArg>,
    /// Replication role [default: async-master]. A slave needs --master and
    /// a --broker-id > 0 (and its master's --broker-name); a master has
    /// broker id 0.
    #[arg(long, value_enum)]
    pub ha_role: Option<HaRoleArg>,
    /// HA listen address of a master (slaves connect here) [default: the
    /// broker listen address with port + 1; port 0 if the broker port is 0].
    #[arg(long, value_name = "ADDR")]
    pub ha_listen: Option<SocketAddr>,
    /// HA address of the master a slave replicates from (its `ha=` in the
    /// master's ready line); only with --ha-role slave.
    #[arg(long, value_name = "ADDR")]
    pub master: Option<SocketAddr>,
    /// RocketMQ 5 gRPC endpoint (apache.rocketmq.v2), plain-text HTTP/2;
    /// "off" disables [default: 127.0.0.1:8081; port 0 if the broker port
    /// is 0].
    #[arg(long, value_name = "ADDR|off")]
    pub grpc_listen: Option<String>,
    /// Operations HTTP endpoint: Prometheus /metrics, the JSON admin API
    /// under /api/ and the dashboard at /; "off" disables [default:
    /// 127.0.0.1:8082; port 0 if the node's broker (name-server-only node:
    /// name-server) port is 0].
    #[arg(long, value_name = "ADDR|off")]
    pub http_listen: Option<String>,
    /// Log format on stderr: text (default) or json.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log level: trace, debug, info (default), warn, error, critical.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// `--role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    /// Name server and broker in one process.
    Combined,
    /// Name server only.
    Namesrv,
    /// Broker only.
    Broker,
}

/// `--flush`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FlushArg {
    /// Acknowledge after the append; flush every 500 ms.
    Async,
    /// Acknowledge after the bytes are on disk (group commit).
    Sync,
}

/// `--ha-role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum HaRoleArg {
    /// Master, asynchronous replication.
    AsyncMaster,
    /// Master, synchronous replication.
    SyncMaster,
    /// Slave.
    Slave,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// JSON lines.
    Json,
}

impl NodeArgs {
    /// The first flag given whose feature does not exist yet (none now).
    pub fn unavailable_flag(&self) -> Option<&'static str> {
        None
    }

    fn overrides(&self, fixed_role: Option<Role>) -> Overrides {
        Overrides {
            role: fixed_role.or(self.role.map(|r| match r {
                RoleArg::Combined => Role::Combined,
                RoleArg::Namesrv => Role::Namesrv,
                RoleArg::Broker => Role::Broker,
            })),
            data_dir: self.data_dir.clone(),
            namesrv_listen: self.namesrv_listen,
            broker_listen: self.broker_listen,
            broker_advertise: self.broker_advertise,
            namesrv: self.namesrv.clone(),
            cluster: self.cluster.clone(),
            broker_name: self.broker_name.clone(),
            broker_id: self.broker_id,
            flush: self.flush.map(|f| match f {
                FlushArg::Async => FlushMode::Async,
                FlushArg::Sync => FlushMode::Sync,
            }),
            ha_role: self.ha_role.map(|h| match h {
                HaRoleArg::AsyncMaster => HaRole::AsyncMaster,
                HaRoleArg::SyncMaster => HaRole::SyncMaster,
                HaRoleArg::Slave => HaRole::Slave,
            }),
            ha_listen: self.ha_listen,
            master: self.master,
            grpc_listen: self.grpc_listen.clone(),
            http_listen: self.http_listen.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            log_level: self.log_level.clone(),
        }
    }
}

/// Runs a node binary; `fixed_role` is set by `actormq-namesrv` and
/// `actormq-broker`. `about` is the first line of its `--help`.
pub fn main_with_role(fixed_role: Option<Role>, about: &'static str) -> ExitCode {
    let matches = <NodeArgs as clap::CommandFactory>::command()
        .about(about)
        .get_matches();
    let args = match <NodeArgs as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    if fixed_role.is_some() && args.role.is_some() {
        eprintln!("error: --role is fixed by this binary; use actormq-node to choose");
        return ExitCode::from(2);
    }
    if let Some(flag) = args.unavailable_flag() {
        eprintln!("error: {flag} is not available yet");
        return ExitCode::from(2);
    }
    let config = match NodeConfig::load(
        args.config.as_deref(),
        std::env::vars(),
        args.overrides(fixed_role),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    let (log, log_guard) = logging::root_logger(&config.log, std::io::stderr());
    logging::bridge_dependency_logs(&log, &config.log.level);
    let system = actix_rt::System::new();
    let node = match system.block_on(Node::start(&config, &log)) {
        Ok(node) => node,
        Err(e) => {
            error!(log, "cannot start"; "error" => %e);
            // The log lines are written out first (the drain is async), so
            // the one-line error is a line of its own on stderr.
            drop(log_guard);
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    // The signal handlers are in place before the ready line: a SIGTERM
    // sent as soon as the line is read is a clean stop, not a kill.
    let mut signals = system.block_on(async { Signals::install() });
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", node.ready_line());
        let _ = out.flush();
    }
    info!(log, "ready"; "namesrv" => ?node.namesrv_addr, "broker" => ?node.broker_addr);
    let shutdown_log = log.clone();
    system.block_on(async move {
        actix_rt::spawn(async move {
            signals.recv().await;
            info!(
                shutdown_log,
                "signal received; stopping (a second signal exits at once)"
            );
            actix_rt::spawn(async move {
                signals.recv().await;
                std::process::exit(130);
            });
            node.shutdown().await;
            actix_rt::System::current().stop();
        });
    });
    match system.run_with_code() {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => {
            error!(log, "node stopped after an unrecoverable failure"; "exit_code" => code);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            error!(log, "runtime error"; "error" => %e);
            ExitCode::from(1)
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals(
    Option<(
        actix_rt::signal::unix::Signal,
        actix_rt::signal::unix::Signal,
    )>,
);

impl Signals {
    /// Installs the handlers (inside the runtime).
    fn install() -> Self {
        use actix_rt::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Self(Some((term, int))),
            // Without signal handlers the node runs until killed.
            _ => Self(None),
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn recv(&mut self) {
        match &mut self.0 {
            Some((term, int)) => tokio_select(term.recv(), int.recv()).await,
            None => std::future::pending::<()>().await,
        }
    }
}

/// Resolves when either future does.
async fn tokio_select<A: std::future::Future, B: std::future::Future>(a: A, b: B) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

//! The `actormq` client command (`spec/cli.md`, "Client CLI"): clap
//! definitions of every command, the common flags, output helpers and the
//! exit-code rule (0 on success; otherwise one line on stderr and a
//! non-zero code).
//!
//! | command | file |
//! |---|---|
//! | `produce` | [`produce`] |
//! | `admin cluster …`, `admin topic …`, `admin offset reset` | [`admin`] |
//! | `consume`, `admin group progress` | [`consume`] |
//! | `admin group list`, `admin group create`, `admin group delete` | [`subscription_group`] |
//! | `bench produce`, `bench consume`, `bench e2e` | [`bench`] |
//! | `admin msg get`, `admin msg query` | [`msg`] |
//! | `admin dlq resend` | [`dlq`] |

pub mod admin;
pub mod bench;
pub mod bench_grpc;
pub mod consume;
pub mod dlq;
pub mod msg;
pub mod produce;
pub mod subscription_group;

use std::process::ExitCode;
use std::time::Duration;

use actormq_sdk::ClientError;
use actormq_sdk::connections::Connections;
use actormq_sdk::route::RouteCache;
use clap::{Args, Parser, Subcommand};
use slog::Logger;

/// Exit code of a failed command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that does not parse.
pub const EXIT_USAGE: u8 = 2;

/// `actormq`: the actormq client command.
#[derive(Debug, Parser)]
#[command(
    name = "actormq",
    version,
    about = "The actormq client: produce, consume, administer and benchmark.",
    long_about = "The actormq client: produce, consume, administer and benchmark.\n\n\
        With --json every result is one JSON object per line on stdout; errors go to \
        stderr as one line and the exit code is non-zero."
)]
pub struct Cli {
    /// Common flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Name servers (comma-separated host:port).
    #[arg(
        short = 'n',
        long,
        global = true,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        default_value = "127.0.0.1:9876"
    )]
    pub namesrv: Vec<String>,
    /// Print each result as one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,
    /// Timeout of each request (a send: all its tries), in ms [default: 3000].
    #[arg(long, global = true, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

impl CommonArgs {
    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(3000).max(1))
    }

    /// The admin client (`actormq_sdk::admin`) of the name servers.
    pub fn admin(&self, log: &Logger) -> Result<actormq_sdk::admin::Admin, CliError> {
        Ok(actormq_sdk::admin::Admin::new(
            &self.namesrv,
            self.timeout(),
            log,
        )?)
    }

    /// A route cache (and its connections) over the name servers.
    pub fn route_cache(&self, log: &Logger) -> Result<RouteCache, CliError> {
        let conns = Connections::new(log);
        Ok(RouteCache::new(
            self.namesrv.clone(),
            conns,
            self.timeout(),
            log,
        )?)
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send messages to a topic.
    Produce(produce::ProduceArgs),
    /// Consume messages of a topic as a push consumer of a group.
    Consume(ConsumeArgs),
    /// Administer clusters, topics, groups and messages.
    Admin(admin::AdminArgs),
    /// Benchmark producing, consuming and end-to-end latency.
    Bench(BenchArgs),
}

/// A failed command: one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError(match e {
            ClientError::AllNamesrvsDown => "cannot reach any name server".to_owned(),
            other => other.to_string(),
        })
    }
}

impl From<actormq_sdk::admin::AdminError> for CliError {
    fn from(e: actormq_sdk::admin::AdminError) -> Self {
        match e {
            actormq_sdk::admin::AdminError::Client(c) => CliError::from(c),
            other => CliError(other.to_string()),
        }
    }
}

/// The error of a command whose feature is not built yet.
pub fn not_available(what: &str) -> CliError {
    CliError(format!("not available yet: {what}"))
}

/// Prints a result: its JSON with `--json`, else its text.
pub fn emit<T: serde::Serialize + ?Sized>(json: bool, value: &T, text: impl FnOnce() -> String) {
    let line = if json {
        serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        text()
    };
    write_line(&line);
}

/// Writes one line to stdout and flushes it. When stdout is closed (e.g.
/// `actormq consume ... | head`), stops quietly with exit code 0, as Unix
/// tools do: nothing after the last printed line is committed, so it is
/// delivered again next time.
pub fn write_line(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
}

// ---------------------------------------------------------------- consume

pub use consume::{ConsumeArgs, GroupProgressArgs, run_consume, run_group_progress};

// ------------------------------------------------------------------ bench

/// `actormq bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to benchmark.
    #[command(subcommand)]
    pub what: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchCommand {
    /// Produce as fast as possible; latency per send.
    Produce(BenchProduceArgs),
    /// Consume as fast as possible (a push consumer pulling up to 256
    /// messages per request; with `--simple`, a simple consumer receiving
    /// and batch-acking 32 at a time).
    Consume(BenchConsumeArgs),
    /// Produce and consume; latency store-to-delivery.
    E2e(BenchProduceArgs),
}

/// Flags of `bench produce` and `bench e2e`.
#[derive(Debug, Clone, Args)]
pub struct BenchProduceArgs {
    /// Topic.
    #[arg(short, long)]
    pub topic: String,
    /// Messages to send.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Body size in bytes.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,
    /// Sends in flight.
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Messages per batch.
    #[arg(long, value_name = "K")]
    pub batch: Option<usize>,
    /// Send mode.
    #[arg(long, value_enum)]
    pub mode: Option<produce::Mode>,
    /// Paces the run at this many messages per second (message i is sent
    /// no earlier than i/RATE s after the start; at most --concurrency
    /// sends in flight). Default: as fast as possible.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<u64>,
    /// `bench produce` only: send over the node's RocketMQ 5 gRPC
    /// endpoint at ADDR (its ready line's `grpc=`) instead of the native
    /// protocol: unbatched SendMessage calls, --concurrency in flight (not
    /// with --batch, --mode or --rate).
    #[arg(long, value_name = "ADDR")]
    pub grpc: Option<std::net::SocketAddr>,
}

/// Flags of `bench consume`.
#[derive(Debug, Clone, Args)]
pub struct BenchConsumeArgs {
    /// Topic.
    #[arg(short, long)]
    pub topic: String,
    /// Consumer group.
    #[arg(short, long)]
    pub group: String,
    /// Messages to consume.
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Consume as a simple (pop) consumer: receives of up to 32 messages
    /// (`--concurrency` in flight), each batch acked with one batch ack.
    #[arg(long)]
    pub simple: bool,
    /// With `--simple`: receives in flight (default 16).
    #[arg(long, value_name = "C", requires = "simple")]
    pub concurrency: Option<usize>,
    /// With `--simple`: receive and ack over the node's RocketMQ 5 gRPC
    /// endpoint at ADDR (its ready line's `grpc=`): ReceiveMessage of up
    /// to 32 messages, then one AckMessage of them.
    #[arg(long, value_name = "ADDR", requires = "simple")]
    pub grpc: Option<std::net::SocketAddr>,
}

/// `actormq bench …` (see [`bench`]).
pub async fn run_bench(
    common: &CommonArgs,
    args: &BenchArgs,
    log: &Logger,
) -> Result<(), CliError> {
    bench::run(common, args, log).await
}

// ------------------------------------------------------------------- main

/// Runs a parsed command line.
///
/// Client logs go to stderr when `ACTORMQ_LOG` names a level (`debug`,
/// `info`, ...); by default there are none.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let (log, _guard) = match std::env::var("ACTORMQ_LOG") {
        Ok(level) if crate::logging::parse_level(&level).is_some() => {
            let section = crate::config::LogSection {
                level,
                ..crate::config::LogSection::default()
            };
            let (log, guard) = crate::logging::root_logger(&section, std::io::stderr());
            (log, Some(guard))
        }
        _ => (Logger::root(slog::Discard, slog::o!()), None),
    };
    match &cli.command {
        Command::Produce(args) => produce::run(&cli.common, args, &log).await,
        Command::Consume(args) => run_consume(&cli.common, args, &log).await,
        Command::Admin(args) => admin::run(&cli.common, args, &log).await,
        Command::Bench(args) => run_bench(&cli.common, args, &log).await,
    }
}

/// Lets actors a command started (the SDK's heartbeat and route refresh)
/// run their `started` and their stop while the runtime still runs. A
/// command that fails before its first await point (a message refused by
/// client-side validation) would otherwise leave them unstarted, and the
/// runtime's teardown polls them once more, outside the runtime: a panic
/// per actor after the one-line error.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// The `main` of `actormq`: parses `args`, runs the command in an actix
/// `System`, and maps the outcome to an exit code.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(EXIT_USAGE)
                } else {
                    ExitCode::SUCCESS
                };
            }
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad command line");
            eprintln!("actormq: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let outcome = actix_rt::System::new().block_on(async {
        let outcome = run(cli).await;
        settle().await;
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actormq: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn common_flags_parse_anywhere() {
        let cli = Cli::try_parse_from([
            "actormq",
            "produce",
            "-t",
            "T",
            "--json",
            "-n",
            "127.0.0.1:1,127.0.0.1:2",
        ])
        .unwrap();
        assert!(cli.common.json);
        assert_eq!(cli.common.namesrv, ["127.0.0.1:1", "127.0.0.1:2"]);
        let cli = Cli::try_parse_from(["actormq", "--timeout-ms", "5", "admin", "topic", "list"])
            .unwrap();
        assert_eq!(cli.common.timeout(), Duration::from_millis(5));
        assert_eq!(
            Cli::try_parse_from(["actormq", "admin", "cluster", "list"])
                .unwrap()
                .common
                .namesrv,
            ["127.0.0.1:9876"]
        );
    }

    #[test]
    fn every_spec_command_parses() {
        for line in [
            "consume -t T -g G --tag-expr A --from first --count 3 --idle-exit-ms 10 --broadcast --orderly --fail-every 2 --instance-name i",
            "produce -t T --instance-name i",
            "admin topic create -t T --queues 4 --cluster C --order",
            "admin topic route -t T",
            "admin topic status -t T",
            "admin topic delete -t T",
            "admin group progress -g G -t T",
            "admin msg get --id X",
            "admin msg query -t T --key K --begin-ms 1 --end-ms 2",
            "admin offset reset -g G -t T --timestamp-ms 1",
            "admin dlq resend -g G --count 1",
            "admin broker status --broker B",
            "admin broker config",
            "admin connections -g G",
            "admin connections --producer-group P",
            "bench produce -t T --messages 1 --size 1 --concurrency 1 --batch 1 --mode async",
            "bench consume -t T -g G --messages 1",
            "bench e2e -t T --messages 1 --size 1 --concurrency 1",
        ] {
            let args = std::iter::once("actormq").chain(line.split(' '));
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{line}: {e}"));
        }
    }
}

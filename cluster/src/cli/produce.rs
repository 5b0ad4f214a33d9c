//! `actormq produce`: sends messages through the SDK's
//! [`Producer`](actormq_sdk::Producer) and prints one line per message.

use std::collections::BTreeMap;
use std::io::BufRead;

use actormq_sdk::producer::{ProducerConfig, SendResult};
use actormq_sdk::protocol::{Bytes, Delay, Message};
use actormq_sdk::{ClientError, Producer, ProducerBuilder};
use clap::{ArgGroup, Args, ValueEnum};
use futures_util::StreamExt;
use serde_json::json;
use slog::Logger;

use super::{CliError, CommonArgs, emit};

/// How messages are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Wait for each result (retries go to another broker).
    Sync,
    /// Many sends in flight; results printed in order.
    Async,
    /// No result at all (prints {"status":"SENT"}).
    Oneway,
}

/// Flags of `actormq produce`.
#[derive(Debug, Clone, Args)]
#[command(
    group(ArgGroup::new("delay").args(["delay_level", "deliver_at_ms", "delay_ms"])),
    after_help = "--delay-level L parks each message on the broker for level L's delay \
        (the broker's message_delay_level table; default 1s 5s 10s 30s 1m … 2h, a level \
        above the max means the max). --deliver-at-ms TS delivers at that time (ms since the \
        epoch; a time past is delivered at once, at most 400 days ahead) and --delay-ms MS \
        MS ms from now, both through the broker's durable timer.\n\n\
        Examples:\n  actormq produce -t orders --body hello\n  \
        actormq produce -t orders --count 1000 --size 128 --mode async --json\n  \
        seq 10 | actormq produce -t orders --stdin --queue-key customer-7\n  \
        actormq produce -t orders --body later --delay-level 3   # delivered after 10 s"
)]
pub struct ProduceArgs {
    /// Topic (created by the broker on first send if it allows auto-creation).
    #[arg(short, long)]
    pub topic: String,
    /// Tag of every message.
    #[arg(long, value_name = "TAG")]
    pub tags: Option<String>,
    /// Keys of every message, space-separated ("K1 K2").
    #[arg(long, value_name = "KEYS")]
    pub keys: Option<String>,
    /// A user property (repeatable).
    #[arg(long = "prop", value_name = "k=v", value_parser = parse_prop)]
    pub props: Vec<(String, String)>,
    /// Body text [default: "hello actormq"].
    #[arg(long, value_name = "TEXT", conflicts_with_all = ["stdin", "size"])]
    pub body: Option<String>,
    /// Send one message per line of standard input.
    #[arg(long, conflicts_with_all = ["count", "size"])]
    pub stdin: bool,
    /// How many messages to send [default: 1].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Send generated bodies of BYTES bytes.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<usize>,
    /// Send mode.
    #[arg(long, value_enum, default_value_t = Mode::Sync)]
    pub mode: Mode,
    /// Delay level (1 = 1s … 18 = 2h with the default table).
    #[arg(long, value_name = "L", value_parser = clap::value_parser!(u8).range(1..))]
    pub delay_level: Option<u8>,
    /// Deliver at this time (ms since the epoch; second precision).
    #[arg(long, value_name = "TS")]
    pub deliver_at_ms: Option<u64>,
    /// Deliver MS ms from now.
    #[arg(long, value_name = "MS")]
    pub delay_ms: Option<u64>,
    /// Pick the queue by hash of KEY (ordered messages).
    #[arg(long, value_name = "KEY")]
    pub queue_key: Option<String>,
    /// Instance name, the middle of the client id HOST@NAME@SUFFIX
    /// [default: the process id].
    #[arg(long, value_name = "NAME")]
    pub instance_name: Option<String>,
}

fn parse_prop(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected k=v, got {s:?}")),
    }
}

/// A generated body of `size` bytes (printable, so `consume` shows it).
pub fn generated_body(size: usize, seq: u64) -> Bytes {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let seq = usize::try_from(seq).unwrap_or(0);
    Bytes::from(
        (0..size)
            .map(|i| ALPHABET[(i + seq) % ALPHABET.len()])
            .collect::<Vec<u8>>(),
    )
}

impl ProduceArgs {
    /// The delay the flags ask for (`--delay-ms` from now).
    pub fn delay(&self) -> Delay {
        match (self.delay_level, self.deliver_at_ms, self.delay_ms) {
            (Some(l), _, _) => Delay::Level(l),
            (_, Some(t), _) => Delay::DeliverAtMs(t),
            (_, _, Some(ms)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                Delay::DeliverAtMs(now.saturating_add(ms))
            }
            _ => Delay::None,
        }
    }

    /// The message with `body` and every flag applied.
    pub fn message(&self, body: Bytes) -> Message {
        Message {
            topic: self.topic.clone(),
            tags: self.tags.clone(),
            keys: self.keys.clone(),
            body,
            properties: self.props.iter().cloned().collect::<BTreeMap<_, _>>(),
            delay: self.delay(),
            flags: 0,
        }
    }

    /// The bodies to send (stdin lines are read lazily by the caller).
    fn body(&self, seq: u64) -> Bytes {
        match (&self.body, self.size) {
            (Some(text), _) => Bytes::from(text.clone()),
            (None, Some(size)) => generated_body(size, seq),
            (None, None) => Bytes::from_static(b"hello actormq"),
        }
    }
}

/// The JSON line of a send result (`spec/cli.md`), fields in the
/// documented order.
pub fn result_json(r: &SendResult) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

fn print_result(json: bool, r: &SendResult) {
    emit(json, r, || {
        format!(
            "{} msg_id={} topic={} broker={} queue_id={} queue_offset={}",
            r.status, r.msg_id, r.topic, r.broker, r.queue_id, r.queue_offset
        )
    });
}

/// Sends one message per the mode and prints its line.
async fn send_one(
    producer: &Producer,
    args: &ProduceArgs,
    json: bool,
    msg: Message,
) -> Result<(), ClientError> {
    match (args.mode, &args.queue_key) {
        (Mode::Oneway, _) => {
            producer.send_oneway(msg).await?;
            emit(json, &json!({"status": "SENT"}), || "SENT".to_owned());
        }
        (_, Some(key)) => print_result(json, &producer.send_with_selector(msg, key).await?),
        (Mode::Sync, None) => print_result(json, &producer.send(msg).await?),
        (Mode::Async, None) => print_result(json, &producer.send_async(msg).await?),
    }
    Ok(())
}

/// `actormq produce`.
pub async fn run(common: &CommonArgs, args: &ProduceArgs, log: &Logger) -> Result<(), CliError> {
    let producer = ProducerBuilder::from_config(ProducerConfig {
        group: "actormq-cli-producer".into(),
        namesrv: common.namesrv.clone(),
        send_timeout_ms: common.timeout().as_millis().try_into().unwrap_or(u64::MAX),
        instance_name: args.instance_name.clone(),
        ..ProducerConfig::default()
    })
    .logger(log)
    .build()
    .await?;
    let outcome = produce(&producer, common, args).await;
    producer.shutdown().await;
    outcome
}

async fn produce(
    producer: &Producer,
    common: &CommonArgs,
    args: &ProduceArgs,
) -> Result<(), CliError> {
    let json = common.json;
    if args.stdin {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.map_err(|e| CliError(format!("reading stdin: {e}")))?;
            send_one(producer, args, json, args.message(Bytes::from(line))).await?;
        }
        return Ok(());
    }
    let count = args.count.unwrap_or(1);
    if args.mode == Mode::Async && args.queue_key.is_none() {
        // Up to 256 sends in flight, results printed in send order.
        let mut results = futures_util::stream::iter(0..count)
            .map(|seq| producer.send_async(args.message(args.body(seq))))
            .buffered(256);
        while let Some(r) = results.next().await {
            print_result(json, &r?);
        }
        return Ok(());
    }
    for seq in 0..count {
        send_one(producer, args, json, args.message(args.body(seq))).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn parse(line: &str) -> Result<ProduceArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("actormq").chain(line.split(' ')))?;
        match cli.command {
            Command::Produce(a) => Ok(a),
            other => panic!("not produce: {other:?}"),
        }
    }

    #[test]
    fn flags_build_the_message() {
        let a = parse("produce -t T --tags A --keys K1 --prop x=1 --prop y=a=b --body hi").unwrap();
        let m = a.message(a.body(0));
        assert_eq!(m.topic, "T");
        assert_eq!(m.tags.as_deref(), Some("A"));
        assert_eq!(m.keys.as_deref(), Some("K1"));
        assert_eq!(m.properties["x"], "1");
        assert_eq!(m.properties["y"], "a=b");
        assert_eq!(&m.body[..], b"hi");
        assert_eq!(m.delay, Delay::None);
        assert_eq!(a.mode, Mode::Sync);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse("produce -t T --prop novalue").is_err());
        assert!(parse("produce -t T --delay-level 1 --delay-ms 5").is_err());
        assert!(parse("produce -t T --body x --stdin").is_err());
        assert!(parse("produce -t T --mode fast").is_err());
        assert!(parse("produce --body x").is_err());
    }

    #[test]
    fn sizes_and_delays() {
        let a = parse("produce -t T --count 3 --size 10 --delay-ms 1000").unwrap();
        assert_eq!(a.body(1).len(), 10);
        let Delay::DeliverAtMs(t) = a.delay() else {
            panic!("--delay-ms is a deliver-at time");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(t > now && t <= now + 1000, "{t} vs {now}");
        let a = parse("produce -t T --delay-level 3").unwrap();
        assert_eq!(a.message(a.body(0)).delay, Delay::Level(3));
        let a = parse("produce -t T --deliver-at-ms 5").unwrap();
        assert_eq!(a.delay(), Delay::DeliverAtMs(5));
    }

    #[test]
    fn result_lines_carry_the_documented_fields() {
        let r = SendResult {
            status: actormq_sdk::SendStatus::SendOk,
            msg_id: "ID".into(),
            topic: "T".into(),
            queue_id: 1,
            queue_offset: 12,
            broker: "broker-a".into(),
        };
        assert_eq!(
            result_json(&r),
            r#"{"status":"SEND_OK","msg_id":"ID","topic":"T","queue_id":1,"queue_offset":12,"broker":"broker-a"}"#
        );
    }
}

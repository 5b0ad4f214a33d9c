//! `actormq consume` and `actormq admin group progress` (spec/cli.md).
//!
//! `consume` subscribes as a push consumer of the group, prints one line
//! per delivered message, and exits after `--count` successful deliveries
//! or `--idle-exit-ms` with nothing new, committing offsets first.
//! `--fail-every K` makes every K-th delivery fail ("later": sent back to
//! the broker, which redelivers it through the group's retry topic after
//! its delay level, or moves it to the dead-letter queue after the
//! group's max; see the SDK's push consumer docs); failed deliveries are
//! printed with `"failed":true`. `--orderly` consumes as an
//! orderly push consumer (queues locked at the broker, each consumed in
//! queue order): a failed message suspends its queue for 500 ms and is
//! redelivered before any later message of that queue. `--simple`
//! consumes as a simple (pop) consumer: batches received with an invisible
//! duration of `--invisible-ms` (default 30 000), each message acked once
//! printed; a failed one (`--fail-every`) is not acked and comes back after
//! its invisible duration with `reconsume_times` one higher (after the
//! group's max retries, to its dead-letter queue); with `--orderly` the
//! pops are orderly (each queue in order, one batch at a time, a failed
//! message first again). A consumer whose services
//! failed for good (see the SDK's `PushConsumer::state`) pulls nothing
//! more: `consume` prints what was delivered, then exits non-zero with the
//! reason on one line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actormq_sdk::consumer::{ConsumeFrom, ConsumeResult, ConsumerError, PushConsumerBuilder};
use actormq_sdk::protocol::StoredMessage;
use serde_json::json;
use slog::Logger;

use super::{CliError, CommonArgs};

/// Flags of `actormq consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to consume.
    #[arg(short, long)]
    pub topic: String,
    /// Consumer group.
    #[arg(short, long)]
    pub group: String,
    /// Tag expression: `*` or `A || B`.
    #[arg(long, value_name = "EXPR", default_value = "*", conflicts_with = "sql")]
    pub tag_expr: String,
    /// SQL92 filter over message properties, evaluated by the broker:
    /// `=, <>, <, <=, >, >=, AND, OR, NOT, IN, BETWEEN, IS [NOT] NULL`,
    /// 'strings', numbers, TRUE/FALSE (e.g. "a > 5 AND b IN ('x','y')").
    #[arg(long, value_name = "EXPR")]
    pub sql: Option<String>,
    /// Start position of a new group: last, first, or a timestamp (ms)
    /// [default: last]. Not with `--simple` (a new group pops from the
    /// first kept message).
    #[arg(long, value_name = "last|first|TIMESTAMP_MS")]
    pub from: Option<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit after this long with nothing new.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub idle_exit_ms: u64,
    /// Broadcasting instead of clustering.
    #[arg(long)]
    pub broadcast: bool,
    /// Orderly consumption: each queue locked at the broker and consumed
    /// in queue order, one message at a time; a failed message
    /// (`--fail-every`) suspends its queue and is delivered again before
    /// any later message of that queue.
    #[arg(long)]
    pub orderly: bool,
    /// Consume as a simple (pop) consumer: receive batches invisible to
    /// the group's other consumers for `--invisible-ms`, ack each message
    /// handled.
    /// With `--orderly`: orderly (FIFO) pops, each queue handed out one
    /// batch at a time in queue order. With `--tag-expr` or `--sql`: only
    /// matching messages (the broker passes the others over for the
    /// group).
    #[arg(long, conflicts_with_all = ["broadcast"])]
    pub simple: bool,
    /// With `--simple`: how long a received message stays invisible unless
    /// acked (at least 1000).
    #[arg(long, value_name = "MS", default_value_t = 30_000, requires = "simple")]
    pub invisible_ms: u64,
    /// Make every K-th delivery fail.
    #[arg(long, value_name = "K")]
    pub fail_every: Option<u64>,
    /// Instance name, the middle of the client id HOST@NAME@SUFFIX
    /// [default: the process id].
    #[arg(long, value_name = "NAME")]
    pub instance_name: Option<String>,
}

/// Flags of `actormq admin group progress`.
#[derive(Debug, Clone, clap::Args)]
pub struct GroupProgressArgs {
    /// Consumer group.
    #[arg(short, long)]
    pub group: String,
    /// Only this topic (default: every topic the group committed on).
    #[arg(short, long)]
    pub topic: Option<String>,
}

fn parse_from(s: &str) -> Result<ConsumeFrom, String> {
    match s {
        "last" => Ok(ConsumeFrom::Last),
        "first" => Ok(ConsumeFrom::First),
        ts => ts
            .parse::<u64>()
            .map(ConsumeFrom::Timestamp)
            .map_err(|_| format!("--from: expected last, first or a timestamp in ms, got {ts:?}")),
    }
}

/// The JSON line of a delivered message (spec/cli.md).
pub fn message_json(m: &StoredMessage, failed: bool) -> serde_json::Value {
    // The store id, as `produce` prints it (the unique key is in `props`);
    // the fields are `actormq_sdk::admin::MessageView`'s, as the HTTP API's.
    let mut v = serde_json::to_value(actormq_sdk::admin::MessageView::from(m))
        .unwrap_or_else(|_| json!({}));
    if failed {
        v["failed"] = json!(true);
    }
    v
}

fn print_message(m: &StoredMessage, failed: bool, as_json: bool) {
    if as_json {
        super::write_line(&format!("{}", message_json(m, failed)));
    } else {
        super::write_line(&format!(
            "{}queue={} offset={} tags={} keys={} reconsume={} body={}",
            if failed { "FAILED " } else { "" },
            m.queue_id,
            m.queue_offset,
            m.message.tags.as_deref().unwrap_or(""),
            m.message.keys.as_deref().unwrap_or(""),
            m.reconsume_times,
            String::from_utf8_lossy(&m.message.body)
        ));
    }
}

/// `actormq consume`. Must run inside an actix `System`.
pub async fn run_consume(
    common: &CommonArgs,
    args: &ConsumeArgs,
    logger: &Logger,
) -> Result<(), CliError> {
    let namesrv = common.namesrv.join(",");
    let as_json = common.json;
    // A bad expression is refused here, before anything is sent.
    if let Some(sql) = &args.sql {
        actormq_sdk::protocol::filter::SqlExpr::compile(sql)
            .map_err(|e| CliError(format!("--sql: {e}")))?;
    }
    if args.simple {
        return run_simple(common, args, logger).await;
    }
    let from = parse_from(args.from.as_deref().unwrap_or("last")).map_err(CliError)?;
    let limit = args.count.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    let fail_every = args.fail_every.filter(|k| *k > 0);
    let accepted = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(StoredMessage, bool)>();
    let listener = {
        let accepted = accepted.clone();
        move |msgs: &[StoredMessage]| {
            // One message per call (consume batch size 1).
            for m in msgs {
                let n = deliveries.fetch_add(1, Ordering::SeqCst) + 1;
                if fail_every.is_some_and(|k| n % k == 0) {
                    let _ = tx.send((m.clone(), true));
                    return ConsumeResult::Later;
                }
                let took = accepted
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| {
                        (a < limit).then_some(a + 1)
                    })
                    .is_ok();
                if !took {
                    // Past --count: leave it for the next consumer.
                    return ConsumeResult::Retain;
                }
                let _ = tx.send((m.clone(), false));
            }
            ConsumeResult::Success
        }
    };
    let mut builder = PushConsumerBuilder::new(&args.group).namesrv(&namesrv);
    builder = match &args.sql {
        Some(sql) => builder.subscribe_sql(&args.topic, sql),
        None => builder.subscribe(&args.topic, &args.tag_expr),
    };
    let mut builder = builder
        .consume_from(from)
        .logger(logger.clone())
        .configure(|c| c.later_delay_ms = 500)
        .listener(listener);
    if args.broadcast {
        builder = builder.broadcasting();
    }
    if args.orderly {
        builder = builder.orderly().configure(|c| c.suspend_ms = 500);
    }
    if let Some(name) = &args.instance_name {
        builder = builder.instance_name(name);
    }
    let consumer = builder.start().await.map_err(consumer_error)?;
    let mut idle = IdleClock::new(Duration::from_millis(args.idle_exit_ms));
    let mut printed = 0u64;
    loop {
        let began = std::time::Instant::now();
        let next = tokio::select! {
            next = tokio::time::timeout(idle.tick(), rx.recv()) => next,
            reason = consumer.failed() => {
                // It pulls nothing any more: print what was delivered
                // before, then exit non-zero with the reason.
                while let Ok((m, failed)) = rx.try_recv() {
                    print_message(&m, failed, as_json);
                }
                consumer.shutdown().await;
                return Err(consumer_failed(&reason));
            }
        };
        match next {
            Ok(Some((m, failed))) => {
                idle.reset();
                print_message(&m, failed, as_json);
                if !failed {
                    printed += 1;
                    if printed >= limit {
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(_) => {
                // Idle long enough, and nothing known to be waiting (a
                // backlog seen by the last pulls is consumed first).
                if idle.elapsed(began.elapsed()) && consumer.known_backlog() == 0 {
                    break;
                }
            }
        }
    }
    consumer.shutdown().await;
    Ok(())
}

/// `--idle-exit-ms` measured in time the process ran with nothing new.
/// It advances in short ticks; a tick that lasted far longer than asked
/// means the process did not run meanwhile (SIGSTOP, a suspended VM), and
/// restarts the count: what arrived during the pause is read first.
#[derive(Debug, Clone, Copy)]
pub struct IdleClock {
    limit: Duration,
    tick: Duration,
    idle: Duration,
}

impl IdleClock {
    /// A clock that expires after `limit` of running idle time.
    pub fn new(limit: Duration) -> IdleClock {
        let tick = (limit / 10).clamp(Duration::from_millis(1), Duration::from_millis(100));
        IdleClock {
            limit,
            tick,
            idle: Duration::ZERO,
        }
    }

    /// How long to wait for the next message before calling [`Self::elapsed`].
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Something new arrived.
    pub fn reset(&mut self) {
        self.idle = Duration::ZERO;
    }

    /// A wait of [`Self::tick`] ended with nothing new after `took`;
    /// true once the idle limit is reached.
    pub fn elapsed(&mut self, took: Duration) -> bool {
        if took > self.tick * 3 + Duration::from_millis(200) {
            self.idle = Duration::ZERO; // paused: start over
        } else {
            self.idle += took;
        }
        self.idle >= self.limit
    }
}

/// `actormq consume --simple`: receive, print, ack (or leave a failed one
/// unacked), until `--count` messages were handled or nothing new came
/// for `--idle-exit-ms`.
async fn run_simple(
    common: &CommonArgs,
    args: &ConsumeArgs,
    logger: &Logger,
) -> Result<(), CliError> {
    if args.from.is_some() {
        return Err(CliError(
            "--from with --simple is not available yet (a new group pops from the first kept message)"
                .into(),
        ));
    }
    if args.instance_name.is_some() {
        return Err(CliError(
            "--instance-name with --simple is not available yet".into(),
        ));
    }
    if args.invisible_ms < 1_000 {
        return Err(CliError(format!(
            "--invisible-ms {} is below the minimum of 1000",
            args.invisible_ms
        )));
    }
    let limit = args.count.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    let fail_every = args.fail_every.filter(|k| *k > 0);
    let invisible = Duration::from_millis(args.invisible_ms);
    let idle_limit = Duration::from_millis(args.idle_exit_ms);
    let consumer = actormq_sdk::consumer::SimpleConsumer::new(
        &args.group,
        &common.namesrv.join(","),
        &args.topic,
        logger.clone(),
    )
    .map_err(consumer_error)?
    .with_await_duration(idle_limit.min(Duration::from_secs(2)));
    let consumer = if args.orderly {
        consumer.orderly()
    } else {
        consumer
    };
    // Filters: the broker passes the other messages over for the group.
    let consumer = match &args.sql {
        Some(sql) => consumer.with_sql(sql),
        None if args.tag_expr.trim() != "*" => consumer.with_tags(&args.tag_expr),
        None => consumer,
    };
    let (mut handled, mut deliveries) = (0u64, 0u64);
    let mut last_new = std::time::Instant::now();
    while handled < limit && last_new.elapsed() < idle_limit {
        let max = (limit - handled).min(32) as u32;
        let got = match consumer.receive(max, invisible).await {
            Ok(got) => got,
            Err(e) => {
                consumer.shutdown();
                return Err(consumer_error(e));
            }
        };
        if !got.is_empty() {
            last_new = std::time::Instant::now();
        }
        // Orderly: after a failure, the rest of that queue's batch waits
        // (not handled, not acked): it comes back after the failed one.
        let mut held_queues = std::collections::BTreeSet::new();
        for r in got {
            if args.orderly && held_queues.contains(&r.message.queue_id) {
                continue;
            }
            deliveries += 1;
            let mut m = r.message;
            m.message
                .properties
                .remove(actormq_sdk::protocol::message::PROPERTY_POP_CK);
            if fail_every.is_some_and(|k| deliveries % k == 0) {
                // Not acked: back after its invisible duration.
                print_message(&m, true, common.json);
                held_queues.insert(m.queue_id);
                continue;
            }
            print_message(&m, false, common.json);
            if let Err(e) = consumer.ack(&r.receipt).await {
                consumer.shutdown();
                return Err(consumer_error(e));
            }
            handled += 1;
        }
    }
    consumer.shutdown();
    Ok(())
}

fn consumer_error(e: ConsumerError) -> CliError {
    match e {
        ConsumerError::Client(c) => CliError::from(c),
        other => CliError(other.to_string()),
    }
}

/// The one-line error of a consumer whose services failed (the reason is
/// the SDK's; folded onto one line whatever it holds).
fn consumer_failed(reason: &str) -> CliError {
    CliError(reason.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `actormq admin group progress`. Must run inside an actix `System`.
pub async fn run_group_progress(
    common: &CommonArgs,
    args: &GroupProgressArgs,
    logger: &Logger,
) -> Result<(), CliError> {
    let as_json = common.json;
    let admin = common.admin(logger)?;
    let (lines, total_lag) = admin
        .group_progress(&args.group, args.topic.as_deref())
        .await?;
    let rows = lines.len();
    for q in &lines {
        if as_json {
            super::write_line(&format!("{}", json!(q)));
        } else {
            super::write_line(&format!(
                "{:<24} {:<16} queue={:<3} broker_offset={:<10} consumer_offset={:<10} lag={}",
                q.topic, q.broker, q.queue_id, q.broker_offset, q.consumer_offset, q.lag
            ));
        }
    }
    if rows == 0 && args.topic.is_none() {
        return Err(CliError(format!(
            "group {} has no committed offsets",
            args.group
        )));
    }
    if as_json {
        super::write_line(&format!("{}", json!({ "total_lag": total_lag })));
    } else {
        super::write_line(&format!("total_lag={total_lag}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_clock_counts_running_time_only() {
        let mut c = IdleClock::new(Duration::from_millis(1000));
        assert_eq!(c.tick(), Duration::from_millis(100));
        for _ in 0..9 {
            assert!(!c.elapsed(Duration::from_millis(100)));
        }
        // Stopped for 10 s just before the limit: the count starts over.
        assert!(!c.elapsed(Duration::from_secs(10)));
        for _ in 0..9 {
            assert!(!c.elapsed(Duration::from_millis(101)));
        }
        assert!(c.elapsed(Duration::from_millis(100)));
        c.reset();
        assert!(!c.elapsed(Duration::from_millis(100)));
        let mut tiny = IdleClock::new(Duration::from_millis(1));
        assert!(tiny.elapsed(tiny.tick()));
    }

    #[test]
    fn a_failed_consumer_is_one_line_naming_the_reason() {
        let e = consumer_failed(
            "consumer services failed: child service failed 6 times\nwithin 60s (budget 5)\n",
        );
        assert_eq!(
            e.0,
            "consumer services failed: child service failed 6 times within 60s (budget 5)"
        );
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn from_parses() {
        assert_eq!(parse_from("last"), Ok(ConsumeFrom::Last));
        assert_eq!(parse_from("first"), Ok(ConsumeFrom::First));
        assert_eq!(
            parse_from("1700000000000"),
            Ok(ConsumeFrom::Timestamp(1_700_000_000_000))
        );
        assert!(parse_from("yesterday").is_err());
    }

    #[test]
    fn json_line_has_the_documented_fields() {
        let mut msg = actormq_sdk::protocol::Message::new("T", &b"hi \xff"[..]);
        msg.tags = Some("A".into());
        msg.keys = Some("k1 k2".into());
        msg.properties.insert("color".into(), "red".into());
        let m = StoredMessage {
            message: msg,
            queue_id: 2,
            queue_offset: 12,
            commit_log_offset: 0,
            store_size: 0,
            born_timestamp_ms: 5,
            store_timestamp_ms: 6,
            born_host: "127.0.0.1:1".parse().unwrap(),
            store_host: "127.0.0.1:2".parse().unwrap(),
            body_crc: 0,
            reconsume_times: 1,
            prepared_transaction_offset: 0,
        };
        let v = message_json(&m, false);
        for field in [
            "msg_id",
            "topic",
            "tags",
            "keys",
            "props",
            "queue_id",
            "queue_offset",
            "body",
            "body_len",
            "reconsume_times",
            "born_ts",
            "store_ts",
        ] {
            assert!(v.get(field).is_some(), "{field} in {v}");
        }
        assert_eq!(v["props"]["color"], "red");
        assert_eq!(v["body"], "hi \u{fffd}");
        assert_eq!(v["body_len"], 4);
        assert_eq!(v["queue_offset"], 12);
        assert!(v.get("failed").is_none());
        assert_eq!(message_json(&m, true)["failed"], true);
    }
}

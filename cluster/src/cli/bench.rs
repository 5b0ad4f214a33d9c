//! `actormq bench produce | consume | e2e` (spec/cli.md, "bench"): the
//! SDK measured end to end.
//!
//! * `produce`: `--concurrency` workers share the `--messages` budget, each
//!   with one send in flight ([`Producer::send`], `send_async`,
//!   `send_oneway`, or [`Producer::send_batch`] of `--batch` messages);
//!   the latency is that of each call. `--rate R` paces the run: message
//!   `i` is not sent before `i / R` seconds into it (open loop as long as
//!   `--concurrency` sends in flight keep up).
//! * `consume`: a push consumer of `--group` (new groups start at the first
//!   kept message, up to 256 messages per pull) takes `--messages`
//!   messages; the latency of each is delivery time minus its store
//!   timestamp.
//! * `e2e`: a push consumer of a fresh group on the topic, then a produce
//!   run as above; the latency is store-to-delivery of each message of this
//!   run (tagged with a run id property).
//!
//! A progress bar goes to stderr when it is a terminal. The last stdout
//! line is the [`Summary`] (JSON with `--json`). Failed sends (and, for
//! `e2e`, sent messages never delivered) are counted in `errors`; the
//! command fails only if nothing could run (no name server, no broker
//! accepting the warm-up send, no consumer).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actormq_sdk::consumer::{
    ConsumeFrom, ConsumeResult, ConsumerError, PushConsumer, SimpleConsumer,
};
use actormq_sdk::consumer::{PushConsumerBuilder, PushConsumerConfig};
use actormq_sdk::producer::ProducerConfig;
use actormq_sdk::protocol::request::GetAllTopicListFromNamesrvRequest;
use actormq_sdk::protocol::{Bytes, Message, StoredView};
use actormq_sdk::{ClientError, Producer, ProducerBuilder};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use slog::{Logger, debug};

use super::produce::{Mode, generated_body};
use super::{
    BenchArgs, BenchCommand, BenchConsumeArgs, BenchProduceArgs, CliError, CommonArgs, emit,
};

/// Default `--messages`.
pub const DEFAULT_MESSAGES: u64 = 100_000;
/// Default `--size`.
pub const DEFAULT_SIZE: usize = 128;
/// Default `--concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Property carrying the run id of `bench e2e` messages.
pub const RUN_PROPERTY: &str = "ACTORMQ_BENCH_RUN";
/// Consumers stop waiting after this long with nothing new delivered.
const IDLE: Duration = Duration::from_secs(10);
/// Largest latency the histogram holds (1 hour, in µs); larger values are
/// recorded as this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The summary line (spec/cli.md), fields in the documented order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Messages sent (produce) or delivered (consume, e2e) successfully.
    pub messages: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// `messages / seconds`.
    pub msgs_per_sec: f64,
    /// Body bytes of `messages`, in MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// 99.9th percentile latency, µs.
    pub p999_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
    /// Failed sends (and, for e2e, messages sent but never delivered).
    pub errors: u64,
}

impl Summary {
    /// The human-readable form.
    pub fn text(&self) -> String {
        format!(
            "{} messages in {:.3} s: {:.0} msgs/s, {:.2} MB/s; latency p50 {} us, p99 {} us, \
             p99.9 {} us, max {} us; {} errors",
            self.messages,
            self.seconds,
            self.msgs_per_sec,
            self.mb_per_sec,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.errors
        )
    }
}

/// Latencies and counts of a run (or of one worker, merged later).
#[derive(Debug, Clone)]
pub struct Stats {
    hist: Histogram<u64>,
    /// Messages that succeeded.
    pub messages: u64,
    /// Body bytes of those messages.
    pub bytes: u64,
    /// Failures.
    pub errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

impl Stats {
    /// Empty stats (3 significant digits, 1 µs to 1 hour).
    pub fn new() -> Stats {
        Stats {
            hist: Histogram::new_with_max(MAX_LATENCY_US, 3).expect("valid histogram bounds"),
            messages: 0,
            bytes: 0,
            errors: 0,
        }
    }

    /// One latency sample, µs (clamped to 1 hour).
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.min(MAX_LATENCY_US));
    }

    /// `n` messages of `bytes` body bytes succeeded.
    pub fn ok(&mut self, n: u64, bytes: u64) {
        self.messages += n;
        self.bytes += bytes;
    }

    /// Adds `other`'s samples and counts.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: cannot fail.
        let _ = self.hist.add(&other.hist);
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.errors += other.errors;
    }

    /// Latency samples recorded.
    pub fn samples(&self) -> u64 {
        self.hist.len()
    }

    /// The summary of a run of `seconds`.
    pub fn summary(&self, seconds: f64) -> Summary {
        let secs = seconds.max(1e-9);
        let (p50, p99, p999, max) = if self.hist.is_empty() {
            (0, 0, 0, 0)
        } else {
            (
                self.hist.value_at_quantile(0.5),
                self.hist.value_at_quantile(0.99),
                self.hist.value_at_quantile(0.999),
                self.hist.max(),
            )
        };
        Summary {
            messages: self.messages,
            seconds: round(seconds, 3),
            msgs_per_sec: round(self.messages as f64 / secs, 1),
            mb_per_sec: round(self.bytes as f64 / 1e6 / secs, 3),
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            max_us: max,
            errors: self.errors,
        }
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Microseconds since the epoch.
fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Store-to-`now_us` latency of `m`, µs.
fn delivery_latency_us(m: &StoredView, now_us: u64) -> u64 {
    now_us.saturating_sub(m.store_timestamp_ms().saturating_mul(1000))
}

fn progress(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// `actormq bench …`. Must run inside an actix `System`.
pub async fn run(common: &CommonArgs, args: &BenchArgs, log: &Logger) -> Result<(), CliError> {
    let over_grpc = match &args.what {
        BenchCommand::Produce(a) => a.grpc.is_some(),
        BenchCommand::Consume(a) => a.grpc.is_some(),
        BenchCommand::E2e(a) => {
            if a.grpc.is_some() {
                return Err(CliError(
                    "--grpc is for bench produce and bench consume --simple".into(),
                ));
            }
            false
        }
    };
    // Nothing can run without a name server: fail before anything else
    // (a gRPC run talks to the node's gRPC endpoint only).
    if !over_grpc {
        common
            .route_cache(log)?
            .namesrv_call(GetAllTopicListFromNamesrvRequest {})
            .await?;
    }
    let summary = match &args.what {
        BenchCommand::Produce(a) => bench_produce(common, a, log).await?,
        BenchCommand::Consume(a) => bench_consume(common, a, log).await?,
        BenchCommand::E2e(a) => bench_e2e(common, a, log).await?,
    };
    emit(common.json, &summary, || summary.text());
    Ok(())
}

/// The resolved flags of a produce run.
#[derive(Debug, Clone)]
struct Plan {
    topic: String,
    messages: u64,
    /// The body of every message: a static `Bytes`, so it clones and drops
    /// without a reference count and the bench measures the client, not its
    /// own bookkeeping (leaked once per run, `size` bytes).
    body: Bytes,
    size: usize,
    concurrency: usize,
    batch: usize,
    mode: Mode,
    /// Property added to every message (e2e run id).
    run_id: Option<String>,
    /// Target send rate, messages per second (paced); `None`: as fast as
    /// the workers go.
    rate: Option<u64>,
}

impl Plan {
    fn new(a: &BenchProduceArgs) -> Result<Plan, CliError> {
        let size = a.size.unwrap_or(DEFAULT_SIZE);
        let plan = Plan {
            topic: a.topic.clone(),
            messages: a.messages.unwrap_or(DEFAULT_MESSAGES),
            body: Bytes::from_static(Vec::leak(generated_body(size, 0).to_vec())),
            size,
            concurrency: a.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
            batch: a.batch.unwrap_or(1),
            mode: a.mode.unwrap_or(Mode::Sync),
            run_id: None,
            rate: a.rate,
        };
        if plan.concurrency == 0 || plan.batch == 0 {
            return Err(CliError(
                "--concurrency and --batch must be at least 1".into(),
            ));
        }
        if plan.rate == Some(0) {
            return Err(CliError("--rate must be at least 1".into()));
        }
        Ok(plan)
    }

    /// When the send of message `index` is due, for a paced run started at
    /// `began`: message `i` is due `i / rate` seconds in.
    fn due(&self, began: Instant, index: u64) -> Option<Instant> {
        let rate = self.rate?;
        let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate);
        Some(began + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)))
    }

    fn message(&self) -> Message {
        let mut m = Message::new(self.topic.clone(), self.body.clone());
        if let Some(id) = &self.run_id {
            m.properties.insert(RUN_PROPERTY.to_owned(), id.clone());
        }
        m
    }
}

async fn producer(common: &CommonArgs, log: &Logger) -> Result<Producer, CliError> {
    Ok(ProducerBuilder::from_config(ProducerConfig {
        group: "actormq-cli-bench".into(),
        namesrv: common.namesrv.clone(),
        send_timeout_ms: common.timeout().as_millis().try_into().unwrap_or(u64::MAX),
        ..ProducerConfig::default()
    })
    .logger(log)
    .build()
    .await?)
}

/// One send to `topic` that the broker accepts (routes and connections
/// warm, topic auto-created), retried on flow control for the timeout.
async fn warm_up(p: &Producer, topic: &str, timeout: Duration) -> Result<(), CliError> {
    let until = Instant::now() + timeout;
    loop {
        let mut m = Message::new(topic, "actormq bench warm-up");
        m.tags = Some("warm-up".into());
        match p.send(m).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_flow_control() && Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(CliError(format!("warm-up send to {topic}: {e}"))),
        }
    }
}

/// One worker: claims `batch` messages at a time from `next` until
/// `plan.messages` are claimed, one call in flight; with `--rate`, waits
/// until the claimed messages are due. Latencies go to the shared `stats`
/// (one histogram for all workers: per-worker histograms of 1 µs .. 1 h
/// are ~350 KB each and thrash the cache).
async fn worker(
    p: Producer,
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    began: Instant,
    stats: Arc<Mutex<Stats>>,
    bar: ProgressBar,
) -> Option<ClientError> {
    let mut first_error = None;
    // A batch is built once and sent again and again (borrowed: the SDK
    // stamps fresh unique keys into each send's encoding).
    let batch: Vec<Message> = if plan.batch > 1 {
        (0..plan.batch).map(|_| plan.message()).collect()
    } else {
        Vec::new()
    };
    let k = plan.batch as u64;
    loop {
        let start = next.fetch_add(k, Ordering::Relaxed);
        if start >= plan.messages {
            break;
        }
        let n = k.min(plan.messages - start);
        if let Some(due) = plan.due(began, start)
            && due > Instant::now()
        {
            tokio::time::sleep_until(due.into()).await;
        }
        let sent_at = Instant::now();
        let outcome: Result<(), ClientError> = if plan.batch > 1 {
            p.send_batch(&batch[..n as usize]).await.map(drop)
        } else {
            let m = plan.message();
            match plan.mode {
                Mode::Sync => p.send(m).await.map(drop),
                Mode::Async => p.send_async(m).await.map(drop),
                Mode::Oneway => p.send_oneway(m).await,
            }
        };
        let us = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        {
            let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(()) => {
                    stats.record_us(us);
                    stats.ok(n, n * plan.size as u64);
                }
                Err(e) => {
                    stats.errors += n;
                    first_error.get_or_insert(e);
                }
            }
        }
        bar.inc(n);
    }
    first_error
}

/// Runs `plan` over `p`; returns the merged stats and the elapsed time.
async fn produce(p: &Producer, plan: Plan, bar: &ProgressBar) -> (Stats, Duration) {
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let stats = Arc::new(Mutex::new(Stats::new()));
    let began = Instant::now();
    let workers = (0..plan.concurrency)
        .map(|_| {
            worker(
                p.clone(),
                plan.clone(),
                next.clone(),
                began,
                stats.clone(),
                bar.clone(),
            )
        })
        .collect::<Vec<_>>();
    let results = futures_util::future::join_all(workers).await;
    let elapsed = began.elapsed();
    if let Some(e) = results.into_iter().flatten().next() {
        bar.suspend(|| eprintln!("actormq: first failed send: {e}"));
    }
    let total = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (total, elapsed)
}

async fn bench_produce(
    common: &CommonArgs,
    args: &BenchProduceArgs,
    log: &Logger,
) -> Result<Summary, CliError> {
    let plan = Plan::new(args)?;
    if let Some(addr) = args.grpc {
        if plan.batch > 1 || args.mode.is_some() || plan.rate.is_some() {
            return Err(CliError(
                "--grpc sends unbatched sync sends: not with --batch, --mode or --rate".into(),
            ));
        }
        return super::bench_grpc::produce(super::bench_grpc::GrpcProducePlan {
            addr,
            topic: plan.topic,
            messages: plan.messages,
            body: plan.body.to_vec(),
            concurrency: plan.concurrency,
            timeout: common.timeout(),
        })
        .await;
    }
    let p = producer(common, log).await?;
    let outcome = async {
        warm_up(&p, &plan.topic, common.timeout()).await?;
        let bar = progress(plan.messages);
        let (stats, elapsed) = produce(&p, plan, &bar).await;
        bar.finish_and_clear();
        Ok(stats.summary(elapsed.as_secs_f64()))
    }
    .await;
    p.shutdown().await;
    outcome
}

/// Shared state of a benchmarking listener.
#[derive(Debug, Default)]
struct Delivered {
    stats: Mutex<Stats>,
    count: AtomicU64,
    /// Time of the last counted delivery, µs since the epoch.
    last_us: AtomicU64,
}

fn consumer_error(e: ConsumerError) -> CliError {
    match e {
        ConsumerError::Client(c) => CliError::from(c),
        other => CliError(other.to_string()),
    }
}

/// Starts a push consumer of `group` on `topic` that records the
/// deliveries of messages `counts` accepts, up to `limit`.
async fn start_consumer(
    common: &CommonArgs,
    group: &str,
    topic: &str,
    from: ConsumeFrom,
    limit: u64,
    counts: impl Fn(&StoredView) -> bool + Send + Sync + 'static,
    log: &Logger,
) -> Result<(PushConsumer, Arc<Delivered>), CliError> {
    let delivered = Arc::new(Delivered::default());
    let listener = {
        let d = delivered.clone();
        move |msgs: &[StoredView]| {
            let mut stats = d.stats.lock().unwrap_or_else(|p| p.into_inner());
            // One clock read per call: the messages of a call are handed
            // over together, and store timestamps are in ms anyway.
            let now = now_us();
            for m in msgs {
                if !counts(m) {
                    continue;
                }
                if d.count.load(Ordering::Relaxed) >= limit {
                    // Past --messages: leave the rest for the next consumer.
                    return ConsumeResult::Retain;
                }
                stats.record_us(delivery_latency_us(m, now));
                stats.ok(1, m.body().len() as u64);
                d.count.fetch_add(1, Ordering::Relaxed);
                d.last_us.store(now, Ordering::Relaxed);
            }
            ConsumeResult::Success
        }
    };
    let consumer = PushConsumerBuilder::from_config(PushConsumerConfig {
        group: group.to_owned(),
        namesrv: common.namesrv.clone(),
        consume_from: from,
        workers: 8,
        // Up to 256 messages per pull (the broker's cap per pull) and per
        // listener call: the consumer's pace is then the node's and the
        // client's per-message cost, not round trips and hand-offs (32
        // per pull: 0.6 M msgs/s, 256: 1.1 M; BENCHMARKS.md).
        pull_batch_size: 256,
        consume_batch_size: 256,
        rebalance_interval_ms: 1_000,
        ..PushConsumerConfig::default()
    })
    .subscribe(topic, "*")
    .logger(log.clone())
    // Borrowed messages: the bench reads two fields of each.
    .view_listener(listener)
    .start()
    .await
    .map_err(consumer_error)?;
    // Wait for the first assignment, so an e2e run loses nothing.
    let until = Instant::now() + common.timeout().max(Duration::from_secs(10));
    while consumer.assigned_queues().is_empty() {
        if Instant::now() >= until {
            consumer.shutdown().await;
            return Err(CliError(format!("no queue of {topic} was assigned")));
        }
        consumer.rebalance_now();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((consumer, delivered))
}

/// Waits until `target` deliveries, or [`IDLE`] without a new one.
async fn wait_delivered(d: &Delivered, target: u64, bar: &ProgressBar) {
    let mut seen = 0;
    let mut last_change = Instant::now();
    loop {
        let n = d.count.load(Ordering::Relaxed);
        bar.set_position(n);
        if n >= target {
            return;
        }
        if n != seen {
            seen = n;
            last_change = Instant::now();
        } else if last_change.elapsed() >= IDLE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench_consume(
    common: &CommonArgs,
    args: &BenchConsumeArgs,
    log: &Logger,
) -> Result<Summary, CliError> {
    let limit = args.messages.unwrap_or(DEFAULT_MESSAGES);
    if args.simple {
        return bench_consume_simple(common, args, limit, log).await;
    }
    let (consumer, delivered) = start_consumer(
        common,
        &args.group,
        &args.topic,
        ConsumeFrom::First,
        limit,
        |_| true,
        log,
    )
    .await?;
    let began_us = now_us();
    let bar = progress(limit);
    wait_delivered(&delivered, limit, &bar).await;
    bar.finish_and_clear();
    let end_us = delivered.last_us.load(Ordering::Relaxed).max(began_us);
    consumer.shutdown().await;
    let stats = delivered.stats.lock().unwrap_or_else(|p| p.into_inner());
    Ok(stats.summary((end_us - began_us) as f64 / 1e6))
}

/// `bench consume --simple`: `--concurrency` receive loops on one
/// simple consumer, each receiving up to 32 messages (invisible 60 s) and
/// acking them with one batch ack, until `limit` messages are acked or
/// [`IDLE`] passes without one. Latency: store to ack.
async fn bench_consume_simple(
    common: &CommonArgs,
    args: &BenchConsumeArgs,
    limit: u64,
    log: &Logger,
) -> Result<Summary, CliError> {
    let concurrency = args.concurrency.unwrap_or(16).max(1);
    if let Some(addr) = args.grpc {
        return super::bench_grpc::consume(super::bench_grpc::GrpcConsumePlan {
            addr,
            topic: args.topic.clone(),
            group: args.group.clone(),
            messages: limit,
            concurrency,
            timeout: common.timeout(),
        })
        .await;
    }
    let consumer = SimpleConsumer::new(
        &args.group,
        &common.namesrv.join(","),
        &args.topic,
        log.clone(),
    )
    .map_err(consumer_error)?
    .with_await_duration(Duration::from_secs(1));
    let bar = progress(limit);
    let began = Instant::now();
    let acked = std::cell::Cell::new(0u64);
    let last = std::cell::Cell::new(began);
    let worker = || async {
        let mut stats = Stats::new();
        while acked.get() < limit && last.get().elapsed() < IDLE {
            let got = match consumer.receive(32, Duration::from_secs(60)).await {
                Ok(got) => got,
                Err(e) => {
                    stats.errors += 1;
                    debug!(log, "receive failed"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if got.is_empty() {
                continue;
            }
            let receipts: Vec<_> = got.iter().map(|r| r.receipt.clone()).collect();
            match consumer.ack_batch(&receipts).await {
                Ok(refused) => {
                    stats.errors += refused.len() as u64;
                    let now = now_us();
                    for (i, r) in got.iter().enumerate() {
                        if refused.iter().any(|f| f.index == i) {
                            continue;
                        }
                        stats.record_us(
                            now.saturating_sub(r.message.store_timestamp_ms.saturating_mul(1000)),
                        );
                        stats.ok(1, r.message.message.body.len() as u64);
                    }
                    let n = (got.len() - refused.len()) as u64;
                    acked.set(acked.get() + n);
                    last.set(Instant::now());
                    bar.set_position(acked.get());
                }
                Err(e) => {
                    stats.errors += got.len() as u64;
                    debug!(log, "batch ack failed"; "error" => %e);
                }
            }
        }
        stats
    };
    let all = futures_util::future::join_all((0..concurrency).map(|_| worker())).await;
    bar.finish_and_clear();
    consumer.shutdown();
    let mut stats = Stats::new();
    for s in &all {
        stats.merge(s);
    }
    let secs = last.get().duration_since(began).as_secs_f64();
    Ok(stats.summary(secs))
}

async fn bench_e2e(
    common: &CommonArgs,
    args: &BenchProduceArgs,
    log: &Logger,
) -> Result<Summary, CliError> {
    let mut plan = Plan::new(args)?;
    let run_id = format!("{}-{}", std::process::id(), now_us());
    plan.run_id = Some(run_id.clone());
    let p = producer(common, log).await?;
    let outcome = async {
        // The topic must exist before the consumer can be assigned queues.
        warm_up(&p, &plan.topic, common.timeout()).await?;
        let started_ms = now_us() / 1000;
        let group = format!("actormq-bench-e2e-{run_id}");
        let wanted = run_id.clone();
        let (consumer, delivered) = start_consumer(
            common,
            &group,
            &plan.topic,
            ConsumeFrom::Timestamp(started_ms),
            u64::MAX,
            move |m| m.property(RUN_PROPERTY) == Some(wanted.as_str()),
            log,
        )
        .await?;
        let bar = progress(plan.messages);
        let began_us = now_us();
        let (sent, _) = produce(&p, plan, &bar).await;
        bar.set_position(0);
        bar.set_length(sent.messages);
        wait_delivered(&delivered, sent.messages, &bar).await;
        // From the first send to the last delivery.
        let elapsed = delivered
            .last_us
            .load(Ordering::Relaxed)
            .saturating_sub(began_us);
        bar.finish_and_clear();
        consumer.shutdown().await;
        let mut stats = delivered
            .stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        // Failed sends, plus messages sent but never delivered.
        stats.errors = sent.errors + sent.messages.saturating_sub(stats.messages);
        Ok(stats.summary(elapsed as f64 / 1e6))
    }
    .await;
    p.shutdown().await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_latencies() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        for us in 1..=1000 {
            if us % 2 == 0 { &mut a } else { &mut b }.record_us(us);
        }
        a.ok(600, 600 * 100);
        b.ok(400, 400 * 100);
        b.errors = 3;
        a.merge(&b);
        assert_eq!(a.samples(), 1000);
        let s = a.summary(2.0);
        assert_eq!(s.messages, 1000);
        assert_eq!(s.errors, 3);
        assert_eq!(s.seconds, 2.0);
        assert_eq!(s.msgs_per_sec, 500.0);
        assert_eq!(s.mb_per_sec, 0.05);
        // 3 significant digits: exact below 2048.
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.p999_us, 999);
        assert_eq!(s.max_us, 1000);
    }

    #[test]
    fn empty_and_huge_samples() {
        let s = Stats::new().summary(0.0);
        assert_eq!((s.messages, s.p50_us, s.max_us), (0, 0, 0));
        let mut big = Stats::new();
        big.record_us(u64::MAX);
        assert!(big.summary(1.0).max_us >= MAX_LATENCY_US);
    }

    #[test]
    fn summary_json_has_the_documented_fields_in_order() {
        let mut st = Stats::new();
        st.record_us(42);
        st.ok(1, 128);
        let line = serde_json::to_string(&st.summary(1.0)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = [
            "messages",
            "seconds",
            "msgs_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
        ];
        // serde_json's map is sorted unless preserve_order: compare sets,
        // then the order in the raw line.
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
        assert!(
            line.starts_with(r#"{"messages":1,"seconds":1.0,"#),
            "{line}"
        );
        assert!(line.ends_with(r#""max_us":42,"errors":0}"#), "{line}");
    }
}

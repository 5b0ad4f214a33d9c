//! `actormq-loadgen`: a pipelined protocol-level load generator for one
//! broker (no SDK, no routing: frames straight to `--broker`).
//!
//! ```text
//! actormq-loadgen --broker 127.0.0.1:10911 --topic bench --messages 1000000 \
//!                 --size 128 --inflight 128 --batch 32 --mode produce
//! actormq-loadgen --broker 127.0.0.1:10911 --topic bench --messages 1000000 \
//!                 --inflight 64 --pull-batch 32 --mode pull
//! ```
//!
//! `produce` creates the topic (`--queues`, unless `--no-create`) and sends
//! `--messages` messages of `--size` bytes, one per SEND_MESSAGE
//! (`--batch 1`) or `--batch` per SEND_BATCH_MESSAGE, round-robin over the
//! queues, keeping `--inflight` requests unanswered per connection.
//! `pull` reads up to `--messages` messages from every queue's min to max
//! offset with PULL_MESSAGE (`--pull-batch` per request), pipelined the
//! same way. `--connections C` splits the work over C connections, each on
//! its own thread.
//!
//! The last stdout line is a JSON summary with the fields of
//! `actormq bench`'s (`messages, seconds, msgs_per_sec, mb_per_sec, p50_us,
//! p99_us, p999_us, max_us, errors`) plus the parameters. Latencies are per
//! request (send or pull), from writing it to reading its reply. Exit code 1
//! when any request failed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use actormq_protocol::request::{
    CreateTopicRequest, GetMaxOffsetRequest, GetMinOffsetRequest, Perm, PullMessageRequest,
    SendBatchMessageRequest, SendMessageRequest, TopicConfig,
};
use actormq_protocol::{Bytes, Frame, Message, ResponseCode, batch, records};
use actormq_tests::client::Client;
use clap::{Parser, ValueEnum};

/// Flags.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Pipelined protocol-level load generator for an actormq broker"
)]
struct Args {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:10911")]
    broker: SocketAddr,
    /// Topic.
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Messages to send (produce) or read at most (pull).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body size in bytes (produce).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 128)]
    inflight: usize,
    /// Messages per send request (1 = SEND_MESSAGE, more = SEND_BATCH_MESSAGE).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// produce or pull.
    #[arg(long, value_enum, default_value_t = Mode::Produce)]
    mode: Mode,
    /// Queues of the topic (created with this many unless --no-create).
    #[arg(long, default_value_t = 4)]
    queues: u32,
    /// Do not create the topic first.
    #[arg(long)]
    no_create: bool,
    /// Messages per pull request (pull).
    #[arg(long, default_value_t = 32)]
    pull_batch: u32,
    /// Pull replies as stored records (what the SDK asks for) instead of
    /// batches of stored messages (pull).
    #[arg(long)]
    records: bool,
    /// Connections (one thread each).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Produce delivery-at-a-time messages due this many ms after the run
    /// starts (singles only: --batch 1), to load the broker's timer.
    #[arg(long, value_name = "MS")]
    deliver_in_ms: Option<u64>,
    /// Per-request timeout for the setup calls, ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send messages.
    Produce,
    /// Pull messages.
    Pull,
}

/// One connection's share of the work.
#[derive(Debug, Clone)]
enum Work {
    /// `requests` sends, starting at queue `first_queue`.
    Produce { requests: u64, first_queue: u32 },
    /// Pulls at these (queue, offset, max messages).
    Pull(Vec<(u32, u64, u32)>),
}

/// What one connection measured.
#[derive(Debug, Default)]
struct Outcome {
    messages: u64,
    bytes: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Pre-encoded send frames, one per queue (the request id is set per send).
fn send_templates(args: &Args) -> Result<Vec<Frame>, String> {
    let body: Bytes = (0..args.size)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into();
    (0..args.queues)
        .map(|q| {
            let born = now_ms();
            if args.batch <= 1 {
                let req = SendMessageRequest {
                    producer_group: "loadgen".into(),
                    topic: args.topic.clone(),
                    queue_id: q,
                    born_timestamp_ms: born,
                    deliver_at_ms: args.deliver_in_ms.map(|ms| born + ms),
                    ..SendMessageRequest::default()
                };
                Frame::request(0, &req, body.clone())
            } else if args.deliver_in_ms.is_some() {
                Err(actormq_protocol::Error::InvalidMessage(
                    "--deliver-in-ms needs --batch 1 (a batch cannot be delayed)",
                ))
            } else {
                let msgs: Vec<Message> = (0..args.batch)
                    .map(|_| Message::new(args.topic.clone(), body.clone()))
                    .collect();
                let req = SendBatchMessageRequest {
                    producer_group: "loadgen".into(),
                    topic: args.topic.clone(),
                    queue_id: q,
                    born_timestamp_ms: born,
                    ..SendBatchMessageRequest::default()
                };
                Frame::request(0, &req, batch::messages_to_bytes(&msgs))
            }
            .map_err(|e| e.to_string())
        })
        .collect()
}

async fn setup(args: &Args) -> Result<Vec<Work>, String> {
    let mut c = Client::connect(args.broker)
        .await
        .map_err(|e| format!("connect {}: {e}", args.broker))?;
    c.set_timeout(Duration::from_millis(args.timeout_ms));
    let conns = args.connections.max(1);
    match args.mode {
        Mode::Produce => {
            if !args.no_create {
                let req = CreateTopicRequest {
                    config: TopicConfig {
                        topic_name: args.topic.clone(),
                        read_queue_nums: args.queues,
                        write_queue_nums: args.queues,
                        perm: Perm::READ_WRITE,
                        topic_sys_flag: 0,
                        order: false,
                    },
                };
                c.call(&req, Bytes::new())
                    .await
                    .map_err(|e| e.to_string())?
                    .ok()
                    .map_err(|e| format!("create topic: {e}"))?;
            }
            let batch = args.batch.max(1) as u64;
            let requests = args.messages.div_ceil(batch);
            Ok((0..conns as u64)
                .map(|i| Work::Produce {
                    requests: requests / conns as u64 + u64::from(i < requests % conns as u64),
                    first_queue: (i % u64::from(args.queues.max(1))) as u32,
                })
                .collect())
        }
        Mode::Pull => {
            let mut plan = Vec::new();
            let mut budget = args.messages;
            let step = u64::from(args.pull_batch.max(1));
            for q in 0..args.queues {
                let (topic, queue_id) = (args.topic.clone(), q);
                let min = c
                    .call(&GetMinOffsetRequest { topic, queue_id }, Bytes::new())
                    .await
                    .map_err(|e| e.to_string())?
                    .ok()
                    .map_err(|e| format!("min offset of queue {q}: {e}"))?
                    .offset;
                let topic = args.topic.clone();
                let max = c
                    .call(&GetMaxOffsetRequest { topic, queue_id }, Bytes::new())
                    .await
                    .map_err(|e| e.to_string())?
                    .ok()
                    .map_err(|e| format!("max offset of queue {q}: {e}"))?
                    .offset;
                let mut off = min;
                while off < max && budget > 0 {
                    let n = step.min(max - off).min(budget);
                    plan.push((q, off, n as u32));
                    budget -= n;
                    off += n;
                }
            }
            if plan.is_empty() {
                return Err(format!("nothing to pull in {}", args.topic));
            }
            // Interleave queues, then deal out to connections.
            plan.sort_by_key(|&(q, off, _)| (off, q));
            let mut works = vec![Vec::new(); conns];
            for (i, p) in plan.into_iter().enumerate() {
                works[i % conns].push(p);
            }
            Ok(works.into_iter().map(Work::Pull).collect())
        }
    }
}

fn record(out: &mut Outcome, sent_at: Instant, reply: &Frame, ok: bool) {
    let us = sent_at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    out.latencies_us.push(us);
    if !ok {
        out.errors += 1;
        if out.first_error.is_none() {
            out.first_error = Some(format!(
                "code {} {}",
                reply.header.code,
                reply.header.remark.as_deref().unwrap_or("")
            ));
        }
    }
}

/// The request frames of one connection's work.
fn frames_of(args: &Args, work: Work) -> Result<Box<dyn Iterator<Item = Frame> + Send>, String> {
    match work {
        Work::Produce {
            requests,
            first_queue,
        } => {
            let templates = send_templates(args)?;
            let n = templates.len();
            Ok(Box::new((0..requests).map(move |i| {
                templates[(first_queue as usize + i as usize) % n].clone()
            })))
        }
        Work::Pull(plan) => {
            let frames: Vec<Frame> = plan
                .iter()
                .map(|&(q, off, n)| {
                    let req = PullMessageRequest {
                        consumer_group: "loadgen".into(),
                        topic: args.topic.clone(),
                        queue_id: q,
                        queue_offset: off,
                        max_msg_nums: n,
                        records: args.records,
                        ..PullMessageRequest::default()
                    };
                    Frame::request(0, &req, Bytes::new()).map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            Ok(Box::new(frames.into_iter()))
        }
    }
}

/// Prepares, waits at `start` (always, so a failed connection never
/// leaves the others waiting), then runs.
async fn run_one(args: &Args, work: Work, start: &Barrier) -> Result<Outcome, String> {
    let prepared = match frames_of(args, work) {
        Ok(frames) => Client::connect(args.broker)
            .await
            .map(|c| (c, frames))
            .map_err(|e| format!("connect {}: {e}", args.broker)),
        Err(e) => Err(e),
    };
    start.wait();
    let (mut c, frames) = prepared?;
    let mut out = Outcome::default();
    match args.mode {
        Mode::Produce => {
            let per = args.batch.max(1) as u64;
            c.send_many(frames, args.inflight, |_, at, reply| {
                let ok = reply.header.code == ResponseCode::Success.as_u32();
                if ok {
                    out.messages += per;
                    out.bytes += per * args.size as u64;
                }
                record(&mut out, at, &reply, ok);
            })
            .await
            .map_err(|e| format!("send: {e}"))?;
        }
        Mode::Pull => {
            let records = args.records;
            c.send_many(frames, args.inflight, |_, at, reply| {
                let mut ok = reply.header.code == ResponseCode::Success.as_u32();
                if ok && records {
                    match records::decode_records(&reply.body) {
                        Ok(views) => {
                            out.messages += views.len() as u64;
                            out.bytes += views.iter().map(|v| v.body().len() as u64).sum::<u64>();
                        }
                        Err(_) => ok = false,
                    }
                } else if ok {
                    for m in batch::iter_messages(&reply.body) {
                        match m {
                            Ok(m) => {
                                out.messages += 1;
                                out.bytes += m.body.len() as u64;
                            }
                            Err(_) => ok = false,
                        }
                    }
                }
                record(&mut out, at, &reply, ok);
            })
            .await
            .map_err(|e| format!("pull: {e}"))?;
        }
    }
    Ok(out)
}

/// The nearest-rank percentile, `permille` = 500 for p50, 999 for p99.9.
fn percentile(sorted: &[u32], permille: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (permille * sorted.len()).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.queues == 0 || args.inflight == 0 || args.connections == 0 {
        eprintln!("error: --queues, --inflight and --connections must be at least 1");
        return ExitCode::from(2);
    }
    let works = match runtime()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(setup(&args)))
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let start = Arc::new(Barrier::new(works.len() + 1));
    let threads: Vec<_> = works
        .into_iter()
        .map(|work| {
            let (args, start) = (args.clone(), start.clone());
            std::thread::spawn(move || {
                let rt = runtime().map_err(|e| e.to_string())?;
                rt.block_on(run_one(&args, work, &start))
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let mut total = Outcome::default();
    let mut fatal = None;
    for t in threads {
        match t.join() {
            Ok(Ok(o)) => {
                total.messages += o.messages;
                total.bytes += o.bytes;
                total.errors += o.errors;
                total.first_error = total.first_error.or(o.first_error);
                total.latencies_us.extend(o.latencies_us);
            }
            Ok(Err(e)) => fatal = fatal.or(Some(e)),
            Err(_) => fatal = fatal.or(Some("a connection thread panicked".into())),
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    if let Some(e) = &fatal {
        eprintln!("error: {e}");
    }
    if let Some(e) = &total.first_error {
        eprintln!("first failed request: {e}");
    }
    total.latencies_us.sort_unstable();
    let l = &total.latencies_us;
    println!(
        "{{\"mode\":\"{}\",\"messages\":{},\"seconds\":{:.3},\"msgs_per_sec\":{:.0},\"mb_per_sec\":{:.2},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"errors\":{},\"requests\":{},\"size\":{},\"batch\":{},\"inflight\":{},\"connections\":{}}}",
        match args.mode {
            Mode::Produce => "produce",
            Mode::Pull => "pull",
        },
        total.messages,
        seconds,
        total.messages as f64 / seconds.max(1e-9),
        total.bytes as f64 / 1e6 / seconds.max(1e-9),
        percentile(l, 500),
        percentile(l, 990),
        percentile(l, 999),
        l.last().copied().unwrap_or(0),
        total.errors,
        l.len(),
        args.size,
        args.batch.max(1),
        args.inflight,
        args.connections,
    );
    if fatal.is_some() || total.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 500), 500);
        assert_eq!(percentile(&v, 990), 990);
        assert_eq!(percentile(&v, 999), 999);
        assert_eq!(percentile(&v, 1000), 1000);
        assert_eq!(percentile(&[7], 999), 7);
        assert_eq!(percentile(&[], 500), 0);
    }
}

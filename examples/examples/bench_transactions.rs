//! A benchmark, not a scenario: transactional send + commit per second
//! (issue 13's target: 20 000 transactions/s), against an in-process
//! combined node, or a running one with `--namesrv`:
//!
//! ```sh
//! cargo run --release -p actormq-examples --example bench_transactions -- 100000 64
//! cargo run --release -p actormq-examples --example bench_transactions -- 100000 64 127.0.0.1:9876
//! ```
//!
//! Arguments: transactions (default 50 000), concurrency (transactions in
//! flight, default 64), name server (default: start a node in process).
//! Every local transaction commits. Prints one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actormq_sdk::ProducerBuilder;
use actormq_sdk::protocol::{Message, StoredMessage};
use actormq_sdk::transaction::{TransactionListener, TransactionState};

struct CommitAll;

impl TransactionListener for CommitAll {
    fn execute_local_transaction(&self, _: &Message) -> TransactionState {
        TransactionState::Commit
    }
    fn check_local_transaction(&self, _: &StoredMessage) -> TransactionState {
        TransactionState::Commit
    }
}

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let total: u64 = args.first().map_or(Ok(50_000), |a| a.parse())?;
    let concurrency: u64 = args.get(1).map_or(Ok(64), |a| a.parse())?;
    let (_node, namesrv): (Option<actormq_examples::node::ExampleNode>, String) = match args.get(2)
    {
        Some(ns) => (None, ns.clone()),
        None => {
            let node = actormq_examples::node::start(Vec::new()).await?;
            let ns = node.namesrv()?;
            (Some(node), ns)
        }
    };
    let producer = ProducerBuilder::new("bench-tx")
        .namesrv([namesrv.clone()])
        .build_transactional(CommitAll)
        .await?;
    // Route and connections warm: one transaction before the clock starts.
    producer
        .send_in_transaction(Message::new("bench-tx", "warm-up"))
        .await?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (p, next, errors) = (producer.clone(), next.clone(), errors.clone());
            actix_rt::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let m = Message::new("bench-tx", vec![b'x'; 128]);
                    match p.send_in_transaction(m).await {
                        Ok(r) if r.state == TransactionState::Commit && r.end_error.is_none() => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    // Committed messages in the topic (the warm-up included), once the
    // dispatcher caught up: the commits are visible, each once.
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let probe = actormq_sdk::consumer::PullConsumer::new("bench-tx-probe", &namesrv, log)?;
    let mut delivered = 0;
    for _ in 0..100 {
        delivered = 0;
        for mq in probe.fetch_queues("bench-tx").await? {
            delivered += probe.max_offset(&mq).await?;
        }
        if delivered > total {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!(
        "{{\"transactions\":{total},\"concurrency\":{concurrency},\"seconds\":{secs:.3},\"tx_per_sec\":{:.0},\"errors\":{},\"delivered\":{}}}",
        total as f64 / secs,
        errors.load(Ordering::Relaxed),
        delivered.saturating_sub(1)
    );
    producer.shutdown().await;
    Ok(())
}

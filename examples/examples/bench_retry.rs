//! A benchmark, not a scenario: a consumer group whose every delivery
//! fails, paced at a rate, against a running node (issue 12's target:
//! 10 000 failing messages/s sent back and redelivered while healthy
//! traffic beside them drops by at most 10 %; BENCHMARKS.md has the
//! script that runs `actormq bench consume` beside it):
//!
//! ```sh
//! cargo run --release -p actormq-examples --example bench_retry -- 127.0.0.1:9876 TOPIC 10000 12
//! ```
//!
//! Arguments: name server, topic (with a backlog to fail), failing
//! deliveries per second (default 10 000), seconds (default 10). The
//! group `bench-retry` consumes the topic from its first message; its
//! listener fails everything (`ConsumeResult::Later`), taking deliveries
//! no faster than the rate: each goes back to the broker
//! (`CONSUMER_SEND_MSG_BACK`) and returns through `%RETRY%bench-retry`
//! after its delay level (give the node short levels, e.g.
//! `message_delay_level = "1s 1s 1s ..."`). Prints one JSON line:
//! deliveries per second over the run, first deliveries and redeliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actormq_sdk::consumer::{
    ConsumeFrom, ConsumeResult, PushConsumerBuilder, PushConsumerConfig, StoredView,
};

#[actix_rt::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(namesrv), Some(topic)) = (args.first(), args.get(1)) else {
        return Err("usage: bench_retry NAMESRV TOPIC [RATE] [SECONDS]".into());
    };
    let rate: u64 = args.get(2).map_or(Ok(10_000), |a| a.parse())?;
    let seconds: u64 = args.get(3).map_or(Ok(10), |a| a.parse())?;
    let first = Arc::new(AtomicU64::new(0));
    let again = Arc::new(AtomicU64::new(0));
    // Delivery i is taken no earlier than i / rate s after the start.
    let taken = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let listener = {
        let (first, again, taken) = (first.clone(), again.clone(), taken.clone());
        move |msgs: &[StoredView]| {
            let i = taken.fetch_add(msgs.len() as u64, Ordering::Relaxed);
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(1) as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            for m in msgs {
                if m.reconsume_times() == 0 {
                    first.fetch_add(1, Ordering::Relaxed);
                } else {
                    again.fetch_add(1, Ordering::Relaxed);
                }
            }
            ConsumeResult::Later
        }
    };
    let consumer = PushConsumerBuilder::from_config(PushConsumerConfig {
        group: "bench-retry".into(),
        namesrv: vec![namesrv.clone()],
        consume_from: ConsumeFrom::First,
        workers: 4,
        pull_batch_size: 32,
        consume_batch_size: 8,
        ..PushConsumerConfig::default()
    })
    .subscribe(topic, "*")
    .view_listener(listener)
    .start()
    .await?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (f, a) = (first.load(Ordering::Relaxed), again.load(Ordering::Relaxed));
    consumer.shutdown().await;
    println!(
        "{{\"seconds\":{elapsed:.2},\"failed_per_sec\":{:.0},\"first_deliveries\":{f},\"redeliveries\":{a}}}",
        (f + a) as f64 / elapsed
    );
    Ok(())
}

//! The simple (pop) consumer: a worker receives a batch of jobs, each
//! invisible to the group's other workers for 2 s; it acks the jobs it
//! finished, asks for more time on a slow one, and crashes on one, which
//! comes back after its invisible time with its reconsume times one
//! higher. The book's "Simple consumer" chapter includes this file.

use std::time::{Duration, Instant};

use actormq_sdk::ProducerBuilder;
use actormq_sdk::consumer::{Received, SimpleConsumer};
use actormq_sdk::protocol::Message;

use crate::wait::body_text;

/// What the scenario saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleReport {
    /// Jobs done (acked), in order: (body, reconsume times).
    pub done: Vec<(String, u32)>,
    /// Whether an ack with a receipt replaced by a change was refused.
    pub stale_refused: bool,
}

/// Receives until `n` messages came, within `within`.
async fn receive_n(
    consumer: &SimpleConsumer,
    n: usize,
    invisible: Duration,
    within: Duration,
) -> Result<Vec<Received>, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && start.elapsed() < within {
        out.extend(consumer.receive(32, invisible).await?);
    }
    Ok(out)
}

/// Runs the scenario.
pub async fn run() -> Result<SimpleReport, Box<dyn std::error::Error>> {
    let example = crate::node::start(Vec::new()).await?;
    let namesrv = example.namesrv()?;
    let producer = ProducerBuilder::new("scheduler")
        .namesrv([namesrv.clone()])
        .build()
        .await?;
    for job in ["resize photo-1", "resize photo-2", "transcode video-1"] {
        producer.send(Message::new("jobs", job)).await?;
    }
    let mut report = SimpleReport::default();

    // ANCHOR: receive
    let consumer = SimpleConsumer::new("workers", &namesrv, "jobs", slog_discard())?
        .with_await_duration(Duration::from_secs(1));
    let invisible = Duration::from_secs(2);
    let jobs = receive_n(&consumer, 3, invisible, Duration::from_secs(20)).await?;
    for job in &jobs {
        match body_text(&job.message).as_str() {
            // Slow: ask for 10 s more; the new receipt replaces the old.
            "transcode video-1" => {
                let longer = consumer
                    .change_invisible_duration(&job.receipt, Duration::from_secs(10))
                    .await?;
                // The old receipt is void now.
                report.stale_refused = consumer.ack(&job.receipt).await.is_err();
                consumer.ack(&longer).await?;
                report
                    .done
                    .push((body_text(&job.message), job.message.reconsume_times));
            }
            // The worker "crashes" on this one: no ack, it comes back.
            "resize photo-2" if job.message.reconsume_times == 0 => {}
            _ => {
                consumer.ack(&job.receipt).await?;
                report
                    .done
                    .push((body_text(&job.message), job.message.reconsume_times));
            }
        }
    }
    // ANCHOR_END: receive

    // ANCHOR: redelivery
    // After its 2 s, the unacked job is delivered again (to any worker of
    // the group), its reconsume times one higher.
    for job in receive_n(&consumer, 1, invisible, Duration::from_secs(20)).await? {
        consumer.ack(&job.receipt).await?;
        report
            .done
            .push((body_text(&job.message), job.message.reconsume_times));
    }
    // ANCHOR_END: redelivery
    consumer.shutdown();
    producer.shutdown().await;
    example.node.shutdown().await;
    Ok(report)
}

fn slog_discard() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

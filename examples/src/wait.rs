//! Waiting for deliveries without sleeping: a push consumer's listener
//! sends what it gets on a channel, and the scenario receives from it with
//! a deadline.

use std::time::Duration;

use actix_rt::time::{Instant, timeout};
use tokio::sync::mpsc::UnboundedReceiver;

/// Receives until `n` items arrived or `within` passed (or every sender is
/// gone), and returns what arrived. The caller checks the count.
pub async fn recv_n<T>(rx: &mut UnboundedReceiver<T>, n: usize, within: Duration) -> Vec<T> {
    let deadline = Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some(item)) => got.push(item),
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Everything already in `rx`. Called after a consumer's shutdown (which
/// returns once its listener calls are done), so that a message delivered
/// twice shows up in the count: no delivery can come after that event.
pub fn rest<T>(rx: &mut UnboundedReceiver<T>) -> Vec<T> {
    let mut got = Vec::new();
    while let Ok(item) = rx.try_recv() {
        got.push(item);
    }
    got
}

/// The UTF-8 text of a message body (lossy).
pub fn body_text(m: &actormq_sdk::protocol::StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into_owned()
}

/// Waits (at most 20 s) until `consumer`'s group has consumed every queue
/// of `topic` to its end: asks it to commit and compares the committed
/// offsets with the queue ends. For filtered subscriptions, whose skipped
/// messages have no delivery to wait for. Returns whether it caught up.
pub async fn caught_up(
    consumer: &actormq_sdk::consumer::PushConsumer,
    namesrv: &str,
    group: &str,
    topic: &str,
) -> Result<bool, Box<dyn std::error::Error>> {
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let probe = actormq_sdk::consumer::PullConsumer::new(group, namesrv, log)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tick = actix_rt::time::interval(Duration::from_millis(100));
    while Instant::now() < deadline {
        tick.tick().await;
        consumer.commit_now().await;
        let mut all = true;
        for mq in probe.fetch_queues(topic).await? {
            let end = probe.max_offset(&mq).await?;
            all &= probe.committed(&mq).await? == Some(end);
        }
        if all {
            return Ok(true);
        }
    }
    Ok(false)
}

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

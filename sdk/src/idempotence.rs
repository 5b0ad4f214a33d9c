//! The idempotent producer's client half ([`ProducerConfig::idempotent`]).
//!
//! An idempotent [`Producer`] has a **producer id** ([`new_producer_id`]:
//! 128 random bits as 32 hex digits, made when the producer starts, stable
//! for its life) and a **sequence counter per (broker, topic, queue)**
//! ([`Sequencer`]). A send is given its queue and the next sequence of that
//! queue once, at its first try; every retry of it (after a timeout, a lost
//! connection, a broker error) goes to the **same** queue with the **same**
//! sequence, so the broker recognises a retry whose original was stored
//! and answers it with the original result instead of storing the message
//! twice (see the broker's `dedup` module). A batch is one send: one
//! sequence for the whole batch.
//!
//! Because a reply that is lost must not eat the whole send timeout, each
//! try of an idempotent send waits at most its share of it
//! ([`attempt_deadline`]: `send_timeout / (retries + 1)`), then retries.
//! Oneway sends are never retried and carry no sequence.
//!
//! A sequence below the broker's window (64 sends per queue by default)
//! is refused with `SEQUENCE_OUT_OF_WINDOW` and not retried: that needs a
//! send retried after more than 64 later sends to its queue succeeded.
//!
//! [`ProducerConfig::idempotent`]: crate::producer::ProducerConfig::idempotent
//! [`Producer`]: crate::producer::Producer

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fresh producer id: 32 lowercase hex digits (128 bits from the
/// process's randomly seeded hasher, the clock, the process id and a
/// counter).
pub fn new_producer_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut id = String::with_capacity(32);
    for half in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(n);
        h.write_u64(half);
        id.push_str(&format!("{:016x}", h.finish()));
    }
    id
}

/// The next sequence number of each (broker, topic, queue). Plain data.
#[derive(Debug, Default)]
pub struct Sequencer {
    next: HashMap<(String, String, u32), u64>,
}

impl Sequencer {
    /// Takes the next sequence of `broker`/`topic`/`queue_id` (0 first).
    pub fn next(&mut self, broker: &str, topic: &str, queue_id: u32) -> u64 {
        let key = (broker.to_owned(), topic.to_owned(), queue_id);
        let slot = self.next.entry(key).or_insert(0);
        let seq = *slot;
        *slot += 1;
        seq
    }
}

/// When one try of an idempotent send gives up waiting: its share of the
/// send timeout (`send_timeout / attempts`, at least 1 ms) from `now`,
/// never past the send's `deadline`.
pub fn attempt_deadline(
    deadline: Instant,
    now: Instant,
    send_timeout: Duration,
    attempts: u32,
) -> Instant {
    let share = (send_timeout / attempts.max(1)).max(Duration::from_millis(1));
    deadline.min(now + share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_hex_and_distinct() {
        let a = new_producer_id();
        let b = new_producer_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn sequences_count_per_broker_topic_and_queue() {
        let mut s = Sequencer::default();
        assert_eq!(s.next("b", "t", 0), 0);
        assert_eq!(s.next("b", "t", 0), 1);
        assert_eq!(s.next("b", "t", 1), 0);
        assert_eq!(s.next("b", "u", 0), 0);
        assert_eq!(s.next("c", "t", 0), 0);
        assert_eq!(s.next("b", "t", 0), 2);
    }

    #[test]
    fn each_try_gets_its_share_of_the_timeout() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(3);
        let t = Duration::from_secs(3);
        assert_eq!(
            attempt_deadline(deadline, now, t, 3),
            now + Duration::from_secs(1)
        );
        // Never past the send's deadline.
        let late = now + Duration::from_millis(2500);
        assert_eq!(attempt_deadline(deadline, late, t, 3), deadline);
        assert_eq!(attempt_deadline(deadline, now, t, 0), deadline);
    }
}

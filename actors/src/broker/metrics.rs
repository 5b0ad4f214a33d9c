//! `BrokerMetrics`: the broker's traffic counters, updated where the
//! traffic is (the commit-log writer, the pull holder) and read by the
//! node's `/metrics` and `/api/stats` (crate `actormq-http`).
//!
//! Cost on the hot path: the writer updates them once per append round
//! (one family look-up per topic of the round, one histogram observation
//! per request when its reply goes out); a pull once per answer that
//! carries messages. The counters are `prometheus-client` atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set `{topic}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic.
    pub topic: String,
}

/// Label set `{topic, group}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TopicGroupLabel {
    /// Topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
}

/// Upper bounds of the put-latency buckets, seconds (100 µs .. 5 s).
pub const PUT_LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A writer's per-topic counter handles (see
/// [`BrokerMetrics::stored_cached`]).
#[derive(Debug, Default)]
pub struct StoredCounters {
    by_topic: std::collections::HashMap<String, (Counter, Counter)>,
}

/// The broker's traffic counters. See the module docs.
#[derive(Debug)]
pub struct BrokerMetrics {
    messages_in: Family<TopicLabel, Counter>,
    bytes_in: Family<TopicLabel, Counter>,
    messages_out: Family<TopicGroupLabel, Counter>,
    put_latency: Histogram,
    in_total: AtomicU64,
    out_total: AtomicU64,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self {
            messages_in: Family::default(),
            bytes_in: Family::default(),
            messages_out: Family::default(),
            put_latency: Histogram::new(PUT_LATENCY_BUCKETS),
            in_total: AtomicU64::new(0),
            out_total: AtomicU64::new(0),
        }
    }
}

impl BrokerMetrics {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the counters to `registry` (names as `/metrics` shows them,
    /// without the `_total` the encoder appends to counters).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "actormq_messages_in",
            "Messages stored, by topic",
            self.messages_in.clone(),
        );
        registry.register(
            "actormq_bytes_in",
            "Bytes of message bodies and properties stored, by topic",
            self.bytes_in.clone(),
        );
        registry.register(
            "actormq_messages_out",
            "Messages delivered to consumers (pulled), by topic and group",
            self.messages_out.clone(),
        );
        registry.register(
            "actormq_put_latency_seconds",
            "Time from a send's arrival to its reply (stored, flushed and replicated as configured)",
            self.put_latency.clone(),
        );
    }

    /// [`stored`](Self::stored) through a writer's `cache` of counter
    /// handles: no label allocation or family look-up once a topic was
    /// seen.
    pub fn stored_cached(
        &self,
        cache: &mut StoredCounters,
        topic: &str,
        messages: u64,
        bytes: u64,
    ) {
        let (m, b) = match cache.by_topic.get(topic) {
            Some(h) => h,
            None => {
                let label = TopicLabel {
                    topic: topic.to_owned(),
                };
                let h = (
                    self.messages_in.get_or_create(&label).clone(),
                    self.bytes_in.get_or_create(&label).clone(),
                );
                cache.by_topic.entry(topic.to_owned()).or_insert(h)
            }
        };
        m.inc_by(messages);
        b.inc_by(bytes);
        self.in_total.fetch_add(messages, Ordering::Relaxed);
    }

    /// `messages` messages of `bytes` bytes were stored on `topic`.
    pub fn stored(&self, topic: &str, messages: u64, bytes: u64) {
        let label = TopicLabel {
            topic: topic.to_owned(),
        };
        self.messages_in.get_or_create(&label).inc_by(messages);
        self.bytes_in.get_or_create(&label).inc_by(bytes);
        self.in_total.fetch_add(messages, Ordering::Relaxed);
    }

    /// `messages` messages of `topic` were delivered to `group`.
    pub fn delivered(&self, topic: &str, group: &str, messages: u64) {
        self.messages_out
            .get_or_create(&TopicGroupLabel {
                topic: topic.to_owned(),
                group: group.to_owned(),
            })
            .inc_by(messages);
        self.out_total.fetch_add(messages, Ordering::Relaxed);
    }

    /// A send was answered `seconds` after it arrived.
    pub fn put_latency(&self, seconds: f64) {
        self.put_latency.observe(seconds);
    }

    /// Messages stored since the start (every topic).
    pub fn messages_in_total(&self) -> u64 {
        self.in_total.load(Ordering::Relaxed)
    }

    /// Messages delivered since the start (every topic and group).
    pub fn messages_out_total(&self) -> u64 {
        self.out_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_in_the_encoding() {
        let m = BrokerMetrics::new();
        m.stored("t", 3, 30);
        let mut cache = StoredCounters::default();
        m.stored_cached(&mut cache, "t", 2, 20);
        m.delivered("t", "g", 4);
        m.put_latency(0.0003);
        let mut r = Registry::default();
        m.register(&mut r);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(
            text.contains("actormq_messages_in_total{topic=\"t\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("actormq_bytes_in_total{topic=\"t\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("actormq_messages_out_total{topic=\"t\",group=\"g\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("actormq_put_latency_seconds_count 1"),
            "{text}"
        );
        assert_eq!((m.messages_in_total(), m.messages_out_total()), (5, 4));
    }
}

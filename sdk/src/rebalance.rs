//! Queue allocation strategies for clustering consumers.
//!
//! Every instance of a consumer group computes its own share of a topic's
//! queues from the same inputs: all queues and all client ids of the group,
//! both **sorted**. A strategy is a pure function of those inputs, so the
//! shares of all instances are disjoint and together cover every queue
//! (the property tests below check this for the shipped strategies).
//!
//! - [`AllocateAveragely`] (the default): RocketMQ's
//!   `AllocateMessageQueueAveragely`, contiguous runs of queues, the first
//!   `queues % clients` clients get one more.
//! - [`AllocateAveragelyByCircle`]: client `i` gets queues `i`, `i + n`,
//!   `i + 2n`, ...
//! - [`AllocateConsistentHash`]: a hash ring with virtual nodes; a client
//!   joining or leaving moves only the queues near its points.
//!
//! A user strategy implements [`AllocateStrategy`].

use std::collections::BTreeMap;

use actormq_protocol::MessageQueue;

/// Decides which queues of a topic `current_client` consumes.
///
/// `all_queues` and `all_clients` are sorted and the same for every
/// instance of the group; the result must be such that every queue goes to
/// exactly one client when each client computes its own share.
pub trait AllocateStrategy: Send + Sync + std::fmt::Debug {
    /// The queues `current_client` consumes. Empty when `current_client` is
    /// not in `all_clients` (it has not been seen by the broker yet).
    fn allocate(
        &self,
        group: &str,
        current_client: &str,
        all_queues: &[MessageQueue],
        all_clients: &[String],
    ) -> Vec<MessageQueue>;

    /// The strategy's name (for logs).
    fn name(&self) -> &'static str;
}

fn index_of(current: &str, clients: &[String]) -> Option<usize> {
    clients.iter().position(|c| c == current)
}

/// RocketMQ's `AllocateMessageQueueAveragely`: with `q` queues and `c`
/// clients, client `i` gets a contiguous run of `q / c` queues, one more
/// for the first `q % c` clients; with fewer queues than clients, the
/// first `q` clients get one each.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocateAveragely;

impl AllocateStrategy for AllocateAveragely {
    fn allocate(
        &self,
        _group: &str,
        current_client: &str,
        all_queues: &[MessageQueue],
        all_clients: &[String],
    ) -> Vec<MessageQueue> {
        let Some(index) = index_of(current_client, all_clients) else {
            return Vec::new();
        };
        if all_queues.is_empty() {
            return Vec::new();
        }
        let (q, c) = (all_queues.len(), all_clients.len());
        let modulo = q % c;
        let average = if q <= c {
            1
        } else if modulo > 0 && index < modulo {
            q / c + 1
        } else {
            q / c
        };
        let start = if modulo > 0 && index < modulo {
            index * average
        } else {
            index * average + modulo
        };
        let range = average.min(q.saturating_sub(start));
        (0..range)
            .map(|i| all_queues[(start + i) % q].clone())
            .collect()
    }

    fn name(&self) -> &'static str {
        "AVG"
    }
}

/// RocketMQ's `AllocateMessageQueueAveragelyByCircle`: client `i` of `c`
/// gets queues `i`, `i + c`, `i + 2c`, ...
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocateAveragelyByCircle;

impl AllocateStrategy for AllocateAveragelyByCircle {
    fn allocate(
        &self,
        _group: &str,
        current_client: &str,
        all_queues: &[MessageQueue],
        all_clients: &[String],
    ) -> Vec<MessageQueue> {
        let Some(index) = index_of(current_client, all_clients) else {
            return Vec::new();
        };
        all_queues
            .iter()
            .skip(index)
            .step_by(all_clients.len())
            .cloned()
            .collect()
    }

    fn name(&self) -> &'static str {
        "AVG_BY_CIRCLE"
    }
}

/// Consistent hashing: each client has `virtual_nodes` points on a 64-bit
/// ring (FNV-1a of `client#n`); a queue goes to the first point at or after
/// its own hash (FNV-1a of `topic@broker@queue`), wrapping around.
#[derive(Debug, Clone, Copy)]
pub struct AllocateConsistentHash {
    /// Points per client on the ring. Default 10 (as RocketMQ).
    pub virtual_nodes: usize,
}

impl Default for AllocateConsistentHash {
    fn default() -> Self {
        AllocateConsistentHash { virtual_nodes: 10 }
    }
}

/// FNV-1a, 64 bits: stable across processes and versions.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl AllocateStrategy for AllocateConsistentHash {
    fn allocate(
        &self,
        _group: &str,
        current_client: &str,
        all_queues: &[MessageQueue],
        all_clients: &[String],
    ) -> Vec<MessageQueue> {
        if index_of(current_client, all_clients).is_none() {
            return Vec::new();
        }
        let mut ring: BTreeMap<u64, &str> = BTreeMap::new();
        for client in all_clients {
            for n in 0..self.virtual_nodes.max(1) {
                // On a (very unlikely) collision, the smaller id keeps the point,
                // so every instance builds the same ring.
                let point = fnv1a(format!("{client}#{n}").as_bytes());
                ring.entry(point)
                    .and_modify(|c| {
                        if client.as_str() < *c {
                            *c = client.as_str();
                        }
                    })
                    .or_insert(client.as_str());
            }
        }
        all_queues
            .iter()
            .filter(|mq| {
                let key = format!("{}@{}@{}", mq.topic, mq.broker_name, mq.queue_id);
                let h = fnv1a(key.as_bytes());
                let owner = ring
                    .range(h..)
                    .next()
                    .or_else(|| ring.iter().next())
                    .map(|(_, c)| *c);
                owner == Some(current_client)
            })
            .cloned()
            .collect()
    }

    fn name(&self) -> &'static str {
        "CONSISTENT_HASH"
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn queues(brokers: usize, per_broker: u32) -> Vec<MessageQueue> {
        let mut v: Vec<MessageQueue> = (0..brokers)
            .flat_map(|b| {
                (0..per_broker).map(move |q| MessageQueue {
                    topic: "T".into(),
                    broker_name: format!("broker-{b}"),
                    queue_id: q,
                })
            })
            .collect();
        v.sort();
        v
    }

    fn clients(n: usize) -> Vec<String> {
        let mut v: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}@{i}")).collect();
        v.sort();
        v
    }

    fn ids(v: &[MessageQueue]) -> Vec<u32> {
        v.iter().map(|q| q.queue_id).collect()
    }

    #[test]
    fn averagely_matches_rocketmq() {
        let q = queues(1, 8);
        let c = clients(3);
        let s = AllocateAveragely;
        assert_eq!(ids(&s.allocate("g", &c[0], &q, &c)), vec![0, 1, 2]);
        assert_eq!(ids(&s.allocate("g", &c[1], &q, &c)), vec![3, 4, 5]);
        assert_eq!(ids(&s.allocate("g", &c[2], &q, &c)), vec![6, 7]);
        // Fewer queues than clients: the first ones get one each.
        let q2 = queues(1, 2);
        assert_eq!(ids(&s.allocate("g", &c[0], &q2, &c)), vec![0]);
        assert_eq!(ids(&s.allocate("g", &c[1], &q2, &c)), vec![1]);
        assert!(s.allocate("g", &c[2], &q2, &c).is_empty());
        // Unknown client: nothing.
        assert!(s.allocate("g", "nobody", &q, &c).is_empty());
    }

    #[test]
    fn by_circle_strides() {
        let q = queues(1, 8);
        let c = clients(3);
        let s = AllocateAveragelyByCircle;
        assert_eq!(ids(&s.allocate("g", &c[0], &q, &c)), vec![0, 3, 6]);
        assert_eq!(ids(&s.allocate("g", &c[1], &q, &c)), vec![1, 4, 7]);
        assert_eq!(ids(&s.allocate("g", &c[2], &q, &c)), vec![2, 5]);
    }

    #[test]
    fn consistent_hash_moves_little_on_join() {
        let q = queues(2, 16);
        let s = AllocateConsistentHash::default();
        let before = clients(3);
        let after = clients(4);
        let mut moved = 0;
        for c in &before {
            let a = s.allocate("g", c, &q, &before);
            let b = s.allocate("g", c, &q, &after);
            moved += a.iter().filter(|mq| !b.contains(mq)).count();
        }
        // Only queues taken over by the newcomer move.
        let newcomer = s.allocate("g", &after[3], &q, &after).len();
        assert_eq!(moved, newcomer);
    }

    fn check_partition(s: &dyn AllocateStrategy, q: &[MessageQueue], c: &[String]) {
        let mut seen: BTreeMap<MessageQueue, usize> = BTreeMap::new();
        for client in c {
            for mq in s.allocate("g", client, q, c) {
                *seen.entry(mq).or_default() += 1;
            }
        }
        assert_eq!(seen.len(), q.len(), "{}: every queue assigned", s.name());
        assert!(
            seen.values().all(|n| *n == 1),
            "{}: each queue to exactly one client",
            s.name()
        );
    }

    proptest! {
        #[test]
        fn every_queue_exactly_once(brokers in 1usize..4, per in 0u32..20, n in 1usize..12) {
            let q = queues(brokers, per);
            let c = clients(n);
            check_partition(&AllocateAveragely, &q, &c);
            check_partition(&AllocateAveragelyByCircle, &q, &c);
            check_partition(&AllocateConsistentHash::default(), &q, &c);
        }

        #[test]
        fn averagely_is_balanced(per in 1u32..40, n in 1usize..12) {
            let q = queues(1, per);
            let c = clients(n);
            let sizes: Vec<usize> = c.iter().map(|x| AllocateAveragely.allocate("g", x, &q, &c).len()).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            prop_assert!(max - min <= 1);
        }
    }
}

//! Shared helpers.

use std::path::Path;

use actormq_store::{AppendMessage, Store, StoreConfig};

/// A small-segment config rooted at `dir`.
pub fn cfg(dir: &Path, seg: u64) -> StoreConfig {
    StoreConfig::small(dir, seg)
}

/// A message with default metadata.
pub fn msg<'a>(topic: &'a str, queue_id: u32, body: &'a [u8]) -> AppendMessage<'a> {
    AppendMessage {
        topic,
        queue_id,
        body,
        ..Default::default()
    }
}

/// Deterministic body for (seed, len).
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Checks that every consume queue unit points at a whole record with the
/// right topic, queue and queue offset, and that the log and the queues hold
/// the same number of records.
pub fn check_queues_match_log(store: &Store) {
    let mut units = 0u64;
    for (topic, qids) in store.queues() {
        for q in qids {
            let (min, max) = (store.min_offset(&topic, q), store.max_offset(&topic, q));
            for off in min..max {
                let m = store
                    .read_by_queue_offset(&topic, q, off)
                    .unwrap_or_else(|| panic!("{topic}/{q}@{off} unreadable"));
                assert!(m.verify_crc(), "bad CRC at {topic}/{q}@{off}");
                assert_eq!(
                    (m.topic(), m.queue_id(), m.queue_offset()),
                    (topic.as_str(), q, off)
                );
                units += 1;
            }
        }
    }
    let mut from = store.commit_log_min_offset();
    let mut records = 0u64;
    loop {
        let (v, next) = store.scan_log(from, 1000);
        for m in &v {
            assert!(
                m.verify_crc(),
                "bad CRC in log at {}",
                m.commit_log_offset()
            );
        }
        records += v.len() as u64;
        from = next;
        if v.is_empty() {
            break;
        }
    }
    assert_eq!(
        from,
        store.commit_log_max_offset(),
        "log scan stopped early"
    );
    assert_eq!(records, units, "log records vs consume queue units");
}

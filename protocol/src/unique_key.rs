//! Time-ordered unique keys, stamped by producers before sending (stored in
//! the `UNIQ_KEY` property and indexed, so a message can be found even when
//! a retry stored it twice).
//!
//! A key is 26 uppercase hex chars:
//!
//! ```text
//! logical ms (12 hex = 48 bits) | node id (8 hex = 32 bits) | counter (6 hex = 20 bits used)
//! ```
//!
//! The generator keeps one `AtomicU64` holding `ms << 20 | counter`. Each
//! call takes `max(now_ms << 20, last + 1)` with a compare-and-swap, so keys
//! strictly increase within a generator even when the clock stalls or steps
//! back (the counter then runs on, carrying into the ms bits if it must).
//! Within one generator, lexicographic order of keys is generation order.
//! Different processes get different node ids (default: the process id).
//! Two generators with the same node id can repeat each other's keys, so a
//! process should share one: [`UniqueKeyGenerator::global`].

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const COUNTER_BITS: u32 = 20;

/// A lock-free, thread-safe unique key generator.
pub struct UniqueKeyGenerator {
    node_id: u32,
    last: AtomicU64,
    clock: fn() -> u64,
}

impl std::fmt::Debug for UniqueKeyGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueKeyGenerator")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// Milliseconds since the Unix epoch from the system clock (0 before 1970).
pub fn system_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl UniqueKeyGenerator {
    /// A generator with an explicit node id, on the system clock.
    pub fn new(node_id: u32) -> UniqueKeyGenerator {
        UniqueKeyGenerator::with_clock(node_id, system_time_ms)
    }

    /// A generator whose node id is this process's id.
    pub fn for_process() -> UniqueKeyGenerator {
        UniqueKeyGenerator::new(std::process::id())
    }

    /// The process-wide generator (node id = process id), created on first
    /// use. Keys from it never repeat within the process.
    pub fn global() -> &'static UniqueKeyGenerator {
        static GLOBAL: OnceLock<UniqueKeyGenerator> = OnceLock::new();
        GLOBAL.get_or_init(UniqueKeyGenerator::for_process)
    }

    /// A generator on a custom clock (ms since the epoch); for tests.
    pub fn with_clock(node_id: u32, clock: fn() -> u64) -> UniqueKeyGenerator {
        UniqueKeyGenerator {
            node_id,
            last: AtomicU64::new(0),
            clock,
        }
    }

    /// The node id in every key of this generator.
    pub fn node_id(&self) -> u32 {
        self.node_id
    }

    /// The next stamp (`logical ms << 20 | counter`), strictly greater than
    /// every earlier one of this generator.
    pub fn next_stamp(&self) -> u64 {
        self.next_stamps(1)
    }

    /// Reserves `n` consecutive stamps (one clock read, one
    /// compare-and-swap) and returns the first: the run is `first ..
    /// first + n`, every stamp strictly greater than every earlier one of
    /// this generator. `n = 0` reserves nothing (returns what the next
    /// stamp would be at best).
    pub fn next_stamps(&self, n: u64) -> u64 {
        let now = ((self.clock)() & ((1 << 44) - 1)) << COUNTER_BITS;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let first = now.max(last.wrapping_add(1));
            let end = first.wrapping_add(n.saturating_sub(1));
            if n == 0 {
                return first;
            }
            match self
                .last
                .compare_exchange_weak(last, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return first,
                Err(seen) => last = seen,
            }
        }
    }

    /// The next key.
    pub fn next_key(&self) -> String {
        format_key(self.next_stamp(), self.node_id)
    }
}

/// Formats a stamp and node id as a key (see the module docs).
pub fn format_key(stamp: u64, node_id: u32) -> String {
    KeyText::new(stamp, node_id).as_str().to_owned()
}

/// A key as its 26 ASCII bytes, formatted without allocating (same text
/// as [`format_key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyText([u8; 26]);

impl KeyText {
    /// The key of `stamp` and `node_id`.
    pub fn new(stamp: u64, node_id: u32) -> KeyText {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        fn put(dst: &mut [u8], v: u64) {
            let n = dst.len();
            for (i, d) in dst.iter_mut().enumerate() {
                *d = HEX[((v >> (4 * (n - 1 - i))) & 0xF) as usize];
            }
        }
        let mut buf = [0u8; 26];
        put(&mut buf[..12], stamp >> COUNTER_BITS);
        put(&mut buf[12..20], u64::from(node_id));
        put(&mut buf[20..], stamp & ((1 << COUNTER_BITS) - 1));
        KeyText(buf)
    }

    /// The key's text as bytes (ASCII hex digits).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for KeyText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The logical ms of a key made by [`format_key`], if it is one.
pub fn key_timestamp_ms(key: &str) -> Option<u64> {
    if key.len() != 26 {
        return None;
    }
    u64::from_str_radix(key.get(..12)?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn key_text_matches_format_key() {
        for (stamp, node) in [(0, 0), (u64::MAX, u32::MAX), (0x1234_5678_9ABC_DEF0, 42)] {
            let reference = format!(
                "{:012X}{:08X}{:06X}",
                stamp >> COUNTER_BITS,
                node,
                stamp & ((1 << COUNTER_BITS) - 1)
            );
            assert_eq!(KeyText::new(stamp, node).as_str(), reference);
            assert_eq!(KeyText::new(stamp, node).as_bytes(), reference.as_bytes());
            assert_eq!(format_key(stamp, node), reference);
        }
    }

    #[test]
    fn reserved_runs_do_not_overlap_single_stamps() {
        let g = UniqueKeyGenerator::with_clock(7, || 1_000);
        let a = g.next_stamp();
        let run = g.next_stamps(1000);
        assert!(run > a);
        let b = g.next_stamp();
        assert_eq!(b, run + 1000);
        assert_eq!(g.next_stamps(0), b + 1);
        assert_eq!(g.next_stamp(), b + 1);
    }

    #[test]
    fn ordered_and_unique_on_a_stalled_clock() {
        let g = UniqueKeyGenerator::with_clock(7, || 1_000);
        let keys: Vec<String> = (0..5000).map(|_| g.next_key()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(key_timestamp_ms(&keys[0]), Some(1_000));
        assert_eq!(&keys[0][12..20], "00000007");
    }

    #[test]
    fn clock_stepping_back_does_not_repeat() {
        use std::sync::atomic::AtomicU64 as A;
        static T: A = A::new(50_000);
        fn clock() -> u64 {
            // Goes 50000, 49999, 49998, ... : always backwards.
            T.fetch_sub(1, Ordering::Relaxed)
        }
        let g = UniqueKeyGenerator::with_clock(1, clock);
        let keys: Vec<String> = (0..1000).map(|_| g.next_key()).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn global_is_one_generator() {
        let a = UniqueKeyGenerator::global().next_key();
        let b = UniqueKeyGenerator::global().next_key();
        assert!(a < b);
        assert!(std::ptr::eq(
            UniqueKeyGenerator::global(),
            UniqueKeyGenerator::global()
        ));
        assert_eq!(UniqueKeyGenerator::global().node_id(), std::process::id());
    }

    #[test]
    fn threads_never_collide() {
        let g = Arc::new(UniqueKeyGenerator::new(3));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..10_000).map(|_| g.next_key()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for h in handles {
            let keys = h.join().unwrap();
            assert!(keys.windows(2).all(|w| w[0] < w[1]));
            for k in keys {
                assert!(all.insert(k));
            }
        }
        assert_eq!(all.len(), 40_000);
    }
}

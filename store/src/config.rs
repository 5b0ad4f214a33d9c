//! Store configuration.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::record;

/// How appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushMode {
    /// The flush thread flushes periodically; appends are acknowledged at once.
    #[default]
    Async,
    /// Group commit: callers wait on a [`crate::FlushTicket`] until their bytes are flushed.
    Sync,
}

/// How a freshly allocated segment is made ready before the appender needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefault {
    /// Nothing beyond creating and sizing the file.
    None,
    /// `posix_fallocate` the blocks, then fault pages in on the allocator
    /// thread (`madvise(MADV_POPULATE_WRITE)`) in chunks of
    /// [`crate::allocator::PREFAULT_CHUNK`], keeping at least one chunk
    /// ready ahead of the writer: the cost follows what is written instead
    /// of a whole segment at a time. Falls back to `Populate` on kernels
    /// without `MADV_POPULATE_WRITE` (before Linux 5.14).
    #[default]
    Ahead,
    /// `posix_fallocate` the blocks, map with `MAP_POPULATE` and `madvise(WILLNEED)`.
    Populate,
    /// As `Populate`, then write one zero byte per page (RocketMQ's "warm mapped file").
    Touch,
}

/// Configuration of a [`crate::Store`]. Every field documents its default.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Root directory (holds `commitlog/`, `consumequeue/`, `index/`, `checkpoint`, `abort`).
    /// Default: `./store`.
    pub root: PathBuf,
    /// Commit log segment size in bytes. Default: 1 GiB. Minimum 4 KiB.
    pub segment_size: u64,
    /// Consume queue units (20 bytes each) per file. Default: 300 000.
    pub cq_units_per_file: u64,
    /// Maximum encoded record size in bytes. Default: 4 MiB + 64 KiB of headroom
    /// for topic and properties (bodies up to 4 MiB fit). Must be at most
    /// `segment_size - 8`.
    pub max_message_size: usize,
    /// Async (default) or sync group-commit flush.
    pub flush_mode: FlushMode,
    /// Async flush period in milliseconds. Default: 500.
    pub flush_interval_ms: u64,
    /// Async flush happens at a tick only if at least this many pages are dirty. Default: 4.
    pub flush_least_pages: u64,
    /// Async flush flushes everything at a tick if the last flush is older than this. Default: 10 000 ms.
    pub flush_thorough_interval_ms: u64,
    /// Sync flush waiter timeout in milliseconds. Default: 5000.
    pub sync_flush_timeout_ms: u64,
    /// Period of the consume-queue/index flush and checkpoint write, in milliseconds. Default: 1000.
    pub checkpoint_interval_ms: u64,
    /// Segment pre-faulting strategy. Default: [`Prefault::Ahead`].
    pub prefault: Prefault,
    /// Retention: keep segments this many hours after their last store time. Default: 72.
    pub file_reserved_hours: u64,
    /// Retention: hour of the day (UTC, 0-23) at which expired segments are deleted. Default: 4.
    pub delete_hour: u8,
    /// Retention: disk usage ratio above which expired segments are deleted at any hour. Default: 0.75.
    pub disk_warn_ratio: f64,
    /// Retention: disk usage ratio above which the oldest segments are deleted even if not expired. Default: 0.85.
    pub disk_force_ratio: f64,
    /// Retention: maximum segments deleted per `clean_expired` call. Default: 10.
    pub max_deletes_per_pass: usize,
    /// Index: hash slots per index file. Default: 5 000 000.
    pub index_slots: u32,
    /// Index: entries per index file. Default: 20 000 000.
    pub index_max_entries: u32,
    /// Whether to maintain the key index. Default: true.
    pub index_enabled: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            root: PathBuf::from("store"),
            segment_size: 1 << 30,
            cq_units_per_file: 300_000,
            max_message_size: 4 * 1024 * 1024 + 64 * 1024,
            flush_mode: FlushMode::Async,
            flush_interval_ms: 500,
            flush_least_pages: 4,
            flush_thorough_interval_ms: 10_000,
            sync_flush_timeout_ms: 5000,
            checkpoint_interval_ms: 1000,
            prefault: Prefault::Ahead,
            file_reserved_hours: 72,
            delete_hour: 4,
            disk_warn_ratio: 0.75,
            disk_force_ratio: 0.85,
            max_deletes_per_pass: 10,
            index_slots: 5_000_000,
            index_max_entries: 20_000_000,
            index_enabled: true,
        }
    }
}

impl StoreConfig {
    /// A configuration rooted at `root` with all other fields at their defaults.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StoreConfig {
            root: root.into(),
            ..Default::default()
        }
    }

    /// A configuration for tests: small segments (`segment_size` bytes), small
    /// consume-queue files, small index, short intervals.
    pub fn small(root: impl Into<PathBuf>, segment_size: u64) -> Self {
        StoreConfig {
            root: root.into(),
            segment_size,
            cq_units_per_file: 64,
            max_message_size: (segment_size as usize)
                .saturating_sub(record::BLANK_MIN)
                .min(4 << 20),
            flush_interval_ms: 20,
            checkpoint_interval_ms: 50,
            index_slots: 1024,
            index_max_entries: 4096,
            ..Default::default()
        }
    }

    /// Checks the configuration for consistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.segment_size < 4096 {
            return bad("segment_size must be at least 4096");
        }
        if self.segment_size > u32::MAX as u64 * 4 {
            return bad("segment_size too large");
        }
        if self.max_message_size < record::HEADER_LEN + 1 {
            return bad("max_message_size too small");
        }
        if self.max_message_size as u64 + record::BLANK_MIN as u64 > self.segment_size {
            return bad("max_message_size must be at most segment_size - 8");
        }
        if self.max_message_size > u32::MAX as usize / 2 {
            return bad("max_message_size too large");
        }
        if self.cq_units_per_file == 0 || self.cq_units_per_file > (1 << 26) {
            return bad("cq_units_per_file must be in 1..=2^26");
        }
        if self.flush_interval_ms == 0 || self.checkpoint_interval_ms == 0 {
            return bad("intervals must be positive");
        }
        if self.delete_hour > 23 {
            return bad("delete_hour must be 0..=23");
        }
        if !(0.0..=1.0).contains(&self.disk_warn_ratio)
            || !(0.0..=1.0).contains(&self.disk_force_ratio)
            || self.disk_warn_ratio > self.disk_force_ratio
        {
            return bad("disk ratios must satisfy 0 <= warn <= force <= 1");
        }
        if self.index_slots == 0 || self.index_max_entries == 0 {
            return bad("index sizes must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        StoreConfig::default().validate().unwrap();
        StoreConfig::small("/tmp/x", 8192).validate().unwrap();
    }

    #[test]
    fn rejects_bad() {
        let mut c = StoreConfig::small("/tmp/x", 8192);
        c.max_message_size = 9000;
        assert!(c.validate().is_err());
        let c = StoreConfig {
            segment_size: 100,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = StoreConfig {
            disk_warn_ratio: 0.9,
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}

//! The dispatch step: follows the commit log and builds consume queues (and
//! the key index) from it.

use crate::index_file::KeyHasher;

/// Progress of one dispatch call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchProgress {
    /// Records dispatched by this call.
    pub dispatched: usize,
    /// Commit log offset the next dispatch starts from.
    pub next_offset: u64,
    /// Whether the dispatcher reached the end of the published log.
    pub caught_up: bool,
}

/// One record as the dispatch step saw it (borrowed from the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatched<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Queue id.
    pub queue_id: u32,
    /// Offset in its topic-queue.
    pub queue_offset: u64,
    /// Commit log offset of the record.
    pub commit_log_offset: u64,
    /// Record size.
    pub size: u32,
    /// Tag hash.
    pub tag_hash: i64,
    /// Store timestamp (ms).
    pub store_timestamp_ms: u64,
}

/// Dispatcher state (guarded by the store's dispatch mutex).
#[derive(Debug)]
pub(crate) struct Dispatcher {
    /// Next commit log offset to dispatch.
    pub(crate) reput: u64,
    /// The key index, if enabled.
    pub(crate) index: Option<crate::index_file::IndexService>,
}

impl Dispatcher {
    /// Indexes the record's keys (`KEYS`, space-separated, and `UNIQ_KEY`)
    /// as `topic#key`.
    pub(crate) fn index_record(
        &mut self,
        topic: &str,
        properties: &[u8],
        offset: u64,
        store_ms: u64,
    ) -> crate::error::Result<()> {
        let Some(index) = self.index.as_mut() else {
            return Ok(());
        };
        if properties.is_empty() {
            return Ok(());
        }
        // Keys are `topic#key`: the prefix is hashed once per record, each
        // key continues from it (no joined key is built). Only the two
        // indexed values are checked for UTF-8.
        let mut prefix = KeyHasher::default();
        prefix.update(topic);
        prefix.update("#");
        for (k, v) in crate::record::properties_iter_bytes(properties) {
            let is_keys = k == crate::record::PROPERTY_KEYS.as_bytes();
            if !is_keys && k != crate::record::PROPERTY_UNIQ_KEY.as_bytes() {
                continue;
            }
            let keys: &mut dyn Iterator<Item = &[u8]> = if is_keys {
                &mut v.split(|&b| b == b' ')
            } else {
                &mut std::iter::once(v)
            };
            for key in keys.filter(|k| !k.is_empty()) {
                let mut h = prefix;
                if !h.update_utf8(key) {
                    continue;
                }
                index
                    .put_hash(h.finish(), offset, store_ms)
                    .map_err(crate::store::index_err)?;
            }
        }
        Ok(())
    }
}

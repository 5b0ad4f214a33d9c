//! [`ProcessQueue`]: the messages of one queue pulled but not yet
//! consumed, the flow-control check, and the offset that is safe to
//! commit. A plain struct, tested without a runtime.

use std::collections::BTreeMap;

/// When to stop pulling a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowLimits {
    /// Cached messages at most. Default 1000.
    pub max_messages: usize,
    /// Cached body bytes at most. Default 100 MiB.
    pub max_bytes: usize,
    /// Span between the lowest and highest cached offsets at most.
    /// Default 2000.
    pub max_span: u64,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_messages: 1000,
            max_bytes: 100 * 1024 * 1024,
            max_span: 2000,
        }
    }
}

/// The in-flight messages of one queue (offset → body size).
#[derive(Debug, Clone, Default)]
pub struct ProcessQueue {
    cached: BTreeMap<u64, usize>,
    bytes: usize,
    /// Next offset to pull: everything below it was pulled (and either is
    /// cached or was consumed or filtered out).
    pulled_up_to: u64,
}

impl ProcessQueue {
    /// An empty queue whose consumption starts at `offset`.
    pub fn new(offset: u64) -> ProcessQueue {
        ProcessQueue {
            cached: BTreeMap::new(),
            bytes: 0,
            pulled_up_to: offset,
        }
    }

    /// Records a pull: `msgs` (offset, body size) are now cached and the
    /// next pull starts at `next_offset` (messages between that the filter
    /// dropped count as consumed).
    pub fn put(&mut self, msgs: impl IntoIterator<Item = (u64, usize)>, next_offset: u64) {
        for (offset, size) in msgs {
            if self.cached.insert(offset, size).is_none() {
                self.bytes += size;
            }
        }
        self.pulled_up_to = self.pulled_up_to.max(next_offset);
    }

    /// The queue's offset was corrected by the broker (it was outside the
    /// queue): continue at `offset`. Messages still cached keep their
    /// place; with none cached, the commit offset moves to `offset` even
    /// if that is lower.
    pub fn correct(&mut self, offset: u64) {
        if self.cached.is_empty() {
            self.pulled_up_to = offset;
        } else {
            self.pulled_up_to = self.pulled_up_to.max(offset);
        }
    }

    /// Where the next pull starts.
    pub fn pulled_up_to(&self) -> u64 {
        self.pulled_up_to
    }

    /// Records consumed messages; returns the offset now safe to commit.
    pub fn remove(&mut self, offsets: impl IntoIterator<Item = u64>) -> u64 {
        for offset in offsets {
            if let Some(size) = self.cached.remove(&offset) {
                self.bytes -= size;
            }
        }
        self.commit_offset()
    }

    /// The offset to commit: the lowest still cached, or the next to pull
    /// when nothing is cached. A message that is being retried ("later")
    /// stays cached, so the commit never passes it.
    pub fn commit_offset(&self) -> u64 {
        self.cached
            .keys()
            .next()
            .copied()
            .unwrap_or(self.pulled_up_to)
    }

    /// Cached messages.
    pub fn len(&self) -> usize {
        self.cached.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cached.is_empty()
    }

    /// Cached body bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether pulling must pause (flow control).
    pub fn should_pause(&self, limits: &FlowLimits) -> bool {
        let span = match (self.cached.keys().next(), self.cached.keys().next_back()) {
            (Some(lo), Some(hi)) => hi - lo,
            _ => 0,
        };
        self.cached.len() >= limits.max_messages
            || self.bytes >= limits.max_bytes
            || span > limits.max_span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_offset_never_passes_an_unconsumed_message() {
        let mut pq = ProcessQueue::new(10);
        assert_eq!(pq.commit_offset(), 10);
        pq.put([(10, 1), (11, 1), (13, 1)], 14); // 12 was filtered out
        assert_eq!(pq.commit_offset(), 10);
        assert_eq!(pq.remove([11]), 10);
        assert_eq!(pq.remove([10]), 13);
        assert_eq!(pq.remove([13]), 14);
        assert!(pq.is_empty());
        assert_eq!(pq.bytes(), 0);
        // A pull that finds only filtered messages still moves the offset.
        pq.put([], 20);
        assert_eq!(pq.commit_offset(), 20);
    }

    #[test]
    fn flow_control_pauses_on_count_bytes_and_span() {
        let limits = FlowLimits {
            max_messages: 3,
            max_bytes: 100,
            max_span: 50,
        };
        let mut pq = ProcessQueue::new(0);
        pq.put([(0, 10), (1, 10)], 2);
        assert!(!pq.should_pause(&limits));
        pq.put([(2, 10)], 3);
        assert!(pq.should_pause(&limits), "count");
        pq.remove([0, 1, 2]);
        pq.put([(3, 100)], 4);
        assert!(pq.should_pause(&limits), "bytes");
        pq.remove([3]);
        pq.put([(4, 1), (60, 1)], 61);
        assert!(pq.should_pause(&limits), "span");
        pq.remove([4]);
        assert!(!pq.should_pause(&limits));
        assert!(!pq.should_pause(&FlowLimits::default()));
    }

    #[test]
    fn correction_may_move_back_when_idle() {
        let mut pq = ProcessQueue::new(50);
        pq.correct(10);
        assert_eq!(pq.commit_offset(), 10);
        pq.put([(10, 1)], 11);
        pq.correct(5);
        assert_eq!(pq.commit_offset(), 10);
    }

    #[test]
    fn duplicate_put_counts_once() {
        let mut pq = ProcessQueue::new(0);
        pq.put([(0, 5)], 1);
        pq.put([(0, 5)], 1);
        assert_eq!((pq.len(), pq.bytes()), (1, 5));
    }
}

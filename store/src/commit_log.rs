//! The commit log: segments shared with readers, and the single writer.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;

use crate::allocator::{Allocator, PREFAULT_CHUNK, Segment, prefault_ahead_supported};
use crate::config::Prefault;
use crate::error::{Error, Result};
use crate::record::{self, AppendMessage, RecordHeader};
use crate::sync::{self, Arc, AtomicU64, Ordering, RwLock};

/// Result of appending one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset assigned in the message's topic-queue.
    pub queue_offset: u64,
    /// Commit log offset of the record.
    pub commit_log_offset: u64,
    /// Encoded record size.
    pub size: u32,
    /// Store timestamp (ms).
    pub store_timestamp_ms: u64,
}

/// The shared (reader-visible) part of the commit log.
#[derive(Debug)]
pub struct CommitLog {
    pub(crate) dir: PathBuf,
    pub(crate) seg_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    written: AtomicU64,
    flushed: AtomicU64,
}

/// Keeps a segment mapped while a `Bytes` view of it lives.
struct SegmentSlice {
    seg: Arc<Segment>,
    pos: usize,
    len: usize,
}

impl AsRef<[u8]> for SegmentSlice {
    fn as_ref(&self) -> &[u8] {
        self.seg.read(self.pos, self.len).unwrap_or(&[])
    }
}

/// A zero-copy `Bytes` over published bytes `[pos, pos + len)` of `seg`.
pub(crate) fn segment_bytes(seg: &Arc<Segment>, pos: usize, len: usize) -> Option<Bytes> {
    let b = Bytes::from_owner(SegmentSlice {
        seg: seg.clone(),
        pos,
        len,
    });
    (b.len() == len).then_some(b)
}

/// A stored message: a zero-copy view of its record in the mapped segment.
/// Holding it keeps the segment mapped. Construction validates the record's
/// framing (magic, sizes); fields are decoded on access.
#[derive(Clone)]
pub struct MessageView {
    record: Bytes,
    topic_end: u32,
    props_end: u32,
}

impl std::fmt::Debug for MessageView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageView")
            .field("header", &self.header())
            .finish()
    }
}

impl MessageView {
    pub(crate) fn new(record: Bytes) -> Option<MessageView> {
        let b = &record[..];
        if b.len() < record::HEADER_LEN
            || record::get_u32(b, 4) != record::MSG_MAGIC
            || record::get_u32(b, 0) as usize != b.len()
        {
            return None;
        }
        let topic_end = record::HEADER_LEN as u64 + u16::from_le_bytes([b[110], b[111]]) as u64;
        let props_end = topic_end + record::get_u32(b, 112) as u64;
        let end = props_end + record::get_u32(b, 116) as u64;
        if end != b.len() as u64 {
            return None;
        }
        Some(MessageView {
            topic_end: topic_end as u32,
            props_end: props_end as u32,
            record,
        })
    }
    /// The whole encoded record (for zero-copy network writes).
    pub fn record(&self) -> &Bytes {
        &self.record
    }
    /// The decoded fixed header.
    pub fn header(&self) -> RecordHeader {
        // Framing was validated in `new`, so this cannot fail.
        record::parse_header(&self.record).unwrap_or(RecordHeader {
            total_size: 0,
            crc: 0,
            queue_id: 0,
            queue_offset: 0,
            physical_offset: 0,
            flags: 0,
            reconsume_times: 0,
            prepared_tx_offset: 0,
            born_timestamp_ms: 0,
            store_timestamp_ms: 0,
            born_host: None,
            store_host: None,
            tag_hash: 0,
            topic_len: 0,
            properties_len: 0,
            body_len: 0,
        })
    }
    /// Topic.
    pub fn topic(&self) -> &str {
        std::str::from_utf8(&self.record[record::HEADER_LEN..self.topic_end as usize]).unwrap_or("")
    }
    /// Encoded properties.
    pub fn properties(&self) -> &[u8] {
        &self.record[self.topic_end as usize..self.props_end as usize]
    }
    /// One property.
    pub fn property(&self, key: &str) -> Option<&str> {
        record::property(self.properties(), key)
    }
    /// Body (zero-copy slice of the record).
    pub fn body(&self) -> Bytes {
        self.record.slice(self.props_end as usize..)
    }
    /// Body as a borrowed slice.
    pub fn body_slice(&self) -> &[u8] {
        &self.record[self.props_end as usize..]
    }
    /// Queue id.
    pub fn queue_id(&self) -> u32 {
        record::get_u32(&self.record, 12)
    }
    /// Queue offset.
    pub fn queue_offset(&self) -> u64 {
        record::get_u64(&self.record, 16)
    }
    /// Commit log offset.
    pub fn commit_log_offset(&self) -> u64 {
        record::get_u64(&self.record, 24)
    }
    /// Store timestamp (ms).
    pub fn store_timestamp_ms(&self) -> u64 {
        record::get_u64(&self.record, 56)
    }
    /// Tag hash.
    pub fn tag_hash(&self) -> i64 {
        record::get_u64(&self.record, 102) as i64
    }
    /// Record size.
    pub fn size(&self) -> u32 {
        self.record.len() as u32
    }
    /// Recomputes and checks the CRC.
    pub fn verify_crc(&self) -> bool {
        crc32fast::hash(&self.record[12..]) == record::get_u32(&self.record, 8)
    }
}

impl CommitLog {
    /// Builds the log from recovered segments; `end` is the recovered end offset.
    pub(crate) fn new(dir: PathBuf, seg_size: u64, segments: Vec<Arc<Segment>>, end: u64) -> Self {
        CommitLog {
            dir,
            seg_size,
            segments: RwLock::new(segments),
            written: AtomicU64::new(end),
            flushed: AtomicU64::new(end),
        }
    }

    /// End of published data (`Acquire`).
    pub fn max_offset(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// End of flushed data.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed.load(Ordering::Acquire)
    }

    /// Start of the oldest kept segment (or the end if there is none).
    pub fn min_offset(&self) -> u64 {
        let segs = sync::read(&self.segments);
        segs.first()
            .map(|s| s.start())
            .unwrap_or_else(|| self.max_offset())
    }

    /// The segment containing `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segs = sync::read(&self.segments);
        let first = segs.first()?.start();
        if offset < first {
            return None;
        }
        let i = ((offset - first) / self.seg_size) as usize;
        segs.get(i).filter(|s| offset < s.end()).cloned()
    }

    /// A snapshot of the segment list.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        sync::read(&self.segments).clone()
    }

    pub(crate) fn push_segment(&self, seg: Arc<Segment>) {
        sync::write(&self.segments).push(seg);
    }

    /// Removes the oldest `n` segments (retention); they are unmapped and
    /// deleted when their last reader lets go.
    pub(crate) fn remove_oldest(&self, n: usize) -> Vec<Arc<Segment>> {
        let mut segs = sync::write(&self.segments);
        let n = n.min(segs.len().saturating_sub(1));
        let removed: Vec<_> = segs.drain(..n).collect();
        for s in &removed {
            s.mark_removed();
        }
        removed
    }

    fn publish_end(&self, end: u64) {
        self.written.store(end, Ordering::Release);
    }

    /// Reads the record at `offset` (no CRC check). `None` if nothing
    /// published starts there.
    pub fn read(&self, offset: u64) -> Option<MessageView> {
        let seg = self.segment_for(offset)?;
        read_in(&seg, offset)
    }

    /// Flushes every segment up to the current end; returns the flushed offset.
    pub fn flush(&self) -> std::io::Result<u64> {
        let target = self.max_offset();
        let from = self.flushed_offset();
        if target > from {
            let dirty: Vec<Arc<Segment>> = {
                let segs = sync::read(&self.segments);
                let first = segs.first().map(|s| s.start()).unwrap_or(0);
                let i = (from.saturating_sub(first) / self.seg_size) as usize;
                segs.iter()
                    .skip(i)
                    .filter(|s| s.end() > from && s.start() < target)
                    .cloned()
                    .collect()
            };
            for seg in dirty {
                seg.flush()?;
            }
            self.flushed.fetch_max(target, Ordering::AcqRel);
        }
        Ok(self.flushed_offset())
    }
}

/// Reads the record at absolute `offset` inside `seg`.
pub(crate) fn read_in(seg: &Arc<Segment>, offset: u64) -> Option<MessageView> {
    let pos = offset.checked_sub(seg.start())? as usize;
    let head = seg.read(pos, record::HEADER_LEN)?;
    let h = record::parse_header(head)?;
    if h.physical_offset != offset {
        return None;
    }
    let bytes = segment_bytes(seg, pos, h.total_size as usize)?;
    MessageView::new(bytes)
}

/// Next queue offset per topic and queue.
#[derive(Debug, Default, Clone)]
pub struct QueueTable {
    map: HashMap<String, Vec<u64>>,
}

impl QueueTable {
    /// Next offset of (topic, queue).
    pub fn get(&self, topic: &str, queue: u32) -> u64 {
        self.map
            .get(topic)
            .and_then(|v| v.get(queue as usize))
            .copied()
            .unwrap_or(0)
    }
    /// Sets the next offset of (topic, queue).
    pub fn set(&mut self, topic: &str, queue: u32, next: u64) {
        let v = match self.map.get_mut(topic) {
            Some(v) => v,
            None => self.map.entry(topic.to_string()).or_default(),
        };
        if v.len() <= queue as usize {
            v.resize(queue as usize + 1, 0);
        }
        v[queue as usize] = next;
    }
}

/// The single writer of the commit log.
#[derive(Debug)]
pub struct Writer {
    log: Arc<CommitLog>,
    active: Option<Arc<Segment>>,
    pos: u64,
    pub(crate) table: QueueTable,
    alloc: Allocator,
    max_msg: usize,
    sizes: Vec<usize>,
    fresh: Vec<Segment>,
    /// With [`Prefault::Ahead`]: end (absolute offset) of what was asked
    /// to be faulted in of the active segment.
    prefaulted: u64,
}

impl Writer {
    /// A writer continuing at `log.max_offset()`; `active` is the segment
    /// containing that offset, if any.
    pub(crate) fn new(
        log: Arc<CommitLog>,
        active: Option<Arc<Segment>>,
        table: QueueTable,
        mut alloc: Allocator,
        max_msg: usize,
    ) -> Writer {
        let pos = log.max_offset();
        let next = match &active {
            Some(a) => a.end(),
            None => pos - pos % log.seg_size,
        };
        alloc.request(next);
        if active.is_none() {
            // Nothing to append into yet: have the first segment ready before
            // the store reports open, so the first append never waits for it.
            alloc.wait_ready(next);
        }
        let mut w = Writer {
            log,
            active,
            pos,
            table,
            alloc,
            max_msg,
            sizes: Vec::new(),
            fresh: Vec::new(),
            prefaulted: pos,
        };
        w.prefault_ahead();
        w
    }

    /// With [`Prefault::Ahead`]: keeps the active segment faulted in (by
    /// the allocator thread) at least one [`PREFAULT_CHUNK`] past the
    /// write position, a chunk at a time.
    fn prefault_ahead(&mut self) {
        if self.alloc.prefault() != Prefault::Ahead || !prefault_ahead_supported() {
            return;
        }
        let Some(a) = &self.active else {
            return;
        };
        self.prefaulted = self.prefaulted.max(self.pos);
        while self.prefaulted < a.end() && self.prefaulted < self.pos + PREFAULT_CHUNK as u64 {
            let from = self.prefaulted;
            let len = (PREFAULT_CHUNK as u64).min(a.end() - from);
            self.alloc
                .populate(a, (from - a.start()) as usize, len as usize);
            self.prefaulted = from + len;
        }
    }

    /// Next write offset.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Appends a batch; all or nothing (on error nothing is published and no
    /// queue offset is consumed). Results are pushed to `out`; returns the
    /// end offset of the batch.
    pub(crate) fn append(
        &mut self,
        msgs: &[AppendMessage<'_>],
        store_ms: u64,
        out: &mut Vec<Appended>,
    ) -> Result<u64> {
        let seg_size = self.log.seg_size;
        // Phase 1: validate and plan (which segments are needed).
        self.sizes.clear();
        let mut p = self.pos;
        let mut has_seg = self.active.is_some();
        let mut needed: Vec<u64> = Vec::new();
        for m in msgs {
            let size = record::validate(m, self.max_msg)?;
            self.sizes.push(size);
            let within = p % seg_size;
            if !has_seg {
                needed.push(p - within);
                has_seg = true;
            }
            if within + (size + record::BLANK_MIN) as u64 > seg_size {
                p = p - within + seg_size;
                needed.push(p);
            }
            p += size as u64;
        }
        // Acquire segments before writing anything: failure leaves no trace.
        self.fresh.clear();
        for start in needed {
            match self.alloc.take(start) {
                Ok(s) => self.fresh.push(s),
                Err(e) => {
                    for s in self.fresh.drain(..) {
                        s.mark_removed();
                    }
                    // No background retry: the next append creates the
                    // segment inline (and sees the error again if it persists).
                    return Err(e);
                }
            }
        }
        let rolled = !self.fresh.is_empty();
        let mut fresh = std::mem::take(&mut self.fresh).into_iter();
        // Phase 2: write.
        let sizes = std::mem::take(&mut self.sizes);
        // The previous message's (topic, queue) and its next offset: a batch
        // is usually one queue, so the queue table is looked up once per run.
        let mut run: Option<(&str, u32, u64)> = None;
        for (m, &size) in msgs.iter().zip(sizes.iter()) {
            let fits = matches!(&self.active,
                Some(a) if self.pos + (size + record::BLANK_MIN) as u64 <= a.end());
            if !fits {
                if let Some(a) = &self.active {
                    let within = (self.pos - a.start()) as usize;
                    let rest = a.capacity() - within;
                    // SAFETY: single writer; `within` is at/after the published position.
                    unsafe { a.write_at(within, &record::blank_header(rest)) };
                    a.publish(a.capacity());
                    a.set_last_store_ms(store_ms);
                    self.pos = a.end();
                }
                let Some(seg) = fresh.next() else {
                    return Err(Error::Io(std::io::Error::other("segment plan mismatch")));
                };
                let seg = Arc::new(seg);
                self.log.push_segment(seg.clone());
                // A new segment comes with its first chunk faulted in.
                self.prefaulted =
                    seg.start() + (PREFAULT_CHUNK as u64).min(seg.end() - seg.start());
                self.active = Some(seg);
            }
            let Some(active) = self.active.as_deref() else {
                return Err(Error::Io(std::io::Error::other("no active segment")));
            };
            let within = (self.pos - active.start()) as usize;
            let queue_offset = match run {
                Some((t, q, next)) if q == m.queue_id && t == m.topic => next,
                _ => {
                    if let Some((t, q, next)) = run {
                        self.table.set(t, q, next);
                    }
                    self.table.get(m.topic, m.queue_id)
                }
            };
            run = Some((m.topic, m.queue_id, queue_offset + 1));
            Self::encode(active, self.pos, within, size, m, queue_offset, store_ms);
            out.push(Appended {
                queue_offset,
                commit_log_offset: self.pos,
                size: size as u32,
                store_timestamp_ms: store_ms,
            });
            self.pos += size as u64;
        }
        if let Some((t, q, next)) = run {
            self.table.set(t, q, next);
        }
        self.sizes = sizes;
        if rolled {
            // Only now: every segment this batch needed was taken above, so
            // the background allocator never races an inline creation.
            if let Some(a) = &self.active {
                self.alloc.request(a.end());
            }
        }
        if let Some(a) = &self.active {
            a.publish((self.pos - a.start()) as usize);
            a.set_last_store_ms(store_ms);
        }
        self.log.publish_end(self.pos);
        self.prefault_ahead();
        Ok(self.pos)
    }

    /// Appends replicated bytes (whole records, as the master wrote them)
    /// at `from`, which must be this log's end: checked first
    /// ([`crate::replica::check_chunk`]), nothing is written on error.
    /// Returns the new end.
    pub(crate) fn append_raw(&mut self, from: u64, data: &[u8]) -> Result<u64> {
        if from != self.pos {
            return Err(Error::Replica(crate::replica::ReplicaError::Shape {
                offset: from,
                len: data.len(),
                reason: "does not continue the log at its end",
            }));
        }
        if data.is_empty() {
            return Ok(self.pos);
        }
        let seg_size = self.log.seg_size;
        let within = (from % seg_size) as usize;
        let room = seg_size as usize - within;
        let checked = crate::replica::check_chunk(data, from, room)?;
        let need_segment = match &self.active {
            Some(a) => self.pos >= a.end(),
            None => true,
        };
        if need_segment {
            if within != 0 {
                return Err(Error::Io(std::io::Error::other(
                    "replica: no segment to continue in",
                )));
            }
            let seg = Arc::new(self.alloc.take(from)?);
            self.log.push_segment(seg.clone());
            self.prefaulted = seg.start() + (PREFAULT_CHUNK as u64).min(seg.end() - seg.start());
            self.alloc.request(seg.end());
            self.active = Some(seg);
        }
        let Some(active) = self.active.as_deref() else {
            return Err(Error::Io(std::io::Error::other("no active segment")));
        };
        // SAFETY: single writer; `within` is the published position of the
        // active segment and the chunk fits before its end (checked above).
        unsafe { active.write_at(within, data) };
        active.publish(within + data.len());
        if let Some(last) = checked.records.last() {
            active.set_last_store_ms(last.store_timestamp_ms);
        }
        for r in &checked.records {
            // Checked UTF-8 in `check_chunk`.
            if let Ok(topic) = std::str::from_utf8(&data[r.topic.clone()]) {
                self.table.set(topic, r.queue_id, r.queue_offset + 1);
            }
        }
        self.pos = from + data.len() as u64;
        self.log.publish_end(self.pos);
        self.prefault_ahead();
        Ok(self.pos)
    }

    fn encode(
        seg: &Segment,
        pos: u64,
        within: usize,
        size: usize,
        m: &AppendMessage<'_>,
        qo: u64,
        ms: u64,
    ) {
        // SAFETY: single writer; the range is beyond the published position
        // and is published only after this borrow ends.
        match unsafe { seg.unpublished_mut(within, size) } {
            Some(buf) => record::encode_into(buf, m, qo, pos, ms),
            None => {
                let mut v = vec![0u8; size];
                record::encode_into(&mut v, m, qo, pos, ms);
                // SAFETY: as above.
                unsafe { seg.write_at(within, &v) };
            }
        }
    }
}

//! The `Store` facade.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::allocator::Allocator;
use crate::checkpoint::Checkpoint;
use crate::commit_log::{self, Appended, CommitLog, MessageView, QueueTable, Writer};
use crate::config::{FlushMode, StoreConfig};
use crate::consume_queue::{ConsumeQueue, Loaded, Unit};
use crate::dir_lock::DirLock;
use crate::dispatch::{DispatchProgress, Dispatched, Dispatcher};
use crate::error::{Error, Result};
use crate::flush::{FlushOutcome, FlushPolicy, FlushTicket, GroupCommit, Waiter};
use crate::index_file::{IndexConfig, IndexError, IndexService};
use crate::record::{self, AppendMessage, Scan};
use crate::recovery;
use crate::retention::{RetentionMode, RetentionPolicy, SegmentInfo};
use crate::sync::{self, Arc, AtomicU64, Mutex, Ordering, RwLock};

/// Source of wall-clock time (ms since the Unix epoch); injectable for tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A manually driven clock for tests.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicU64);

impl ManualClock {
    /// A clock reading `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock(std::sync::atomic::AtomicU64::new(ms))
    }
    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }
    /// Moves the time forward.
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Result of an append call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendResult {
    /// One entry per message, in input order.
    pub messages: Vec<Appended>,
    /// Commit log offset just past the batch (wait for this to be flushed).
    pub end_offset: u64,
}

/// Status of a consume-queue read, as a broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetStatus {
    /// Messages were found.
    Found,
    /// Units were scanned but none matched the tag filter.
    NoMatchedMessage,
    /// The topic/queue does not exist.
    NoMatchedQueue,
    /// The queue exists but holds nothing readable.
    NoMessageInQueue,
    /// The offset is below the queue's min offset ("offset moved").
    OffsetTooSmall,
    /// The offset equals the max offset (nothing new yet).
    OffsetOverflowOne,
    /// The offset is beyond the max offset ("offset too big").
    OffsetOverflowBadly,
    /// Units exist but their records were removed from the commit log.
    OffsetFoundNull,
}

/// Result of [`Store::get_messages`].
#[derive(Debug, Clone)]
pub struct GetResult {
    /// Status.
    pub status: GetStatus,
    /// Messages (zero-copy views).
    pub messages: Vec<MessageView>,
    /// Where the consumer should read next.
    pub next_begin_offset: u64,
    /// Queue min offset.
    pub min_offset: u64,
    /// Queue max offset (next to be written).
    pub max_offset: u64,
}

impl GetResult {
    /// Total bytes of the returned records.
    pub fn total_bytes(&self) -> usize {
        self.messages.iter().map(|m| m.size() as usize).sum()
    }
}

/// What [`Store::read_raw`] found for a slave.
#[derive(Debug, Clone)]
pub enum RawRead {
    /// Bytes to send (whole records).
    Chunk(bytes::Bytes),
    /// Nothing new yet.
    CaughtUp,
    /// The offset is older than the oldest kept segment.
    TooOld {
        /// The oldest kept offset.
        min_offset: u64,
    },
    /// The offset is past this log's end.
    Ahead {
        /// This log's end.
        max_offset: u64,
    },
    /// No record starts at the offset: the logs differ.
    Diverged(crate::replica::ReplicaError),
}

/// What a retention pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanReport {
    /// The mode the policy chose.
    pub mode: RetentionMode,
    /// Commit log segments removed.
    pub segments_deleted: usize,
    /// Consume queue files removed.
    pub cq_files_deleted: usize,
    /// Index files removed.
    pub index_files_deleted: usize,
    /// Commit log min offset after the pass.
    pub min_offset: u64,
}

/// What recovery did at open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Whether the previous run closed cleanly.
    pub clean: bool,
    /// Recovered commit log end.
    pub end_offset: u64,
    /// Bytes of torn tail zeroed.
    pub truncated_bytes: u64,
    /// Records CRC-verified.
    pub scanned_records: u64,
    /// Records re-dispatched into consume queues.
    pub redispatched: u64,
    /// Consume queues found damaged and rebuilt.
    pub rebuilt_queues: usize,
}

/// A small, fast, non-cryptographic hasher (FxHash) for the queue map:
/// topic names and queue ids are not attacker-chosen in a hot loop, and the
/// lookup sits on the read path.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Fx = std::hash::BuildHasherDefault<FxHasher>;
type QueueMap = HashMap<String, HashMap<u32, Arc<ConsumeQueue>, Fx>, Fx>;

struct Inner {
    cfg: StoreConfig,
    clock: std::sync::Arc<dyn Clock>,
    log: Arc<CommitLog>,
    writer: Mutex<Writer>,
    queues: RwLock<QueueMap>,
    cq_root: PathBuf,
    dispatcher: Mutex<Dispatcher>,
    dispatched: AtomicU64,
    gc: GroupCommit,
    cp_path: PathBuf,
    cp_lock: Mutex<()>,
    started: Instant,
}

/// The storage engine: commit log, consume queues, flush, recovery and
/// retention. All methods take `&self`; appends are serialised internally
/// (single writer), reads run concurrently without taking the writer lock.
pub struct Store {
    inner: Arc<Inner>,
    flusher: Option<std::thread::JoinHandle<()>>,
    recovery: RecoveryReport,
    /// Held until the store is dropped (declared last: dropped after the
    /// flush thread is joined in `Drop`).
    _lock: DirLock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.cfg.root)
            .finish()
    }
}

const ABORT: &str = "abort";

pub(crate) fn index_err(e: IndexError) -> Error {
    match e {
        IndexError::Io(io) => match Error::from_io(io) {
            Error::DiskFull => Error::DiskFull,
            Error::Io(io) => Error::Index(IndexError::Io(io).to_string()),
            other => other,
        },
        other => Error::Index(other.to_string()),
    }
}
const CHECKPOINT: &str = "checkpoint";

fn load_queues(cq_root: &Path, upf: u64, rebuilt: &mut usize) -> Result<QueueMap> {
    let mut map = QueueMap::default();
    for t in std::fs::read_dir(cq_root)? {
        let t = t?;
        if !t.file_type()?.is_dir() {
            continue;
        }
        let Some(topic) = t.file_name().to_str().map(str::to_string) else {
            continue;
        };
        for q in std::fs::read_dir(t.path())? {
            let q = q?;
            let Some(qid) = q.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            match ConsumeQueue::load(cq_root, &topic, qid, upf)? {
                Loaded::Ok(cq) => {
                    map.entry(topic.clone())
                        .or_default()
                        .insert(qid, Arc::new(cq));
                }
                Loaded::Damaged => {
                    ConsumeQueue::remove_dir(cq_root, &topic, qid)?;
                    *rebuilt += 1;
                }
            }
        }
    }
    Ok(map)
}

impl Store {
    /// Opens (creating if needed) the store at `cfg.root`, recovering as
    /// needed, with the system clock.
    pub fn open(cfg: StoreConfig) -> Result<Store> {
        Store::open_with_clock(cfg, std::sync::Arc::new(SystemClock))
    }

    /// Opens with an injected clock (store timestamps and retention).
    pub fn open_with_clock(cfg: StoreConfig, clock: std::sync::Arc<dyn Clock>) -> Result<Store> {
        cfg.validate()?;
        let root = cfg.root.clone();
        let log_dir = root.join("commitlog");
        let cq_root = root.join("consumequeue");
        // One process per data dir: lock before touching anything in it.
        std::fs::create_dir_all(&root)?;
        let lock = DirLock::acquire(&root)?;
        std::fs::create_dir_all(&log_dir)?;
        std::fs::create_dir_all(&cq_root)?;
        let cp_path = root.join(CHECKPOINT);
        let abort_path = root.join(ABORT);
        let cp = Checkpoint::load(&cp_path)?;
        let clean = !abort_path.exists() && cp.is_some();
        let seg = cfg.segment_size;
        let scan_from = match cp {
            Some(c) if clean => Some(c.commit_log_flushed),
            Some(c) => Some(c.commit_log_flushed - c.commit_log_flushed % seg),
            None => None,
        };
        let rec = recovery::recover_commit_log(&log_dir, seg, scan_from)?;
        std::fs::write(&abort_path, b"")?;
        let end = rec.end;
        let segs: Vec<Arc<_>> = rec.segments.into_iter().map(Arc::new).collect();
        let active = segs.last().filter(|s| end < s.end()).cloned();
        let log = Arc::new(CommitLog::new(log_dir.clone(), seg, segs, end));

        let mut rebuilt = 0;
        let queues = load_queues(&cq_root, cfg.cq_units_per_file, &mut rebuilt)?;
        let min = log.min_offset();
        for qs in queues.values() {
            for q in qs.values() {
                q.truncate_from(end)?;
                // Units whose records retention already removed.
                q.delete_below(min);
            }
        }
        let mut start = match cp {
            Some(c) if rebuilt == 0 => c.cq_dispatched.min(end),
            _ => min,
        }
        .max(min);
        let index = if cfg.index_enabled {
            let icfg = IndexConfig {
                slots: cfg.index_slots,
                max_entries: cfg.index_max_entries,
            };
            let mut idx = IndexService::open(&root.join("index"), icfg).map_err(index_err)?;
            if idx.max_commit_log_offset().is_some_and(|m| m >= end) {
                // Entries past the recovered end: drop those files and
                // re-dispatch from what the index still covers.
                idx.truncate_after(end.saturating_sub(1))
                    .map_err(index_err)?;
                start = start
                    .min(idx.max_commit_log_offset().unwrap_or(min))
                    .max(min);
            }
            Some(idx)
        } else {
            None
        };

        let inner = Arc::new(Inner {
            clock,
            log: log.clone(),
            writer: Mutex::new(Writer::new(
                log.clone(),
                active,
                QueueTable::default(),
                Allocator::start(log_dir, seg, cfg.prefault)?,
                cfg.max_message_size,
            )),
            queues: RwLock::new(queues),
            cq_root,
            dispatcher: Mutex::new(Dispatcher {
                reput: start,
                index,
            }),
            dispatched: AtomicU64::new(start),
            gc: GroupCommit::default(),
            cp_path,
            cp_lock: Mutex::new(()),
            started: Instant::now(),
            cfg,
        });
        // Catch up: consume queues must reflect the whole log before the
        // queue-offset table is built from them.
        let mut redispatched = 0u64;
        loop {
            let p = inner.dispatch(usize::MAX, &mut |_| {})?;
            redispatched += p.dispatched as u64;
            if p.caught_up {
                break;
            }
        }
        {
            let mut table = QueueTable::default();
            for (t, qs) in sync::read(&inner.queues).iter() {
                for (qid, q) in qs {
                    table.set(t, *qid, q.max_offset());
                }
            }
            sync::lock(&inner.writer).table = table;
        }
        inner.checkpoint()?;
        let recovery = RecoveryReport {
            clean,
            end_offset: end,
            truncated_bytes: rec.truncated,
            scanned_records: rec.scanned_records,
            redispatched,
            rebuilt_queues: rebuilt,
        };
        let i2 = inner.clone();
        let flusher = std::thread::Builder::new()
            .name("actormq-store-flush".into())
            .spawn(move || flush_loop(&i2))?;
        Ok(Store {
            inner,
            flusher: Some(flusher),
            recovery,
            _lock: lock,
        })
    }

    /// What recovery did when this store was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.recovery
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    /// Appends a batch of messages (any topics/queues) atomically: on error
    /// nothing is stored. Queue offsets are assigned per topic-queue.
    pub fn append_batch(&self, msgs: &[AppendMessage<'_>]) -> Result<AppendResult> {
        let mut out = AppendResult {
            messages: Vec::with_capacity(msgs.len()),
            end_offset: 0,
        };
        self.append_into(msgs, &mut out.messages).map(|end| {
            out.end_offset = end;
            out
        })
    }

    /// As [`Store::append_batch`], pushing results into `out` (no allocation
    /// when `out` has capacity). Returns the end offset.
    pub fn append_into(&self, msgs: &[AppendMessage<'_>], out: &mut Vec<Appended>) -> Result<u64> {
        let now = self.inner.clock.now_ms();
        let mut w = sync::lock(&self.inner.writer);
        if msgs.is_empty() {
            return Ok(w.position());
        }
        w.append(msgs, now, out)
    }

    /// The queue offset the next message appended to (topic, queue) will get.
    pub fn next_queue_offset(&self, topic: &str, queue_id: u32) -> u64 {
        sync::lock(&self.inner.writer).table.get(topic, queue_id)
    }

    /// Appends one message.
    pub fn append(&self, msg: &AppendMessage<'_>) -> Result<Appended> {
        let r = self.append_batch(std::slice::from_ref(msg))?;
        r.messages.first().copied().ok_or(Error::Closed)
    }

    /// Appends and, in sync flush mode, waits for the group commit (up to
    /// `sync_flush_timeout_ms`). In async mode returns `Flushed` at once
    /// without waiting.
    pub fn append_and_wait(
        &self,
        msgs: &[AppendMessage<'_>],
    ) -> Result<(AppendResult, FlushOutcome)> {
        let r = self.append_batch(msgs)?;
        if self.inner.cfg.flush_mode == FlushMode::Async {
            return Ok((r, FlushOutcome::Flushed));
        }
        let t = self.flush_ticket(r.end_offset);
        let o = t.wait(Duration::from_millis(self.inner.cfg.sync_flush_timeout_ms));
        Ok((r, o))
    }

    fn deadline(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64 + self.inner.cfg.sync_flush_timeout_ms
    }

    /// A ticket completed once everything below `end_offset` is flushed (or
    /// after the sync flush timeout). Works in both flush modes.
    pub fn flush_ticket(&self, end_offset: u64) -> FlushTicket {
        let log = &self.inner.log;
        self.inner
            .gc
            .ticket(end_offset, self.deadline(), || log.flushed_offset())
    }

    /// Registers `cb`, called (on the flush thread, or at once) with the
    /// outcome once everything below `end_offset` is flushed or timed out.
    /// For async callers: the callback can complete a oneshot/future.
    pub fn on_flushed(&self, end_offset: u64, cb: Box<dyn FnOnce(FlushOutcome) + Send>) {
        let log = &self.inner.log;
        self.inner
            .gc
            .register(end_offset, self.deadline(), Waiter::Callback(cb), || {
                log.flushed_offset()
            });
    }

    /// Flushes the commit log on the calling thread; returns the flushed offset.
    pub fn flush_now(&self) -> Result<u64> {
        let f = self.inner.log.flush()?;
        let now = self.inner.started.elapsed().as_millis() as u64;
        self.inner.gc.complete(f, now, false);
        Ok(f)
    }

    /// Flushes consume queues (and index) and writes the checkpoint now.
    pub fn checkpoint_now(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Dispatches up to `max_records` records into the consume queues.
    pub fn dispatch(&self, max_records: usize) -> Result<DispatchProgress> {
        self.inner.dispatch(max_records, &mut |_| {})
    }

    /// As [`Store::dispatch`], calling `on_record` for every record
    /// dispatched (in log order), so a caller can announce them without
    /// reading the log again.
    pub fn dispatch_with(
        &self,
        max_records: usize,
        on_record: &mut dyn FnMut(&Dispatched<'_>),
    ) -> Result<DispatchProgress> {
        self.inner.dispatch(max_records, on_record)
    }

    /// Dispatches until caught up with the published log.
    pub fn dispatch_all(&self) -> Result<u64> {
        let mut n = 0;
        loop {
            let p = self.inner.dispatch(usize::MAX, &mut |_| {})?;
            n += p.dispatched as u64;
            if p.caught_up {
                return Ok(n);
            }
        }
    }

    /// Commit log offset below which every record is in the consume queues.
    pub fn dispatched_offset(&self) -> u64 {
        self.inner.dispatched.load(Ordering::Acquire)
    }

    /// Oldest kept commit log offset.
    pub fn commit_log_min_offset(&self) -> u64 {
        self.inner.log.min_offset()
    }

    /// End of the published commit log.
    pub fn commit_log_max_offset(&self) -> u64 {
        self.inner.log.max_offset()
    }

    /// End of the flushed commit log.
    pub fn flushed_offset(&self) -> u64 {
        self.inner.log.flushed_offset()
    }

    /// The record at a commit log offset (message by id resolves to this).
    pub fn read_at(&self, commit_log_offset: u64) -> Option<MessageView> {
        self.inner.log.read(commit_log_offset)
    }

    /// The next replication chunk from commit log offset `from` (a
    /// slave's end): whole records of one segment, at most `max_len` bytes
    /// (unless one record alone is bigger), as a zero-copy view of the
    /// mapped segment.
    pub fn read_raw(&self, from: u64, max_len: usize) -> RawRead {
        let log = &self.inner.log;
        let max = log.max_offset();
        if from > max {
            return RawRead::Ahead { max_offset: max };
        }
        if from == max {
            return RawRead::CaughtUp;
        }
        let min = log.min_offset();
        let Some(seg) = log.segment_for(from).filter(|_| from >= min) else {
            return RawRead::TooOld { min_offset: min };
        };
        let pos = (from - seg.start()) as usize;
        let w = seg.wrote();
        let Some(buf) = seg.read(pos, w.saturating_sub(pos)) else {
            return RawRead::CaughtUp;
        };
        match crate::replica::cut_chunk(buf, from, max_len) {
            Ok(0) => RawRead::CaughtUp,
            Ok(n) => match commit_log::segment_bytes(&seg, pos, n) {
                Some(b) => RawRead::Chunk(b),
                None => RawRead::CaughtUp,
            },
            Err(e) => RawRead::Diverged(e),
        }
    }

    /// Appends replicated bytes at `from` (this log's end), byte for byte
    /// as the master wrote them; see [`crate::replica::check_chunk`] for
    /// what is refused. Consume queues follow through [`Store::dispatch`]
    /// as for any append. Returns the new end.
    pub fn append_raw(&self, from: u64, data: &[u8]) -> Result<u64> {
        sync::lock(&self.inner.writer).append_raw(from, data)
    }

    /// Iterates all readable records from `from` (for tools and tests):
    /// returns up to `max` records and the offset to continue from.
    pub fn scan_log(&self, from: u64, max: usize) -> (Vec<MessageView>, u64) {
        let log = &self.inner.log;
        let mut out = Vec::new();
        let mut off = from.max(log.min_offset());
        let end = log.max_offset();
        while out.len() < max && off < end {
            let Some(seg) = log.segment_for(off) else {
                break;
            };
            let pos = (off - seg.start()) as usize;
            let w = seg.wrote();
            let Some(buf) = seg.read(pos, w.saturating_sub(pos)) else {
                break;
            };
            match record::scan(buf, false) {
                Scan::Message(h) => {
                    if let Some(m) = commit_log::read_in(&seg, off) {
                        out.push(m);
                    }
                    off += h.total_size as u64;
                }
                Scan::Blank(_) => off = seg.end(),
                _ => break,
            }
        }
        (out, off)
    }

    fn queue(&self, topic: &str, queue_id: u32) -> Option<Arc<ConsumeQueue>> {
        sync::read(&self.inner.queues)
            .get(topic)
            .and_then(|m| m.get(&queue_id))
            .cloned()
    }

    /// Topics and their queue ids that have consume queues.
    pub fn queues(&self) -> Vec<(String, Vec<u32>)> {
        let m = sync::read(&self.inner.queues);
        let mut v: Vec<(String, Vec<u32>)> = m
            .iter()
            .map(|(t, qs)| {
                let mut ids: Vec<u32> = qs.keys().copied().collect();
                ids.sort_unstable();
                (t.clone(), ids)
            })
            .collect();
        v.sort();
        v
    }

    /// Min readable queue offset (0 if the queue does not exist).
    pub fn min_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id)
            .map(|q| q.min_offset())
            .unwrap_or(0)
    }

    /// Max queue offset: one past the last dispatched message (0 if none).
    pub fn max_offset(&self, topic: &str, queue_id: u32) -> u64 {
        self.queue(topic, queue_id)
            .map(|q| q.max_offset())
            .unwrap_or(0)
    }

    /// The consume-queue unit at a queue offset.
    pub fn unit(&self, topic: &str, queue_id: u32, queue_offset: u64) -> Option<Unit> {
        self.queue(topic, queue_id)?.get(queue_offset)
    }

    /// The message at (topic, queue, queue offset).
    pub fn read_by_queue_offset(
        &self,
        topic: &str,
        queue_id: u32,
        queue_offset: u64,
    ) -> Option<MessageView> {
        let u = self.unit(topic, queue_id, queue_offset)?;
        self.inner.log.read(u.commit_log_offset)
    }

    /// First queue offset whose store time is ≥ `timestamp_ms` (binary
    /// search through the consume queue into the commit log); the max offset
    /// if none is.
    pub fn offset_by_time(&self, topic: &str, queue_id: u32, timestamp_ms: u64) -> u64 {
        let Some(q) = self.queue(topic, queue_id) else {
            return 0;
        };
        let (mut lo, mut hi) = (q.min_offset(), q.max_offset());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ts = q
                .get(mid)
                .and_then(|u| self.inner.log.read(u.commit_log_offset))
                .map(|m| m.store_timestamp_ms());
            match ts {
                Some(t) if t >= timestamp_ms => hi = mid,
                _ => lo = mid + 1,
            }
        }
        lo
    }

    /// Reads up to `max_count` messages (and about `max_bytes`, at least one)
    /// from (topic, queue) starting at `offset`, optionally keeping only
    /// messages whose tag hash is in `tags`.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max_count: usize,
        max_bytes: usize,
        tags: Option<&HashSet<i64>>,
    ) -> GetResult {
        let mut r = GetResult {
            status: GetStatus::NoMatchedQueue,
            messages: Vec::new(),
            next_begin_offset: 0,
            min_offset: 0,
            max_offset: 0,
        };
        let Some(q) = self.queue(topic, queue_id) else {
            return r;
        };
        let (min, max) = (q.min_offset(), q.max_offset());
        r.min_offset = min;
        r.max_offset = max;
        if min == max {
            r.status = GetStatus::NoMessageInQueue;
            r.next_begin_offset = max;
            return r;
        }
        if offset < min {
            r.status = GetStatus::OffsetTooSmall;
            r.next_begin_offset = min;
            return r;
        }
        if offset == max {
            r.status = GetStatus::OffsetOverflowOne;
            r.next_begin_offset = offset;
            return r;
        }
        if offset > max {
            r.status = GetStatus::OffsetOverflowBadly;
            r.next_begin_offset = if min == 0 { min } else { max };
            return r;
        }
        let scan_limit = if tags.is_some() {
            max_count.max(800)
        } else {
            max_count
        };
        let mut units = Vec::with_capacity(scan_limit.min(1024));
        r.messages.reserve(max_count.min(1024));
        let mut next = offset;
        let mut bytes = 0usize;
        let mut removed = false;
        let log = &self.inner.log;
        let mut cur: Option<(Arc<crate::allocator::Segment>, bytes::Bytes, u64)> = None;
        'outer: while next < max
            && r.messages.len() < max_count
            && ((next - offset) as usize) < scan_limit
        {
            units.clear();
            q.read_units(next, scan_limit - (next - offset) as usize, &mut units);
            if units.is_empty() {
                break;
            }
            for u in &units {
                if r.messages.len() >= max_count {
                    break 'outer;
                }
                if let Some(t) = tags {
                    if !t.contains(&u.tag_hash) {
                        next += 1;
                        continue;
                    }
                }
                if !r.messages.is_empty() && bytes + u.size as usize > max_bytes {
                    break 'outer;
                }
                // Reuse one `Bytes` per segment: each message is a cheap slice.
                let off = u.commit_log_offset;
                let hit = matches!(&cur, Some((s, b, base)) if off >= *base && off + u.size as u64 <= *base + b.len() as u64 && off >= s.start());
                if !hit {
                    cur = log.segment_for(off).and_then(|s| {
                        let pos = (off - s.start()) as usize;
                        let w = s.wrote();
                        let b = commit_log::segment_bytes(&s, pos, w.checked_sub(pos)?)?;
                        Some((s, b, off))
                    });
                }
                let view = cur.as_ref().and_then(|(_, b, base)| {
                    let s = (off - base) as usize;
                    let e = s + u.size as usize;
                    (e <= b.len())
                        .then(|| b.slice(s..e))
                        .and_then(MessageView::new)
                });
                match view {
                    Some(m) if m.commit_log_offset() == off => {
                        bytes += m.size() as usize;
                        r.messages.push(m);
                    }
                    _ => removed = true,
                }
                next += 1;
            }
        }
        r.next_begin_offset = next;
        r.status = if !r.messages.is_empty() {
            GetStatus::Found
        } else if removed {
            GetStatus::OffsetFoundNull
        } else {
            GetStatus::NoMatchedMessage
        };
        r
    }

    /// Messages of `topic` whose keys (`KEYS` or `UNIQ_KEY`) include `key`,
    /// stored within `[begin_ms, end_ms]`, newest first, at most `max`.
    /// Only dispatched messages are indexed.
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Result<Vec<MessageView>> {
        let offsets = {
            let d = sync::lock(&self.inner.dispatcher);
            let Some(i) = d.index.as_ref() else {
                return Ok(Vec::new());
            };
            // Ask for more than `max`: hash collisions are filtered below.
            i.query(
                &format!("{topic}#{key}"),
                begin_ms,
                end_ms,
                max.saturating_mul(2).max(max),
            )
            .map_err(index_err)?
        };
        let mut out = Vec::new();
        for off in offsets {
            if out.len() >= max {
                break;
            }
            let Some(m) = self.inner.log.read(off) else {
                continue;
            };
            let matches = m.topic() == topic
                && (m.property(record::PROPERTY_UNIQ_KEY) == Some(key)
                    || m.property(record::PROPERTY_KEYS)
                        .is_some_and(|ks| ks.split(' ').any(|k| k == key)));
            if matches {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Used fraction of the file system holding the store (for
    /// [`Store::clean_expired`]).
    pub fn disk_usage_ratio(&self) -> Result<f64> {
        Ok(crate::retention::disk_usage_ratio(&self.inner.cfg.root)?)
    }

    /// Retention pass at `now_ms` with the given disk usage ratio (see
    /// [`crate::retention::disk_usage_ratio`]).
    pub fn clean_expired(&self, now_ms: u64, disk_usage_ratio: f64) -> Result<CleanReport> {
        let cfg = &self.inner.cfg;
        let policy = RetentionPolicy {
            reserved_ms: cfg.file_reserved_hours * 3_600_000,
            delete_hour: cfg.delete_hour,
            warn_ratio: cfg.disk_warn_ratio,
            force_ratio: cfg.disk_force_ratio,
            max_per_pass: cfg.max_deletes_per_pass,
        };
        let log = &self.inner.log;
        let segs = log.segments();
        let infos: Vec<SegmentInfo> = segs
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentInfo {
                start: s.start(),
                last_store_ms: s.last_store_ms(),
                active: i + 1 == segs.len(),
            })
            .collect();
        drop(segs);
        let mode = policy.mode(now_ms, disk_usage_ratio);
        let n = policy.select(&infos, now_ms, disk_usage_ratio);
        let removed = log.remove_oldest(n);
        let segments_deleted = removed.len();
        drop(removed);
        let min = log.min_offset();
        let mut cq_files_deleted = 0;
        let mut index_files_deleted = 0;
        if segments_deleted > 0 {
            if let Some(i) = sync::lock(&self.inner.dispatcher).index.as_mut() {
                index_files_deleted = i.delete_below(min).map_err(index_err)?;
            }
            for qs in sync::read(&self.inner.queues).values() {
                for q in qs.values() {
                    cq_files_deleted += q.delete_below(min);
                }
            }
        }
        Ok(CleanReport {
            mode,
            segments_deleted,
            cq_files_deleted,
            index_files_deleted,
            min_offset: min,
        })
    }

    /// Clean shutdown: final flush, dispatch, checkpoint, remove the abort
    /// marker. Dropping a store without `close` behaves like a crash (the
    /// next open runs crash recovery).
    pub fn close(mut self) -> Result<()> {
        self.stop_flusher();
        self.inner.log.flush()?;
        self.dispatch_all()?;
        self.inner.checkpoint()?;
        std::fs::remove_file(self.inner.cfg.root.join(ABORT))?;
        Ok(())
    }

    fn stop_flusher(&mut self) {
        self.inner.gc.stop();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_flusher();
    }
}

/// Alias kept for the result vector type.
impl Inner {
    fn queue_or_create(&self, topic: &str, queue_id: u32) -> Arc<ConsumeQueue> {
        if let Some(q) = sync::read(&self.queues)
            .get(topic)
            .and_then(|m| m.get(&queue_id))
        {
            return q.clone();
        }
        let mut m = sync::write(&self.queues);
        m.entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| {
                Arc::new(ConsumeQueue::new(
                    &self.cq_root,
                    topic,
                    queue_id,
                    self.cfg.cq_units_per_file,
                ))
            })
            .clone()
    }

    fn dispatch(
        &self,
        max: usize,
        on_record: &mut dyn FnMut(&Dispatched<'_>),
    ) -> Result<DispatchProgress> {
        let mut d = sync::lock(&self.dispatcher);
        let log = &self.log;
        let end = log.max_offset();
        let mut n = 0;
        // The queue of the previous record, and the file it was put in.
        let mut last: Option<(Arc<ConsumeQueue>, u32)> = None;
        let mut last_file = None;
        let mut last_topic = String::new();
        'segments: while n < max && d.reput < end {
            // One segment lookup per segment, not per record.
            let Some(seg) = log.segment_for(d.reput) else {
                let min = log.min_offset();
                if d.reput < min {
                    d.reput = min;
                    continue;
                }
                break;
            };
            let mut pos = (d.reput - seg.start()) as usize;
            let w = seg.wrote();
            let Some(seg_buf) = seg.read(0, w) else {
                break;
            };
            while n < max && d.reput < end {
                let Some(buf) = seg_buf.get(pos..) else {
                    break 'segments;
                };
                match record::scan(buf, false) {
                    Scan::Message(h) => {
                        let raw_topic = &buf[h.topic_range()];
                        // Runs of one topic: checked as UTF-8 once.
                        let topic = if raw_topic == last_topic.as_bytes() {
                            // SAFETY: the bytes equal those of `last_topic`,
                            // a `String`, so they are valid UTF-8.
                            unsafe { std::str::from_utf8_unchecked(raw_topic) }
                        } else {
                            std::str::from_utf8(raw_topic).map_err(|_| {
                                Error::corruption(
                                    seg.path().unwrap_or(&log.dir),
                                    pos as u64,
                                    "topic not UTF-8",
                                )
                            })?
                        };
                        let q = match &last {
                            Some((q, qid)) if *qid == h.queue_id && last_topic == topic => q,
                            _ => {
                                let q = self.queue_or_create(topic, h.queue_id);
                                last_topic.clear();
                                last_topic.push_str(topic);
                                last_file = None;
                                &last.insert((q, h.queue_id)).0
                            }
                        };
                        q.put_hinted(
                            h.queue_offset,
                            Unit {
                                commit_log_offset: d.reput,
                                size: h.total_size,
                                tag_hash: h.tag_hash,
                            },
                            &mut last_file,
                        )?;
                        let off = d.reput;
                        d.index_record(
                            topic,
                            &buf[h.properties_range()],
                            off,
                            h.store_timestamp_ms,
                        )?;
                        on_record(&Dispatched {
                            topic,
                            queue_id: h.queue_id,
                            queue_offset: h.queue_offset,
                            commit_log_offset: off,
                            size: h.total_size,
                            tag_hash: h.tag_hash,
                            store_timestamp_ms: h.store_timestamp_ms,
                        });
                        d.reput += h.total_size as u64;
                        pos += h.total_size as usize;
                        n += 1;
                    }
                    Scan::Blank(_) => {
                        d.reput = seg.end();
                        continue 'segments;
                    }
                    Scan::End if w == pos => break 'segments,
                    _ => {
                        return Err(Error::corruption(
                            seg.path().unwrap_or(&log.dir),
                            pos as u64,
                            "undecodable record below the published position",
                        ));
                    }
                }
            }
        }
        self.dispatched.store(d.reput, Ordering::Release);
        Ok(DispatchProgress {
            dispatched: n,
            next_offset: d.reput,
            caught_up: d.reput >= end,
        })
    }

    fn checkpoint(&self) -> Result<()> {
        let _g = sync::lock(&self.cp_lock);
        let dispatched = {
            let mut d = sync::lock(&self.dispatcher);
            if let Some(i) = d.index.as_mut() {
                i.flush().map_err(index_err)?;
            }
            d.reput
        };
        let queues: Vec<Arc<ConsumeQueue>> = sync::read(&self.queues)
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        for q in queues {
            q.flush()?;
        }
        let now = self.clock.now_ms();
        let cp = Checkpoint {
            commit_log_flushed: self.log.flushed_offset(),
            commit_log_flush_ms: now,
            cq_dispatched: dispatched,
            cq_flush_ms: now,
            index_flush_ms: now,
        };
        cp.store(&self.cp_path)
    }
}

fn flush_loop(inner: &Inner) {
    let cfg = &inner.cfg;
    let sync_mode = cfg.flush_mode == FlushMode::Sync;
    let policy = FlushPolicy {
        least_bytes: cfg.flush_least_pages * 4096,
        thorough_interval_ms: cfg.flush_thorough_interval_ms,
    };
    let interval = Duration::from_millis(cfg.flush_interval_ms.min(cfg.checkpoint_interval_ms));
    let mut last_flush = Instant::now();
    let mut last_cp = Instant::now();
    loop {
        let stop = {
            let mut g = sync::lock(&inner.gc.state);
            if !g.stop && !g.wake {
                let wait = if g.queue.is_empty() {
                    interval
                } else {
                    interval.min(Duration::from_millis(5))
                };
                g = match inner.gc.cv.wait_timeout(g, wait) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            g.wake = false;
            g.stop
        };
        let written = inner.log.max_offset();
        let flushed = inner.log.flushed_offset();
        let since = last_flush.elapsed().as_millis() as u64;
        let due = written > flushed
            && (stop
                || sync_mode
                || policy.should_flush(written - flushed, since)
                || since >= cfg.flush_interval_ms && !sync::lock(&inner.gc.state).queue.is_empty());
        let mut failed = false;
        if due {
            match inner.log.flush() {
                Ok(_) => last_flush = Instant::now(),
                Err(_) => failed = true,
            }
        }
        let now = inner.started.elapsed().as_millis() as u64;
        inner.gc.complete(inner.log.flushed_offset(), now, failed);
        if stop {
            let rest = sync::lock(&inner.gc.state).queue.take_all();
            for w in rest {
                w.complete(FlushOutcome::Closed);
            }
            break;
        }
        if last_cp.elapsed().as_millis() as u64 >= cfg.checkpoint_interval_ms {
            let _ = inner.checkpoint();
            last_cp = Instant::now();
        }
    }
}

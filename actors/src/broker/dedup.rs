//! The idempotent producer's dedup window, kept by the
//! [`super::CommitLogActor`].
//!
//! An idempotent producer (RocketMQ has none) sends a producer id (32 hex
//! digits, stable for the producer's life) and a sequence number with each
//! send ([`SendMessageRequest::producer_id`] / `sequence`; a batch request
//! carries one sequence for the whole batch). Every retry of one send goes
//! to the same queue with the same sequence. The writer keeps, per
//! (producer id, topic, queue) ([`DedupKey`]), the last
//! [`DedupConfig::window`] sequences (default 64) with the place their
//! message got ([`Original`]):
//!
//! - a sequence in the window is a **duplicate**: it is not appended, and
//!   is answered with the original reply (same queue offset and message
//!   ids; in sync flush mode once the original is on disk). Two copies in
//!   one drain: the first is appended, the second answered with its result;
//! - a sequence below the window (older than the oldest one kept after the
//!   window slid) is refused with `SEQUENCE_OUT_OF_WINDOW`: the broker can
//!   no longer tell, so it neither stores it again nor claims it stored;
//! - anything else is **new**, gaps and out-of-order arrivals included.
//!
//! The check runs in the drain, right before the store append, on the
//! single writer: it is atomic with the append. A request without the
//! fields never reaches this module (no lookup on the normal path).
//!
//! **Memory** is bounded: at most [`DedupConfig::max_producers`] keys
//! (default 10 000) and [`DedupConfig::max_offsets`] remembered message
//! offsets (default 1 Mi, 8 MiB; a batch remembers one per message). Past
//! either bound the least recently used keys are dropped (down to 7/8 of
//! the bound); a producer dropped so is not deduplicated for its older
//! sends any more ([`CommitLogStats`](super::commit_log::CommitLogStats)
//! counts them as `dedup_evicted`).
//!
//! **Durability**: the first record of each idempotent send carries its
//! producer id, sequence and (batches) message count as record properties
//! (`PRODUCER_ID`, `PRODUCER_SEQ`, `PRODUCER_BATCH`; senders cannot set
//! them). Every [`DedupConfig::snapshot_interval`] (10 s) the table is
//! written with the commit log offset it covers
//! (`<data>/config/producer_dedup.msgpack`, [`DedupSnapshot`]); at start
//! (and on every restart of the writer) [`recover`] loads it, forgets
//! entries a crash cut off the log, and scans the log from the snapshot's
//! offset to the end ([`Rebuild`]), so the window is exact after a crash.
//! No snapshot: the whole retained log is scanned once. In that scan the
//! first record of a (key, sequence) wins: copies the broker makes itself
//! later (a delayed message coming due, a committed half message) keep the
//! properties but do not replace the original.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use actormq_protocol::ResponseCode;
use actormq_protocol::system_topic::{
    self, PROPERTY_PRODUCER_BATCH, PROPERTY_PRODUCER_ID, PROPERTY_PRODUCER_SEQUENCE,
    PROPERTY_REAL_QUEUE_ID, PROPERTY_REAL_TOPIC, SCHEDULE_TOPIC, TRANS_HALF_TOPIC,
};
use actormq_store::{Appended, Store};
use serde::{Deserialize, Serialize};
use slog::{Logger, info, warn};

#[cfg(doc)]
use actormq_protocol::request::SendMessageRequest;

use super::persist;
use crate::runtime::ServiceError;

/// Longest producer id accepted (the SDK sends 32 hex digits).
pub const MAX_PRODUCER_ID_LEN: usize = 64;

/// Settings of the dedup window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    /// Snapshot file; `None` keeps no snapshot (every start scans the
    /// whole log). Default `None`; a broker node uses
    /// `<data>/config/producer_dedup.msgpack`.
    pub path: Option<PathBuf>,
    /// Sequences remembered per (producer, topic, queue). Default 64.
    pub window: usize,
    /// Most (producer, topic, queue) keys kept. Default 10 000.
    pub max_producers: usize,
    /// Most message offsets kept over all keys. Default 1 048 576.
    pub max_offsets: usize,
    /// How often a changed table is written. Default 10 s.
    pub snapshot_interval: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            path: None,
            window: 64,
            max_producers: 10_000,
            max_offsets: 1 << 20,
            snapshot_interval: Duration::from_secs(10),
        }
    }
}

/// Whose sends a window holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DedupKey {
    /// The producer's id.
    pub producer_id: String,
    /// The topic the producer sent to.
    pub topic: String,
    /// The queue the producer sent to.
    pub queue_id: u32,
}

/// One idempotent send: its key and sequence.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupTag {
    /// Whose.
    pub key: DedupKey,
    /// Which send.
    pub seq: u64,
}

impl DedupTag {
    /// The tag of a request (`None`: not idempotent). The id and the
    /// sequence go together; the id is 1..=64 ASCII letters and digits.
    pub fn from_request(
        producer_id: Option<String>,
        sequence: Option<u64>,
        topic: &str,
        queue_id: u32,
    ) -> Result<Option<DedupTag>, ServiceError> {
        match (producer_id, sequence) {
            (None, None) => Ok(None),
            (Some(id), Some(seq)) => {
                if id.is_empty()
                    || id.len() > MAX_PRODUCER_ID_LEN
                    || !id.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return Err(ServiceError::new(
                        ResponseCode::MessageIllegal,
                        format!(
                            "bad producer id {id:?}: 1 to {MAX_PRODUCER_ID_LEN} ASCII letters or digits"
                        ),
                    ));
                }
                Ok(Some(DedupTag {
                    key: DedupKey {
                        producer_id: id,
                        topic: topic.to_owned(),
                        queue_id,
                    },
                    seq,
                }))
            }
            _ => Err(ServiceError::new(
                ResponseCode::MessageIllegal,
                "an idempotent send needs both producer_id and sequence",
            )),
        }
    }

    /// Appends the record properties of the send's first message
    /// (`count`: messages in the request).
    pub fn encode_properties(&self, count: usize, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let seq = self.seq.to_string();
        let n = count.to_string();
        let mut pairs = vec![
            (PROPERTY_PRODUCER_ID, self.key.producer_id.as_str()),
            (PROPERTY_PRODUCER_SEQUENCE, seq.as_str()),
        ];
        if count > 1 {
            pairs.push((PROPERTY_PRODUCER_BATCH, n.as_str()));
        }
        actormq_store::encode_properties_into(pairs, out)
            .map_err(|e| ServiceError::new(ResponseCode::MessageIllegal, e.to_string()))
    }
}

/// Where an idempotent send was stored: what its duplicates are answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    /// Queue offset of the (first) message.
    pub queue_offset: u64,
    /// Commit log offset of each message (the message ids).
    pub commit_log_offsets: Vec<u64>,
    /// End of the last record: a sync-flush duplicate is answered once
    /// the log is flushed up to here.
    pub end_offset: u64,
}

impl Original {
    /// The place of a send whose messages were appended as `slots`.
    pub fn of(slots: &[Appended]) -> Original {
        Original {
            queue_offset: slots.first().map_or(0, |a| a.queue_offset),
            commit_log_offsets: slots.iter().map(|a| a.commit_log_offset).collect(),
            end_offset: slots
                .last()
                .map_or(0, |a| a.commit_log_offset + u64::from(a.size)),
        }
    }

    /// The append results to answer with again (queue offsets follow
    /// the first).
    pub fn appended(&self) -> Vec<Appended> {
        self.commit_log_offsets
            .iter()
            .enumerate()
            .map(|(i, &clo)| Appended {
                queue_offset: self.queue_offset + i as u64,
                commit_log_offset: clo,
                size: 0,
                store_timestamp_ms: 0,
            })
            .collect()
    }
}

/// What to do with an idempotent send ([`DedupTable::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen: append it.
    New,
    /// Seen: answer this, append nothing.
    Duplicate(Original),
    /// Below the window: refuse ([`out_of_window`]).
    OutOfWindow {
        /// The oldest sequence the window can still judge.
        floor: u64,
    },
}

/// The refusal of a send whose sequence is below the window.
pub fn out_of_window(tag: &DedupTag, floor: u64) -> ServiceError {
    ServiceError::new(
        ResponseCode::SequenceOutOfWindow,
        format!(
            "sequence {} of producer {} on {}:{} is older than the dedup window \
             (oldest judged: {floor}): the broker cannot tell whether it is a duplicate",
            tag.seq, tag.key.producer_id, tag.key.topic, tag.key.queue_id
        ),
    )
}

#[derive(Debug, Clone)]
struct Window {
    seqs: BTreeMap<u64, Original>,
    /// Sequences below this were dropped from the window.
    floor: u64,
    /// Last use (LRU tick).
    used: u64,
}

/// The dedup table: plain data, no runtime. See the module docs.
#[derive(Debug)]
pub struct DedupTable {
    window: usize,
    max_producers: usize,
    max_offsets: usize,
    keys: HashMap<DedupKey, Window>,
    offsets: usize,
    tick: u64,
    dirty: bool,
    evicted: u64,
}

impl DedupTable {
    /// An empty table with `config`'s bounds (each at least 1).
    pub fn new(config: &DedupConfig) -> DedupTable {
        DedupTable {
            window: config.window.max(1),
            max_producers: config.max_producers.max(1),
            max_offsets: config.max_offsets.max(1),
            keys: HashMap::new(),
            offsets: 0,
            tick: 0,
            dirty: false,
            evicted: 0,
        }
    }

    /// Judges `tag` (and marks its key used).
    pub fn check(&mut self, tag: &DedupTag) -> Verdict {
        self.tick += 1;
        let Some(w) = self.keys.get_mut(&tag.key) else {
            return Verdict::New;
        };
        w.used = self.tick;
        if let Some(o) = w.seqs.get(&tag.seq) {
            return Verdict::Duplicate(o.clone());
        }
        if tag.seq < w.floor {
            return Verdict::OutOfWindow { floor: w.floor };
        }
        Verdict::New
    }

    /// Remembers that `tag` was stored at `original`. The first record
    /// wins: a tag already known, or below its window, is ignored
    /// (returns `false`).
    pub fn record(&mut self, tag: DedupTag, original: Original) -> bool {
        self.tick += 1;
        let tick = self.tick;
        let w = self.keys.entry(tag.key).or_insert_with(|| Window {
            seqs: BTreeMap::new(),
            floor: 0,
            used: tick,
        });
        w.used = tick;
        if tag.seq < w.floor || w.seqs.contains_key(&tag.seq) {
            return false;
        }
        self.offsets += original.commit_log_offsets.len();
        w.seqs.insert(tag.seq, original);
        while w.seqs.len() > self.window {
            if let Some((s, o)) = w.seqs.pop_first() {
                w.floor = s + 1;
                self.offsets -= o.commit_log_offsets.len();
            }
        }
        self.dirty = true;
        self.evict();
        true
    }

    /// Drops the least recently used keys while a bound is exceeded.
    fn evict(&mut self) {
        if self.keys.len() <= self.max_producers && self.offsets <= self.max_offsets {
            return;
        }
        let keep_keys = self.max_producers - self.max_producers / 8;
        let keep_offsets = self.max_offsets - self.max_offsets / 8;
        let mut by_use: Vec<(u64, DedupKey)> =
            self.keys.iter().map(|(k, w)| (w.used, k.clone())).collect();
        by_use.sort_unstable_by_key(|(used, _)| *used);
        for (_, k) in by_use {
            if self.keys.len() <= keep_keys && self.offsets <= keep_offsets {
                break;
            }
            if let Some(w) = self.keys.remove(&k) {
                self.offsets -= w
                    .seqs
                    .values()
                    .map(|o| o.commit_log_offsets.len())
                    .sum::<usize>();
                self.evicted += 1;
            }
        }
    }

    /// Keys held.
    pub fn producers(&self) -> usize {
        self.keys.len()
    }

    /// Message offsets held.
    pub fn offsets(&self) -> usize {
        self.offsets
    }

    /// Keys dropped to stay within the bounds so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Whether the table changed since the last [`Self::snapshot`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the table changed (a snapshot write failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The table as of commit log offset `offset` (every record below it
    /// is in the table); clears the dirty mark.
    pub fn snapshot(&mut self, offset: u64) -> DedupSnapshot {
        self.dirty = false;
        let mut producers: Vec<ProducerWindow> = self
            .keys
            .iter()
            .map(|(k, w)| ProducerWindow {
                key: k.clone(),
                floor: w.floor,
                seqs: w.seqs.iter().map(|(s, o)| (*s, o.clone())).collect(),
            })
            .collect();
        producers.sort_by(|a, b| a.key.cmp(&b.key));
        DedupSnapshot { offset, producers }
    }

    /// Loads `snapshot`'s windows, forgetting every send whose record
    /// ends past `log_end` (cut off the log by a crash).
    pub fn restore(&mut self, snapshot: DedupSnapshot, log_end: u64) {
        for p in snapshot.producers {
            let tick = self.tick;
            let w = self.keys.entry(p.key).or_insert_with(|| Window {
                seqs: BTreeMap::new(),
                floor: 0,
                used: tick,
            });
            w.floor = w.floor.max(p.floor);
            for (seq, o) in p.seqs {
                if o.end_offset <= log_end && seq >= w.floor {
                    self.offsets += o.commit_log_offsets.len();
                    if let Some(old) = w.seqs.insert(seq, o) {
                        self.offsets -= old.commit_log_offsets.len();
                    }
                }
            }
            while w.seqs.len() > self.window {
                if let Some((s, o)) = w.seqs.pop_first() {
                    w.floor = s + 1;
                    self.offsets -= o.commit_log_offsets.len();
                }
            }
        }
        self.evict();
    }
}

/// One key's window in a [`DedupSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerWindow {
    /// Whose.
    pub key: DedupKey,
    /// Sequences below this are out of the window.
    pub floor: u64,
    /// The remembered sequences and their places.
    pub seqs: Vec<(u64, Original)>,
}

/// The persisted table: every idempotent record below `offset` is in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupSnapshot {
    /// Commit log offset the table covers up to.
    pub offset: u64,
    /// The windows.
    pub producers: Vec<ProducerWindow>,
}

/// What [`Rebuild`] needs of one record.
#[derive(Debug, Clone, Copy)]
pub struct RecordInfo<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Queue.
    pub queue_id: u32,
    /// Queue offset.
    pub queue_offset: u64,
    /// Commit log offset.
    pub commit_log_offset: u64,
    /// Record size.
    pub size: u32,
    /// Encoded properties.
    pub properties: &'a [u8],
}

/// Rebuilds the table from log records fed in log order. Plain data.
#[derive(Debug, Default)]
pub struct Rebuild {
    /// A batch whose first record was seen: (tag, place so far, topic,
    /// queue, records still to come).
    batch: Option<(DedupTag, Original, String, u32, usize)>,
}

impl Rebuild {
    /// Feeds the next record.
    pub fn feed(&mut self, table: &mut DedupTable, r: RecordInfo<'_>) {
        if let Some((tag, mut orig, topic, queue, left)) = self.batch.take() {
            let next_qo = orig.queue_offset + orig.commit_log_offsets.len() as u64;
            if r.topic == topic && r.queue_id == queue && r.queue_offset == next_qo {
                orig.commit_log_offsets.push(r.commit_log_offset);
                orig.end_offset = r.commit_log_offset + u64::from(r.size);
                if left <= 1 {
                    table.record(tag, orig);
                } else {
                    self.batch = Some((tag, orig, topic, queue, left - 1));
                }
                return;
            }
            // A batch is one append, its records back to back: anything
            // else means it was cut short. Judge this record alone.
        }
        let Some(id) = actormq_store::record::property(r.properties, PROPERTY_PRODUCER_ID) else {
            return;
        };
        let Some(seq) = actormq_store::record::property(r.properties, PROPERTY_PRODUCER_SEQUENCE)
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return;
        };
        let count = actormq_store::record::property(r.properties, PROPERTY_PRODUCER_BATCH)
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(1);
        // Parked sends were keyed by where the sender sent them.
        let (topic, queue_id) = if r.topic == SCHEDULE_TOPIC || r.topic == TRANS_HALF_TOPIC {
            let real_topic = actormq_store::record::property(r.properties, PROPERTY_REAL_TOPIC);
            let real_queue = actormq_store::record::property(r.properties, PROPERTY_REAL_QUEUE_ID)
                .and_then(|q| q.parse::<u32>().ok());
            match (real_topic, real_queue) {
                (Some(t), Some(q)) => (t, q),
                _ => return,
            }
        } else {
            (r.topic, r.queue_id)
        };
        if system_topic::is_broker_only(topic) || topic.starts_with(system_topic::RETRY_PREFIX) {
            // A copy the broker wrote (a retry, parked or not, a dead
            // letter, an op record): not a producer's send.
            return;
        }
        let tag = DedupTag {
            key: DedupKey {
                producer_id: id.to_owned(),
                topic: topic.to_owned(),
                queue_id,
            },
            seq,
        };
        let orig = Original {
            queue_offset: r.queue_offset,
            commit_log_offsets: vec![r.commit_log_offset],
            end_offset: r.commit_log_offset + u64::from(r.size),
        };
        if count <= 1 {
            table.record(tag, orig);
        } else {
            self.batch = Some((tag, orig, r.topic.to_owned(), r.queue_id, count - 1));
        }
    }
}

/// The table as of the end of `store`'s log: the snapshot (if any) plus
/// a scan of the log after it. Blocking (the writer's factory calls it,
/// before the writer serves anything). Never fails: a snapshot that
/// cannot be read is logged and the whole log scanned instead.
pub fn recover(store: &Store, config: &DedupConfig, logger: &Logger) -> DedupTable {
    let mut table = DedupTable::new(config);
    let end = store.commit_log_max_offset();
    let mut from = 0;
    if let Some(path) = &config.path {
        match persist::load_or_backup::<DedupSnapshot>(path, logger) {
            Ok(Some(snap)) => {
                from = snap.offset.min(end);
                table.restore(snap, end);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(logger, "dedup snapshot unreadable: scanning the whole log"; "error" => %e);
            }
        }
    }
    let start = from.max(store.commit_log_min_offset());
    let mut off = start;
    let mut rebuild = Rebuild::default();
    let mut records = 0u64;
    while off < end {
        let (views, next) = store.scan_log(off, 1024);
        for v in &views {
            let h = v.header();
            rebuild.feed(
                &mut table,
                RecordInfo {
                    topic: v.topic(),
                    queue_id: h.queue_id,
                    queue_offset: h.queue_offset,
                    commit_log_offset: v.commit_log_offset(),
                    size: h.total_size,
                    properties: v.properties(),
                },
            );
        }
        records += views.len() as u64;
        if next <= off {
            break;
        }
        off = next;
    }
    if records > 0 {
        table.dirty = true;
    }
    info!(logger, "dedup window recovered"; "producers" => table.producers(),
        "scanned_from" => start, "scanned_records" => records);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(p: &str, q: u32, seq: u64) -> DedupTag {
        DedupTag {
            key: DedupKey {
                producer_id: p.into(),
                topic: "t".into(),
                queue_id: q,
            },
            seq,
        }
    }

    fn at(qo: u64) -> Original {
        Original {
            queue_offset: qo,
            commit_log_offsets: vec![qo * 100],
            end_offset: qo * 100 + 50,
        }
    }

    fn cfg(window: usize) -> DedupConfig {
        DedupConfig {
            window,
            ..DedupConfig::default()
        }
    }

    #[test]
    fn a_resent_sequence_gets_the_original_place() {
        let mut t = DedupTable::new(&cfg(4));
        assert_eq!(t.check(&tag("p", 0, 1)), Verdict::New);
        assert!(t.record(tag("p", 0, 1), at(7)));
        assert_eq!(t.check(&tag("p", 0, 1)), Verdict::Duplicate(at(7)));
        // Other queue, other producer: independent.
        assert_eq!(t.check(&tag("p", 1, 1)), Verdict::New);
        assert_eq!(t.check(&tag("q", 0, 1)), Verdict::New);
        // The first record wins.
        assert!(!t.record(tag("p", 0, 1), at(9)));
        assert_eq!(t.check(&tag("p", 0, 1)), Verdict::Duplicate(at(7)));
    }

    #[test]
    fn gaps_and_reordering_are_accepted_and_the_window_slides() {
        let mut t = DedupTable::new(&cfg(3));
        for s in [5, 2, 9] {
            assert_eq!(t.check(&tag("p", 0, s)), Verdict::New);
            t.record(tag("p", 0, s), at(s));
        }
        // 3 is in a gap above the oldest kept: new.
        assert_eq!(t.check(&tag("p", 0, 3)), Verdict::New);
        t.record(tag("p", 0, 3), at(3));
        // Window of 3: 2 dropped, so below 3 is out of the window.
        assert_eq!(t.check(&tag("p", 0, 2)), Verdict::OutOfWindow { floor: 3 });
        assert_eq!(t.check(&tag("p", 0, 1)), Verdict::OutOfWindow { floor: 3 });
        assert_eq!(t.check(&tag("p", 0, 4)), Verdict::New);
        for s in [3, 5, 9] {
            assert_eq!(t.check(&tag("p", 0, s)), Verdict::Duplicate(at(s)));
        }
        assert!(!t.record(tag("p", 0, 1), at(1)), "below the window");
        assert_eq!(t.offsets(), 3);
        let e = out_of_window(&tag("p", 0, 1), 3);
        assert_eq!(e.code, ResponseCode::SequenceOutOfWindow);
    }

    #[test]
    fn least_recently_used_producers_go_first_past_the_bounds() {
        let mut t = DedupTable::new(&DedupConfig {
            max_producers: 8,
            ..cfg(2)
        });
        for p in 0..8 {
            t.record(tag(&format!("p{p}"), 0, 1), at(1));
        }
        // p0 used again: it is the most recent now.
        assert!(matches!(t.check(&tag("p0", 0, 1)), Verdict::Duplicate(_)));
        t.record(tag("p8", 0, 1), at(1));
        assert_eq!(t.producers(), 7, "down to 7/8 of the bound");
        assert_eq!(t.evicted(), 2);
        assert!(matches!(t.check(&tag("p0", 0, 1)), Verdict::Duplicate(_)));
        assert_eq!(t.check(&tag("p1", 0, 1)), Verdict::New);
        assert_eq!(t.check(&tag("p2", 0, 1)), Verdict::New);
        // Offsets bound: a big batch pushes old producers out.
        let mut t = DedupTable::new(&DedupConfig {
            max_offsets: 16,
            ..cfg(64)
        });
        for s in 0..10 {
            t.record(tag("a", 0, s), at(s));
        }
        let big = Original {
            queue_offset: 0,
            commit_log_offsets: (0..10).collect(),
            end_offset: 1000,
        };
        t.record(tag("b", 0, 0), big.clone());
        assert!(t.offsets() <= 14);
        assert_eq!(t.check(&tag("b", 0, 0)), Verdict::Duplicate(big));
        assert_eq!(t.check(&tag("a", 0, 0)), Verdict::New);
    }

    #[test]
    fn snapshot_round_trip_forgets_what_a_crash_cut_off() {
        let mut t = DedupTable::new(&cfg(4));
        for s in 0..6 {
            t.record(tag("p", 0, s), at(s + 1));
        }
        assert!(t.is_dirty());
        let snap = t.snapshot(700);
        assert!(!t.is_dirty());
        let bytes = rmp_serde::to_vec_named(&snap).unwrap();
        let back: DedupSnapshot = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, snap);
        // The log ends at 500 after the crash: seqs 4 (ends 550) and 5 go.
        let mut r = DedupTable::new(&cfg(4));
        r.restore(back, 500);
        assert_eq!(r.check(&tag("p", 0, 1)), Verdict::OutOfWindow { floor: 2 });
        assert_eq!(r.check(&tag("p", 0, 3)), Verdict::Duplicate(at(4)));
        assert_eq!(r.check(&tag("p", 0, 4)), Verdict::New);
        assert_eq!(r.check(&tag("p", 0, 5)), Verdict::New);
    }

    #[test]
    fn tags_come_from_both_fields_and_a_sane_id() {
        assert_eq!(DedupTag::from_request(None, None, "t", 0).unwrap(), None);
        let t = DedupTag::from_request(Some("ab12".into()), Some(3), "t", 2)
            .unwrap()
            .unwrap();
        assert_eq!(t, tag("ab12", 2, 3));
        for (id, seq) in [
            (Some("ab".to_owned()), None),
            (None, Some(1)),
            (Some(String::new()), Some(1)),
            (Some("a\u{1}b".into()), Some(1)),
            (Some("x".repeat(65)), Some(1)),
        ] {
            let e = DedupTag::from_request(id, seq, "t", 0).unwrap_err();
            assert_eq!(e.code, ResponseCode::MessageIllegal);
        }
    }

    fn record_props(tag: &DedupTag, count: usize, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut p = actormq_store::encode_properties(extra.iter().copied()).unwrap();
        tag.encode_properties(count, &mut p).unwrap();
        p
    }

    #[test]
    fn rebuild_from_records_knows_singles_batches_and_parked_sends() {
        let mut t = DedupTable::new(&cfg(64));
        let mut r = Rebuild::default();
        let single = record_props(&tag("p", 0, 1), 1, &[]);
        let batch = record_props(&tag("p", 0, 2), 3, &[]);
        let info = |topic, queue_id, qo, clo, props| RecordInfo {
            topic,
            queue_id,
            queue_offset: qo,
            commit_log_offset: clo,
            size: 10,
            properties: props,
        };
        r.feed(&mut t, info("t", 0, 0, 0, &single));
        r.feed(&mut t, info("other", 0, 0, 10, b""));
        r.feed(&mut t, info("t", 0, 1, 20, &batch));
        r.feed(&mut t, info("t", 0, 2, 30, b""));
        r.feed(&mut t, info("t", 0, 3, 40, b""));
        assert_eq!(
            t.check(&tag("p", 0, 1)),
            Verdict::Duplicate(Original {
                queue_offset: 0,
                commit_log_offsets: vec![0],
                end_offset: 10
            })
        );
        assert_eq!(
            t.check(&tag("p", 0, 2)),
            Verdict::Duplicate(Original {
                queue_offset: 1,
                commit_log_offsets: vec![20, 30, 40],
                end_offset: 50
            })
        );
        // A delayed send parked in the schedule topic is keyed by its real
        // topic and queue; the copy moved there later does not replace it.
        let parked = record_props(
            &tag("p", 3, 7),
            1,
            &[(PROPERTY_REAL_TOPIC, "t"), (PROPERTY_REAL_QUEUE_ID, "3")],
        );
        r.feed(&mut t, info(SCHEDULE_TOPIC, 2, 0, 50, &parked));
        let moved = record_props(&tag("p", 3, 7), 1, &[]);
        r.feed(&mut t, info("t", 3, 0, 60, &moved));
        assert!(matches!(
            t.check(&tag("p", 3, 7)),
            Verdict::Duplicate(Original { commit_log_offsets, .. }) if commit_log_offsets == vec![50]
        ));
        // Retry and dead-letter copies are not sends, parked or not.
        let retry = record_props(&tag("p", 0, 9), 1, &[]);
        r.feed(&mut t, info("%RETRY%g", 0, 0, 70, &retry));
        r.feed(&mut t, info("%DLQ%g", 0, 0, 80, &retry));
        let parked_retry = record_props(
            &tag("p", 0, 9),
            1,
            &[
                (PROPERTY_REAL_TOPIC, "%RETRY%g"),
                (PROPERTY_REAL_QUEUE_ID, "0"),
            ],
        );
        r.feed(&mut t, info(SCHEDULE_TOPIC, 2, 1, 85, &parked_retry));
        assert_eq!(t.producers(), 2);
        // A batch cut short by a crash is not remembered.
        let cut = record_props(&tag("p", 0, 10), 2, &[]);
        r.feed(&mut t, info("t", 0, 4, 90, &cut));
        r.feed(&mut t, info("u", 0, 0, 100, b""));
        assert_eq!(t.check(&tag("p", 0, 10)), Verdict::New);
    }
}

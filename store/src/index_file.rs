//! Hash index from message key (and unique key) to commit-log offset, with store time, for
//! "query messages by key within a time range". The on-disk format follows RocketMQ's
//! `IndexFile` / `IndexHeader` / `IndexService`, with the deviations listed below.
//!
//! # Files
//!
//! Index files live in one directory (`<store>/index/`). Each file is named by its creation
//! time in Unix milliseconds, written as 20 decimal digits, zero-padded (for example
//! `00000001763702400000`). If two files would get the same name (several rolls within one
//! millisecond, or the wall clock going backwards) the name is bumped to the previous name + 1,
//! so names are strictly increasing and sorting by name is sorting by age. A file is created as
//! `<name>.tmp`, sized, its header written and synced, then renamed to `<name>` and the
//! directory synced; leftover `<20 digits>.tmp` files are deleted by [`IndexService::open`].
//! Other names in the directory are ignored.
//!
//! A file has a fixed size, chosen when it is created:
//! `40 + 4 * slots + 20 * max_entries` bytes (default 5,000,000 slots and 20,000,000 entries:
//! 420,000,040 bytes, created sparse). Every integer is **big-endian** (Java `ByteBuffer`
//! order, as in RocketMQ).
//!
//! # Header (40 bytes, at offset 0)
//!
//! | offset | size | field          | meaning                                                    |
//! |-------:|-----:|----------------|------------------------------------------------------------|
//! |      0 |    8 | begin_ts       | stored time (Unix ms) of the first entry; 0 while empty     |
//! |      8 |    8 | end_ts         | stored time (Unix ms) of the last entry; 0 while empty      |
//! |     16 |    8 | begin_phy      | commit-log offset of the first entry; 0 while empty         |
//! |     24 |    8 | end_phy        | commit-log offset of the last entry; 0 while empty          |
//! |     32 |    4 | slot_count     | number of hash slots in this file (`slots`)                 |
//! |     36 |    4 | index_count    | number of entries written (`0..=max_entries`)               |
//!
//! `max_entries` is not stored: it is `(file_len - 40 - 4 * slot_count) / 20`, so each file
//! describes itself and changing [`IndexConfig`] only affects files created afterwards.
//!
//! # Slot table (`4 * slots` bytes, at offset 40)
//!
//! Slot `s` is the u32 at `40 + 4 * s`: the number (1-based) of the newest entry whose key hash
//! `h` has `h % slots == s`, or 0 if the slot is empty.
//!
//! # Entries (`20 * max_entries` bytes, at offset `40 + 4 * slots`)
//!
//! Entry number `n` (1-based, `1..=index_count`) is at `40 + 4 * slots + 20 * (n - 1)`:
//!
//! | offset | size | field     | meaning                                                          |
//! |-------:|-----:|-----------|------------------------------------------------------------------|
//! |      0 |    4 | key_hash  | [`key_hash`] of the key (0..=`i32::MAX`)                          |
//! |      4 |    8 | phy       | commit-log offset of the message                                 |
//! |     12 |    4 | time_diff | stored time minus the header's `begin_ts`, in **milliseconds**    |
//! |     16 |    4 | prev      | number of the previous entry in the same slot's chain; 0 = end   |
//!
//! # Key hash
//!
//! [`key_hash`] is RocketMQ's: Java `String.hashCode()` (over UTF-16 code units,
//! `h = 31 * h + c` with wrapping `i32` arithmetic), then `Math.abs`, with `i32::MIN` mapped
//! to 0. It is stable across runs and platforms. Different keys can share a hash (e.g. `"Aa"`
//! and `"BB"`), so callers must re-check the key against the message read back.
//!
//! # Writing (`put`)
//!
//! 1. A put whose commit-log offset is below the highest offset already indexed is ignored
//!    (re-dispatch after recovery is idempotent, as in RocketMQ's `buildIndex`). Equal offsets
//!    are accepted: one message with several keys puts each key at the same offset.
//! 2. The stored time is `max(store_timestamp_ms, end_ts of the newest entry)`, so stored times
//!    never decrease along the index (a message stored while the clock stepped back is indexed
//!    with the previous message's time). This keeps the early exits of the lookup exact.
//! 3. If there is no file, the newest file holds `max_entries` entries, or the time diff would
//!    exceed `i32::MAX` ms (about 24.8 days after the file's first entry), a new file is created.
//! 4. With `n = index_count + 1` and `s = key_hash % slot_count`: write entry `n` with
//!    `prev = slot[s]` (0 if that value is not in `1..=index_count`), set `slot[s] = n`, then
//!    update the header (`begin_*` on the first entry, `end_*` and `index_count` always).
//!
//! # Lookup (`query(key, begin, end, max)`)
//!
//! `h = key_hash(key)`. Files are visited newest first. A file whose `end_ts < begin` ends the
//! search (all older files are older still); an empty file or one whose `begin_ts > end` is
//! skipped. In a file, start at `n = slot[h % slot_count]` and follow `prev`: for each entry,
//! `t = begin_ts + time_diff`; if `t < begin` stop (the chain is newest first); if
//! `key_hash == h` and `t <= end`, emit `phy` unless it equals the previously emitted offset
//! (the same message put twice under one hash). Stop once `max` offsets are emitted. Results
//! are therefore newest first. A chain link that does not point strictly backwards
//! (`prev >= n`) or beyond `index_count`, or a `time_diff > i32::MAX`, ends that file's walk
//! (torn data is never followed).
//!
//! # Deviations from RocketMQ
//!
//! * `time_diff` is in milliseconds, not seconds, so time-range queries are exact to the
//!   millisecond; files roll when the diff would overflow `i32` (about 24.8 days).
//! * `slot_count` (header offset 32) is the size of the slot table, not the number of slots in
//!   use, so files are self-describing.
//! * Entries are numbered from 1 and entry 1 is stored right after the slot table (RocketMQ
//!   leaves entry 0 unused); `index_count` is the number of entries, not the next number.
//!
//! # Durability and recovery
//!
//! Writes go to a shared memory map; the kernel may write any dirty page back at any time.
//! [`IndexService::flush`] syncs each file written since the last flush, the slot table and
//! entries first and the header second, so when it returns every file on disk is whole and
//! consistent. Callers should flush the index before recording a checkpoint that covers it.
//! If only the process dies (`kill -9`), every write reached the page cache and survives,
//! except that a `put` may stop between its steps: an entry past `index_count` is ignored, a
//! header updated up to `end_phy` but not `index_count` only lets that message be put again,
//! and a slot already pointing at the uncounted entry is repaired by [`IndexService::open`]
//! (it rebuilds the newest file's slot table from its entries when a slot points past
//! `index_count`). No `truncate_after` is needed for that case.
//!
//! After a machine crash, anything written after the last flush is untrusted (a header or slot may have
//! reached the disk before the entry it points to, which can hide a whole chain). Recovery
//! calls [`IndexService::truncate_after`]`(x)` where every put at an offset `<= x` happened
//! before the last completed flush: for example `x` = the offset of the last message all of
//! whose keys were put before that flush (what [`IndexService::max_commit_log_offset`] returned
//! right after a flush done between messages), recorded in the checkpoint. Every file modified
//! after that flush then has `end_phy > x` and is deleted whole (as RocketMQ does), except
//! one whose header page on disk is still the flushed one (its `index_count` and `end_phy` as
//! flushed) while some of its slot pages are newer: `truncate_after` finds slots of the newest
//! remaining files that point past `index_count` and rebuilds their slot table from entries
//! `1..=index_count` (those were flushed and are never rewritten), so what remains is exactly
//! what was flushed. Then re-dispatch from `max_commit_log_offset()` (or
//! earlier: older puts are ignored, and re-putting the message at exactly that offset yields
//! duplicate entries that `query` collapses). Entries are not checksummed: callers treat
//! returned offsets as hints, reading the record and checking it is whole and carries the key
//! (hash collisions need that check anyway); the lookup never follows a link that is out of
//! bounds or not strictly backwards. [`IndexService::open`] validates every header against the
//! file length and against the neighbouring files (times and offsets must not go backwards) and
//! fails with [`IndexError::Corrupt`] naming the file otherwise.
//!
//! The service is not internally synchronized: one owner (the dispatcher) calls `put`,
//! `flush`, `truncate_after` and `delete_below`; `query` takes `&self`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use memmap2::MmapMut;

/// Size in bytes of the file header.
pub const HEADER_SIZE: usize = 40;
/// Size in bytes of one hash slot.
pub const SLOT_SIZE: usize = 4;
/// Size in bytes of one index entry.
pub const ENTRY_SIZE: usize = 20;

/// Largest `time_diff` (ms) an entry can hold; a put past it rolls to a new file.
const MAX_TIME_DIFF_MS: u64 = i32::MAX as u64;
/// Largest slot count / entry count / entry number (they are Java `int`s in RocketMQ).
const MAX_COUNT: u32 = i32::MAX as u32;
/// Number of digits in a file name.
const NAME_DIGITS: usize = 20;
/// Suffix of a file being created.
const TMP_SUFFIX: &str = ".tmp";

// Header field offsets.
const H_BEGIN_TS: usize = 0;
const H_END_TS: usize = 8;
const H_BEGIN_PHY: usize = 16;
const H_END_PHY: usize = 24;
const H_SLOTS: usize = 32;
const H_COUNT: usize = 36;

// Entry field offsets.
const E_HASH: usize = 0;
const E_PHY: usize = 4;
const E_DIFF: usize = 12;
const E_PREV: usize = 16;

/// Sizing of newly created index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Number of hash slots per file (default `5_000_000`).
    pub slots: u32,
    /// Number of entries per file before rolling to a new one (default `20_000_000`).
    pub max_entries: u32,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            slots: 5_000_000,
            max_entries: 20_000_000,
        }
    }
}

impl IndexConfig {
    /// Checks that both sizes are positive, at most `i32::MAX`, and that a file fits in memory.
    pub fn validate(&self) -> Result<(), IndexError> {
        if self.slots == 0 || self.slots > MAX_COUNT {
            return Err(IndexError::InvalidConfig(format!(
                "index slots must be in 1..={MAX_COUNT}, got {}",
                self.slots
            )));
        }
        if self.max_entries == 0 || self.max_entries > MAX_COUNT {
            return Err(IndexError::InvalidConfig(format!(
                "index max_entries must be in 1..={MAX_COUNT}, got {}",
                self.max_entries
            )));
        }
        let size = self.file_size();
        if usize::try_from(size).is_err() || size > isize::MAX as u64 {
            return Err(IndexError::InvalidConfig(format!(
                "index file of {size} bytes does not fit in the address space"
            )));
        }
        Ok(())
    }

    /// Size in bytes of a file created with this config: `40 + 4 * slots + 20 * max_entries`.
    pub fn file_size(&self) -> u64 {
        file_size(self.slots, self.max_entries)
    }
}

fn file_size(slots: u32, max_entries: u32) -> u64 {
    HEADER_SIZE as u64
        + SLOT_SIZE as u64 * u64::from(slots)
        + ENTRY_SIZE as u64 * u64::from(max_entries)
}

/// Errors of the index.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// An I/O operation on the index directory or a file failed.
    #[error("index I/O error: {0}")]
    Io(#[from] io::Error),
    /// An index file is malformed.
    #[error("corrupt index file {}: {reason}", file.display())]
    Corrupt {
        /// The offending file.
        file: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The [`IndexConfig`] is unusable.
    #[error("invalid index config: {0}")]
    InvalidConfig(String),
}

/// The stable key hash used by the index: Java `String.hashCode()` made non-negative the way
/// RocketMQ does (`Math.abs`, with `i32::MIN` mapped to 0). The result is in `0..=i32::MAX`.
pub fn key_hash(key: &str) -> u32 {
    let mut h = KeyHasher::default();
    h.update(key);
    h.finish()
}

/// [`key_hash`] of a key given in pieces (`topic`, `#`, key): `String.hashCode()` is a fold
/// over the text, so a prefix hashed once continues with each key, and no joined key is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyHasher(i32);

/// `31^n` in wrapping `i32` arithmetic.
const fn pow31(n: u32) -> i32 {
    let mut p = 1i32;
    let mut i = 0;
    while i < n {
        p = p.wrapping_mul(31);
        i += 1;
    }
    p
}

/// Weights of the bytes of an 8-byte step: `31^7 .. 31^0`.
const STEP8: [i32; 8] = [
    pow31(7),
    pow31(6),
    pow31(5),
    pow31(4),
    pow31(3),
    pow31(2),
    pow31(1),
    1,
];

impl KeyHasher {
    /// Appends `text`.
    pub fn update(&mut self, text: &str) {
        if text.is_ascii() {
            self.ascii(text.as_bytes());
        } else {
            self.utf16(text);
        }
    }

    /// Appends bytes that should be UTF-8 text; `false` (nothing appended) if they are not.
    pub fn update_utf8(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_ascii() {
            self.ascii(bytes);
        } else if let Ok(text) = std::str::from_utf8(bytes) {
            self.utf16(text);
        } else {
            return false;
        }
        true
    }

    /// The hash of everything appended.
    pub fn finish(&self) -> u32 {
        if self.0 == i32::MIN {
            0
        } else {
            self.0.unsigned_abs()
        }
    }

    fn utf16(&mut self, text: &str) {
        self.0 = text
            .encode_utf16()
            .fold(self.0, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    }

    /// ASCII is one UTF-16 unit per byte. Eight bytes per step
    /// (`h·31⁸ + Σ bᵢ·31⁷⁻ⁱ`, the same value mod 2³²): the products are independent, so the
    /// chain of dependent multiplies is an eighth as long.
    fn ascii(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let part = c.iter().zip(STEP8).fold(0i32, |acc, (&b, w)| {
                acc.wrapping_add(i32::from(b).wrapping_mul(w))
            });
            h = h.wrapping_mul(pow31(8)).wrapping_add(part);
        }
        self.0 = chunks
            .remainder()
            .iter()
            .fold(h, |h, &b| h.wrapping_mul(31).wrapping_add(i32::from(b)));
    }
}

/// In-memory copy of a file header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Header {
    begin_ts: u64,
    end_ts: u64,
    begin_phy: u64,
    end_phy: u64,
    slots: u32,
    count: u32,
}

impl Header {
    fn decode(b: &[u8]) -> Header {
        Header {
            begin_ts: get_u64(b, H_BEGIN_TS),
            end_ts: get_u64(b, H_END_TS),
            begin_phy: get_u64(b, H_BEGIN_PHY),
            end_phy: get_u64(b, H_END_PHY),
            slots: get_u32(b, H_SLOTS),
            count: get_u32(b, H_COUNT),
        }
    }

    fn encode(&self, b: &mut [u8]) {
        put_u64(b, H_BEGIN_TS, self.begin_ts);
        put_u64(b, H_END_TS, self.end_ts);
        put_u64(b, H_BEGIN_PHY, self.begin_phy);
        put_u64(b, H_END_PHY, self.end_phy);
        put_u32(b, H_SLOTS, self.slots);
        put_u32(b, H_COUNT, self.count);
    }
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// One decoded entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u32,
    phy: u64,
    diff: u32,
    prev: u32,
}

/// One memory-mapped index file.
struct IndexFile {
    path: PathBuf,
    name: u64,
    map: MmapMut,
    header: Header,
    max_entries: u32,
    /// Written since the last flush.
    dirty: bool,
}

fn corrupt(path: &Path, reason: impl Into<String>) -> IndexError {
    IndexError::Corrupt {
        file: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn format_name(name: u64) -> String {
    format!("{name:0width$}", width = NAME_DIGITS)
}

fn parse_name(s: &str) -> Option<u64> {
    if s.len() == NAME_DIGITS && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Maps the whole of `file` read-write.
fn map_file(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the file lives in the index directory, which the `IndexService` owns exclusively
    // (one broker process per store directory); nothing else writes or truncates it. This
    // process sizes the file before mapping it and never changes its length while mapped; it
    // is only unlinked after the map is dropped. All access goes through bounds-checked slices
    // of the map, so no reference outlives the mapping.
    unsafe { MmapMut::map_mut(file) }
}

impl IndexFile {
    /// Creates a new empty file named `name` in `dir` (via a `.tmp` name and a rename).
    fn create(dir: &Path, name: u64, cfg: IndexConfig) -> Result<IndexFile, IndexError> {
        let path = dir.join(format_name(name));
        let tmp = dir.join(format!("{}{TMP_SUFFIX}", format_name(name)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.set_len(cfg.file_size())?;
        // Reserved before mapping (see `crate::disk`): a full disk fails
        // the creation instead of a later entry write with SIGBUS.
        if let Err(e) = crate::disk::reserve_io(&file, &tmp, cfg.file_size()) {
            drop(file);
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        let mut map = map_file(&file)?;
        let header = Header {
            slots: cfg.slots,
            ..Header::default()
        };
        header.encode(&mut map[..HEADER_SIZE]);
        map.flush_range(0, HEADER_SIZE)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)?;
        sync_dir(dir)?;
        Ok(IndexFile {
            path,
            name,
            map,
            header,
            max_entries: cfg.max_entries,
            dirty: false,
        })
    }

    /// Opens an existing file and validates its header against its length.
    fn load(path: PathBuf, name: u64) -> Result<IndexFile, IndexError> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        if len < HEADER_SIZE as u64 {
            return Err(corrupt(
                &path,
                format!("{len} bytes, shorter than the 40-byte header"),
            ));
        }
        if usize::try_from(len).is_err() || len > isize::MAX as u64 {
            return Err(corrupt(&path, format!("{len} bytes, too large to map")));
        }
        let map = map_file(&file)?;
        drop(file);
        let h = Header::decode(&map[..HEADER_SIZE]);
        if h.slots == 0 || h.slots > MAX_COUNT {
            return Err(corrupt(
                &path,
                format!("slot count {} not in 1..={MAX_COUNT}", h.slots),
            ));
        }
        let tables = HEADER_SIZE as u64 + SLOT_SIZE as u64 * u64::from(h.slots);
        let Some(rest) = len.checked_sub(tables) else {
            return Err(corrupt(
                &path,
                format!("{len} bytes, too short for {} slots", h.slots),
            ));
        };
        if rest % ENTRY_SIZE as u64 != 0 {
            return Err(corrupt(
                &path,
                format!("entry area of {rest} bytes is not a multiple of {ENTRY_SIZE}"),
            ));
        }
        let max_entries = rest / ENTRY_SIZE as u64;
        if max_entries == 0 || max_entries > u64::from(MAX_COUNT) {
            return Err(corrupt(
                &path,
                format!("{max_entries} entries not in 1..={MAX_COUNT}"),
            ));
        }
        // Checked above to be at most i32::MAX.
        let max_entries = max_entries as u32;
        if h.count > max_entries {
            return Err(corrupt(
                &path,
                format!("index count {} exceeds capacity {max_entries}", h.count),
            ));
        }
        if h.count > 0 {
            if h.begin_ts > h.end_ts || h.end_ts - h.begin_ts > MAX_TIME_DIFF_MS {
                return Err(corrupt(
                    &path,
                    format!("bad time range {}..={}", h.begin_ts, h.end_ts),
                ));
            }
            if h.begin_phy > h.end_phy {
                return Err(corrupt(
                    &path,
                    format!("bad offset range {}..={}", h.begin_phy, h.end_phy),
                ));
            }
        }
        Ok(IndexFile {
            path,
            name,
            map,
            header: h,
            max_entries,
            dirty: false,
        })
    }

    fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    fn is_full(&self) -> bool {
        self.header.count >= self.max_entries
    }

    /// Whether an entry stored at `ts` (never below `end_ts`) still fits the time diff.
    fn fits_time(&self, ts: u64) -> bool {
        self.is_empty() || ts.saturating_sub(self.header.begin_ts) <= MAX_TIME_DIFF_MS
    }

    fn entries_base(&self) -> usize {
        HEADER_SIZE + SLOT_SIZE * self.header.slots as usize
    }

    fn slot_pos(&self, hash: u32) -> usize {
        HEADER_SIZE + SLOT_SIZE * (hash % self.header.slots) as usize
    }

    fn entry_pos(&self, n: u32) -> usize {
        self.entries_base() + ENTRY_SIZE * (n as usize - 1)
    }

    fn read_entry(&self, n: u32) -> Entry {
        let b = &self.map[self.entry_pos(n)..][..ENTRY_SIZE];
        Entry {
            hash: get_u32(b, E_HASH),
            phy: get_u64(b, E_PHY),
            diff: get_u32(b, E_DIFF),
            prev: get_u32(b, E_PREV),
        }
    }

    /// Appends one entry. The caller checked `!is_full()` and `fits_time(ts)`, and that `phy`
    /// and `ts` are not below the file's end.
    fn put(&mut self, hash: u32, phy: u64, ts: u64) {
        debug_assert!(!self.is_full() && self.fits_time(ts));
        let n = self.header.count + 1;
        let slot_pos = self.slot_pos(hash);
        let head = get_u32(&self.map, slot_pos);
        let prev = if head <= self.header.count { head } else { 0 };
        let begin_ts = if self.is_empty() {
            ts
        } else {
            self.header.begin_ts
        };
        // fits_time guarantees the diff is at most i32::MAX.
        let diff = (ts - begin_ts) as u32;
        let pos = self.entry_pos(n);
        if let Some(at) = crate::region::append_populate_at(pos, ENTRY_SIZE) {
            let len = crate::region::APPEND_POPULATE_CHUNK.min(self.map.len() - at);
            // Best effort: what is not populated faults in on demand.
            let _ = self
                .map
                .advise_range(memmap2::Advice::PopulateWrite, at, len);
        }
        let b = &mut self.map[pos..pos + ENTRY_SIZE];
        put_u32(b, E_HASH, hash);
        put_u64(b, E_PHY, phy);
        put_u32(b, E_DIFF, diff);
        put_u32(b, E_PREV, prev);
        put_u32(&mut self.map, slot_pos, n);
        if self.is_empty() {
            self.header.begin_ts = ts;
            self.header.begin_phy = phy;
        }
        self.header.end_ts = ts;
        self.header.end_phy = phy;
        self.header.count = n;
        self.header.encode(&mut self.map[..HEADER_SIZE]);
        self.dirty = true;
    }

    /// Appends to `out` the offsets of entries with `hash` stored in `[begin, end]`, newest
    /// first, skipping an offset equal to the last one in `out`, until `out.len() == max`.
    fn search(&self, hash: u32, begin: u64, end: u64, max: usize, out: &mut Vec<u64>) {
        let count = self.header.count;
        let mut n = get_u32(&self.map, self.slot_pos(hash));
        while n != 0 && n <= count && out.len() < max {
            let e = self.read_entry(n);
            if e.diff > MAX_TIME_DIFF_MS as u32 {
                break;
            }
            let t = self.header.begin_ts.saturating_add(u64::from(e.diff));
            if t < begin {
                break;
            }
            if e.hash == hash && t <= end && out.last() != Some(&e.phy) {
                out.push(e.phy);
            }
            if e.prev >= n {
                break;
            }
            n = e.prev;
        }
    }

    /// Rebuilds the slot table from entries `1..=index_count` if any slot points past
    /// `index_count` (a slot page written back after the last flush while the header was not).
    /// Slots at or below `index_count` are correct already: after a flush, slots only change to
    /// numbers above the flushed count. Returns whether anything changed.
    fn repair_slots(&mut self) -> bool {
        let count = self.header.count;
        let slots = self.header.slots as usize;
        let table = HEADER_SIZE..HEADER_SIZE + SLOT_SIZE * slots;
        let ahead = self.map[table.clone()]
            .chunks_exact(SLOT_SIZE)
            .any(|c| get_u32(c, 0) > count);
        if !ahead {
            return false;
        }
        let mut heads = vec![0u32; slots];
        for n in 1..=count {
            let hash = self.read_entry(n).hash;
            heads[(hash % self.header.slots) as usize] = n;
        }
        for (c, head) in self.map[table].chunks_exact_mut(SLOT_SIZE).zip(heads) {
            put_u32(c, 0, head);
        }
        self.dirty = true;
        true
    }

    /// Syncs slots and entries, then the header.
    fn flush(&mut self) -> Result<(), IndexError> {
        if self.dirty {
            let base = HEADER_SIZE;
            self.map.flush_range(base, self.map.len() - base)?;
            self.map.flush_range(0, HEADER_SIZE)?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// The index: a directory of index files, oldest first; the newest one takes new entries.
pub struct IndexService {
    dir: PathBuf,
    cfg: IndexConfig,
    files: Vec<IndexFile>,
    /// Name of the newest file ever created or loaded, to keep names strictly increasing.
    last_name: u64,
}

impl fmt::Debug for IndexService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexService")
            .field("dir", &self.dir)
            .field("cfg", &self.cfg)
            .field(
                "files",
                &self.files.iter().map(|x| x.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl IndexService {
    /// Opens the index in `dir`, creating the directory if needed, loading and validating every
    /// file named by 20 digits (a malformed one gives [`IndexError::Corrupt`] naming it) and
    /// deleting leftover `<20 digits>.tmp` files. `cfg` sizes files created from now on.
    ///
    /// The newest files' slot tables are checked (`4 * slots` bytes read) and rebuilt if a
    /// slot points past the entry count, which happens when the process died inside a `put`
    /// between setting the slot and the header.
    pub fn open(dir: &Path, cfg: IndexConfig) -> Result<IndexService, IndexError> {
        cfg.validate()?;
        fs::create_dir_all(dir)?;
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(s) = file_name.to_str() else {
                continue;
            };
            match (
                s.strip_suffix(TMP_SUFFIX).and_then(parse_name),
                parse_name(s),
            ) {
                (Some(_), _) => fs::remove_file(entry.path())?,
                (None, Some(name)) if entry.file_type()?.is_file() => {
                    names.push((name, entry.path()));
                }
                _ => {}
            }
        }
        names.sort_unstable_by_key(|(n, _)| *n);
        let mut files: Vec<IndexFile> = Vec::with_capacity(names.len());
        for (name, path) in names {
            let f = IndexFile::load(path, name)?;
            let older = files.iter().rev().find(|p| !p.is_empty());
            let overlaps = older.filter(|p| {
                !f.is_empty()
                    && (f.header.begin_ts < p.header.end_ts
                        || f.header.begin_phy < p.header.end_phy)
            });
            if let Some(p) = overlaps {
                return Err(corrupt(
                    &f.path,
                    format!(
                        "starts at time {} offset {}, before the end (time {} offset {}) of the \
                         older file {}",
                        f.header.begin_ts,
                        f.header.begin_phy,
                        p.header.end_ts,
                        p.header.end_phy,
                        p.path.display()
                    ),
                ));
            }
            files.push(f);
        }
        let last_name = files.last().map_or(0, |f| f.name);
        let mut service = IndexService {
            dir: dir.to_path_buf(),
            cfg,
            files,
            last_name,
        };
        service.repair_tail()?;
        Ok(service)
    }

    /// Rebuilds the slot tables of the newest non-empty file and the empty files after it if
    /// they point past the entry count, and flushes what changed. Only those files can have
    /// been written to since their last flush.
    fn repair_tail(&mut self) -> Result<(), IndexError> {
        let from = self.files.iter().rposition(|f| !f.is_empty()).unwrap_or(0);
        for f in &mut self.files[from..] {
            if f.repair_slots() {
                f.flush()?;
            }
        }
        Ok(())
    }

    /// Header of the newest non-empty file.
    fn newest_header(&self) -> Option<&Header> {
        self.files
            .iter()
            .rev()
            .find(|f| !f.is_empty())
            .map(|f| &f.header)
    }

    /// Indexes `key` for the message at `commit_log_offset` stored at `store_timestamp_ms`,
    /// rolling to a new file when the current one is full (or its time diff would overflow).
    ///
    /// A put below [`max_commit_log_offset`](Self::max_commit_log_offset) is ignored (already
    /// indexed); a timestamp below the newest indexed one is raised to it (see the module doc).
    pub fn put(
        &mut self,
        key: &str,
        commit_log_offset: u64,
        store_timestamp_ms: u64,
    ) -> Result<(), IndexError> {
        self.put_hash(key_hash(key), commit_log_offset, store_timestamp_ms)
    }

    /// [`IndexService::put`] of a key known by its [`key_hash`].
    pub fn put_hash(
        &mut self,
        hash: u32,
        commit_log_offset: u64,
        store_timestamp_ms: u64,
    ) -> Result<(), IndexError> {
        let (max_phy, last_ts) = match self.newest_header() {
            Some(h) => (Some(h.end_phy), h.end_ts),
            None => (None, 0),
        };
        if max_phy.is_some_and(|m| commit_log_offset < m) {
            return Ok(());
        }
        let ts = store_timestamp_ms.max(last_ts);
        let roll = self
            .files
            .last()
            .is_none_or(|f| f.is_full() || !f.fits_time(ts));
        if roll {
            let name = now_ms().max(self.last_name.saturating_add(1));
            let f = IndexFile::create(&self.dir, name, self.cfg)?;
            self.last_name = name;
            self.files.push(f);
        }
        if let Some(f) = self.files.last_mut() {
            f.put(hash, commit_log_offset, ts);
        }
        Ok(())
    }

    /// Commit-log offsets of entries whose key hash equals `key`'s and whose stored time is in
    /// `[begin_ms, end_ms]`, newest first, at most `max`, with consecutive duplicates removed.
    /// Files whose time range does not overlap are skipped. Hash collisions are possible: the
    /// caller must check the key against the message.
    pub fn query(
        &self,
        key: &str,
        begin_ms: u64,
        end_ms: u64,
        max: usize,
    ) -> Result<Vec<u64>, IndexError> {
        let mut out = Vec::new();
        if max == 0 || begin_ms > end_ms {
            return Ok(out);
        }
        let hash = key_hash(key);
        for f in self.files.iter().rev() {
            if f.is_empty() || f.header.begin_ts > end_ms {
                continue;
            }
            if f.header.end_ts < begin_ms {
                break;
            }
            f.search(hash, begin_ms, end_ms, max, &mut out);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Syncs every file written since the last flush (entries and slots first, then header).
    pub fn flush(&mut self) -> Result<(), IndexError> {
        for f in &mut self.files {
            f.flush()?;
        }
        Ok(())
    }

    /// The highest commit-log offset indexed (from the headers), or `None` if nothing is.
    pub fn max_commit_log_offset(&self) -> Option<u64> {
        self.newest_header().map(|h| h.end_phy)
    }

    /// Crash recovery: deletes every file whose `end_phy` is above `commit_log_offset` (whole
    /// files, as RocketMQ does). Pass an offset such that every put at or below it happened
    /// before the last completed [`flush`](Self::flush) (see the module doc). Slot tables of
    /// the remaining newest files that point past their entry count (written back after that
    /// flush) are rebuilt and flushed. The dispatcher then re-puts from
    /// [`max_commit_log_offset`](Self::max_commit_log_offset).
    pub fn truncate_after(&mut self, commit_log_offset: u64) -> Result<(), IndexError> {
        self.remove_where(|f, _| !f.is_empty() && f.header.end_phy > commit_log_offset)?;
        // The newest remaining file may have been written after the last flush (see the
        // module doc); fix slots that run ahead of its header.
        self.repair_tail()
    }

    /// Retention: deletes every file except the newest whose `end_phy` is below
    /// `commit_log_offset` (empty ones count as ending at 0). Returns how many were deleted.
    pub fn delete_below(&mut self, commit_log_offset: u64) -> Result<usize, IndexError> {
        let last = self.files.len().saturating_sub(1);
        self.remove_where(|f, i| i < last && (f.is_empty() || f.header.end_phy < commit_log_offset))
    }

    /// Number of index files.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Drops and unlinks the files matching `pred(file, index)`. Every matching file is
    /// forgotten even if unlinking one fails (the first error is returned; a file left on disk
    /// is loaded again by the next `open`).
    fn remove_where(
        &mut self,
        pred: impl Fn(&IndexFile, usize) -> bool,
    ) -> Result<usize, IndexError> {
        let mut kept = Vec::with_capacity(self.files.len());
        let mut removed = Vec::new();
        for (i, f) in std::mem::take(&mut self.files).into_iter().enumerate() {
            if pred(&f, i) {
                removed.push(f)
            } else {
                kept.push(f)
            }
        }
        self.files = kept;
        let count = removed.len();
        let mut first_err = None;
        for f in removed {
            let path = f.path.clone();
            drop(f);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let synced = if count > 0 {
            sync_dir(&self.dir)
        } else {
            Ok(())
        };
        if let Err(e) = synced {
            first_err.get_or_insert(e);
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(count),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tempfile::TempDir;

    fn tiny() -> IndexConfig {
        IndexConfig {
            slots: 8,
            max_entries: 16,
        }
    }

    fn open(dir: &TempDir, cfg: IndexConfig) -> IndexService {
        IndexService::open(dir.path(), cfg).expect("open index")
    }

    fn index_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .and_then(|s| s.to_str())
                    .and_then(parse_name)
                    .is_some()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn key_hash_matches_java() {
        // Values of java.lang.String#hashCode.
        assert_eq!(key_hash(""), 0);
        assert_eq!(key_hash("a"), 97);
        assert_eq!(key_hash("Aa"), 2112);
        assert_eq!(key_hash("BB"), 2112);
        assert_eq!(key_hash("hello"), 99_162_322);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE -> 0 in RocketMQ.
        assert_eq!(key_hash("polygenelubricants"), 0);
        // Negative hash: "hello world!".hashCode() == -217_287_203, abs'd.
        assert_eq!(key_hash("hello world!"), 217_287_203);
        // The 8-byte steps agree with the plain fold at every length, and a key hashed in two
        // pieces hashes as the whole.
        let plain = |k: &str| {
            let h = k
                .encode_utf16()
                .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
            if h == i32::MIN { 0 } else { h.unsigned_abs() }
        };
        let long = "orders#7F0000012A9F18B4AAC25F3A0000000000001234~";
        for n in 0..long.len() {
            assert_eq!(key_hash(&long[..n]), plain(&long[..n]), "{n}");
            let mut h = KeyHasher::default();
            h.update(&long[..n]);
            assert!(h.update_utf8(&long.as_bytes()[n..]));
            assert_eq!(h.finish(), plain(long), "{n}");
        }
        let mixed = "topic#ключ-\u{1F600}-key";
        let mut h = KeyHasher::default();
        h.update("topic#");
        assert!(h.update_utf8("ключ-\u{1F600}-key".as_bytes()));
        assert_eq!(h.finish(), plain(mixed));
        assert!(!h.update_utf8(b"\xff"));
        assert_eq!(h.finish(), plain(mixed), "nothing appended");
        // Non-BMP characters hash as UTF-16 surrogate pairs.
        assert_eq!(key_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
    }

    #[test]
    fn config_validation() {
        assert!(IndexConfig::default().validate().is_ok());
        assert_eq!(IndexConfig::default().file_size(), 420_000_040);
        for bad in [
            IndexConfig {
                slots: 0,
                max_entries: 1,
            },
            IndexConfig {
                slots: 1,
                max_entries: 0,
            },
            IndexConfig {
                slots: u32::MAX,
                max_entries: 1,
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(IndexError::InvalidConfig(_))),
                "{bad:?}"
            );
            let dir = TempDir::new().unwrap();
            assert!(matches!(
                IndexService::open(dir.path(), bad),
                Err(IndexError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn put_query_round_trip() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 64,
                max_entries: 100,
            },
        );
        assert_eq!(idx.max_commit_log_offset(), None);
        assert_eq!(idx.file_count(), 0);
        assert!(idx.query("k1", 0, u64::MAX, 10).unwrap().is_empty());
        idx.put("k1", 100, 1_000).unwrap();
        idx.put("k2", 200, 1_001).unwrap();
        idx.put("k1", 300, 1_002).unwrap();
        assert_eq!(idx.file_count(), 1);
        assert_eq!(idx.query("k1", 0, u64::MAX, 10).unwrap(), vec![300, 100]);
        assert_eq!(idx.query("k2", 0, u64::MAX, 10).unwrap(), vec![200]);
        assert!(idx.query("k3", 0, u64::MAX, 10).unwrap().is_empty());
        assert_eq!(idx.max_commit_log_offset(), Some(300));
        // On-disk layout: header fields and entry 1 where the module doc says.
        idx.flush().unwrap();
        let bytes = fs::read(&index_files(dir.path())[0]).unwrap();
        assert_eq!(
            bytes.len() as u64,
            IndexConfig {
                slots: 64,
                max_entries: 100
            }
            .file_size()
        );
        let h = Header::decode(&bytes);
        assert_eq!(
            h,
            Header {
                begin_ts: 1_000,
                end_ts: 1_002,
                begin_phy: 100,
                end_phy: 300,
                slots: 64,
                count: 3
            }
        );
        let e1 = HEADER_SIZE + SLOT_SIZE * 64;
        assert_eq!(get_u32(&bytes, e1), key_hash("k1"));
        assert_eq!(get_u64(&bytes, e1 + 4), 100);
        assert_eq!(get_u32(&bytes, e1 + 12), 0);
        assert_eq!(get_u32(&bytes, e1 + 16), 0);
        let e3 = e1 + 2 * ENTRY_SIZE;
        assert_eq!(get_u32(&bytes, e3 + 12), 2);
        assert_eq!(get_u32(&bytes, e3 + 16), 1);
        let slot = HEADER_SIZE + SLOT_SIZE * (key_hash("k1") % 64) as usize;
        assert_eq!(get_u32(&bytes, slot), 3);
    }

    #[test]
    fn default_config_files_are_sparse_and_reopen() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, IndexConfig::default());
        idx.put("order-1", 0, 1_763_700_000_000).unwrap();
        idx.put("order-2", 512, 1_763_700_000_001).unwrap();
        idx.put("order-1", 1_024, 1_763_700_000_002).unwrap();
        idx.flush().unwrap();
        let files = index_files(dir.path());
        assert_eq!(files.len(), 1);
        assert_eq!(fs::metadata(&files[0]).unwrap().len(), 420_000_040);
        drop(idx);
        let idx = open(&dir, IndexConfig::default());
        assert_eq!(
            idx.query("order-1", 0, u64::MAX, 32).unwrap(),
            vec![1_024, 0]
        );
        assert_eq!(idx.max_commit_log_offset(), Some(1_024));
    }

    #[test]
    fn time_range_filtering() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 16,
                max_entries: 100,
            },
        );
        for i in 0..10u64 {
            idx.put("k", i * 10, 1_000 + i * 100).unwrap();
        }
        // Times 1000, 1100, ..., 1900; bounds inclusive, millisecond exact.
        assert_eq!(idx.query("k", 1_100, 1_300, 100).unwrap(), vec![30, 20, 10]);
        assert_eq!(idx.query("k", 1_101, 1_299, 100).unwrap(), vec![20]);
        assert_eq!(
            idx.query("k", 1_101, 1_199, 100).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(idx.query("k", 0, 999, 100).unwrap(), Vec::<u64>::new());
        assert_eq!(
            idx.query("k", 1_901, u64::MAX, 100).unwrap(),
            Vec::<u64>::new()
        );
        assert_eq!(idx.query("k", 1_900, 1_900, 100).unwrap(), vec![90]);
        assert_eq!(
            idx.query("k", 1_300, 1_100, 100).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn max_limit_and_newest_first() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        for i in 0..40u64 {
            idx.put("key", 1_000 + i, 5_000 + i).unwrap();
            idx.put("other", 1_000 + i, 5_000 + i).unwrap();
        }
        assert_eq!(
            idx.query("key", 0, u64::MAX, 3).unwrap(),
            vec![1_039, 1_038, 1_037]
        );
        assert_eq!(idx.query("key", 0, 5_010, 2).unwrap(), vec![1_010, 1_009]);
        assert!(idx.query("key", 0, u64::MAX, 0).unwrap().is_empty());
        let all = idx.query("key", 0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(all, (1_000..1_040).rev().collect::<Vec<_>>());
    }

    #[test]
    fn hash_collisions_return_both() {
        assert_eq!(key_hash("Aa"), key_hash("BB"));
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 1024,
                max_entries: 100,
            },
        );
        idx.put("Aa", 10, 100).unwrap();
        idx.put("BB", 20, 101).unwrap();
        idx.put("Ab", 30, 102).unwrap();
        assert_eq!(idx.query("Aa", 0, u64::MAX, 10).unwrap(), vec![20, 10]);
        assert_eq!(idx.query("BB", 0, u64::MAX, 10).unwrap(), vec![20, 10]);
        assert_eq!(idx.query("Ab", 0, u64::MAX, 10).unwrap(), vec![30]);
        // A message carrying both colliding keys is reported once.
        idx.put("Aa", 40, 103).unwrap();
        idx.put("BB", 40, 103).unwrap();
        assert_eq!(idx.query("Aa", 0, u64::MAX, 10).unwrap(), vec![40, 20, 10]);
    }

    #[test]
    fn slot_sharing_different_hashes_are_filtered() {
        let dir = TempDir::new().unwrap();
        // One slot: every key shares one chain.
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 1,
                max_entries: 100,
            },
        );
        for i in 0..30u64 {
            idx.put(&format!("k{}", i % 3), i, i).unwrap();
        }
        let want: Vec<u64> = (0..30).rev().filter(|i| i % 3 == 1).collect();
        assert_eq!(idx.query("k1", 0, u64::MAX, 100).unwrap(), want);
    }

    #[test]
    fn rolls_across_many_files() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        for i in 0..100u64 {
            idx.put(&format!("k{}", i % 5), i * 7, 10_000 + i * 3)
                .unwrap();
        }
        // 16 entries per file: 100 entries -> 7 files.
        assert_eq!(idx.file_count(), 7);
        assert_eq!(index_files(dir.path()).len(), 7);
        let want: Vec<u64> = (0..100)
            .rev()
            .filter(|i| i % 5 == 2)
            .map(|i| i * 7)
            .collect();
        assert_eq!(idx.query("k2", 0, u64::MAX, 1_000).unwrap(), want);
        // A range spanning files 1..=4 only.
        let (b, e) = (10_000 + 20 * 3, 10_000 + 70 * 3);
        let want: Vec<u64> = (20..=70)
            .rev()
            .filter(|i| i % 5 == 2)
            .map(|i| i * 7)
            .collect::<Vec<_>>();
        assert_eq!(idx.query("k2", b, e, 1_000).unwrap(), want);
        assert_eq!(idx.max_commit_log_offset(), Some(99 * 7));
    }

    #[test]
    fn reopen_after_flush_returns_same_results() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        for i in 0..50u64 {
            idx.put(&format!("k{}", i % 4), i, 1_000 + i).unwrap();
        }
        idx.flush().unwrap();
        let before: Vec<Vec<u64>> = (0..4)
            .map(|k| idx.query(&format!("k{k}"), 1_010, 1_045, 100).unwrap())
            .collect();
        let files = idx.file_count();
        drop(idx);
        // A different config only affects new files.
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 3,
                max_entries: 5,
            },
        );
        assert_eq!(idx.file_count(), files);
        assert_eq!(idx.max_commit_log_offset(), Some(49));
        let after: Vec<Vec<u64>> = (0..4)
            .map(|k| idx.query(&format!("k{k}"), 1_010, 1_045, 100).unwrap())
            .collect();
        assert_eq!(before, after);
        // The reopened current file keeps filling, then new small files are made.
        for i in 50..70u64 {
            idx.put(&format!("k{}", i % 4), i, 1_000 + i).unwrap();
        }
        let want: Vec<u64> = (0..70).rev().filter(|i| i % 4 == 1).collect();
        assert_eq!(idx.query("k1", 0, u64::MAX, 100).unwrap(), want);
        assert!(idx.file_count() > files);
    }

    #[test]
    fn stale_puts_ignored_and_time_clamped() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        idx.put("a", 100, 5_000).unwrap();
        idx.put("a", 50, 6_000).unwrap(); // below the max offset: ignored
        assert_eq!(idx.query("a", 0, u64::MAX, 10).unwrap(), vec![100]);
        idx.put("a", 100, 5_000).unwrap(); // same message re-put: deduplicated
        assert_eq!(idx.query("a", 0, u64::MAX, 10).unwrap(), vec![100]);
        idx.put("a", 200, 4_000).unwrap(); // clock stepped back: stored at 5000
        assert_eq!(idx.query("a", 5_000, 5_000, 10).unwrap(), vec![200, 100]);
        assert!(idx.query("a", 0, 4_999, 10).unwrap().is_empty());
    }

    #[test]
    fn rolls_when_time_diff_overflows() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 8,
                max_entries: 100,
            },
        );
        let t0 = 1_700_000_000_000;
        idx.put("k", 1, t0).unwrap();
        idx.put("k", 2, t0 + MAX_TIME_DIFF_MS).unwrap();
        assert_eq!(idx.file_count(), 1);
        idx.put("k", 3, t0 + MAX_TIME_DIFF_MS + 1).unwrap();
        assert_eq!(idx.file_count(), 2);
        assert_eq!(idx.query("k", 0, u64::MAX, 10).unwrap(), vec![3, 2, 1]);
        assert_eq!(
            idx.query("k", t0 + 1, t0 + MAX_TIME_DIFF_MS, 10).unwrap(),
            vec![2]
        );
    }

    #[test]
    fn truncate_after_deletes_whole_files() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        // Files hold offsets 0..16, 16..32, 32..48, 48..50.
        for i in 0..50u64 {
            idx.put("k", i, 1_000 + i).unwrap();
        }
        assert_eq!(idx.file_count(), 4);
        idx.truncate_after(40).unwrap();
        assert_eq!(idx.file_count(), 2);
        assert_eq!(index_files(dir.path()).len(), 2);
        assert_eq!(idx.max_commit_log_offset(), Some(31));
        assert_eq!(
            idx.query("k", 0, u64::MAX, 100).unwrap(),
            (0..32).rev().collect::<Vec<_>>()
        );
        // File end == offset is kept.
        idx.truncate_after(31).unwrap();
        assert_eq!(idx.file_count(), 2);
        // Re-dispatch from the max offset: duplicates are skipped, the rest appended.
        for i in 20..50u64 {
            idx.put("k", i, 1_000 + i).unwrap();
        }
        assert_eq!(
            idx.query("k", 0, u64::MAX, 100).unwrap(),
            (0..50).rev().collect::<Vec<_>>()
        );
        idx.truncate_after(0).unwrap();
        assert_eq!(idx.file_count(), 0);
        assert_eq!(idx.max_commit_log_offset(), None);
        idx.put("k", 7, 1).unwrap();
        assert_eq!(idx.query("k", 0, u64::MAX, 100).unwrap(), vec![7]);
    }

    #[test]
    fn delete_below_keeps_current_file() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(&dir, tiny());
        for i in 0..50u64 {
            idx.put("k", i, 1_000 + i).unwrap();
        }
        assert_eq!(idx.delete_below(15).unwrap(), 0); // first file ends at 15
        assert_eq!(idx.delete_below(16).unwrap(), 1);
        assert_eq!(idx.file_count(), 3);
        assert_eq!(
            idx.query("k", 0, u64::MAX, 100).unwrap(),
            (16..50).rev().collect::<Vec<_>>()
        );
        assert_eq!(idx.delete_below(u64::MAX).unwrap(), 2);
        assert_eq!(idx.file_count(), 1);
        assert_eq!(index_files(dir.path()).len(), 1);
        assert_eq!(idx.query("k", 0, u64::MAX, 100).unwrap(), vec![49, 48]);
        assert_eq!(idx.max_commit_log_offset(), Some(49));
        drop(idx);
        let idx = open(&dir, tiny());
        assert_eq!(idx.file_count(), 1);
        assert_eq!(idx.query("k", 0, u64::MAX, 100).unwrap(), vec![49, 48]);
    }

    fn write_at(path: &Path, at: u64, bytes: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn expect_corrupt(dir: &TempDir, path: &Path) {
        match IndexService::open(dir.path(), tiny()) {
            Err(IndexError::Corrupt { file, reason }) => {
                assert_eq!(file, path, "{reason}");
                assert!(!reason.is_empty());
            }
            other => panic!("expected Corrupt for {}, got {other:?}", path.display()),
        }
    }

    fn three_files(dir: &TempDir) -> Vec<PathBuf> {
        let mut idx = open(dir, tiny());
        for i in 0..40u64 {
            idx.put("k", i, 1_000 + i).unwrap();
        }
        idx.flush().unwrap();
        drop(idx);
        let files = index_files(dir.path());
        assert_eq!(files.len(), 3);
        files
    }

    #[test]
    fn corrupt_header_names_the_file() {
        // Each case corrupts the middle file one way.
        let cases: Vec<(u64, Vec<u8>)> = vec![
            (H_SLOTS as u64, 0u32.to_be_bytes().to_vec()),
            (H_SLOTS as u64, 9u32.to_be_bytes().to_vec()),
            (H_SLOTS as u64, u32::MAX.to_be_bytes().to_vec()),
            (H_COUNT as u64, 17u32.to_be_bytes().to_vec()),
            (H_BEGIN_TS as u64, u64::MAX.to_be_bytes().to_vec()),
            (H_BEGIN_PHY as u64, 1_000u64.to_be_bytes().to_vec()),
            // Starts before the end of the older file.
            (H_BEGIN_PHY as u64, 3u64.to_be_bytes().to_vec()),
        ];
        for (at, bytes) in cases {
            let dir = TempDir::new().unwrap();
            let files = three_files(&dir);
            write_at(&files[1], at, &bytes);
            expect_corrupt(&dir, &files[1]);
        }
        // Wrong length.
        let dir = TempDir::new().unwrap();
        let files = three_files(&dir);
        OpenOptions::new()
            .write(true)
            .open(&files[2])
            .unwrap()
            .set_len(20)
            .unwrap();
        expect_corrupt(&dir, &files[2]);
        let dir = TempDir::new().unwrap();
        let files = three_files(&dir);
        let len = fs::metadata(&files[0]).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&files[0])
            .unwrap()
            .set_len(len + 1)
            .unwrap();
        expect_corrupt(&dir, &files[0]);
    }

    #[test]
    fn tmp_files_removed_and_foreign_files_ignored() {
        let dir = TempDir::new().unwrap();
        let files = three_files(&dir);
        let tmp = dir
            .path()
            .join(format!("{}{TMP_SUFFIX}", format_name(u64::MAX / 2)));
        fs::write(&tmp, b"half-made").unwrap();
        fs::write(dir.path().join("README"), b"not an index").unwrap();
        let idx = open(&dir, tiny());
        assert_eq!(idx.file_count(), files.len());
        assert!(!tmp.exists());
        assert!(dir.path().join("README").exists());
        assert_eq!(idx.query("k", 0, u64::MAX, 100).unwrap().len(), 40);
    }

    #[test]
    fn open_repairs_slot_set_before_header() {
        // The process died inside put: entry 4 and its slot written, header not.
        let dir = TempDir::new().unwrap();
        let cfg = IndexConfig {
            slots: 2,
            max_entries: 16,
        };
        let mut idx = open(&dir, cfg);
        for i in 0..3u64 {
            idx.put("k", i, 100 + i).unwrap();
        }
        let path = index_files(dir.path())[0].clone();
        let f = &mut idx.files[0];
        let pos = f.entry_pos(4);
        let slot = f.slot_pos(key_hash("k"));
        put_u32(&mut f.map[pos..], E_HASH, key_hash("k"));
        put_u64(&mut f.map[pos..], E_PHY, 3);
        put_u32(&mut f.map[pos..], E_PREV, 3);
        put_u32(&mut f.map, slot, 4);
        drop(idx);
        let mut idx = open(&dir, cfg);
        assert_eq!(get_u32(&fs::read(&path).unwrap(), slot), 3);
        assert_eq!(idx.query("k", 0, u64::MAX, 10).unwrap(), vec![2, 1, 0]);
        idx.put("k", 3, 103).unwrap();
        assert_eq!(idx.query("k", 0, u64::MAX, 10).unwrap(), vec![3, 2, 1, 0]);
    }

    #[test]
    fn torn_chain_is_not_followed() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 1,
                max_entries: 16,
            },
        );
        for i in 0..5u64 {
            idx.put("k", i, 100 + i).unwrap();
        }
        idx.flush().unwrap();
        let path = index_files(dir.path())[0].clone();
        drop(idx);
        // Entry 3's prev pointing forwards (to itself) ends the walk there.
        let e3 = (HEADER_SIZE + SLOT_SIZE + 2 * ENTRY_SIZE + E_PREV) as u64;
        write_at(&path, e3, &3u32.to_be_bytes());
        let idx = open(
            &dir,
            IndexConfig {
                slots: 1,
                max_entries: 16,
            },
        );
        assert_eq!(idx.query("k", 0, u64::MAX, 100).unwrap(), vec![4, 3, 2]);
    }

    #[test]
    fn file_names_are_20_digits_and_increasing() {
        let dir = TempDir::new().unwrap();
        let mut idx = open(
            &dir,
            IndexConfig {
                slots: 1,
                max_entries: 1,
            },
        );
        for i in 0..20u64 {
            idx.put("k", i, i).unwrap();
        }
        let names: Vec<u64> = index_files(dir.path())
            .iter()
            .map(|p| parse_name(p.file_name().unwrap().to_str().unwrap()).unwrap())
            .collect();
        assert_eq!(names.len(), 20);
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        assert!(names[0] + 1_000 * 3_600 * 24 > now_ms()); // creation time in ms
    }

    /// What the index must answer, kept as a plain list.
    #[derive(Default, Clone)]
    struct Model {
        /// (key index into `KEYS`, offset, stored time) in put order.
        entries: Vec<(usize, u64, u64)>,
    }

    impl Model {
        /// Mirrors `IndexService::put`: skip offsets below the last, raise times to the last.
        fn put(&mut self, key: usize, off: u64, ts: u64) {
            match self.entries.last() {
                Some(&(_, last_off, _)) if off < last_off => {}
                Some(&(_, _, last_ts)) => self.entries.push((key, off, ts.max(last_ts))),
                None => self.entries.push((key, off, ts)),
            }
        }

        fn query(&self, key: usize, begin: u64, end: u64, max: usize) -> Vec<u64> {
            let h = key_hash(KEYS[key]);
            let mut out: Vec<u64> = Vec::new();
            for &(k, off, t) in self.entries.iter().rev() {
                if out.len() >= max {
                    break;
                }
                let hit = key_hash(KEYS[k]) == h && begin <= t && t <= end;
                if hit && out.last() != Some(&off) {
                    out.push(off);
                }
            }
            out
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            key: usize,
            off_step: u64,
            ts_step: i64,
        },
        Query {
            key: usize,
            back: u64,
            len: u64,
            max: usize,
        },
        /// Crash recovery: `truncate_after(off - back)`, then re-dispatch from the max offset.
        Recover {
            back: u64,
        },
        /// Retention: `delete_below(off - back)`.
        Retain {
            back: u64,
        },
        /// A range with an edge on the stored time of an earlier entry.
        QueryEdge {
            key: usize,
            pick: usize,
            back: u64,
            fwd: u64,
            max: usize,
        },
        Reopen,
    }

    const KEYS: [&str; 6] = ["Aa", "BB", "order-1", "order-2", "x", "polygenelubricants"];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..KEYS.len(), 0u64..3, -50i64..400)
                .prop_map(|(key, off_step, ts_step)| Op::Put { key, off_step, ts_step }),
            1 => (0..KEYS.len(), 0u64..3)
                .prop_map(|(key, off_step)| Op::Put {
                    key,
                    off_step,
                    ts_step: MAX_TIME_DIFF_MS as i64,
                }),
            4 => (0..KEYS.len(), 0u64..30_000, 0u64..20_000, 0usize..12)
                .prop_map(|(key, back, len, max)| Op::Query { key, back, len, max }),
            3 => (0..KEYS.len(), any::<usize>(), prop_oneof![Just(0u64), 0u64..500],
                  prop_oneof![Just(0u64), 0u64..500], 1usize..12)
                .prop_map(|(key, pick, back, fwd, max)| Op::QueryEdge { key, pick, back, fwd, max }),
            1 => Just(Op::Reopen),
            1 => (0u64..40).prop_map(|back| Op::Recover { back }),
            1 => (0u64..40).prop_map(|back| Op::Retain { back }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn matches_model(
            ops in proptest::collection::vec(op(), 1..200),
            slots in 1u32..6,
            max_entries in 1u32..12,
        ) {
            let cfg = IndexConfig { slots, max_entries };
            let dir = TempDir::new().unwrap();
            let mut idx = IndexService::open(dir.path(), cfg).unwrap();
            // `log`: every (key, offset, time) ever dispatched, i.e. the commit log.
            // `phys`: the entries the index files should hold, in order (re-dispatch after
            // recovery adds duplicates, retention drops a prefix).
            let (mut log, mut phys) = (Model::default(), Model::default());
            let mut retained = false;
            let (mut off, mut ts) = (0u64, 1_000u64);
            for op in ops {
                let q = match op {
                    Op::Put { key, off_step, ts_step } => {
                        off += off_step;
                        if off_step > 0 {
                            // One message (offset) has one store time.
                            ts = ts.saturating_add_signed(ts_step);
                        }
                        idx.put(KEYS[key], off, ts).unwrap();
                        log.put(key, off, ts);
                        phys.put(key, off, ts);
                        None
                    }
                    Op::Query { key, back, len, max } => {
                        let begin = ts.saturating_sub(back);
                        Some((key, begin, begin + len, max))
                    }
                    Op::QueryEdge { key, pick, back, fwd, max } => {
                        phys.entries.get(pick % phys.entries.len().max(1)).map(|e| {
                            (key, e.2.saturating_sub(back), e.2 + fwd, max)
                        })
                    }
                    Op::Recover { back } => {
                        let x = off.saturating_sub(back);
                        let files = idx.file_count();
                        idx.truncate_after(x).unwrap();
                        let m = idx.max_commit_log_offset();
                        prop_assert!(m.is_none_or(|m| m <= x));
                        prop_assert!(idx.files.iter().all(|f| f.header.end_phy <= x));
                        let kept: usize = idx.files.iter().map(|f| f.header.count as usize).sum();
                        prop_assert!(kept < phys.entries.len() || idx.file_count() == files);
                        phys.entries.truncate(kept);
                        for &(k, o, t) in &log.entries {
                            if m.is_none_or(|m| o >= m) {
                                idx.put(KEYS[k], o, t).unwrap();
                                phys.put(k, o, t);
                            }
                        }
                        None
                    }
                    Op::Retain { back } => {
                        let x = off.saturating_sub(back);
                        let files = idx.file_count();
                        let n = idx.delete_below(x).unwrap();
                        prop_assert_eq!(idx.file_count(), files - n);
                        prop_assert_eq!(index_files(dir.path()).len(), idx.file_count());
                        let kept: usize = idx.files.iter().map(|f| f.header.count as usize).sum();
                        let gone = phys.entries.len() - kept;
                        prop_assert!(phys.entries[..gone].iter().all(|e| e.1 < x));
                        phys.entries.drain(..gone);
                        retained |= n > 0;
                        None
                    }
                    Op::Reopen => {
                        idx.flush().unwrap();
                        drop(idx);
                        idx = IndexService::open(dir.path(), cfg).unwrap();
                        None
                    }
                };
                if let Some((key, begin, end, max)) = q {
                    let got = idx.query(KEYS[key], begin, end, max).unwrap();
                    prop_assert_eq!(&got, &phys.query(key, begin, end, max));
                    if !retained {
                        prop_assert_eq!(&got, &log.query(key, begin, end, max));
                    }
                }
                prop_assert_eq!(idx.max_commit_log_offset(), phys.entries.last().map(|e| e.1));
            }
            for (key, name) in KEYS.iter().enumerate() {
                let got = idx.query(name, 0, u64::MAX, usize::MAX).unwrap();
                prop_assert_eq!(&got, &phys.query(key, 0, u64::MAX, usize::MAX));
                if !retained {
                    prop_assert_eq!(&got, &log.query(key, 0, u64::MAX, usize::MAX));
                }
            }
        }

        /// Crash after a flush: every byte written since is independently either on disk or
        /// not (headers are written whole); recovery (`truncate_after` + re-dispatch) must give
        /// the model's answers.
        #[test]
        fn crash_recovery_matches_model(
            pre in proptest::collection::vec((0..KEYS.len(), 0u64..3, 0u64..300), 1..60),
            post in proptest::collection::vec((0..KEYS.len(), 0u64..3, 0u64..300), 1..60),
            after in proptest::collection::vec((0..KEYS.len(), 0u64..3, 0u64..300), 0..20),
            slots in 1u32..6,
            max_entries in 1u32..12,
            seed in any::<u64>(),
        ) {
            let cfg = IndexConfig { slots, max_entries };
            let dir = TempDir::new().unwrap();
            let mut idx = IndexService::open(dir.path(), cfg).unwrap();
            let mut log = Model::default();
            let (mut off, mut ts) = (0u64, 1_000u64);
            let mut put = |idx: &mut IndexService, log: &mut Model, (k, step, dt): (usize, u64, u64)| {
                off += step;
                if step > 0 {
                    ts += dt;
                }
                idx.put(KEYS[k], off, ts).unwrap();
                log.put(k, off, ts);
            };
            for &p in &pre {
                put(&mut idx, &mut log, p);
            }
            idx.flush().unwrap();
            let x = idx.max_commit_log_offset().unwrap();
            let snapshot: std::collections::HashMap<PathBuf, Vec<u8>> = index_files(dir.path())
                .into_iter()
                .map(|p| {
                    let b = fs::read(&p).unwrap();
                    (p, b)
                })
                .collect();
            // The next message starts after the flush.
            let mut post = post;
            post[0].1 = post[0].1.max(1);
            for &p in &post {
                put(&mut idx, &mut log, p);
            }
            drop(idx);
            let mut rng = seed | 1;
            let mut coin = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng & 1 == 1
            };
            for path in index_files(dir.path()) {
                let now = fs::read(&path).unwrap();
                let then = snapshot.get(&path).cloned().unwrap_or_else(|| {
                    // Created after the flush: on disk since creation with its first header.
                    let mut b = vec![0u8; now.len()];
                    b[H_SLOTS..H_SLOTS + 4].copy_from_slice(&now[H_SLOTS..H_SLOTS + 4]);
                    b
                });
                let mut torn = if coin() { now[..HEADER_SIZE].to_vec() } else { then[..HEADER_SIZE].to_vec() };
                for (a, b) in now[HEADER_SIZE..].chunks(4).zip(then[HEADER_SIZE..].chunks(4)) {
                    torn.extend_from_slice(if coin() { a } else { b });
                }
                fs::write(&path, torn).unwrap();
            }
            let mut idx = IndexService::open(dir.path(), cfg).unwrap();
            idx.truncate_after(x).unwrap();
            let m = idx.max_commit_log_offset();
            prop_assert!(m.is_none_or(|m| m <= x));
            for &(k, o, t) in &log.entries.clone() {
                if m.is_none_or(|m| o >= m) {
                    idx.put(KEYS[k], o, t).unwrap();
                }
            }
            for &p in &after {
                put(&mut idx, &mut log, p);
            }
            for (key, name) in KEYS.iter().enumerate() {
                prop_assert_eq!(
                    idx.query(name, 0, u64::MAX, usize::MAX).unwrap(),
                    log.query(key, 0, u64::MAX, usize::MAX)
                );
                let mid = log.entries[log.entries.len() / 2].2;
                prop_assert_eq!(
                    idx.query(name, mid, mid + 500, 5).unwrap(),
                    log.query(key, mid, mid + 500, 5)
                );
            }
        }
    }
}

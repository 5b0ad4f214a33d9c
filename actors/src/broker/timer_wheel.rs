//! [`TimerWheel`]: the durable timing wheel behind delivery at a time
//! (the [`super::TimerService`] drives it). Plain data and file I/O, no
//! actor, tested without a runtime.
//!
//! A message sent with a deliver-at time is parked in the commit log
//! (system topic `rmq_sys_wheel_timer`, see the service). The wheel only
//! says **when** each parked message is due, in two files under
//! `<data>/timer/`:
//!
//! - the **timer log**: an append-only sequence of 24-byte entries
//!   `(due_ms u64, queue_offset u64, slot_sec u64)` (little-endian) in
//!   segment files of [`SEGMENT_ENTRIES`] entries, each named by its first
//!   entry's index. `queue_offset` is the parked message's offset in the
//!   timer topic; `slot_sec` the second of the wheel slot it was put in;
//! - the **state** (`state.msgpack`): how many log entries are durable,
//!   the last second fired, and how far the timer topic was read.
//!
//! In memory there is one `u64` per slot — the index of the newest entry
//! of that slot; each entry links to the previous one of its slot through
//! a fourth word, `prev`, so an entry is 32 bytes on disk — and nothing per
//! pending message: a million pending messages are 32 MB of log on disk
//! and the same 8 bytes × slots in memory as none.
//!
//! Slots are seconds: the window is `slots` seconds after the last fired
//! second. A message due within the window goes in its second's slot; one
//! due later goes in the window's last slot and is **rolled** when that
//! slot fires (the service parks it again, which also renews its record
//! in the commit log before retention could remove it).
//!
//! **Recovery**: the log beyond the durable entry count is cut off, and the
//! slots are rebuilt by one scan of the log (entries of seconds already
//! fired are skipped). Entries appended after the last state write are
//! re-read from the timer topic (its read position is in the same state),
//! so nothing is lost and nothing is added twice. Segments whose entries
//! all belong to fired seconds are deleted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Entries per log segment file (32 MiB).
pub const SEGMENT_ENTRIES: u64 = 1 << 20;
/// Bytes per entry.
pub const ENTRY_LEN: u64 = 32;
const NONE: u64 = u64::MAX;

/// One timer log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerEntry {
    /// When the message is due (ms since the Unix epoch).
    pub due_ms: u64,
    /// The parked message's offset in the timer topic.
    pub queue_offset: u64,
    /// The second of the slot it was put in.
    pub slot_sec: u64,
    /// The previous entry of the same slot (index), or none.
    prev: u64,
}

impl TimerEntry {
    fn encode(&self) -> [u8; ENTRY_LEN as usize] {
        let mut b = [0u8; ENTRY_LEN as usize];
        b[0..8].copy_from_slice(&self.due_ms.to_le_bytes());
        b[8..16].copy_from_slice(&self.queue_offset.to_le_bytes());
        b[16..24].copy_from_slice(&self.slot_sec.to_le_bytes());
        b[24..32].copy_from_slice(&self.prev.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Self {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Self {
            due_ms: word(0),
            queue_offset: word(8),
            slot_sec: word(16),
            prev: word(24),
        }
    }
}

/// What is persisted beside the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerState {
    /// Log entries that are durable (the log is cut here at recovery).
    pub entries: u64,
    /// The last second whose slot was fired completely.
    pub fired_sec: u64,
    /// The next timer-topic offset to read into the wheel.
    pub read_offset: u64,
}

/// Why the wheel could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// A file could not be read or written.
    #[error("timer wheel {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The state file is unreadable.
    #[error("timer wheel state: {0}")]
    State(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> TimerError + '_ {
    move |source| TimerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The wheel; see the module docs.
#[derive(Debug)]
pub struct TimerWheel {
    dir: PathBuf,
    slots: u64,
    heads: Vec<u64>,
    /// Segment start index → (file, newest slot second in it).
    segments: BTreeMap<u64, (File, u64)>,
    /// Entries in the log (durable or not).
    len: u64,
    state: TimerState,
}

impl TimerWheel {
    /// Opens (or creates) the wheel in `dir` with `slots` one-second slots,
    /// from `state` (the last persisted one; default for a new wheel, whose
    /// first fired second is then `now_sec - 1`).
    pub fn open(
        dir: &Path,
        slots: u64,
        state: Option<TimerState>,
        now_sec: u64,
    ) -> Result<Self, TimerError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let state = state.unwrap_or(TimerState {
            entries: 0,
            fired_sec: now_sec.saturating_sub(1),
            read_offset: 0,
        });
        let mut wheel = Self {
            dir: dir.to_path_buf(),
            slots: slots.max(2),
            heads: vec![NONE; slots.max(2) as usize],
            segments: BTreeMap::new(),
            len: 0,
            state,
        };
        wheel.recover()?;
        Ok(wheel)
    }

    fn segment_path(&self, start: u64) -> PathBuf {
        self.dir.join(format!("{start:020}"))
    }

    fn recover(&mut self) -> Result<(), TimerError> {
        let mut starts = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let e = e.map_err(io_err(&self.dir))?;
            if let Some(start) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                starts.push(start);
            }
        }
        starts.sort_unstable();
        let durable = self.state.entries;
        for start in starts {
            let path = self.segment_path(start);
            if start >= durable {
                // Written after the last state: re-read from the topic.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let keep = (durable - start).min(SEGMENT_ENTRIES);
            file.set_len(keep * ENTRY_LEN).map_err(io_err(&path))?;
            let mut buf = vec![0u8; (keep * ENTRY_LEN) as usize];
            file.read_exact_at(&mut buf, 0).map_err(io_err(&path))?;
            let mut newest = 0;
            for (i, chunk) in buf.chunks_exact(ENTRY_LEN as usize).enumerate() {
                let e = TimerEntry::decode(chunk);
                newest = newest.max(e.slot_sec);
                if e.slot_sec > self.state.fired_sec {
                    let slot = (e.slot_sec % self.slots) as usize;
                    self.heads[slot] = start + i as u64;
                }
            }
            self.segments.insert(start, (file, newest));
            self.len = start + keep;
        }
        if self.len != durable {
            // Segments missing below the durable count: start the log
            // from the durable count (older entries are gone).
            self.len = durable;
        }
        self.drop_dead_segments()?;
        Ok(())
    }

    /// The state to persist once [`Self::sync`] returned.
    pub fn state(&self) -> TimerState {
        self.state
    }

    /// The last second fired.
    pub fn fired_sec(&self) -> u64 {
        self.state.fired_sec
    }

    /// The next timer-topic offset to read.
    pub fn read_offset(&self) -> u64 {
        self.state.read_offset
    }

    /// Slots (seconds of the window).
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// The slot second a message due at `due_ms` goes in, when `firing`
    /// is the second being fired now (or the last fired one): never a
    /// second already fired or being fired, never past the window.
    pub fn slot_for(&self, due_ms: u64, firing: u64) -> u64 {
        let due_sec = due_ms / 1000;
        due_sec.clamp(firing + 1, self.state.fired_sec + self.slots - 1)
    }

    /// Adds the parked message at `queue_offset` due at `due_ms`, the one
    /// read next from the timer topic (advances the read offset).
    pub fn add(&mut self, queue_offset: u64, due_ms: u64, firing: u64) -> Result<(), TimerError> {
        let slot_sec = self.slot_for(due_ms, firing);
        let slot = (slot_sec % self.slots) as usize;
        let entry = TimerEntry {
            due_ms,
            queue_offset,
            slot_sec,
            prev: self.heads[slot],
        };
        let index = self.len;
        let start = index - index % SEGMENT_ENTRIES;
        if !self.segments.contains_key(&start) {
            let path = self.segment_path(start);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.segments.insert(start, (file, 0));
        }
        let path = self.segment_path(start);
        let (file, newest) = self.segments.get_mut(&start).expect("segment just ensured");
        file.write_all_at(&entry.encode(), (index - start) * ENTRY_LEN)
            .map_err(io_err(&path))?;
        *newest = (*newest).max(slot_sec);
        self.heads[slot] = index;
        self.len += 1;
        self.state.read_offset = queue_offset + 1;
        Ok(())
    }

    fn read(&self, index: u64) -> Result<TimerEntry, TimerError> {
        let start = index - index % SEGMENT_ENTRIES;
        let path = self.segment_path(start);
        let (file, _) = self
            .segments
            .get(&start)
            .ok_or_else(|| TimerError::State(format!("timer log entry {index} is gone")))?;
        let mut b = [0u8; ENTRY_LEN as usize];
        file.read_exact_at(&mut b, (index - start) * ENTRY_LEN)
            .map_err(io_err(&path))?;
        Ok(TimerEntry::decode(&b))
    }

    /// The entries of second `sec`'s slot, oldest first (the slot is not
    /// emptied: [`Self::fired`] does that once they are handled).
    pub fn take(&self, sec: u64) -> Result<Vec<TimerEntry>, TimerError> {
        let mut out = Vec::new();
        let mut at = self.heads[(sec % self.slots) as usize];
        while at != NONE {
            let e = self.read(at)?;
            if e.slot_sec != sec {
                break;
            }
            at = e.prev;
            out.push(e);
        }
        out.reverse();
        Ok(out)
    }

    /// Second `sec` (the one after the last fired) was handled: its slot
    /// is emptied, and segments holding only fired seconds are deleted.
    pub fn fired(&mut self, sec: u64) -> Result<(), TimerError> {
        let slot = (sec % self.slots) as usize;
        if self.heads[slot] != NONE && self.read(self.heads[slot])?.slot_sec == sec {
            self.heads[slot] = NONE;
        }
        self.state.fired_sec = self.state.fired_sec.max(sec);
        self.drop_dead_segments()
    }

    fn drop_dead_segments(&mut self) -> Result<(), TimerError> {
        let tail = self.len - self.len % SEGMENT_ENTRIES;
        let dead: Vec<u64> = self
            .segments
            .iter()
            .filter(|(start, (_, newest))| **start < tail && *newest <= self.state.fired_sec)
            .map(|(start, _)| *start)
            .collect();
        for start in dead {
            self.segments.remove(&start);
            let path = self.segment_path(start);
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Makes every entry added so far durable (fsync of the open
    /// segments) and returns the state that may now be persisted.
    pub fn sync(&mut self) -> Result<TimerState, TimerError> {
        let tail = self.len - self.len % SEGMENT_ENTRIES;
        for (start, (file, _)) in self.segments.range(tail.saturating_sub(SEGMENT_ENTRIES)..) {
            file.sync_data()
                .map_err(io_err(&self.segment_path(*start)))?;
        }
        self.state.entries = self.len;
        Ok(self.state)
    }

    /// Entries whose slot has not fired yet (a scan; tests and status).
    pub fn pending(&self) -> Result<u64, TimerError> {
        let mut n = 0;
        for sec in self.state.fired_sec + 1..self.state.fired_sec + self.slots {
            n += self.take(sec)?.len() as u64;
        }
        Ok(n)
    }

    /// Bytes of memory the wheel holds besides open files: the slots.
    pub fn memory_bytes(&self) -> usize {
        self.heads.len() * std::mem::size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_go_to_their_second_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TimerWheel::open(dir.path(), 60, None, 1_000).unwrap();
        assert_eq!(w.fired_sec(), 999);
        w.add(0, 1_005_500, 999).unwrap();
        w.add(1, 1_005_100, 999).unwrap();
        w.add(2, 1_007_000, 999).unwrap();
        // Already due: the next second, never a fired one.
        w.add(3, 5, 999).unwrap();
        let got: Vec<u64> = w
            .take(1_005)
            .unwrap()
            .iter()
            .map(|e| e.queue_offset)
            .collect();
        assert_eq!(got, [0, 1]);
        assert_eq!(w.take(1_000).unwrap()[0].queue_offset, 3);
        assert!(w.take(1_006).unwrap().is_empty());
        assert_eq!(w.read_offset(), 4);
        assert_eq!(w.pending().unwrap(), 4);
        for s in 1_000..=1_005 {
            w.fired(s).unwrap();
        }
        assert_eq!(w.pending().unwrap(), 1);
        assert!(w.take(1_005).unwrap().is_empty());
    }

    #[test]
    fn far_messages_wait_in_the_last_slot_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let w = TimerWheel::open(dir.path(), 60, None, 1_000).unwrap();
        // 40 days ahead: the window's last second (to be rolled then).
        assert_eq!(w.slot_for(1_000_000 + 40 * 86_400_000, 999), 999 + 59);
    }

    #[test]
    fn recovery_keeps_durable_entries_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TimerWheel::open(dir.path(), 60, None, 1_000).unwrap();
        w.add(0, 1_010_000, 999).unwrap();
        w.add(1, 1_020_000, 999).unwrap();
        let durable = w.sync().unwrap();
        // Added after the state was taken: lost in a crash, re-read then.
        w.add(2, 1_010_000, 999).unwrap();
        drop(w);
        let w = TimerWheel::open(dir.path(), 60, Some(durable), 1_050).unwrap();
        assert_eq!(w.read_offset(), 2);
        let at10: Vec<u64> = w
            .take(1_010)
            .unwrap()
            .iter()
            .map(|e| e.queue_offset)
            .collect();
        assert_eq!(at10, [0]);
        assert_eq!(w.take(1_020).unwrap()[0].queue_offset, 1);
        // Fired seconds are not brought back.
        let mut w = w;
        w.fired(1_010).unwrap();
        let durable = w.sync().unwrap();
        drop(w);
        let w = TimerWheel::open(dir.path(), 60, Some(durable), 1_050).unwrap();
        assert!(w.take(1_010).unwrap().is_empty());
        assert_eq!(w.pending().unwrap(), 1);
    }

    #[test]
    fn memory_does_not_grow_with_pending_messages() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = TimerWheel::open(dir.path(), 3_600, None, 1_000).unwrap();
        let before = w.memory_bytes();
        for i in 0..50_000u64 {
            w.add(i, 1_000_000 + (i % 3_000) * 1_000, 999).unwrap();
        }
        assert_eq!(w.memory_bytes(), before);
        assert_eq!(w.pending().unwrap(), 50_000);
    }
}

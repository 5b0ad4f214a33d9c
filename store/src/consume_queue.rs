//! Consume queues: per topic and queue, fixed 20-byte units
//! `(commit_log_offset u64, size u32, tag_hash i64)` (little-endian), in
//! files of `units_per_file` units named by the 20-digit queue offset of
//! their first unit. The unit index is the queue offset. A unit with size 0
//! was never written.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::allocator::{parse_name, segment_name};
use crate::error::{Error, Result};
use crate::mapped_file::MappedFile;
use crate::record::{get_u32, get_u64};
use crate::region::{MmapRegion, Region};
use crate::sync::{self, Arc, AtomicU64, Ordering, RwLock};

/// Size of one unit.
pub const UNIT_SIZE: usize = 20;

type CqFile = MappedFile<MmapRegion>;

/// One consume queue unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Commit log offset of the record.
    pub commit_log_offset: u64,
    /// Record size.
    pub size: u32,
    /// Tag hash.
    pub tag_hash: i64,
}

impl Unit {
    fn encode(&self) -> [u8; UNIT_SIZE] {
        let mut b = [0u8; UNIT_SIZE];
        b[..8].copy_from_slice(&self.commit_log_offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b[12..].copy_from_slice(&self.tag_hash.to_le_bytes());
        b
    }
    fn decode(b: &[u8]) -> Unit {
        Unit {
            commit_log_offset: get_u64(b, 0),
            size: get_u32(b, 8),
            tag_hash: get_u64(b, 12) as i64,
        }
    }
}

/// A consume queue.
#[derive(Debug)]
pub struct ConsumeQueue {
    topic: String,
    queue_id: u32,
    dir: PathBuf,
    upf: u64,
    files: RwLock<Vec<Arc<CqFile>>>,
    min: AtomicU64,
    max: AtomicU64,
}

/// Outcome of loading a queue directory.
pub(crate) enum Loaded {
    Ok(ConsumeQueue),
    /// Files missing or malformed: the queue must be rebuilt from the log.
    Damaged,
}

fn map_file(path: &Path, units: u64, create: bool) -> Result<MmapRegion> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(Error::from_io)?;
    let len = units * UNIT_SIZE as u64;
    if create {
        file.set_len(len).map_err(Error::from_io)?;
        // Reserved before mapping: a full disk fails here, not as a
        // SIGBUS on a later unit write (see `disk`).
        if let Err(e) = crate::disk::reserve(&file, path, len) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
    }
    Ok(MmapRegion::map(&file, len as usize, false)?)
}

impl ConsumeQueue {
    /// An empty queue (no files yet).
    pub(crate) fn new(root: &Path, topic: &str, queue_id: u32, upf: u64) -> ConsumeQueue {
        ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            dir: root.join(topic).join(queue_id.to_string()),
            upf,
            files: RwLock::new(Vec::new()),
            min: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Loads a queue from its directory.
    pub(crate) fn load(root: &Path, topic: &str, queue_id: u32, upf: u64) -> Result<Loaded> {
        let q = ConsumeQueue::new(root, topic, queue_id, upf);
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&q.dir)? {
            let e = e?;
            if let Some(start) = e.file_name().to_str().and_then(parse_name) {
                names.push((start, e.path()));
            }
        }
        names.sort();
        if names.is_empty() {
            return Ok(Loaded::Damaged);
        }
        let want = upf * UNIT_SIZE as u64;
        for (i, (start, path)) in names.iter().enumerate() {
            if start % upf != 0 || (i > 0 && *start != names[i - 1].0 + upf) {
                return Ok(Loaded::Damaged);
            }
            if std::fs::metadata(path)?.len() != want {
                return Ok(Loaded::Damaged);
            }
        }
        let n = names.len();
        let mut files = Vec::with_capacity(n);
        let mut min = 0;
        let mut max = 0;
        for (i, (start, path)) in names.into_iter().enumerate() {
            let region = map_file(&path, upf, false)?;
            let cap = upf as usize;
            // SAFETY: exclusive access during open (nobody else has the
            // mapping yet); the range is the whole region.
            let all = unsafe { region.slice(0, cap * UNIT_SIZE) }.unwrap_or(&[]);
            let size_at = |k: usize| get_u32(all, k * UNIT_SIZE + 8);
            let first = (0..cap).find(|&k| size_at(k) != 0);
            let last = (0..cap).rev().find(|&k| size_at(k) != 0);
            if i == 0 {
                min = start + first.unwrap_or(0) as u64;
            }
            let used = match last {
                Some(l) => l + 1,
                None if i + 1 < n => return Ok(Loaded::Damaged),
                None => 0,
            };
            if i + 1 < n && used != cap {
                return Ok(Loaded::Damaged);
            }
            if i + 1 == n {
                max = start + used as u64;
                min = min.min(max);
            }
            files.push(Arc::new(MappedFile::new(
                region,
                start,
                Some(path),
                used * UNIT_SIZE,
            )));
        }
        *sync::write(&q.files) = files;
        q.min.store(min, Ordering::Release);
        q.max.store(max, Ordering::Release);
        Ok(Loaded::Ok(q))
    }

    /// Topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queue id.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Directory of the queue's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First readable queue offset.
    pub fn min_offset(&self) -> u64 {
        self.min.load(Ordering::Acquire)
    }

    /// Next queue offset to be written (one past the last readable unit).
    pub fn max_offset(&self) -> u64 {
        self.max.load(Ordering::Acquire)
    }

    fn file_for(&self, offset: u64) -> Option<Arc<CqFile>> {
        let files = sync::read(&self.files);
        let first = files.first()?.start();
        if offset < first {
            return None;
        }
        files.get(((offset - first) / self.upf) as usize).cloned()
    }

    /// The unit at `offset`, if published.
    pub fn get(&self, offset: u64) -> Option<Unit> {
        if offset < self.min_offset() || offset >= self.max_offset() {
            return None;
        }
        let f = self.file_for(offset)?;
        let pos = (offset - f.start()) as usize * UNIT_SIZE;
        f.read(pos, UNIT_SIZE).map(Unit::decode)
    }

    /// Appends units starting at `offset` into `out`, at most `max` and never
    /// past the end of the file containing `offset`.
    pub fn read_units(&self, offset: u64, max: usize, out: &mut Vec<Unit>) {
        let hi = self.max_offset();
        if offset < self.min_offset() || offset >= hi {
            return;
        }
        let Some(f) = self.file_for(offset) else {
            return;
        };
        let file_end = f.start() + self.upf;
        let n = (hi.min(file_end) - offset).min(max as u64) as usize;
        let pos = (offset - f.start()) as usize * UNIT_SIZE;
        if let Some(b) = f.read(pos, n * UNIT_SIZE) {
            out.extend(b.chunks_exact(UNIT_SIZE).map(Unit::decode));
        }
    }

    /// Writes the unit for `offset` (dispatcher only). Returns `false` if the
    /// queue already holds that offset (replay after recovery).
    #[cfg(all(test, not(actormq_loom)))]
    pub(crate) fn put(&self, offset: u64, unit: Unit) -> Result<bool> {
        self.put_hinted(offset, unit, &mut None)
    }

    /// As [`ConsumeQueue::put`], reusing the file of the previous put to
    /// this queue (`hint`, updated) instead of looking it up each time.
    pub(crate) fn put_hinted(
        &self,
        offset: u64,
        unit: Unit,
        hint: &mut Option<Arc<CqFile>>,
    ) -> Result<bool> {
        let max = self.max_offset();
        if offset < max {
            return Ok(false);
        }
        let empty = self.min_offset() == max;
        if offset > max {
            if !empty {
                return Err(Error::corruption(
                    &self.dir,
                    offset,
                    format!("queue offset gap: expected {max}, got {offset}"),
                ));
            }
            // A rebuilt (or fully expired) queue restarts where the surviving
            // log starts: drop old files so the file list stays contiguous.
            for f in sync::write(&self.files).drain(..) {
                f.mark_removed();
            }
            self.min.store(offset, Ordering::Release);
            *hint = None;
        }
        let hinted = hint
            .take()
            .filter(|f| !f.is_removed() && offset >= f.start() && offset - f.start() < self.upf);
        let f = match hinted.or_else(|| self.file_for(offset)) {
            Some(f) => f,
            None => self.create_file(offset - offset % self.upf)?,
        };
        let pos = (offset - f.start()) as usize * UNIT_SIZE;
        if let Some(at) = crate::region::append_populate_at(pos, UNIT_SIZE) {
            // Best effort: what is not populated faults in on demand.
            let _ = f
                .region()
                .populate_write(at, crate::region::APPEND_POPULATE_CHUNK);
        }
        // SAFETY: single writer (the dispatcher); `pos` is at or beyond the
        // file's published position because `offset >= max`.
        unsafe { f.write_at(pos, &unit.encode()) };
        f.publish(pos + UNIT_SIZE);
        self.max.store(offset + 1, Ordering::Release);
        *hint = Some(f);
        Ok(true)
    }

    fn create_file(&self, start: u64) -> Result<Arc<CqFile>> {
        std::fs::create_dir_all(&self.dir).map_err(Error::from_io)?;
        let path = self.dir.join(segment_name(start));
        let region = map_file(&path, self.upf, true)?;
        let f = Arc::new(MappedFile::new(region, start, Some(path), 0));
        sync::write(&self.files).push(f.clone());
        Ok(f)
    }

    /// Drops units whose record starts at or beyond `log_end` (recovery only,
    /// before readers exist). Returns how many were dropped.
    pub(crate) fn truncate_from(&self, log_end: u64) -> Result<u64> {
        let mut dropped = 0;
        loop {
            let max = self.max_offset();
            if max <= self.min_offset() {
                break;
            }
            let Some(u) = self.get(max - 1) else { break };
            if u.commit_log_offset < log_end {
                break;
            }
            let f = self.file_for(max - 1).ok_or(Error::Closed)?;
            let pos = (max - 1 - f.start()) as usize * UNIT_SIZE;
            // SAFETY: recovery runs before any reader exists; exclusive access.
            unsafe { crate::region::Region::write(f.region(), pos, &[0u8; UNIT_SIZE]) };
            crate::region::Region::flush(f.region(), pos, UNIT_SIZE)?;
            self.max.store(max - 1, Ordering::Release);
            dropped += 1;
        }
        if dropped > 0 {
            self.reset_positions();
        }
        Ok(dropped)
    }

    /// Rebuilds the file objects' published positions after truncation.
    fn reset_positions(&self) {
        let max = self.max_offset();
        let mut files = sync::write(&self.files);
        // Remove files that start at or beyond max (keep at least one).
        while files.len() > 1 && files.last().is_some_and(|f| f.start() >= max) {
            if let Some(f) = files.pop() {
                f.mark_removed();
            }
        }
        for f in files.iter() {
            let used = (max.clamp(f.start(), f.start() + self.upf) - f.start()) as usize;
            f.reset_position(used * UNIT_SIZE);
        }
    }

    /// Deletes whole files whose units all reference records below
    /// `log_min` (never the last file); advances the min offset to the first
    /// unit at or beyond `log_min`. Returns how many files were deleted.
    pub(crate) fn delete_below(&self, log_min: u64) -> usize {
        let mut deleted = 0;
        {
            let mut files = sync::write(&self.files);
            while files.len() > 1 {
                let f = &files[0];
                let last = f.start() + self.upf - 1;
                let pos = (last - f.start()) as usize * UNIT_SIZE;
                let done = f.read(pos, UNIT_SIZE).map(Unit::decode);
                match done {
                    Some(u) if u.commit_log_offset + u.size as u64 <= log_min => {
                        let f = files.remove(0);
                        f.mark_removed();
                        deleted += 1;
                    }
                    _ => break,
                }
            }
        }
        // Advance min to the first unit still in the log.
        let mut m = self.min_offset();
        let first_start = sync::read(&self.files)
            .first()
            .map(|f| f.start())
            .unwrap_or(m);
        m = m.max(first_start);
        let max = self.max_offset();
        while m < max {
            match self.get_raw(m) {
                Some(u) if u.commit_log_offset < log_min => m += 1,
                _ => break,
            }
        }
        self.min.store(m, Ordering::Release);
        deleted
    }

    fn get_raw(&self, offset: u64) -> Option<Unit> {
        let f = self.file_for(offset)?;
        let pos = (offset - f.start()) as usize * UNIT_SIZE;
        f.read(pos, UNIT_SIZE).map(Unit::decode)
    }

    /// Flushes dirty files.
    pub(crate) fn flush(&self) -> Result<()> {
        let files = sync::read(&self.files).clone();
        for f in files.iter().rev() {
            if f.flushed() == f.capacity() {
                break; // full and flushed: older files are too
            }
            f.flush()?;
        }
        Ok(())
    }

    /// Deletes all files (the queue is rebuilt from the log).
    pub(crate) fn remove_dir(root: &Path, topic: &str, queue_id: u32) -> Result<()> {
        let dir = root.join(topic).join(queue_id.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    fn unit(o: u64) -> Unit {
        Unit {
            commit_log_offset: o * 100,
            size: 100,
            tag_hash: o as i64,
        }
    }

    #[test]
    fn put_get_reload_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let q = ConsumeQueue::new(dir.path(), "t", 1, 4);
        for o in 0..10 {
            assert!(q.put(o, unit(o)).unwrap());
        }
        assert!(!q.put(3, unit(3)).unwrap());
        assert!(q.put(11, unit(11)).is_err());
        assert_eq!(q.get(7), Some(unit(7)));
        let mut v = Vec::new();
        q.read_units(2, 100, &mut v);
        assert_eq!(v.len(), 2); // stops at file end
        q.flush().unwrap();
        drop(q);
        let Loaded::Ok(q) = ConsumeQueue::load(dir.path(), "t", 1, 4).unwrap() else {
            panic!()
        };
        assert_eq!((q.min_offset(), q.max_offset()), (0, 10));
        assert_eq!(q.truncate_from(650).unwrap(), 3);
        assert_eq!(q.max_offset(), 7);
        assert!(q.put(7, unit(7)).unwrap());
        assert_eq!(q.get(7), Some(unit(7)));
        assert_eq!(q.delete_below(450), 1);
        assert_eq!(q.min_offset(), 5);
        assert_eq!(q.get(4), None);
    }

    #[test]
    fn starts_mid_file_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let q = ConsumeQueue::new(dir.path(), "t", 0, 4);
        assert!(q.put(6, unit(6)).unwrap());
        assert_eq!((q.min_offset(), q.max_offset()), (6, 7));
        for o in 7..14 {
            assert!(q.put(o, unit(o)).unwrap());
        }
        drop(q);
        let Loaded::Ok(q) = ConsumeQueue::load(dir.path(), "t", 0, 4).unwrap() else {
            panic!()
        };
        assert_eq!((q.min_offset(), q.max_offset()), (6, 14));
        drop(q);
        std::fs::remove_file(dir.path().join("t/0").join(segment_name(8))).unwrap();
        assert!(matches!(
            ConsumeQueue::load(dir.path(), "t", 0, 4).unwrap(),
            Loaded::Damaged
        ));
        std::fs::remove_dir_all(dir.path().join("t/0")).unwrap();
        std::fs::create_dir_all(dir.path().join("t/0")).unwrap();
        assert!(matches!(
            ConsumeQueue::load(dir.path(), "t", 0, 4).unwrap(),
            Loaded::Damaged
        ));
    }
}

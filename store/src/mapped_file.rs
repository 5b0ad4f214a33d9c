//! A segment: a region plus its published write/flush positions, shared by
//! reference count.
//!
//! Protocol (see `SAFETY.md`): one writer writes bytes at or beyond `wrote`
//! and then publishes the new end with a `Release` store; readers `Acquire`
//! load `wrote` and read only below it. Bytes below `wrote` are never written
//! again while the segment is shared. Segments are shared as
//! `Arc<MappedFile>`: a reader holding a clone keeps the memory mapped; when
//! retention marks a segment removed and drops the owner's clone, the last
//! holder's drop unmaps the region and deletes the file, exactly once.

use std::io;
use std::path::{Path, PathBuf};

use crate::region::Region;
use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// One segment file (commit log or consume queue) and its positions.
#[derive(Debug)]
pub struct MappedFile<R: Region> {
    region: R,
    start: u64,
    path: Option<PathBuf>,
    wrote: AtomicUsize,
    flushed: AtomicUsize,
    removed: AtomicBool,
    last_store_ms: AtomicU64,
    inode: Option<u64>,
}

fn inode_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.ino())
}

impl<R: Region> MappedFile<R> {
    /// Wraps a region whose first byte is at absolute offset `start`;
    /// `wrote` bytes are already valid (recovered), and considered flushed.
    pub fn new(region: R, start: u64, path: Option<PathBuf>, wrote: usize) -> Self {
        let wrote = wrote.min(region.capacity());
        let inode = path.as_deref().and_then(inode_of);
        MappedFile {
            inode,
            region,
            start,
            path,
            wrote: AtomicUsize::new(wrote),
            flushed: AtomicUsize::new(wrote),
            removed: AtomicBool::new(false),
            last_store_ms: AtomicU64::new(0),
        }
    }

    /// Absolute offset of the first byte.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.region.capacity()
    }

    /// Absolute offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.region.capacity() as u64
    }

    /// File path, if file-backed.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Published write position (bytes from the segment start), `Acquire`.
    pub fn wrote(&self) -> usize {
        self.wrote.load(Ordering::Acquire)
    }

    /// Flushed position (bytes from the segment start).
    pub fn flushed(&self) -> usize {
        self.flushed.load(Ordering::Acquire)
    }

    /// Copies `src` at `pos` (writer only).
    ///
    /// # Safety
    /// Only the single writer may call this, with `pos >= self.wrote()`.
    pub unsafe fn write_at(&self, pos: usize, src: &[u8]) {
        debug_assert!(pos >= self.wrote.load(Ordering::Relaxed));
        // SAFETY: the range is beyond the published position, so no reader
        // touches it, and the caller is the only writer.
        unsafe { self.region.write(pos, src) }
    }

    /// Borrows the unpublished range `[pos, pos + len)` for in-place encoding.
    ///
    /// # Safety
    /// Only the single writer may call this, with `pos >= self.wrote()`, and
    /// must publish only after the borrow ends.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn unpublished_mut(&self, pos: usize, len: usize) -> Option<&mut [u8]> {
        debug_assert!(pos >= self.wrote.load(Ordering::Relaxed));
        // SAFETY: as `write_at`.
        unsafe { self.region.slice_mut(pos, len) }
    }

    /// Publishes everything below `pos` to readers (`Release`). Writer only;
    /// `pos` must not be below the current position.
    pub fn publish(&self, pos: usize) {
        debug_assert!(pos <= self.region.capacity());
        debug_assert!(pos >= self.wrote.load(Ordering::Relaxed));
        self.wrote.store(pos, Ordering::Release);
    }

    /// Resets the write and flush positions (recovery only: no reader or
    /// writer may use the file concurrently).
    pub(crate) fn reset_position(&self, pos: usize) {
        let pos = pos.min(self.region.capacity());
        self.wrote.store(pos, Ordering::Release);
        self.flushed.store(pos, Ordering::Release);
    }

    /// Borrows published bytes `[pos, pos + len)`, or `None` if not (all)
    /// published or the region cannot lend slices.
    pub fn read(&self, pos: usize, len: usize) -> Option<&[u8]> {
        let w = self.wrote();
        if pos > w || len > w - pos {
            return None;
        }
        // SAFETY: the range is below the Acquire-loaded published position,
        // so its writes happen-before this read and it is never written again.
        unsafe { self.region.slice(pos, len) }
    }

    /// Copies published bytes into `dst`; `false` if not (all) published.
    pub fn read_into(&self, pos: usize, dst: &mut [u8]) -> bool {
        let w = self.wrote();
        if pos > w || dst.len() > w - pos {
            return false;
        }
        // SAFETY: as `read`.
        unsafe { self.region.read(pos, dst) };
        true
    }

    /// Flushes `[flushed, wrote)` and advances `flushed`. Returns the new
    /// flushed position. Only the flush thread normally calls this; concurrent
    /// callers are safe (the position only grows).
    pub fn flush(&self) -> io::Result<usize> {
        let w = self.wrote();
        let f = self.flushed.load(Ordering::Acquire);
        if w > f {
            self.region.flush(f, w - f)?;
            // `fetch_max`: concurrent flushers never move the position back.
            self.flushed.fetch_max(w, Ordering::AcqRel);
            Ok(self.flushed.load(Ordering::Acquire))
        } else {
            Ok(f)
        }
    }

    /// Last store timestamp of a record in this segment (ms).
    pub fn last_store_ms(&self) -> u64 {
        self.last_store_ms.load(Ordering::Relaxed)
    }

    /// Records the last store timestamp.
    pub fn set_last_store_ms(&self, ms: u64) {
        self.last_store_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks the segment removed: the file is deleted when the last holder drops it.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Whether [`MappedFile::mark_removed`] was called.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// The underlying region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

impl<R: Region> Drop for MappedFile<R> {
    fn drop(&mut self) {
        // Runs exactly once, when the last `Arc` holder lets go; the region
        // (mapping) is dropped right after this body.
        if self.removed.load(Ordering::Acquire) {
            if let Some(p) = &self.path {
                // Only if the path still names our file (a new file may have
                // been created at the same path since we were removed).
                if inode_of(p) == self.inode {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;
    use crate::region::HeapRegion;

    #[test]
    fn publish_and_read() {
        let m = MappedFile::new(HeapRegion::new(64), 1000, None, 0);
        assert!(m.read(0, 1).is_none());
        // SAFETY: single-threaded test, single writer.
        unsafe { m.write_at(0, b"hello") };
        assert!(m.read(0, 5).is_none());
        m.publish(5);
        assert_eq!(m.read(0, 5).unwrap(), b"hello");
        assert!(m.read(3, 3).is_none());
        assert_eq!(m.flush().unwrap(), 5);
        assert_eq!(m.end(), 1064);
    }

    #[test]
    fn removed_file_deleted_on_last_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("seg");
        std::fs::write(&p, b"x").unwrap();
        let m = std::sync::Arc::new(MappedFile::new(HeapRegion::new(8), 0, Some(p.clone()), 0));
        let reader = m.clone();
        m.mark_removed();
        drop(m);
        assert!(p.exists());
        drop(reader);
        assert!(!p.exists());
    }
}

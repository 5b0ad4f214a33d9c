//! Background pre-allocation of commit log segments.
//!
//! When segment N becomes active the writer requests segment N+1; a
//! dedicated thread creates the file, sizes it, reserves its blocks
//! (`posix_fallocate`) and maps it, so the append path only takes a ready
//! segment. With [`Prefault::Ahead`] (the default) the same thread faults
//! pages in chunk by chunk just ahead of the writer
//! ([`Allocator::populate`]); `Populate` and `Touch` fault a whole segment
//! at creation.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::config::Prefault;
use crate::error::{Error, Result};
use crate::mapped_file::MappedFile;
use crate::region::{MmapRegion, Region};

/// A commit log segment backed by a memory-mapped file.
pub type Segment = MappedFile<MmapRegion>;

/// Bytes faulted in per step with [`Prefault::Ahead`]; a new segment gets
/// its first chunk at creation.
pub const PREFAULT_CHUNK: usize = 64 << 20;

/// Set once `MADV_POPULATE_WRITE` failed: `Ahead` behaves as `Populate`.
static NO_POPULATE_WRITE: AtomicBool = AtomicBool::new(false);

/// Whether `Ahead` pre-faulting works here (the kernel has
/// `MADV_POPULATE_WRITE`, as far as seen so far).
pub fn prefault_ahead_supported() -> bool {
    !NO_POPULATE_WRITE.load(StdOrdering::Relaxed)
}

/// File name of a segment starting at `start`.
pub fn segment_name(start: u64) -> String {
    format!("{start:020}")
}

/// Parses a 20-digit segment/queue file name.
pub fn parse_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

/// Creates, sizes and maps a new (zeroed) segment file.
pub fn create_segment(dir: &Path, start: u64, size: u64, prefault: Prefault) -> Result<Segment> {
    let path = dir.join(segment_name(start));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(Error::from_io)?;
    let res = (|| {
        file.set_len(size).map_err(Error::from_io)?;
        // Always: a write into an unreserved mapped page on a full disk
        // is a SIGBUS (see `disk`).
        crate::disk::reserve(&file, &path, size)?;
        let len = usize::try_from(size).map_err(|_| Error::Config("segment too large".into()))?;
        if prefault == Prefault::Ahead && prefault_ahead_supported() {
            let region = MmapRegion::map(&file, len, false)?;
            match region.populate_write(0, PREFAULT_CHUNK.min(len)) {
                Ok(()) => return Ok(MappedFile::new(region, start, Some(path.clone()), 0)),
                // No MADV_POPULATE_WRITE (kernel < 5.14): whole segments.
                Err(_) => NO_POPULATE_WRITE.store(true, StdOrdering::Relaxed),
            }
        }
        let region = MmapRegion::map(&file, len, prefault != Prefault::None)?;
        if prefault != Prefault::None {
            let _ = region.advise(memmap2::Advice::WillNeed);
        }
        if prefault == Prefault::Touch {
            let page = 4096;
            let mut at = 0;
            while at < len {
                // SAFETY: the segment is not shared yet; we are its only user.
                unsafe { region.write(at, &[0]) };
                at += page;
            }
        }
        Ok(MappedFile::new(region, start, Some(path.clone()), 0))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    res
}

/// Maps an existing segment file (recovery). `wrote` bytes are valid.
pub fn open_segment(path: PathBuf, start: u64, size: u64, wrote: usize) -> Result<Segment> {
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    let len = usize::try_from(size).map_err(|_| Error::Config("segment too large".into()))?;
    let region = MmapRegion::map(&file, len, false)?;
    Ok(MappedFile::new(region, start, Some(path), wrote))
}

type Ready = (u64, Result<Segment>);

/// Work for the allocator thread.
enum Req {
    /// Prepare the segment starting here.
    Create(u64),
    /// Fault in `len` bytes of a live segment from `pos` (best effort).
    Populate(crate::sync::Arc<Segment>, usize, usize),
}

/// The allocator thread and its channels.
pub struct Allocator {
    dir: PathBuf,
    size: u64,
    prefault: Prefault,
    tx: Option<mpsc::Sender<Req>>,
    rx: mpsc::Receiver<Ready>,
    pending: VecDeque<u64>,
    /// A segment waited for by [`Allocator::wait_ready`] and not yet taken.
    parked: Option<Ready>,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Allocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocator")
            .field("pending", &self.pending)
            .finish()
    }
}

impl Allocator {
    /// Starts the allocator thread for segments of `size` bytes in `dir`.
    pub fn start(dir: PathBuf, size: u64, prefault: Prefault) -> Result<Allocator> {
        let (tx, req_rx) = mpsc::channel::<Req>();
        let (ready_tx, rx) = mpsc::channel::<Ready>();
        let d = dir.clone();
        let handle = std::thread::Builder::new()
            .name("actormq-store-alloc".into())
            .spawn(move || {
                for req in req_rx {
                    match req {
                        Req::Create(start) => {
                            let r = create_segment(&d, start, size, prefault);
                            if ready_tx.send((start, r)).is_err() {
                                break;
                            }
                        }
                        Req::Populate(seg, pos, len) => {
                            // Best effort: the writer faults in what is left.
                            if !seg.is_removed() {
                                let _ = seg.region().populate_write(pos, len);
                            }
                        }
                    }
                }
            })?;
        Ok(Allocator {
            dir,
            size,
            prefault,
            tx: Some(tx),
            rx,
            pending: VecDeque::new(),
            parked: None,
            handle: Some(handle),
        })
    }

    /// Blocks until the segment at `start` (requested earlier) is prepared,
    /// without taking it; the next [`Allocator::take`] of `start` returns
    /// it at once. A store opening empty waits here for its first segment,
    /// so its first append does not.
    pub fn wait_ready(&mut self, start: u64) {
        if self.parked.as_ref().is_some_and(|(got, _)| *got == start) {
            return;
        }
        while self.pending.contains(&start) {
            let Ok((got, res)) = self.rx.recv() else {
                self.pending.clear();
                return;
            };
            self.pending.pop_front();
            if got == start {
                self.parked = Some((got, res));
                return;
            }
            if let Ok(seg) = res {
                seg.mark_removed();
            }
        }
    }

    /// Asks for the segment starting at `start` to be prepared in the background.
    pub fn request(&mut self, start: u64) {
        if self.pending.contains(&start) {
            return;
        }
        if let Some(tx) = &self.tx {
            if tx.send(Req::Create(start)).is_ok() {
                self.pending.push_back(start);
            }
        }
    }

    /// The pre-fault strategy segments are made with.
    pub fn prefault(&self) -> Prefault {
        self.prefault
    }

    /// Asks for `[pos, pos + len)` of a live segment to be faulted in on
    /// the allocator thread ([`Prefault::Ahead`]).
    pub fn populate(&mut self, seg: &crate::sync::Arc<Segment>, pos: usize, len: usize) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Req::Populate(seg.clone(), pos, len));
        }
    }

    /// Takes the segment starting at `start`: the prepared one if it was
    /// requested (waiting only if it is not ready yet), else created inline.
    pub fn take(&mut self, start: u64) -> Result<Segment> {
        if let Some((got, res)) = self.parked.take() {
            if got == start {
                return res;
            }
            if let Ok(seg) = res {
                seg.mark_removed();
            }
        }
        while let Some(front) = self.pending.front().copied() {
            let Ok((got, res)) = self.rx.recv() else {
                self.pending.clear();
                break;
            };
            self.pending.pop_front();
            debug_assert_eq!(got, front);
            if got == start {
                return res;
            }
            if let Ok(seg) = res {
                seg.mark_removed();
            }
        }
        create_segment(&self.dir, start, self.size, self.prefault)
    }
}

impl Drop for Allocator {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        // Unused prepared segments: delete their (empty) files.
        if let Some((_, Ok(seg))) = self.parked.take() {
            seg.mark_removed();
        }
        while let Ok((_, res)) = self.rx.try_recv() {
            if let Ok(seg) = res {
                seg.mark_removed();
            }
        }
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(segment_name(4096), "00000000000000004096");
        assert_eq!(parse_name("00000000000000004096"), Some(4096));
        assert_eq!(parse_name("0000000000000000409x"), None);
        assert_eq!(parse_name("4096"), None);
    }

    #[test]
    fn allocates_in_background() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Allocator::start(dir.path().to_path_buf(), 8192, Prefault::Populate).unwrap();
        a.request(8192);
        let s = a.take(8192).unwrap();
        assert_eq!(s.start(), 8192);
        assert_eq!(s.capacity(), 8192);
        let s0 = a.take(0).unwrap();
        assert_eq!(s0.start(), 0);
        a.request(16384);
        drop(a);
        assert!(!dir.path().join(segment_name(16384)).exists());
        assert!(dir.path().join(segment_name(8192)).exists());
    }

    #[test]
    fn wait_ready_parks_the_segment_for_take() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Allocator::start(dir.path().to_path_buf(), 8192, Prefault::Populate).unwrap();
        a.request(0);
        a.wait_ready(0);
        assert!(
            dir.path().join(segment_name(0)).exists(),
            "built before take"
        );
        assert!(a.pending.is_empty());
        assert_eq!(a.take(0).unwrap().start(), 0);
        // Parked but never taken: its empty file goes with the allocator.
        a.request(8192);
        a.wait_ready(8192);
        drop(a);
        assert!(!dir.path().join(segment_name(8192)).exists());
    }
}

//! Byte regions backing segments: memory-mapped files in production, heap
//! memory in tests and loom models.
//!
//! A region is raw shared memory: the type system does not stop two threads
//! touching the same bytes, so reads and writes are `unsafe` and the callers
//! (`MappedFile`) uphold the publication protocol described in `SAFETY.md`.

use std::io;

/// Shared, fixed-size byte memory.
pub trait Region: Send + Sync + 'static {
    /// Size in bytes.
    fn capacity(&self) -> usize;

    /// Copies `src` to `[offset, offset + src.len())`.
    ///
    /// # Safety
    /// No other thread may read or write that range concurrently (the range is
    /// beyond every published position, and only the single writer writes).
    /// Panics if the range is out of bounds.
    unsafe fn write(&self, offset: usize, src: &[u8]);

    /// Copies `[offset, offset + dst.len())` into `dst`.
    ///
    /// # Safety
    /// The range must have been published (its writes happen-before this read)
    /// and must not be written concurrently. Panics if out of bounds.
    unsafe fn read(&self, offset: usize, dst: &mut [u8]);

    /// Borrows `[offset, offset + len)` directly, if the region is plain memory.
    /// Returns `None` for regions that cannot lend slices (the loom heap region).
    ///
    /// # Safety
    /// As [`Region::read`], for the whole lifetime of the returned slice.
    unsafe fn slice(&self, offset: usize, len: usize) -> Option<&[u8]>;

    /// Mutably borrows `[offset, offset + len)`, if the region is plain memory.
    ///
    /// # Safety
    /// As [`Region::write`], for the whole lifetime of the returned slice.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]>;

    /// Makes `[offset, offset + len)` durable (msync for files, no-op on heap).
    fn flush(&self, offset: usize, len: usize) -> io::Result<()>;
}

fn check(cap: usize, offset: usize, len: usize) {
    assert!(
        offset <= cap && len <= cap - offset,
        "region access out of bounds"
    );
}

/// Page size assumed for `madvise` alignment (x86-64 and aarch64 base pages
/// are at most 64 KiB; 4 KiB alignment is what the kernel checks).
const PAGE: usize = 4096;

/// Bytes faulted in at a time ahead of an append-only writer of small units
/// (consume queue units, index entries): one `madvise` per chunk instead of
/// a read fault and a write fault per page.
pub const APPEND_POPULATE_CHUNK: usize = 256 << 10;

/// Where to fault in [`APPEND_POPULATE_CHUNK`] bytes before writing
/// `[pos, pos + len)` of an append-only file: the start of the chunk the
/// write ends in, when no earlier write reached that chunk. The first chunk
/// is left to demand faults, so a file barely written gets no zero pages
/// written back.
pub fn append_populate_at(pos: usize, len: usize) -> Option<usize> {
    let last = (pos + len).checked_sub(1)? / APPEND_POPULATE_CHUNK;
    let reached = pos.checked_sub(1).map(|p| p / APPEND_POPULATE_CHUNK);
    (last > 0 && reached != Some(last)).then_some(last * APPEND_POPULATE_CHUNK)
}

/// A writable shared memory mapping of a whole file.
#[derive(Debug)]
pub struct MmapRegion {
    map: memmap2::MmapRaw,
    len: usize,
}

impl MmapRegion {
    /// Maps `file` (already sized to `len`), optionally with `MAP_POPULATE`.
    pub fn map(file: &std::fs::File, len: usize, populate: bool) -> io::Result<MmapRegion> {
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        if populate {
            opts.populate();
        }
        let map = opts.map_raw(file)?;
        Ok(MmapRegion { map, len })
    }

    /// `madvise` the whole mapping.
    pub fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        self.map.advise(advice)
    }

    /// Faults `[offset, offset + len)` in, writable, without changing its
    /// contents (`MADV_POPULATE_WRITE`; `offset` is rounded down to a page,
    /// the range is clipped to the mapping). Fails with `EINVAL` on kernels
    /// before 5.14.
    pub fn populate_write(&self, offset: usize, len: usize) -> io::Result<()> {
        let start = offset & !(PAGE - 1);
        let end = offset.saturating_add(len).min(self.len);
        if start >= end {
            return Ok(());
        }
        self.map
            .advise_range(memmap2::Advice::PopulateWrite, start, end - start)
    }
}

impl Region for MmapRegion {
    fn capacity(&self) -> usize {
        self.len
    }

    unsafe fn write(&self, offset: usize, src: &[u8]) {
        check(self.len, offset, src.len());
        // SAFETY: in bounds (checked); the caller guarantees exclusive access
        // to the range; `src` cannot overlap the mapping's unpublished range
        // because callers never pass mapped memory as a source.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().add(offset),
                src.len(),
            )
        }
    }

    unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        check(self.len, offset, dst.len());
        // SAFETY: in bounds; the caller guarantees the range is published and
        // not written concurrently.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        }
    }

    unsafe fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        check(self.len, offset, len);
        // SAFETY: in bounds; the mapping lives as long as `self`; the caller
        // guarantees nobody writes the range while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(offset), len) })
    }

    unsafe fn slice_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]> {
        check(self.len, offset, len);
        // SAFETY: in bounds; the caller guarantees exclusive access to the
        // range while the slice lives.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(offset), len) })
    }

    fn flush(&self, offset: usize, len: usize) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        check(self.len, offset, len);
        self.map.flush_range(offset, len)
    }
}

/// Heap memory region (tests and loom models). Under loom every byte is a
/// separate `loom::cell::UnsafeCell`, so loom reports any unsynchronised
/// reader/writer overlap as a data race.
#[derive(Debug)]
pub struct HeapRegion {
    cells: Box<[crate::sync::UnsafeCell<u8>]>,
}

// SAFETY: all access goes through the unsafe `Region` methods whose callers
// guarantee the absence of data races (publication protocol).
unsafe impl Sync for HeapRegion {}
// SAFETY: the cells own plain bytes.
unsafe impl Send for HeapRegion {}

impl HeapRegion {
    /// A zeroed region of `len` bytes.
    pub fn new(len: usize) -> HeapRegion {
        HeapRegion {
            cells: (0..len)
                .map(|_| crate::sync::UnsafeCell::new(0u8))
                .collect(),
        }
    }
}

impl Region for HeapRegion {
    fn capacity(&self) -> usize {
        self.cells.len()
    }

    unsafe fn write(&self, offset: usize, src: &[u8]) {
        check(self.cells.len(), offset, src.len());
        for (i, b) in src.iter().enumerate() {
            // SAFETY: caller guarantees exclusive access to this byte.
            self.cells[offset + i].with_mut(|p| unsafe { *p = *b });
        }
    }

    unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        check(self.cells.len(), offset, dst.len());
        for (i, d) in dst.iter_mut().enumerate() {
            // SAFETY: caller guarantees the byte is published and not written concurrently.
            *d = self.cells[offset + i].with(|p| unsafe { *p });
        }
    }

    #[cfg(not(actormq_loom))]
    unsafe fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        check(self.cells.len(), offset, len);
        // SAFETY: `UnsafeCell<u8>` is `repr(transparent)` over `u8` (both the
        // std cell and our wrapper), so the cells are contiguous bytes; the
        // caller guarantees no concurrent writes while the slice lives.
        Some(unsafe {
            std::slice::from_raw_parts(self.cells.as_ptr().add(offset).cast::<u8>(), len)
        })
    }

    #[cfg(actormq_loom)]
    unsafe fn slice(&self, _offset: usize, _len: usize) -> Option<&[u8]> {
        None
    }

    #[cfg(not(actormq_loom))]
    unsafe fn slice_mut(&self, offset: usize, len: usize) -> Option<&mut [u8]> {
        check(self.cells.len(), offset, len);
        // SAFETY: as `slice`; the cells permit mutation through a shared
        // reference and the caller guarantees exclusivity.
        Some(unsafe {
            std::slice::from_raw_parts_mut(
                self.cells.as_ptr().add(offset).cast::<u8>().cast_mut(),
                len,
            )
        })
    }

    #[cfg(actormq_loom)]
    unsafe fn slice_mut(&self, _offset: usize, _len: usize) -> Option<&mut [u8]> {
        None
    }

    fn flush(&self, _offset: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn heap_roundtrip() {
        let r = HeapRegion::new(16);
        // SAFETY: single-threaded test.
        unsafe {
            r.write(4, b"abcd");
            let mut b = [0u8; 4];
            r.read(4, &mut b);
            assert_eq!(&b, b"abcd");
            assert_eq!(r.slice(3, 6).unwrap(), b"\0abcd\0");
        }
    }

    #[test]
    fn mmap_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(8192).unwrap();
        let r = MmapRegion::map(&f, 8192, true).unwrap();
        // SAFETY: single-threaded test.
        unsafe {
            r.write(5000, b"xyz");
            assert_eq!(r.slice(5000, 3).unwrap(), b"xyz");
        }
        r.flush(0, 8192).unwrap();
    }

    #[test]
    #[should_panic]
    fn out_of_bounds_panics() {
        let r = HeapRegion::new(4);
        // SAFETY: single-threaded test; the call panics before touching memory.
        unsafe { r.write(2, b"abc") };
    }
}

#[cfg(all(test, not(actormq_loom), target_os = "linux"))]
mod populate_tests {
    #[test]
    fn append_populate_once_per_chunk_after_the_first() {
        use super::{APPEND_POPULATE_CHUNK as C, append_populate_at};
        assert_eq!(append_populate_at(0, 20), None);
        assert_eq!(append_populate_at(C - 20, 20), None);
        // A unit straddling into chunk 1, then units inside it.
        assert_eq!(append_populate_at(C - 10, 20), Some(C));
        assert_eq!(append_populate_at(C + 10, 20), None);
        // Exactly at the boundary.
        assert_eq!(append_populate_at(2 * C, 20), Some(2 * C));
        assert_eq!(append_populate_at(2 * C + 20, 20), None);
        assert_eq!(append_populate_at(0, 0), None);
        // Walking a file unit by unit: one populate per chunk after the first.
        let hits = (0..(4 * C / 20)).filter_map(|i| append_populate_at(i * 20, 20));
        assert_eq!(hits.collect::<Vec<_>>(), vec![C, 2 * C, 3 * C]);
    }

    use super::*;

    /// Pages of `[0, len)` of `r` resident in memory, per `mincore`.
    fn resident(r: &MmapRegion, len: usize) -> Vec<bool> {
        let pages = len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: the range lies inside the live mapping `r`, and `vec` has
        // one byte per page of it, as mincore requires.
        let rc = unsafe {
            libc::mincore(
                r.map.as_mut_ptr().cast::<libc::c_void>(),
                len,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    fn populate_write_faults_in_the_range_and_keeps_contents() {
        let dir = tempfile::tempdir().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("seg"))
            .unwrap();
        let len = 1024 * PAGE;
        file.set_len(len as u64).unwrap();
        let r = MmapRegion::map(&file, len, false).unwrap();
        // A fresh sparse file has nothing in the page cache.
        assert!(resident(&r, len)[100..117].iter().all(|&x| !x));
        match r.populate_write(100 * PAGE + 100, 16 * PAGE) {
            Ok(()) => {}
            // Kernels before 5.14: the store falls back to MAP_POPULATE.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("populate_write: {e}"),
        }
        let res = resident(&r, len);
        assert!(res[100..117].iter().all(|&x| x), "{:?}", &res[96..120]);
        // Contents are kept.
        // SAFETY: single-threaded test; in bounds.
        unsafe { r.write(900 * PAGE + 7, b"kept") };
        r.populate_write(899 * PAGE, 4 * PAGE).unwrap();
        let mut got = [0u8; 4];
        // SAFETY: single-threaded test; in bounds.
        unsafe { r.read(900 * PAGE + 7, &mut got) };
        assert_eq!(&got, b"kept");
        // Clipped at the end; empty ranges are no-ops.
        r.populate_write(1020 * PAGE, 100 * PAGE).unwrap();
        assert!(resident(&r, len)[1020..].iter().all(|&x| x));
        r.populate_write(len, 10).unwrap();
    }
}

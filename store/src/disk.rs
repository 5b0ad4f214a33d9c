//! Reserving the blocks of every memory-mapped file when it is created.
//!
//! A store write into a mapped page whose block the file system cannot
//! allocate (disk full, a sparse file) is a SIGBUS that kills the process
//! with nothing logged. So every mapped file (commit-log segment, consume
//! queue file, index file) is sized and then has its whole length reserved
//! with `posix_fallocate` before it is mapped: a full disk fails the
//! *creation* with `ENOSPC` ([`Error::DiskFull`]), and pages of a created
//! file can always be written.
//!
//! File systems that cannot reserve (`EOPNOTSUPP`/`EINVAL` from
//! `posix_fallocate`) are accepted as before: there a full disk may still
//! end in SIGBUS.
//!
//! Tests can make reservations under a directory fail with `ENOSPC`
//! ([`fail_reservations_under`]) to reach the disk-full paths without
//! filling a disk.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};

fn faults() -> MutexGuard<'static, Vec<PathBuf>> {
    static FAULTS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    FAULTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// While alive, reservations of files under its directory fail with
/// `ENOSPC` (see [`fail_reservations_under`]).
#[derive(Debug)]
#[must_use = "the fault is lifted when the guard drops"]
pub struct ReservationFault {
    dir: PathBuf,
}

impl Drop for ReservationFault {
    fn drop(&mut self) {
        let mut f = faults();
        if let Some(i) = f.iter().position(|d| *d == self.dir) {
            f.remove(i);
        }
    }
}

/// Test hook: every file reservation under `dir` (this process, any
/// thread) fails with `ENOSPC`, as on a full disk, until the guard drops.
/// Costs one uncontended lock per created file otherwise.
#[doc(hidden)]
pub fn fail_reservations_under(dir: &Path) -> ReservationFault {
    let dir = dir.to_path_buf();
    faults().push(dir.clone());
    ReservationFault { dir }
}

/// `posix_fallocate` as an `io::Error` (with the test hook).
pub(crate) fn reserve_io(file: &File, path: &Path, len: u64) -> std::io::Result<()> {
    if faults().iter().any(|d| path.starts_with(d)) {
        return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
    }
    let len = libc::off_t::try_from(len)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "file too large"))?;
    if len == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid, open file descriptor owned by
    // `file`; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Cannot reserve on this file system: as before (sparse).
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        code => Err(std::io::Error::from_raw_os_error(code)),
    }
}

/// Reserves `len` bytes of `file` (at `path`); `ENOSPC` is
/// [`Error::DiskFull`].
pub(crate) fn reserve(file: &File, path: &Path, len: u64) -> Result<()> {
    reserve_io(file, path, len).map_err(Error::from_io)
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn reserves_blocks_and_the_hook_fails_only_under_its_dir() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        file.set_len(1 << 20).unwrap();
        reserve(&file, &path, 1 << 20).unwrap();
        // Blocks are allocated (a sparse file would have ~0).
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= 1 << 20);
        let sub = dir.path().join("sub");
        let fault = fail_reservations_under(&sub);
        assert!(matches!(
            reserve(&file, &sub.join("x"), 8),
            Err(Error::DiskFull)
        ));
        reserve(&file, &path, 8).unwrap();
        drop(fault);
        reserve(&file, &sub.join("x"), 8).unwrap();
    }
}

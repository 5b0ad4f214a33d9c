//! The data-dir lock: one process per store directory.
//!
//! [`DirLock::acquire`] takes an exclusive, non-blocking `flock` on
//! `<dir>/lock` and writes the holder's pid into it. The lock belongs to
//! the open file, so the kernel releases it when the process exits for any
//! reason (SIGKILL included); the file itself is left in place (deleting a
//! lock file races with the next holder). A second [`DirLock::acquire`]
//! on the same directory, from another process or from this one, fails
//! with [`Error::Locked`] naming the directory and the holder's pid.
//!
//! In-process: a registry of the directories this process holds makes a
//! second open here fail at once. A `flock` belongs to the open file
//! description, which a child forked by another thread shares until it
//! `exec`s (when `O_CLOEXEC` closes it); so a conflict that names our own
//! pid for a directory this process no longer holds is such a transient
//! copy, and is retried briefly.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a conflict with a lock inherited by a forked, not yet
/// exec'd child of this process is retried.
const INHERITED_RETRY: Duration = Duration::from_secs(2);

/// Directories (canonical) this process holds.
fn held() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Name of the lock file inside the data dir.
pub const LOCK_FILE: &str = "lock";

/// A held data-dir lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    canonical: PathBuf,
    _file: File,
}

/// Outcome of one `flock` attempt.
enum Try {
    Locked,
    /// Held elsewhere; the pid read from the lock file, if any.
    Busy(Option<u32>),
}

fn try_lock(file: &mut File) -> Result<Try> {
    // SAFETY: plain syscall on a valid, open file descriptor owned by
    // `file`; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Try::Locked);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(Error::from_io(err));
    }
    // The holder writes its pid right after locking; an empty or
    // unreadable file leaves the pid unknown.
    let mut text = String::new();
    let _ = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text));
    Ok(Try::Busy(text.trim().parse().ok()))
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let me = std::process::id();
        let canonical = dir.canonicalize().map_err(Error::from_io)?;
        if !held().insert(canonical.clone()) {
            return Err(Error::Locked {
                dir: dir.to_path_buf(),
                pid: Some(me),
            });
        }
        let res = Self::lock_file(dir, me);
        match res {
            Ok(file) => Ok(DirLock {
                dir: dir.to_path_buf(),
                canonical,
                _file: file,
            }),
            Err(e) => {
                held().remove(&canonical);
                Err(e)
            }
        }
    }

    fn lock_file(dir: &Path, me: u32) -> Result<File> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(Error::from_io)?;
        let started = Instant::now();
        loop {
            match try_lock(&mut file)? {
                Try::Locked => break,
                // Not held by this process (the registry says so): a copy
                // inherited by a child forked from here that has not
                // exec'd yet. It goes away at its exec.
                Try::Busy(Some(pid)) if pid == me && started.elapsed() < INHERITED_RETRY => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Try::Busy(pid) => {
                    return Err(Error::Locked {
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
            }
        }
        file.set_len(0).map_err(Error::from_io)?;
        file.seek(SeekFrom::Start(0)).map_err(Error::from_io)?;
        writeln!(file, "{me}").map_err(Error::from_io)?;
        Ok(file)
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // The file (and with it the flock) closes right after this body.
        held().remove(&self.canonical);
    }
}

#[cfg(all(test, not(actormq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_dir_and_pid_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let pid = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        match DirLock::acquire(dir.path()) {
            Err(Error::Locked { dir: d, pid }) => {
                assert_eq!(d, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        let again = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(again.dir(), dir.path());
    }
}

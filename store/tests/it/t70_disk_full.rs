//! A full disk fails file creation with `DiskFull` (every mapped file has
//! its blocks reserved before it is mapped), never a SIGBUS on a page
//! write; reads keep working and writes resume once there is space.

use std::path::{Path, PathBuf};
use std::process::Command;

use actormq_store::disk::fail_reservations_under;
use actormq_store::{Error, GetStatus, Store};

use crate::common::{cfg, msg};

#[test]
fn reservation_failures_are_disk_full_for_segments_queues_and_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    let b = vec![7u8; 1000];
    let first = store.append(&msg("a", 0, &b)).unwrap();
    store.dispatch_all().unwrap();

    let fault = fail_reservations_under(dir.path());
    // The active segment still takes appends; the next one cannot be made.
    let mut acked = vec![first];
    let err = loop {
        match store.append(&msg("a", 0, &b)) {
            Ok(r) => acked.push(r),
            Err(e) => break e,
        }
        assert!(acked.len() < 100, "append never failed");
    };
    assert!(matches!(err, Error::DiskFull), "{err:?}");
    // Still full: still refused.
    assert!(matches!(
        store.append(&msg("a", 0, &b)),
        Err(Error::DiskFull)
    ));
    store.dispatch_all().unwrap();
    assert_eq!(store.max_offset("a", 0), acked.len() as u64);
    let got = store.get_messages("a", 0, 0, 32, 1 << 20, None);
    assert_eq!(got.status, GetStatus::Found);
    assert_eq!(got.messages.len(), acked.len());
    drop(fault);

    // Space again: writes resume where they stopped.
    let r = store.append(&msg("b", 0, b"x")).unwrap();
    assert_eq!(r.queue_offset, 0);
    store.dispatch_all().unwrap();
    assert_eq!(store.max_offset("b", 0), 1);
    store.close().unwrap();
}

#[test]
fn a_new_consume_queue_file_on_a_full_disk_fails_dispatch_with_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 64 * 1024)).unwrap();
    store.append(&msg("q", 0, b"one")).unwrap();
    let fault = fail_reservations_under(&dir.path().join("consumequeue"));
    let err = store.dispatch_all().unwrap_err();
    assert!(matches!(err, Error::DiskFull), "{err:?}");
    assert_eq!(store.max_offset("q", 0), 0);
    drop(fault);
    store.dispatch_all().unwrap();
    assert_eq!(store.max_offset("q", 0), 1);
    store.close().unwrap();
}

/// A small tmpfs mounted for one test; lazily unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Takes whatever space is left on the file system of `dir` (tmpfs
/// allocates by page).
fn fill_slack(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
}

fn fill(root: &Path) -> (Store, Vec<u64>, Error) {
    let mut c = cfg(root, 64 * 1024);
    // Consume-queue files larger than a segment: the first one is made
    // after the disk filled up, by the dispatch below.
    c.cq_units_per_file = 4096;
    let store = Store::open(c).unwrap();
    let b = vec![3u8; 4000];
    let mut acked = Vec::new();
    let err = loop {
        match store.append(&msg("full", 0, &b)) {
            Ok(r) => acked.push(r.commit_log_offset),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    (store, acked, err)
}

/// The real thing: a 1 MiB tmpfs filled by appends and then to the last
/// page. Before blocks were reserved, the dispatch made a sparse
/// consume-queue file on the full disk and its first write into the
/// mapping killed the process with SIGBUS.
/// Skipped (with the reason printed) where mounting is not
/// permitted.
#[test]
fn a_real_full_tmpfs_gives_disk_full_not_sigbus() {
    let fs = match Tmpfs::mount("1m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: needs a tmpfs mount ({why})");
            return;
        }
    };
    let (store, acked, err) = fill(&fs.path());
    assert!(matches!(err, Error::DiskFull), "{err:?}");
    assert!(!acked.is_empty());
    // Not a page left: a sparse consume-queue file would be created, and
    // its first unit write would be a SIGBUS.
    fill_slack(fs.dir.path());
    let err = store.dispatch_all().unwrap_err();
    assert!(matches!(err, Error::DiskFull), "{err:?}");
    // Acknowledged records stay readable.
    for &off in &acked {
        let m = store.read_at(off).expect("acked record readable");
        assert!(m.verify_crc());
    }
    drop(store);
}

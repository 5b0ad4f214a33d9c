//! Corruption handling: torn tail, mid-log damage, missing consume queue
//! files, bad checkpoint.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use actormq_store::{Error, GetStatus, Store};

use crate::common::{cfg, check_queues_match_log, msg};

const SEG: u64 = 64 * 1024;

fn seg_path(dir: &Path, start: u64) -> std::path::PathBuf {
    dir.join("commitlog").join(format!("{start:020}"))
}

fn flip(path: &Path, at: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut b = [0u8; 1];
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xFF]).unwrap();
}

/// Appends `n` messages and crashes (drop without close); returns their
/// (commit log offset, size).
fn fill_and_crash(dir: &Path, n: u64) -> Vec<(u64, u32)> {
    let store = Store::open(cfg(dir, SEG)).unwrap();
    let mut v = Vec::new();
    for i in 0..n {
        let b = vec![i as u8; 100];
        let r = store.append(&msg("t", 0, &b)).unwrap();
        v.push((r.commit_log_offset, r.size));
    }
    store.flush_now().unwrap();
    drop(store);
    v
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let recs = fill_and_crash(dir.path(), 20);
    let (last, size) = recs[19];
    flip(&seg_path(dir.path(), 0), last + size as u64 - 3);
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    let rep = store.recovery_report();
    assert!(!rep.clean);
    assert!(rep.truncated_bytes >= size as u64);
    assert_eq!(store.commit_log_max_offset(), last);
    assert!(store.read_at(last).is_none());
    assert_eq!(store.max_offset("t", 0), 19);
    check_queues_match_log(&store);
    // The slot is reused.
    let r = store.append(&msg("t", 0, b"again")).unwrap();
    assert_eq!((r.queue_offset, r.commit_log_offset), (19, last));
    store.close().unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    assert_eq!(
        &store.read_by_queue_offset("t", 0, 19).unwrap().body()[..],
        b"again"
    );
    store.close().unwrap();
}

#[test]
fn half_written_tail_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let recs = fill_and_crash(dir.path(), 5);
    let (last, size) = recs[4];
    // Zero the second half of the last record, as if the copy was cut.
    let p = seg_path(dir.path(), 0);
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(last + size as u64 / 2)).unwrap();
    f.write_all(&vec![0u8; size as usize / 2 + 1]).unwrap();
    drop(f);
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    assert_eq!(store.commit_log_max_offset(), last);
    assert_eq!(store.max_offset("t", 0), 4);
    store.close().unwrap();
}

#[test]
fn mid_log_corruption_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let recs = fill_and_crash(dir.path(), 20);
    let (off, _) = recs[7];
    flip(&seg_path(dir.path(), 0), off + 130);
    match Store::open(cfg(dir.path(), SEG)) {
        Err(Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, seg_path(dir.path(), 0));
            assert_eq!(offset, off);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn mid_log_corrupted_size_field_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let recs = fill_and_crash(dir.path(), 20);
    let (off, _) = recs[3];
    flip(&seg_path(dir.path(), 0), off + 1);
    match Store::open(cfg(dir.path(), SEG)) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, off),
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn missing_consume_queue_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    for i in 0..150u64 {
        store
            .append(&msg("t", (i % 2) as u32, format!("m{i}").as_bytes()))
            .unwrap();
    }
    store.close().unwrap();
    // Queue 0 has 75 units in files of 64: delete its first file (a gap
    // before the second) and all of queue 1's files.
    let q0 = dir.path().join("consumequeue/t/0");
    std::fs::remove_file(q0.join(format!("{:020}", 0))).unwrap();
    let q1 = dir.path().join("consumequeue/t/1");
    for e in std::fs::read_dir(&q1).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    assert_eq!(store.recovery_report().rebuilt_queues, 1);
    // Queue 0's remaining file looks like retention; queue 1 is rebuilt fully.
    assert_eq!(store.max_offset("t", 1), 75);
    let g = store.get_messages("t", 1, 0, 100, 1 << 20, None);
    assert_eq!(g.status, GetStatus::Found);
    assert_eq!(g.messages.len(), 75);
    assert_eq!(&g.messages[10].body()[..], b"m21");
    store.close().unwrap();
}

#[test]
fn missing_middle_consume_queue_file_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    for i in 0..200u64 {
        store
            .append(&msg("t", 0, format!("m{i}").as_bytes()))
            .unwrap();
    }
    store.close().unwrap();
    std::fs::remove_file(
        dir.path()
            .join("consumequeue/t/0")
            .join(format!("{:020}", 64)),
    )
    .unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    assert_eq!(store.recovery_report().rebuilt_queues, 1);
    assert_eq!(
        (store.min_offset("t", 0), store.max_offset("t", 0)),
        (0, 200)
    );
    assert_eq!(
        &store.read_by_queue_offset("t", 0, 100).unwrap().body()[..],
        b"m100"
    );
    check_queues_match_log(&store);
    store.close().unwrap();
}

#[test]
fn bad_checkpoint_means_full_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    for i in 0..30u64 {
        store
            .append(&msg("t", 0, format!("m{i}").as_bytes()))
            .unwrap();
    }
    store.close().unwrap();
    std::fs::write(dir.path().join("checkpoint"), b"garbage").unwrap();
    let store = Store::open(cfg(dir.path(), SEG)).unwrap();
    assert!(!store.recovery_report().clean);
    assert_eq!(store.recovery_report().scanned_records, 30);
    assert_eq!(store.max_offset("t", 0), 30);
    store.close().unwrap();
}

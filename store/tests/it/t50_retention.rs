//! Retention with small segments and a fake clock.

use std::sync::Arc;

use actormq_store::{GetStatus, ManualClock, RetentionMode, Store};

use crate::common::{cfg, check_queues_match_log, msg};

const H: u64 = 3_600_000;

#[test]
fn expired_segments_deleted_at_delete_hour_and_readers_keep_theirs() {
    let dir = tempfile::tempdir().unwrap();
    let day = 20_000 * 24 * H;
    let clock = Arc::new(ManualClock::new(day + 10 * H));
    let store = Store::open_with_clock(cfg(dir.path(), 4096), clock.clone()).unwrap();
    for i in 0..120u64 {
        store.append(&msg("t", 0, &[i as u8; 200])).unwrap();
    }
    store.dispatch_all().unwrap();
    let segs_before = store.commit_log_min_offset();
    assert_eq!(segs_before, 0);
    // A reader holds a view into the first segment.
    let held = store.read_by_queue_offset("t", 0, 0).unwrap();
    let first = dir.path().join("commitlog").join(format!("{:020}", 0));
    // Not yet expired (only 1 h old) and not the delete hour.
    let r = store.clean_expired(day + 11 * H, 0.1).unwrap();
    assert_eq!((r.mode, r.segments_deleted), (RetentionMode::Idle, 0));
    // Delete hour but not expired.
    let r = store.clean_expired(day + 24 * H + 4 * H, 0.1).unwrap();
    assert_eq!((r.mode, r.segments_deleted), (RetentionMode::Expired, 0));
    // 73 h later at 04:00: all but the active segment go.
    let now = day + 4 * 24 * H + 4 * H + H / 2; // 04:30, 90.5 h after the appends
    let r = store.clean_expired(now, 0.1).unwrap();
    assert!(r.segments_deleted >= 5, "{r:?}");
    assert!(r.cq_files_deleted >= 1, "{r:?}");
    let min = store.commit_log_min_offset();
    assert!(min > 0);
    assert_eq!(r.min_offset, min);
    // The held segment is still mapped and its file still exists.
    assert_eq!(&held.body()[..], &[0u8; 200][..]);
    assert!(first.exists());
    drop(held);
    assert!(!first.exists(), "file deleted when the last reader let go");
    // Consume queue min moved; old offsets report "too small".
    let qmin = store.min_offset("t", 0);
    assert!(qmin > 0);
    let g = store.get_messages("t", 0, 0, 10, 1 << 20, None);
    assert_eq!(
        (g.status, g.next_begin_offset),
        (GetStatus::OffsetTooSmall, qmin)
    );
    let g = store.get_messages("t", 0, qmin, 10, 1 << 20, None);
    assert_eq!(g.status, GetStatus::Found);
    // Appends continue; recovery after retention works.
    store.append(&msg("t", 0, b"after")).unwrap();
    store.close().unwrap();
    let store = Store::open_with_clock(cfg(dir.path(), 4096), clock).unwrap();
    assert_eq!(store.commit_log_min_offset(), min);
    assert_eq!(store.max_offset("t", 0), 121);
    check_queues_match_log(&store);
    store.close().unwrap();
}

#[test]
fn disk_pressure_forces_deletion_but_never_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let now = 20_000 * 24 * H + 10 * H;
    let clock = Arc::new(ManualClock::new(now));
    let store = Store::open_with_clock(cfg(dir.path(), 4096), clock).unwrap();
    for i in 0..60u64 {
        store.append(&msg("t", 0, &[i as u8; 200])).unwrap();
    }
    store.dispatch_all().unwrap();
    let n = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .count();
    // Warn level: only expired ones (none).
    assert_eq!(store.clean_expired(now, 0.8).unwrap().segments_deleted, 0);
    // Force level: oldest first, even if fresh; the active one stays.
    let r = store.clean_expired(now, 0.9).unwrap();
    assert_eq!(r.mode, RetentionMode::Force);
    assert!(r.segments_deleted >= 1 && r.segments_deleted < n);
    for _ in 0..10 {
        store.clean_expired(now, 0.99).unwrap();
    }
    let max = store.commit_log_max_offset();
    assert!(store.commit_log_min_offset() <= max);
    assert!(
        store.commit_log_min_offset() + 4096 > max,
        "only the active segment remains"
    );
    store.append(&msg("t", 0, b"still works")).unwrap();
    store.dispatch_all().unwrap();
    assert_eq!(
        &store.read_by_queue_offset("t", 0, 60).unwrap().body()[..],
        b"still works"
    );
    store.close().unwrap();
}

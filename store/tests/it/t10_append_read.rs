//! Append and read paths.

use std::collections::HashSet;
use std::sync::Arc;

use actormq_store::{
    AppendMessage, Error, GetStatus, ManualClock, Store, encode_properties, tag_hash,
};

use crate::common::{body, cfg, check_queues_match_log, msg};

#[test]
fn batch_assigns_queue_offsets_per_topic_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 64 * 1024)).unwrap();
    let batch = [
        msg("a", 0, b"1"),
        msg("b", 0, b"2"),
        msg("a", 0, b"3"),
        msg("a", 1, b"4"),
    ];
    let r = store.append_batch(&batch).unwrap();
    let qo: Vec<u64> = r.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(qo, vec![0, 0, 1, 0]);
    assert_eq!(r.messages[0].commit_log_offset, 0);
    for w in r.messages.windows(2) {
        assert_eq!(
            w[0].commit_log_offset + w[0].size as u64,
            w[1].commit_log_offset
        );
    }
    assert_eq!(r.end_offset, store.commit_log_max_offset());
    // Not dispatched yet: consume queue trails the log.
    assert_eq!(store.max_offset("a", 0), 0);
    let p = store.dispatch(2).unwrap();
    assert_eq!((p.dispatched, p.caught_up), (2, false));
    store.dispatch(100).unwrap();
    assert_eq!(store.max_offset("a", 0), 2);
    let g = store.get_messages("a", 0, 0, 10, 1 << 20, None);
    assert_eq!(g.status, GetStatus::Found);
    assert_eq!(g.next_begin_offset, 2);
    assert_eq!(&g.messages[1].body()[..], b"3");
    let m = store.read_at(r.messages[3].commit_log_offset).unwrap();
    assert_eq!(
        (m.topic(), m.queue_id(), &m.body()[..]),
        ("a", 1, &b"4"[..])
    );
    assert!(store.read_at(1).is_none());
    store.close().unwrap();
}

#[test]
fn rolls_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    let mut expect = Vec::new();
    for i in 0..200u64 {
        let b = body(i, (i as usize * 37) % 700);
        let r = store.append(&msg("t", (i % 3) as u32, &b)).unwrap();
        expect.push((i % 3, r.queue_offset, b));
    }
    let segs = std::fs::read_dir(dir.path().join("commitlog"))
        .unwrap()
        .count();
    assert!(segs > 5, "expected several segments, got {segs}");
    store.dispatch_all().unwrap();
    let check = |s: &Store| {
        for (q, off, b) in &expect {
            let m = s.read_by_queue_offset("t", *q as u32, *off).unwrap();
            assert_eq!(&m.body()[..], &b[..]);
        }
        check_queues_match_log(s);
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    assert!(store.recovery_report().clean);
    assert_eq!(
        store.recovery_report().scanned_records,
        0,
        "clean open trusts the checkpoint"
    );
    assert_eq!(store.recovery_report().redispatched, 0);
    assert_eq!(store.next_queue_offset("t", 0), 67);
    check(&store);
    // Appends continue with the right offsets.
    let r = store.append(&msg("t", 0, b"next")).unwrap();
    assert_eq!(r.queue_offset, 67);
    store.close().unwrap();
}

#[test]
fn statuses_offsets_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 64 * 1024)).unwrap();
    let (ta, tb) = (tag_hash("A"), tag_hash("B"));
    let props = encode_properties([("TAGS", "A")]).unwrap();
    for i in 0..10u64 {
        let m = AppendMessage {
            tag_hash: if i % 2 == 0 { ta } else { tb },
            properties: &props,
            ..msg("t", 0, b"x")
        };
        store.append(&m).unwrap();
    }
    store.dispatch_all().unwrap();
    assert_eq!(
        store.get_messages("zz", 0, 0, 1, 100, None).status,
        GetStatus::NoMatchedQueue
    );
    assert_eq!(
        store.get_messages("t", 0, 10, 1, 100, None).status,
        GetStatus::OffsetOverflowOne
    );
    let g = store.get_messages("t", 0, 11, 1, 100, None);
    assert_eq!(
        (g.status, g.next_begin_offset),
        (GetStatus::OffsetOverflowBadly, 0)
    );
    let only_b: HashSet<i64> = [tb].into();
    let g = store.get_messages("t", 0, 0, 3, 1 << 20, Some(&only_b));
    assert_eq!(g.status, GetStatus::Found);
    let offs: Vec<u64> = g.messages.iter().map(|m| m.queue_offset()).collect();
    assert_eq!(offs, vec![1, 3, 5]);
    assert_eq!(g.next_begin_offset, 6);
    let none: HashSet<i64> = [12345].into();
    let g = store.get_messages("t", 0, 0, 3, 1 << 20, Some(&none));
    assert_eq!(
        (g.status, g.next_begin_offset),
        (GetStatus::NoMatchedMessage, 10)
    );
    // max_bytes: at least one message, then stop.
    let g = store.get_messages("t", 0, 0, 10, 1, None);
    assert_eq!(g.messages.len(), 1);
    assert_eq!(
        store
            .read_by_queue_offset("t", 0, 4)
            .unwrap()
            .property("TAGS"),
        Some("A")
    );
    store.close().unwrap();
}

#[test]
fn offset_by_time_binary_search() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let store = Store::open_with_clock(cfg(dir.path(), 64 * 1024), clock.clone()).unwrap();
    for _ in 0..20 {
        store.append(&msg("t", 0, b"x")).unwrap();
        clock.advance(10);
    }
    store.dispatch_all().unwrap();
    assert_eq!(store.offset_by_time("t", 0, 0), 0);
    assert_eq!(store.offset_by_time("t", 0, 1_000_050), 5);
    assert_eq!(store.offset_by_time("t", 0, 1_000_051), 6);
    assert_eq!(store.offset_by_time("t", 0, 9_999_999), 20);
    assert_eq!(
        store
            .read_by_queue_offset("t", 0, 5)
            .unwrap()
            .store_timestamp_ms(),
        1_000_050
    );
    store.close().unwrap();
}

#[test]
fn too_large_and_invalid_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    store.append(&msg("t", 0, b"ok")).unwrap();
    let big = vec![0u8; 9000];
    let before = store.commit_log_max_offset();
    let e = store
        .append_batch(&[msg("t", 0, b"fine"), msg("t", 0, &big)])
        .unwrap_err();
    assert!(matches!(e, Error::MessageTooLarge { .. }), "{e:?}");
    assert!(matches!(
        store.append(&msg("", 0, b"x")),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(store.commit_log_max_offset(), before);
    assert_eq!(store.append(&msg("t", 0, b"next")).unwrap().queue_offset, 1);
    store.close().unwrap();
}

#[test]
fn views_are_zero_copy_into_the_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 64 * 1024)).unwrap();
    store
        .append_batch(&[msg("t", 0, b"hello"), msg("t", 0, b"world")])
        .unwrap();
    store.dispatch_all().unwrap();
    let g = store.get_messages("t", 0, 0, 2, 1 << 20, None);
    let (a, b) = (&g.messages[0], &g.messages[1]);
    // Both records are slices of one mapped region: contiguous addresses.
    let a_end = a.record().as_ptr() as usize + a.record().len();
    assert_eq!(a_end, b.record().as_ptr() as usize);
    let body = b.body();
    let rec = b.record().as_ptr() as usize;
    assert!(body.as_ptr() as usize > rec && (body.as_ptr() as usize) < rec + b.record().len());
    drop(g);
    store.close().unwrap();
}

#[test]
fn concurrent_readers_see_only_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(cfg(dir.path(), 16 * 1024)).unwrap());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (s, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (v, _) = s.scan_log(s.commit_log_min_offset(), 10_000);
                    for m in &v {
                        assert!(m.verify_crc());
                    }
                    let g = s.get_messages("t", 0, 0, 64, 1 << 20, None);
                    for (i, m) in g.messages.iter().enumerate() {
                        assert_eq!(m.queue_offset(), i as u64);
                        assert_eq!(&m.body()[..], &body(i as u64, i % 300)[..]);
                    }
                    seen = seen.max(v.len() as u64);
                }
                seen
            })
        })
        .collect();
    for i in 0..2000u64 {
        store
            .append(&msg("t", 0, &body(i, i as usize % 300)))
            .unwrap();
        if i % 50 == 0 {
            store.dispatch(100).unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    store.dispatch_all().unwrap();
    check_queues_match_log(&store);
}

#[test]
fn failed_segment_creation_fails_the_append_and_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    // Block the third segment's file name with a directory.
    let blocker = dir.path().join("commitlog").join(format!("{:020}", 16384));
    std::fs::create_dir(&blocker).unwrap();
    let b = vec![1u8; 1000];
    let mut acked = Vec::new();
    let err = loop {
        match store.append(&msg("t", 0, &b)) {
            Ok(r) => acked.push(r),
            Err(e) => break e,
        }
        assert!(acked.len() < 100, "append never failed");
    };
    assert!(
        matches!(
            err,
            actormq_store::Error::Io(_) | actormq_store::Error::DiskFull
        ),
        "{err:?}"
    );
    let end = store.commit_log_max_offset();
    assert_eq!(
        end,
        acked
            .last()
            .map(|r| r.commit_log_offset + r.size as u64)
            .unwrap()
    );
    // Reads keep working; nothing acknowledged is lost.
    store.dispatch_all().unwrap();
    assert_eq!(store.max_offset("t", 0), acked.len() as u64);
    assert!(store.read_at(acked[0].commit_log_offset).is_some());
    // Still failing while the cause persists, then recovers.
    assert!(store.append(&msg("t", 0, &b)).is_err());
    std::fs::remove_dir(&blocker).unwrap();
    let r = store.append(&msg("t", 0, &b)).unwrap();
    assert_eq!(r.queue_offset, acked.len() as u64);
    assert_eq!(r.commit_log_offset, 16384);
    store.close().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    assert_eq!(store.max_offset("t", 0), acked.len() as u64 + 1);
    check_queues_match_log(&store);
    store.close().unwrap();
}

#[test]
fn dispatch_with_reports_every_record_across_rolls_and_interleaved_queues() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    // Runs of one queue (the writer's fast path) mixed with interleaving,
    // big enough to roll several segments inside single batches.
    let bodies: Vec<Vec<u8>> = (0..300u64)
        .map(|i| body(i, 100 + (i as usize % 50)))
        .collect();
    let mut sent = Vec::new();
    for chunk in bodies.chunks(60) {
        let batch: Vec<AppendMessage<'_>> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (t, q) = if i % 7 == 3 {
                    ("b", 1)
                } else {
                    ("a", (i / 20) as u32)
                };
                msg(t, q, b)
            })
            .collect();
        let r = store.append_batch(&batch).unwrap();
        for (m, a) in batch.iter().zip(&r.messages) {
            sent.push((
                m.topic.to_owned(),
                m.queue_id,
                a.queue_offset,
                a.commit_log_offset,
            ));
        }
    }
    // Queue offsets are dense per topic-queue, in send order.
    let mut next = std::collections::HashMap::new();
    for (t, q, qo, _) in &sent {
        let n = next.entry((t.clone(), *q)).or_insert(0u64);
        assert_eq!(qo, n, "{t}/{q}");
        *n += 1;
    }
    let mut seen = Vec::new();
    let mut rounds = 0;
    loop {
        let p = store
            .dispatch_with(37, &mut |r| {
                seen.push((
                    r.topic.to_owned(),
                    r.queue_id,
                    r.queue_offset,
                    r.commit_log_offset,
                ))
            })
            .unwrap();
        rounds += 1;
        if p.caught_up {
            break;
        }
    }
    assert!(rounds > 5);
    assert_eq!(seen, sent);
    check_queues_match_log(&store);
    store.close().unwrap();
}

#[test]
fn a_second_open_of_the_same_dir_fails_naming_dir_and_holder() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    store.append(&msg("t", 0, b"kept")).unwrap();
    match Store::open(cfg(dir.path(), 8192)) {
        Err(Error::Locked { dir: d, pid }) => {
            assert_eq!(d, dir.path());
            assert_eq!(pid, Some(std::process::id()));
            let text = Error::Locked { dir: d, pid }.to_string();
            assert!(text.contains(&dir.path().display().to_string()), "{text}");
            assert!(text.contains(&std::process::id().to_string()), "{text}");
        }
        other => panic!("second open must fail with Locked, got {other:?}"),
    }
    // The failed open touched nothing: the first store still works and
    // the dir opens again once it is closed.
    store.append(&msg("t", 0, b"more")).unwrap();
    store.close().unwrap();
    let store = Store::open(cfg(dir.path(), 8192)).unwrap();
    assert_eq!(store.max_offset("t", 0), 2);
    store.close().unwrap();
}

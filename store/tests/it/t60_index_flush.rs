//! Key index wiring and flush modes.

use std::sync::Arc;
use std::time::Duration;

use actormq_store::{AppendMessage, FlushMode, FlushOutcome, Store, encode_properties};

use crate::common::{cfg, msg};

#[test]
fn query_by_key_after_dispatch_and_crash() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 8192);
    let store = Store::open(c.clone()).unwrap();
    let props: Vec<Vec<u8>> = (0..50)
        .map(|i| {
            let keys = format!("order-{i} shared");
            let uniq = format!("U{i:04}");
            encode_properties([("KEYS", keys.as_str()), ("UNIQ_KEY", uniq.as_str())]).unwrap()
        })
        .collect();
    for p in &props {
        store
            .append(&AppendMessage {
                properties: p,
                ..msg("orders", 0, b"b")
            })
            .unwrap();
    }
    store
        .append(&AppendMessage {
            properties: &props[7],
            ..msg("other", 0, b"b")
        })
        .unwrap();
    store.dispatch_all().unwrap();
    let check = |s: &Store| {
        let v = s
            .query_by_key("orders", "order-7", 0, u64::MAX, 10)
            .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].queue_offset(), 7);
        let v = s.query_by_key("orders", "U0031", 0, u64::MAX, 10).unwrap();
        assert_eq!(v[0].queue_offset(), 31);
        let v = s.query_by_key("orders", "shared", 0, u64::MAX, 5).unwrap();
        assert_eq!(v.len(), 5);
        assert!(
            v.windows(2)
                .all(|w| w[0].queue_offset() > w[1].queue_offset()),
            "newest first"
        );
        assert!(
            s.query_by_key("orders", "nope", 0, u64::MAX, 5)
                .unwrap()
                .is_empty()
        );
        let v = s.query_by_key("other", "order-7", 0, u64::MAX, 5).unwrap();
        assert_eq!(v.len(), 1);
    };
    check(&store);
    drop(store); // crash
    let store = Store::open(c.clone()).unwrap();
    assert!(!store.recovery_report().clean);
    check(&store);
    store.close().unwrap();
    let store = Store::open(c).unwrap();
    check(&store);
    store.close().unwrap();
}

#[test]
fn sync_group_commit_acknowledges_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg(dir.path(), 256 * 1024);
    c.flush_mode = FlushMode::Sync;
    let store = Arc::new(Store::open(c).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let b = format!("{t}-{i}");
                    let (r, o) = s.append_and_wait(&[msg("t", t, b.as_bytes())]).unwrap();
                    assert_eq!(o, FlushOutcome::Flushed);
                    assert!(s.flushed_offset() >= r.end_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = store.append(&msg("t", 0, b"cb")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    store.on_flushed(
        r.commit_log_offset + r.size as u64,
        Box::new(move |o| tx.send(o).unwrap()),
    );
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap(),
        FlushOutcome::Flushed
    );
    Arc::try_unwrap(store).unwrap().close().unwrap();
}

#[test]
fn async_flush_advances_in_background() {
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(dir.path(), 256 * 1024);
    let store = Store::open(c).unwrap();
    let r = store.append_batch(&[msg("t", 0, &[1u8; 20_000])]).unwrap();
    // More than 4 dirty pages: the next tick (20 ms in the small config) flushes.
    let t = store.flush_ticket(r.end_offset);
    assert_eq!(t.wait(Duration::from_secs(5)), FlushOutcome::Flushed);
    assert!(store.flushed_offset() >= r.end_offset);
    store.close().unwrap();
}

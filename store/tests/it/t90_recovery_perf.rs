//! Recovery time after a crash of 1 GiB of commit log (ignored by default;
//! run with `cargo test --release -p actormq-store --test it t90 -- --ignored --nocapture`).

use std::time::Instant;

use actormq_store::{AppendMessage, Store, StoreConfig};

#[test]
#[ignore = "writes 1 GiB; a measurement, run explicitly"]
fn recovery_of_1gib_after_crash() {
    let base = std::env::var_os("ACTORMQ_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(base).unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.index_enabled = false;
    let body = [9u8; 128];
    let msgs: Vec<AppendMessage<'_>> = (0..32)
        .map(|i| AppendMessage {
            topic: "perf",
            queue_id: i % 8,
            body: &body,
            ..Default::default()
        })
        .collect();
    let store = Store::open(cfg.clone()).unwrap();
    let t = Instant::now();
    while store.commit_log_max_offset() < (1 << 30) - (1 << 20) {
        store.append_batch(&msgs).unwrap();
    }
    let n = store.commit_log_max_offset();
    println!("wrote {n} bytes in {:?}", t.elapsed());
    store.flush_now().unwrap();
    drop(store); // crash: abort marker stays
    // Worst case: no usable checkpoint, so everything is re-scanned (CRC) and
    // re-dispatched into fresh consume queues.
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    let t = Instant::now();
    let store = Store::open(cfg.clone()).unwrap();
    let el = t.elapsed();
    let r = store.recovery_report();
    println!(
        "crash recovery of {n} bytes: {el:?} (scanned {} records, re-dispatched {})",
        r.scanned_records, r.redispatched
    );
    assert!(!r.clean);
    assert_eq!(r.end_offset, n);
    drop(store);
    // Typical crash: checkpoint present (scan from the start of its segment).
    let t = Instant::now();
    let store = Store::open(cfg).unwrap();
    println!(
        "crash recovery with checkpoint: {:?}, {:?}",
        t.elapsed(),
        store.recovery_report()
    );
    store.close().unwrap();
}

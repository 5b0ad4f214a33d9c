//! Store benchmarks. Run:
#![allow(missing_docs)] // criterion macros generate undocumented items
//! `cargo bench -p actormq-store --bench store -- --warm-up-time 1 --measurement-time 3`
//! Data goes to a temp dir under `$ACTORMQ_BENCH_DIR` (default: the system
//! temp dir); old segments are force-deleted between samples.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actormq_store::{AppendMessage, FlushMode, FlushOutcome, Store, StoreConfig};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn base_dir() -> PathBuf {
    std::env::var_os("ACTORMQ_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

fn open(seg: u64, mode: FlushMode) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir_in(base_dir()).unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.segment_size = seg;
    cfg.flush_mode = mode;
    cfg.index_enabled = false;
    let store = Store::open(cfg).unwrap();
    (dir, store)
}

/// Deletes every segment but the active one (keeps disk use bounded).
fn trim(store: &Store) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    while store.clean_expired(now, 1.0).unwrap().segments_deleted > 0 {}
}

fn append_bench(c: &mut Criterion, name: &str, body_len: usize, batch: usize, seg: u64) {
    let (_dir, store) = open(seg, FlushMode::Async);
    let body = vec![7u8; body_len];
    let msgs: Vec<AppendMessage<'_>> = (0..batch)
        .map(|i| AppendMessage {
            topic: "bench",
            queue_id: (i % 8) as u32,
            body: &body,
            ..Default::default()
        })
        .collect();
    let mut out = Vec::with_capacity(batch);
    let mut g = c.benchmark_group("append");
    if body_len >= 1024 {
        g.throughput(Throughput::Bytes((body_len * batch) as u64));
    } else {
        g.throughput(Throughput::Elements(batch as u64));
    }
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                out.clear();
                store.append_into(&msgs, &mut out).unwrap();
            }
            let el = t.elapsed();
            trim(&store);
            el
        })
    });
    g.finish();
    drop(store);
}

fn appends(c: &mut Criterion) {
    append_bench(c, "128B_x32_async_1GiB_segments", 128, 32, 1 << 30);
    append_bench(c, "1KiB_x32_async_64MiB_segments", 1024, 32, 64 << 20);
}

/// 256 concurrent writers: 256 threads, each appending one 128-byte
/// message and waiting for its group commit, in a loop.
fn sync_flush(c: &mut Criterion) {
    let (_dir, store) = open(64 << 20, FlushMode::Sync);
    let store = Arc::new(store);
    let body = [3u8; 128];
    let mut g = c.benchmark_group("sync_flush");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("256_threads_128B", |b| {
        b.iter_custom(|iters| {
            let per = iters.div_ceil(256);
            let done = Arc::new(AtomicU64::new(0));
            let t = Instant::now();
            std::thread::scope(|s| {
                for w in 0..256u32 {
                    let (store, done) = (&store, &done);
                    s.spawn(move || {
                        let m = AppendMessage {
                            topic: "bench",
                            queue_id: w % 8,
                            body: &body,
                            ..Default::default()
                        };
                        for _ in 0..per {
                            let (_, o) = store.append_and_wait(std::slice::from_ref(&m)).unwrap();
                            assert_eq!(o, FlushOutcome::Flushed);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
            let el = t.elapsed();
            trim(&store);
            // Scale to the requested iteration count.
            el.mul_f64(iters as f64 / (per * 256) as f64)
        })
    });
    // The same load as a tight loop of 256 outstanding callbacks on one thread.
    g.bench_function("256_outstanding_callbacks_128B", |b| {
        b.iter_custom(|iters| {
            let m = AppendMessage {
                topic: "bench",
                queue_id: 0,
                body: &body,
                ..Default::default()
            };
            let acked = Arc::new(AtomicU64::new(0));
            let t = Instant::now();
            let mut sent = 0u64;
            while sent < iters {
                while sent - acked.load(Ordering::Acquire) >= 256 {
                    std::hint::spin_loop();
                }
                let r = store.append(&m).unwrap();
                let a = acked.clone();
                store.on_flushed(
                    r.commit_log_offset + r.size as u64,
                    Box::new(move |o| {
                        assert_eq!(o, FlushOutcome::Flushed);
                        a.fetch_add(1, Ordering::Release);
                    }),
                );
                sent += 1;
            }
            while acked.load(Ordering::Acquire) < iters {
                std::thread::yield_now();
            }
            let el = t.elapsed();
            trim(&store);
            el
        })
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let (_dir, store) = open(64 << 20, FlushMode::Async);
    let body = [5u8; 128];
    let msgs: Vec<AppendMessage<'_>> = (0..32)
        .map(|_| AppendMessage {
            topic: "bench",
            queue_id: 0,
            body: &body,
            ..Default::default()
        })
        .collect();
    for _ in 0..3125 {
        store.append_batch(&msgs).unwrap();
    }
    store.dispatch_all().unwrap();
    let n = store.max_offset("bench", 0);
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(32));
    let mut off = 0u64;
    g.bench_function("32x128B_from_consume_queue", |b| {
        b.iter_batched(
            || {
                off = (off + 32) % (n - 32);
                off
            },
            |o| {
                let r = store.get_messages("bench", 0, o, 32, 1 << 20, None);
                assert_eq!(r.messages.len(), 32);
                r
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = reads, appends, sync_flush
}
criterion_main!(benches);

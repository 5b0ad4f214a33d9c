//! Loom models of the crate's concurrency protocols. Run with
//! `RUSTFLAGS="--cfg actormq_loom" cargo test -p actormq-store --release --lib loom_`.

use crate::flush::{FlushOutcome, GroupCommit};
use crate::mapped_file::MappedFile;
use crate::region::{HeapRegion, Region};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering, thread};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// A reader never sees bytes the writer has not published; loom flags any
/// unsynchronised access to the per-byte cells of the heap region.
#[test]
fn loom_reader_never_sees_unpublished_bytes() {
    model(|| {
        let m = Arc::new(MappedFile::new(HeapRegion::new(4), 0, None, 0));
        let w = m.clone();
        let writer = thread::spawn(move || {
            // SAFETY: the only writer, writing beyond the published position.
            unsafe { w.write_at(0, &[1, 2]) };
            w.publish(2);
            // SAFETY: as above.
            unsafe { w.write_at(2, &[3, 4]) };
            w.publish(4);
        });
        let r = m.clone();
        let reader = thread::spawn(move || {
            let n = r.wrote();
            let mut buf = vec![0u8; n];
            assert!(r.read_into(0, &mut buf));
            assert_eq!(&buf[..], &[1, 2, 3, 4][..n]);
            // Beyond the published position nothing may be read.
            let mut one = [0u8; 1];
            if n < 4 {
                assert!(!r.read_into(n.max(r.wrote()), &mut one) || r.wrote() > n);
            }
        });
        writer.join().unwrap();
        reader.join().unwrap();
    });
}

/// The flush watermark never passes the write position and never regresses,
/// with two concurrent flushers.
#[test]
fn loom_flush_watermark_bounded_and_monotonic() {
    model(|| {
        let m = Arc::new(MappedFile::new(HeapRegion::new(4), 0, None, 0));
        let w = m.clone();
        let writer = thread::spawn(move || {
            for i in 0..2usize {
                // SAFETY: single writer beyond the published position.
                unsafe { w.write_at(i * 2, &[9, 9]) };
                w.publish(i * 2 + 2);
            }
        });
        let f = m.clone();
        let flusher = thread::spawn(move || {
            let a = f.flush().unwrap();
            let b = f.flush().unwrap();
            assert!(a <= b);
        });
        let f1 = m.flushed();
        let w1 = m.wrote();
        assert!(f1 <= w1, "flushed {f1} > written {w1}");
        let f2 = m.flushed();
        assert!(f1 <= f2);
        writer.join().unwrap();
        flusher.join().unwrap();
        let end = m.flush().unwrap();
        assert_eq!(end, 4);
        assert_eq!(m.flushed(), m.wrote());
    });
}

struct CountingRegion {
    inner: HeapRegion,
    unmaps: Arc<AtomicUsize>,
}

impl Region for CountingRegion {
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    unsafe fn write(&self, offset: usize, src: &[u8]) {
        assert_eq!(self.unmaps.load(Ordering::SeqCst), 0, "write after unmap");
        // SAFETY: forwarded contract.
        unsafe { self.inner.write(offset, src) }
    }
    unsafe fn read(&self, offset: usize, dst: &mut [u8]) {
        assert_eq!(self.unmaps.load(Ordering::SeqCst), 0, "read after unmap");
        // SAFETY: forwarded contract.
        unsafe { self.inner.read(offset, dst) }
    }
    unsafe fn slice(&self, _offset: usize, _len: usize) -> Option<&[u8]> {
        None
    }
    unsafe fn slice_mut(&self, _offset: usize, _len: usize) -> Option<&mut [u8]> {
        None
    }
    fn flush(&self, _offset: usize, _len: usize) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for CountingRegion {
    fn drop(&mut self) {
        self.unmaps.fetch_add(1, Ordering::SeqCst);
    }
}

/// Retention removing a segment while a reader holds it: the reader keeps
/// reading valid memory, and the region is unmapped exactly once, after the
/// last holder lets go.
#[test]
fn loom_unmap_waits_for_reader() {
    model(|| {
        let unmaps = Arc::new(AtomicUsize::new(0));
        let region = CountingRegion {
            inner: HeapRegion::new(2),
            unmaps: unmaps.clone(),
        };
        let seg = Arc::new(MappedFile::new(region, 0, None, 0));
        // SAFETY: not shared yet.
        unsafe { seg.write_at(0, &[7, 8]) };
        seg.publish(2);
        let held = seg.clone();
        let reader = thread::spawn(move || {
            let mut b = [0u8; 2];
            assert!(held.read_into(0, &mut b));
            assert_eq!(b, [7, 8]);
            assert!(held.read_into(1, &mut b[..1]));
            drop(held);
        });
        // Retention: mark removed and drop the owner's reference.
        seg.mark_removed();
        drop(seg);
        reader.join().unwrap();
        assert_eq!(unmaps.load(Ordering::SeqCst), 1);
    });
}

/// Group commit: a waiter registering concurrently with a flush is always
/// woken (no lost wake-up) and never acknowledged before its bytes are
/// flushed.
#[test]
fn loom_group_commit_no_lost_wakeup_no_early_ack() {
    model(|| {
        let gc = Arc::new(GroupCommit::default());
        let flushed = Arc::new(AtomicU64::new(0));
        let (g1, f1) = (gc.clone(), flushed.clone());
        let waiter = thread::spawn(move || {
            let t = g1.ticket(10, u64::MAX, || f1.load(Ordering::Acquire));
            let o = t.wait_forever();
            assert_eq!(o, FlushOutcome::Flushed);
            assert!(
                f1.load(Ordering::Acquire) >= 10,
                "acknowledged before flushed"
            );
        });
        let (g2, f2) = (gc.clone(), flushed.clone());
        let flusher = thread::spawn(move || {
            // A partial flush first: must not acknowledge the waiter.
            f2.store(5, Ordering::Release);
            g2.complete(f2.load(Ordering::Acquire), 0, false);
            f2.store(10, Ordering::Release);
            g2.complete(f2.load(Ordering::Acquire), 0, false);
        });
        waiter.join().unwrap();
        flusher.join().unwrap();
    });
}

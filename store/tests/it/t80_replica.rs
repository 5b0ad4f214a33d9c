//! Replication at the store level: a slave store fed by `read_raw` /
//! `append_raw` holds the master's log byte for byte, across segments,
//! after a restart of either, and refuses bytes that do not continue it.

use actormq_store::{RawRead, Store};

use crate::common::{body, cfg, check_queues_match_log, msg};

const SEG: u64 = 64 * 1024;

/// Copies everything the master has past the slave's end; returns chunks.
fn replicate(master: &Store, slave: &Store, max_len: usize) -> usize {
    let mut chunks = 0;
    loop {
        let from = slave.commit_log_max_offset();
        match master.read_raw(from, max_len) {
            RawRead::Chunk(b) => {
                let end = slave.append_raw(from, &b).expect("append_raw");
                assert_eq!(end, from + b.len() as u64);
                chunks += 1;
            }
            RawRead::CaughtUp => return chunks,
            other => panic!("unexpected {other:?} at {from}"),
        }
    }
}

fn same_log(master: &Store, slave: &Store) {
    assert_eq!(
        master.commit_log_max_offset(),
        slave.commit_log_max_offset()
    );
    let (a, _) = master.scan_log(0, usize::MAX);
    let (b, _) = slave.scan_log(0, usize::MAX);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.record(), y.record());
    }
}

#[test]
fn a_slave_store_holds_the_masters_log_byte_for_byte() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(cfg(md.path(), SEG)).unwrap();
    let slave = Store::open(cfg(sd.path(), SEG)).unwrap();
    let mut n = 0u64;
    for round in 0..3 {
        for _ in 0..400 {
            let b = body(n, 100 + (n % 700) as usize);
            master
                .append(&msg(["a", "b"][(n % 2) as usize], (n % 3) as u32, &b))
                .unwrap();
            n += 1;
        }
        // Small chunks on the first round, big ones after.
        let chunks = replicate(&master, &slave, if round == 0 { 1000 } else { 1 << 20 });
        assert!(chunks > 0);
        same_log(&master, &slave);
    }
    assert!(master.commit_log_max_offset() > 3 * SEG, "several segments");
    slave.dispatch_all().unwrap();
    check_queues_match_log(&slave);
    for (topic, qids) in master.queues() {
        for q in qids {
            assert_eq!(master.max_offset(&topic, q), slave.max_offset(&topic, q));
        }
    }
    // The slave's writer continues the queue offsets (a promoted slave).
    let a = slave.append(&msg("a", 0, b"after")).unwrap();
    assert_eq!(a.queue_offset, master.next_queue_offset("a", 0));
}

#[test]
fn a_restarted_slave_goes_on_from_its_end() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(cfg(md.path(), SEG)).unwrap();
    for i in 0..300u64 {
        master.append(&msg("t", 0, &body(i, 300))).unwrap();
    }
    {
        let slave = Store::open(cfg(sd.path(), SEG)).unwrap();
        replicate(&master, &slave, 4096);
        slave.close().unwrap();
    }
    for i in 300..700u64 {
        master.append(&msg("t", 0, &body(i, 300))).unwrap();
    }
    let slave = Store::open(cfg(sd.path(), SEG)).unwrap();
    replicate(&master, &slave, 1 << 20);
    same_log(&master, &slave);
}

#[test]
fn bytes_that_do_not_continue_the_log_are_refused() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = Store::open(cfg(md.path(), SEG)).unwrap();
    let slave = Store::open(cfg(sd.path(), SEG)).unwrap();
    for i in 0..10u64 {
        master.append(&msg("t", 0, &body(i, 50))).unwrap();
    }
    let RawRead::Chunk(b) = master.read_raw(0, 1 << 20) else {
        panic!("a chunk");
    };
    // Not at the slave's end.
    assert!(slave.append_raw(10, &b).is_err());
    // Damaged.
    let mut bad = b.to_vec();
    bad[200] ^= 1;
    assert!(slave.append_raw(0, &bad).is_err());
    assert_eq!(slave.commit_log_max_offset(), 0, "nothing written");
    slave.append_raw(0, &b).unwrap();
    // A slave past the master's end, or off a record boundary.
    let end = master.commit_log_max_offset();
    assert!(matches!(
        master.read_raw(end + 5, 100),
        RawRead::Ahead { .. }
    ));
    assert!(matches!(master.read_raw(3, 100), RawRead::Diverged(_)));
    assert!(matches!(master.read_raw(end, 100), RawRead::CaughtUp));
}

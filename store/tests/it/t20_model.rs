//! Model-based test: random batch appends, reads, dispatches, flushes and
//! reopens (clean close, and drop without close = crash) against an
//! in-memory model.

use std::collections::HashMap;

use actormq_store::{GetStatus, Store};
use proptest::prelude::*;

use crate::common::{body, cfg, check_queues_match_log, msg};

const TOPICS: [&str; 3] = ["alpha", "beta", "gamma-topic"];

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(usize, u32, usize)>),
    Dispatch(usize),
    Read(usize, u32, u64, usize),
    Flush,
    Reopen { clean: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..3usize, 0..3u32, 0..900usize), 1..12).prop_map(Op::Append),
        2 => (0..40usize).prop_map(Op::Dispatch),
        3 => (0..3usize, 0..3u32, 0..40u64, 1..20usize).prop_map(|(t, q, o, n)| Op::Read(t, q, o, n)),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), 4096);
        let mut store = Some(Store::open(c.clone()).unwrap());
        let mut model: HashMap<(usize, u32), Vec<Vec<u8>>> = HashMap::new();
        let mut seed = 0u64;
        for op in ops {
            let s = store.as_ref().unwrap();
            match op {
                Op::Append(specs) => {
                    let bodies: Vec<Vec<u8>> = specs.iter().map(|&(_, _, n)| { seed += 1; body(seed, n) }).collect();
                    let msgs: Vec<_> = specs.iter().zip(&bodies).map(|(&(t, q, _), b)| msg(TOPICS[t], q, b)).collect();
                    let r = s.append_batch(&msgs).unwrap();
                    for ((&(t, q, _), b), a) in specs.iter().zip(bodies).zip(&r.messages) {
                        let v = model.entry((t, q)).or_default();
                        prop_assert_eq!(a.queue_offset, v.len() as u64);
                        v.push(b);
                    }
                }
                Op::Dispatch(n) => { s.dispatch(n).unwrap(); }
                Op::Read(t, q, o, n) => {
                    let g = s.get_messages(TOPICS[t], q, o, n, usize::MAX, None);
                    let dispatched = s.max_offset(TOPICS[t], q);
                    let v = model.get(&(t, q)).map(|v| v.len() as u64).unwrap_or(0);
                    prop_assert!(dispatched <= v);
                    if o < dispatched {
                        prop_assert_eq!(g.status, GetStatus::Found);
                        let want = (dispatched - o).min(n as u64) as usize;
                        prop_assert_eq!(g.messages.len(), want);
                        for (i, m) in g.messages.iter().enumerate() {
                            let qo = o + i as u64;
                            prop_assert_eq!(m.queue_offset(), qo);
                            prop_assert_eq!(&m.body()[..], &model[&(t, q)][qo as usize][..]);
                        }
                        prop_assert_eq!(g.next_begin_offset, o + want as u64);
                    } else {
                        prop_assert!(g.messages.is_empty());
                    }
                }
                Op::Flush => {
                    let f = s.flush_now().unwrap();
                    prop_assert_eq!(f, s.commit_log_max_offset());
                }
                Op::Reopen { clean } => {
                    let s = store.take().unwrap();
                    if clean { s.close().unwrap() } else { drop(s) }
                    let s = Store::open(c.clone()).unwrap();
                    prop_assert_eq!(s.recovery_report().clean, clean);
                    // Open re-dispatches everything.
                    for (&(t, q), v) in &model {
                        prop_assert_eq!(s.max_offset(TOPICS[t], q), v.len() as u64);
                    }
                    check_queues_match_log(&s);
                    store = Some(s);
                }
            }
        }
        let s = store.take().unwrap();
        s.dispatch_all().unwrap();
        for (&(t, q), v) in &model {
            prop_assert_eq!(s.max_offset(TOPICS[t], q), v.len() as u64);
            for (i, b) in v.iter().enumerate() {
                let m = s.read_by_queue_offset(TOPICS[t], q, i as u64).unwrap();
                prop_assert_eq!(&m.body()[..], &b[..]);
            }
        }
        check_queues_match_log(&s);
        s.close().unwrap();
    }
}

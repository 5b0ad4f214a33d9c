//! Subscription filter benchmarks: what a broker pays per message read
//! for a SQL92 subscription (evaluating a compiled expression over a
//! message's properties) against a tag subscription's check, and what
//! compiling costs (done once per distinct expression).
//!
//! Run: `cargo bench -p actormq-protocol --bench filter -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use actormq_protocol::filter::{SqlExpr, TagExpr};
use criterion::{Criterion, criterion_group, criterion_main};

const EXPR: &str = "a > 5 AND b IN ('x','y') AND c IS NOT NULL AND d BETWEEN 1 AND 3";

/// Six properties, as a record's encoded properties are scanned: linearly.
const PROPS: [(&str, &str); 6] = [
    ("TAGS", "TagA"),
    ("KEYS", "order-1"),
    ("a", "17"),
    ("b", "y"),
    ("c", "yes"),
    ("d", "2.5"),
];

fn lookup(k: &str) -> Option<&'static str> {
    PROPS.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
}

fn filters(c: &mut Criterion) {
    let sql = SqlExpr::compile(EXPR).unwrap();
    assert!(sql.matches(lookup));
    c.bench_function("sql92_eval_4_predicates", |b| {
        b.iter(|| black_box(&sql).matches(|k| lookup(black_box(k))))
    });
    let tags = TagExpr::parse("TagA || TagB").unwrap();
    c.bench_function("tag_match", |b| {
        b.iter(|| black_box(&tags).matches(lookup(black_box("TAGS"))))
    });
    c.bench_function("sql92_compile", |b| {
        b.iter(|| SqlExpr::compile(black_box(EXPR)).unwrap())
    });
}

criterion_group!(benches, filters);
criterion_main!(benches);

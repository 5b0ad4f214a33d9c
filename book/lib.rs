//! # actormq-book
//!
//! The actormq book (mdBook sources in `book/src/`). Every chapter listed in
//! `src/SUMMARY.md` is included below as the documentation of an empty
//! module, so `cargo test --workspace` compiles and runs the Rust code
//! blocks of the book as doc-tests. A unit test fails if a chapter of
//! `SUMMARY.md` is not included here.
//!
//! **Place in the layering:** a leaf that may use every other crate.
#![forbid(unsafe_code)]

/// Chapter "Introduction".
#[doc = include_str!("src/introduction.md")]
pub mod introduction {}

/// Chapter "Quickstart" (its Rust code is `examples/src/quickstart.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` blocks are
/// marked `ignore` here).
#[doc = include_str!("src/quickstart.md")]
pub mod quickstart {}

/// Chapter "Running a node".
#[doc = include_str!("src/running-a-node.md")]
pub mod running_a_node {}

/// Chapter "Architecture".
#[doc = include_str!("src/architecture.md")]
pub mod architecture {}

/// Chapter "Wire protocol".
#[doc = include_str!("src/wire-protocol.md")]
pub mod wire_protocol {}

/// Chapter "Storage".
#[doc = include_str!("src/storage.md")]
pub mod storage {}

/// Chapter "Actors and supervision".
#[doc = include_str!("src/actors-and-supervision.md")]
pub mod actors_and_supervision {}

/// Chapter "Writing your own actor" (its code is `examples/src/custom_actor.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` blocks are
/// marked `ignore` here).
#[doc = include_str!("src/writing-your-own-actor.md")]
pub mod writing_your_own_actor {}

/// Chapter "Producers" (its code is `examples/src/producer.rs`,
/// `async_oneway.rs` and `batch.rs`, compiled and tested by the examples
/// crate; the `{{#include}}` blocks are marked `ignore` here).
#[doc = include_str!("src/producers.md")]
pub mod producers {}

/// Chapter "Consumers and rebalance" (its code is
/// `examples/src/pull_consumer.rs`, `tag_filter.rs` and `broadcast.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` blocks and
/// the strategy sketch are marked `ignore` here).
#[doc = include_str!("src/consumers.md")]
pub mod consumers {}

/// Chapter "Looking messages up" (its code is `examples/src/queries.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` block is
/// marked `ignore` here).
#[doc = include_str!("src/queries.md")]
pub mod queries {}
/// Chapter "Subscription groups" (its code is
/// `examples/src/subscription_group.rs`, compiled and tested by the
/// examples crate; the `{{#include}}` blocks are marked `ignore` here).
#[doc = include_str!("src/subscription-groups.md")]
pub mod subscription_groups {}
/// Chapter "Offset reset" (its Rust code is `examples/src/offset_reset.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` block is
/// marked `ignore` here).
#[doc = include_str!("src/offset-reset.md")]
pub mod offset_reset {}
/// Chapter "Delayed messages" (its code is `examples/src/delayed.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` block is
/// marked `ignore` here).
#[doc = include_str!("src/delayed-messages.md")]
pub mod delayed_messages {}
/// Chapter "Retries and dead letters" (its code is
/// `examples/src/retry_dlq.rs`, compiled and tested by the examples crate;
/// the `{{#include}}` blocks are marked `ignore` here).
#[doc = include_str!("src/retries-and-dead-letters.md")]
pub mod retries_and_dead_letters {}
/// Chapter "Simple consumer" (its code is `examples/src/simple_consumer.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` blocks
/// are marked `ignore` here).
#[doc = include_str!("src/simple-consumer.md")]
pub mod simple_consumer {}
/// Chapter "SQL92 filters" (its consumer code is
/// `examples/src/sql_filter.rs`, compiled and tested by the examples crate;
/// the `{{#include}}` blocks are marked `ignore` here; the evaluator
/// example runs as a doc-test).
#[doc = include_str!("src/sql-filters.md")]
pub mod sql_filters {}
/// Chapter "Transactional messages" (its Rust code is
/// `examples/src/transfer.rs`, compiled and tested by the examples crate;
/// the `{{#include}}` blocks are marked `ignore` here; the checker's
/// `plan_pass` example runs as a doc-test).
#[doc = include_str!("src/transactions.md")]
pub mod transactions {}
/// Chapter "Orderly consumption" (its consumer code is
/// `examples/src/orderly.rs`, compiled and tested by the examples crate;
/// the `{{#include}}` blocks are marked `ignore` here; the lock
/// bookkeeping example runs as a doc-test).
#[doc = include_str!("src/orderly-consumption.md")]
pub mod orderly_consumption {}
/// Chapter "Idempotent producer" (its Rust code is
/// `examples/src/idempotent.rs`, compiled and tested by the examples crate;
/// the `{{#include}}` block is marked `ignore` here).
#[doc = include_str!("src/idempotent-producer.md")]
pub mod idempotent_producer {}

/// Chapter "High availability" (its code is `examples/src/ha.rs`,
/// compiled and tested by the examples crate; the `{{#include}}` blocks
/// are marked `ignore` here).
#[doc = include_str!("src/high-availability.md")]
pub mod high_availability {}

/// Chapter "Using existing RocketMQ clients".
#[doc = include_str!("src/rocketmq-clients.md")]
pub mod rocketmq_clients {}
/// Chapter "Operating a cluster".
#[doc = include_str!("src/operating-a-cluster.md")]
pub mod operating_a_cluster {}
/// Chapter "Benchmarking".
#[doc = include_str!("src/benchmarking.md")]
pub mod benchmarking {}

#[cfg(test)]
mod tests {
    /// Every `(file.md)` link in SUMMARY.md must be included by this file.
    #[test]
    fn every_summary_chapter_is_included() {
        let summary = include_str!("src/SUMMARY.md");
        let this_file = include_str!("lib.rs");
        let chapters = summary_chapters(summary);
        assert!(!chapters.is_empty(), "SUMMARY.md lists no chapters");
        for chapter in chapters {
            let needle = format!("include_str!(\"src/{chapter}\")");
            assert!(
                this_file.contains(&needle),
                "book/lib.rs does not include {chapter}"
            );
        }
    }

    #[test]
    fn summary_parser_finds_links() {
        let s = "# Summary\n[Intro](introduction.md)\n- [A](a/b.md)\n- [Draft]()\n";
        assert_eq!(summary_chapters(s), vec!["introduction.md", "a/b.md"]);
    }

    /// Chapter paths of a SUMMARY.md: the targets of `[title](path.md)` links.
    fn summary_chapters(summary: &str) -> Vec<&str> {
        summary
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .filter(|target| target.ends_with(".md"))
            .collect()
    }
}

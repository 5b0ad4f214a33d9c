//! `actormq bench` against a combined child-process node: `bench produce`,
//! `bench consume --simple` and `bench e2e` print a JSON summary whose
//! fields parse, count every message and report no errors.

use std::net::SocketAddr;
use std::process::Output;

use crate::common::*;

/// The summary (last stdout line) of a successful run, checked field by
/// field.
fn summary(out: &Output, messages: u64) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a summary line");
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON: {last:?}: {e}"));
    assert_eq!(v["messages"].as_u64(), Some(messages), "{v}");
    assert_eq!(v["errors"].as_u64(), Some(0), "{v}");
    for f in ["seconds", "msgs_per_sec", "mb_per_sec"] {
        assert!(v[f].as_f64().is_some_and(|x| x >= 0.0), "{f}: {v}");
    }
    for f in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(v[f].is_u64(), "{f}: {v}");
    }
    let p = |f: &str| v[f].as_u64().unwrap_or(0);
    assert!(
        p("p50_us") <= p("p99_us") && p("p99_us") <= p("p999_us"),
        "{v}"
    );
    assert!(p("p999_us") <= p("max_us"), "{v}");
    v
}

#[actix_rt::test]
async fn t80_bench_produce_and_e2e_print_their_summaries() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        let produced = actormq(
            ns,
            &[
                "bench",
                "produce",
                "-t",
                "t80-bench",
                "--messages",
                "2000",
                "--json",
            ],
        );
        summary(&produced, 2000);
        let batched = actormq(
            ns,
            &[
                "bench",
                "produce",
                "-t",
                "t80-bench",
                "--messages",
                "2000",
                "--batch",
                "32",
                "--json",
            ],
        );
        summary(&batched, 2000);
        // The simple consumer receives and batch-acks all of them (the
        // two warm-up sends included) and nothing more.
        let simple = actormq(
            ns,
            &[
                "bench",
                "consume",
                "--simple",
                "--concurrency",
                "4",
                "-t",
                "t80-bench",
                "-g",
                "t80-simple",
                "--messages",
                "4002",
                "--json",
            ],
        );
        summary(&simple, 4002);
        let e2e = actormq(
            ns,
            &[
                "bench",
                "e2e",
                "-t",
                "t80-e2e",
                "--messages",
                "1000",
                "--json",
            ],
        );
        summary(&e2e, 1000);
    })
    .await;
}

#[actix_rt::test]
async fn t81_bench_rate_paces_produce_and_e2e() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        // 1000 messages at 2000/s: the last is not due before 0.4995 s.
        for what in ["produce", "e2e"] {
            let out = actormq(
                ns,
                &[
                    "bench",
                    what,
                    "-t",
                    "t81-rate",
                    "--messages",
                    "1000",
                    "--rate",
                    "2000",
                    "--json",
                ],
            );
            let v = summary(&out, 1000);
            let secs = v["seconds"].as_f64().unwrap_or(0.0);
            assert!(secs >= 0.49, "{what} not paced: {v}");
            let rate = v["msgs_per_sec"].as_f64().unwrap_or(f64::MAX);
            assert!(rate <= 2100.0, "{what} faster than --rate: {v}");
        }
        let zero = actormq(ns, &["bench", "produce", "-t", "t81-rate", "--rate", "0"]);
        assert!(!zero.status.success(), "--rate 0 must be refused");
    })
    .await;
}

/// The CLI with this module's timeout.
fn actormq(namesrv: SocketAddr, args: &[&str]) -> Output {
    let timeout = "10000".to_string();
    let mut all = vec!["--timeout-ms", timeout.as_str()];
    all.extend_from_slice(args);
    crate::common::actormq(namesrv, &all)
}

#[actix_rt::test]
async fn t80_bench_over_grpc_produces_receives_and_acks() {
    bounded(async {
        let node = combined(NO_ARGS);
        let ns = node.namesrv();
        let grpc = node.grpc().to_string();
        let produced = actormq(
            ns,
            &[
                "bench",
                "produce",
                "-t",
                "t80-grpc",
                "--messages",
                "2000",
                "--concurrency",
                "32",
                "--grpc",
                &grpc,
                "--json",
            ],
        );
        summary(&produced, 2000);
        // Received and acked over gRPC: all of them (the warm-up send
        // included) and nothing more.
        let consumed = actormq(
            ns,
            &[
                "bench",
                "consume",
                "--simple",
                "-t",
                "t80-grpc",
                "-g",
                "t80-grpc-g",
                "--messages",
                "2001",
                "--grpc",
                &grpc,
                "--json",
            ],
        );
        summary(&consumed, 2001);
        // Refused, not ignored: gRPC sends are unbatched.
        let out = actormq(
            ns,
            &[
                "bench", "produce", "-t", "t80-grpc", "--batch", "32", "--grpc", &grpc,
            ],
        );
        assert!(!out.status.success(), "{out:?}");
    })
    .await;
}

//! End-to-end tests: nodes as child processes on `127.0.0.1:0` with temp
//! data dirs, driven over TCP by the protocol-level client of
//! `actormq-tests`.
//!
//! | module | needs |
//! |---|---|
//! | `t10_combined` | a combined node (name server + topics/offsets/groups) |
//! | `t20_split` | `actormq-namesrv` + `actormq-broker` processes |
//! | `t30_bad_peers` | any node |
//! | `t35_fd_exhaustion` | a combined node, `prlimit` (util-linux) |
//! | `t40_send_pull` | the broker data path (send, pull, long polling) |
//! | `t50_crash` | the broker data path with `--flush sync` |
//! | `t55_data_dir` | two `actormq-node` processes on one data dir |
//! | `t56_disk_full` | a node on a small tmpfs (root; skipped where mount is not permitted) |
//! | `t60_producer` | the SDK producer and the `actormq` CLI (combined and split nodes) |
//! | `t62_transactions` | transactional producers: commit, rollback, check-back, another member, broker restarts, check max |
//! | `t63_idempotent` | the idempotent SDK producer behind a reply-dropping TCP proxy (`--broker-advertise`); the dedup window across a SIGKILL |
//! | `t65_queries` | `admin msg get / query` and the SDK's `MessageQuery` |
//! | `t70_consumer` | SDK push consumers (rebalance, broadcasting, tags, restart, supervised services; the SDK's `fault-injection` feature) |
//! | `t75_subscription_groups` | `actormq admin group …`, group auto-creation on and off, restarts |
//! | `t72_orderly` | orderly push consumers (SDK `.orderly()`, queue selector producer) and `actormq consume --orderly` |
//! | `t71_offset_reset` | SDK push consumers and `actormq admin offset reset` / `consume --from TS` |
//! | `t75_sql_filter` | SQL92 filters: the `actormq consume --sql` CLI, an SDK push consumer, raw pulls and heartbeats; `enable_property_filter = false` |
//! | `t76_simple` | the simple (pop) consumer: SDK `SimpleConsumer` (ack, redelivery, change of invisible duration, stale receipts, SIGKILL) and `actormq consume --simple [--orderly]` (`--fail-every`, dead letters, queue order) |
//! | `t80_bench` | `actormq bench` (produce, e2e) |
//! | `t90_grpc` | the RocketMQ 5 gRPC endpoint (`--grpc-listen`): a tonic client from the vendored protos and the official Python client (PyPI, installed into a venv under the target dir by the test; `ACTORMQ_TESTS_NO_PYPI=1` skips it), read back by the native SDK, and the other way round |
//! | `t95_ops` | the HTTP endpoint (`--http-listen`): `/metrics` against real traffic and `promtool check metrics` (Debian's `prometheus` package, apt-installed by the test when missing), the admin API against the CLI's `--json`, bad input |
//! | `t96_dashboard` | the dashboard at `/` rendered by headless Chromium (Debian's `chromium`, apt-installed by the test when missing; `ACTORMQ_TESTS_NO_CHROMIUM=1` skips it): topics, group lag per queue against the CLI, charts, message lookup, dead letters; screenshots in `target/tmp/artifacts/` |
//!
//! Run: `cargo test -p actormq-tests --test e2e` (one module:
//! `… --test e2e t30_`). Every test bounds its own time and kills its
//! children on the way out, pass or fail.

mod common;
mod t10_combined;
mod t20_split;
mod t30_bad_peers;
mod t35_fd_exhaustion;
mod t40_send_pull;
mod t50_crash;
mod t55_data_dir;
mod t56_disk_full;
mod t60_producer;
mod t62_transactions;
mod t63_idempotent;
mod t65_queries;
mod t70_consumer;
mod t71_offset_reset;
mod t72_orderly;
mod t72_retry;
mod t73_ordered_topic;
mod t75_sql_filter;
mod t75_subscription_groups;
mod t76_simple;
mod t80_bench;
mod t85_ha;
mod t90_grpc;
mod t95_ops;
mod t96_dashboard;

//! # actormq-tests
//!
//! End-to-end and fault tests that cross crate and process boundaries:
//! nodes on `127.0.0.1:0`, temp data dirs, child processes killed with
//! SIGKILL. Crate-local tests live beside their code instead.
//!
//! - [`client`]: a protocol-level client (typed calls, pipelined bursts,
//!   raw bytes for fault tests).
//! - [`node`]: runs node binaries as child processes.
//! - `tests/e2e/`: the end-to-end test binary (`cargo test -p
//!   actormq-tests --test e2e`).
//! - `src/bin/actormq-loadgen.rs`: a pipelined load generator.
//!
//! **Place in the layering:** a leaf; it may use every other crate.
#![forbid(unsafe_code)]

pub mod client;
pub mod node;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 20 ms until it returns `Ok`, for at most `limit`;
/// `Err(last error text)` on timeout. For state that converges
/// asynchronously after a change on a running node (the route of a topic
/// just created, a broker dropped after a kill), never for readiness of a
/// process: its ready line comes after its listeners are bound and its
/// broker's first registration with its name servers was answered.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("not within {limit:?}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

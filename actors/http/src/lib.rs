//! The node's operations endpoint: Prometheus metrics at `/metrics`, the
//! JSON admin API under `/api/`, and the dashboard at `/`, served by
//! actix-web on the node's actix runtime.
//!
//! The admin API is [`actormq_sdk::admin`], the same implementation the
//! `actormq admin` commands print: an HTTP handler asks the node's name
//! servers and brokers exactly as the CLI does, so both show the same
//! data. Errors are JSON too (`{"error":"…"}`) with 400 (bad input), 404
//! (unknown topic, group or message), 413 (body over the limit) or 502
//! (a name server or broker failed).

pub mod api;
pub mod metrics;
pub mod sampler;
pub mod server;
pub mod stats;

pub use api::ApiConfig;
pub use api::Extra;
pub use metrics::NodeMetrics;
pub use sampler::{BrokerSources, CountSource, Sampler, Sources};
pub use server::HttpServer;
pub use stats::StatsHistory;

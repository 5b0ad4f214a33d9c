//! Name-server actors: the route [`registry`] (with its plain
//! [`route_table`]). Name servers never talk to each other; brokers
//! register with every one of them.

pub mod registry;
pub mod route_table;

pub use registry::{Registry, RegistryConfig, ScanInactiveBrokers};
pub use route_table::RouteTable;

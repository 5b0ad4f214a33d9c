//! RocketMQ 5's gRPC API (`apache.rocketmq.v2.MessagingService`) in front
//! of the broker actors: one more kind of client session.
//!
//! The messages, the server trait and a client are generated at build time
//! from the `.proto` files vendored in `proto/` (see `proto/README.md`).

/// The generated `apache.rocketmq.v2` types, server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod pb {
    tonic::include_proto!("apache.rocketmq.v2");
}

pub mod clients;
pub mod convert;
pub mod server;
pub mod service;

pub use clients::{GrpcClients, GrpcClientsConfig};
pub use server::GrpcServer;
pub use service::{GrpcSession, GrpcSessionConfig, GrpcTargets};

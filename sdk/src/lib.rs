//! # actormq-sdk
//!
//! The client SDK (producers, push / pull consumers, rebalance) and the
//! actor runtime for writing client-side actors, re-exported from
//! `actormq-runtime` so that a user depends on one crate.
//!
//! **Place in the layering:** `protocol, runtime <- sdk`; the SDK links
//! neither the storage engine (`store`) nor the broker actors (`actors`)
//! nor `cluster`. Plugins that run *inside* a broker (`BrokerPlugin`) come
//! from `actormq-actors` (re-exported as `actormq_cluster::actors`).
//!
//! **Status:** the custom-actor API ([`actors`], [`prelude`]), the wire
//! protocol ([`protocol`]), routing ([`route`], [`connections`]) and the
//! [`producer`] are here; see [`consumer`] for the consumers.
#![forbid(unsafe_code)]

pub use actormq_protocol as protocol;

pub mod consumer;
pub mod rebalance;

/// The custom-actor API: supervision, typed calls that may cross nodes,
/// request-code routing and client sessions (crate `actormq-runtime`).
pub mod actors {
    pub use actormq_runtime::*;
}

/// What a custom actor usually needs, in one `use`.
pub mod prelude {
    pub use crate::{ClientError, Producer, ProducerBuilder, SendResult, SendStatus};
    pub use actix::prelude::*;
    pub use actormq_runtime::net::{ClientHandle, ClientSessions, Lane, Router};
    pub use actormq_runtime::{
        Call, CallRelay, ChildRef, ChildSpec, Relay, Reply, Rpc, ServiceError, SpawnChild,
        Supervisor, USER_CODES, route_child,
    };
}

pub mod admin;
pub mod client_id;
pub mod connections;
pub mod error;
pub mod idempotence;
pub mod producer;
pub mod query;
pub mod route;
pub mod transaction;

pub use connections::Connections;
pub use error::ClientError;
pub use producer::{
    Producer, ProducerBuilder, ProducerConfig, QueueSelector, SendResult, SendStatus,
};
pub use query::MessageQuery;
pub use route::{RouteCache, TopicRoute};
pub use transaction::{
    TransactionListener, TransactionProducer, TransactionSendResult, TransactionState,
};

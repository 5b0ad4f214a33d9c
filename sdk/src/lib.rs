//! # actormq-sdk
//!
//! The client SDK (producers, push / pull consumers, rebalance) and the
//! public API for writing custom actors, re-exported from `actors` so that a
//! user depends on one crate.
//!
//! **Place in the layering:** `protocol <- sdk`, plus the custom-actor
//! runtime of `actors`; the SDK never uses `store` or `cluster` directly.
//!
//! **Status:** the custom-actor API ([`actors`], [`prelude`]), the wire
//! protocol ([`protocol`]), routing ([`route`], [`connections`]) and the
//! [`producer`] are here; see [`consumer`] for the consumers.
#![forbid(unsafe_code)]

pub use actormq_protocol as protocol;

pub mod consumer;
pub mod rebalance;

/// The custom-actor API: supervision, typed calls that may cross nodes,
/// request-code routing, remote proxies, and broker events.
pub mod actors {
    pub use actormq_actors::runtime::*;
}

/// Plugging custom actors into a broker: [`broker::BrokerPlugin`] and the
/// "message stored" event.
pub mod broker {
    pub use actormq_actors::broker::dispatcher::MessagesStored;
    pub use actormq_actors::broker::plugin::{BrokerContext, BrokerPlugin};
}

/// What a custom actor usually needs, in one `use`.
pub mod prelude {
    pub use crate::{ClientError, Producer, ProducerBuilder, SendResult, SendStatus};
    pub use actix::prelude::*;
    pub use actormq_actors::runtime::net::{RemoteClient, Router};
    pub use actormq_actors::runtime::{
        Call, CallRelay, ChildRef, ChildSpec, Relay, Reply, Rpc, ServiceError, SpawnChild,
        Supervisor, USER_CODES, route_child,
    };
}

pub mod client_id;
pub mod connections;
pub mod error;
pub mod link;
pub mod producer;
pub mod route;

pub use connections::Connections;
pub use error::ClientError;
pub use producer::{Producer, ProducerBuilder, ProducerConfig, SendResult, SendStatus};
pub use route::{RouteCache, TopicRoute};

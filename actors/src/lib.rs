//! # actormq-actors
//!
//! The actor runtime of actormq and every broker / name-server actor.
//!
//! **Place in the layering:** `protocol <- store <- actors <- cluster`, and
//! `sdk` re-exports the custom-actor API from here. This crate may use the
//! wire types of [`actormq_protocol`] and the storage engine of
//! [`actormq_store`]; it never depends on `cluster` or `sdk`.
//!
//! - [`runtime`]: supervision, `Call<R>` messages that may cross nodes, the
//!   TCP listener / sessions / router and the `RemoteClient` proxy.
//! - [`broker`]: one actor per concern (`CommitLogActor`, `FlushService`,
//!   `Dispatcher`, `PullHold`, `QueryService`, `TopicManager`,
//!   `OffsetManager`, `GroupManager`, `Registrar`, `RetentionCleaner`) and
//!   the `BrokerPlugin` API for custom actors.
//! - [`namesrv`]: the route `Registry`.
//!
//! Not built yet (later issues): scheduling of delayed messages,
//! transactions, retry/DLQ topics, SQL92 filters, replication.
#![forbid(unsafe_code)]

pub mod broker;
pub mod namesrv;
pub mod runtime;

pub use actormq_protocol as protocol;
pub use actormq_store as store;

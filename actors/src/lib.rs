//! # actormq-actors
//!
//! Every broker / name-server actor of actormq, and the broker's one
//! supervised wiring ([`broker::BrokerActors::start`]).
//!
//! **Place in the layering:** `protocol <- store <- actors <- cluster` and
//! `protocol <- runtime <- actors`. This crate may use the wire types of
//! [`actormq_protocol`], the storage engine of [`actormq_store`] and the
//! actor runtime (`actormq-runtime`, re-exported as [`runtime`]); it never
//! depends on `cluster` or `sdk`.
//!
//! - [`runtime`] (crate `actormq-runtime`): supervision, `Call<R>` messages that may cross nodes, the
//!   TCP listener / sessions / router and the client sessions.
//! - [`broker`]: one actor per concern (`CommitLogActor`, `FlushService`,
//!   `Dispatcher`, `PullHold`, `QueryService`, `TopicManager`,
//!   `OffsetManager`, `GroupManager`, `Registrar`, `RetentionCleaner`) and
//!   the `BrokerPlugin` API for custom actors.
//! - [`namesrv`]: the route `Registry`.
//!
//! Not built yet (later issues): scheduling of delayed messages,
//! transactions, retry/DLQ topics, replication.
#![forbid(unsafe_code)]

pub mod broker;
pub mod namesrv;

pub use actormq_protocol as protocol;
/// The actor runtime (crate `actormq-runtime`), re-exported under its old path.
pub use actormq_runtime as runtime;
pub use actormq_store as store;

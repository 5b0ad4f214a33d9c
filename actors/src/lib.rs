//! # actormq-actors
//!
//! The actor runtime of actormq and every broker / name-server actor.
//!
//! **Place in the layering:** `protocol <- store <- actors <- cluster`, and
//! `sdk` re-exports the custom-actor API from here. This crate may use the
//! wire types of [`actormq_protocol`] and the storage engine of
//! [`actormq_store`]; it never depends on `cluster` or `sdk`.
//!
//! **Status:** the supervision runtime ([`runtime`]) is here. Location-
//! transparent recipients and the broker actors (`Session`,
//! `CommitLogActor`, `FlushService`, `Dispatcher`, `PullHold`, ...) arrive
//! with the issue "Broker and name server as supervised actors". Nothing
//! here is stubbed.
#![forbid(unsafe_code)]

pub mod broker;
pub mod namesrv;
pub mod runtime;

pub use actormq_protocol as protocol;
pub use actormq_store as store;

//! # actormq-sdk
//!
//! The client SDK (producers, push / pull consumers, rebalance) and the
//! public API for writing custom actors, re-exported from `actors` so that a
//! user depends on one crate.
//!
//! **Place in the layering:** `protocol <- sdk`; the SDK never uses `store`
//! or `cluster`.
//!
//! **Status:** for now it re-exports the wire protocol only. The producer and
//! consumers arrive with the issue "Client SDK and the `actormq` CLI".
#![forbid(unsafe_code)]

pub use actormq_protocol as protocol;

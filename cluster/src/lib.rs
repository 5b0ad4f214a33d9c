//! # actormq-cluster
//!
//! Node assembly: configuration (figment layering), roles (name server,
//! broker, combined), HA wiring, and the binaries `actormq-node`,
//! `actormq-namesrv`, `actormq-broker` and `actormq`.
//!
//! **Place in the layering:** the top of `protocol <- store <- actors <-
//! cluster`; it may also use `sdk` for the client CLI.
//!
//! Modules: [`config`] (every key with its default), [`logging`] (the slog
//! drain), [`node`] (which actors a role starts, and how they are wired),
//! [`node_main`] (the node binaries' `main`), [`cli`] (the `actormq`
//! command). Replication (HA) is not built yet: its flags are accepted and
//! reported as inactive.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod logging;
pub mod node;
pub mod node_main;

pub use actormq_actors as actors;

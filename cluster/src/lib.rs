//! # actormq-cluster
//!
//! Node assembly: configuration (figment layering), roles (name server,
//! broker, combined), HA wiring, and the binaries `actormq-node`,
//! `actormq-namesrv`, `actormq-broker` and `actormq`.
//!
//! **Place in the layering:** the top of `protocol <- store <- actors <-
//! cluster`; it may also use `sdk` for the client CLI.
//!
//! **Status:** the node configuration ([`config`]) and the log drain
//! ([`logging`]) are here. The node
//! binaries arrive with the issue "Broker and name server as supervised
//! actors"; the `actormq` CLI with the client SDK issue. No binary is
//! shipped yet, so none pretends to run.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod logging;
pub mod node;
pub mod node_main;

pub use actormq_actors as actors;

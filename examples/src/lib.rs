//! # actormq-examples
//!
//! Runnable scenarios. Each scenario is a library function here, a short
//! `main` under `examples/`, and a test that runs it, so examples cannot rot.
//! The book includes their code by `{{#include}}` anchors.
//!
//! **Place in the layering:** a user of `sdk`, with `cluster` to start an
//! in-process node.
#![forbid(unsafe_code)]

pub mod consumer;
pub mod custom_actor;
pub mod node;
pub mod producer;

//! # actormq-examples
//!
//! Runnable scenarios. Each scenario is a library function here, a short
//! `main` under `examples/`, and a test that runs it, so examples cannot rot.
//! The book includes their code by `{{#include}}` anchors.
//!
//! **Place in the layering:** a user of `sdk` (and of `protocol` directly
//! for the wire-level examples).
#![forbid(unsafe_code)]

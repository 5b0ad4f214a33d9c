//! # actormq-tests
//!
//! End-to-end and fault tests that cross crate and process boundaries:
//! nodes on `127.0.0.1:0`, temp data dirs, child processes killed with
//! SIGKILL. Crate-local tests live beside their code instead.
//!
//! **Place in the layering:** a leaf; it may use every other crate.
#![forbid(unsafe_code)]

//! `actormq-namesrv`: runs an actormq name server. See `spec/cli.md` and the book's
//! "Running a node" chapter.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use actormq_cluster::config::Role;

fn main() -> ExitCode {
    actormq_cluster::node_main::main_with_role(
        Some(Role::Namesrv),
        "Runs an actormq name server (the route registry brokers register with).",
    )
}

//! `actormq-broker`: runs an actormq broker. See `spec/cli.md` and the book's
//! "Running a node" chapter.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use actormq_cluster::config::Role;

fn main() -> ExitCode {
    actormq_cluster::node_main::main_with_role(
        Some(Role::Broker),
        "Runs an actormq broker; it registers with the name servers given by --namesrv.",
    )
}

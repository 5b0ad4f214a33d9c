//! `actormq-node`: runs an actormq node (name server, broker, or both). See `spec/cli.md` and the book's
//! "Running a node" chapter.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    actormq_cluster::node_main::main_with_role(
        None,
        "Runs an actormq node: name server, broker, or both (combined).",
    )
}

//! `actormq`: the client command (produce, consume, admin, bench). See
//! `spec/cli.md` and the book's "Producers" chapter.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    actormq_cluster::cli::main_with_args(std::env::args_os())
}

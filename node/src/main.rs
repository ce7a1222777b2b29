//! The `graunt` binary: parses the command line and hands over to
//! [`graunt::cli`]; every role is a library call.

use std::process::ExitCode;

use clap::Parser;

// Queries allocate and free many ~100 KiB series; glibc hands those back to
// the kernel each time (page faults, zeroing), mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    graunt::cli::run(graunt::cli::Cli::parse())
}

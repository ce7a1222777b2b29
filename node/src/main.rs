//! The `graunt` binary: one command per role (see `graunt --help`). This file
//! only parses arguments and hands over; each role lives in its own module.

mod ack;
mod agent;
mod cli;
mod cluster;
mod relay;
mod serve;
mod statsd;
mod web;

use std::process::ExitCode;

use clap::Parser;

// Queries allocate and free many ~100 KiB series; glibc hands those back to
// the kernel each time (page faults, zeroing), mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}

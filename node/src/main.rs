//! The `graunt` binary: one command per role (see `graunt --help`). This file
//! only parses arguments and hands over; each role lives in its own module.

mod cli;
mod serve;
mod web;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::run(args)
}

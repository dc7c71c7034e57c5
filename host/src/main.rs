//! The `consentry` binary: parses arguments and hands them to [`consentry::cli::run`].

use std::process::ExitCode;

use clap::Parser;
use consentry::cli::{self, Cli};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(Cli::parse()).unwrap_or_else(|error| {
        error.report();
        error.exit_code()
    })
}

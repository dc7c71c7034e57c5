//! The `consentry` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use clap::Parser;
use consentry::cli::{Cli, Command};
use consentry::{commands, serve};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve(args) => match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(serve::serve(args)),
            Err(error) => {
                eprintln!("error: cannot start the runtime: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Check(args) => commands::check(&args),
        Command::Validate(args) => commands::validate(&args),
    }
}

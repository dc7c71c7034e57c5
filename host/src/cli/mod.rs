//! The `consentry` command line: a thin layer over the library.
//!
//! `main` parses the arguments and calls [`run`]; every subcommand is a
//! function here that opens what it needs through the library, prints its
//! answer, and returns an [`Outcome`] or a [`CliError`]. Nothing below this
//! module prints to the terminal or picks an exit code, so the library
//! serves the HTTP API and the tests alike, and an exit code means the same
//! in every command (see [`error`]).

pub mod args;
mod audit;
mod generated;
mod imports;
mod offline;
mod plugin;
mod policies;
mod serve;
mod stores;
mod test;
mod token;

pub mod error;

pub use args::{Cli, Command};
pub use error::{CliError, Outcome};

use std::process::ExitCode;

use args::{AuditCommand, EntitiesCommand, PluginCommand, PoliciesCommand, TokenCommand};

/// Runs the command `cli` names to its end.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    // `serve` installs its logger once its configuration says how.
    if !matches!(cli.command, Command::Serve(_)) {
        crate::telemetry::init_cli();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the runtime: {e}")))?;
    let outcome = match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::Check(args) => runtime.block_on(offline::check(&args)),
        Command::Search(args) => runtime.block_on(offline::search(&args)),
        Command::Plan(args) => runtime.block_on(offline::plan(&args)),
        Command::Validate(args) => policies::validate(&args),
        Command::Test(args) => runtime.block_on(test::run(&args)),
        Command::CompileConsent(args) => policies::compile_consent(&args),
        Command::Plugin(PluginCommand::Check(args)) => plugin::check(&args),
        Command::Audit(AuditCommand::Verify(args)) => runtime.block_on(audit::verify(&args)),
        Command::Token(TokenCommand::New(args)) => token::new(&args),
        Command::Policies(PoliciesCommand::Import(args)) => runtime.block_on(imports::policies(&args)),
        Command::Entities(EntitiesCommand::Import(args)) => runtime.block_on(imports::entities(&args)),
        Command::Completions(args) => generated::completions(&args),
        Command::Man(args) => generated::man(&args),
    }?;
    Ok(outcome.exit_code())
}

//! The `consentry` binary: parses arguments and dispatches to the library.

use std::process::ExitCode;

use clap::Parser;
use consentry::cli::{
    AuditCommand, Cli, Command, EntitiesCommand, PluginCommand, PoliciesCommand, TokenCommand,
};
use consentry::{commands, policy_test, serve};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` installs its logger once its configuration says how.
    if !matches!(cli.command, Command::Serve(_)) {
        consentry::telemetry::init_cli();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(*args)),
        Command::Check(args) => runtime.block_on(commands::check(&args)),
        Command::Search(args) => runtime.block_on(commands::search(&args)),
        Command::Plan(args) => runtime.block_on(consentry::planning::run(&args)),
        Command::Validate(args) => commands::validate(&args),
        Command::Test(args) => runtime.block_on(policy_test::run(&args)),
        Command::CompileConsent(args) => commands::compile_consent(&args),
        Command::Plugin(PluginCommand::Check(args)) => commands::plugin_check(&args),
        Command::Audit(AuditCommand::Verify(args)) => runtime.block_on(commands::audit_verify(&args)),
        Command::Token(TokenCommand::New(args)) => commands::token_new(&args),
        Command::Policies(PoliciesCommand::Import(args)) => {
            runtime.block_on(commands::policies_import(&args))
        }
        Command::Entities(EntitiesCommand::Import(args)) => {
            runtime.block_on(commands::entities_import(&args))
        }
        Command::Completions(args) => commands::completions(&args),
        Command::Man(args) => commands::man(&args),
    }
}

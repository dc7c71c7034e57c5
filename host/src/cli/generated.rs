//! `completions` and `man`: generated from the same command definition the
//! CLI parses with, so they never lag behind it.

use std::io::Write as _;

use super::args::{Cli, CompletionsArgs, ManArgs};
use super::error::{CliError, Outcome};

/// `consentry completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> Result<Outcome, CliError> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "consentry", &mut script);
    write_stdout(&script)
}

/// `consentry man`: the page of `consentry` on stdout, or every command's
/// page in `--out-dir`.
pub fn man(args: &ManArgs) -> Result<Outcome, CliError> {
    let command = <Cli as clap::CommandFactory>::command();
    if let Some(dir) = &args.out_dir {
        clap_mangen::generate_to(command, dir).map_err(|e| {
            CliError::failed(format!("cannot write the man pages into `{}`: {e}", dir.display()))
        })?;
        return Ok(Outcome::Done);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut page)
        .map_err(|e| CliError::failed(format!("cannot render the man page: {e}")))?;
    write_stdout(&page)
}

/// Writes generated text to stdout; a closed pipe is an error, not a panic.
fn write_stdout(bytes: &[u8]) -> Result<Outcome, CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::failed(format!("cannot write to stdout: {e}")))?;
    Ok(Outcome::Done)
}

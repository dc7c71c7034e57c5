//! What a command ends with, and the one place that turns it into an exit
//! code.
//!
//! Scripts branch on the exit code, so it must mean the same in every
//! command: 0 done (or Allow), 1 something failed or a case failed, 2 Deny
//! (or nothing found), 3 the input was refused. Commands never choose a
//! code: they return an [`Outcome`] or a [`CliError`], and only
//! [`CliError::exit_code`] and [`Outcome::exit_code`] know the numbers.

use std::error::Error as StdError;
use std::process::ExitCode;

use thiserror::Error;

use crate::audit::VerifyFailure;
use crate::policy_dir::DirError;

/// An error, boxed at the CLI's edge: its kind is in the [`CliError`] variant.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How a command that did its work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for `check`, an Allow.
    Done,
    /// A Deny, a plan that reaches nothing, or a search that finds nothing.
    Denied,
    /// A policy test case failed.
    CasesFailed,
}

impl Outcome {
    /// The process's exit code.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Done => ExitCode::SUCCESS,
            Self::Denied => ExitCode::from(EXIT_DENY),
            Self::CasesFailed => ExitCode::FAILURE,
        }
    }
}

/// Why a command did not do what it was asked.
#[derive(Debug, Error)]
pub enum CliError {
    /// The policy directory was refused; shown with source spans.
    #[error(transparent)]
    Dir(Box<DirError>),
    /// The input was refused: a request, consent, configuration, token,
    /// certificate, plugin or test file.
    #[error("{0}")]
    Invalid(BoxError),
    /// Something the command needed failed: the store, the decision log,
    /// the disk or the network.
    #[error("{0}")]
    Failed(BoxError),
    /// The decision log is not as it was written.
    #[error(transparent)]
    Tampered(Box<VerifyFailure>),
}

impl From<DirError> for CliError {
    fn from(error: DirError) -> Self {
        Self::Dir(Box::new(error))
    }
}

/// The exit code of a Deny.
const EXIT_DENY: u8 = 2;
/// The exit code of refused input.
const EXIT_INVALID: u8 = 3;

impl CliError {
    /// Refused input.
    pub fn invalid(error: impl Into<BoxError>) -> Self {
        Self::Invalid(error.into())
    }

    /// A failure of something the command needed.
    pub fn failed(error: impl Into<BoxError>) -> Self {
        Self::Failed(error.into())
    }

    /// The process's exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Dir(_) | Self::Invalid(_) => ExitCode::from(EXIT_INVALID),
            Self::Failed(_) | Self::Tampered(_) => ExitCode::FAILURE,
        }
    }

    /// Writes the error to stderr the way its kind is read: a refused
    /// directory as its problems with their sources, a tampered log as a
    /// verdict rather than an error.
    pub fn report(&self) {
        match self {
            Self::Dir(refused) if let DirError::Invalid { error, sources } = refused.as_ref() => {
                let problems = error.problems();
                eprint!("{}", sources.render(&problems));
                eprintln!("{} problem(s): the policy directory is invalid", problems.len());
            }
            Self::Tampered(failure) => eprintln!("tampered: {failure}"),
            other => eprintln!("error: {other}"),
        }
    }
}

//! `consentry test DIR`: the policy tests of [`crate::policy_test`], run
//! file by file, each case's line printed as it finishes.

use std::sync::Arc;

use super::args::TestArgs;
use super::error::{CliError, Outcome};
use crate::plugins::Plugins;
use crate::policy_dir;
use crate::policy_test::{self, failure, run_file, status_line, summary_line};

/// Runs every test file in `args.dir` against `args.policies` and prints the results.
pub async fn run(args: &TestArgs) -> Result<Outcome, CliError> {
    let files = policy_test::test_files(&args.dir).map_err(CliError::invalid)?;
    // Loaded once up front so that an invalid directory is reported before any test runs.
    let loaded = policy_dir::load(&args.policies)?;
    let (bundle, store) = (Arc::new(loaded.bundle), loaded.store);
    let plugins = Plugins::load_optional(args.plugins.as_deref()).map_err(CliError::invalid)?;
    let (mut passed, mut failed, mut invalid) = (0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for (path, syntax) in &files {
        let shown =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        // A file that cannot be used is reported and counted; the others still run.
        let test = match policy_test::read(path, *syntax) {
            Ok(test) => test,
            Err(error) => {
                eprintln!("error: {error}");
                invalid += 1;
                continue;
            }
        };
        let suite = test.name.clone();
        let file = path.display().to_string();
        let decisions = args.decisions.options();
        match run_file(&file, Arc::clone(&bundle), store.clone(), plugins.share(), decisions, test).await {
            Ok(cases) => {
                for case in &cases {
                    println!("{}", status_line(&shown, case));
                    if case.passed() {
                        passed += 1;
                    } else {
                        failed += 1;
                        failures.push(failure(&shown, suite.as_deref(), case));
                    }
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                invalid += 1;
            }
        }
    }
    for failure in &failures {
        print!("\n{failure}");
    }
    if !failures.is_empty() {
        println!();
    }
    println!("{}", summary_line(passed, failed));
    if invalid > 0 {
        Err(CliError::invalid(format!("{invalid} test file(s) could not be run")))
    } else if failed > 0 {
        Ok(Outcome::CasesFailed)
    } else {
        Ok(Outcome::Done)
    }
}

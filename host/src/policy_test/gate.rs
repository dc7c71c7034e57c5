//! The policy tests as a gate on what the server puts in force.
//!
//! With `serve --policy-tests DIR`, a candidate policy set (from a `--watch`
//! reload, `PUT /v1/policies` or `PUT /v1/schema`, and the set loaded at
//! start-up) is put in force only if every case in `DIR` passes against it.
//! The cases run exactly as `consentry test DIR` runs them: the same runner,
//! a fresh consent store per file in a temporary directory that is removed
//! with it, the same comparison, through the plugins in force. The files
//! are read again for every candidate, so an edit to the tests governs the
//! next change. A file that cannot be run refuses the candidate too: a
//! suite that cannot say yes says no.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use consentry_engine::{DecisionOptions, EntityStore, PolicyBundle};

use super::run::{self, CaseResult};
use super::{read, test_files};
use crate::plugins::Plugins;

/// How many failures a one-line account names before it counts the rest.
const NAMED_IN_BRIEF: usize = 3;

/// The longest expected or actual value shown for a failed case.
const SHOWN_VALUE: usize = 120;

/// Why a candidate was refused: the failed cases and the files that could not be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// One line per failed case (`file › case: field: expected …, actual …`)
    /// or unusable file (`file: why`).
    pub failures: Vec<String>,
    /// How many cases ran.
    pub cases: usize,
}

impl fmt::Display for Refusal {
    /// One line: how many failed, then the first few of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the policy tests failed ({} failure(s) in {} case(s)): ",
            self.failures.len(),
            self.cases
        )?;
        let named: Vec<&str> = self.failures.iter().take(NAMED_IN_BRIEF).map(String::as_str).collect();
        write!(f, "{}", named.join("; "))?;
        match self.failures.len().saturating_sub(NAMED_IN_BRIEF) {
            0 => Ok(()),
            more => write!(f, "; and {more} more"),
        }
    }
}

/// Runs every test file in `dir` against `bundle` and `store` through
/// `plugins`, deciding under the server's `decisions`; returns how many
/// cases passed, or why the candidate is refused.
pub async fn gate(
    dir: &Path,
    bundle: &Arc<PolicyBundle>,
    store: &EntityStore,
    plugins: &Plugins,
    decisions: DecisionOptions,
) -> Result<usize, Refusal> {
    let files = test_files(dir).map_err(|error| Refusal { failures: vec![error.to_string()], cases: 0 })?;
    let (mut failures, mut cases) = (Vec::new(), 0);
    for (path, syntax) in &files {
        let shown =
            path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into());
        let ran = match read(path, *syntax) {
            Ok(test) => {
                let file = path.display().to_string();
                run::run_file(&file, Arc::clone(bundle), store.clone(), plugins.share(), decisions, test)
                    .await
            }
            Err(error) => Err(error),
        };
        match ran {
            Ok(results) => {
                cases += results.len();
                failures.extend(results.iter().filter(|case| !case.passed()).map(|case| brief(&shown, case)));
            }
            Err(error) => failures.push(error.to_string()),
        }
    }
    if failures.is_empty() { Ok(cases) } else { Err(Refusal { failures, cases }) }
}

/// `file › case: field: expected X, actual Y; …`.
fn brief(file: &str, case: &CaseResult) -> String {
    let diffs: Vec<String> = case
        .diffs
        .iter()
        .map(|diff| {
            format!("{}: expected {}, actual {}", diff.field, shorten(&diff.expected), shorten(&diff.actual))
        })
        .collect();
    format!("{file} › {}: {}", case.name, diffs.join("; "))
}

fn shorten(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE) {
        Some((end, _)) => format!("{}…", value.get(..end).unwrap_or(value)),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::policy_dir;

    fn policies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    fn pack() -> (Arc<PolicyBundle>, EntityStore) {
        let loaded = policy_dir::load(&policies()).unwrap();
        (Arc::new(loaded.bundle), loaded.store)
    }

    const BREAK_GLASS: &str = r#"now: 2026-06-01T10:00:00Z
steps:
- name: dr-ali breaks the glass
  request: {principal: 'Practitioner::"dr-ali"', action: 'Action::"read"', resource: 'Record::"obs-1"',
            context: {purpose: BTG, justification: unconscious on arrival}}
  expect: {decision: Allow}
"#;

    fn suite(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn the_pack_passes_its_own_tests() {
        let (bundle, store) = pack();
        let passed =
            gate(&policies().join("tests"), &bundle, &store, &Plugins::none(), DecisionOptions::default())
                .await
                .unwrap();
        assert!(passed > 50, "{passed}");
    }

    #[tokio::test]
    async fn a_candidate_that_changes_a_decision_is_refused_naming_the_case() {
        let tests = suite(&[("break-glass.yaml", BREAK_GLASS)]);
        let (bundle, store) = pack();
        assert_eq!(
            gate(tests.path(), &bundle, &store, &Plugins::none(), DecisionOptions::default()).await,
            Ok(1)
        );
        let closed =
            format!("{}\n@id(\"closed\") forbid(principal, action, resource);", bundle.source().policies);
        let candidate = Arc::new(bundle.with_policies(&closed, &[]).unwrap());
        let refusal = gate(tests.path(), &candidate, &store, &Plugins::none(), DecisionOptions::default())
            .await
            .unwrap_err();
        assert_eq!(refusal.cases, 1);
        assert_eq!(refusal.failures.len(), 1);
        let failure = &refusal.failures[0];
        assert!(
            failure.starts_with(
                "break-glass.yaml › dr-ali breaks the glass: decision: expected Allow, actual Deny"
            ),
            "{failure}"
        );
        assert!(
            refusal.to_string().starts_with("the policy tests failed (1 failure(s) in 1 case(s)): "),
            "{refusal}"
        );
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_run_refuses_the_candidate() {
        let (bundle, store) = pack();
        let tests = suite(&[("a.yaml", BREAK_GLASS), ("b.yaml", "steps: [{nonsense: 1}]\n")]);
        let refusal = gate(tests.path(), &bundle, &store, &Plugins::none(), DecisionOptions::default())
            .await
            .unwrap_err();
        assert_eq!(refusal.cases, 1);
        assert!(refusal.failures[0].contains("b.yaml"), "{refusal:?}");
        let empty = tempfile::tempdir().unwrap();
        let refusal = gate(empty.path(), &bundle, &store, &Plugins::none(), DecisionOptions::default())
            .await
            .unwrap_err();
        assert!(refusal.failures[0].starts_with("no test files"), "{refusal:?}");
    }

    #[test]
    fn the_brief_account_names_the_first_failures_and_counts_the_rest() {
        let refusal = Refusal { failures: (1..=5).map(|n| format!("f{n}")).collect(), cases: 9 };
        assert_eq!(
            refusal.to_string(),
            "the policy tests failed (5 failure(s) in 9 case(s)): f1; f2; f3; and 2 more"
        );
        assert_eq!(shorten(&"x".repeat(200)).chars().count(), SHOWN_VALUE + 1);
        assert_eq!(shorten("short"), "short");
    }
}

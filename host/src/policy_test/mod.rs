//! `consentry test DIR`: policy tests, in the spirit of `opa test` and Cerbos test suites.
//!
//! A privacy team changes the pack and patients change their consents; both
//! must keep producing the decisions the team signed off. A test file states
//! consents, extra entities and requests with the decision, reasons and
//! obligations each must get, and runs through the server's own decision
//! path with a real consent store, so a passing suite says something about
//! production, not about a model of it; with `--plugins` that path includes
//! the plugins, so a labeler's or a guardian's effect can be signed off too.
//! Each file runs alone, in a fresh store; its steps run in order, so "a
//! withdrawal governs the very next request" can be written down.
//!
//! `serve --policy-tests DIR` runs the same cases as a gate on every
//! change of the policies in force ([`gate`]).
//!
//! `consentry test` (in [`crate::cli`]) exits 0 when every case passed, 1
//! when one failed, 3 when the input could not be used (an ill-formed test
//! file, an invalid policy directory or plugin configuration, a consent the
//! server would refuse).

mod format;
mod gate;
mod report;
mod run;

pub use format::{Syntax, TestFile};
pub use gate::{Refusal, gate};
pub use report::{failure, status_line, summary_line};
pub use run::{CaseResult, run_file};

use std::path::{Path, PathBuf};

use consentry_engine::LoadError;
use thiserror::Error;

use crate::consents::ConsentWriteError;

/// Why a test file, or the test directory, could not be used.
#[derive(Debug, Error)]
pub enum TestError {
    /// A file or directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory holds no test files.
    #[error("no test files (`*.yaml`, `*.yml`, `*.json`) in `{0}`")]
    NoFiles(PathBuf),
    /// The file is not valid YAML or JSON, or does not follow the test format.
    #[error("`{file}`: {detail}")]
    Format {
        /// The test file.
        file: String,
        /// The path of the problem in the file, then what is wrong.
        detail: String,
    },
    /// The file's entities were refused.
    #[error("`{file}`: entities: {source}")]
    Entities {
        /// The test file.
        file: String,
        /// Why they were refused.
        source: LoadError,
    },
    /// A consent was refused, as the server would refuse it.
    #[error("`{file}`: {at}: the consent was refused: {source}")]
    Consent {
        /// The test file.
        file: String,
        /// The step, e.g. `steps[2]`.
        at: String,
        /// Why it was refused.
        source: ConsentWriteError,
    },
    /// The temporary consent store could not be set up.
    #[error("`{file}`: cannot open a temporary consent store: {message}")]
    Store {
        /// The test file.
        file: String,
        /// What failed.
        message: String,
    },
}

impl TestError {
    /// A format problem at `at` (a path such as `steps[1].expect`; empty for the whole file).
    fn format(file: &str, at: &str, message: impl std::fmt::Display) -> Self {
        let detail =
            if at.is_empty() || at == "." { message.to_string() } else { format!("{at}: {message}") };
        Self::Format { file: file.to_owned(), detail }
    }

    fn store(file: &str, error: impl std::fmt::Display) -> Self {
        Self::Store { file: file.to_owned(), message: error.to_string() }
    }
}

/// The test files directly in `dir`, sorted by name, with the syntax each is written in.
pub fn test_files(dir: &Path) -> Result<Vec<(PathBuf, Syntax)>, TestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| TestError::Io { path: dir.to_owned(), source })?;
    let mut files: Vec<(PathBuf, Syntax)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| syntax(&p).map(|s| (p, s)))
        .collect();
    files.sort_by(|(a, _), (b, _)| a.cmp(b));
    if files.is_empty() {
        return Err(TestError::NoFiles(dir.to_owned()));
    }
    Ok(files)
}

fn syntax(path: &Path) -> Option<Syntax> {
    match path.extension()?.to_str()? {
        "yaml" | "yml" => Some(Syntax::Yaml),
        "json" => Some(Syntax::Json),
        _ => None,
    }
}

/// Reads and checks the test file at `path`.
pub fn read(path: &Path, syntax: Syntax) -> Result<TestFile, TestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| TestError::Io { path: path.to_owned(), source })?;
    format::parse(&path.display().to_string(), &text, syntax)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::plugins::Plugins;
    use crate::policy_dir;
    use consentry_engine::DecisionOptions;
    use std::sync::Arc;

    fn policies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    #[test]
    fn test_files_are_sorted_filtered_and_not_searched_recursively() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.yml", "a.json", "c.yaml", "notes.md", "d.cedar"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("nested.yaml")).unwrap();
        std::fs::write(dir.path().join("nested.yaml/e.yaml"), "").unwrap();
        let names: Vec<String> = test_files(dir.path())
            .unwrap()
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.json", "b.yml", "c.yaml"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(test_files(empty.path()), Err(TestError::NoFiles(_))));
    }

    const CONSENT: &str = r#"{resourceType: Consent, id: c-1, status: active,
        patient: {reference: Patient/p-100},
        provision: {type: permit, purpose: [{code: TREAT}],
                    actor: [{reference: {reference: Practitioner/dr-weber}}]}}"#;
    const READ: &str = r#"{principal: 'Practitioner::"dr-weber"', action: 'Action::"read"',
        resource: 'Record::"obs-1"', context: {purpose: TREAT}}"#;

    async fn run_text(text: &str) -> Result<Vec<CaseResult>, TestError> {
        let test = format::parse("t.yaml", text, Syntax::Yaml)?;
        let loaded = policy_dir::load(&policies()).unwrap();
        let decisions = DecisionOptions::default();
        run_file("t.yaml", Arc::new(loaded.bundle), loaded.store, Plugins::none(), decisions, test).await
    }

    #[tokio::test]
    async fn consents_are_stored_in_order_and_decide_the_next_request() {
        let text = format!(
            "now: 2026-06-01T10:00:00Z\nsteps:\n\
             - {{request: {READ}, expect: {{decision: Deny, outcome: not_permitted, reasons: []}}}}\n\
             - consent: {CONSENT}\n\
             - {{request: {READ}, expect: {{decision: Allow, reasons: [consent/c-1/v1/root], obligations: []}}}}\n\
             - {{request: {READ}, expect: {{decision: Deny}}}}\n"
        );
        let cases = run_text(&text).await.unwrap();
        assert!(cases[0].passed(), "{:?}", cases[0]);
        assert!(cases[1].passed(), "{:?}", cases[1]);
        // The last expectation is wrong: the runner must say so.
        assert!(!cases[2].passed());
        assert_eq!(cases[2].diffs[0].field, "decision");
    }

    #[tokio::test]
    async fn a_refused_consent_or_entity_makes_the_file_invalid() {
        let bad = CONSENT.replace("type: permit", "type: maybe");
        let text = format!(
            "now: 2026-06-01\nsteps:\n- consent: {bad}\n- {{request: {READ}, expect: {{decision: Deny}}}}\n"
        );
        let message = run_text(&text).await.unwrap_err().to_string();
        assert!(message.contains("steps[0]: the consent was refused"), "{message}");
        assert!(message.contains("provision.type"), "{message}");
        let text = format!(
            "now: 2026-06-01\nentities: [{{uid: {{type: Patient, id: p-9}}, attrs: {{restricted: maybe}}, parents: []}}]\n\
             steps:\n- {{request: {READ}, expect: {{decision: Deny}}}}\n"
        );
        let message = run_text(&text).await.unwrap_err().to_string();
        assert!(message.starts_with("`t.yaml`: entities: "), "{message}");
    }

    #[tokio::test]
    async fn the_tests_time_replaces_the_clock_and_a_sent_time_is_refused() {
        let expired = CONSENT.replace("type: permit,", "type: permit, period: {end: 2026-05-31},");
        let sent_now = READ.replace("purpose: TREAT", "purpose: TREAT, now: 2030-01-01");
        let text = format!(
            "now: 2026-05-30T10:00:00Z\nsteps:\n- consent: {expired}\n\
             - {{request: {READ}, expect: {{decision: Allow}}}}\n\
             - {{request: {READ}, now: 2026-06-01T00:00:00Z, expect: {{decision: Deny, outcome: not_permitted}}}}\n\
             - {{request: {sent_now}, expect: {{error: context.now}}}}\n\
             - {{request: {sent_now}, expect: {{decision: Deny}}}}\n"
        );
        let cases = run_text(&text).await.unwrap();
        assert!(cases[..3].iter().all(CaseResult::passed), "{cases:?}");
        assert_eq!(cases[3].diffs[0].expected, "no error");
    }
}

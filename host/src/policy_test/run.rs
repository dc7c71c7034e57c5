//! Running one test file through the server's own decision path.
//!
//! A test is only worth something if it exercises what production runs, so
//! nothing here re-implements a decision: consents go through
//! [`Consents::supersede`] into a real SQLite store (checked, compiled and
//! cached exactly as `PUT /v1/consents/{id}` does), and requests go through
//! [`Pipeline::decide`], the server's own pipeline, through the plugins
//! given with `--plugins`. The only difference from the server is the
//! clock: each request is evaluated at the instant the test names, so that a
//! test about an expiring consent passes today and in ten years; plugins
//! see that instant too.

use std::sync::Arc;

use consentry_engine::{Decision, DecisionOptions, EntityPatch, EntityStore, PolicyBundle, RequestError};

use super::TestError;
use super::format::{Case, Step, TestFile};
use super::report::{FieldDiff, compare};
use crate::consents::Consents;
use crate::pipeline::Pipeline;
use crate::plugins::Plugins;
use crate::store::StoreLocation;

/// The result of one case.
#[derive(Debug)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// The decision, or why the request was refused.
    pub actual: Result<Decision, RequestError>,
    /// The fields that differ from the expectation; empty when the case passed.
    pub diffs: Vec<FieldDiff>,
    /// What each plugin that ran did, in order.
    pub plugins: Vec<String>,
}

impl CaseResult {
    /// Whether the decision was as expected.
    pub fn passed(&self) -> bool {
        self.diffs.is_empty()
    }
}

/// Runs the steps of `test` in order, against `bundle` and `store`
/// overlaid with the file's entities, a fresh, empty consent store and
/// `plugins`, deciding under `decisions` as the server does.
pub async fn run_file(
    file: &str,
    bundle: Arc<PolicyBundle>,
    mut store: EntityStore,
    plugins: Plugins,
    decisions: DecisionOptions,
    test: TestFile,
) -> Result<Vec<CaseResult>, TestError> {
    if !test.entities.is_empty() {
        let patch = EntityPatch { upsert: test.entities, delete: Vec::new() };
        let parsed = patch
            .parse(bundle.schema())
            .map_err(|source| TestError::Entities { file: file.to_owned(), source })?;
        store.apply(parsed);
    }
    // Declared before the state so that it is removed only after the store is closed.
    let data = tempfile::tempdir().map_err(|e| TestError::store(file, e))?;
    let consents = Consents::open(&StoreLocation::Sqlite { dir: data.path().to_owned() })
        .await
        .map_err(|e| TestError::store(file, e))?;
    let pipeline = Pipeline::one_off(bundle, store, consents, plugins, decisions);
    let mut results = Vec::new();
    for step in test.steps {
        match step {
            Step::Consent { at, id, body } => {
                let bundle = pipeline.bundle();
                pipeline
                    .consents
                    .supersede(&bundle, &id, body)
                    .await
                    .map_err(|source| TestError::Consent { file: file.to_owned(), at, source })?;
            }
            Step::Case(case) => results.push(decide(&pipeline, *case).await),
        }
    }
    Ok(results)
}

/// Decides one case as `/v1/is_authorized` would, at the case's instant.
async fn decide(pipeline: &Pipeline, case: Case) -> CaseResult {
    let Case { name, request, now, expect } = case;
    let (actual, plugins) = match request.into_request(None) {
        Ok(mut request) => {
            request.now = Some(now);
            match pipeline.decide(&request).await {
                Ok(decided) => (Ok(decided.decision), decided.plugins),
                Err(error) => (Err(error), Vec::new()),
            }
        }
        Err(error) => (Err(error), Vec::new()),
    };
    let diffs = compare(&expect, &actual);
    CaseResult { name, actual, diffs, plugins }
}

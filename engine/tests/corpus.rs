//! Conformance corpus, in the shape of Cedar's own integration tests.
//!
//! Every directory under `tests/corpus/` is one case: Cedar policy text
//! (`*.cedar`, concatenated in sorted filename order), an optional schema
//! (`schema.cedarschema` or `schema.json`), optional `entities.json` and
//! `links.json`, and `requests.json` with hand-derived expectations.
//!
//! For every request this test checks two things:
//!
//! 1. **The corpus itself**: plain `cedar-policy` (full policy set, full
//!    entity set, no index, no slicing) must give exactly the decision,
//!    determining policies and erroring policies written in the corpus.
//! 2. **The engine**: `consentry_engine::decide` must give the same decision,
//!    the same sorted reason ids and the same sorted error policy ids.
//!
//! All mismatches are collected and reported together, each naming the
//! case, the request description, the expectation and both answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicyId,
    PolicySet, Request, Schema, SlotId,
};
use consentry_engine::{
    DecisionOptions, DecisionRequest, EntityStore, PolicyBundle, SchemaSource, TemplateLink, decide_with,
    parse_uid,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where the corpus lives, relative to the engine crate.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus");

/// The corpus must stay at least this large.
const MIN_CASES: usize = 14;

/// One entry of `requests.json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectation {
    description: String,
    request: RequestJson,
    decision: String,
    reasons: Vec<String>,
    errors: Vec<String>,
}

/// The `request` object of a `requests.json` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    principal: Value,
    action: Value,
    resource: Value,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    entities: Vec<Value>,
}

/// A decision reduced to what the corpus records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    decision: String,
    reasons: Vec<String>,
    errors: Vec<String>,
    /// Error messages, for failure reports only; not compared.
    messages: Vec<String>,
}

impl Answer {
    fn new(allowed: bool, mut reasons: Vec<String>, errors: Vec<(String, String)>) -> Self {
        reasons.sort();
        let mut errors = errors;
        errors.sort();
        Self {
            decision: if allowed { "Allow" } else { "Deny" }.to_owned(),
            reasons,
            messages: errors.iter().map(|(id, message)| format!("{id}: {message}")).collect(),
            errors: errors.into_iter().map(|(id, _)| id).collect(),
        }
    }

    fn same_as(&self, other: &Self) -> bool {
        self.decision == other.decision && self.reasons == other.reasons && self.errors == other.errors
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} reasons={:?} errors={:?}", self.decision, self.reasons, self.errors)?;
        if !self.messages.is_empty() {
            write!(f, " messages={:?}", self.messages)?;
        }
        Ok(())
    }
}

/// A corpus case, read from disk.
struct CorpusCase {
    name: String,
    policies: String,
    /// Schema text, and whether it is JSON.
    schema: Option<(String, bool)>,
    entities: Value,
    links: Vec<TemplateLink>,
    expectations: Vec<Expectation>,
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn load_case(dir: &Path) -> CorpusCase {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut cedar_files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cedar"))
        .collect();
    cedar_files.sort();
    assert!(
        cedar_files.iter().any(|p| p.file_name().is_some_and(|n| n == "policies.cedar")),
        "case `{name}` has no policies.cedar"
    );
    let policies = cedar_files.iter().map(|p| read(p)).collect::<Vec<_>>().join("\n");

    let cedar_schema = dir.join("schema.cedarschema");
    let json_schema = dir.join("schema.json");
    let schema = match (cedar_schema.exists(), json_schema.exists()) {
        (true, true) => panic!("case `{name}` has both schema.cedarschema and schema.json"),
        (true, false) => Some((read(&cedar_schema), false)),
        (false, true) => Some((read(&json_schema), true)),
        (false, false) => None,
    };

    let entities_path = dir.join("entities.json");
    let entities = if entities_path.exists() { read_json(&entities_path) } else { json!([]) };

    let links_path = dir.join("links.json");
    let links: Vec<TemplateLink> = if links_path.exists() {
        serde_json::from_value(read_json(&links_path))
            .unwrap_or_else(|e| panic!("case `{name}`: bad links.json: {e}"))
    } else {
        Vec::new()
    };

    let expectations: Vec<Expectation> = serde_json::from_value(read_json(&dir.join("requests.json")))
        .unwrap_or_else(|e| panic!("case `{name}`: bad requests.json: {e}"));

    CorpusCase { name, policies, schema, entities, links, expectations }
}

fn load_corpus() -> Vec<CorpusCase> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(CORPUS)
        .unwrap_or_else(|e| panic!("cannot read corpus directory {CORPUS}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    dirs.iter().map(|dir| load_case(dir)).collect()
}

// ---------------------------------------------------------------------------
// The oracle: plain cedar-policy, built independently of the engine.
// ---------------------------------------------------------------------------

/// Everything plain Cedar needs for a case, built once.
struct Oracle {
    schema: Option<Schema>,
    policies: PolicySet,
}

fn try_oracle_uid(value: &Value) -> Result<EntityUid, String> {
    match value {
        Value::String(text) => {
            EntityUid::from_str(text).map_err(|e| format!("cedar rejected the uid `{text}`: {e}"))
        }
        other => {
            EntityUid::from_json(other.clone()).map_err(|e| format!("cedar rejected the uid `{other}`: {e}"))
        }
    }
}

fn oracle_uid(value: &Value) -> EntityUid {
    try_oracle_uid(value).unwrap_or_else(|e| panic!("{e}"))
}

fn oracle_schema(schema: Option<&(String, bool)>) -> Option<Schema> {
    schema.map(|(text, is_json)| {
        if *is_json {
            Schema::from_json_str(text).unwrap_or_else(|e| panic!("bad JSON schema: {e:?}"))
        } else {
            Schema::from_cedarschema_str(text).unwrap_or_else(|e| panic!("bad Cedar schema: {e:?}")).0
        }
    })
}

fn oracle_policies(text: &str, links: &[TemplateLink]) -> PolicySet {
    let parsed = PolicySet::from_str(text).unwrap_or_else(|e| panic!("policies do not parse: {e:?}"));
    let mut set = PolicySet::new();
    for template in parsed.templates() {
        let id = template.annotation("id").map_or_else(|| template.id().clone(), PolicyId::new);
        set.add_template(template.new_id(id)).unwrap_or_else(|e| panic!("cannot add template: {e}"));
    }
    for policy in parsed.policies() {
        let id = policy.annotation("id").map_or_else(|| policy.id().clone(), PolicyId::new);
        set.add(policy.new_id(id)).unwrap_or_else(|e| panic!("cannot add policy: {e}"));
    }
    for link in links {
        let values: HashMap<SlotId, EntityUid> = link
            .values
            .iter()
            .map(|(slot, value)| {
                let slot = match slot.as_str() {
                    "?principal" => SlotId::principal(),
                    "?resource" => SlotId::resource(),
                    other => panic!("unknown slot `{other}`"),
                };
                (slot, oracle_uid(value))
            })
            .collect();
        set.link(PolicyId::new(&link.template), PolicyId::new(&link.id), values)
            .unwrap_or_else(|e| panic!("cannot link `{}`: {e}", link.id));
    }
    set
}

/// Stored entities with the request's entities laid over them, by uid.
fn merged_entities(stored: &Value, request: &[Value]) -> Value {
    let shadowed: HashSet<EntityUid> = request.iter().map(|e| oracle_uid(&e["uid"])).collect();
    let mut merged: Vec<Value> = stored
        .as_array()
        .expect("entities.json must be an array")
        .iter()
        .filter(|e| !shadowed.contains(&oracle_uid(&e["uid"])))
        .cloned()
        .collect();
    merged.extend(request.iter().cloned());
    Value::Array(merged)
}

impl Oracle {
    fn new(case: &CorpusCase) -> Self {
        Self {
            schema: oracle_schema(case.schema.as_ref()),
            policies: oracle_policies(&case.policies, &case.links),
        }
    }

    fn answer(&self, stored: &Value, request: &RequestJson) -> Result<Answer, String> {
        let schema = self.schema.as_ref();
        let entities = Entities::from_json_value(merged_entities(stored, &request.entities), schema)
            .map_err(|e| format!("cedar rejected the entities: {e}"))?;
        let principal = try_oracle_uid(&request.principal)?;
        let action = try_oracle_uid(&request.action)?;
        let resource = try_oracle_uid(&request.resource)?;
        let context_json = request.context.clone().unwrap_or_else(|| json!({}));
        let context = Context::from_json_value(context_json, schema.map(|s| (s, &action)))
            .map_err(|e| format!("cedar rejected the context: {e}"))?;
        let cedar_request = Request::new(principal, action, resource, context, schema)
            .map_err(|e| format!("cedar rejected the request: {e}"))?;
        let response = Authorizer::new().is_authorized(&cedar_request, &self.policies, &entities);
        let diagnostics = response.diagnostics();
        let reasons = diagnostics.reason().map(ToString::to_string).collect();
        let errors = diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => {
                    (e.policy_id().to_string(), e.inner().to_string())
                }
            })
            .collect();
        Ok(Answer::new(response.decision() == CedarDecision::Allow, reasons, errors))
    }
}

// ---------------------------------------------------------------------------
// The engine under test.
// ---------------------------------------------------------------------------

struct Engine {
    bundle: PolicyBundle,
    store: EntityStore,
}

impl Engine {
    fn new(case: &CorpusCase) -> Result<Self, String> {
        let schema = case.schema.as_ref().map(|(text, is_json)| {
            if *is_json { SchemaSource::Json(text) } else { SchemaSource::CedarText(text) }
        });
        let bundle = PolicyBundle::load(schema, &case.policies, &case.links)
            .map_err(|e| format!("engine refused the bundle: {e}"))?;
        let store = EntityStore::from_json(&case.entities, bundle.schema())
            .map_err(|e| format!("engine refused the entities: {e}"))?;
        Ok(Self { bundle, store })
    }

    fn answer(&self, request: &RequestJson) -> Result<Answer, String> {
        let mut decision_request = DecisionRequest::new(
            parse_uid(&request.principal, "principal").map_err(|e| e.to_string())?,
            parse_uid(&request.action, "action").map_err(|e| e.to_string())?,
            parse_uid(&request.resource, "resource").map_err(|e| e.to_string())?,
        );
        decision_request.context = request.context.clone();
        decision_request.entities = request.entities.clone();
        // Plain Cedar's semantics, which the corpus pins.
        let decision =
            decide_with(&self.bundle, &[], &self.store, &decision_request, &DecisionOptions::cedar_exact())
                .map_err(|e| format!("engine refused the request: {e}"))?;
        let reasons = decision.reasons.iter().map(|r| r.policy.clone()).collect();
        let mut errors = Vec::new();
        let mut faults = Vec::new();
        for error in &decision.errors {
            match &error.policy {
                Some(policy) => errors.push((policy.clone(), error.message.clone())),
                None => faults.push(error.message.clone()),
            }
        }
        if !faults.is_empty() {
            return Err(format!("engine fault ({:?}): {faults:?}", decision.outcome));
        }
        Ok(Answer::new(decision.is_allowed(), reasons, errors))
    }
}

// ---------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------

fn show(answer: &Result<Answer, String>) -> String {
    match answer {
        Ok(answer) => answer.to_string(),
        Err(message) => format!("ERROR: {message}"),
    }
}

#[test]
fn corpus() {
    let cases = load_corpus();
    assert!(cases.len() >= MIN_CASES, "the corpus has {} cases, expected at least {MIN_CASES}", cases.len());

    let mut failures = Vec::new();
    let mut checked = 0usize;
    for case in &cases {
        let allows = case.expectations.iter().filter(|e| e.decision == "Allow").count();
        let denies = case.expectations.iter().filter(|e| e.decision == "Deny").count();
        assert_eq!(
            allows + denies,
            case.expectations.len(),
            "case `{}`: every decision must be \"Allow\" or \"Deny\"",
            case.name
        );
        assert!(allows > 0 && denies > 0, "case `{}` needs both Allow and Deny requests", case.name);

        let oracle = Oracle::new(case);
        let engine = Engine::new(case);
        for expectation in &case.expectations {
            checked += 1;
            let mut sorted_reasons = expectation.reasons.clone();
            sorted_reasons.sort();
            let mut sorted_errors = expectation.errors.clone();
            sorted_errors.sort();
            assert!(
                sorted_reasons == expectation.reasons && sorted_errors == expectation.errors,
                "case `{}`, request `{}`: reasons and errors must be written sorted",
                case.name,
                expectation.description
            );
            let expected = Answer {
                decision: expectation.decision.clone(),
                reasons: expectation.reasons.clone(),
                errors: expectation.errors.clone(),
                messages: Vec::new(),
            };
            let from_cedar = oracle.answer(&case.entities, &expectation.request);
            let from_engine = match &engine {
                Ok(engine) => engine.answer(&expectation.request),
                Err(message) => Err(message.clone()),
            };
            let corpus_ok = from_cedar.as_ref().is_ok_and(|a| a.same_as(&expected));
            let engine_ok = match (&from_cedar, &from_engine) {
                (Ok(cedar), Ok(engine)) => engine.same_as(cedar),
                _ => false,
            };
            if !corpus_ok || !engine_ok {
                let what = match (corpus_ok, engine_ok) {
                    (false, false) => "corpus expectation AND engine disagree with plain Cedar",
                    (false, true) => "corpus expectation disagrees with plain Cedar",
                    _ => "ENGINE disagrees with plain Cedar",
                };
                failures.push(format!(
                    "[{}] {}\n    {what}\n    expected: {expected}\n    cedar:    {}\n    engine:   {}",
                    case.name,
                    expectation.description,
                    show(&from_cedar),
                    show(&from_engine),
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} corpus requests failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    println!("{checked} requests in {} cases agree", cases.len());
}

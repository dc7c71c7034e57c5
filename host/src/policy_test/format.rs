//! The test file format, parsed strictly.
//!
//! Test files are written by hand, so a typo must never pass silently: every
//! struct refuses unknown fields, and every problem is reported with the
//! file and the path of the offending element (`steps[3].expect.decison`).
//! Serde cannot express "either a consent or a request" and "either a
//! decision or an error" without untagged enums, whose errors name no
//! field, so the raw structs take everything as optional and
//! [`validate`] turns them into the checked [`TestFile`].

use std::collections::BTreeSet;

use consentry_engine::{EvaluationTime, Outcome};
use serde::Deserialize;
use serde_json::Value;

use super::TestError;
use crate::request_body::IsAuthorizedBody;

/// Which syntax a test file is written in, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// `*.yaml` or `*.yml`.
    Yaml,
    /// `*.json`.
    Json,
}

/// A checked test file: its entities and its steps, in order.
#[derive(Debug)]
pub struct TestFile {
    /// What the file tests, shown beside its failures.
    pub name: Option<String>,
    /// Entities in Cedar's entity JSON format, laid over the policy directory's.
    pub entities: Vec<Value>,
    /// The steps, run in order against one consent store.
    pub steps: Vec<Step>,
}

/// One step of a test file.
#[derive(Debug)]
pub enum Step {
    /// Stores the next version of a consent.
    Consent {
        /// Where the step is in the file, e.g. `steps[2]`, for errors.
        at: String,
        /// The consent's FHIR `id`, which its policy ids are built from.
        id: String,
        /// The FHIR Consent resource.
        body: Value,
    },
    /// Decides a request and compares the decision with the expectation.
    Case(Box<Case>),
}

/// A request with its expected decision.
#[derive(Debug)]
pub struct Case {
    /// The case's name, or its position in the file.
    pub name: String,
    /// The request, in the `/v1/is_authorized` body format.
    pub request: IsAuthorizedBody,
    /// The instant the request is evaluated at.
    pub now: EvaluationTime,
    /// What the decision must be.
    pub expect: Expectation,
}

/// What a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// A decision; the fields that are `None` are not checked.
    Decision {
        /// Allow or Deny.
        allow: bool,
        /// The outcome, which tells a forbidden Deny from a not permitted one.
        outcome: Option<Outcome>,
        /// The exact set of determining policy ids.
        reasons: Option<BTreeSet<String>>,
        /// The exact obligations, in any order.
        obligations: Option<Vec<ExpectedObligation>>,
    },
    /// The request is refused, with an error containing this text.
    Error(String),
}

/// An obligation as a test expects it: its id and its values.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedObligation {
    /// The obligation, e.g. `redact`.
    pub id: String,
    /// Its values, e.g. the labels to redact; in any order.
    #[serde(default)]
    pub values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    now: Option<String>,
    #[serde(default)]
    entities: Vec<Value>,
    steps: Vec<RawStep>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<String>,
    consent: Option<Value>,
    request: Option<IsAuthorizedBody>,
    now: Option<String>,
    expect: Option<RawExpect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    decision: Option<Verdict>,
    outcome: Option<RawOutcome>,
    reasons: Option<Vec<String>>,
    obligations: Option<Vec<ExpectedObligation>>,
    error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum Verdict {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOutcome {
    Allow,
    Forbidden,
    NotPermitted,
    FailedClosed,
}

impl From<RawOutcome> for Outcome {
    fn from(outcome: RawOutcome) -> Self {
        match outcome {
            RawOutcome::Allow => Outcome::Allow,
            RawOutcome::Forbidden => Outcome::Forbidden,
            RawOutcome::NotPermitted => Outcome::NotPermitted,
            RawOutcome::FailedClosed => Outcome::FailedClosed,
        }
    }
}

/// Parses and checks a test file; `file` names it in errors.
pub fn parse(file: &str, text: &str, syntax: Syntax) -> Result<TestFile, TestError> {
    let raw: RawFile = match syntax {
        Syntax::Yaml => {
            // serde_norway's messages already start with the path of the problem.
            serde_norway::from_str(text).map_err(|e| TestError::format(file, "", e.to_string()))?
        }
        Syntax::Json => {
            let deserializer = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(deserializer)
                .map_err(|e| TestError::format(file, &e.path().to_string(), e.inner().to_string()))?
        }
    };
    validate(file, raw)
}

fn validate(file: &str, raw: RawFile) -> Result<TestFile, TestError> {
    let default_now = match &raw.now {
        Some(text) => Some(instant(file, "now", text)?),
        None => None,
    };
    let mut steps = Vec::with_capacity(raw.steps.len());
    for (index, step) in raw.steps.into_iter().enumerate() {
        let at = format!("steps[{index}]");
        steps.push(match (step.consent, step.request) {
            (Some(body), None) => consent_step(file, at, step.name, step.now, step.expect.is_some(), body)?,
            (None, Some(request)) => {
                let now = match (&step.now, &default_now) {
                    (Some(text), _) => instant(file, &format!("{at}.now"), text)?,
                    (None, Some(now)) => now.clone(),
                    (None, None) => {
                        return Err(TestError::format(
                            file,
                            &format!("{at}.now"),
                            "no evaluation time: set `now` on the step or at the top of the file",
                        ));
                    }
                };
                let Some(expect) = step.expect else {
                    return Err(TestError::format(file, &format!("{at}.expect"), "a request needs `expect`"));
                };
                let expect = expectation(file, &format!("{at}.expect"), expect)?;
                let name = step.name.unwrap_or_else(|| at.clone());
                Step::Case(Box::new(Case { name, request, now, expect }))
            }
            _ => {
                return Err(TestError::format(
                    file,
                    &at,
                    "a step has either `consent` (to store) or `request` (to decide), not both or neither",
                ));
            }
        });
    }
    if !steps.iter().any(|s| matches!(s, Step::Case(_))) {
        return Err(TestError::format(file, "steps", "the file has no request to check"));
    }
    Ok(TestFile { name: raw.name, entities: raw.entities, steps })
}

fn consent_step(
    file: &str,
    at: String,
    name: Option<String>,
    now: Option<String>,
    has_expect: bool,
    body: Value,
) -> Result<Step, TestError> {
    if now.is_some() || has_expect {
        let field = if now.is_some() { "now" } else { "expect" };
        return Err(TestError::format(
            file,
            &format!("{at}.{field}"),
            format!("`{field}` belongs to request steps, not to a consent step"),
        ));
    }
    let Some(id) = body.get("id").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
        return Err(TestError::format(
            file,
            &format!("{at}.consent.id"),
            "a consent in a test needs its FHIR `id`, so that reasons name it predictably",
        ));
    };
    let id = id.to_owned();
    let at = match name {
        Some(name) => format!("{at} ({name})"),
        None => at,
    };
    Ok(Step::Consent { at, id, body })
}

fn instant(file: &str, at: &str, text: &str) -> Result<EvaluationTime, TestError> {
    EvaluationTime::parse(text)
        .map_err(|message| TestError::format(file, at, format!("`{text}` is not an instant: {message}")))
}

fn expectation(file: &str, at: &str, raw: RawExpect) -> Result<Expectation, TestError> {
    if let Some(error) = raw.error {
        if raw.decision.is_some()
            || raw.outcome.is_some()
            || raw.reasons.is_some()
            || raw.obligations.is_some()
        {
            return Err(TestError::format(
                file,
                at,
                "`error` expects a refused request, which has no decision, outcome, reasons or obligations",
            ));
        }
        return Ok(Expectation::Error(error));
    }
    let Some(decision) = raw.decision else {
        return Err(TestError::format(
            file,
            &format!("{at}.decision"),
            "`decision` (Allow or Deny) is required, unless the step expects an `error`",
        ));
    };
    let allow = decision == Verdict::Allow;
    let outcome = raw.outcome.map(Outcome::from);
    if let Some(outcome) = outcome
        && (outcome == Outcome::Allow) != allow
    {
        return Err(TestError::format(
            file,
            &format!("{at}.outcome"),
            format!("outcome `{}` contradicts decision `{decision:?}`", outcome.name()),
        ));
    }
    let obligations = raw.obligations.map(|mut list| {
        list.iter_mut().for_each(|o| o.values.sort());
        list.sort();
        list
    });
    Ok(Expectation::Decision {
        allow,
        outcome,
        reasons: raw.reasons.map(|r| r.into_iter().collect()),
        obligations,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn error(text: &str, syntax: Syntax) -> String {
        parse("t.yaml", text, syntax).expect_err("refused").to_string()
    }

    const REQUEST: &str =
        r#"{principal: 'Practitioner::"dr-weber"', action: 'Action::"read"', resource: 'Record::"obs-1"'}"#;

    #[test]
    fn a_yaml_typo_names_the_file_and_the_path() {
        let text = format!(
            "now: 2026-06-01T10:00:00Z\nsteps:\n  - request: {REQUEST}\n    expect: {{decison: Allow}}\n"
        );
        let message = error(&text, Syntax::Yaml);
        assert!(message.starts_with("`t.yaml`: "), "{message}");
        assert!(message.contains("steps[0].expect"), "{message}");
        assert!(message.contains("unknown field `decison`"), "{message}");
    }

    #[test]
    fn a_json_typo_names_the_file_and_the_path() {
        let text = r#"{"now": "2026-06-01T10:00:00Z", "steps": [{"request": {"principal": "Patient::\"p\"",
            "action": "Action::\"read\"", "resource": "Record::\"r\"", "contxt": {}}, "expect": {"decision": "Deny"}}]}"#;
        let message = parse("t.json", text, Syntax::Json).expect_err("refused").to_string();
        assert!(message.starts_with("`t.json`: steps[0].request.contxt: "), "{message}");
        assert!(message.contains("unknown field `contxt`"), "{message}");
    }

    #[test]
    fn a_request_without_a_time_or_an_expectation_is_refused() {
        let text = format!("steps:\n  - request: {REQUEST}\n    expect: {{decision: Allow}}\n");
        assert!(error(&text, Syntax::Yaml).contains("steps[0].now: no evaluation time"));
        let text = format!("now: 2026-06-01\nsteps:\n  - request: {REQUEST}\n");
        assert!(error(&text, Syntax::Yaml).contains("steps[0].expect: a request needs `expect`"));
        let text =
            format!("now: 2026-13-01\nsteps:\n  - request: {REQUEST}\n    expect: {{decision: Allow}}\n");
        assert!(error(&text, Syntax::Yaml).contains("now: `2026-13-01` is not an instant"));
    }

    #[test]
    fn expectations_must_be_consistent() {
        let case =
            |expect: &str| format!("now: 2026-06-01\nsteps:\n  - request: {REQUEST}\n    expect: {expect}\n");
        let message = error(&case("{decision: Allow, outcome: forbidden}"), Syntax::Yaml);
        assert!(message.contains("steps[0].expect.outcome: outcome `forbidden` contradicts"), "{message}");
        let message = error(&case("{error: principal, decision: Deny}"), Syntax::Yaml);
        assert!(message.contains("steps[0].expect: `error` expects a refused request"), "{message}");
        let message = error(&case("{outcome: allow}"), Syntax::Yaml);
        assert!(message.contains("steps[0].expect.decision: `decision`"), "{message}");
        let message = error(&case("{decision: allow}"), Syntax::Yaml);
        assert!(message.contains("unknown variant `allow`"), "{message}");
    }

    #[test]
    fn consent_steps_need_an_id_and_take_no_expectation() {
        let consent = "{resourceType: Consent, status: active}";
        let text = format!(
            "now: 2026-06-01\nsteps:\n  - consent: {consent}\n  - request: {REQUEST}\n    expect: {{decision: Deny}}\n"
        );
        assert!(error(&text, Syntax::Yaml).contains("steps[0].consent.id: a consent in a test needs"));
        let text = format!(
            "now: 2026-06-01\nsteps:\n  - consent: {{id: c}}\n    expect: {{decision: Deny}}\n  - request: {REQUEST}\n    expect: {{decision: Deny}}\n"
        );
        assert!(error(&text, Syntax::Yaml).contains("steps[0].expect: `expect` belongs to request steps"));
        let text = format!("now: 2026-06-01\nsteps:\n  - consent: {{id: c}}\n    request: {REQUEST}\n");
        assert!(error(&text, Syntax::Yaml).contains("steps[0]: a step has either"));
        let text = "now: 2026-06-01\nsteps:\n  - consent: {id: c}\n";
        assert!(error(text, Syntax::Yaml).contains("steps: the file has no request to check"));
    }

    #[test]
    fn a_valid_file_parses_into_steps_with_their_times() {
        let text = format!(
            "name: demo\nnow: 2026-06-01T10:00:00Z\nsteps:\n  - consent: {{id: c-1}}\n  - name: first\n    request: {REQUEST}\n    \
             now: 2026-07-01T00:00:00+02:00\n    expect: {{decision: Allow, reasons: [b, a], obligations: [{{id: redact, values: [X, A]}}]}}\n  \
             - request: {REQUEST}\n    expect: {{error: principal}}\n"
        );
        let file = parse("t.yaml", &text, Syntax::Yaml).unwrap();
        assert_eq!(file.name.as_deref(), Some("demo"));
        let [Step::Consent { id, .. }, Step::Case(first), Step::Case(second)] = file.steps.as_slice() else {
            panic!("unexpected steps: {:?}", file.steps);
        };
        assert_eq!(id, "c-1");
        assert_eq!(first.name, "first");
        assert_eq!(first.now.cedar_literal(), "2026-06-30T22:00:00Z");
        let expected = Expectation::Decision {
            allow: true,
            outcome: None,
            reasons: Some(["a".to_owned(), "b".to_owned()].into()),
            obligations: Some(vec![ExpectedObligation {
                id: "redact".into(),
                values: vec!["A".into(), "X".into()],
            }]),
        };
        assert_eq!(first.expect, expected);
        assert_eq!(second.name, "steps[2]");
        assert_eq!(second.now.cedar_literal(), "2026-06-01T10:00:00Z");
        assert_eq!(second.expect, Expectation::Error("principal".into()));
    }
}

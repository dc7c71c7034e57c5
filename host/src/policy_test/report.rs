//! Comparing decisions with expectations, and telling a person what differed.
//!
//! A failing policy test is read by a privacy officer as often as by a
//! developer, so a failure shows only the fields that differ, each as an
//! `expected:` / `actual:` pair, followed by the decision's own one-sentence
//! summary. Decisions name policies, consents and codes, never clinical
//! content, so the report carries no health data beyond identifiers.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use consentry_engine::{Decision, Obligation, RequestError};

use super::format::{Expectation, ExpectedObligation};
use super::run::CaseResult;

/// One field whose actual value differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiff {
    /// The field of the expectation, e.g. `reasons`.
    pub field: &'static str,
    /// What the test expected, rendered.
    pub expected: String,
    /// What the decision had, rendered.
    pub actual: String,
}

impl FieldDiff {
    fn new(field: &'static str, expected: impl Into<String>, actual: impl Into<String>) -> Self {
        Self { field, expected: expected.into(), actual: actual.into() }
    }
}

/// The fields in which `actual` differs from `expect`; empty when it matches.
pub fn compare(expect: &Expectation, actual: &Result<Decision, RequestError>) -> Vec<FieldDiff> {
    match (expect, actual) {
        (Expectation::Error(wanted), Err(error)) => {
            let text = error.to_string();
            if text.contains(wanted.as_str()) {
                Vec::new()
            } else {
                vec![FieldDiff::new("error", format!("an error containing `{wanted}`"), text)]
            }
        }
        (Expectation::Error(wanted), Ok(decision)) => vec![FieldDiff::new(
            "error",
            format!("an error containing `{wanted}`"),
            format!("no error: {} ({})", verdict(decision.is_allowed()), decision.outcome.name()),
        )],
        (Expectation::Decision { .. }, Err(error)) => {
            vec![FieldDiff::new("error", "no error", error.to_string())]
        }
        (Expectation::Decision { allow, outcome, reasons, obligations }, Ok(decision)) => {
            let mut diffs = Vec::new();
            if *allow != decision.is_allowed() {
                diffs.push(FieldDiff::new("decision", verdict(*allow), verdict(decision.is_allowed())));
            }
            if let Some(outcome) = outcome
                && *outcome != decision.outcome
            {
                diffs.push(FieldDiff::new("outcome", outcome.name(), decision.outcome.name()));
            }
            if let Some(reasons) = reasons {
                let actual: BTreeSet<String> = decision.reasons.iter().map(|r| r.policy.clone()).collect();
                if *reasons != actual {
                    diffs.push(FieldDiff::new("reasons", list(reasons), list(&actual)));
                }
            }
            if let Some(obligations) = obligations {
                let actual = normalized(&decision.obligations);
                if *obligations != actual {
                    diffs.push(FieldDiff::new("obligations", render(obligations), render(&actual)));
                }
            }
            diffs
        }
    }
}

/// A decision's obligations as an expectation is written: values and list sorted.
fn normalized(obligations: &[Obligation]) -> Vec<ExpectedObligation> {
    let mut list: Vec<ExpectedObligation> = obligations
        .iter()
        .map(|o| {
            let mut values = o.values.clone();
            values.sort();
            ExpectedObligation { id: o.id.clone(), values }
        })
        .collect();
    list.sort();
    list
}

fn verdict(allow: bool) -> &'static str {
    if allow { "Allow" } else { "Deny" }
}

fn list<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    format!("[{}]", items.into_iter().map(String::as_str).collect::<Vec<_>>().join(", "))
}

fn render(obligations: &[ExpectedObligation]) -> String {
    let items: Vec<String> = obligations
        .iter()
        .map(
            |o| if o.values.is_empty() { o.id.clone() } else { format!("{}({})", o.id, o.values.join(", ")) },
        )
        .collect();
    format!("[{}]", items.join(", "))
}

/// The one line a case gets in the run: `PASS file › case` or `FAIL file › case`.
pub fn status_line(file: &str, case: &CaseResult) -> String {
    let status = if case.passed() { "PASS" } else { "FAIL" };
    format!("{status} {file} › {}", case.name)
}

/// The explanation of a failed case: each differing field, then the
/// decision's summary, evaluation errors and what the plugins did, or the
/// request's refusal.
pub fn failure(file: &str, suite: Option<&str>, case: &CaseResult) -> String {
    let mut out = format!("{}\n", status_line(file, case));
    if let Some(suite) = suite {
        let _ = writeln!(out, "  in: {suite}");
    }
    for diff in &case.diffs {
        let _ = writeln!(
            out,
            "  {}:\n    expected: {}\n    actual:   {}",
            diff.field, diff.expected, diff.actual
        );
    }
    if let Ok(decision) = &case.actual {
        let _ = writeln!(out, "  summary: {}", decision.summary());
        if !decision.errors.is_empty() {
            let _ = writeln!(out, "  errors:");
            for error in &decision.errors {
                match &error.policy {
                    Some(policy) => {
                        let _ = writeln!(out, "    - in `{policy}`: {}", error.message);
                    }
                    None => {
                        let _ = writeln!(out, "    - {}", error.message);
                    }
                }
            }
        }
        if !case.plugins.is_empty() {
            let _ = writeln!(out, "  plugins: {}", case.plugins.join("; "));
        }
    }
    out
}

/// The closing line: `N passed, M failed`.
pub fn summary_line(passed: usize, failed: usize) -> String {
    format!("{passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use consentry_engine::{DecisionError, ObligationKind, Outcome, Reason};

    use super::*;

    fn decision(outcome: Outcome, reasons: &[&str], obligations: &[(&str, &[&str])]) -> Decision {
        Decision {
            outcome,
            reasons: reasons.iter().map(|p| Reason { policy: (*p).to_owned(), reason: None }).collect(),
            errors: Vec::new(),
            obligations: obligations
                .iter()
                .map(|(id, values)| Obligation {
                    id: (*id).to_owned(),
                    kind: ObligationKind::Obligation,
                    policy: "p".to_owned(),
                    values: values.iter().map(|v| (*v).to_owned()).collect(),
                    filter: None,
                })
                .collect(),
            unloaded: Vec::new(),
        }
    }

    fn expect_allow(reasons: Option<&[&str]>, obligations: Option<&[(&str, &[&str])]>) -> Expectation {
        Expectation::Decision {
            allow: true,
            outcome: Some(Outcome::Allow),
            reasons: reasons.map(|r| r.iter().map(|p| (*p).to_owned()).collect()),
            obligations: obligations.map(|list| {
                let mut list: Vec<ExpectedObligation> = list
                    .iter()
                    .map(|(id, values)| {
                        let mut values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
                        values.sort();
                        ExpectedObligation { id: (*id).to_owned(), values }
                    })
                    .collect();
                list.sort();
                list
            }),
        }
    }

    #[test]
    fn a_matching_decision_has_no_diff_whatever_the_order() {
        let actual = decision(Outcome::Allow, &["b", "a"], &[("notify", &[]), ("redact", &["PSY", "HIV"])]);
        let expect = expect_allow(Some(&["a", "b"]), Some(&[("redact", &["HIV", "PSY"]), ("notify", &[])]));
        assert_eq!(compare(&expect, &Ok(actual)), Vec::new());
    }

    #[test]
    fn every_differing_field_is_reported() {
        let actual = decision(Outcome::NotPermitted, &[], &[]);
        let expect = expect_allow(Some(&["consent/c/v1/root"]), Some(&[("redact", &["PSY"])]));
        let diffs = compare(&expect, &Ok(actual));
        assert_eq!(
            diffs,
            vec![
                FieldDiff::new("decision", "Allow", "Deny"),
                FieldDiff::new("outcome", "allow", "not_permitted"),
                FieldDiff::new("reasons", "[consent/c/v1/root]", "[]"),
                FieldDiff::new("obligations", "[redact(PSY)]", "[]"),
            ]
        );
    }

    #[test]
    fn unchecked_fields_are_not_compared() {
        let actual = decision(Outcome::Allow, &["x"], &[("notify", &[])]);
        assert_eq!(compare(&expect_allow(None, None), &Ok(actual)), Vec::new());
    }

    #[test]
    fn refusals_match_only_an_expected_error() {
        let refused: Result<Decision, RequestError> =
            Err(RequestError::malformed("context.now", "may not be sent"));
        let wanted = Expectation::Error("context.now".into());
        assert_eq!(compare(&wanted, &refused), Vec::new());
        let other = Expectation::Error("principal".into());
        assert_eq!(compare(&other, &refused)[0].actual, "context.now: may not be sent");
        let diffs = compare(&expect_allow(None, None), &refused);
        assert_eq!(diffs, vec![FieldDiff::new("error", "no error", "context.now: may not be sent")]);
        let diffs = compare(&wanted, &Ok(decision(Outcome::Forbidden, &["f"], &[])));
        assert_eq!(diffs[0].actual, "no error: Deny (forbidden)");
    }

    #[test]
    fn a_failure_shows_expected_and_actual_then_the_summary_and_errors() {
        let mut actual = decision(Outcome::Forbidden, &["restriction"], &[]);
        actual.errors.push(DecisionError { policy: Some("pol".into()), message: "boom".into() });
        let expect = expect_allow(None, None);
        let case = CaseResult {
            name: "reads".into(),
            diffs: compare(&expect, &Ok(actual.clone())),
            actual: Ok(actual),
            plugins: vec!["labeler/enrich: ok".into(), "guardian/enrich: trap, skipped".into()],
        };
        let text = failure("a.yaml", Some("suite"), &case);
        assert_eq!(
            text,
            "FAIL a.yaml › reads\n  in: suite\n  decision:\n    expected: Allow\n    actual:   Deny\n  outcome:\n    \
             expected: allow\n    actual:   forbidden\n  summary: denied: forbidden by `restriction`\n  errors:\n    \
             - in `pol`: boom\n  plugins: labeler/enrich: ok; guardian/enrich: trap, skipped\n"
        );
        assert_eq!(summary_line(3, 1), "3 passed, 1 failed");
    }
}

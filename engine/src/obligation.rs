//! Obligations, advice and reasons carried by policy annotations.
//!
//! Privacy teams write them next to the rule they belong to
//! (`@obligation("notify-patient, audit-priority")`), so the explanation of a
//! decision never drifts away from the rule that produced it. They are read
//! once at load time, not per decision.
//!
//! An obligation may carry values in an annotation named after it:
//! `@obligation("redact") @redact("PSY, HIV")` tells the caller which
//! sensitivity labels to redact, as HL7 LEAP's consent service does.

use cedar_policy::Policy;
use serde::Serialize;

use crate::clock::EvaluationTime;
use crate::error::{LoadError, Problem};
use crate::plan::RecordFilter;
use crate::special::Opens;

/// Whether the caller must honour an instruction or may ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObligationKind {
    /// From `@obligation`: the caller must carry it out, or not act on the decision.
    Obligation,
    /// From `@advice`: the caller should carry it out.
    Advice,
}

/// An instruction attached to a decision by one of its determining policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Obligation {
    /// The instruction, for example `notify-patient`.
    pub id: String,
    /// Obligation or advice.
    pub kind: ObligationKind,
    /// The determining policy that attached it.
    pub policy: String,
    /// Its parameters, from the policy's annotation named after the obligation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// For the `filter` obligation of a patient-level search: the records
    /// the search may return (see [`crate::plan`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<RecordFilter>,
}

/// The annotations of one policy that explain or condition a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PolicyNotes {
    /// When the policy is in force, from `@active_from`/`@active_until`.
    pub(crate) window: Option<ActiveWindow>,
    /// The policy id, rendered once so that decisions need not format it.
    pub(crate) id: String,
    pub(crate) reason: Option<String>,
    pub(crate) obligations: Vec<Instruction>,
    pub(crate) advice: Vec<Instruction>,
    /// For a permit, the special categories it opens (`@opens_labels`).
    pub(crate) opens: Opens,
}

/// An obligation or advice as annotated: its id and its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Instruction {
    id: String,
    values: Vec<String>,
}

/// The evaluation times in which a policy is in force: from `from`
/// (inclusive) until `until` (exclusive), in Unix milliseconds. Consents
/// carry their periods this way; a privacy team may time-box a rule too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ActiveWindow {
    from: Option<i64>,
    until: Option<i64>,
}

impl ActiveWindow {
    /// Whether the policy is in force at `now`. Without an evaluation time a
    /// windowed forbid stays in force and a windowed permit does not, so the
    /// missing clock can only make a decision stricter.
    pub(crate) fn holds(&self, now: Option<i64>, effect: cedar_policy::Effect) -> bool {
        match now {
            Some(now) => self.from.is_none_or(|f| now >= f) && self.until.is_none_or(|u| now < u),
            None => effect == cedar_policy::Effect::Forbid,
        }
    }
}

impl PolicyNotes {
    pub(crate) fn of(policy: &Policy) -> Result<Self, LoadError> {
        let bound = |name: &str| {
            policy
                .annotation(name)
                .map(|text| {
                    EvaluationTime::parse(text).map(|t| t.unix_millis()).map_err(|e| {
                        LoadError::Policies(vec![Problem {
                            policy_id: Some(policy.id().to_string()),
                            message: format!("@{name}: {e}"),
                            help: None,
                            offset: None,
                        }])
                    })
                })
                .transpose()
        };
        let (from, until) = (bound("active_from")?, bound("active_until")?);
        let window = (from.is_some() || until.is_some()).then_some(ActiveWindow { from, until });
        Ok(Self {
            window,
            id: policy.id().to_string(),
            reason: policy.annotation("reason").map(str::to_owned),
            obligations: instructions(policy, "obligation"),
            advice: instructions(policy, "advice"),
            opens: Opens::of(policy),
        })
    }

    pub(crate) fn attach(&self, out: &mut Vec<Obligation>) {
        let policy = &self.id;
        let tagged = |kind| {
            move |i: &Instruction| Obligation {
                id: i.id.clone(),
                kind,
                policy: policy.clone(),
                values: i.values.clone(),
                filter: None,
            }
        };
        out.extend(self.obligations.iter().map(tagged(ObligationKind::Obligation)));
        out.extend(self.advice.iter().map(tagged(ObligationKind::Advice)));
    }
}

fn instructions(policy: &Policy, annotation: &str) -> Vec<Instruction> {
    split_list(policy.annotation(annotation))
        .into_iter()
        .map(|id| Instruction { values: split_list(policy.annotation(&id)), id })
        .collect()
}

/// Annotation values hold one item or a comma-separated list of them.
fn split_list(value: Option<&str>) -> Vec<String> {
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn instruction(id: &str, values: &[&str]) -> Instruction {
        Instruction { id: id.into(), values: values.iter().map(|v| (*v).to_owned()).collect() }
    }

    #[test]
    fn an_annotation_named_after_an_obligation_gives_its_values() {
        let policy = Policy::from_str(
            r#"@obligation("redact, log") @redact("PSY, HIV") permit(principal, action, resource);"#,
        );
        let notes = policy.ok().and_then(|p| PolicyNotes::of(&p).ok()).map(|n| n.obligations);
        assert_eq!(notes, Some(vec![instruction("redact", &["PSY", "HIV"]), instruction("log", &[])]));
    }

    #[test]
    fn an_activity_window_holds_from_its_start_until_before_its_end() {
        let policy = Policy::from_str(
            r#"@active_from("2026-01-01") @active_until("2027-01-01T00:00:00Z") forbid(principal, action, resource);"#,
        );
        let window =
            policy.ok().and_then(|p| PolicyNotes::of(&p).ok()).and_then(|n| n.window).unwrap_or_default();
        let at = |text: &str| EvaluationTime::parse(text).ok().map(|t| t.unix_millis());
        let forbid = cedar_policy::Effect::Forbid;
        assert!(window.holds(at("2026-01-01"), forbid));
        assert!(window.holds(at("2026-12-31T23:59:59.999Z"), forbid));
        assert!(!window.holds(at("2027-01-01"), forbid));
        assert!(!window.holds(at("2025-12-31T23:59:59Z"), forbid));
        assert!(window.holds(None, forbid), "without a clock a forbid stays in force");
        assert!(!window.holds(None, cedar_policy::Effect::Permit), "without a clock a permit does not");
    }

    #[test]
    fn an_unreadable_activity_window_is_refused_at_load() {
        let policy =
            Policy::from_str(r#"@active_until("next tuesday") permit(principal, action, resource);"#);
        assert!(policy.ok().is_some_and(|p| PolicyNotes::of(&p).is_err()));
    }

    #[test]
    fn splits_comma_separated_obligations_and_keeps_advice_apart() {
        let policy = Policy::from_str(
            r#"@reason("emergency") @obligation("notify-patient, audit-priority") @advice("call-dpo")
               permit(principal, action, resource);"#,
        );
        let notes = policy.ok().and_then(|p| PolicyNotes::of(&p).ok());
        assert_eq!(
            notes,
            Some(PolicyNotes {
                window: None,
                id: "policy0".into(),
                reason: Some("emergency".into()),
                obligations: vec![instruction("notify-patient", &[]), instruction("audit-priority", &[])],
                advice: vec![instruction("call-dpo", &[])],
                opens: Opens::default(),
            })
        );
    }
}

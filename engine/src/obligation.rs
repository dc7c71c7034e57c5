//! Obligations, advice and reasons carried by policy annotations.
//!
//! Privacy teams write them next to the rule they belong to
//! (`@obligation("notify-patient, audit-priority")`), so the explanation of a
//! decision never drifts away from the rule that produced it. They are read
//! once at load time, not per decision.

use cedar_policy::Policy;
use serde::Serialize;

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
}

/// The annotations of one policy that explain or condition a decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PolicyNotes {
    pub(crate) reason: Option<String>,
    pub(crate) obligations: Vec<String>,
    pub(crate) advice: Vec<String>,
}

impl PolicyNotes {
    pub(crate) fn of(policy: &Policy) -> Self {
        Self {
            reason: policy.annotation("reason").map(str::to_owned),
            obligations: split_list(policy.annotation("obligation")),
            advice: split_list(policy.annotation("advice")),
        }
    }

    pub(crate) fn attach(&self, policy: &str, out: &mut Vec<Obligation>) {
        let tagged = |kind| move |id: &String| Obligation { id: id.clone(), kind, policy: policy.to_owned() };
        out.extend(self.obligations.iter().map(tagged(ObligationKind::Obligation)));
        out.extend(self.advice.iter().map(tagged(ObligationKind::Advice)));
    }
}

/// Annotation values hold one instruction or a comma-separated list of them.
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

    #[test]
    fn splits_comma_separated_obligations_and_keeps_advice_apart() {
        let policy = Policy::from_str(
            r#"@reason("emergency") @obligation("notify-patient, audit-priority") @advice("call-dpo")
               permit(principal, action, resource);"#,
        );
        let notes = policy.map(|p| PolicyNotes::of(&p)).ok();
        assert_eq!(
            notes,
            Some(PolicyNotes {
                reason: Some("emergency".into()),
                obligations: vec!["notify-patient".into(), "audit-priority".into()],
                advice: vec!["call-dpo".into()],
            })
        );
    }
}

//! Decisions about a patient one of whose stored consents cannot be evaluated.
//!
//! Rules tighten: a consent accepted before a change may be refused by
//! today's parser (a period outside years 0001 to 9999 in UTC, an absolute
//! reference to another server) or no longer fit a new schema. Failing every
//! decision about the patient would lock them out of care, emergency access
//! included; ignoring the consent would drop the denies the patient stated.
//! So the patient's other consents still apply, and the decision made
//! without the unreadable ones is settled by one rule:
//!
//! - a Deny by a satisfied forbid stands, since no consent can lift a forbid;
//! - an Allow stands only on pack permits annotated
//!   `@independent_of_consents` (the bundled pack marks break-glass and the
//!   patient's own access): such a permit gives access whatever the consent
//!   would have said, which is what the annotation declares;
//! - any other decision needs the consent that cannot be evaluated (it might
//!   have denied what another consent allows, or allowed what nothing else
//!   does), so it fails closed, naming the consent.
//!
//! Each unreadable consent is also listed among the decision's errors, so
//! its answer and the decision log show that it was not applied.

use cedar_policy::PolicyId;

use crate::bundle::PolicyBundle;
use crate::decision::{Decision, DecisionError, Outcome};
use crate::partition::ConsentPartition;

/// The annotation that lets a pack permit grant while one of the patient's
/// consents cannot be evaluated.
pub const INDEPENDENT_OF_CONSENTS: &str = "independent_of_consents";

/// A stored consent version that can no longer be parsed, compiled or
/// loaded, and so is left out of its patient's partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableConsent {
    /// The store's id for the consent.
    pub id: String,
    /// The version, counting from 1.
    pub version: u64,
    /// Why it cannot be evaluated.
    pub reason: String,
}

/// Settles a decision made without the consents the partitions set aside,
/// by the rule above; a decision about patients with none is returned as is.
pub(crate) fn settle(
    bundle: &PolicyBundle,
    mut decision: Decision,
    partitions: &[&ConsentPartition],
) -> Decision {
    let unreadable: Vec<(&str, &UnreadableConsent)> =
        partitions.iter().flat_map(|p| p.unreadable().iter().map(|u| (p.patient(), u))).collect();
    if unreadable.is_empty() {
        return decision;
    }
    let named = |(patient, consent): &(&str, &UnreadableConsent)| {
        format!("consent `{}` version {} of patient `{patient}`", consent.id, consent.version)
    };
    let notes: Vec<DecisionError> = unreadable
        .iter()
        .map(|entry| DecisionError {
            policy: None,
            message: format!("{} cannot be evaluated and was not applied: {}", named(entry), entry.1.reason),
        })
        .collect();
    match decision.outcome {
        Outcome::Forbidden | Outcome::FailedClosed => {}
        Outcome::Allow if decision.reasons.iter().any(|r| is_independent_of_consents(bundle, &r.policy)) => {
            // The Allow rests on these permits alone. Obligations of the
            // other satisfied permits are kept: an obligation only restricts.
            decision.reasons.retain(|r| is_independent_of_consents(bundle, &r.policy));
        }
        Outcome::Allow | Outcome::NotPermitted => {
            let names: Vec<String> = unreadable.iter().map(named).collect();
            let mut failed = Decision::fail_closed(format!(
                "this decision depends on the patient's consents, and {} cannot be evaluated",
                names.join(", ")
            ));
            failed.errors.extend(notes);
            return failed;
        }
    }
    decision.errors.extend(notes);
    decision
}

/// Whether `policy` is a pack permit annotated `@independent_of_consents`.
fn is_independent_of_consents(bundle: &PolicyBundle, policy: &str) -> bool {
    bundle.policies.policy(&PolicyId::new(policy)).is_some_and(|p| {
        p.effect() == cedar_policy::Effect::Permit && p.annotation(INDEPENDENT_OF_CONSENTS).is_some()
    })
}

//! The authorization rule over the policies whose scope holds, with the two
//! places where a health PDP must be stricter than plain Cedar.
//!
//! Cedar skips a policy whose evaluation errors. For a permit that is safe;
//! for a forbid it is fail-open: a restriction that cannot be evaluated lets
//! another rule allow. Under [`ForbidErrors::Deny`] (the default) an erroring
//! forbid therefore denies (`failed_closed`, naming it), unless a satisfied
//! forbid already explains the Deny. Under [`ForbidErrors::Skip`] the rule
//! is Cedar's, exactly.
//!
//! Special categories ([`crate::special`]): a satisfied permit counts for a
//! record carrying special labels only if it opens each of them, and an
//! allowed search of a patient carries a `redact` obligation for the special
//! labels no determining permit opens.

use std::cell::OnceCell;

use cedar_policy::EntityUid;
use cedar_policy_core::ast::{Expr, Literal, ValueKind};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use crate::condition::Scope;
use crate::decision::{Decision, DecisionError, ForbidErrors, Outcome, Reason};
use crate::obligation::PolicyNotes;
use crate::rules::Candidate;
use crate::special::{self, SPECIAL_CATEGORIES, SpecialCategories};

/// What the rule needs beyond the candidates: the options, the pack's
/// special categories, and what the request is about.
pub(crate) struct Rule<'a> {
    pub(crate) forbid_errors: ForbidErrors,
    pub(crate) special: &'a SpecialCategories,
    pub(crate) action: &'a EntityUid,
    pub(crate) resource: &'a EntityUid,
}

/// Cedar's authorization rule over the policies whose scope holds: a
/// satisfied forbid denies; otherwise a satisfied permit allows; otherwise
/// deny. A policy whose evaluation errors is reported; an erroring forbid
/// denies unless the rule says to skip it.
///
/// Cedar's own `Authorizer` needs a `PolicySet` holding exactly the
/// candidates, rebuilds each policy's condition and runs it through the
/// partial evaluator. The index has already checked each scope exactly, so
/// only the body (`when`/`unless`; no body means true) is evaluated: by its
/// compiled form ([`crate::condition`]) where that answers, else by the
/// concrete evaluator; with no unknowns in the request either gives the
/// same value or the same error (checked against `Authorizer` by
/// `tests/equivalence/`).
pub(crate) fn authorize<'p>(
    request: &cedar_policy::Request,
    entities: &cedar_policy::Entities,
    candidates: impl Iterator<Item = Candidate<'p>>,
    rule: &Rule<'_>,
) -> Decision {
    let core_request: &cedar_policy_core::ast::Request = request.as_ref();
    let scope = Scope::new(core_request, entities.as_ref());
    // Cedar's evaluator is made only for a condition the compiled form
    // cannot settle; most decisions never need it.
    let evaluator = OnceCell::new();
    let evaluator = || {
        evaluator.get_or_init(|| {
            Evaluator::new(core_request.clone(), entities.as_ref(), Extensions::all_available())
        })
    };
    let mut permits = Vec::new();
    let mut forbids = Vec::new();
    let mut failed_forbids = Vec::new();
    let mut errors = Vec::new();
    for Candidate { policy, notes, condition } in candidates {
        let core: &cedar_policy_core::ast::Policy = policy.as_ref();
        let satisfied = match (condition, core.non_scope_constraints()) {
            (None, _) | (_, None) => Ok(true),
            (Some(condition), Some(body)) => {
                let cedar = |expr: &Expr| evaluator().interpret(expr, core.env()).ok();
                match condition.evaluate(&scope, &cedar) {
                    Some(holds) => Ok(holds),
                    None => match evaluator().interpret(body, core.env()) {
                        Ok(value) => match value.value_kind() {
                            ValueKind::Lit(Literal::Bool(b)) => Ok(*b),
                            // A body that is not a boolean is a type error; let Cedar
                            // evaluate the whole policy so the error is worded as its own.
                            _ => evaluator().evaluate(core),
                        },
                        Err(e) => Err(e),
                    },
                }
            }
        };
        match (satisfied, policy.effect()) {
            (Ok(true), cedar_policy::Effect::Permit) => permits.push(notes),
            (Ok(true), cedar_policy::Effect::Forbid) => forbids.push(notes),
            (Ok(false), _) => {}
            (Err(e), effect) => {
                errors.push(DecisionError { policy: Some(notes.id.clone()), message: e.to_string() });
                if effect == cedar_policy::Effect::Forbid {
                    failed_forbids.push(notes);
                }
            }
        }
    }
    if !forbids.is_empty() {
        return decided(Outcome::Forbidden, forbids, errors);
    }
    if !failed_forbids.is_empty() && rule.forbid_errors == ForbidErrors::Deny {
        // No obligations: nothing was granted, and the forbid's own
        // obligations belong to a decision it actually made.
        let mut decision = decided(Outcome::FailedClosed, failed_forbids, errors);
        decision.obligations.clear();
        return decision;
    }
    if permits.is_empty() {
        return decided(Outcome::NotPermitted, Vec::new(), errors);
    }
    let carried = rule.special.carried_by(rule.resource, entities);
    let (counting, withheld): (Vec<_>, Vec<_>) =
        permits.into_iter().partition(|notes| notes.opens.opens_all(&carried));
    if counting.is_empty() {
        let mut ids: Vec<&str> = withheld.iter().map(|notes| notes.id.as_str()).collect();
        ids.sort_unstable();
        let reason = Reason {
            policy: SPECIAL_CATEGORIES.to_owned(),
            reason: Some(special::withheld_reason(&carried, &ids)),
        };
        return Decision {
            outcome: Outcome::NotPermitted,
            reasons: vec![reason],
            errors,
            obligations: Vec::new(),
            unloaded: Vec::new(),
        };
    }
    let redaction = special::is_patient_search(rule.action, rule.resource)
        .then(|| special::search_redaction(rule.special, counting.iter().map(|notes| &notes.opens)))
        .flatten();
    let mut decision = decided(Outcome::Allow, counting, errors);
    decision.obligations.extend(redaction);
    decision
}

/// A decision determined by `determining`, with their reasons and obligations in id order.
fn decided(outcome: Outcome, mut determining: Vec<&PolicyNotes>, errors: Vec<DecisionError>) -> Decision {
    determining.sort_by(|a, b| a.id.cmp(&b.id));
    let mut reasons = Vec::with_capacity(determining.len());
    let mut obligations = Vec::new();
    for notes in determining {
        notes.attach(&mut obligations);
        reasons.push(Reason { policy: notes.id.clone(), reason: notes.reason.clone() });
    }
    Decision { outcome, reasons, errors, obligations, unloaded: Vec::new() }
}

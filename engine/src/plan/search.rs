//! A search of a whole patient carries the records it may return, as a
//! `filter` obligation.
//!
//! A search of a patient finds records of any kind, so an Allow alone would
//! hand over every record the patient's consents exclude (issue 13, finding
//! 5). A `redact` obligation can only name labels, so a consent excluding a
//! resource type, a code or a period used to deny the whole search. The
//! filter says all of it: the records a search may return are those the
//! searcher may read, for the same purpose, now; that is the plan of `read`
//! over the patient's records. It is attached when it is exact and says
//! more than the `redact` obligations already do, which stay for callers
//! that only know them: a search whose only exclusions are labels keeps the
//! answer it always had, and a `filter`, when there is one, is complete on
//! its own. When the plan cannot be written exactly, the search is denied:
//! fail closed, as everywhere else.

use std::collections::BTreeSet;

use cedar_policy::{EntityId, EntityUid};

use super::build::{self, Use};
use super::{Attribute, Condition, Op, PlanKind, RecordFilter};
use crate::bundle::PolicyBundle;
use crate::decision::{Decision, DecisionOptions, DecisionRequest};
use crate::obligation::{Obligation, ObligationKind};
use crate::partition::ConsentPartition;
use crate::special::is_patient_search;
use crate::store::EntityStore;

/// The obligation that carries a patient-level search's filter.
pub const FILTER_OBLIGATION: &str = "filter";

/// The name under which decisions report the search filter.
pub const SEARCH_FILTER: &str = "search-filter";

/// The action whose plan bounds what a search may return.
const READ: &str = "read";

/// The obligation that names labels whose records a search leaves out.
const REDACT: &str = "redact";

/// For an allowed search of a whole patient: the same decision with the
/// `filter` obligation, or a Deny when the filter cannot be written
/// exactly. Any other decision is returned as it is.
pub(crate) fn carry_filter(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    request: &DecisionRequest,
    options: &DecisionOptions,
    mut decision: Decision,
) -> Decision {
    if !decision.is_allowed() || !is_patient_search(&request.action, &request.resource) {
        return decision;
    }
    let patient = request.resource.id().unescaped();
    let partition = partitions.iter().copied().find(|p| p.patient() == patient);
    let read = EntityUid::from_type_name_and_id(request.action.type_name().clone(), EntityId::new(READ));
    let base = DecisionRequest { action: read, ..request.clone() };
    let cannot = |why: String| {
        Decision::fail_closed(format!(
            "the records this search of `{}` may return cannot be written as a filter: {why}",
            request.resource
        ))
    };
    let plan =
        match build::plan_for(bundle, partition, store, &base, Some(&request.resource), options, Use::Filter)
        {
            Ok(plan) => plan,
            Err(error) => return cannot(error.to_string()),
        };
    if !plan.unloaded.is_empty() {
        return Decision::not_loaded(plan.unloaded);
    }
    match plan.kind {
        PlanKind::Always => decision,
        _ if plan.filter.exact && said_by_redact(&decision.obligations, &plan.filter) => decision,
        _ if plan.filter.exact => {
            decision.obligations.push(Obligation {
                id: FILTER_OBLIGATION.to_owned(),
                kind: ObligationKind::Obligation,
                policy: SEARCH_FILTER.to_owned(),
                values: Vec::new(),
                filter: Some(plan.filter),
            });
            decision
        }
        _ => {
            let mut why: Vec<String> = plan.untranslated;
            why.extend(plan.errors);
            cannot(why.join("; "))
        }
    }
}

/// Whether the filter only leaves out records carrying the labels the
/// decision's `redact` obligations name, all of them.
fn said_by_redact(obligations: &[Obligation], filter: &RecordFilter) -> bool {
    let redacted: BTreeSet<&str> = obligations
        .iter()
        .filter(|o| o.id == REDACT)
        .flat_map(|o| o.values.iter().map(String::as_str))
        .collect();
    match filter.any_of.as_slice() {
        [only] => match only.all_of.as_slice() {
            [Condition { attribute: Attribute::Labels, op: Op::ContainsNone, values }] => {
                values.iter().map(String::as_str).collect::<BTreeSet<_>>() == redacted
            }
            _ => false,
        },
        _ => false,
    }
}

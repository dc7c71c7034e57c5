//! Plans: which of a patient's records an actor may act on, answered once,
//! as a filter, instead of one decision per record.
//!
//! A FHIR server that lists a patient's records for a practitioner would
//! otherwise ask for a decision per row. A plan answers the question for
//! all of them: `always`, `never`, or `conditional` with a
//! [`RecordFilter`] over the record attributes of the vocabulary, the FHIR
//! search parameters that run it, and the residual Cedar policies it came
//! from.
//!
//! Cedar's typed partial evaluation (`tpe`) evaluates the pack and the
//! patient's consents with the resource unknown and leaves residuals over
//! it. Cedar's rule is not Consentry's, so the residuals are combined here
//! by Consentry's, exactly as [`crate::decide_with`] would decide each record:
//! a forbid that errors denies ([`crate::ForbidErrors`]); a permit counts for
//! a record with special labels only if it opens them ([`crate::special`]);
//! policies outside their activity window do not apply; and when the
//! patient has consents that cannot be evaluated, only permits that are
//! independent of consents may allow ([`crate::unreadable`]).
//!
//! The filter is never wider than the decisions: what cannot be written as
//! a condition is taken to deny (a forbid) or not to grant (a permit), the
//! filter says it is not `exact`, and `untranslated` names the parts. A
//! property test (`engine/tests/plan_soundness.rs`) checks this against
//! decisions over random records and consents.

mod build;
mod fhir;
mod filter;
mod formula;
mod residual;
pub(crate) mod search;

use cedar_policy::{EntityTypeName, EntityUid};
use serde::Serialize;
use serde_json::Value;

use crate::bundle::PolicyBundle;
use crate::clock::EvaluationTime;
use crate::decision::{DecisionOptions, DecisionRequest};
use crate::error::RequestError;
use crate::partition::{ConsentPartition, PATIENT_TYPE};
use crate::store::EntityStore;

pub use fhir::{FhirQuery, FhirSearch};
pub use filter::{Alternative, Attribute, Condition, Op, RecordFacts, RecordFilter};
pub use search::{FILTER_OBLIGATION, SEARCH_FILTER};

/// The entity type a plan is about: the vocabulary's health record.
pub const RECORD_TYPE: &str = "Record";

/// The most alternatives a filter may have; a larger one is not written.
const MAX_ALTERNATIVES: usize = 256;

/// What to plan: may `principal` do `action` to records of `patient`?
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Who is acting.
    pub principal: EntityUid,
    /// What they want to do to each record.
    pub action: EntityUid,
    /// The type of the resources; only [`RECORD_TYPE`] can be planned.
    pub resource_type: EntityTypeName,
    /// The patient whose records are planned; without one, the consents
    /// that govern the records are unknown and the plan cannot admit any.
    pub patient: Option<EntityUid>,
    /// The Cedar context as a JSON object; `None` means empty.
    pub context: Option<Value>,
    /// The evaluation time, from the host's clock, as for decisions.
    pub now: Option<EvaluationTime>,
}

/// The shape of a plan's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Every record of the patient is allowed.
    Always,
    /// No record of the patient is allowed.
    Never,
    /// Some are: those the filter admits (all of them, when it is exact).
    Conditional,
}

/// A policy as typed partial evaluation left it: its condition over the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResidualPolicy {
    /// The policy id.
    pub policy: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// The residual condition, as Cedar text.
    pub condition: String,
}

/// The answer to a [`PlanRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Always, never, or conditional.
    pub kind: PlanKind,
    /// The records allowed.
    pub filter: RecordFilter,
    /// The filter as FHIR search parameters, as far as FHIR search can say it.
    pub fhir: FhirSearch,
    /// The policies that still depend on the record.
    pub residuals: Vec<ResidualPolicy>,
    /// The parts of residuals that no filter condition expresses; the
    /// filter then leaves out every record they might concern.
    pub untranslated: Vec<String>,
    /// Faults and notes, such as consents that cannot be evaluated.
    pub errors: Vec<String>,
    /// Entities a bounded store had not loaded and the plan needed: it was
    /// not made. A host that loads them and plans again gets the real answer.
    #[serde(skip)]
    pub unloaded: Vec<EntityUid>,
}

impl Plan {
    /// A plan that admits nothing because no record could be decided
    /// either: every decision would fail closed for the same reason.
    pub fn fail_closed(reason: impl Into<String>) -> Self {
        Self::answered(PlanKind::Never, RecordFilter::nothing(true), vec![reason.into()])
    }

    /// A plan that admits nothing because it could not be made, although
    /// decisions might allow some records.
    pub fn undetermined(reason: impl Into<String>) -> Self {
        Self::answered(PlanKind::Conditional, RecordFilter::nothing(false), vec![reason.into()])
    }

    /// The plan of a bounded store that has not loaded `unloaded`.
    pub fn not_loaded(unloaded: Vec<EntityUid>) -> Self {
        let named: Vec<String> = unloaded.iter().take(5).map(|uid| format!("`{uid}`")).collect();
        let mut plan = Self::fail_closed(format!(
            "the entities {} could not be loaded from the directory",
            named.join(", ")
        ));
        plan.unloaded = unloaded;
        plan
    }

    fn answered(kind: PlanKind, filter: RecordFilter, errors: Vec<String>) -> Self {
        let fhir = FhirSearch::of(&filter);
        Self {
            kind,
            filter,
            fhir,
            residuals: Vec::new(),
            untranslated: Vec::new(),
            errors,
            unloaded: Vec::new(),
        }
    }
}

/// Plans a request against a bundle, the consent partition of its patient
/// (`None` when the patient has no consents) and a store, under the same
/// options as decisions.
///
/// A [`RequestError`] means the caller's input was unusable. A fault that
/// is not the caller's gives a plan that admits nothing and says why.
pub fn plan(
    bundle: &PolicyBundle,
    partition: Option<&ConsentPartition>,
    store: &EntityStore,
    request: &PlanRequest,
    options: &DecisionOptions,
) -> Result<Plan, RequestError> {
    let is_record =
        request.resource_type.basename() == RECORD_TYPE && request.resource_type.namespace().is_empty();
    if !is_record {
        return Err(RequestError::malformed(
            "resource_type",
            format!("only `{RECORD_TYPE}` can be planned, not `{}`", request.resource_type),
        ));
    }
    if let Some(patient) = &request.patient {
        let is_patient =
            patient.type_name().basename() == PATIENT_TYPE && patient.type_name().namespace().is_empty();
        if !is_patient {
            return Err(RequestError::malformed(
                "patient",
                format!("expected a `{PATIENT_TYPE}`, not `{}`", patient.type_name()),
            ));
        }
    }
    // The decision request a record of the plan would be decided with, but
    // for its resource, which the plan leaves unknown.
    let mut base = DecisionRequest::new(
        request.principal.clone(),
        request.action.clone(),
        request.patient.clone().unwrap_or_else(|| request.principal.clone()),
    );
    base.context = request.context.clone();
    base.now = request.now.clone();
    build::plan_for(bundle, partition, store, &base, request.patient.as_ref(), options, build::Use::Shown)
}

//! Making a plan: the entities and request for typed partial evaluation,
//! then Consentry's rule over the residuals.
//!
//! The entities are the slice a decision about one of the patient's
//! records would read, without the record: the principal and its groups,
//! the patient, the context's entities and whatever the policies name. A
//! bounded store that has not loaded some of them gets a plan that says so,
//! as a decision would, so the host loads them and plans again.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    ActionConstraint, Entities, EntityId, EntityTypeName, EntityUid, PartialEntityUid, PartialRequest,
    Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint,
};
use cedar_policy_core::ast::Entity as CoreEntity;
use cedar_policy_core::entities::Entities as CoreEntities;
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use cedar_policy_core::tpe::entities::{PartialEntities, PartialEntity};
use cedar_policy_core::tpe::residual::Residual;

use super::filter::RecordFilter;
use super::formula::{Atom, FALSE, Formula, TooLarge, Values, dnf};
use super::residual::Translator;
use super::{FhirSearch, MAX_ALTERNATIVES, Plan, PlanKind, RECORD_TYPE, ResidualPolicy};
use crate::bundle::{PolicyBundle, collect_escaped_uids};
use crate::constants::CONSTANT_TYPE;
use crate::decision::{DecisionOptions, DecisionRequest, ForbidErrors, parse_context};
use crate::error::RequestError;
use crate::facts::{SentError, parse_request_entities};
use crate::partition::ConsentPartition;
use crate::rules::RuleSet;
use crate::slice::{SliceError, slice};
use crate::special::SpecialCategories;
use crate::store::EntityStore;
use crate::unreadable::INDEPENDENT_OF_CONSENTS;

/// The record type, parsed once: Cedar's parser costs more than the rest of a plan.
static RECORD: LazyLock<Option<EntityTypeName>> =
    LazyLock::new(|| EntityTypeName::from_str(RECORD_TYPE).ok());

/// What a plan is for: a caller who reads it, or only its filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Everything: the residuals as Cedar text and the FHIR searches too.
    Shown,
    /// The kind and the filter, for a search's obligation: writing the
    /// residuals out would cost a patient-level search more than the rest.
    Filter,
}

/// Plans the records of `patient` for the request `base`, whose resource is
/// ignored: the plan leaves it unknown.
pub(crate) fn plan_for(
    bundle: &PolicyBundle,
    partition: Option<&ConsentPartition>,
    store: &EntityStore,
    base: &DecisionRequest,
    patient: Option<&EntityUid>,
    options: &DecisionOptions,
    shown: Use,
) -> Result<Plan, RequestError> {
    if let Some(partition) = partition {
        if !partition.compiled_for(bundle) {
            return Ok(Plan::fail_closed(format!(
                "the consents of patient `{}` were compiled for another policy bundle",
                partition.patient()
            )));
        }
        if patient.is_none_or(|uid| uid.id().unescaped() != partition.patient()) {
            return Ok(Plan::undetermined(format!(
                "the consents given are those of patient `{}`, not of the patient planned",
                partition.patient()
            )));
        }
    }
    let Some(schema) = bundle.schema() else {
        return Ok(Plan::undetermined(
            "plans need the policy schema: typed partial evaluation reads the types of the record's attributes",
        ));
    };
    if !bundle.declares(&base.action) {
        return Err(RequestError::schema(
            "action",
            format!("action `{}` is not declared in the schema", base.action),
        ));
    }
    let Some(record_type) = RECORD.clone() else {
        return Ok(Plan::undetermined(format!("`{RECORD_TYPE}` is not an entity type name")));
    };
    let placeholder = EntityUid::from_type_name_and_id(record_type.clone(), EntityId::new(""));
    if !bundle.admits(&base.action, &base.principal, &placeholder) {
        return Err(RequestError::schema(
            "principal",
            format!(
                "action `{}` does not apply to a principal of type `{}` and a `{RECORD_TYPE}`",
                base.action,
                base.principal.type_name()
            ),
        ));
    }
    let (context, _) = parse_context(bundle, base)?;
    let sent = match parse_request_entities(base, store, Some(schema), options.request_entities) {
        Ok(sent) => sent,
        Err(SentError::Caller(error)) => return Err(error),
        Err(SentError::Fault(fault)) => return Ok(Plan::undetermined(fault)),
        Err(SentError::Unloaded(uid)) => return Ok(Plan::not_loaded(vec![uid])),
    };
    let mut roots = vec![base.principal.clone(), base.action.clone()];
    roots.extend(patient.cloned());
    if let Some(context) = &base.context {
        let mut referenced = HashSet::new();
        collect_escaped_uids(context, &mut referenced);
        roots.extend(referenced);
    }
    let rule_sets = std::iter::once(&bundle.rules).chain(partition.map(|p| &p.rules));
    let slice = match slice(bundle, store, &sent, roots, rule_sets) {
        Ok(slice) => slice,
        Err(SliceError::Invalid(e)) => {
            return Ok(Plan::undetermined(format!("cannot assemble entities: {e}")));
        }
        Err(SliceError::Unloaded(uids)) => return Ok(Plan::not_loaded(uids)),
    };
    let entities = slice.entities();
    let partial = match partial_entities(entities.as_ref(), schema) {
        Ok(partial) => partial,
        Err(e) => return Ok(Plan::undetermined(format!("cannot assemble entities for the plan: {e}"))),
    };
    let request = PartialRequest::new(
        PartialEntityUid::from_concrete(base.principal.clone()),
        base.action.clone(),
        PartialEntityUid::new(record_type, None),
        Some(context.clone()),
        schema,
    )
    .map_err(|e| RequestError::schema("request", e.to_string()))?;
    let concrete =
        cedar_policy::Request::new(base.principal.clone(), base.action.clone(), placeholder, context, None)
            .map_err(|e| RequestError::schema("request", e.to_string()))?;
    let evaluator = Evaluator::new(concrete.as_ref().clone(), entities.as_ref(), Extensions::all_available());
    let mut rule = Rule {
        translator: Translator::new(&evaluator, patient.map(AsRef::as_ref)),
        special: bundle.special_categories(),
        forbid_errors: options.forbid_errors,
        now: base.now.as_ref().map(crate::clock::EvaluationTime::unix_millis),
        independent_only: partition.is_some_and(|p| !p.unreadable().is_empty()),
        denied: FALSE,
        granted: FALSE,
        residuals: Vec::new(),
        errors: Vec::new(),
        shown,
    };
    let sets = std::iter::once((&bundle.policies, &bundle.rules, true))
        .chain(partition.map(|p| (&p.policies, &p.rules, false)));
    for (set, rules, is_pack) in sets {
        let candidates = candidates(set, &base.principal, &base.action, entities);
        let set = candidates.as_ref().unwrap_or(set);
        let response = match cedar_policy_core::tpe::is_authorized(
            set.as_ref(),
            request.as_ref(),
            &partial,
            schema.as_ref(),
        ) {
            Ok(response) => response,
            Err(e) => return Ok(Plan::undetermined(format!("typed partial evaluation failed: {e}"))),
        };
        for residual in response.policies() {
            let id = residual.get_policy_id().to_string();
            rule.add(set, rules, is_pack, &id, residual.get_effect(), residual.as_residual());
        }
    }
    if patient.is_none() {
        // Each record's patient has consents that may grant or deny; which is unknown.
        let consents = rule.translator.unknown(
            "the consents of each record's patient: name the `patient` to plan with them".to_owned(),
        );
        rule.granted = std::mem::replace(&mut rule.granted, FALSE).or(consents.holds);
        rule.denied = std::mem::replace(&mut rule.denied, FALSE).or(consents.errors);
    }
    if let Some(partition) = partition {
        rule.errors.extend(partition.unreadable().iter().map(|u| {
            format!(
                "consent `{}` version {} of patient `{}` cannot be evaluated and was not applied: {}",
                u.id,
                u.version,
                partition.patient(),
                u.reason
            )
        }));
    }
    Ok(rule.finish())
}

/// The policies whose scope can hold for this principal, this action and a
/// record, when that leaves some out: typed partial evaluation typechecks
/// every policy it is given, and that is most of a plan's cost. `None` keeps
/// the whole set (one with template links, which cannot be copied alone).
fn candidates(
    set: &PolicySet,
    principal: &EntityUid,
    action: &EntityUid,
    entities: &Entities,
) -> Option<PolicySet> {
    if set.templates().next().is_some() {
        return None;
    }
    let within = |uid: &EntityUid, of: &EntityUid| uid == of || entities.is_ancestor_of(of, uid);
    let record = |t: &EntityTypeName| t.basename() == RECORD_TYPE && t.namespace().is_empty();
    let applies = |policy: &&Policy| {
        let principal_holds = match policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(uid) => *principal == uid,
            PrincipalConstraint::In(uid) => within(principal, &uid),
            PrincipalConstraint::Is(t) => principal.type_name() == &t,
            PrincipalConstraint::IsIn(t, uid) => principal.type_name() == &t && within(principal, &uid),
        };
        let action_holds = match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => *action == uid,
            ActionConstraint::In(uids) => uids.iter().any(|uid| within(action, uid)),
        };
        let resource_may_hold = match policy.resource_constraint() {
            ResourceConstraint::Any | ResourceConstraint::In(_) => true,
            ResourceConstraint::Eq(uid) => record(uid.type_name()),
            ResourceConstraint::Is(t) | ResourceConstraint::IsIn(t, _) => record(&t),
        };
        principal_holds && action_holds && resource_may_hold
    };
    let kept: Vec<Policy> = set.policies().filter(applies).cloned().collect();
    if kept.len() == set.policies().count() {
        return None;
    }
    PolicySet::from_policies(kept).ok()
}

/// The slice as typed partial evaluation takes it: every entity fully
/// known, the engine's constants left out (they are no schema type and the
/// original policies never read them).
fn partial_entities(
    entities: &CoreEntities,
    schema: &cedar_policy::Schema,
) -> Result<PartialEntities, String> {
    let known: Vec<PartialEntity> = entities
        .iter()
        .filter(|e| e.uid().entity_type().to_string() != CONSTANT_TYPE)
        .map(|e: &CoreEntity| PartialEntity::try_from(e.clone()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    PartialEntities::from_entities(known.into_iter(), schema.as_ref()).map_err(|e| e.to_string())
}

/// Consentry's rule over the residuals, gathered policy by policy.
struct Rule<'a, 'e> {
    translator: Translator<'e>,
    special: &'a SpecialCategories,
    forbid_errors: ForbidErrors,
    now: Option<i64>,
    /// The patient has consents that cannot be evaluated: only pack permits
    /// annotated `@independent_of_consents` may allow.
    independent_only: bool,
    /// The records some forbid denies (satisfied, or erroring unless skipped).
    denied: Formula,
    /// The records some permit grants and may open.
    granted: Formula,
    residuals: Vec<ResidualPolicy>,
    errors: Vec<String>,
    shown: Use,
}

impl Rule<'_, '_> {
    fn add(
        &mut self,
        set: &PolicySet,
        rules: &RuleSet,
        is_pack: bool,
        id: &str,
        effect: cedar_policy_core::ast::Effect,
        residual: &Residual,
    ) {
        let notes = rules.notes_of(id);
        let forbids = effect == cedar_policy_core::ast::Effect::Forbid;
        let cedar_effect = if forbids { cedar_policy::Effect::Forbid } else { cedar_policy::Effect::Permit };
        if notes.and_then(|n| n.window).is_some_and(|w| !w.holds(self.now, cedar_effect)) {
            return;
        }
        if !forbids {
            let policy = set.policy(&PolicyId::new(id));
            let independent =
                is_pack && policy.is_some_and(|p| p.annotation(INDEPENDENT_OF_CONSENTS).is_some());
            // A permit without its notes opens nothing special and is not counted.
            if notes.is_none() || (self.independent_only && !independent) {
                return;
            }
        }
        if residual.is_partial() && self.shown == Use::Shown {
            self.residuals.push(ResidualPolicy {
                policy: id.to_owned(),
                effect: if forbids { "forbid" } else { "permit" },
                condition: cedar_policy_core::ast::Expr::from(residual.clone()).to_string(),
            });
        }
        self.translator.policy = id.to_owned();
        let truth = self.translator.truth(residual);
        if forbids {
            if matches!(residual, Residual::Error(_)) {
                self.errors.push(format!("forbid `{id}` cannot be evaluated for this request, so it denies"));
            }
            let denies = match self.forbid_errors {
                ForbidErrors::Deny => truth.holds.or(truth.errors),
                ForbidErrors::Skip => truth.holds,
            };
            self.denied = std::mem::replace(&mut self.denied, FALSE).or(denies);
        } else if let Some(notes) = notes {
            // A permit counts for a record only if it opens each special label the record carries.
            let closed: Values = self
                .special
                .labels()
                .iter()
                .filter(|label| !notes.opens.opens_all(&[label]))
                .map(|label| label.code.clone())
                .collect();
            let opened = if closed.is_empty() {
                truth.holds
            } else {
                truth.holds.and(Formula::Lit(Atom::Labels(closed), false))
            };
            self.granted = std::mem::replace(&mut self.granted, FALSE).or(opened);
        }
    }

    fn finish(self) -> Plan {
        let Rule { translator, denied, granted, residuals, mut errors, shown, .. } = self;
        let allowed = granted.and(denied.not());
        let mut untranslated = Vec::new();
        let (kind, filter) = match dnf(&allowed, MAX_ALTERNATIVES) {
            Err(TooLarge) => {
                untranslated.push(format!("the filter would need more than {MAX_ALTERNATIVES} alternatives"));
                (PlanKind::Conditional, RecordFilter::nothing(false))
            }
            Ok(alternatives) => {
                let (kept, dropped): (Vec<_>, Vec<_>) = alternatives
                    .into_iter()
                    .partition(|c| !c.iter().any(|(atom, _)| matches!(atom, Atom::Opaque(_))));
                let opaque: BTreeSet<usize> = dropped
                    .iter()
                    .flatten()
                    .filter_map(|(atom, _)| if let Atom::Opaque(i) = atom { Some(i / 2) } else { None })
                    .collect();
                untranslated.extend(opaque.iter().filter_map(|i| translator.opaque.get(*i).cloned()));
                let exact = dropped.is_empty();
                if kept.iter().any(|c| c.is_empty()) {
                    (PlanKind::Always, RecordFilter::everything())
                } else if kept.is_empty() && exact {
                    (PlanKind::Never, RecordFilter::nothing(true))
                } else {
                    (PlanKind::Conditional, RecordFilter::of(&kept, exact))
                }
            }
        };
        if kind == PlanKind::Always {
            untranslated.clear();
        }
        errors.dedup();
        let fhir = if shown == Use::Shown { FhirSearch::of(&filter) } else { FhirSearch::default() };
        Plan { kind, filter, fhir, residuals, untranslated, errors, unloaded: Vec::new() }
    }
}

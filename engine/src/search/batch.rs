//! One batch of a search: candidates that share their consent partitions,
//! decided over one slice.
//!
//! Each candidate is decided exactly as [`crate::decide_with`] decides it,
//! over exactly the policies it would evaluate, with two things shared:
//!
//! - **One slice for the batch.** A decision can only reach entities
//!   reachable from its request, and the slice of a batch holds everything
//!   reachable from any of its requests. Each entity's closure is computed
//!   from its own parents alone, so the entities a candidate's evaluation can
//!   reach are the same, with the same ancestors, as in its own slice: it
//!   cannot tell the two apart.
//! - **Policies that cannot tell candidates apart.** A condition that does
//!   not mention the searched variable (`resource` in a resource search) has
//!   the same value for every candidate: it reads only the fixed parts of the
//!   request and what they reach, which the batch's slice holds exactly as
//!   each candidate's would. Such a policy is evaluated once; if it is false,
//!   it is left out of every candidate's evaluation, where it could only have
//!   been skipped (a false policy neither grants, denies nor errors). One
//!   that is true or errors is evaluated with each candidate as usual.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use cedar_policy::{Context, EntityUid, Policy};
use cedar_policy_core::ast::{Expr, ExprKind, Literal, ValueKind, Var};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;

use super::share::{Key, Sharing};
use super::{Found, SearchRequest, Searched};
use crate::authorize::{Rule, authorize};
use crate::bundle::{PolicyBundle, collect_escaped_uids};
use crate::clock::EvaluationTime;
use crate::decision::{Decision, DecisionOptions, decide_with};
use crate::index::{Subject, Varying};
use crate::partition::ConsentPartition;
use crate::rules::{Candidate, RuleSet};
use crate::slice::{SentEntities, slice_watching};
use crate::store::{EntityStore, Presence};
use crate::unreadable;

/// Candidates per slice: enough that shared work is paid rarely, few enough
/// that one slice stays a few megabytes.
pub(super) const BATCH: usize = 1024;

/// What every candidate of a search shares: the parsed context and the
/// entities sent with the request.
pub(super) struct Shared<'a> {
    pub(super) bundle: &'a PolicyBundle,
    pub(super) store: &'a EntityStore,
    pub(super) search: &'a SearchRequest,
    pub(super) options: &'a DecisionOptions,
    pub(super) context: Context,
    /// Whether the context is already known to fit the schema.
    pub(super) conforms: bool,
    pub(super) sent: SentEntities,
}

impl Shared<'_> {
    /// Decides `batch` (positions and candidates) under `partitions`,
    /// adding the allowed ones to `found` and what a bounded store lacked to `unloaded`.
    pub(super) fn decide(
        &self,
        partitions: &[&ConsentPartition],
        batch: &[(usize, &EntityUid)],
        found: &mut Vec<(usize, Found)>,
        unloaded: &mut Vec<EntityUid>,
    ) {
        if partitions.iter().any(|p| !p.compiled_for(self.bundle)) {
            // Each decision would be a Deny naming the stale partition.
            return;
        }
        let Some(&(_, first)) = batch.first() else { return };
        let rule_sets: Vec<&RuleSet> =
            std::iter::once(&self.bundle.rules).chain(partitions.iter().map(|p| &p.rules)).collect();
        let fixed_roots = self.fixed_roots();
        // The fixed parts alone settle which policies a candidate may need,
        // and so what tells candidates apart.
        let Ok((fixed_slice, pointed_at)) = slice_watching(
            self.bundle,
            self.store,
            &self.sent,
            fixed_roots.clone(),
            rule_sets.iter().copied(),
            true,
        ) else {
            return self.decide_each_alone(partitions, batch, found, unloaded);
        };
        let fixed = self.fixed_policies(&rule_sets, first, fixed_slice.entities());
        drop(fixed_slice);
        let mut sharing = self.sharing(&rule_sets, &fixed, pointed_at);
        let (deciders, followers) = self.representatives(&sharing, batch);
        let roots = fixed_roots.into_iter().chain(deciders.iter().map(|(_, uid)| (*uid).clone()));
        let sliced =
            slice_watching(self.bundle, self.store, &self.sent, roots, rule_sets.iter().copied(), true);
        let Ok((slice, pointed_at)) = sliced else {
            // A cycle, or entities a bounded store lacks: each candidate's own
            // decision says which, and denies only the candidates it concerns.
            return self.decide_each_alone(partitions, batch, found, unloaded);
        };
        sharing.name(pointed_at);
        let entities = slice.entities();
        // Deciders without a stored key (entities were sent with the
        // request) may still share a key in the slice.
        #[allow(clippy::mutable_key_type, reason = "extension values cache inside, but compare by value")]
        let mut by_key: BTreeMap<Key<'_>, Arc<Decision>> = BTreeMap::new();
        let mut decided: Vec<Option<Arc<Decision>>> = Vec::with_capacity(deciders.len());
        for &(position, candidate) in &deciders {
            let key = sharing.key(candidate, entities);
            if let Some(decision) = key.as_ref().and_then(|key| by_key.get(key)) {
                if decision.is_allowed() {
                    found.push((position, Found { uid: candidate.clone(), decision: Arc::clone(decision) }));
                }
                decided.push(Some(Arc::clone(decision)));
                continue;
            }
            let decision = self.decide_in_slice(
                partitions, &rule_sets, &fixed, entities, position, candidate, found, unloaded,
            );
            let shareable = key.zip(decision);
            if let Some((key, decision)) = &shareable {
                by_key.insert(key.clone(), Arc::clone(decision));
            }
            decided.push(shareable.map(|(_, decision)| decision));
        }
        for (position, candidate, decider) in followers {
            let shareable =
                decided.get(decider).and_then(Option::as_ref).filter(|_| !sharing.is_named(candidate));
            match shareable {
                Some(decision) if decision.is_allowed() => {
                    found.push((position, Found { uid: candidate.clone(), decision: Arc::clone(decision) }));
                }
                Some(_) => {}
                None => self.decide_alone(partitions, position, candidate, found, unloaded),
            }
        }
    }

    /// What every candidate's decision starts from besides the candidate:
    /// the fixed parts of the request and the entities its context names.
    fn fixed_roots(&self) -> Vec<EntityUid> {
        let request = &self.search.request;
        let mut roots: Vec<EntityUid> = match self.search.searched {
            Searched::Subject => vec![request.action.clone(), request.resource.clone()],
            Searched::Resource => vec![request.principal.clone(), request.action.clone()],
            Searched::Action => vec![request.principal.clone(), request.resource.clone()],
        };
        if let Some(context) = &request.context {
            let mut referenced = HashSet::new();
            collect_escaped_uids(context, &mut referenced);
            roots.extend(referenced);
        }
        roots
    }

    /// Splits `batch` into the candidates to decide (the first of each
    /// stored key, and every candidate without one) and the others, each
    /// with the index among the deciders of the one whose decision is its
    /// own (see [`Sharing::stored_key`]). Entities sent with the request
    /// may stand in for stored ones, so then every candidate is decided.
    #[allow(clippy::type_complexity, reason = "two lists of positions and candidates")]
    fn representatives<'c>(
        &self,
        sharing: &Sharing,
        batch: &[(usize, &'c EntityUid)],
    ) -> (Vec<(usize, &'c EntityUid)>, Vec<(usize, &'c EntityUid, usize)>) {
        if !self.sent.is_empty() {
            return (batch.to_vec(), Vec::new());
        }
        let mut deciders = Vec::new();
        let mut followers = Vec::new();
        #[allow(clippy::mutable_key_type, reason = "extension values cache inside, but compare by value")]
        let mut first_of: BTreeMap<Key<'_>, usize> = BTreeMap::new();
        for &(position, candidate) in batch {
            let key = match self.store.presence(candidate) {
                _ if self.bundle.action_entities.contains_key(candidate) => None,
                Presence::Stored(stored) => sharing.stored_key(candidate, Some(stored)),
                Presence::Absent => sharing.stored_key(candidate, None),
                Presence::Unloaded => None,
            };
            match key {
                Some(key) => match first_of.get(&key) {
                    Some(&decider) => followers.push((position, candidate, decider)),
                    None => {
                        first_of.insert(key, deciders.len());
                        deciders.push((position, candidate));
                    }
                },
                None => deciders.push((position, candidate)),
            }
        }
        (deciders, followers)
    }

    /// Decides one candidate over the batch's slice, adding it to `found`
    /// when allowed; returns its decision unless it carries errors or
    /// missed entities (whose wording names this candidate), or was made
    /// by [`decide_with`] itself.
    #[allow(clippy::too_many_arguments, reason = "the batch's shared state, passed down once")]
    fn decide_in_slice(
        &self,
        partitions: &[&ConsentPartition],
        rule_sets: &[&RuleSet],
        fixed: &[Vec<usize>],
        entities: &cedar_policy::Entities,
        position: usize,
        candidate: &EntityUid,
        found: &mut Vec<(usize, Found)>,
        unloaded: &mut Vec<EntityUid>,
    ) -> Option<Arc<Decision>> {
        let [principal, action, resource] = self.search.parts(candidate);
        // A request whose shape is not known to fit the schema needs
        // Cedar's check and wording: the decision's own path gives both.
        let checked = self.conforms && self.bundle.admits(action, principal, resource);
        // A patient-level search's decision carries the plan's filter,
        // which only the whole decision path adds.
        if (self.bundle.schema().is_some() && !checked) || crate::special::is_patient_search(action, resource)
        {
            self.decide_alone(partitions, position, candidate, found, unloaded);
            return None;
        }
        let varying = match self.search.searched {
            Searched::Subject => Varying::Principal,
            Searched::Resource => Varying::Resource,
            Searched::Action => Varying::Action,
        };
        let cedar_request = cedar_policy::Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            self.context.clone(),
            None,
        )
        .ok()?;
        let subject = Subject::new(candidate, entities);
        let in_force = rule_sets.iter().zip(fixed).flat_map(|(rules, positions)| {
            positions
                .iter()
                .filter(|&&position| rules.index().varying_holds(position, varying, &subject))
                .filter_map(|&position| rules.at(position))
        });
        let rule = Rule {
            forbid_errors: self.options.forbid_errors,
            special: self.bundle.special_categories(),
            action,
            resource,
        };
        let decision = authorize(&cedar_request, entities, in_force, &rule);
        let decision = Arc::new(unreadable::settle(self.bundle, decision, partitions));
        unloaded.extend(decision.unloaded.iter().cloned());
        if decision.is_allowed() {
            found.push((position, Found { uid: candidate.clone(), decision: Arc::clone(&decision) }));
        }
        (decision.errors.is_empty() && decision.unloaded.is_empty()).then_some(decision)
    }

    /// Every candidate of `batch` decided by [`decide_with`] itself.
    fn decide_each_alone(
        &self,
        partitions: &[&ConsentPartition],
        batch: &[(usize, &EntityUid)],
        found: &mut Vec<(usize, Found)>,
        unloaded: &mut Vec<EntityUid>,
    ) {
        for &(position, candidate) in batch {
            self.decide_alone(partitions, position, candidate, found, unloaded);
        }
    }

    /// What lets candidates of this batch share decisions: the policies a
    /// candidate may evaluate, and everything but a candidate itself that
    /// names an entity (see [`share`](super::share)).
    fn sharing(&self, rule_sets: &[&RuleSet], fixed: &[Vec<usize>], pointed_at: Vec<EntityUid>) -> Sharing {
        let request = &self.search.request;
        let policies = rule_sets.iter().zip(fixed).flat_map(|(rules, positions)| {
            positions.iter().filter_map(|&p| rules.at(p).map(|candidate| candidate.policy))
        });
        let mut named: HashSet<EntityUid> = match self.search.searched {
            Searched::Subject => [&request.action, &request.resource],
            Searched::Resource => [&request.principal, &request.action],
            Searched::Action => [&request.principal, &request.resource],
        }
        .into_iter()
        .cloned()
        .chain(pointed_at)
        .collect();
        if let Some(context) = &request.context {
            collect_escaped_uids(context, &mut named);
        }
        let constants = rule_sets.iter().flat_map(|rules| rules.constants.iter());
        named.extend(constants.flat_map(|(_, constant)| constant.references().iter().cloned()));
        Sharing::new(policies, named.into_iter())
    }

    /// One candidate decided by [`decide_with`] itself.
    fn decide_alone(
        &self,
        partitions: &[&ConsentPartition],
        position: usize,
        candidate: &EntityUid,
        found: &mut Vec<(usize, Found)>,
        unloaded: &mut Vec<EntityUid>,
    ) {
        let request = self.search.candidate(candidate);
        // A refusal of this candidate's request is not a result.
        if let Ok(decision) = decide_with(self.bundle, partitions, self.store, &request, self.options) {
            unloaded.extend(decision.unloaded.iter().cloned());
            if decision.is_allowed() {
                found.push((position, Found { uid: candidate.clone(), decision: Arc::new(decision) }));
            }
        }
    }

    /// Per rule set, the positions of the policies a candidate may still
    /// need: those whose scope clauses for the fixed parts hold, that are in
    /// force at the evaluation time, and that are not settled false. `any`
    /// stands in for the searched part, which none of this reads.
    fn fixed_policies(
        &self,
        rule_sets: &[&RuleSet],
        any: &EntityUid,
        entities: &cedar_policy::Entities,
    ) -> Vec<Vec<usize>> {
        let [principal, action, resource] = self.search.parts(any);
        let subjects = [principal, action, resource].map(|uid| Subject::new(uid, entities));
        let [p, a, r] = &subjects;
        let (varying, searched) = match self.search.searched {
            Searched::Subject => (Varying::Principal, Var::Principal),
            Searched::Resource => (Varying::Resource, Var::Resource),
            Searched::Action => (Varying::Action, Var::Action),
        };
        let now = self.search.request.now.as_ref().map(EvaluationTime::unix_millis);
        let request = cedar_policy::Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            self.context.clone(),
            None,
        )
        .ok();
        let core_request =
            request.as_ref().map(|r| AsRef::<cedar_policy_core::ast::Request>::as_ref(r).clone());
        let evaluator =
            core_request.map(|r| Evaluator::new(r, entities.as_ref(), Extensions::all_available()));
        rule_sets
            .iter()
            .map(|rules| {
                let mut positions = rules.index().fixed_part(varying, p, a, r);
                positions.retain(|&position| {
                    let Some(Candidate { policy, notes, .. }) = rules.at(position) else { return false };
                    let in_force = notes.window.is_none_or(|w| w.holds(now, policy.effect()));
                    in_force && !evaluator.as_ref().is_some_and(|e| settled_false(e, policy, searched))
                });
                positions
            })
            .collect()
    }
}

/// Whether `policy`'s condition is false whatever the searched variable:
/// one of its leading conjuncts that do not mention it is false, and
/// those before it are true. Cedar evaluates `&&` left to right and stops
/// at the first false, so the whole condition is then false for every
/// candidate; an error or a non-boolean settles nothing.
fn settled_false(evaluator: &Evaluator<'_>, policy: &Policy, searched: Var) -> bool {
    let core: &cedar_policy_core::ast::Policy = policy.as_ref();
    let Some(body) = core.non_scope_constraints() else { return false };
    let mentions =
        |e: &Expr| e.subexpressions().any(|s| matches!(s.expr_kind(), ExprKind::Var(v) if *v == searched));
    for conjunct in conjuncts(body) {
        if mentions(conjunct) {
            return false;
        }
        match evaluator.interpret(conjunct, core.env()).as_ref().map(|v| v.value_kind()) {
            Ok(ValueKind::Lit(Literal::Bool(true))) => {}
            Ok(ValueKind::Lit(Literal::Bool(false))) => return true,
            _ => return false,
        }
    }
    false
}

/// The operands of a chain of `&&`, in the order Cedar evaluates them.
fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr.expr_kind() {
        ExprKind::And { left, right } => {
            let mut all = conjuncts(left);
            all.extend(conjuncts(right));
            all
        }
        _ => vec![expr],
    }
}

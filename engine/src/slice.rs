//! The entity slice: the few entities one decision can read.
//!
//! A Cedar policy can only reach entities by starting from the principal,
//! the action, the resource, the context or a literal in a policy, and then
//! following `in` (ancestors) or attribute and tag references. So the slice
//! is everything reachable that way, and nothing else: its size depends on
//! the request, not on how many entities are stored.
//!
//! Cedar's public `Entities::from_entities` recomputes the transitive closure
//! and checks the hierarchy with general-purpose machinery that costs about
//! 2 µs per entity. The slice is small and we already walk it, so we compute
//! each entity's ancestors here and hand Cedar a closure that is already
//! complete (`TCComputation::AssumeAlreadyComputed`). A cycle, which Cedar
//! would refuse, is refused here too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use cedar_policy::{Entities, EntityUid};
use cedar_policy_core::ast::{Entity as CoreEntity, EntityUID};
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use ref_cast::RefCast;

use crate::bundle::PolicyBundle;
use crate::rules::RuleSet;
use crate::store::{EntityStore, Presence, SCHEMA_GENERATION, StoredEntity};

/// Entities that exist for one request only; they shadow stored ones.
pub(crate) type SentEntities = HashMap<EntityUid, Arc<StoredEntity>>;

/// The entities of one decision, with their transitive closure computed.
pub(crate) struct Slice(CoreEntities);

impl Slice {
    /// The slice as Cedar's `Entities`.
    pub(crate) fn entities(&self) -> &Entities {
        Entities::ref_cast(&self.0)
    }
}

/// Why a slice could not be built.
pub(crate) enum SliceError {
    /// The entities do not form a hierarchy Cedar accepts (a cycle).
    Invalid(String),
    /// A bounded store has not loaded these entities, which the decision
    /// can reach: it must not be made without them.
    Unloaded(Vec<EntityUid>),
}

/// Where a slice entity came from; this decides whether its closure may be remembered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Sent with this request: its closure holds for this request only.
    Request,
    /// A schema action or a rule set's constant: closed when the bundle was built.
    Schema,
    /// The entity store: closures are remembered per store generation.
    Store,
}

/// Collects the reachable entities and builds the slice.
///
/// The rule sets' constants come first and are not followed: they stand
/// for literals, whose entity members a condition only compares.
pub(crate) fn slice<'a>(
    bundle: &PolicyBundle,
    store: &EntityStore,
    request_entities: &SentEntities,
    roots: impl IntoIterator<Item = EntityUid>,
    rule_sets: impl Iterator<Item = &'a RuleSet> + Clone,
) -> Result<Slice, SliceError> {
    slice_watching(bundle, store, request_entities, roots, rule_sets, false).map(|(slice, _)| slice)
}

/// [`slice`], also returning, when `watch` is set, every uid an entity of
/// the slice points at (as a parent, or in an attribute or tag): a search
/// asks which of its candidates anything else names (see `search::share`).
pub(crate) fn slice_watching<'a>(
    bundle: &PolicyBundle,
    store: &EntityStore,
    request_entities: &SentEntities,
    roots: impl IntoIterator<Item = EntityUid>,
    rule_sets: impl Iterator<Item = &'a RuleSet> + Clone,
    watch: bool,
) -> Result<(Slice, Vec<EntityUid>), SliceError> {
    let mut pointed_at = Vec::new();
    let mut queue: VecDeque<EntityUid> = roots.into_iter().collect();
    queue.extend(rule_sets.clone().flat_map(|rules| rules.literal_uids.iter().cloned()));
    queue.extend(request_entities.keys().cloned());
    let mut found: Found<'_> =
        foldhash::HashMap::with_capacity_and_hasher(queue.len() * 2, Default::default());
    for (uid, constant) in rule_sets.flat_map(|rules| rules.constants.iter()) {
        found.insert(uid.clone(), (constant, Source::Schema));
    }
    let mut missing: foldhash::HashSet<EntityUid> = foldhash::HashSet::default();
    let mut unloaded = Vec::new();
    while let Some(uid) = queue.pop_front() {
        if found.contains_key(&uid) || missing.contains(&uid) {
            continue;
        }
        let presence = match request_entities.get(&uid) {
            Some(stored) => Some((stored, Source::Request)),
            None => match bundle.action_entities.get(&uid) {
                Some(stored) => Some((stored, Source::Schema)),
                None => match store.presence(&uid) {
                    Presence::Stored(stored) => Some((stored, Source::Store)),
                    Presence::Absent => None,
                    Presence::Unloaded => {
                        unloaded.push(uid.clone());
                        None
                    }
                },
            },
        };
        match presence {
            Some((stored, source)) => {
                if watch {
                    pointed_at.extend(stored.references.iter().cloned());
                }
                queue.extend(stored.references.iter().filter(|r| !found.contains_key(*r)).cloned());
                found.insert(uid, (stored, source));
            }
            None => {
                missing.insert(uid);
            }
        }
    }
    if !unloaded.is_empty() {
        return Err(SliceError::Unloaded(unloaded));
    }
    // A remembered closure was computed from stored entities alone, so it is
    // valid only when no request entity can stand in for one of them.
    let generation = request_entities.is_empty().then(|| store.generation());
    let mut closed = Vec::with_capacity(found.len());
    for (uid, (stored, source)) in &found {
        let remembered = match (source, generation) {
            (Source::Schema, _) => stored.closed_in(SCHEMA_GENERATION),
            (Source::Store, Some(generation)) => stored.closed_in(generation),
            _ => None,
        };
        if let Some(entity) = remembered {
            closed.push(entity);
            continue;
        }
        let mut entity: CoreEntity = stored.entity.as_ref().clone();
        let ancestry = ancestors(uid, &found).map_err(SliceError::Invalid)?;
        for ancestor in ancestry.uids {
            entity.add_indirect_ancestor(ancestor);
        }
        let entity = Arc::new(entity);
        if let (Some(generation), Source::Store, true) = (generation, source, ancestry.store_only) {
            stored.remember_closed(generation, Arc::clone(&entity));
        }
        closed.push(entity);
    }
    CoreEntities::new()
        .add_entities(
            closed,
            None::<&NoEntitiesSchema>,
            TCComputation::AssumeAlreadyComputed,
            Extensions::all_available(),
        )
        .map(|entities| (Slice(entities), pointed_at))
        .map_err(|e| SliceError::Invalid(e.to_string()))
}

type Found<'a> = foldhash::HashMap<EntityUid, (&'a StoredEntity, Source)>;

/// An entity's ancestors, and whether they depend on the store alone.
struct Ancestry {
    uids: Vec<EntityUID>,
    /// False when an ancestor came from the request or the schema, or is an
    /// action that a different schema could give parents: then the closure
    /// must not outlive this decision.
    store_only: bool,
}

/// Every entity reachable from `uid` through parent edges. A parent that is
/// not in the slice (not stored) still counts, but has no parents of its own,
/// exactly as in Cedar's closure.
fn ancestors(uid: &EntityUid, found: &Found<'_>) -> Result<Ancestry, String> {
    let mut seen: foldhash::HashSet<&EntityUid> = foldhash::HashSet::default();
    let mut store_only = true;
    let mut stack: Vec<&EntityUid> =
        found.get(uid).map(|(s, _)| s.parents.iter().collect()).unwrap_or_default();
    while let Some(next) = stack.pop() {
        if next == uid {
            return Err(format!("the entity hierarchy has a cycle through `{uid}`"));
        }
        if seen.insert(next) {
            let entry = found.get(next);
            store_only &= matches!(entry, Some((_, Source::Store)) | None) && !is_action(next);
            if let Some((stored, _)) = entry {
                stack.extend(stored.parents.iter());
            }
        }
    }
    Ok(Ancestry { uids: seen.into_iter().map(|u| u.as_ref().clone()).collect(), store_only })
}

fn is_action(uid: &EntityUid) -> bool {
    let core: &EntityUID = uid.as_ref();
    core.is_action()
}

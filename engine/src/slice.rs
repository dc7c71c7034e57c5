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
use crate::store::{EntityStore, StoredEntity};

/// Entities that exist for one request only; they shadow stored ones.
pub(crate) type RequestEntities = HashMap<EntityUid, Arc<StoredEntity>>;

/// The entities of one decision, with their transitive closure computed.
pub(crate) struct Slice(CoreEntities);

impl Slice {
    /// The slice as Cedar's `Entities`.
    pub(crate) fn entities(&self) -> &Entities {
        Entities::ref_cast(&self.0)
    }
}

/// Collects the reachable entities and builds the slice.
pub(crate) fn slice(
    bundle: &PolicyBundle,
    store: &EntityStore,
    request_entities: &RequestEntities,
    roots: impl IntoIterator<Item = EntityUid>,
) -> Result<Slice, String> {
    let mut queue: VecDeque<EntityUid> = roots.into_iter().collect();
    queue.extend(bundle.literal_uids.iter().cloned());
    queue.extend(request_entities.keys().cloned());
    let mut found: foldhash::HashMap<EntityUid, &StoredEntity> =
        foldhash::HashMap::with_capacity_and_hasher(queue.len() * 2, Default::default());
    let mut missing: foldhash::HashSet<EntityUid> = foldhash::HashSet::default();
    while let Some(uid) = queue.pop_front() {
        if found.contains_key(&uid) || missing.contains(&uid) {
            continue;
        }
        let stored = request_entities
            .get(&uid)
            .or_else(|| bundle.action_entities.get(&uid))
            .or_else(|| store.get(&uid));
        match stored {
            Some(stored) => {
                queue.extend(stored.references.iter().filter(|r| !found.contains_key(*r)).cloned());
                found.insert(uid, stored);
            }
            None => {
                missing.insert(uid);
            }
        }
    }
    let mut closed = Vec::with_capacity(found.len());
    for (uid, stored) in &found {
        let mut entity: CoreEntity = stored.entity.as_ref().clone();
        for ancestor in ancestors(uid, &found)? {
            entity.add_indirect_ancestor(ancestor);
        }
        closed.push(entity);
    }
    CoreEntities::from_entities(
        closed,
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        Extensions::all_available(),
    )
    .map(Slice)
    .map_err(|e| e.to_string())
}

/// Every entity reachable from `uid` through parent edges. A parent that is
/// not in the slice (not stored) still counts, but has no parents of its own,
/// exactly as in Cedar's closure.
fn ancestors(
    uid: &EntityUid,
    found: &foldhash::HashMap<EntityUid, &StoredEntity>,
) -> Result<Vec<EntityUID>, String> {
    let mut seen: foldhash::HashSet<&EntityUid> = foldhash::HashSet::default();
    let mut stack: Vec<&EntityUid> = found.get(uid).map(|s| s.parents.iter().collect()).unwrap_or_default();
    while let Some(next) = stack.pop() {
        if next == uid {
            return Err(format!("the entity hierarchy has a cycle through `{uid}`"));
        }
        if seen.insert(next)
            && let Some(stored) = found.get(next)
        {
            stack.extend(stored.parents.iter());
        }
    }
    Ok(seen.into_iter().map(|u| u.as_ref().clone()).collect())
}

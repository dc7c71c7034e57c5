//! The entity slice: the few entities one decision can read.
//!
//! A Cedar policy can only reach entities by starting from the principal,
//! the action, the resource, the context or a literal in a policy, and then
//! following `in` (ancestors) or attribute and tag references. So the slice
//! is everything reachable that way, and nothing else: its size depends on
//! the request, not on how many entities are stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use cedar_policy::{Entities, EntityUid};

use crate::bundle::PolicyBundle;
use crate::store::{EntityStore, StoredEntity};

/// Entities that exist for one request only; they shadow stored ones.
pub(crate) type RequestEntities = HashMap<EntityUid, Arc<StoredEntity>>;

/// Collects the reachable entities and builds a Cedar `Entities` from them.
/// Entities were validated when they were stored or parsed, so no schema is
/// needed here, and the transitive closure covers only the slice.
pub(crate) fn slice(
    bundle: &PolicyBundle,
    store: &EntityStore,
    request_entities: &RequestEntities,
    roots: impl IntoIterator<Item = EntityUid>,
) -> Result<Entities, String> {
    let mut queue: VecDeque<EntityUid> = roots.into_iter().collect();
    queue.extend(bundle.literal_uids.iter().cloned());
    queue.extend(request_entities.keys().cloned());
    let mut seen: HashSet<EntityUid> = HashSet::with_capacity(queue.len() * 2);
    let mut found = Vec::with_capacity(queue.len());
    while let Some(uid) = queue.pop_front() {
        if seen.contains(&uid) {
            continue;
        }
        let stored = request_entities
            .get(&uid)
            .or_else(|| bundle.action_entities.get(&uid))
            .or_else(|| store.get(&uid));
        if let Some(stored) = stored {
            queue.extend(stored.references.iter().filter(|r| !seen.contains(*r)).cloned());
            found.push(stored.entity.clone());
        }
        seen.insert(uid);
    }
    Entities::from_entities(found, None).map_err(|e| e.to_string())
}

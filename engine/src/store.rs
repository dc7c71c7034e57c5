//! The entity store: parsed entities, indexed by uid, updated one at a time.
//!
//! Cedar's `Entities` recomputes the transitive closure of the whole
//! hierarchy on every change (cedar issue #612), and parsing entity JSON costs
//! tens of microseconds. So the store keeps entities already parsed, with
//! only their direct edges, and a decision builds a small `Entities` from the
//! slice it needs (see [`crate::slice`]). Ancestors are therefore always
//! derived from the current edges, and an upsert or delete is O(1).

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, EvalResult, Schema};
use serde::Deserialize;
use serde_json::Value;

use ref_cast::RefCast;

use crate::error::{LoadError, describe};
use crate::uid::parse_uid;

/// An entity together with its parents and every uid it points at
/// (parents, and entity references inside its attributes and tags),
/// computed once at ingest.
#[derive(Debug, Clone)]
pub struct StoredEntity {
    pub(crate) entity: Entity,
    pub(crate) parents: Box<[EntityUid]>,
    pub(crate) references: Box<[EntityUid]>,
}

impl StoredEntity {
    /// Wraps a parsed entity and records what it refers to.
    pub fn new(entity: Entity) -> Self {
        // Schema action entities arrive with their closure already computed;
        // for them `ancestors` holds more than the direct parents, which
        // only adds edges the closure implies anyway.
        let core: &cedar_policy_core::ast::Entity = entity.as_ref();
        let parents: Box<[EntityUid]> = core.ancestors().map(|p| EntityUid::ref_cast(p).clone()).collect();
        let mut references: HashSet<EntityUid> = parents.iter().cloned().collect();
        for (_, value) in entity.attrs().chain(entity.tags()) {
            if let Ok(value) = value {
                collect_uids(&value, &mut references);
            }
        }
        Self { entity, parents, references: references.into_iter().collect() }
    }

    /// The parsed Cedar entity.
    pub fn entity(&self) -> &Entity {
        &self.entity
    }
}

fn collect_uids(value: &EvalResult, out: &mut HashSet<EntityUid>) {
    match value {
        EvalResult::EntityUid(uid) => {
            out.insert(uid.clone());
        }
        EvalResult::Set(set) => set.iter().for_each(|v| collect_uids(v, out)),
        EvalResult::Record(record) => record.iter().for_each(|(_, v)| collect_uids(v, out)),
        EvalResult::Bool(_) | EvalResult::Long(_) | EvalResult::String(_) | EvalResult::ExtensionValue(_) => {
        }
    }
}

/// An incremental change to the store, applied all-or-nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityPatch {
    /// Entities in Cedar's entity JSON format, inserted or replaced whole.
    #[serde(default)]
    pub upsert: Vec<Value>,
    /// Uids to remove; removing a uid that is not stored is not an error.
    #[serde(default)]
    pub delete: Vec<Value>,
}

impl EntityPatch {
    /// Parses every upsert and delete, so that applying cannot fail and a
    /// bad item changes nothing. Done outside any lock.
    pub fn parse(&self, schema: Option<&Schema>) -> Result<ParsedPatch, LoadError> {
        let mut upsert = Vec::with_capacity(self.upsert.len());
        for (position, item) in self.upsert.iter().enumerate() {
            let stored = parse_entity(item, schema)
                .map_err(|e| LoadError::Entities(format!("upsert[{position}]: {e}")))?;
            upsert.push(stored);
        }
        let mut delete = Vec::with_capacity(self.delete.len());
        for (position, item) in self.delete.iter().enumerate() {
            let uid = parse_uid(item, &format!("delete[{position}]"))
                .map_err(|e| LoadError::Entities(e.to_string()))?;
            delete.push(uid);
        }
        Ok(ParsedPatch { upsert, delete })
    }
}

/// A patch whose entities and uids are parsed and valid.
#[derive(Debug, Clone)]
pub struct ParsedPatch {
    upsert: Vec<StoredEntity>,
    delete: Vec<EntityUid>,
}

/// What a patch changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PatchOutcome {
    /// Entities inserted or replaced.
    pub upserted: usize,
    /// Entities that existed and were removed.
    pub deleted: usize,
}

/// All stored entities, by uid. Keys come from administrators, not from
/// decision requests, and foldhash is several times faster than SipHash on
/// the lookups every decision makes.
#[derive(Debug, Clone, Default)]
pub struct EntityStore {
    entities: foldhash::HashMap<EntityUid, Arc<StoredEntity>>,
}

impl EntityStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a Cedar entity JSON array, under the schema when there is one.
    /// Each entity is parsed on its own, so no transitive closure is computed.
    pub fn from_json(value: &Value, schema: Option<&Schema>) -> Result<Self, LoadError> {
        let Value::Array(items) = value else {
            return Err(LoadError::Entities("expected a JSON array of entities".into()));
        };
        let mut entities = foldhash::HashMap::with_capacity_and_hasher(items.len(), Default::default());
        for (position, item) in items.iter().enumerate() {
            let stored =
                parse_entity(item, schema).map_err(|e| LoadError::Entities(format!("[{position}]: {e}")))?;
            let uid = stored.entity.uid();
            if entities.insert(uid.clone(), Arc::new(stored)).is_some() {
                return Err(LoadError::Entities(format!("[{position}]: duplicate entity `{uid}`")));
            }
        }
        Ok(Self { entities })
    }

    /// Builds a store from entities already parsed, for example by a benchmark.
    pub fn from_entities(entities: impl IntoIterator<Item = Entity>) -> Self {
        Self { entities: entities.into_iter().map(|e| (e.uid(), Arc::new(StoredEntity::new(e)))).collect() }
    }

    /// Number of stored entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The stored entity with this uid.
    pub fn get(&self, uid: &EntityUid) -> Option<&Arc<StoredEntity>> {
        self.entities.get(uid)
    }

    /// Inserts or replaces one entity.
    pub fn upsert(&mut self, entity: Entity) {
        self.entities.insert(entity.uid(), Arc::new(StoredEntity::new(entity)));
    }

    /// Removes one entity; returns whether it was there.
    pub fn remove(&mut self, uid: &EntityUid) -> bool {
        self.entities.remove(uid).is_some()
    }

    /// Applies a parsed patch: deletes first, then upserts, all at once.
    pub fn apply(&mut self, patch: ParsedPatch) -> PatchOutcome {
        let deleted = patch.delete.iter().filter(|uid| self.entities.remove(*uid).is_some()).count();
        let upserted = patch.upsert.len();
        for stored in patch.upsert {
            self.entities.insert(stored.entity.uid(), Arc::new(stored));
        }
        PatchOutcome { upserted, deleted }
    }

    /// Every entity in Cedar's entity JSON format, sorted by uid so the output is stable.
    pub fn to_json(&self) -> Result<Value, LoadError> {
        let mut sorted: Vec<_> = self.entities.iter().collect();
        sorted.sort_by_cached_key(|(uid, _)| uid.to_string());
        sorted
            .into_iter()
            .map(|(_, stored)| stored.entity.to_json_value().map_err(|e| LoadError::Entities(e.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
    }

    /// Re-parses every entity under a new schema, as a new store; fails if any
    /// entity does not fit.
    pub fn reparsed(&self, schema: Option<&Schema>) -> Result<Self, LoadError> {
        let json = self.to_json()?;
        Self::from_json(&json, schema)
    }
}

/// Parses one entity in Cedar's entity JSON format.
pub(crate) fn parse_entity(value: &Value, schema: Option<&Schema>) -> Result<StoredEntity, String> {
    if !value.is_object() {
        return Err("expected an entity object with `uid`, `attrs` and `parents`".into());
    }
    Entity::from_json_value(value.clone(), schema).map(StoredEntity::new).map_err(|e| describe(&e))
}

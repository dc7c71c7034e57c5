//! The entity store: parsed entities, indexed by uid, updated one at a time.
//!
//! Cedar's `Entities` recomputes the transitive closure of the whole
//! hierarchy on every change (cedar issue #612), and parsing entity JSON costs
//! tens of microseconds. So the store keeps entities already parsed, with
//! only their direct edges, and a decision builds a small `Entities` from the
//! slice it needs (see [`crate::slice`]). Ancestors are therefore always
//! derived from the current edges, and an upsert or delete is O(1).
//!
//! Computing an entity's ancestors and copying it into a closed Cedar entity
//! was most of a decision's cost, and the same few entities (the hospital,
//! the care team, the action) are in nearly every slice. So each stored
//! entity remembers its closed form together with the store *generation* it
//! was computed under. Every change to a store moves it to a new generation,
//! drawn from one process-wide counter, so a remembered closure is used only
//! by a store whose contents are exactly those it was computed from, and a
//! change invalidates all of them at once, in O(1).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use cedar_policy_core::ast::Entity as CoreEntity;

use cedar_policy::{Entity, EntityUid, EvalResult, Schema};
use serde::Deserialize;
use serde_json::Value;

use ref_cast::RefCast;

use crate::cache::{Cache, Mark};
use crate::error::{LoadError, describe};
use crate::limits;
use crate::uid::parse_uid;

/// An entity together with its parents and every uid it points at
/// (parents, and entity references inside its attributes and tags),
/// computed once at ingest.
#[derive(Debug)]
pub struct StoredEntity {
    pub(crate) entity: Entity,
    pub(crate) parents: Box<[EntityUid]>,
    pub(crate) references: Box<[EntityUid]>,
    closed: ArcSwapOption<ClosedEntity>,
    /// The entity in Cedar's entity JSON format, written the first time a
    /// plugin needs it: the entity never changes, and converting it is
    /// costlier than the plugin call it feeds.
    json: OnceLock<Option<Box<str>>>,
    /// Set when a decision looks the entity up; a bounded store's sweep
    /// takes it and evicts the entities it finds unset (see [`crate::cache`]).
    touched: Mark,
}

/// The entity with every ancestor attached, as computed in one store generation.
#[derive(Debug)]
struct ClosedEntity {
    generation: u64,
    entity: Arc<CoreEntity>,
}

impl Clone for StoredEntity {
    fn clone(&self) -> Self {
        Self {
            entity: self.entity.clone(),
            parents: self.parents.clone(),
            references: self.references.clone(),
            closed: ArcSwapOption::empty(),
            json: self.json.clone(),
            touched: Mark::default(),
        }
    }
}

/// Generations are never reused, even across stores: clones share their
/// `StoredEntity` values, and must not read each other's closures once either changes.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(SCHEMA_GENERATION + 1);

/// The generation under which schema action entities keep their closure:
/// Cedar closes them when it builds the schema, and no store change affects them.
pub(crate) const SCHEMA_GENERATION: u64 = 0;

fn fresh_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
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
        Self {
            entity,
            parents,
            references: references.into_iter().collect(),
            closed: ArcSwapOption::empty(),
            json: OnceLock::new(),
            touched: Mark::default(),
        }
    }

    /// Its CLOCK mark in a bounded store.
    pub(crate) fn mark(&self) -> &Mark {
        &self.touched
    }

    /// The closed form remembered for `generation`, if any.
    pub(crate) fn closed_in(&self, generation: u64) -> Option<Arc<CoreEntity>> {
        let guard = self.closed.load();
        guard.as_ref().filter(|c| c.generation == generation).map(|c| Arc::clone(&c.entity))
    }

    /// Remembers the closed form computed in `generation`.
    pub(crate) fn remember_closed(&self, generation: u64, entity: Arc<CoreEntity>) {
        self.closed.store(Some(Arc::new(ClosedEntity { generation, entity })));
    }

    /// The parsed Cedar entity.
    pub fn entity(&self) -> &Entity {
        &self.entity
    }

    /// Parses one entity in Cedar's entity JSON format, under the schema
    /// when there is one and within the [limits](crate::limits).
    pub fn from_json(value: &Value, schema: Option<&Schema>) -> Result<Self, String> {
        parse_entity(value, schema)
    }

    /// Every uid it points at: its parents and the entities in its attributes and tags.
    pub fn references(&self) -> &[EntityUid] {
        &self.references
    }

    /// Its parents (for schema action entities, all their ancestors).
    pub fn parents(&self) -> &[EntityUid] {
        &self.parents
    }

    /// The entity as Cedar entity JSON text, or `None` if Cedar cannot
    /// write it (it always can for an entity it parsed).
    pub fn json_text(&self) -> Option<&str> {
        self.json
            .get_or_init(|| self.entity.to_json_value().ok().map(|value| value.to_string().into_boxed_str()))
            .as_deref()
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

    /// Checks one entity exactly as [`EntityPatch::parse`] checks each
    /// upsert (the engine's limits, then Cedar under `schema`), taking it by
    /// value: a bulk import checks millions and need not copy each one for
    /// Cedar, nor keep what Cedar made of it.
    pub fn check_upsert(item: Value, schema: Option<&Schema>) -> Result<(), LoadError> {
        parse_cedar_entity(item, schema).map(drop).map_err(LoadError::Entities)
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

/// Stored entities, by uid: all of them, or, for a bounded store, those a
/// host loaded from a larger directory (see [`crate::cache`]). Keys come
/// from administrators and from the directory, and foldhash is several
/// times faster than SipHash on the lookups every decision makes.
#[derive(Debug, Clone)]
pub struct EntityStore {
    entities: foldhash::HashMap<EntityUid, Arc<StoredEntity>>,
    /// `None` when the store holds the whole directory: a uid it lacks does
    /// not exist.
    cache: Option<Cache>,
    generation: u64,
}

/// What a store knows of a uid.
#[derive(Debug, Clone, Copy)]
pub enum Presence<'a> {
    /// The entity is stored.
    Stored(&'a Arc<StoredEntity>),
    /// The directory does not hold it.
    Absent,
    /// A bounded store has not loaded it: the directory may hold it.
    Unloaded,
}

impl Default for EntityStore {
    fn default() -> Self {
        Self::with_entities(foldhash::HashMap::default())
    }
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
        Ok(Self::with_entities(entities))
    }

    /// Builds a store from entities already parsed, for example by a benchmark.
    pub fn from_entities(entities: impl IntoIterator<Item = Entity>) -> Self {
        Self::with_entities(entities.into_iter().map(|e| (e.uid(), Arc::new(StoredEntity::new(e)))).collect())
    }

    fn with_entities(entities: foldhash::HashMap<EntityUid, Arc<StoredEntity>>) -> Self {
        Self { entities, cache: None, generation: fresh_generation() }
    }

    /// An empty bounded store: a cache of a larger directory that holds
    /// about `budget` bytes of entities, loaded with [`EntityStore::admit`].
    pub fn bounded(budget: usize) -> Self {
        Self { entities: Default::default(), cache: Some(Cache::new(budget)), generation: fresh_generation() }
    }

    /// Whether this is a bounded store, which does not hold every entity.
    pub fn is_bounded(&self) -> bool {
        self.cache.is_some()
    }

    /// A bounded store's budget and the bytes it is taken to hold now.
    pub fn footprint(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(|cache| (cache.budget(), cache.bytes()))
    }

    /// What the store knows of `uid`.
    pub fn presence(&self, uid: &EntityUid) -> Presence<'_> {
        match (self.entities.get(uid), &self.cache) {
            (Some(stored), _) => {
                stored.touched.touch();
                Presence::Stored(stored)
            }
            (None, None) => Presence::Absent,
            (None, Some(cache)) if cache.is_absent(uid) => Presence::Absent,
            (None, Some(_)) => Presence::Unloaded,
        }
    }

    /// Makes room in a bounded store that is over its budget, before a
    /// load admits more (see [`crate::cache`]).
    pub fn make_room(&mut self) {
        if let Some(cache) = &mut self.cache {
            cache.sweep(&mut self.entities);
        }
    }

    /// Adds an entity loaded from the directory, taken to cost `footprint`
    /// bytes. The directory is unchanged by it, so the generation stays
    /// (see [`crate::cache`]); on a store that is not bounded, it is an
    /// upsert.
    pub fn admit(&mut self, entity: StoredEntity, footprint: usize) {
        let Some(cache) = &mut self.cache else {
            self.upsert_parsed(entity);
            return;
        };
        // Marked as used, so that the next sweep spares it until its decision ran.
        entity.touched.touch();
        let uid = entity.entity.uid();
        cache.count_loaded(&uid, footprint);
        self.entities.insert(uid, Arc::new(entity));
    }

    /// Records that the directory does not hold `uid`.
    pub fn admit_absent(&mut self, uid: EntityUid) {
        if let Some(cache) = &mut self.cache {
            self.entities.remove(&uid);
            cache.count_absent(uid);
        }
    }

    /// Forgets what a bounded store knew of `uids`, because the directory
    /// changed them: the next decision that needs one loads it again.
    pub fn forget<'u>(&mut self, uids: impl IntoIterator<Item = &'u EntityUid>) {
        self.generation = fresh_generation();
        for uid in uids {
            self.entities.remove(uid);
            if let Some(cache) = &mut self.cache {
                cache.forget(uid);
            }
        }
    }

    fn upsert_parsed(&mut self, stored: StoredEntity) {
        self.generation = fresh_generation();
        self.entities.insert(stored.entity.uid(), Arc::new(stored));
    }

    /// Identifies the store's current contents; it changes with every change.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of stored entities (for a bounded store, of those loaded).
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// The uids of the stored entities (for a bounded store, of those
    /// loaded), in no particular order.
    pub fn uids(&self) -> impl Iterator<Item = &EntityUid> {
        self.entities.keys()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The stored entity with this uid, if the store holds it.
    pub fn get(&self, uid: &EntityUid) -> Option<&Arc<StoredEntity>> {
        match self.presence(uid) {
            Presence::Stored(stored) => Some(stored),
            Presence::Absent | Presence::Unloaded => None,
        }
    }

    /// Inserts or replaces one entity. A bounded store forgets the uid
    /// instead: the directory it caches is the truth.
    pub fn upsert(&mut self, entity: Entity) {
        if self.is_bounded() {
            self.forget([&entity.uid()]);
        } else {
            self.upsert_parsed(StoredEntity::new(entity));
        }
    }

    /// Removes one entity; returns whether it was there.
    pub fn remove(&mut self, uid: &EntityUid) -> bool {
        let was_there = self.entities.contains_key(uid);
        self.forget([uid]);
        was_there
    }

    /// Applies a parsed patch: deletes first, then upserts, all at once. A
    /// bounded store forgets every uid the patch names instead.
    pub fn apply(&mut self, patch: ParsedPatch) -> PatchOutcome {
        let upserted = patch.upsert.len();
        if self.is_bounded() {
            let deleted = patch.delete.iter().filter(|uid| self.entities.contains_key(*uid)).count();
            let uids: Vec<EntityUid> =
                patch.upsert.iter().map(|stored| stored.entity.uid()).chain(patch.delete).collect();
            self.forget(&uids);
            return PatchOutcome { upserted, deleted };
        }
        self.generation = fresh_generation();
        let deleted = patch.delete.iter().filter(|uid| self.entities.remove(*uid).is_some()).count();
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
    parse_cedar_entity(value.clone(), schema).map(StoredEntity::new)
}

/// The one check every entity passes, however it arrives: Cedar takes its
/// JSON by value.
fn parse_cedar_entity(value: Value, schema: Option<&Schema>) -> Result<Entity, String> {
    if !value.is_object() {
        return Err("expected an entity object with `uid`, `attrs` and `parents`".into());
    }
    // Cedar's conversion of attribute values, and its evaluation of them, recurse.
    limits::check_entity_json(&value, "").map_err(|e| e.to_string())?;
    Entity::from_json_value(value, schema).map_err(|e| describe(&e))
}

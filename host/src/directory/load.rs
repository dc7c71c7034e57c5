//! Loading the entities a decision needs, on demand, into the replica's
//! bounded cache.
//!
//! The directory may be far larger than a replica's memory, so the copy
//! holds only what recent decisions needed (`--cache-bytes`), and the rest
//! is read from the store when a decision reaches it: the uids a request
//! names are loaded before it is decided, together with everything they
//! refer to, level by level, one query per level; an entity the engine
//! still finds missing (a consent naming an organization, say) is reported
//! by the decision and loaded before it is decided again (see
//! [`crate::pipeline`]).
//!
//! What is loaded must be the state of the revision the copy is at: rows
//! read while another change was being applied would mix two states. So
//! rows are admitted only when the store's revision at the read is the
//! copy's; otherwise the copy catches up first and the read is repeated.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::{Arc, PoisonError};

use consentry_engine::cedar_policy::{EntityUid, Schema};
use consentry_engine::{EntityStore, LoadError, PolicyBundle, Presence, StoredEntity};
use serde_json::Value;

use super::entities::stored_body;
use super::{ChangeError, Directory};

/// The default `--cache-bytes`: enough for tens of thousands of entities.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a loaded entity is taken to cost beyond its JSON text: Cedar's
/// parsed form, the closure remembered for it, and the map's entries.
/// Calibrated against resident memory: with practitioners of 230 bytes of
/// JSON, 21,000 cached entities took 171 MiB, about 8 KB each
/// (`host/benches/directory_size.sh`, `BENCHMARKS.md`).
const FOOTPRINT_BASE: usize = 2048;

/// What each byte of an entity's JSON text is taken to cost once parsed.
const FOOTPRINT_PER_BYTE: usize = 26;

/// How deep a chain of references is followed in one load (a record, its
/// patient, the patient's care team, its hospital…); deeper ones are
/// reported by the decision and loaded by the next load.
const MAX_LEVELS: usize = 16;

/// Entities read per page when every stored entity is checked.
const CHECK_PAGE: u32 = 1000;

/// How often a read is repeated when the store moved on while it ran.
const MAX_RETRIES: usize = 8;

impl Directory {
    /// Loads those of `uids` the copy does not know, and what they refer to.
    pub async fn load_entities(&self, uids: impl IntoIterator<Item = EntityUid>) -> Result<(), ChangeError> {
        // Counted as they pass: a search asks about thousands of uids, and
        // a set of them only for the metric cost more than the lookups.
        let mut asked = 0usize;
        let mut wanted = self.unloaded(uids.into_iter().inspect(|_| asked += 1));
        let misses = wanted.len();
        crate::metrics::cache_lookups(crate::metrics::Cache::Entities, asked.saturating_sub(misses), misses);
        let (mut levels, mut retries) = (0, 0);
        while !wanted.is_empty() && levels < MAX_LEVELS {
            let keys: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (revision, rows) = self.durable.entities_at_one_revision(&keys).await?;
            let bundle = self.bundle();
            let parsed = parse_rows(&rows, bundle.schema())?;
            let admitted = {
                let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
                let current = snapshot.revision == revision && Arc::ptr_eq(&snapshot.bundle, &bundle);
                if current {
                    // Room is made once per load, before its first level:
                    // a sweep between levels could evict what the level
                    // before admitted, before its decision has used it.
                    if levels == 0 {
                        snapshot.store.make_room();
                    }
                    let found: HashSet<EntityUid> =
                        parsed.iter().map(|(entity, _)| entity.entity().uid()).collect();
                    let references: Vec<EntityUid> =
                        parsed.iter().flat_map(|(entity, _)| entity.references().iter().cloned()).collect();
                    for (entity, footprint) in parsed {
                        snapshot.store.admit(entity, footprint);
                    }
                    for uid in wanted.iter().filter(|uid| !found.contains(*uid)) {
                        snapshot.store.admit_absent(uid.clone());
                    }
                    Some(references)
                } else {
                    None
                }
            };
            match admitted {
                Some(references) => {
                    levels += 1;
                    wanted = self.unloaded(references);
                }
                None if retries < MAX_RETRIES => {
                    retries += 1;
                    if revision > self.read().revision {
                        self.catch_up_entities().await?;
                    }
                }
                // The store keeps changing under the read; the decision
                // reports what is still missing and denies.
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Those of `uids` the copy has not loaded, each once.
    fn unloaded(&self, uids: impl IntoIterator<Item = EntityUid>) -> Vec<EntityUid> {
        let snapshot = self.read();
        let mut seen = HashSet::new();
        uids.into_iter()
            .filter(|uid| {
                matches!(snapshot.store.presence(uid), Presence::Unloaded) && seen.insert(uid.clone())
            })
            .collect()
    }

    /// Checks that every stored entity fits the schema of `bundle`, reading
    /// the store page by page, so that what a schema change accepts the
    /// decisions can evaluate; the first that does not is named.
    pub(super) async fn check_stored_entities(&self, bundle: &PolicyBundle) -> Result<(), ChangeError> {
        let schema = Arc::new(bundle.schema().cloned());
        let mut after: Option<String> = None;
        loop {
            let rows = self.durable.entities_page(None, after.as_deref(), CHECK_PAGE).await?;
            let Some((last, _)) = rows.last() else { return Ok(()) };
            after = Some(last.clone());
            let full = rows.len() == CHECK_PAGE as usize;
            let schema = Arc::clone(&schema);
            // Cedar's parse is CPU work: off the async threads.
            tokio::task::spawn_blocking(move || parse_rows(&rows, schema.as_ref().as_ref()).map(drop))
                .await
                .map_err(|e| {
                    LoadError::Entities(format!("the check of the stored entities stopped: {e}"))
                })??;
            if !full {
                return Ok(());
            }
        }
    }

    /// Every stored entity, parsed under the schema in force: for the policy
    /// tests of the policies in force at start-up, which, like every other
    /// run of them, decide over the whole directory, not the bounded copy.
    pub async fn whole_store(&self) -> Result<EntityStore, ChangeError> {
        let bundle = self.bundle();
        self.whole_directory(bundle.schema()).await
    }

    /// Every stored entity, parsed under `schema`, in memory: for the policy
    /// tests gate, whose decisions must see the whole directory.
    pub(super) async fn whole_directory(&self, schema: Option<&Schema>) -> Result<EntityStore, ChangeError> {
        let (_, rows) = self.durable.all_entities().await?;
        let bodies = rows.iter().map(|(uid, body)| stored_body(uid, body)).collect::<Result<Vec<_>, _>>()?;
        Ok(EntityStore::from_json(&Value::Array(bodies), schema)?)
    }

    /// Moves a copy that knows nothing from `since` to `revision`, if it
    /// still knows nothing (a load may have admitted entities meanwhile).
    pub(super) fn move_if_knows_nothing(&self, since: u64, revision: u64) -> bool {
        let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        if knows_nothing(&snapshot.store) && snapshot.revision == since && revision >= since {
            snapshot.revision = revision;
            return true;
        }
        false
    }

    /// Forgets what the copy knew of the uids changed up to `revision`, or
    /// everything when that is more than it holds, and moves it to `revision`.
    pub(super) fn forget_entities(&self, uids: &[String], revision: u64) -> Result<(), LoadError> {
        let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        if uids.len() > snapshot.store.len() {
            snapshot.store = bounded_empty(&snapshot.store);
        } else {
            let parsed = uids
                .iter()
                .map(|uid| {
                    EntityUid::from_str(uid)
                        .map_err(|e| LoadError::Entities(format!("stored uid `{uid}` does not parse: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            snapshot.store.forget(&parsed);
        }
        snapshot.revision = revision;
        Ok(())
    }
}

/// Whether `store` is a bounded copy that holds nothing, not even an absent uid.
pub(super) fn knows_nothing(store: &EntityStore) -> bool {
    store.footprint().is_some_and(|(_, bytes)| bytes == 0)
}

/// An empty bounded copy, with the budget of `store` when it has one.
pub(super) fn bounded_empty(store: &EntityStore) -> EntityStore {
    EntityStore::bounded(store.footprint().map_or(DEFAULT_CACHE_BYTES, |(budget, _)| budget))
}

/// Each stored row parsed under `schema`, with what it is taken to cost.
/// A row the schema in force refuses is a fault of the store: every write
/// was validated, so the decision denies, naming it.
fn parse_rows(
    rows: &[(String, String)],
    schema: Option<&Schema>,
) -> Result<Vec<(StoredEntity, usize)>, LoadError> {
    rows.iter()
        .map(|(uid, body)| {
            let value = stored_body(uid, body)?;
            let entity = StoredEntity::from_json(&value, schema).map_err(|e| {
                LoadError::Entities(format!("stored entity `{uid}` does not fit the schema: {e}"))
            })?;
            Ok((entity, FOOTPRINT_BASE + FOOTPRINT_PER_BYTE * body.len()))
        })
        .collect()
}

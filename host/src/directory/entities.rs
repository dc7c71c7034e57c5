//! Changes of the entity directory: each write is one transaction in the
//! store, one revision, and the copy in memory replays the store's change
//! log in revision order to catch up with it.

use std::collections::HashMap;

use consentry_engine::{EntityPatch, EntityStore, LoadError, PatchOutcome, parse_uid};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::load::{self, bounded_empty};
use super::policies::DIRECTORY_ACTOR;
use super::{ChangeBy, ChangeError, Directory};
use crate::store::{EntityRevision, EntityWrite, StoreError};

/// How many revisions back a load of the policy directory looks for its last import.
const IMPORT_LOOKBACK: u32 = 1000;

/// A change of the stored entities.
#[derive(Debug, Clone)]
pub enum EntityEdit {
    /// Upserts and deletes, all or nothing.
    Patch(EntityPatch),
    /// Every stored entity replaced by this Cedar entity JSON array.
    Replace(Value),
}

/// What an entity change did.
#[derive(Debug, Clone)]
pub struct EntityChanged {
    /// The revision it made.
    pub revision: EntityRevision,
    /// Entities upserted and deleted.
    pub outcome: PatchOutcome,
}

impl Directory {
    /// Validates a change under the schema in force, commits it as one
    /// revision, and catches up with the store.
    pub async fn change_entities(
        &self,
        edit: EntityEdit,
        by: &ChangeBy,
    ) -> Result<EntityChanged, ChangeError> {
        let _change = self.changes.lock().await;
        let bundle = self.bundle();
        let schema = bundle.schema();
        let (writes, replace_all) = match &edit {
            EntityEdit::Patch(patch) => {
                patch.parse(schema)?;
                (patch_writes(patch)?, false)
            }
            EntityEdit::Replace(value) => {
                EntityStore::from_json(value, schema)?;
                let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
                (upserts(items, "")?, true)
            }
        };
        let revision =
            self.durable.write_entities(writes, replace_all, &by.actor, by.comment.as_deref()).await?;
        self.replay_entity_changes().await?;
        let outcome = PatchOutcome {
            upserted: usize::try_from(revision.upserted).unwrap_or(usize::MAX),
            deleted: usize::try_from(revision.deleted).unwrap_or(usize::MAX),
        };
        Ok(EntityChanged { revision, outcome })
    }

    /// Replays the store's entity changes this copy has not seen.
    pub(super) async fn catch_up_entities(&self) -> Result<(), ChangeError> {
        let _change = self.changes.lock().await;
        self.replay_entity_changes().await
    }

    /// Empties the copy and moves it to the store's newest revision: at
    /// start-up, and when changes may have been missed. Decisions then load
    /// what they need (see [`super::load`]), so this takes the same time
    /// whatever the size of the directory.
    pub(super) async fn reload_entities(&self) -> Result<(), ChangeError> {
        let revision = self.durable.entity_revision().await?;
        let emptied = bounded_empty(&self.read().store);
        self.swap(None, Some((emptied, revision)));
        Ok(())
    }

    /// Whether `text` differs from the last `entities.json` imported.
    pub(super) async fn is_new_import(&self, text: &str) -> Result<bool, ChangeError> {
        Ok(self.last_import().await?.as_deref() != Some(import_marker(text).as_str()))
    }

    /// Imports the policy directory's `entities.json` (`items`, its JSON,
    /// already validated), replacing every stored entity, as one revision.
    pub(super) async fn import_entities_json(
        &self,
        text: &str,
        items: &Value,
    ) -> Result<EntityRevision, ChangeError> {
        let marker = import_marker(text);
        // `parsed` was made from `items`, which is therefore an array.
        let writes = upserts(items.as_array().map(Vec::as_slice).unwrap_or_default(), "entities.json")?;
        let revision = self.durable.write_entities(writes, true, DIRECTORY_ACTOR, Some(&marker)).await?;
        tracing::info!(revision = revision.revision, upserted = revision.upserted, "entities.json imported");
        self.reload_entities().await?;
        Ok(revision)
    }

    /// The marker of the last import of `entities.json`, if one is recent enough to find.
    async fn last_import(&self) -> Result<Option<String>, StoreError> {
        let revisions = self.durable.entity_revisions(None, IMPORT_LOOKBACK).await?;
        Ok(revisions.into_iter().find(|r| r.actor == DIRECTORY_ACTOR).and_then(|r| r.comment))
    }

    /// Applies the changes after the copy's revision, in order; the caller
    /// holds the change lock. A bounded copy forgets the entities that
    /// changed (decisions load them again); one that holds every entity
    /// applies them.
    async fn replay_entity_changes(&self) -> Result<(), ChangeError> {
        let (since, bounded, knows_nothing) = {
            let snapshot = self.read();
            (snapshot.revision, snapshot.store.is_bounded(), load::knows_nothing(&snapshot.store))
        };
        if knows_nothing {
            // Nothing to forget: skip reading the changes, which after a
            // large import would be every entity.
            let revision = self.durable.entity_revision().await?;
            if self.move_if_knows_nothing(since, revision) {
                return Ok(());
            }
        }
        // A revision may change nothing (a write of unchanged bodies), so
        // the copy moves to the head read before the changes, not to the
        // last change.
        let head = self.durable.entity_revision().await?;
        if bounded {
            let changed = self.durable.entity_uids_changed_since(since).await?;
            let last = changed.last().map_or(head, |(revision, _)| head.max(*revision));
            let uids: Vec<String> = changed.into_iter().map(|(_, uid)| uid).collect();
            self.forget_entities(&uids, last.max(since))?;
            return Ok(());
        }
        let changes = self.durable.entity_changes_since(since).await?;
        let Some(last) = changes.last().map(|(revision, _, _)| head.max(*revision)) else {
            self.forget_entities(&[], head.max(since))?;
            return Ok(());
        };
        let mut latest: HashMap<String, Option<String>> = HashMap::with_capacity(changes.len());
        for (_, uid, body) in changes {
            latest.insert(uid, body);
        }
        let mut patch = EntityPatch::default();
        for (uid, body) in latest {
            match body {
                Some(body) => patch.upsert.push(stored_body(&uid, &body)?),
                None => patch.delete.push(Value::String(uid)),
            }
        }
        let parsed = patch.parse(self.bundle().schema())?;
        self.apply_entities(parsed, last);
        Ok(())
    }
}

/// The store writes of a patch: its upserts, then its deletes.
fn patch_writes(patch: &EntityPatch) -> Result<Vec<EntityWrite>, LoadError> {
    let mut writes = upserts(&patch.upsert, "upsert")?;
    for (position, item) in patch.delete.iter().enumerate() {
        let uid = parse_uid(item, &format!("delete[{position}]"))
            .map_err(|e| LoadError::Entities(e.to_string()))?;
        writes.push(EntityWrite {
            uid: uid.to_string(),
            entity_type: uid.type_name().to_string(),
            body: None,
        });
    }
    Ok(writes)
}

/// One upsert per entity of Cedar's entity JSON, stored as compact JSON.
fn upserts(items: &[Value], field: &str) -> Result<Vec<EntityWrite>, LoadError> {
    items
        .iter()
        .enumerate()
        .map(|(position, item)| entity_write(item, &format!("{field}[{position}]")))
        .collect()
}

/// The store write that upserts one entity (Cedar's entity JSON, already
/// validated), named `field` in errors.
pub fn entity_write(item: &Value, field: &str) -> Result<EntityWrite, LoadError> {
    let uid =
        parse_uid(&item["uid"], &format!("{field}.uid")).map_err(|e| LoadError::Entities(e.to_string()))?;
    Ok(EntityWrite {
        uid: uid.to_string(),
        entity_type: uid.type_name().to_string(),
        body: Some(item.to_string()),
    })
}

/// A stored entity body as JSON; a body that does not parse is named by its uid.
pub(super) fn stored_body(uid: &str, body: &str) -> Result<Value, LoadError> {
    serde_json::from_str(body)
        .map_err(|e| LoadError::Entities(format!("stored entity `{uid}` is not valid JSON: {e}")))
}

/// What an import of `entities.json` records as its comment, to know the file when it comes again.
fn import_marker(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("entities.json sha256:{hex}")
}

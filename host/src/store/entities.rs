//! The entity directory: the Cedar entities decisions are made about, shared
//! by every replica.
//!
//! The store keeps the directory as it is now (one row per entity, so a
//! replica can load it whole or page through it) and, beside it, the log of
//! every change. Each write is one numbered revision, committed whole, and
//! revisions commit in order, so a replica that has seen revision N catches
//! up by replaying the changes after N instead of reloading a million
//! entities. The log is also the directory's history: it is only appended
//! to.

use sqlx::{Postgres, Sqlite, Transaction};
use tokio::sync::MutexGuard;

use super::entity_sql::EntitySql;

/// Uids per statement of [`DurableStore::entities_at_one_revision`].
pub const ENTITIES_PER_READ: usize = 500;
use super::{Backend, DurableStore, StoreChange, StoreError, postgres};

/// One entity to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityWrite {
    /// The Cedar uid, as `EntityUid::to_string()` gives it
    /// (`Practitioner::"dr-ali"`).
    pub uid: String,
    /// The uid's entity type (`Practitioner`).
    pub entity_type: String,
    /// The Cedar entity JSON of this one entity; `None` deletes it.
    pub body: Option<String>,
}

/// One write of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRevision {
    /// 1 for the first write, then 2, 3…
    pub revision: u64,
    /// Who wrote it: a token name, or `directory`.
    pub actor: String,
    /// Why, in the actor's words.
    pub comment: Option<String>,
    /// How many entities it added or changed (an entity written with the
    /// body it already had is not counted, nor logged).
    pub upserted: u64,
    /// How many entities it deleted.
    pub deleted: u64,
    /// Whether it replaced the whole directory.
    pub replaced_all: bool,
    /// When it was written, in milliseconds since the Unix epoch.
    pub recorded_at_unix_ms: i64,
}

/// One revision written in parts, for a write too large to hold whole
/// (`consentry entities import`): its transaction stays open from
/// [`DurableStore::begin_entity_import`] to [`EntityImport::commit`], so
/// nothing of it is seen, nor kept, before; dropping it rolls it back.
/// On SQLite it holds this process's turn to write all along.
#[derive(Debug)]
pub struct EntityImport<'s> {
    store: &'s DurableStore,
    revision: i64,
    deleted: u64,
    transaction: ImportTransaction<'s>,
}

#[derive(Debug)]
enum ImportTransaction<'s> {
    Sqlite(MutexGuard<'s, ()>, Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl EntityImport<'_> {
    /// Adds `writes` to the revision, after the parts before: the last
    /// write of a uid counts, as in [`DurableStore::write_entities`]. The
    /// change log keeps one change per uid and revision, so an entity
    /// deleted in one part cannot be written in a later one (the commit
    /// fails); and one changed in a part and changed back in a later one
    /// is logged as changed.
    pub async fn write(&mut self, writes: Vec<EntityWrite>) -> Result<(), StoreError> {
        self.deleted += match &mut self.transaction {
            ImportTransaction::Sqlite(_, tx) => {
                EntitySql::<Sqlite>::write_part(tx, self.revision, writes).await?
            }
            ImportTransaction::Postgres(tx) => {
                EntitySql::<Postgres>::write_part(tx, self.revision, writes).await?
            }
        };
        Ok(())
    }

    /// Logs and records the revision, and commits it; announces
    /// [`StoreChange::Entities`].
    pub async fn commit(self, actor: &str, comment: Option<&str>) -> Result<EntityRevision, StoreError> {
        let Self { store, revision, deleted, transaction } = self;
        let written = match transaction {
            ImportTransaction::Sqlite(_turn, mut tx) => {
                let written =
                    EntitySql::<Sqlite>::finish(&mut tx, revision, deleted, false, actor, comment).await?;
                tx.commit().await?;
                written
            }
            ImportTransaction::Postgres(mut tx) => {
                let written =
                    EntitySql::<Postgres>::finish(&mut tx, revision, deleted, false, actor, comment).await?;
                postgres::notify_number(&mut tx, postgres::ENTITIES_CHANNEL, written.revision).await?;
                tx.commit().await?;
                written
            }
        };
        store.tell(StoreChange::Entities { revision: written.revision });
        Ok(written)
    }
}

impl DurableStore {
    /// Opens the transaction of a revision written in parts (see
    /// [`EntityImport`]) and claims its number.
    pub async fn begin_entity_import(&self) -> Result<EntityImport<'_>, StoreError> {
        let (revision, transaction) = match &self.backend {
            Backend::Sqlite(store) => {
                let (turn, mut tx) = store.begin_write().await?;
                (EntitySql::<Sqlite>::begin(&mut tx).await?, ImportTransaction::Sqlite(turn, tx))
            }
            Backend::Postgres(store) => {
                let mut tx = store.pool.begin().await?;
                (EntitySql::<Postgres>::begin(&mut tx).await?, ImportTransaction::Postgres(tx))
            }
        };
        Ok(EntityImport { store: self, revision, deleted: 0, transaction })
    }

    /// Writes one revision in one transaction. With `replace_all`, every
    /// stored entity that `writes` does not upsert is deleted too (and
    /// logged as deleted). When a uid is written more than once, its last
    /// write counts. Deleting an absent uid is not an error and is not
    /// counted; writing an entity with the body it already has changes
    /// nothing. Committed before it returns; announces
    /// [`StoreChange::Entities`].
    pub async fn write_entities(
        &self,
        writes: Vec<EntityWrite>,
        replace_all: bool,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<EntityRevision, StoreError> {
        let written = crate::metrics::store_operation("entities_write", async {
            Ok::<_, StoreError>(match &self.backend {
                Backend::Sqlite(store) => {
                    let (_turn, mut tx) = store.begin_write().await?;
                    let written =
                        EntitySql::<Sqlite>::write(&mut tx, writes, replace_all, actor, comment).await?;
                    tx.commit().await?;
                    written
                }
                Backend::Postgres(store) => {
                    let mut tx = store.pool.begin().await?;
                    let written =
                        EntitySql::<Postgres>::write(&mut tx, writes, replace_all, actor, comment).await?;
                    postgres::notify_number(&mut tx, postgres::ENTITIES_CHANNEL, written.revision).await?;
                    tx.commit().await?;
                    written
                }
            })
        })
        .await?;
        self.tell(StoreChange::Entities { revision: written.revision });
        Ok(written)
    }

    /// The newest revision, 0 when nothing was ever written.
    pub async fn entity_revision(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::revision(&store.pool).await,
            Backend::Postgres(store) => EntitySql::revision(&store.pool).await,
        }
    }

    /// Every stored entity as `(uid, body)`, ordered by uid, and the
    /// revision they are the state of: all read at one instant.
    pub async fn all_entities(&self) -> Result<(u64, Vec<(String, String)>), StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::all(&store.pool).await,
            Backend::Postgres(store) => EntitySql::all(&store.pool).await,
        }
    }

    /// The changes made after `revision`, oldest first (by revision, then
    /// uid): `(revision, uid, body)`, with no body for a deletion. Applied
    /// in order to the state at `revision`, they give the state now.
    pub async fn entity_changes_since(
        &self,
        revision: u64,
    ) -> Result<Vec<(u64, String, Option<String>)>, StoreError> {
        let Ok(revision) = i64::try_from(revision) else {
            // No store reaches that revision, so nothing came after it.
            return Ok(Vec::new());
        };
        crate::metrics::store_operation("entity_changes", async {
            match &self.backend {
                Backend::Sqlite(store) => EntitySql::changes_since(&store.pool, revision).await,
                Backend::Postgres(store) => EntitySql::changes_since(&store.pool, revision).await,
            }
        })
        .await
    }

    /// The stored rows of `uids` as `(uid, body)`, and the revision they
    /// are the state of; a uid with no row is not stored. Read in
    /// statements of at most [`ENTITIES_PER_READ`] uids, each with its own
    /// revision: when those differ (a write came between), the read is
    /// repeated, so that every row is of one revision.
    pub async fn entities_at_one_revision(
        &self,
        uids: &[&str],
    ) -> Result<(u64, Vec<(String, String)>), StoreError> {
        crate::metrics::store_operation("entities_read", self.entities_read(uids)).await
    }

    async fn entities_read(&self, uids: &[&str]) -> Result<(u64, Vec<(String, String)>), StoreError> {
        loop {
            let mut revisions = Vec::new();
            let mut rows = Vec::with_capacity(uids.len());
            for chunk in uids.chunks(ENTITIES_PER_READ) {
                let (revision, mut some) = match &self.backend {
                    Backend::Sqlite(store) => EntitySql::some(&store.pool, chunk).await?,
                    Backend::Postgres(store) => EntitySql::some(&store.pool, chunk).await?,
                };
                revisions.push(revision);
                rows.append(&mut some);
            }
            match revisions.as_slice() {
                [] => return Ok((self.entity_revision().await?, rows)),
                [first, rest @ ..] if rest.iter().all(|r| r == first) => return Ok((*first, rows)),
                _ => {}
            }
        }
    }

    /// The uids changed after `revision`, oldest change first: what a
    /// cache that holds the state at `revision` must forget.
    pub async fn entity_uids_changed_since(&self, revision: u64) -> Result<Vec<(u64, String)>, StoreError> {
        let Ok(revision) = i64::try_from(revision) else { return Ok(Vec::new()) };
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::changed_since(&store.pool, revision).await,
            Backend::Postgres(store) => EntitySql::changed_since(&store.pool, revision).await,
        }
    }

    /// How many entities are stored.
    pub async fn entity_count(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::count(&store.pool).await,
            Backend::Postgres(store) => EntitySql::count(&store.pool).await,
        }
    }

    /// The body of the entity with this uid, if it exists.
    pub async fn entity(&self, uid: &str) -> Result<Option<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::one(&store.pool, uid).await,
            Backend::Postgres(store) => EntitySql::one(&store.pool, uid).await,
        }
    }

    /// A page of `(uid, body)` in uid order (byte-wise), of one entity type
    /// when given: the entities whose uid comes after `after`, at most
    /// `limit` of them.
    pub async fn entities_page(
        &self,
        entity_type: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let after = after.unwrap_or("");
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::page(&store.pool, entity_type, after, limit.into()).await,
            Backend::Postgres(store) => EntitySql::page(&store.pool, entity_type, after, limit.into()).await,
        }
    }

    /// A page of the uids of `entity_type`, in uid order (byte-wise): those
    /// after `after`, at most `limit`. A search's candidates.
    pub async fn entity_uids(
        &self,
        entity_type: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                EntitySql::uids_of_type(&store.pool, entity_type, after, limit.into()).await
            }
            Backend::Postgres(store) => {
                EntitySql::uids_of_type(&store.pool, entity_type, after, limit.into()).await
            }
        }
    }

    /// A page of the uids of `entity_type` that have `parent` (type and
    /// id) among their parents, in uid order: those after `after`, at most
    /// `limit`. The records of one patient, for a search.
    pub async fn child_uids(
        &self,
        parent: (&str, &str),
        entity_type: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => {
                EntitySql::uids_below(&store.pool, parent, entity_type, after, limit.into()).await
            }
            Backend::Postgres(store) => {
                EntitySql::uids_below(&store.pool, parent, entity_type, after, limit.into()).await
            }
        }
    }

    /// The revisions, newest first: only those below `before` when given,
    /// at most `limit` of them.
    pub async fn entity_revisions(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<EntityRevision>, StoreError> {
        let before = before.map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
        match &self.backend {
            Backend::Sqlite(store) => EntitySql::revisions(&store.pool, before, limit.into()).await,
            Backend::Postgres(store) => EntitySql::revisions(&store.pool, before, limit.into()).await,
        }
    }
}

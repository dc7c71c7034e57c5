//! The entity SQL, the same on SQLite and PostgreSQL, written once over any
//! sqlx database (as in `reads.rs`).
//!
//! A write must stay fast for a directory of a million entities, so rows
//! travel in multi-row statements of [`CHUNK`] entities (`$N` parameters,
//! or `?` on SQLite, see `SharedSql::push_parameter`), and the change log
//! is filled inside the database: the upsert stamps each row it really
//! changes with the new revision, and one `INSERT … SELECT` copies the rows
//! carrying that stamp into the log, instead of sending every body twice.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::entities::{EntityRevision, EntityWrite};
use super::shared_sql::{SharedSql, claim};
use super::{StoreError, now_unix_ms};

/// How many entities one multi-row statement carries: 4 parameters each
/// stays far below both databases' limits.
const CHUNK: usize = 1000;

/// An `entity_revisions` row: `revision, actor, comment, upserted, deleted,
/// replaced_all, recorded_at_unix_ms`.
type RevisionRow = (i64, String, Option<String>, i64, i64, bool, i64);

/// The entity SQL over database `DB`: writes on a connection whose
/// transaction the backend opened, reads on its pool.
pub(super) struct EntitySql<DB>(PhantomData<DB>);

impl<DB> EntitySql<DB>
where
    DB: SharedSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Claims the next revision and applies `writes` (see
    /// `DurableStore::write_entities`).
    pub(super) async fn write(
        connection: &mut DB::Connection,
        writes: Vec<EntityWrite>,
        replace_all: bool,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<EntityRevision, StoreError> {
        let revision = Self::begin(&mut *connection).await?;
        let (upserts, deletes) = last_write_of_each_uid(writes);
        let mut deleted =
            delete::<DB>(&mut *connection, revision, deletes.iter().map(String::as_str)).await?;
        upsert::<DB>(&mut *connection, revision, &upserts).await?;
        if replace_all {
            let kept: HashSet<&str> = upserts.iter().map(|(uid, _, _)| uid.as_str()).collect();
            let others: Vec<String> = sqlx::query_scalar("SELECT uid FROM entities WHERE revision <> $1")
                .bind(revision)
                .fetch_all(&mut *connection)
                .await?;
            let stale = others.iter().map(String::as_str).filter(|uid| !kept.contains(uid));
            deleted += delete::<DB>(&mut *connection, revision, stale).await?;
        }
        Self::finish(connection, revision, deleted, replace_all, actor, comment).await
    }

    /// Claims the next revision, for a write made of parts
    /// ([`Self::write_part`], then [`Self::finish`]) in one transaction.
    pub(super) async fn begin(connection: &mut DB::Connection) -> Result<i64, StoreError> {
        claim::<DB>(connection, "entity_revision").await
    }

    /// Applies one part of revision `revision`: the last write of each uid
    /// in it counts, and it comes after the parts before. Returns how many
    /// entities it deleted.
    pub(super) async fn write_part(
        connection: &mut DB::Connection,
        revision: i64,
        writes: Vec<EntityWrite>,
    ) -> Result<u64, StoreError> {
        let (upserts, deletes) = last_write_of_each_uid(writes);
        let deleted = delete::<DB>(&mut *connection, revision, deletes.iter().map(String::as_str)).await?;
        upsert::<DB>(connection, revision, &upserts).await?;
        Ok(deleted)
    }

    /// Logs the entities revision `revision` changed and records the
    /// revision: the last statements of its transaction.
    pub(super) async fn finish(
        connection: &mut DB::Connection,
        revision: i64,
        deleted: u64,
        replace_all: bool,
        actor: &str,
        comment: Option<&str>,
    ) -> Result<EntityRevision, StoreError> {
        let logged = sqlx::query(
            "INSERT INTO entity_changes (revision, uid, body) \
             SELECT revision, uid, body FROM entities WHERE revision = $1",
        )
        .bind(revision)
        .execute(&mut *connection)
        .await?;
        let upserted = DB::rows_affected(&logged);
        // The change log now names every entity this revision wrote or
        // deleted: their old edges go, and those of the written ones are read anew.
        sqlx::query(
            "DELETE FROM entity_parents WHERE uid IN (SELECT uid FROM entity_changes WHERE revision = $1)",
        )
        .bind(revision)
        .execute(&mut *connection)
        .await?;
        sqlx::query(DB::PARENT_EDGES).bind(revision).execute(&mut *connection).await?;
        let recorded_at_unix_ms = now_unix_ms();
        sqlx::query(
            "INSERT INTO entity_revisions \
             (revision, actor, comment, upserted, deleted, replaced_all, recorded_at_unix_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(revision)
        .bind(actor)
        .bind(comment)
        .bind(count(upserted))
        .bind(count(deleted))
        .bind(replace_all)
        .bind(recorded_at_unix_ms)
        .execute(&mut *connection)
        .await?;
        Ok(EntityRevision {
            revision: revision.unsigned_abs(),
            actor: actor.to_owned(),
            comment: comment.map(str::to_owned),
            upserted,
            deleted,
            replaced_all: replace_all,
            recorded_at_unix_ms,
        })
    }

    pub(super) async fn revision(pool: &Pool<DB>) -> Result<u64, StoreError> {
        let revision: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM entity_revisions")
            .fetch_one(pool)
            .await?;
        revision_number(revision)
    }

    /// One statement, so one snapshot on both backends: the revision and
    /// the rows cannot come from either side of a concurrent write. With no
    /// entity, the outer join still yields the revision, in one row
    /// without uid.
    pub(super) async fn all(pool: &Pool<DB>) -> Result<(u64, Vec<(String, String)>), StoreError> {
        let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT head.revision, e.uid, e.body \
             FROM (SELECT COALESCE(MAX(revision), 0) AS revision FROM entity_revisions) head \
             LEFT JOIN entities e ON 1 = 1 ORDER BY e.uid",
        )
        .fetch_all(pool)
        .await?;
        let revision = rows.first().map_or(0, |(revision, _, _)| *revision);
        let entities = rows.into_iter().filter_map(|(_, uid, body)| Some((uid?, body?))).collect::<Vec<_>>();
        Ok((revision_number(revision)?, entities))
    }

    /// The rows of `uids` (at most [`CHUNK`]) and the revision they are
    /// the state of, in one statement (see [`EntitySql::all`]).
    pub(super) async fn some(
        pool: &Pool<DB>,
        uids: &[&str],
    ) -> Result<(u64, Vec<(String, String)>), StoreError> {
        let mut sql = String::from(
            "SELECT head.revision, e.uid, e.body \
             FROM (SELECT COALESCE(MAX(revision), 0) AS revision FROM entity_revisions) head \
             LEFT JOIN entities e ON e.uid IN (",
        );
        push_parameters::<DB>(&mut sql, 1, uids.len());
        sql.push(')');
        let mut query = sqlx::query_as::<_, (i64, Option<String>, Option<String>)>(&sql);
        for uid in uids {
            query = query.bind(*uid);
        }
        let rows = query.fetch_all(pool).await?;
        let revision = rows.first().map_or(0, |(revision, _, _)| *revision);
        let entities = rows.into_iter().filter_map(|(_, uid, body)| Some((uid?, body?))).collect();
        Ok((revision_number(revision)?, entities))
    }

    /// The uids changed after `revision`, with the revision of each change.
    pub(super) async fn changed_since(
        pool: &Pool<DB>,
        revision: i64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT revision, uid FROM entity_changes WHERE revision > $1 ORDER BY revision, uid",
        )
        .bind(revision)
        .fetch_all(pool)
        .await?;
        rows.into_iter().map(|(revision, uid)| Ok((revision_number(revision)?, uid))).collect()
    }

    pub(super) async fn count(pool: &Pool<DB>) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM entities").fetch_one(pool).await?;
        Ok(count.unsigned_abs())
    }

    pub(super) async fn changes_since(
        pool: &Pool<DB>,
        revision: i64,
    ) -> Result<Vec<(u64, String, Option<String>)>, StoreError> {
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT revision, uid, body FROM entity_changes WHERE revision > $1 ORDER BY revision, uid",
        )
        .bind(revision)
        .fetch_all(pool)
        .await?;
        rows.into_iter().map(|(revision, uid, body)| Ok((revision_number(revision)?, uid, body))).collect()
    }

    pub(super) async fn one(pool: &Pool<DB>, uid: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT body FROM entities WHERE uid = $1")
            .bind(uid)
            .fetch_optional(pool)
            .await?)
    }

    pub(super) async fn page(
        pool: &Pool<DB>,
        entity_type: Option<&str>,
        after: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // Two statements rather than `$1 IS NULL OR …`, so that each has a
        // plan that walks its index.
        let rows = match entity_type {
            None => {
                sqlx::query_as("SELECT uid, body FROM entities WHERE uid > $1 ORDER BY uid LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            Some(entity_type) => {
                sqlx::query_as(
                    "SELECT uid, body FROM entities WHERE entity_type = $1 AND uid > $2 \
                     ORDER BY uid LIMIT $3",
                )
                .bind(entity_type)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// Uids of one entity type after `after`, in byte order, at most `limit`.
    pub(super) async fn uids_of_type(
        pool: &Pool<DB>,
        entity_type: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT {} FROM (SELECT uid FROM entities WHERE entity_type = $1 AND uid > $2 ORDER BY uid LIMIT $3) page",
            DB::JOIN_LINES
        );
        let joined: Option<String> =
            sqlx::query_scalar(&sql).bind(entity_type).bind(after).bind(limit).fetch_one(pool).await?;
        Ok(lines(joined))
    }

    /// Uids of one entity type whose parents include `parent_type::parent_id`,
    /// after `after`, in byte order, at most `limit`.
    pub(super) async fn uids_below(
        pool: &Pool<DB>,
        (parent_type, parent_id): (&str, &str),
        entity_type: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT {} FROM (SELECT uid FROM entity_parents WHERE parent_type = $1 AND parent_id = $2 \
             AND entity_type = $3 AND uid > $4 ORDER BY uid LIMIT $5) page",
            DB::JOIN_LINES
        );
        let joined: Option<String> = sqlx::query_scalar(&sql)
            .bind(parent_type)
            .bind(parent_id)
            .bind(entity_type)
            .bind(after)
            .bind(limit)
            .fetch_one(pool)
            .await?;
        Ok(lines(joined))
    }

    pub(super) async fn revisions(
        pool: &Pool<DB>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<EntityRevision>, StoreError> {
        let rows: Vec<RevisionRow> = sqlx::query_as(
            "SELECT revision, actor, comment, upserted, deleted, replaced_all, recorded_at_unix_ms \
             FROM entity_revisions WHERE revision < $1 ORDER BY revision DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(revision, actor, comment, upserted, deleted, replaced_all, recorded_at_unix_ms)| {
                Ok(EntityRevision {
                    revision: revision_number(revision)?,
                    actor,
                    comment,
                    upserted: upserted.unsigned_abs(),
                    deleted: deleted.unsigned_abs(),
                    replaced_all,
                    recorded_at_unix_ms,
                })
            })
            .collect()
    }
}

/// Writes `upserts` `(uid, entity_type, body)`, at most one per uid,
/// stamping each row it really changes with `revision`.
async fn upsert<DB>(
    connection: &mut DB::Connection,
    revision: i64,
    upserts: &[(String, String, String)],
) -> Result<(), StoreError>
where
    DB: SharedSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    for chunk in upserts.chunks(CHUNK) {
        // Every row binds the revision again: parameters must appear in
        // order (see `SharedSql::push_parameter`).
        let mut sql = String::with_capacity(64 + 24 * 4 * chunk.len());
        sql.push_str("INSERT INTO entities (uid, entity_type, body, revision) VALUES ");
        for row in 0..chunk.len() {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            push_parameters::<DB>(&mut sql, 4 * row + 1, 4);
            sql.push(')');
        }
        // An unchanged entity keeps its revision: it is neither logged
        // nor counted.
        sql.push_str(
            " ON CONFLICT (uid) DO UPDATE SET entity_type = excluded.entity_type, \
             body = excluded.body, revision = excluded.revision \
             WHERE entities.body <> excluded.body OR entities.entity_type <> excluded.entity_type",
        );
        let mut query = sqlx::query(&sql);
        for (uid, entity_type, body) in chunk {
            query = query.bind(uid.as_str()).bind(entity_type.as_str()).bind(body.as_str()).bind(revision);
        }
        query.execute(&mut *connection).await?;
    }
    Ok(())
}

/// Deletes the entities of `uids` that exist, logging each deletion under
/// `revision`; returns how many there were.
async fn delete<'u, DB>(
    connection: &mut DB::Connection,
    revision: i64,
    uids: impl Iterator<Item = &'u str>,
) -> Result<u64, StoreError>
where
    DB: SharedSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
{
    let uids: Vec<&str> = uids.collect();
    let mut deleted = 0;
    for chunk in uids.chunks(CHUNK) {
        // The revision, then the uids.
        let mut log = String::from("INSERT INTO entity_changes (revision, uid, body) SELECT ");
        DB::push_parameter(&mut log, 1);
        log.push_str(", uid, NULL FROM entities WHERE uid IN (");
        push_parameters::<DB>(&mut log, 2, chunk.len());
        log.push(')');
        let mut query = sqlx::query(&log).bind(revision);
        for uid in chunk {
            query = query.bind(*uid);
        }
        query.execute(&mut *connection).await?;
        let mut remove = String::from("DELETE FROM entities WHERE uid IN (");
        push_parameters::<DB>(&mut remove, 1, chunk.len());
        remove.push(')');
        let mut query = sqlx::query(&remove);
        for uid in chunk {
            query = query.bind(*uid);
        }
        deleted += DB::rows_affected(&query.execute(&mut *connection).await?);
    }
    Ok(deleted)
}

/// Appends `count` parameters, numbered from `first`, separated by commas.
fn push_parameters<DB: SharedSql>(sql: &mut String, first: usize, count: usize) {
    for n in first..first + count {
        if n > first {
            sql.push_str(", ");
        }
        DB::push_parameter(sql, n);
    }
}

/// Splits `writes` into upserts `(uid, entity_type, body)` and deleted
/// uids, keeping only the last write of each uid: a database statement may
/// not touch the same row twice.
fn last_write_of_each_uid(writes: Vec<EntityWrite>) -> (Vec<(String, String, String)>, Vec<String>) {
    let last: HashMap<&str, usize> =
        writes.iter().enumerate().map(|(index, write)| (write.uid.as_str(), index)).collect();
    let keep: Vec<bool> = writes
        .iter()
        .enumerate()
        .map(|(index, write)| last.get(write.uid.as_str()) == Some(&index))
        .collect();
    drop(last);
    let mut upserts = Vec::with_capacity(writes.len());
    let mut deletes = Vec::new();
    for (write, keep) in writes.into_iter().zip(keep) {
        match (keep, write.body) {
            (false, _) => {}
            (true, Some(body)) => upserts.push((write.uid, write.entity_type, body)),
            (true, None) => deletes.push(write.uid),
        }
    }
    (upserts, deletes)
}

/// The uids of a page, joined by newlines in one value: a search lists
/// thousands, and each row costs more to hand over than its uid. A uid's
/// text never holds a newline (Cedar escapes it in the id), so the lines
/// are the uids, sorted here since the join keeps no order.
fn lines(joined: Option<String>) -> Vec<String> {
    let mut uids: Vec<String> = joined.iter().flat_map(|text| text.lines()).map(str::to_owned).collect();
    uids.sort_unstable();
    uids
}

/// A row count as stored: counts never reach `i64::MAX`.
fn count(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// A stored revision number, checked not to be negative.
fn revision_number(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(|_| StoreError::CorruptRecord {
        record: format!("entity revision {stored}"),
        reason: "its number is negative".to_owned(),
    })
}

//! What the SQL shared by both backends needs beyond sqlx's generic traits,
//! and the counters both policy versions and entity revisions are claimed
//! from.

use std::fmt::Write as _;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Postgres, Sqlite, Type};

use super::StoreError;

/// A database the shared SQL runs on: SQLite or PostgreSQL.
pub(super) trait SharedSql: Database {
    /// How many rows a statement inserted, updated or deleted (sqlx has no
    /// generic accessor).
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Appends bind parameter `n` (from 1) to `sql`, for a statement whose
    /// parameters appear in the order they are numbered. SQLite finds a
    /// numbered parameter's name by walking the list of all of them, so
    /// binding a multi-row statement of thousands of `$N` took time
    /// quadratic in their count; an anonymous `?` is bound by position.
    fn push_parameter(sql: &mut String, n: usize);

    /// Adds the parent edges of the entities revision `$1` wrote, read from
    /// their JSON (see the `entity_parents` migration).
    const PARENT_EDGES: &'static str;

    /// The aggregate that joins the `uid` column of a page into one value, one uid a line.
    const JOIN_LINES: &'static str;
}

impl SharedSql for Sqlite {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_parameter(sql: &mut String, _n: usize) {
        sql.push('?');
    }

    const PARENT_EDGES: &'static str = "INSERT OR IGNORE INTO entity_parents (parent_type, parent_id, entity_type, uid) \
         SELECT parent_type, parent_id, entity_type, uid FROM ( \
           SELECT COALESCE(json_extract(p.value, '$.__entity.type'), json_extract(p.value, '$.type')) AS parent_type, \
                  COALESCE(json_extract(p.value, '$.__entity.id'), json_extract(p.value, '$.id')) AS parent_id, \
                  e.entity_type AS entity_type, e.uid AS uid \
           FROM entities e, json_each(e.body, '$.parents') p WHERE e.revision = $1 \
         ) WHERE parent_type IS NOT NULL AND parent_id IS NOT NULL";

    const JOIN_LINES: &'static str = "group_concat(uid, char(10))";
}

impl SharedSql for Postgres {
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_parameter(sql: &mut String, n: usize) {
        let _ = write!(sql, "${n}");
    }

    const PARENT_EDGES: &'static str = "INSERT INTO entity_parents (parent_type, parent_id, entity_type, uid) \
         SELECT parent_type, parent_id, entity_type, uid FROM ( \
           SELECT COALESCE(p -> '__entity' ->> 'type', p ->> 'type') AS parent_type, \
                  COALESCE(p -> '__entity' ->> 'id', p ->> 'id') AS parent_id, e.entity_type, e.uid \
           FROM entities e CROSS JOIN LATERAL jsonb_array_elements( \
             CASE WHEN jsonb_typeof(e.body::jsonb -> 'parents') = 'array' \
             THEN e.body::jsonb -> 'parents' ELSE '[]'::jsonb END) p \
           WHERE e.revision = $1 \
         ) edges WHERE parent_type IS NOT NULL AND parent_id IS NOT NULL ON CONFLICT DO NOTHING";

    const JOIN_LINES: &'static str = "string_agg(uid, E'\\n')";
}

/// Increments counter `name` of `store_counters` and returns its new value.
/// On PostgreSQL the row stays locked until the transaction ends, so that
/// concurrent writers on any replica take numbers one after the other, and
/// numbers commit in order.
pub(super) async fn claim<DB>(connection: &mut DB::Connection, name: &str) -> Result<i64, StoreError>
where
    DB: SharedSql,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
{
    let claimed: Option<i64> =
        sqlx::query_scalar("UPDATE store_counters SET value = value + 1 WHERE name = $1 RETURNING value")
            .bind(name)
            .fetch_optional(connection)
            .await?;
    let reason = match claimed {
        Some(value) if value >= 1 => return Ok(value),
        Some(value) => format!("it went to {value}"),
        None => "it is missing".to_owned(),
    };
    Err(StoreError::CorruptRecord { record: format!("counter `{name}`"), reason })
}

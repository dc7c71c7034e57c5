//! Policy versions: every policy bundle (schema, policies, template links,
//! special categories) ever put in force, numbered 1, 2, 3…
//!
//! The store, not any replica's files or memory, says which policies are in
//! force: the newest version. Versions are only ever added, so a rollback
//! is a new version repeating an older one's content, and what was in force
//! at any time stays on record. A writer may say which version it based its
//! change on (`if_current`), so that two administrators changing the
//! policies at once cannot silently overwrite each other.
//!
//! The SQL is the same on both backends and is written once, over any sqlx
//! database (as in `reads.rs`); only opening the write transaction and
//! notifying other replicas differ.

use std::marker::PhantomData;

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::shared_sql::{SharedSql, claim};
use super::{Backend, DurableStore, StoreChange, StoreError, now_unix_ms, postgres};

/// Why a policy version was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrigin {
    /// Through the admin API.
    Api,
    /// Loaded from the policy directory.
    Directory,
    /// A rollback, repeating the content of version `from`.
    Rollback {
        /// The version whose content was restored.
        from: u64,
    },
}

/// A policy version to store (already validated by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewPolicyVersion {
    /// The bundle's content hash.
    pub hash: String,
    /// The Cedar schema, if any.
    pub schema: Option<String>,
    /// Whether `schema` is Cedar's JSON schema format (else its text format).
    pub schema_is_json: bool,
    /// The Cedar policies, as text.
    pub policies: String,
    /// The template links, a JSON array.
    pub links: serde_json::Value,
    /// The special categories, if the bundle has any.
    pub special: Option<serde_json::Value>,
    /// Why this version is stored.
    pub origin: VersionOrigin,
    /// Who stored it: a token name, or `directory`.
    pub actor: String,
    /// Why, in the actor's words.
    pub comment: Option<String>,
}

/// One stored policy version.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    /// 1 for the first version, then 2, 3…
    pub version: u64,
    /// The bundle's content hash.
    pub hash: String,
    /// The Cedar schema, if any.
    pub schema: Option<String>,
    /// Whether `schema` is Cedar's JSON schema format.
    pub schema_is_json: bool,
    /// The Cedar policies, as text.
    pub policies: String,
    /// The template links, a JSON array.
    pub links: serde_json::Value,
    /// The special categories, if the bundle has any.
    pub special: Option<serde_json::Value>,
    /// Why this version was stored.
    pub origin: VersionOrigin,
    /// Who stored it.
    pub actor: String,
    /// Why, in the actor's words.
    pub comment: Option<String>,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub recorded_at_unix_ms: i64,
}

/// A policy version without its content, for listing history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionSummary {
    /// The version number.
    pub version: u64,
    /// The bundle's content hash.
    pub hash: String,
    /// Why this version was stored.
    pub origin: VersionOrigin,
    /// Who stored it.
    pub actor: String,
    /// Why, in the actor's words.
    pub comment: Option<String>,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub recorded_at_unix_ms: i64,
}

impl DurableStore {
    /// Appends the next version in one transaction. With
    /// `if_current = Some(hash)`, fails with [`StoreError::Stale`] (and
    /// stores nothing) unless the newest version has exactly that hash; an
    /// empty store has none, so any `Some(..)` is stale then. Committed
    /// before it returns; announces [`StoreChange::Policies`].
    pub async fn append_policy_version(
        &self,
        new: NewPolicyVersion,
        if_current: Option<&str>,
    ) -> Result<PolicyVersion, StoreError> {
        let stored = crate::metrics::store_operation("policy_version_append", async {
            Ok::<_, StoreError>(match &self.backend {
                Backend::Sqlite(store) => {
                    let (_turn, mut tx) = store.begin_write().await?;
                    let stored = PolicySql::<sqlx::Sqlite>::append(&mut tx, new, if_current).await?;
                    tx.commit().await?;
                    stored
                }
                Backend::Postgres(store) => {
                    let mut tx = store.pool.begin().await?;
                    let stored = PolicySql::<sqlx::Postgres>::append(&mut tx, new, if_current).await?;
                    postgres::notify_number(&mut tx, postgres::POLICIES_CHANNEL, stored.version).await?;
                    tx.commit().await?;
                    stored
                }
            })
        })
        .await?;
        self.tell(StoreChange::Policies { version: stored.version });
        Ok(stored)
    }

    /// The newest version: the policies in force.
    pub async fn current_policy_version(&self) -> Result<Option<PolicyVersion>, StoreError> {
        crate::metrics::store_operation("policy_version_current", async {
            match &self.backend {
                Backend::Sqlite(store) => PolicySql::current(&store.pool).await,
                Backend::Postgres(store) => PolicySql::current(&store.pool).await,
            }
        })
        .await
    }

    /// Version `version`, if it exists.
    pub async fn policy_version(&self, version: u64) -> Result<Option<PolicyVersion>, StoreError> {
        let Ok(version) = i64::try_from(version) else {
            // No store holds that many versions.
            return Ok(None);
        };
        match &self.backend {
            Backend::Sqlite(store) => PolicySql::by_number(&store.pool, version).await,
            Backend::Postgres(store) => PolicySql::by_number(&store.pool, version).await,
        }
    }

    /// The newest version with this hash.
    pub async fn policy_version_by_hash(&self, hash: &str) -> Result<Option<PolicyVersion>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => PolicySql::by_hash(&store.pool, hash).await,
            Backend::Postgres(store) => PolicySql::by_hash(&store.pool, hash).await,
        }
    }

    /// Summaries of versions, newest first: only versions below `before`
    /// when given, at most `limit` of them.
    pub async fn policy_versions(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<PolicyVersionSummary>, StoreError> {
        let before = before.map_or(i64::MAX, |before| i64::try_from(before).unwrap_or(i64::MAX));
        match &self.backend {
            Backend::Sqlite(store) => PolicySql::list(&store.pool, before, limit.into()).await,
            Backend::Postgres(store) => PolicySql::list(&store.pool, before, limit.into()).await,
        }
    }
}

/// The columns of [`Row`], in order.
const COLUMNS: &str = "version, hash, schema, schema_is_json, policies, links, special, origin, \
                       rolled_back_from, actor, comment, recorded_at_unix_ms";

/// A `policy_versions` row, the columns of [`COLUMNS`].
type Row = (
    i64,
    String,
    Option<String>,
    bool,
    String,
    String,
    Option<String>,
    String,
    Option<i64>,
    String,
    Option<String>,
    i64,
);

/// A summary row: `version, hash, origin, rolled_back_from, actor, comment,
/// recorded_at_unix_ms`.
type SummaryRow = (i64, String, String, Option<i64>, String, Option<String>, i64);

/// The policy SQL over database `DB`: writes on a connection whose
/// transaction the backend opened, reads on its pool.
struct PolicySql<DB>(PhantomData<DB>);

impl<DB> PolicySql<DB>
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
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    /// Claims the next version, checks `if_current` against the one before
    /// it, and inserts `new`.
    async fn append(
        connection: &mut DB::Connection,
        new: NewPolicyVersion,
        if_current: Option<&str>,
    ) -> Result<PolicyVersion, StoreError> {
        let version = claim::<DB>(&mut *connection, "policy_version").await?;
        if let Some(expected) = if_current {
            let current: Option<String> =
                sqlx::query_scalar("SELECT hash FROM policy_versions WHERE version = $1")
                    .bind(version - 1)
                    .fetch_optional(&mut *connection)
                    .await?;
            if current.as_deref() != Some(expected) {
                return Err(StoreError::Stale { current });
            }
        }
        let (origin, rolled_back_from) = match new.origin {
            VersionOrigin::Api => ("api", None),
            VersionOrigin::Directory => ("directory", None),
            VersionOrigin::Rollback { from } => ("rollback", Some(from)),
        };
        let rolled_back_from = rolled_back_from
            .map(|from| {
                i64::try_from(from).map_err(|_| StoreError::CorruptRecord {
                    record: format!("policy version {version}"),
                    reason: format!("it would restore version {from}, which no store can hold"),
                })
            })
            .transpose()?;
        let recorded_at_unix_ms = now_unix_ms();
        let links = new.links.to_string();
        let special = new.special.as_ref().map(serde_json::Value::to_string);
        sqlx::query(&format!(
            "INSERT INTO policy_versions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(version)
        .bind(new.hash.as_str())
        .bind(new.schema.as_deref())
        .bind(new.schema_is_json)
        .bind(new.policies.as_str())
        .bind(links.as_str())
        .bind(special.as_deref())
        .bind(origin)
        .bind(rolled_back_from)
        .bind(new.actor.as_str())
        .bind(new.comment.as_deref())
        .bind(recorded_at_unix_ms)
        .execute(&mut *connection)
        .await?;
        Ok(PolicyVersion {
            version: version.unsigned_abs(),
            hash: new.hash,
            schema: new.schema,
            schema_is_json: new.schema_is_json,
            policies: new.policies,
            links: new.links,
            special: new.special,
            origin: new.origin,
            actor: new.actor,
            comment: new.comment,
            recorded_at_unix_ms,
        })
    }

    async fn current(pool: &Pool<DB>) -> Result<Option<PolicyVersion>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM policy_versions ORDER BY version DESC LIMIT 1"))
                .fetch_optional(pool)
                .await?;
        row.map(version_of).transpose()
    }

    async fn by_number(pool: &Pool<DB>, version: i64) -> Result<Option<PolicyVersion>, StoreError> {
        let row: Option<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM policy_versions WHERE version = $1"))
                .bind(version)
                .fetch_optional(pool)
                .await?;
        row.map(version_of).transpose()
    }

    async fn by_hash(pool: &Pool<DB>, hash: &str) -> Result<Option<PolicyVersion>, StoreError> {
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM policy_versions WHERE hash = $1 ORDER BY version DESC LIMIT 1"
        ))
        .bind(hash)
        .fetch_optional(pool)
        .await?;
        row.map(version_of).transpose()
    }

    async fn list(pool: &Pool<DB>, before: i64, limit: i64) -> Result<Vec<PolicyVersionSummary>, StoreError> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT version, hash, origin, rolled_back_from, actor, comment, recorded_at_unix_ms \
             FROM policy_versions WHERE version < $1 ORDER BY version DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|(version, hash, origin, rolled_back_from, actor, comment, recorded_at_unix_ms)| {
                let record = || format!("policy version {version}");
                Ok(PolicyVersionSummary {
                    version: number(version, record)?,
                    hash,
                    origin: origin_of(&origin, rolled_back_from, record)?,
                    actor,
                    comment,
                    recorded_at_unix_ms,
                })
            })
            .collect()
    }
}

/// Reads a stored row back as a version.
fn version_of(row: Row) -> Result<PolicyVersion, StoreError> {
    let (
        version,
        hash,
        schema,
        schema_is_json,
        policies,
        links,
        special,
        origin,
        rolled_back_from,
        actor,
        comment,
        recorded_at_unix_ms,
    ) = row;
    let record = || format!("policy version {version}");
    let json = |what: &str, text: &str| {
        serde_json::from_str(text).map_err(|error| StoreError::CorruptRecord {
            record: record(),
            reason: format!("its {what} are not JSON: {error}"),
        })
    };
    Ok(PolicyVersion {
        version: number(version, record)?,
        hash,
        schema,
        schema_is_json,
        policies,
        links: json("template links", &links)?,
        special: special.map(|special| json("special categories", &special)).transpose()?,
        origin: origin_of(&origin, rolled_back_from, record)?,
        actor,
        comment,
        recorded_at_unix_ms,
    })
}

/// A stored version number, checked to be at least 1.
fn number(stored: i64, record: impl Fn() -> String) -> Result<u64, StoreError> {
    match u64::try_from(stored) {
        Ok(number) if number >= 1 => Ok(number),
        _ => Err(StoreError::CorruptRecord {
            record: record(),
            reason: format!("its number {stored} is not positive"),
        }),
    }
}

/// The origin stored as `origin` and `rolled_back_from`.
fn origin_of(
    origin: &str,
    rolled_back_from: Option<i64>,
    record: impl Fn() -> String,
) -> Result<VersionOrigin, StoreError> {
    match (origin, rolled_back_from) {
        ("api", None) => Ok(VersionOrigin::Api),
        ("directory", None) => Ok(VersionOrigin::Directory),
        ("rollback", Some(from)) => Ok(VersionOrigin::Rollback { from: number(from, &record)? }),
        _ => Err(StoreError::CorruptRecord {
            record: record(),
            reason: format!("its origin `{origin}` (rolled back from {rolled_back_from:?}) is unknown"),
        }),
    }
}

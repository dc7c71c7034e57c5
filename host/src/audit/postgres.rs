//! The shared audit sink: one PostgreSQL table that every replica appends to.
//!
//! Stateless sidecar replicas have no disk worth keeping, and an auditor
//! wants one trail, not one per pod: so all replicas write one table and the
//! table holds *one* chain. Each batch is one transaction that takes an
//! advisory lock, reads the head (the last record), chains the batch onto it,
//! inserts it with one multi-row `INSERT` and commits; the lock makes the
//! read-chain-insert of two replicas take turns, and the `seq` primary key
//! refuses a fork whatever happens. A transaction that fails writes nothing,
//! and the writer reports the failure, so backpressure applies as with files.
//! (A commit whose answer is lost may have written its batch; since every
//! batch reads the head back from the table, the chain stays whole either
//! way, and the batch is counted as lost although it is there.)
//!
//! The lock key is derived from the table's oid, so two logs in different
//! schemas of one database do not wait for each other.
//!
//! The writer is a plain thread, so the sink drives its queries on a
//! current-thread runtime of its own, built on that thread at the first
//! append (a runtime must not be dropped inside another one).
//!
//! # Migrations
//!
//! The audit table may live in the consent store's database, whose
//! `_sqlx_migrations` table numbers the consent store's migrations; so the
//! audit schema is tracked apart, in `consentry_audit_migrations`, by a
//! small migrator of its own that refuses migrations it does not know (a
//! newer release ran) or whose text changed since they were applied.

use std::fmt;
use std::time::Duration;

use consentry_engine::EvaluationTime;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, QueryBuilder};

use super::chain::{
    AuditEntry, Canonical, ChainBreak, ChainHead, ChainLine, ChainedChange, ChainedRecord, Verifier, chain,
    record_hash,
};
use super::query::ChangeQuery;

/// The table, in the first schema of `search_path` that has it.
pub const TABLE: &str = "consentry_audit_log";

/// The audit migrations, oldest first, as `(version, description, sql)`.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "audit log", include_str!("../../migrations/audit_postgres/0001_audit_log.sql")),
    (2, "change records", include_str!("../../migrations/audit_postgres/0002_change_records.sql")),
];

/// The advisory lock taken by every append, keyed by this class and the
/// table's oid.
const CHAIN_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1129534529, 'consentry_audit_log'::regclass::oid::int4)";

/// The advisory lock taken while migrating, keyed by this class and the
/// schema the table goes into (it may not exist yet).
const MIGRATION_LOCK: &str =
    "SELECT pg_advisory_xact_lock(1129534530, hashtext(coalesce(current_schema(), '')))";

/// How many rows `audit verify` reads per query.
const VERIFY_PAGE: i64 = 1000;

/// The newest row: `seq` and `line`.
const LAST_ROW: &str = "SELECT seq, line FROM consentry_audit_log ORDER BY seq DESC LIMIT 1";

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the audit database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditDbError {
    /// The URL does not parse (it is not echoed: it may hold a password).
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    /// The database refused or failed a statement, or cannot be reached.
    #[error("audit database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Connecting took too long.
    #[error("cannot connect to the audit database within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    /// The sink's runtime could not be started.
    #[error("cannot start the audit database runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The table cannot be continued from or read back.
    #[error("the audit table is corrupt: {0}")]
    Corrupt(String),
    /// The audit schema cannot be brought up to date.
    #[error("audit database migration failed: {0}")]
    Migration(String),
}

/// Parses a `postgres://` URL without echoing it.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, AuditDbError> {
    url.parse().map_err(|error| AuditDbError::Url(format!("{error}")))
}

/// `postgres://USER@HOST:PORT/DB`, without the password, for logs.
pub fn describe(options: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default(),
    )
}

/// Connects, giving up after `CONNECT_TIMEOUT` (10 s).
pub async fn connect(options: &PgConnectOptions) -> Result<PgConnection, AuditDbError> {
    tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| AuditDbError::ConnectTimeout)?
        .map_err(AuditDbError::from)
}

/// Brings the audit table up to date, in one transaction; replicas starting
/// together take turns.
pub async fn migrate(connection: &mut PgConnection) -> Result<(), AuditDbError> {
    let mut tx = connection.begin().await?;
    sqlx::query(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS consentry_audit_migrations (version BIGINT PRIMARY KEY, \
         description TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .execute(&mut *tx)
    .await?;
    let applied: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, checksum FROM consentry_audit_migrations ORDER BY version")
            .fetch_all(&mut *tx)
            .await?;
    for (version, checksum) in &applied {
        match MIGRATIONS.iter().find(|(known, _, _)| known == version) {
            None => {
                return Err(AuditDbError::Migration(format!(
                    "the audit table has migration {version}, which this release does not know: a newer \
                     release migrated it"
                )));
            }
            Some((_, _, sql)) if &sql_checksum(sql) != checksum => {
                return Err(AuditDbError::Migration(format!(
                    "migration {version} was changed after it was applied"
                )));
            }
            Some(_) => {}
        }
    }
    for (version, description, sql) in MIGRATIONS {
        if applied.iter().any(|(done, _)| done == version) {
            continue;
        }
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO consentry_audit_migrations (version, description, checksum) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(description)
        .bind(sql_checksum(sql))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The lowercase hex SHA-256 of a migration's text.
fn sql_checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends chained records to the shared table.
pub struct PostgresSink {
    options: PgConnectOptions,
    /// The open connection; dropped after any failure and opened again by
    /// the next append. Declared before `runtime`, so it is dropped first.
    connection: Option<PgConnection>,
    /// Built on the writer thread at the first append.
    runtime: Option<tokio::runtime::Runtime>,
}

impl fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the options: they hold the password.
        f.debug_struct("PostgresSink")
            .field("database", &describe(&self.options))
            .field("connected", &self.connection.is_some())
            .finish()
    }
}

impl PostgresSink {
    /// A sink over the (already migrated) database `options` names; it
    /// connects at the first append.
    pub fn new(options: PgConnectOptions) -> Self {
        Self { options, connection: None, runtime: None }
    }

    /// Chains `entries` onto the table's head and inserts them, all in one
    /// transaction: all are written or none. Returns the records as written.
    pub fn append<E: Into<AuditEntry>>(&mut self, entries: Vec<E>) -> Result<Vec<ChainLine>, AuditDbError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(AuditDbError::Runtime)?,
        };
        let runtime = self.runtime.insert(runtime);
        let (options, slot) = (&self.options, &mut self.connection);
        let outcome = runtime.block_on(async {
            let connection = match slot.take() {
                Some(connection) => connection,
                None => connect(options).await?,
            };
            append_batch(slot.insert(connection), entries.into_iter().map(Into::into).collect()).await
        });
        if outcome.is_err() {
            // Its state is unknown (an open transaction, a broken socket):
            // start afresh next time.
            self.connection = None;
        }
        outcome
    }
}

/// One batch: lock, read the head, chain, insert, commit.
async fn append_batch(
    connection: &mut PgConnection,
    entries: Vec<AuditEntry>,
) -> Result<Vec<ChainLine>, AuditDbError> {
    let mut tx = connection.begin().await?;
    sqlx::query(CHAIN_LOCK).execute(&mut *tx).await?;
    let last: Option<(i64, String)> = sqlx::query_as(LAST_ROW).fetch_optional(&mut *tx).await?;
    let mut head = match last {
        None => ChainHead::genesis(),
        Some((seq, line)) => head_after(seq, &line)?,
    };
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let (record, line) = chain(entry, &mut head);
        let seq = i64::try_from(record.seq())
            .map_err(|_| AuditDbError::Corrupt(format!("seq {} does not fit a BIGINT", record.seq())))?;
        rows.push((seq, Columns::of(&record), record, line));
    }
    let mut insert = QueryBuilder::<Postgres>::new(
        "INSERT INTO consentry_audit_log (seq, decision_id, change_id, change_kind, at, patients, line) ",
    );
    insert.push_values(&rows, |mut row, (seq, columns, record, line)| {
        row.push_bind(*seq)
            .push_bind(columns.decision_id.clone())
            .push_unseparated("::uuid")
            .push_bind(columns.change_id.clone())
            .push_unseparated("::uuid")
            .push_bind(columns.change_kind.clone())
            .push_bind(record.at())
            .push_unseparated("::timestamptz")
            .push_bind(columns.patients.clone())
            .push_bind(line);
    });
    insert.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(rows.into_iter().map(|(_, _, record, _)| record).collect())
}

/// The columns of a row that repeat fields of its line, for lookups.
#[derive(Debug, PartialEq, Eq)]
struct Columns {
    decision_id: Option<String>,
    change_id: Option<String>,
    change_kind: Option<String>,
    patients: Vec<String>,
}

impl Columns {
    /// What the columns of `record`'s row must say.
    fn of(record: &ChainLine) -> Self {
        match record {
            ChainLine::Decision(record) => Self {
                decision_id: Some(record.entry.decision_id.hyphenated().to_string()),
                change_id: None,
                change_kind: None,
                patients: record.entry.patients.clone(),
            },
            ChainLine::Change(record) => Self {
                decision_id: None,
                change_id: Some(record.change.change_id.hyphenated().to_string()),
                change_kind: Some(record.change.kind.clone()),
                patients: Vec::new(),
            },
        }
    }
}

/// The head after the table's last row, whose own hash is checked since the
/// chain continues from it (the rest is `audit verify`'s business).
fn head_after(seq: i64, line: &str) -> Result<ChainHead, AuditDbError> {
    Ok(ChainHead::after(&checked_last_record(seq, line)?))
}

/// The table's last record, row `seq` holding `line`, checked as far as a
/// head needs: it parses, claims its row's `seq`, and its hash matches.
fn checked_last_record(seq: i64, line: &str) -> Result<ChainLine, AuditDbError> {
    let corrupt = |reason: String| AuditDbError::Corrupt(format!("its last record (seq {seq}) {reason}"));
    let record = ChainLine::parse(line).map_err(|error| corrupt(format!("is not a record: {error}")))?;
    if i64::try_from(record.seq()).ok() != Some(seq) {
        return Err(corrupt(format!("claims seq {} in its line", record.seq())));
    }
    if record_hash(&record) != record.stored_hash() {
        return Err(corrupt("has a `hash` that does not match its content".to_owned()));
    }
    Ok(record)
}

/// The newest record of the table, checked as the writer checks the head it
/// continues from.
pub async fn last_record(pool: &PgPool) -> Result<Option<ChainLine>, AuditDbError> {
    let last: Option<(i64, String)> = sqlx::query_as(LAST_ROW).fetch_optional(pool).await?;
    last.map(|(seq, line)| checked_last_record(seq, &line)).transpose()
}

/// Whether the table has the columns of change rows (migration 2).
const HAS_CHANGE_COLUMNS: &str = "SELECT EXISTS (SELECT 1 FROM pg_attribute \
     WHERE attrelid = 'consentry_audit_log'::regclass AND attname = 'change_id' AND NOT attisdropped)";

/// A page of rows for [`verify`].
const VERIFY_PAGE_QUERY: &str = "SELECT seq, line, decision_id::text, change_id::text, change_kind, \
     round(extract(epoch FROM at) * 1000)::bigint, patients \
     FROM consentry_audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";

/// A page of rows for [`verify`], from a table from before change records.
const VERIFY_PAGE_QUERY_BEFORE_CHANGES: &str = "SELECT seq, line, decision_id::text, NULL::text, NULL::text, \
     round(extract(epoch FROM at) * 1000)::bigint, patients \
     FROM consentry_audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";

/// A row as [`verify`] reads it: `seq`, `line`, `decision_id`, `change_id`,
/// `change_kind`, `at` in milliseconds since the Unix epoch, `patients`.
type VerifyRow = (i64, String, Option<String>, Option<String>, Option<String>, i64, Vec<String>);

/// Checks the whole table in `seq` order through `verifier`, as a directory
/// is checked, a page at a time, in one snapshot; also checks that each
/// row's indexed columns still say what its line says (otherwise editing
/// `patients` could hide a record from the patient's report without
/// touching the chain). `Ok(Err(_))` is a break; `Err(_)` means the table
/// could not be read.
pub async fn verify(
    options: &PgConnectOptions,
    verifier: &mut Verifier,
) -> Result<Result<(), ChainBreak>, AuditDbError> {
    let mut connection = connect(options).await?;
    let mut tx = connection.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
    // `audit verify` only reads, so it may meet a table no release with
    // change records has migrated yet: its rows are all decisions.
    let (has_changes,): (bool,) = sqlx::query_as(HAS_CHANGE_COLUMNS).fetch_one(&mut *tx).await?;
    let select = if has_changes { VERIFY_PAGE_QUERY } else { VERIFY_PAGE_QUERY_BEFORE_CHANGES };
    let mut after = -1_i64;
    let mut row_no = 0_usize;
    loop {
        let page: Vec<VerifyRow> =
            sqlx::query_as(select).bind(after).bind(VERIFY_PAGE).fetch_all(&mut *tx).await?;
        if page.is_empty() {
            break;
        }
        for (seq, line, decision_id, change_id, change_kind, at_ms, patients) in page {
            row_no = row_no.saturating_add(1);
            let column_seq = u64::try_from(seq).ok();
            if let Err(mut broken) = verifier.check_line(TABLE, row_no, &line) {
                broken.seq = broken.seq.or(column_seq);
                return Ok(Err(broken));
            }
            let columns = Columns { decision_id, change_id, change_kind, patients };
            if let Some(reason) = columns_disagree(seq, &line, &columns, at_ms) {
                return Ok(Err(ChainBreak { file: TABLE.to_owned(), line: row_no, seq: column_seq, reason }));
            }
            after = seq;
        }
    }
    Ok(Ok(()))
}

/// Which indexed column of a row (whose line the verifier accepted) no
/// longer says what its line says, if any.
fn columns_disagree(seq: i64, line: &str, columns: &Columns, at_ms: i64) -> Option<String> {
    let record = match ChainLine::parse(line) {
        Ok(record) => record,
        Err(error) => return Some(format!("not a record: {error}")),
    };
    let expected = Columns::of(&record);
    let column = if i64::try_from(record.seq()).ok() != Some(seq) {
        "seq"
    } else if expected.decision_id != columns.decision_id {
        "decision_id"
    } else if expected.change_id != columns.change_id {
        "change_id"
    } else if expected.change_kind != columns.change_kind {
        "change_kind"
    } else if EvaluationTime::parse(record.at()).ok().map(|at| at.unix_millis()) != Some(at_ms) {
        "at"
    } else if expected.patients != columns.patients {
        "patients"
    } else {
        return None;
    };
    Some(format!("the row's `{column}` column does not match its record (it was edited)"))
}

/// The records about `patient` made in `[from, to)`, in `seq` order, at
/// most `limit`, and whether more matched: one query the `patients` index
/// serves.
pub async fn about_patient(
    pool: &PgPool,
    patient: &str,
    from: Option<&EvaluationTime>,
    to: Option<&EvaluationTime>,
    limit: usize,
) -> Result<(Vec<ChainedRecord>, bool), AuditDbError> {
    let mut query =
        QueryBuilder::<Postgres>::new("SELECT seq, line FROM consentry_audit_log WHERE patients @> ARRAY[");
    query.push_bind(patient).push("]::text[]");
    if let Some(from) = from {
        query.push(" AND at >= ").push_bind(from.cedar_literal()).push("::timestamptz");
    }
    if let Some(to) = to {
        query.push(" AND at < ").push_bind(to.cedar_literal()).push("::timestamptz");
    }
    query.push(" ORDER BY seq LIMIT ").push_bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
    let rows: Vec<(i64, String)> = query.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > limit;
    let records = rows
        .into_iter()
        .take(limit)
        .map(|(seq, line)| {
            serde_json::from_str(&line).map_err(|error| {
                AuditDbError::Corrupt(format!("the record with seq {seq} is not a record: {error}"))
            })
        })
        .collect::<Result<Vec<ChainedRecord>, _>>()?;
    Ok((records, more))
}

/// The change records `query` asks for, in `seq` order, at most its limit,
/// and whether more matched: one query over the partial index of change
/// rows.
pub async fn changes(pool: &PgPool, query: &ChangeQuery) -> Result<(Vec<ChainedChange>, bool), AuditDbError> {
    let mut select = QueryBuilder::<Postgres>::new(
        "SELECT seq, line FROM consentry_audit_log WHERE change_id IS NOT NULL",
    );
    if let Some(since) = &query.since {
        select.push(" AND at >= ").push_bind(since.cedar_literal()).push("::timestamptz");
    }
    if let Some(kind) = query.kind {
        select.push(" AND change_kind = ").push_bind(kind.name());
    }
    if let Some(after) = query.after {
        select.push(" AND seq > ").push_bind(i64::try_from(after).unwrap_or(i64::MAX));
    }
    select
        .push(" ORDER BY seq LIMIT ")
        .push_bind(i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX));
    let rows: Vec<(i64, String)> = select.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > query.limit;
    let records = rows
        .into_iter()
        .take(query.limit)
        .map(|(seq, line)| match ChainLine::parse(&line) {
            Ok(ChainLine::Change(change)) => Ok(change),
            Ok(ChainLine::Decision(_)) => {
                Err(AuditDbError::Corrupt(format!("the change row with seq {seq} holds a decision")))
            }
            Err(error) => {
                Err(AuditDbError::Corrupt(format!("the record with seq {seq} is not a record: {error}")))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, more))
}

/// Connects to the database `url` names and brings the audit table up to
/// date; returns the sink for the writer (which connects on its own thread)
/// and a pool of `readers` connections for the read side, on the calling
/// runtime.
pub async fn open(url: &str, readers: u32) -> Result<(PostgresSink, PgPool), AuditDbError> {
    let options = connect_options(url)?;
    let pool = PgPoolOptions::new()
        .max_connections(readers.max(1))
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await?;
    migrate(&mut *pool.acquire().await?).await?;
    Ok((PostgresSink::new(options), pool))
}

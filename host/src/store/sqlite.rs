//! The SQLite backend: one file in the sidecar's data directory.
//!
//! WAL lets decisions read while a write commits, and `synchronous=FULL`
//! syncs the log at every commit, so an acknowledged write survives power
//! loss, not only a crash of the process. Writes start with
//! `BEGIN IMMEDIATE`, taking the write lock before reading the head: a
//! deferred transaction that read first could not upgrade once another
//! writer committed. Within the process writes queue on a mutex instead of
//! polling SQLite's lock; the busy timeout covers other processes.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use super::{ConsentRecord, INSERT_CHUNK, NewVersion, StoreError, migrator, new_record, now_unix_ms};

/// The database file inside the data directory.
const FILE_NAME: &str = "consents.sqlite3";

/// The SQLite migrations, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "consents", include_str!("../../migrations/sqlite/0001_consents.sql")),
    (2, "policies and entities", include_str!("../../migrations/sqlite/0002_policies_and_entities.sql")),
    (3, "entity parents", include_str!("../../migrations/sqlite/0003_entity_parents.sql")),
];

/// How long a write waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads run concurrently under WAL; writes take turns.
const MAX_CONNECTIONS: u32 = 4;

/// The page cache of each reading connection: 4 MiB (`PRAGMA cache_size`
/// in KiB when negative).
const READ_CACHE_SIZE: &str = "-4096";

/// The page cache of the writing connection: 64 MiB.
const WRITE_CACHE_SIZE: &str = "-65536";

/// How long the writing connection, and its cache, outlive the last write.
const WRITER_IDLE: Duration = Duration::from_secs(30);

/// The SQLite consent store.
#[derive(Debug)]
pub(super) struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// The connection of [`SqliteStore::begin_write`], with a large page cache.
    writer: SqlitePool,
    /// `sqlite:PATH`, for logs.
    location: String,
    /// `journal_mode` and `synchronous` as the store's connections report them.
    pragmas: String,
    writes: Mutex<()>,
}

impl SqliteStore {
    /// Opens (creating if missing) `dir/consents.sqlite3` and migrates it.
    pub(super) async fn open(dir: &Path) -> Result<Self, StoreError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?;
        let path = dir.join(FILE_NAME);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        Self::connect(options, format!("sqlite:{}", path.display()), SqlitePoolOptions::new()).await
    }

    /// `dir/consents.sqlite3` when it exists, else an empty store held in
    /// memory: a command that only reads a store (`check`, `plan`,
    /// `search`) must not leave one behind where there was none.
    pub(super) async fn open_existing_or_empty(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE_NAME);
        if tokio::fs::try_exists(&path)
            .await
            .map_err(|source| StoreError::Directory { path: dir.to_owned(), source })?
        {
            return Self::open(dir).await;
        }
        // `sqlite::memory:` names a shared-cache database of its own, which
        // both pools below reach as long as one connection to it stays open:
        // the reading pool keeps one for the life of the store.
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let reads = SqlitePoolOptions::new().min_connections(1).idle_timeout(None).max_lifetime(None);
        Self::connect(options, format!("sqlite::memory: (no store at `{}`)", path.display()), reads).await
    }

    /// Connects both pools to the database `options` names and migrates it.
    async fn connect(
        options: SqliteConnectOptions,
        location: String,
        reads_pool: SqlitePoolOptions,
    ) -> Result<Self, StoreError> {
        // Reads keep SQLite's page cache small: what decisions read often
        // is in the replica's own entity cache, and each connection's pages
        // count against the memory a replica promises (`--cache-bytes`).
        let reads = options.clone().pragma("cache_size", READ_CACHE_SIZE);
        let pool = reads_pool.max_connections(MAX_CONNECTIONS).connect_with(reads).await?;
        // Writes get a large cache, taken only as needed: writing a million
        // entities in one transaction otherwise spills it to the log over
        // and over. Its one connection closes when idle, giving the pages back.
        let bulk = options.pragma("cache_size", WRITE_CACHE_SIZE);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(WRITER_IDLE)
            .connect_lazy_with(bulk);
        migrator(MIGRATIONS).await?.run(&pool).await?;
        // A file system without shared memory silently keeps the rollback
        // journal: report what is really in force.
        let mut connection = pool.acquire().await?;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *connection).await?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *connection).await?;
        drop(connection);
        let synchronous = match synchronous {
            0 => "off",
            1 => "normal",
            2 => "full",
            3 => "extra",
            _ => "unknown",
        };
        let pragmas = format!("journal_mode={journal}, synchronous={synchronous}");
        Ok(Self { pool, writer, location, pragmas, writes: Mutex::new(()) })
    }

    /// `sqlite:PATH (journal_mode=…, synchronous=…)`.
    pub(super) fn describe(&self) -> String {
        format!("{} ({})", self.location, self.pragmas)
    }

    /// A write transaction, holding this process's turn to write until it
    /// is dropped along with the transaction.
    pub(super) async fn begin_write(
        &self,
    ) -> Result<(MutexGuard<'_, ()>, Transaction<'static, Sqlite>), StoreError> {
        let turn = self.writes.lock().await;
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok((turn, tx))
    }

    pub(super) async fn create(&self, id: &str, new: NewVersion) -> Result<ConsentRecord, StoreError> {
        let _turn = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO consent_heads (id, version, patient) VALUES (?1, 1, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&new.patient)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict { id: id.to_owned() });
        }
        let (record, body) = new_record(id, 1, new, now_unix_ms());
        insert_version(&mut tx, 1, &record, &body).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub(super) async fn supersede(
        &self,
        id: &str,
        new: NewVersion,
    ) -> Result<(ConsentRecord, Option<String>), StoreError> {
        let _turn = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // One statement claims the next version: the head row is the
        // counter, and the write lock is held until commit.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO consent_heads (id, version, patient) VALUES (?1, 1, ?2) \
             ON CONFLICT (id) DO UPDATE SET version = version + 1, patient = excluded.patient \
             RETURNING version",
        )
        .bind(id)
        .bind(&new.patient)
        .fetch_one(&mut *tx)
        .await?;
        let previous = if version > 1 {
            let patient: Option<String> =
                sqlx::query_scalar("SELECT patient FROM consent_versions WHERE id = ?1 AND version = ?2")
                    .bind(id)
                    .bind(version - 1)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(patient) = patient else {
                return Err(StoreError::Corrupt {
                    id: id.to_owned(),
                    reason: format!("version {} is missing", version - 1),
                });
            };
            Some(patient)
        } else {
            None
        };
        let (record, body) = new_record(id, version, new, now_unix_ms());
        insert_version(&mut tx, version, &record, &body).await?;
        tx.commit().await?;
        Ok((record, previous))
    }

    pub(super) async fn create_many(
        &self,
        items: Vec<(String, NewVersion)>,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let recorded_at = now_unix_ms();
        let stored: Vec<(ConsentRecord, String)> =
            items.into_iter().map(|(id, new)| new_record(&id, 1, new, recorded_at)).collect();
        let _turn = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in stored.chunks(INSERT_CHUNK) {
            let mut heads = QueryBuilder::<Sqlite>::new("INSERT INTO consent_heads (id, version, patient) ");
            heads.push_values(chunk, |mut row, (record, _)| {
                row.push_bind(&record.id).push_bind(1_i64).push_bind(&record.patient);
            });
            heads.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted: HashSet<String> =
                heads.build_query_scalar::<String>().fetch_all(&mut *tx).await?.into_iter().collect();
            if let Some((existing, _)) = chunk.iter().find(|(record, _)| !inserted.contains(&record.id)) {
                return Err(StoreError::Conflict { id: existing.id.clone() });
            }
            let mut versions = QueryBuilder::<Sqlite>::new(
                "INSERT INTO consent_versions \
                 (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) ",
            );
            versions.push_values(chunk, |mut row, (record, body)| {
                row.push_bind(&record.id)
                    .push_bind(1_i64)
                    .push_bind(&record.patient)
                    .push_bind(&record.status)
                    .push_bind(&record.fhir_version)
                    .push_bind(body)
                    .push_bind(record.recorded_at_unix_ms);
            });
            versions.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(stored.into_iter().map(|(record, _)| record).collect())
    }
}

/// Adds version `version` of `record`.
async fn insert_version(
    connection: &mut SqliteConnection,
    version: i64,
    record: &ConsentRecord,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_versions (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(&record.id)
    .bind(version)
    .bind(&record.patient)
    .bind(&record.status)
    .bind(&record.fhir_version)
    .bind(body)
    .bind(record.recorded_at_unix_ms)
    .execute(connection)
    .await?;
    Ok(())
}

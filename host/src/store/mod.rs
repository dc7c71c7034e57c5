//! The durable store, in SQLite or PostgreSQL: every version of every
//! consent, every policy version, and the entity directory with its history.
//!
//! It is the single source of truth that stateless replicas share, so what
//! is in force must never depend on one replica's files or memory, and what
//! was in force must stay on record. Consents are legal records: a change
//! never erases what was in force before, each change adds its next version
//! (1, 2, 3…) and the newest version is the one in force. A small head table
//! points at the newest version of each consent and carries its patient, so
//! the question decisions ask ("which consents of patient P are in force?")
//! is one indexed lookup, and opening a store that holds a million consents
//! reads none of them. Policies (`policies.rs`) and entities (`entities.rs`)
//! follow the same rule: versions and revisions are only ever added.
//!
//! SQLite serves a single sidecar from a file in its data directory.
//! PostgreSQL lets several replicas share one store; each write there also
//! notifies the other replicas (`LISTEN`/`NOTIFY`), so that their caches
//! drop or reload what changed. Every write is committed before the call
//! returns: an acknowledged write survives a crash.

mod entities;
mod entity_sql;
mod policies;
mod postgres;
mod reads;
mod shared_sql;
mod sqlite;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::time::SystemTime;

use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};
use thiserror::Error;
use tokio::sync::broadcast;

use reads::Reads;

pub use entities::{EntityImport, EntityRevision, EntityWrite};
pub use policies::{NewPolicyVersion, PolicyVersion, PolicyVersionSummary, VersionOrigin};

/// How many changes a slow subscriber may fall behind before it is told it
/// lagged (and must then assume everything changed).
const CHANGE_BUFFER: usize = 1024;

/// Where the store is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `DIR/consents.sqlite3`, created if missing.
    Sqlite {
        /// The data directory.
        dir: PathBuf,
    },
    /// A PostgreSQL database shared by several replicas. A
    /// `?options=-c%20search_path%3DSCHEMA` parameter keeps the store in
    /// `SCHEMA`, which must exist.
    Postgres {
        /// `postgres://…` or `postgresql://…`.
        url: String,
    },
}

impl FromStr for StoreLocation {
    type Err = StoreError;

    /// `postgres://…` or `postgresql://…` is a PostgreSQL database;
    /// `sqlite://DIR` or a plain path is a SQLite data directory.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::connect_options(text)?;
            return Ok(Self::Postgres { url: text.to_owned() });
        }
        let dir = match text.split_once("://") {
            Some(("sqlite", dir)) => dir,
            Some((scheme, _)) => {
                return Err(StoreError::Location(format!(
                    "unsupported scheme `{scheme}` (use `postgres://…`, `sqlite://DIR` or a directory)"
                )));
            }
            None => text,
        };
        if dir.is_empty() {
            return Err(StoreError::Location("the SQLite data directory is empty".to_owned()));
        }
        Ok(Self::Sqlite { dir: PathBuf::from(dir) })
    }
}

/// One stored version of a consent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRecord {
    /// The consent id, shared by all its versions.
    pub id: String,
    /// 1 for the first version, then 2, 3…
    pub version: u64,
    /// The patient this version is about.
    pub patient: String,
    /// The FHIR `Consent.status` of this version.
    pub status: String,
    /// The FHIR release the body follows.
    pub fhir_version: String,
    /// The FHIR Consent resource, as it was stored.
    pub body: serde_json::Value,
    /// When this version was stored, in milliseconds since the Unix epoch.
    pub recorded_at_unix_ms: i64,
}

/// A version to store (already validated by the caller).
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    /// The patient this version is about.
    pub patient: String,
    /// The FHIR `Consent.status`.
    pub status: String,
    /// The FHIR release the body follows.
    pub fhir_version: String,
    /// The FHIR Consent resource.
    pub body: serde_json::Value,
}

/// What changed, for caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// The consents of this patient changed.
    Patient(String),
    /// Policy version `version` was stored and is now the newest.
    Policies {
        /// The new version.
        version: u64,
    },
    /// Entity revision `revision` was written.
    Entities {
        /// The new revision.
        revision: u64,
    },
    /// The change feed lost its connection: from now until
    /// [`StoreChange::Everything`], changes other replicas make are not heard of.
    FeedLost,
    /// Changes may have been missed (the change feed reconnected): drop
    /// everything.
    Everything,
}

/// Why the store failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store location cannot be used.
    #[error("invalid store location: {0}")]
    Location(String),
    /// A consent with this id already exists.
    #[error("consent `{id}` already exists")]
    Conflict {
        /// The consent id.
        id: String,
    },
    /// The database cannot be reached or its files cannot be used.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused or failed a statement.
    #[error("store error: {0}")]
    Database(#[source] sqlx::Error),
    /// The data directory cannot be created.
    #[error("cannot create the store directory `{path}`: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// What the database holds cannot be read back as a consent.
    #[error("stored consent `{id}` is corrupt: {reason}")]
    Corrupt {
        /// The consent id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A stored policy version or entity revision cannot be read back.
    #[error("stored {record} is corrupt: {reason}")]
    CorruptRecord {
        /// What was read, such as `policy version 3`.
        record: String,
        /// What is wrong.
        reason: String,
    },
    /// A policy write expected another newest version than the one stored:
    /// someone else changed the policies meanwhile.
    #[error(
        "the policies changed meanwhile: the newest version now has hash {}",
        .current.as_deref().map_or_else(|| "none (no policies are stored)".to_owned(), |hash| format!("`{hash}`"))
    )]
    Stale {
        /// The hash of the newest stored version, if any.
        current: Option<String>,
    },
    /// The database schema could not be brought up to date.
    #[error("store migration failed: {0}")]
    Migration(#[source] MigrateError),
}

impl StoreError {
    /// A stable code for the failure, for answers and `/readyz`, which do
    /// not carry the database's own words.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Location(_) => "store_location_invalid",
            Self::Conflict { .. } => "conflict",
            Self::Unavailable(_) => "store_unreachable",
            Self::Database(_) => "store_statement_failed",
            Self::Directory { .. } => "store_directory_unusable",
            Self::Corrupt { .. } | Self::CorruptRecord { .. } => "store_corrupt",
            Self::Stale { .. } => "concurrent_change",
            Self::Migration(_) => "store_migration_failed",
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error),
            _ => Self::Database(error),
        }
    }
}

impl From<MigrateError> for StoreError {
    fn from(error: MigrateError) -> Self {
        Self::Migration(error)
    }
}

/// The durable, versioned store of consents, policies and entities.
#[derive(Debug)]
pub struct DurableStore {
    backend: Backend,
    changes: broadcast::Sender<StoreChange>,
}

#[derive(Debug)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

impl DurableStore {
    /// Connects (creating the SQLite file if missing), brings the schema up
    /// to date and, for PostgreSQL, starts listening to other replicas'
    /// changes. Reads no consent.
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let backend = match location {
            StoreLocation::Sqlite { dir } => Backend::Sqlite(sqlite::SqliteStore::open(dir).await?),
            StoreLocation::Postgres { url } => {
                Backend::Postgres(postgres::PgStore::open(url, changes.clone()).await?)
            }
        };
        Ok(Self { backend, changes })
    }

    /// [`DurableStore::open`] for a command that only reads the store
    /// (`check`, `plan`, `search`): a SQLite store that does not exist is
    /// read as an empty one held in memory, never created on disk.
    pub async fn open_for_reading(location: &StoreLocation) -> Result<Self, StoreError> {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        let backend = match location {
            StoreLocation::Sqlite { dir } => {
                Backend::Sqlite(sqlite::SqliteStore::open_existing_or_empty(dir).await?)
            }
            StoreLocation::Postgres { url } => {
                Backend::Postgres(postgres::PgStore::open(url, changes.clone()).await?)
            }
        };
        Ok(Self { backend, changes })
    }

    /// Where the consents are, for logs: never a password.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Sqlite(store) => store.describe(),
            Backend::Postgres(store) => store.describe(),
        }
    }

    /// Stores version 1 of a new consent. Fails with
    /// [`StoreError::Conflict`] if `id` exists.
    pub async fn create(&self, id: &str, version: NewVersion) -> Result<ConsentRecord, StoreError> {
        let record = crate::metrics::store_operation("consent_create", async {
            Ok::<_, StoreError>(match &self.backend {
                Backend::Sqlite(store) => store.create(id, version).await?,
                Backend::Postgres(store) => store.create(id, version).await?,
            })
        })
        .await?;
        self.announce([record.patient.as_str()]);
        Ok(record)
    }

    /// Stores the next version of `id` (version 1 if it does not exist yet).
    /// Returns the new record and the patient of the version it superseded,
    /// if any: it may differ, and then both patients are notified.
    pub async fn supersede(
        &self,
        id: &str,
        version: NewVersion,
    ) -> Result<(ConsentRecord, Option<String>), StoreError> {
        let (record, previous) = crate::metrics::store_operation("consent_supersede", async {
            Ok::<_, StoreError>(match &self.backend {
                Backend::Sqlite(store) => store.supersede(id, version).await?,
                Backend::Postgres(store) => store.supersede(id, version).await?,
            })
        })
        .await?;
        self.announce(std::iter::once(record.patient.as_str()).chain(previous.as_deref()));
        Ok((record, previous))
    }

    /// Stores version 1 of many new consents in one transaction: all or
    /// none. Fails with [`StoreError::Conflict`] if an id exists or repeats.
    /// Each distinct patient is notified once.
    pub async fn create_many(
        &self,
        items: Vec<(String, NewVersion)>,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let mut seen = HashSet::with_capacity(items.len());
        if let Some((id, _)) = items.iter().find(|(id, _)| !seen.insert(id.as_str())) {
            return Err(StoreError::Conflict { id: id.clone() });
        }
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let records = match &self.backend {
            Backend::Sqlite(store) => store.create_many(items).await?,
            Backend::Postgres(store) => store.create_many(items).await?,
        };
        self.announce(records.iter().map(|r| r.patient.as_str()));
        Ok(records)
    }

    /// The latest version of `id`, or the given one.
    pub async fn get(&self, id: &str, version: Option<u64>) -> Result<Option<ConsentRecord>, StoreError> {
        let version = match version.map(i64::try_from) {
            None => None,
            Some(Ok(version)) => Some(version),
            // No consent has that many versions.
            Some(Err(_)) => return Ok(None),
        };
        crate::metrics::store_operation("consent_get", async {
            match &self.backend {
                Backend::Sqlite(store) => Reads(&store.pool).get(id, version).await,
                Backend::Postgres(store) => Reads(&store.pool).get(id, version).await,
            }
        })
        .await
    }

    /// The latest version of every consent whose latest version belongs to
    /// `patient`, ordered by id (byte-wise).
    pub async fn latest_for_patient(&self, patient: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        crate::metrics::store_operation("consents_of_patient", async {
            match &self.backend {
                Backend::Sqlite(store) => Reads(&store.pool).latest_for_patient(patient).await,
                Backend::Postgres(store) => Reads(&store.pool).latest_for_patient(patient).await,
            }
        })
        .await
    }

    /// Every version of one consent, oldest first; empty if it does not exist.
    pub async fn history(&self, id: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => Reads(&store.pool).history(id).await,
            Backend::Postgres(store) => Reads(&store.pool).history(id).await,
        }
    }

    /// Changes made by this store and (PostgreSQL) by other replicas. The
    /// same change may arrive more than once. A receiver that lags
    /// ([`broadcast::error::RecvError::Lagged`]) has missed changes and must
    /// treat that as [`StoreChange::Everything`].
    pub fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    /// Whether the backing database answers, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(store) => Reads(&store.pool).ping().await,
            Backend::Postgres(store) => Reads(&store.pool).ping().await,
        }
    }

    /// Tells this store's subscribers about a change. (PostgreSQL replicas,
    /// this one included, also hear of it through the change feed.)
    fn tell(&self, change: StoreChange) {
        // Having no subscriber is not an error.
        let _ = self.changes.send(change);
    }

    /// Tells this store's subscribers, once each, about patients whose
    /// consents changed. (PostgreSQL replicas, this one included, also hear
    /// of it through the change feed.)
    fn announce<'a>(&self, patients: impl IntoIterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for patient in patients {
            if seen.insert(patient) {
                self.tell(StoreChange::Patient(patient.to_owned()));
            }
        }
    }
}

/// The record a write is about to store, with its body as stored.
/// `version` comes from a column that is checked to be at least 1.
fn new_record(id: &str, version: i64, new: NewVersion, recorded_at_unix_ms: i64) -> (ConsentRecord, String) {
    let body = new.body.to_string();
    let record = ConsentRecord {
        id: id.to_owned(),
        version: version.unsigned_abs(),
        patient: new.patient,
        status: new.status,
        fhir_version: new.fhir_version,
        body: new.body,
        recorded_at_unix_ms,
    };
    (record, body)
}

/// Now, in milliseconds since the Unix epoch.
fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// How many consents one multi-row `INSERT` of [`DurableStore::create_many`]
/// carries: 7 parameters each stays far below both databases' limits.
const INSERT_CHUNK: usize = 1000;

/// The migrations of one backend, compiled in with `include_str!` (so Cargo
/// rebuilds when a file changes) as `(version, description, sql)`. This is
/// what `sqlx::migrate!` would embed, without the `macros` feature.
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl fmt::Debug for Embedded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(version, description, _)| (version, description))).finish()
    }
}

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 'static>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// A migrator over `migrations`.
async fn migrator(migrations: &'static [(i64, &'static str, &'static str)]) -> Result<Migrator, StoreError> {
    Ok(Migrator::new(Embedded(migrations)).await?)
}

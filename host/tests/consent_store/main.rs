//! The consent store against real databases: every scenario runs on a
//! SQLite file in a temporary directory and, when
//! `CONSENTRY_TEST_POSTGRES_URL` names a PostgreSQL database, on that
//! database too, each test in a fresh schema of its own so that tests run in
//! parallel. Without the variable the PostgreSQL tests say they were skipped
//! and pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use consentry::consent_store::{ConsentChange, ConsentStore, NewVersion, StoreLocation};
use serde_json::{Value, json};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

mod location;
mod postgres_only;
mod scenarios;
mod sqlite_only;

/// The variable naming the PostgreSQL database the tests may use.
const POSTGRES_URL_VAR: &str = "CONSENTRY_TEST_POSTGRES_URL";

/// How long a change may take to arrive. Generous: only a missing change
/// fails a test, never a slow one.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs each scenario of [`scenarios`] as a SQLite test and a PostgreSQL test.
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = crate::Db::sqlite();
                    crate::scenarios::$scenario(&db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = crate::Db::postgres(concat!("postgres::", stringify!($scenario))).await
                    else {
                        return;
                    };
                    crate::scenarios::$scenario(&db).await;
                }
            )+
        }
    };
}

on_both_backends!(
    create_then_get,
    create_refuses_an_existing_id,
    supersede_adds_versions_and_keeps_old_ones,
    supersede_of_an_unknown_id_creates_version_1,
    supersede_can_move_a_consent_to_another_patient,
    latest_for_patient_returns_latest_versions_ordered_by_id,
    concurrent_supersedes_never_lose_or_repeat_a_version,
    reopening_keeps_every_version,
    create_many_stores_all_or_nothing,
    writes_are_announced_to_subscribers,
    versions_cannot_be_updated_or_deleted,
    an_unparsable_body_is_reported_corrupt,
    every_migration_file_is_applied,
    ping_answers,
);

/// A database for one test: a SQLite data directory, or a PostgreSQL
/// schema dropped when the test ends.
enum Db {
    Sqlite {
        dir: TempDir,
        tag: String,
    },
    Postgres {
        /// The test database with `search_path` set to the schema.
        url: String,
        schema: Schema,
    },
}

impl Db {
    fn sqlite() -> Self {
        Db::Sqlite { dir: tempfile::tempdir().unwrap(), tag: unique_name() }
    }

    /// A fresh schema in the PostgreSQL test database, or `None` (after
    /// saying so on stderr) when no database is configured.
    async fn postgres(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            #[expect(
                clippy::explicit_write,
                reason = "the harness captures `eprintln!` of a passing test, and a skip must be seen"
            )]
            writeln!(std::io::stderr(), "SKIPPED: {test} needs PostgreSQL; set {POSTGRES_URL_VAR}").unwrap();
            return None;
        };
        let name = unique_name();
        let mut admin = PgConnection::connect(&base).await.unwrap();
        admin.execute(format!("CREATE SCHEMA {name}").as_str()).await.unwrap();
        admin.close().await.unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        // The application name lets a test find this schema's connections.
        let url = format!("{base}{separator}options=-c%20search_path%3D{name}&application_name={name}");
        Some(Db::Postgres { url, schema: Schema { base, name } })
    }

    /// A name unique to this test, for patients whose notifications must
    /// not be confused with another test's (PostgreSQL channels are
    /// database-wide).
    fn tag(&self) -> &str {
        match self {
            Db::Sqlite { tag, .. } => tag,
            Db::Postgres { schema, .. } => &schema.name,
        }
    }

    fn location(&self) -> StoreLocation {
        match self {
            Db::Sqlite { dir, .. } => StoreLocation::Sqlite { dir: dir.path().to_owned() },
            Db::Postgres { url, .. } => StoreLocation::Postgres { url: url.clone() },
        }
    }

    /// A new store over this database (several may be open at once).
    async fn open(&self) -> ConsentStore {
        ConsentStore::open(&self.location()).await.unwrap()
    }

    fn sqlite_file(&self) -> Option<PathBuf> {
        match self {
            Db::Sqlite { dir, .. } => Some(dir.path().join("consents.sqlite3")),
            Db::Postgres { .. } => None,
        }
    }

    /// Runs one statement on a connection of its own, bypassing the store.
    async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self {
            Db::Sqlite { .. } => {
                let file = self.sqlite_file().unwrap();
                let mut connection =
                    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(file)).await?;
                Ok(sqlx::query(sql).execute(&mut connection).await?.rows_affected())
            }
            Db::Postgres { url, .. } => {
                let mut connection = PgConnection::connect(url).await?;
                Ok(sqlx::query(sql).execute(&mut connection).await?.rows_affected())
            }
        }
    }

    /// `(version, description, success)` of every applied migration.
    async fn applied_migrations(&self) -> Vec<(i64, String, bool)> {
        const SQL: &str = "SELECT version, description, success FROM _sqlx_migrations ORDER BY version";
        match self {
            Db::Sqlite { .. } => {
                let file = self.sqlite_file().unwrap();
                let mut connection =
                    SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(file))
                        .await
                        .unwrap();
                sqlx::query_as(SQL).fetch_all(&mut connection).await.unwrap()
            }
            Db::Postgres { url, .. } => {
                let mut connection = PgConnection::connect(url).await.unwrap();
                sqlx::query_as(SQL).fetch_all(&mut connection).await.unwrap()
            }
        }
    }

    /// `migrations/sqlite` or `migrations/postgres`.
    fn migrations_dir(&self) -> PathBuf {
        let backend = match self {
            Db::Sqlite { .. } => "sqlite",
            Db::Postgres { .. } => "postgres",
        };
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("migrations").join(backend)
    }
}

/// A PostgreSQL schema, dropped with everything in it when the test ends,
/// whether it passed or not.
struct Schema {
    base: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let base = self.base.clone();
        let sql = format!("DROP SCHEMA {} CASCADE", self.name);
        // Drop cannot await, and may run while a panic unwinds the test's
        // runtime: use a runtime of its own on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&base).await?;
                connection.execute(sql.as_str()).await?;
                connection.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("could not drop test schema {}: {error}", self.name),
            Err(_) => eprintln!("could not drop test schema {}: the dropping thread panicked", self.name),
        }
    }
}

/// A lowercase identifier no other test uses.
fn unique_name() -> String {
    format!("consentry_test_{}", uuid::Uuid::now_v7().simple())
}

/// A consent version for `patient` whose body carries `marker`.
fn version(patient: &str, status: &str, marker: Value) -> NewVersion {
    NewVersion {
        patient: patient.to_owned(),
        status: status.to_owned(),
        fhir_version: "4.0.1".to_owned(),
        body: json!({
            "resourceType": "Consent",
            "status": status,
            "patient": { "reference": format!("Patient/{patient}") },
            "marker": marker,
        }),
    }
}

/// Waits until `wanted` arrives, skipping other changes (other tests'
/// writes reach every PostgreSQL store of the database).
async fn wait_for(changes: &mut Receiver<ConsentChange>, wanted: &ConsentChange) {
    let found = tokio::time::timeout(CHANGE_TIMEOUT, async {
        loop {
            match changes.recv().await {
                Ok(change) if &change == wanted => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the change feed closed while waiting for {wanted:?}"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {wanted:?} within {CHANGE_TIMEOUT:?}");
}

/// Waits until every change of `wanted` has arrived, in any order.
async fn wait_for_all(changes: &mut Receiver<ConsentChange>, wanted: &[ConsentChange]) {
    let mut missing: Vec<&ConsentChange> = wanted.iter().collect();
    let found = tokio::time::timeout(CHANGE_TIMEOUT, async {
        while !missing.is_empty() {
            match changes.recv().await {
                Ok(change) => missing.retain(|m| **m != change),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the change feed closed"),
            }
        }
    })
    .await;
    assert!(found.is_ok(), "still waiting for {missing:?} after {CHANGE_TIMEOUT:?}");
}

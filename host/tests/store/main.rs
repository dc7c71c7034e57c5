//! The consent store against real databases: every scenario runs on a
//! SQLite file in a temporary directory and, when
//! `CONSENTRY_TEST_POSTGRES_URL` names a PostgreSQL database, on that
//! database too, each test in a fresh schema of its own so that tests run in
//! parallel. Without the variable the PostgreSQL tests say they were skipped
//! and pass.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use consentry::store::{DurableStore, NewVersion, StoreChange, StoreLocation};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tempfile::TempDir;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use postgres_schema::TestSchema;

#[path = "../../../tests/e2e/postgres_schema.rs"]
#[allow(dead_code, reason = "each suite uses part of the shared helper")]
mod postgres_schema;

mod bulk;
mod entities;
mod import;
mod location;
mod policies;
mod postgres_only;
mod scenarios;
mod search;
mod sqlite_only;

/// How long a change may take to arrive. Generous: only a missing change
/// fails a test, never a slow one.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs each scenario of each listed module as a SQLite test and a
/// PostgreSQL test (`sqlite::NAME` and `postgres::NAME`).
macro_rules! on_both_backends {
    ($($module:ident: [$($scenario:ident),+ $(,)?]),+ $(,)?) => {
        mod sqlite {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = crate::Db::sqlite();
                    crate::$module::$scenario(&db).await;
                }
            )+)+
        }
        mod postgres {
            $($(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = crate::Db::postgres(concat!("postgres::", stringify!($scenario)))
                    else {
                        return;
                    };
                    crate::$module::$scenario(&db).await;
                }
            )+)+
        }
    };
}

on_both_backends!(
    scenarios: [
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
    ],
    policies: [
        policy_versions_append_and_list_newest_first,
        a_stale_if_current_writes_nothing,
        by_hash_finds_the_newest_version_with_that_hash,
        policy_versions_survive_reopening,
        policy_versions_cannot_be_updated_or_deleted,
        an_unreadable_policy_version_is_reported_corrupt,
        concurrent_policy_writers_get_consecutive_versions,
        racing_writers_of_the_same_base_version_win_once,
    ],
    entities: [
        write_entities_numbers_revisions_and_logs_changes,
        the_last_write_of_a_uid_counts,
        replace_all_deletes_and_logs_the_rest,
        changes_since_replays_to_the_stored_state,
        entities_page_in_byte_order_and_by_type,
        entity_revisions_survive_reopening,
        entity_history_cannot_be_updated_or_deleted,
        concurrent_entity_writers_get_consecutive_revisions,
    ],
    search: [
        search_candidates_page_by_type_and_by_parent,
        the_parent_edges_of_entities_stored_before_the_migration_are_filled_in,
    ],
    import: [
        an_import_in_parts_is_one_revision,
        a_dropped_import_leaves_the_store_as_it_was,
        a_bad_entity_at_the_end_of_a_large_file_leaves_the_store_unchanged,
    ],
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
        schema: TestSchema,
    },
}

impl Db {
    fn sqlite() -> Self {
        Db::Sqlite { dir: tempfile::tempdir().unwrap(), tag: unique_name() }
    }

    /// A fresh schema in the PostgreSQL test database, or `None` (after
    /// saying so on stderr) when no database is configured.
    fn postgres(test: &str) -> Option<Self> {
        let schema = TestSchema::create(test)?;
        Some(Db::Postgres { url: schema.url(), schema })
    }

    /// A name unique to this test, for patients whose notifications must
    /// not be confused with another test's (PostgreSQL channels are
    /// database-wide).
    fn tag(&self) -> &str {
        match self {
            Db::Sqlite { tag, .. } => tag,
            Db::Postgres { schema, .. } => schema.name(),
        }
    }

    fn location(&self) -> StoreLocation {
        match self {
            Db::Sqlite { dir, .. } => StoreLocation::Sqlite { dir: dir.path().to_owned() },
            Db::Postgres { url, .. } => StoreLocation::Postgres { url: url.clone() },
        }
    }

    /// A new store over this database (several may be open at once).
    async fn open(&self) -> DurableStore {
        DurableStore::open(&self.location()).await.unwrap()
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
async fn wait_for(changes: &mut Receiver<StoreChange>, wanted: &StoreChange) {
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

/// Waits until each of the two replicas' feeds (`heard[i]`) has brought every
/// number the other replica acknowledged: `acknowledged` holds
/// `(replica, number)` pairs, and `change` makes the expected notification.
async fn each_hears_the_other(
    heard: &mut [Receiver<StoreChange>; 2],
    acknowledged: &[(u64, u64)],
    change: impl Fn(u64) -> StoreChange,
) {
    for (listener, changes) in heard.iter_mut().enumerate() {
        let others: Vec<StoreChange> = acknowledged
            .iter()
            .filter(|(writer, _)| usize::try_from(*writer).unwrap() != listener)
            .map(|(_, number)| change(*number))
            .collect();
        wait_for_all(changes, &others).await;
    }
}

/// Waits until every change of `wanted` has arrived, in any order.
async fn wait_for_all(changes: &mut Receiver<StoreChange>, wanted: &[StoreChange]) {
    let mut missing: Vec<&StoreChange> = wanted.iter().collect();
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

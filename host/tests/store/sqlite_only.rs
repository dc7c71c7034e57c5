//! What only the SQLite backend does: its file, its journal, its sync mode.

use consentry::store::{DurableStore, StoreLocation};
use serde_json::json;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use super::{Db, version};

#[tokio::test]
async fn the_database_is_a_wal_file_synced_at_every_commit() {
    let db = Db::sqlite();
    let store = db.open().await;
    let file = db.sqlite_file().unwrap();
    assert_eq!(store.describe(), format!("sqlite:{} (journal_mode=wal, synchronous=full)", file.display()));
    store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    assert!(file.is_file());
    // WAL mode is a property of the file: any connection sees it.
    let mut connection =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&file)).await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut connection).await.unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test]
async fn a_missing_data_directory_is_created() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("a").join("b");
    let store = DurableStore::open(&StoreLocation::Sqlite { dir: dir.clone() }).await.unwrap();
    store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    assert!(dir.join("consents.sqlite3").is_file());
}

#[tokio::test]
async fn an_unusable_data_directory_is_reported() {
    let parent = tempfile::tempdir().unwrap();
    let file = parent.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let error = DurableStore::open(&StoreLocation::Sqlite { dir: file.clone() }).await.unwrap_err();
    assert!(
        error.to_string().starts_with(&format!("cannot create the store directory `{}`: ", file.display())),
        "{error}"
    );
}

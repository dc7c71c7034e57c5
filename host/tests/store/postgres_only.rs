//! What only the PostgreSQL backend does: replicas hear of each other's
//! writes, and the change feed survives a lost connection.

use consentry::store::{DurableStore, StoreChange, StoreLocation};
use serde_json::json;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use super::{Db, version, wait_for, wait_for_all};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_reaches_the_subscribers_of_another() {
    let Some(db) = Db::postgres("postgres_only::a_write_on_one_replica_reaches_the_subscribers_of_another")
    else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    let mut changes = b.subscribe();
    let p1 = format!("{}-p1", db.tag());
    let p2 = format!("{}-p2", db.tag());

    a.create("c1", version(&p1, "active", json!(1))).await.unwrap();
    wait_for(&mut changes, &StoreChange::Patient(p1.clone())).await;
    a.supersede("c1", version(&p2, "active", json!(2))).await.unwrap();
    wait_for_all(&mut changes, &[StoreChange::Patient(p1), StoreChange::Patient(p2.clone())]).await;
    assert_eq!(b.latest_for_patient(&p2).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_reconnects_and_then_reports_everything_changed() {
    let Some(db) =
        Db::postgres("postgres_only::the_change_feed_reconnects_and_then_reports_everything_changed")
    else {
        return;
    };
    let a = db.open().await;
    let b = db.open().await;
    let mut changes = b.subscribe();

    // Kill the listening connections of this test's stores.
    let Db::Postgres { url, schema } = &db else { unreachable!() };
    let mut admin = PgConnection::connect(url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = $1 AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .bind(schema.name())
    .fetch_all(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    assert_eq!(killed, [true, true], "expected the two stores' listening connections");

    // First that the feed is down (decisions deny meanwhile), then that it is back.
    wait_for(&mut changes, &StoreChange::FeedLost).await;
    wait_for(&mut changes, &StoreChange::Everything).await;
    // Listening again: a later write still gets through.
    let p1 = format!("{}-p1", db.tag());
    a.create("c1", version(&p1, "active", json!(1))).await.unwrap();
    wait_for(&mut changes, &StoreChange::Patient(p1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_never_shows_the_password() {
    let Some(db) = Db::postgres("postgres_only::describe_never_shows_the_password") else {
        return;
    };
    let Db::Postgres { url, .. } = &db else { unreachable!() };
    // Trust authentication ignores the password; the test only needs it in the URL.
    let with_password = url.replacen("://postgres@", "://postgres:s3cret@", 1);
    assert!(with_password.contains("s3cret"), "expected a URL of user `postgres` without password: {url}");
    let store = DurableStore::open(&StoreLocation::Postgres { url: with_password }).await.unwrap();
    let described = store.describe();
    assert!(described.starts_with("postgres://postgres@"), "{described}");
    assert!(!described.contains("s3cret"), "{described}");
}

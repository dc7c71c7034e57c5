//! How fast a large directory is written and read back. Ignored by default
//! (a million entities take a while in a debug build); run with
//! `cargo test -p consentry --release --test store bulk -- --ignored --nocapture`.
//! `CONSENTRY_BULK_ENTITIES` changes the count. Prints the rates; asserts
//! only that everything was stored.

use std::time::Instant;

use consentry::store::EntityWrite;

use super::Db;
use super::entities::upsert;

/// How many entities to write, 1,000,000 unless the variable says otherwise.
fn count() -> usize {
    std::env::var("CONSENTRY_BULK_ENTITIES").map_or(1_000_000, |n| n.parse().unwrap())
}

async fn write_and_read(db: &Db, backend: &str) {
    let store = db.open().await;
    let count = count();
    let writes: Vec<EntityWrite> = (0..count)
        .map(|n| {
            upsert(["Patient", "Practitioner", "Group"][n % 3], &format!("e{n:08}"), "a typical attribute")
        })
        .collect();

    let again = writes.clone();
    let started = Instant::now();
    let written = store.write_entities(writes, true, "import", None).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(written.upserted, u64::try_from(count).unwrap());
    println!(
        "{backend}: wrote {count} entities in {elapsed:.2?}: {:.0}/s",
        count as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let (revision, all) = store.all_entities().await.unwrap();
    println!("{backend}: read {} entities back in {:.2?}", all.len(), started.elapsed());
    assert_eq!((revision, all.len()), (1, count));

    // Re-importing the same directory changes nothing and logs nothing.
    let started = Instant::now();
    let again = store.write_entities(again, true, "import", None).await.unwrap();
    println!("{backend}: re-imported them unchanged in {:.2?}", started.elapsed());
    assert_eq!((again.upserted, again.deleted), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: measures the bulk write rate"]
async fn sqlite_bulk_write_rate() {
    write_and_read(&Db::sqlite(), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: measures the bulk write rate"]
async fn postgres_bulk_write_rate() {
    let Some(db) = Db::postgres("bulk::postgres_bulk_write_rate") else {
        return;
    };
    write_and_read(&db, "postgres").await;
}

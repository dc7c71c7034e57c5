//! Scenarios run on both backends.

use std::collections::BTreeSet;
use std::sync::Arc;

use consentry::store::{ConsentRecord, NewVersion, StoreChange, StoreError};
use serde_json::json;

use super::{Db, version, wait_for_all};

pub async fn create_then_get(db: &Db) {
    let store = db.open().await;
    let new = version("p1", "active", json!("first"));
    let created = store.create("c1", new.clone()).await.unwrap();
    assert_eq!(created.id, "c1");
    assert_eq!(created.version, 1);
    assert_eq!(created.patient, "p1");
    assert_eq!(created.status, "active");
    assert_eq!(created.fhir_version, "4.0.1");
    assert_eq!(created.body, new.body);
    assert!(created.recorded_at_unix_ms > 1_600_000_000_000, "{}", created.recorded_at_unix_ms);

    assert_eq!(store.get("c1", None).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get("c1", Some(1)).await.unwrap(), Some(created.clone()));
    assert_eq!(store.get("c1", Some(2)).await.unwrap(), None);
    assert_eq!(store.get("c1", Some(u64::MAX)).await.unwrap(), None);
    assert_eq!(store.get("c2", None).await.unwrap(), None);
    assert_eq!(store.history("c1").await.unwrap(), vec![created]);
    assert_eq!(store.history("c2").await.unwrap(), vec![]);
}

pub async fn create_refuses_an_existing_id(db: &Db) {
    let store = db.open().await;
    let created = store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    let error = store.create("c1", version("p2", "draft", json!(2))).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict { id } if id == "c1"), "{error:?}");
    assert_eq!(error.to_string(), "consent `c1` already exists");
    assert_eq!(store.history("c1").await.unwrap(), vec![created]);
    assert_eq!(store.latest_for_patient("p2").await.unwrap(), vec![]);
}

pub async fn supersede_adds_versions_and_keeps_old_ones(db: &Db) {
    let store = db.open().await;
    // Key order and number forms must come back exactly as stored.
    let first = version("p1", "draft", json!({ "z": 1, "a": [1.5, -0.0, 1e-7], "m": "é\u{0}" }));
    let first_text = first.body.to_string();
    let v1 = store.create("c1", first).await.unwrap();
    let (v2, previous) = store.supersede("c1", version("p1", "active", json!(2))).await.unwrap();
    assert_eq!((v2.version, previous.as_deref()), (2, Some("p1")));
    let (v3, previous) = store.supersede("c1", version("p1", "inactive", json!(3))).await.unwrap();
    assert_eq!((v3.version, previous.as_deref()), (3, Some("p1")));
    assert_eq!(v3.status, "inactive");

    let history = store.history("c1").await.unwrap();
    assert_eq!(history, vec![v1.clone(), v2.clone(), v3.clone()]);
    assert_eq!(store.get("c1", None).await.unwrap(), Some(v3));
    assert_eq!(store.get("c1", Some(2)).await.unwrap(), Some(v2));
    let old = store.get("c1", Some(1)).await.unwrap().unwrap();
    assert_eq!(old, v1);
    assert_eq!(old.body.to_string(), first_text);
    assert_eq!(history[0].body.to_string(), first_text);
}

pub async fn supersede_of_an_unknown_id_creates_version_1(db: &Db) {
    let store = db.open().await;
    let (record, previous) = store.supersede("new", version("p1", "active", json!(1))).await.unwrap();
    assert_eq!((record.version, previous), (1, None));
    assert_eq!(store.get("new", None).await.unwrap(), Some(record.clone()));
    assert_eq!(store.latest_for_patient("p1").await.unwrap(), vec![record]);
}

pub async fn supersede_can_move_a_consent_to_another_patient(db: &Db) {
    let store = db.open().await;
    store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    let kept = store.create("c2", version("p1", "active", json!(2))).await.unwrap();
    let (moved, previous) = store.supersede("c1", version("p2", "active", json!(3))).await.unwrap();
    assert_eq!(previous.as_deref(), Some("p1"));
    assert_eq!((moved.version, moved.patient.as_str()), (2, "p2"));
    assert_eq!(store.latest_for_patient("p1").await.unwrap(), vec![kept]);
    assert_eq!(store.latest_for_patient("p2").await.unwrap(), vec![moved.clone()]);
    // Version 1 still says what it said, patient included.
    assert_eq!(store.get("c1", Some(1)).await.unwrap().unwrap().patient, "p1");

    // And back: p1 has it again, p2 no more.
    let (back, previous) = store.supersede("c1", version("p1", "active", json!(4))).await.unwrap();
    assert_eq!(previous.as_deref(), Some("p2"));
    assert_eq!(ids(&store.latest_for_patient("p1").await.unwrap()), ["c1", "c2"]);
    assert_eq!(store.latest_for_patient("p1").await.unwrap()[0], back);
    assert_eq!(store.latest_for_patient("p2").await.unwrap(), vec![]);
}

pub async fn latest_for_patient_returns_latest_versions_ordered_by_id(db: &Db) {
    let store = db.open().await;
    // Byte order, not a locale's: upper case before `_` before lower case.
    for id in ["b", "B", "a", "_z", "a-1"] {
        store.create(id, version("p", "active", json!(id))).await.unwrap();
    }
    store.create("other", version("q", "active", json!("other"))).await.unwrap();
    store.supersede("a", version("p", "inactive", json!("a2"))).await.unwrap();
    let (latest_a, _) = store.supersede("a", version("p", "active", json!("a3"))).await.unwrap();

    let latest = store.latest_for_patient("p").await.unwrap();
    assert_eq!(ids(&latest), ["B", "_z", "a", "a-1", "b"]);
    assert_eq!(latest[2], latest_a);
    assert!(latest.iter().filter(|r| r.id != "a").all(|r| r.version == 1));
    assert_eq!(ids(&store.latest_for_patient("q").await.unwrap()), ["other"]);
    assert_eq!(store.latest_for_patient("nobody").await.unwrap(), vec![]);
    assert_eq!(store.latest_for_patient("P").await.unwrap(), vec![]);
}

pub async fn concurrent_supersedes_never_lose_or_repeat_a_version(db: &Db) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 5;
    // Two stores over the same database, as two replicas would be.
    let stores = [Arc::new(db.open().await), Arc::new(db.open().await)];
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&stores[usize::try_from(writer % 2).unwrap()]);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for n in 0..EACH {
                let marker = json!({ "writer": writer, "n": n });
                let (record, _) = store.supersede("shared", version("p", "active", marker)).await.unwrap();
                versions.push(record.version);
            }
            versions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    acknowledged.sort_unstable();
    let total = WRITERS * EACH;
    assert_eq!(acknowledged, (1..=total).collect::<Vec<_>>());

    let history = stores[0].history("shared").await.unwrap();
    assert_eq!(history.iter().map(|r| r.version).collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>());
    let markers: BTreeSet<(u64, u64)> = history
        .iter()
        .map(|r| (r.body["marker"]["writer"].as_u64().unwrap(), r.body["marker"]["n"].as_u64().unwrap()))
        .collect();
    assert_eq!(markers.len(), usize::try_from(total).unwrap(), "a write was lost or stored twice");
    assert_eq!(stores[1].get("shared", None).await.unwrap().unwrap().version, total);
}

pub async fn reopening_keeps_every_version(db: &Db) {
    let store = db.open().await;
    let v1 = store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    let (v2, _) = store.supersede("c1", version("p1", "inactive", json!(2))).await.unwrap();
    drop(store);

    // Opening again re-runs the migrations, which finds nothing to do.
    let store = db.open().await;
    assert_eq!(store.history("c1").await.unwrap(), vec![v1, v2.clone()]);
    assert_eq!(store.latest_for_patient("p1").await.unwrap(), vec![v2]);
    let (v3, _) = store.supersede("c1", version("p1", "active", json!(3))).await.unwrap();
    assert_eq!(v3.version, 3);
}

pub async fn create_many_stores_all_or_nothing(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.create_many(Vec::new()).await.unwrap(), vec![]);

    // More than one chunk of the multi-row inserts.
    let items: Vec<(String, NewVersion)> = (0..2500)
        .map(|n| (format!("bulk-{n:05}"), version(&format!("p{}", n % 7), "active", json!(n))))
        .collect();
    let created = store.create_many(items.clone()).await.unwrap();
    assert_eq!(created.len(), 2500);
    assert!(created.iter().zip(&items).all(|(record, (id, new))| {
        record.id == *id && record.version == 1 && record.patient == new.patient && record.body == new.body
    }));
    assert_eq!(store.get("bulk-01234", None).await.unwrap().as_ref(), Some(&created[1234]));
    let p3 = store.latest_for_patient("p3").await.unwrap();
    assert_eq!(p3, created.iter().filter(|r| r.patient == "p3").cloned().collect::<Vec<_>>());

    // One existing id refuses the whole batch.
    let clash = vec![
        ("fresh-1".to_owned(), version("p1", "active", json!(1))),
        ("bulk-02000".to_owned(), version("p1", "active", json!(2))),
    ];
    let error = store.create_many(clash).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict { id } if id == "bulk-02000"), "{error:?}");
    assert_eq!(store.get("fresh-1", None).await.unwrap(), None);
    assert_eq!(store.history("bulk-02000").await.unwrap(), vec![created[2000].clone()]);

    // So does an id given twice.
    let twice = vec![
        ("fresh-2".to_owned(), version("p1", "active", json!(1))),
        ("fresh-2".to_owned(), version("p2", "active", json!(2))),
    ];
    let error = store.create_many(twice).await.unwrap_err();
    assert!(matches!(&error, StoreError::Conflict { id } if id == "fresh-2"), "{error:?}");
    assert_eq!(store.get("fresh-2", None).await.unwrap(), None);
}

pub async fn writes_are_announced_to_subscribers(db: &Db) {
    let store = db.open().await;
    let mut changes = store.subscribe();
    let patient = |name: &str| format!("{}-{name}", db.tag());
    let change = |name: &str| StoreChange::Patient(patient(name));

    store.create("c1", version(&patient("p1"), "active", json!(1))).await.unwrap();
    wait_for_all(&mut changes, &[change("p1")]).await;

    // Moving a consent concerns both patients.
    store.supersede("c1", version(&patient("p2"), "active", json!(2))).await.unwrap();
    wait_for_all(&mut changes, &[change("p1"), change("p2")]).await;

    let batch = vec![
        ("c2".to_owned(), version(&patient("p3"), "active", json!(3))),
        ("c3".to_owned(), version(&patient("p3"), "active", json!(4))),
        ("c4".to_owned(), version(&patient("p4"), "active", json!(5))),
    ];
    store.create_many(batch).await.unwrap();
    wait_for_all(&mut changes, &[change("p3"), change("p4")]).await;
}

pub async fn versions_cannot_be_updated_or_deleted(db: &Db) {
    let store = db.open().await;
    let v1 = store.create("c1", version("p1", "active", json!(1))).await.unwrap();
    let update = db.execute("UPDATE consent_versions SET status = 'rejected'").await.unwrap_err();
    assert!(update.to_string().contains("never changed"), "{update}");
    let delete = db.execute("DELETE FROM consent_versions").await.unwrap_err();
    assert!(delete.to_string().contains("never"), "{delete}");
    assert_eq!(store.history("c1").await.unwrap(), vec![v1]);
}

pub async fn an_unparsable_body_is_reported_corrupt(db: &Db) {
    let store = db.open().await;
    db.execute("INSERT INTO consent_heads (id, version, patient) VALUES ('bad', 1, 'p1')").await.unwrap();
    db.execute(
        "INSERT INTO consent_versions (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) \
         VALUES ('bad', 1, 'p1', 'active', '4.0.1', '{not json', 0)",
    )
    .await
    .unwrap();
    let error = store.get("bad", None).await.unwrap_err();
    assert!(matches!(&error, StoreError::Corrupt { id, .. } if id == "bad"), "{error:?}");
    assert!(error.to_string().starts_with("stored consent `bad` is corrupt: "), "{error}");
    assert!(matches!(store.latest_for_patient("p1").await, Err(StoreError::Corrupt { .. })));
    assert!(matches!(store.history("bad").await, Err(StoreError::Corrupt { .. })));
}

pub async fn every_migration_file_is_applied(db: &Db) {
    drop(db.open().await);
    let mut files: Vec<(i64, String, bool)> = std::fs::read_dir(db.migrations_dir())
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let stem = name.strip_suffix(".sql").unwrap();
            let (number, description) = stem.split_once('_').unwrap();
            (number.parse().unwrap(), description.replace('_', " "), true)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    assert_eq!(db.applied_migrations().await, files);
    // A second store finds nothing to do and changes nothing.
    drop(db.open().await);
    assert_eq!(db.applied_migrations().await, files);
}

pub async fn ping_answers(db: &Db) {
    let store = db.open().await;
    store.ping().await.unwrap();
}

fn ids(records: &[ConsentRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

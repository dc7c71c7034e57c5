//! The candidates of a search, paged from the store in uid order: the
//! entities of one type, and the records of one patient through the
//! parent edges every write keeps, on both backends.

use consentry::store::EntityWrite;

use super::Db;
use super::entities::uid;

/// A record of `patient`, its parent written in the `{"type", "id"}` form,
/// or in the `__entity` form when `escaped`.
fn record(id: &str, patient: &str, escaped: bool) -> EntityWrite {
    let parent = if escaped {
        format!(r#"{{"__entity":{{"type":"Patient","id":"{patient}"}}}}"#)
    } else {
        format!(r#"{{"type":"Patient","id":"{patient}"}}"#)
    };
    let body = format!(
        r#"{{"uid":{{"type":"Record","id":"{id}"}},"attrs":{{"patient":{{"__entity":{{"type":"Patient","id":"{patient}"}}}}}},"parents":[{parent}]}}"#
    );
    EntityWrite { uid: uid("Record", id), entity_type: "Record".to_owned(), body: Some(body) }
}

fn patient(id: &str) -> EntityWrite {
    let body = format!(r#"{{"uid":{{"type":"Patient","id":"{id}"}},"attrs":{{}},"parents":[]}}"#);
    EntityWrite { uid: uid("Patient", id), entity_type: "Patient".to_owned(), body: Some(body) }
}

fn records(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| uid("Record", id)).collect()
}

pub async fn search_candidates_page_by_type_and_by_parent(db: &Db) {
    let store = db.open().await;
    let writes = vec![
        patient("p1"),
        patient("p2"),
        record("r3", "p1", false),
        record("r1", "p1", true),
        record("r2", "p2", false),
        record("R0", "p1", false),
    ];
    store.write_entities(writes, false, "admin", None).await.unwrap();
    let below = |after: &'static str, limit| {
        let store = &store;
        async move { store.child_uids(("Patient", "p1"), "Record", after, limit).await.unwrap() }
    };
    // Byte order: upper case first.
    assert_eq!(below("", 10).await, records(&["R0", "r1", "r3"]));
    assert_eq!(below("", 2).await, records(&["R0", "r1"]));
    let after = uid("Record", "r1");
    let rest = store.child_uids(("Patient", "p1"), "Record", &after, 2).await.unwrap();
    assert_eq!(rest, records(&["r3"]));
    assert_eq!(store.child_uids(("Patient", "p1"), "Patient", "", 10).await.unwrap(), Vec::<String>::new());
    assert_eq!(store.entity_uids("Record", "", 10).await.unwrap(), records(&["R0", "r1", "r2", "r3"]));
    assert_eq!(store.entity_uids("Record", &uid("Record", "r1"), 1).await.unwrap(), records(&["r2"]));
    assert_eq!(
        store.entity_uids("Patient", "", 10).await.unwrap(),
        [uid("Patient", "p1"), uid("Patient", "p2")]
    );

    // A record moved to another patient, and one deleted, leave p1's list at once.
    let moved = record("r1", "p2", false);
    let deleted = EntityWrite { uid: uid("Record", "r3"), entity_type: "Record".to_owned(), body: None };
    store.write_entities(vec![moved, deleted], false, "admin", None).await.unwrap();
    assert_eq!(below("", 10).await, records(&["R0"]));
    let p2 = store.child_uids(("Patient", "p2"), "Record", "", 10).await.unwrap();
    assert_eq!(p2, records(&["r1", "r2"]));

    // Rewriting an entity unchanged keeps its edges; replacing the whole
    // directory drops the edges of everything it does not keep.
    store.write_entities(vec![record("R0", "p1", false)], false, "admin", None).await.unwrap();
    assert_eq!(below("", 10).await, records(&["R0"]));
    store.write_entities(vec![patient("p1"), record("r9", "p1", true)], true, "admin", None).await.unwrap();
    assert_eq!(below("", 10).await, records(&["r9"]));
    assert_eq!(store.child_uids(("Patient", "p2"), "Record", "", 10).await.unwrap(), Vec::<String>::new());
}

pub async fn the_parent_edges_of_entities_stored_before_the_migration_are_filled_in(db: &Db) {
    let store = db.open().await;
    store
        .write_entities(
            vec![patient("p1"), record("a", "p1", false), record("b", "p1", true)],
            false,
            "admin",
            None,
        )
        .await
        .unwrap();
    drop(store);
    // Back to the state before the migration, as an older release left it.
    db.execute("DROP TABLE entity_parents").await.unwrap();
    db.execute("DELETE FROM _sqlx_migrations WHERE version = 3").await.unwrap();
    let store = db.open().await;
    assert_eq!(store.child_uids(("Patient", "p1"), "Record", "", 10).await.unwrap(), records(&["a", "b"]));
}

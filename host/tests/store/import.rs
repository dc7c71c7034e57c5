//! A revision written in parts (`DurableStore::begin_entity_import`) and
//! the `consentry entities import` built on it, on both backends: one
//! revision when it commits, nothing at all when it does not, however much
//! was written before the refusal.

use std::io::Write as _;
use std::path::Path;

use consentry::entity_import::{self, IMPORT_ACTOR, ImportError};
use consentry::store::{DurableStore, NewPolicyVersion, VersionOrigin};
use serde_json::json;

use super::Db;
use super::entities::{uid, upsert};

/// More entities than the import validates and writes at once, so that
/// several parts are written inside the transaction before the last one.
const LARGE: usize = 20_000;

pub async fn an_import_in_parts_is_one_revision(db: &Db) {
    let store = db.open().await;
    store
        .write_entities(vec![upsert("User", "kept", "1"), upsert("User", "a", "1")], false, "admin", None)
        .await
        .unwrap();
    let mut import = store.begin_entity_import().await.unwrap();
    import
        .write(vec![upsert("User", "a", "2"), upsert("User", "b", "1"), upsert("User", "b", "2")])
        .await
        .unwrap();
    // Unchanged, and written again in a later part: the later write counts.
    import.write(vec![upsert("User", "kept", "1"), upsert("User", "b", "3")]).await.unwrap();
    let revision = import.commit(IMPORT_ACTOR, Some("parts")).await.unwrap();
    assert_eq!((revision.revision, revision.upserted, revision.deleted), (2, 2, 0));
    assert_eq!((revision.actor.as_str(), revision.comment.as_deref()), (IMPORT_ACTOR, Some("parts")));
    let state = store.all_entities().await.unwrap();
    let expected = [upsert("User", "a", "2"), upsert("User", "b", "3"), upsert("User", "kept", "1")]
        .map(|write| (write.uid, write.body.unwrap()));
    assert_eq!(state, (2, expected.to_vec()));
    let logged: Vec<(u64, String)> =
        store.entity_changes_since(1).await.unwrap().into_iter().map(|(r, uid, _)| (r, uid)).collect();
    assert_eq!(logged, [(2, uid("User", "a")), (2, uid("User", "b"))]);
}

pub async fn a_dropped_import_leaves_the_store_as_it_was(db: &Db) {
    let store = db.open().await;
    store.write_entities(vec![upsert("User", "a", "1")], false, "admin", None).await.unwrap();
    let before = store.all_entities().await.unwrap();
    let mut import = store.begin_entity_import().await.unwrap();
    import.write((0..3000).map(|n| upsert("User", &format!("u{n}"), "1")).collect()).await.unwrap();
    import.write(vec![upsert("User", "a", "2")]).await.unwrap();
    drop(import);
    assert_eq!(store.all_entities().await.unwrap(), before);
    assert_eq!(store.entity_changes_since(1).await.unwrap(), []);
    // Nothing holds the store: the next write takes the number the
    // dropped import had claimed.
    let next = store.write_entities(vec![upsert("User", "b", "1")], false, "admin", None).await.unwrap();
    assert_eq!(next.revision, 2);
}

pub async fn a_bad_entity_at_the_end_of_a_large_file_leaves_the_store_unchanged(db: &Db) {
    let store = db.open().await;
    store_the_pack(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..LARGE).map(practitioner).collect();
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, lines[..100].join("\n")).unwrap();
    let first = entity_import::import(&store, &good, false).await.unwrap();
    assert_eq!((first.revision, first.upserted), (1, 100));
    let before = store.all_entities().await.unwrap();

    // Valid JSON, and a valid entity without the schema: only the schema refuses it.
    lines[LARGE - 1] =
        json!({"uid": {"type": "Practitioner", "id": "dr-x"}, "attrs": {"role": 7}, "parents": []})
            .to_string();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let refused = entity_import::import(&store, &bad, false).await.unwrap_err();
    assert!(matches!(refused, ImportError::Invalid { .. }), "{refused}");
    assert!(refused.to_string().contains(&format!("line {LARGE}:")), "{refused}");
    assert_eq!(store.all_entities().await.unwrap(), before);
    assert_eq!(store.entity_changes_since(1).await.unwrap(), []);

    // The same as one JSON array: its last element is named (from 0).
    let array = dir.path().join("bad.json");
    let mut file = std::fs::File::create(&array).unwrap();
    write!(file, "[{}]", lines.join(",\n")).unwrap();
    let refused = entity_import::import(&store, &array, false).await.unwrap_err();
    assert!(refused.to_string().contains(&format!("element {}:", LARGE - 1)), "{refused}");
    assert_eq!(store.all_entities().await.unwrap(), before);

    // Without the bad line, all of it is one revision, stored exactly as
    // every other writer stores an entity.
    std::fs::write(&bad, lines[..LARGE - 1].join("\n")).unwrap();
    let second = entity_import::import(&store, &bad, false).await.unwrap();
    assert_eq!((second.revision, second.upserted), (2, LARGE as u64 - 1 - 100));
    let (revision, stored) = store.all_entities().await.unwrap();
    assert_eq!((revision, stored.len()), (2, LARGE - 1));
    let dr_7 = store.entity(&uid("Practitioner", "dr-7")).await.unwrap().unwrap();
    let given: serde_json::Value = serde_json::from_str(&practitioner(7)).unwrap();
    assert_eq!(dr_7, given.to_string());
}

/// Practitioner `dr-N`, as a line of the file: not compact, so that the
/// stored body is seen to be the compact JSON every writer stores.
fn practitioner(n: usize) -> String {
    let entity = json!({"uid": {"type": "Practitioner", "id": format!("dr-{n}")},
        "attrs": {"role": "physician", "organization": {"type": "Organization", "id": "st-mary"}},
        "parents": [{"type": "Organization", "id": "st-mary"}, {"type": "Group", "id": format!("team-{}", n % 100)}]});
    serde_json::to_string_pretty(&entity).unwrap().replace('\n', " ")
}

/// Stores the bundled pack's schema and policies as the newest version.
async fn store_the_pack(store: &DurableStore) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let version = NewPolicyVersion {
        hash: "pack".to_owned(),
        schema: Some(read("schema.cedarschema")),
        schema_is_json: false,
        policies: read("pack.cedar") + "\n" + &read("transfers.cedar"),
        links: json!([]),
        special: None,
        origin: VersionOrigin::Directory,
        actor: "directory".to_owned(),
        comment: None,
    };
    store.append_policy_version(version, None).await.unwrap();
}

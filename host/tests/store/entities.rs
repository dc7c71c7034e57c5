//! The entity directory, on both backends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use consentry::store::{DurableStore, EntityRevision, EntityWrite, StoreChange};

use super::{Db, each_hears_the_other, wait_for};

/// `Type::"id"`, as Cedar prints a uid.
pub fn uid(entity_type: &str, id: &str) -> String {
    format!("{entity_type}::\"{id}\"")
}

/// An upsert of entity `Type::"id"` whose body carries `marker`.
pub fn upsert(entity_type: &str, id: &str, marker: &str) -> EntityWrite {
    let uid = uid(entity_type, id);
    let body = format!(
        r#"{{"uid":{{"type":"{entity_type}","id":"{id}"}},"attrs":{{"marker":"{marker}"}},"parents":[]}}"#
    );
    EntityWrite { uid, entity_type: entity_type.to_owned(), body: Some(body) }
}

/// A deletion of entity `Type::"id"`.
pub fn delete(entity_type: &str, id: &str) -> EntityWrite {
    EntityWrite { uid: uid(entity_type, id), entity_type: entity_type.to_owned(), body: None }
}

/// The state a write sequence should leave, as `all_entities` returns it.
fn expected(writes: &[EntityWrite]) -> Vec<(String, String)> {
    let mut state = BTreeMap::new();
    for write in writes {
        match &write.body {
            Some(body) => state.insert(write.uid.clone(), body.clone()),
            None => state.remove(&write.uid),
        };
    }
    state.into_iter().collect()
}

/// Applies `changes` to `state`, as a replica catching up would.
fn replay(state: &[(String, String)], changes: &[(u64, String, Option<String>)]) -> Vec<(String, String)> {
    let mut state: BTreeMap<String, String> = state.iter().cloned().collect();
    for (_, uid, body) in changes {
        match body {
            Some(body) => state.insert(uid.clone(), body.clone()),
            None => state.remove(uid),
        };
    }
    state.into_iter().collect()
}

fn counts(revision: &EntityRevision) -> (u64, u64, u64, bool) {
    (revision.revision, revision.upserted, revision.deleted, revision.replaced_all)
}

pub async fn write_entities_numbers_revisions_and_logs_changes(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.entity_revision().await.unwrap(), 0);
    assert_eq!(store.all_entities().await.unwrap(), (0, vec![]));
    let mut changes = store.subscribe();

    let first = vec![upsert("User", "a", "1"), upsert("User", "b", "1"), upsert("Group", "g", "1")];
    let r1 = store.write_entities(first.clone(), false, "admin", Some("initial")).await.unwrap();
    assert_eq!(counts(&r1), (1, 3, 0, false));
    assert_eq!((r1.actor.as_str(), r1.comment.as_deref()), ("admin", Some("initial")));
    wait_for(&mut changes, &StoreChange::Entities { revision: 1 }).await;

    // Change a, delete b, delete one that never existed, and rewrite g as it is.
    let second = vec![
        upsert("User", "a", "2"),
        delete("User", "b"),
        delete("User", "ghost"),
        upsert("Group", "g", "1"),
    ];
    let r2 = store.write_entities(second.clone(), false, "directory", None).await.unwrap();
    assert_eq!(counts(&r2), (2, 1, 1, false));
    wait_for(&mut changes, &StoreChange::Entities { revision: 2 }).await;

    let all: Vec<EntityWrite> = first.iter().chain(&second).cloned().collect();
    assert_eq!(store.all_entities().await.unwrap(), (2, expected(&all)));
    assert_eq!(store.entity_revision().await.unwrap(), 2);
    assert_eq!(store.entity(&uid("User", "a")).await.unwrap(), second[0].body);
    assert_eq!(store.entity(&uid("User", "b")).await.unwrap(), None);

    let since_0 = store.entity_changes_since(0).await.unwrap();
    let logged = |revision: u64, write: &EntityWrite| (revision, write.uid.clone(), write.body.clone());
    assert_eq!(
        since_0,
        vec![
            logged(1, &first[2]), // `Group::"g"` sorts before `User::…`
            logged(1, &first[0]),
            logged(1, &first[1]),
            logged(2, &second[0]),
            logged(2, &second[1]),
        ]
    );
    assert_eq!(store.entity_changes_since(1).await.unwrap(), since_0[3..]);
    assert_eq!(store.entity_changes_since(2).await.unwrap(), vec![]);
    assert_eq!(store.entity_changes_since(u64::MAX).await.unwrap(), vec![]);

    // A write that changes nothing still is a revision.
    let r3 = store.write_entities(vec![upsert("User", "a", "2")], false, "admin", None).await.unwrap();
    assert_eq!(counts(&r3), (3, 0, 0, false));
    assert_eq!(store.entity_changes_since(2).await.unwrap(), vec![]);
    assert_eq!(store.entity_revisions(None, 10).await.unwrap(), vec![r3.clone(), r2.clone(), r1.clone()]);
    assert_eq!(store.entity_revisions(Some(3), 1).await.unwrap(), vec![r2]);
    assert_eq!(store.entity_revisions(Some(2), 10).await.unwrap(), vec![r1]);
    assert_eq!(store.entity_revisions(Some(1), 10).await.unwrap(), vec![]);
}

pub async fn the_last_write_of_a_uid_counts(db: &Db) {
    let store = db.open().await;
    let writes = vec![
        upsert("User", "a", "1"),
        upsert("User", "a", "2"),
        upsert("User", "b", "1"),
        delete("User", "b"),
        delete("User", "c"),
        upsert("User", "c", "1"),
    ];
    let r1 = store.write_entities(writes.clone(), false, "admin", None).await.unwrap();
    assert_eq!(counts(&r1), (1, 2, 0, false));
    assert_eq!(store.all_entities().await.unwrap(), (1, expected(&writes)));
    assert_eq!(store.entity_changes_since(0).await.unwrap().len(), 2);
}

pub async fn replace_all_deletes_and_logs_the_rest(db: &Db) {
    let store = db.open().await;
    let first: Vec<EntityWrite> = (0..5).map(|n| upsert("User", &format!("u{n}"), "1")).collect();
    store.write_entities(first, false, "admin", None).await.unwrap();

    // Keep u0 as it is, change u1, add u9: u2, u3 and u4 go.
    let replacement = vec![upsert("User", "u0", "1"), upsert("User", "u1", "2"), upsert("User", "u9", "1")];
    let r2 = store.write_entities(replacement.clone(), true, "directory", Some("reload")).await.unwrap();
    assert_eq!(counts(&r2), (2, 2, 3, true));
    assert_eq!(store.all_entities().await.unwrap(), (2, expected(&replacement)));
    let logged: Vec<(String, bool)> = store
        .entity_changes_since(1)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, uid, body)| (uid, body.is_some()))
        .collect();
    let expected_log: Vec<(String, bool)> =
        [("u1", true), ("u2", false), ("u3", false), ("u4", false), ("u9", true)]
            .into_iter()
            .map(|(id, upserted)| (uid("User", id), upserted))
            .collect();
    assert_eq!(logged, expected_log);

    // Replacing with nothing empties the directory.
    let r3 = store.write_entities(Vec::new(), true, "directory", None).await.unwrap();
    assert_eq!(counts(&r3), (3, 0, 3, true));
    assert_eq!(store.all_entities().await.unwrap(), (3, vec![]));
}

pub async fn changes_since_replays_to_the_stored_state(db: &Db) {
    let store = db.open().await;
    // More than one chunk of the multi-row statements, then a mix of
    // changes, deletions and a replacement, from a fixed pseudo-random walk.
    let mut all: Vec<EntityWrite> = (0..2500).map(|n| upsert("User", &format!("u{n:04}"), "0")).collect();
    store.write_entities(all.clone(), false, "import", None).await.unwrap();
    let (at_1, state_1) = store.all_entities().await.unwrap();
    assert_eq!((at_1, state_1.len()), (1, 2500));

    let mut seed: u64 = 7;
    let mut next = move |bound: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for round in 1..=6 {
        let writes: Vec<EntityWrite> = (0..1500)
            .map(|_| {
                let id = format!("u{:04}", next(3000));
                if next(4) == 0 { delete("User", &id) } else { upsert("User", &id, &round.to_string()) }
            })
            .collect();
        store.write_entities(writes.clone(), false, "admin", None).await.unwrap();
        all.extend(writes);
    }
    let kept: Vec<EntityWrite> = expected(&all)
        .into_iter()
        .filter(|(uid, _)| uid.ends_with("0\""))
        .map(|(uid, body)| EntityWrite { uid, entity_type: "User".to_owned(), body: Some(body) })
        .collect();
    let last = store.write_entities(kept.clone(), true, "directory", None).await.unwrap();
    assert_eq!(last.revision, 8);
    assert_eq!(last.upserted, 0);
    all = kept;

    let (revision, now) = store.all_entities().await.unwrap();
    assert_eq!(revision, 8);
    assert_eq!(now, expected(&all));
    assert_eq!(replay(&[], &store.entity_changes_since(0).await.unwrap()), now);
    assert_eq!(replay(&state_1, &store.entity_changes_since(1).await.unwrap()), now);
    let revisions = store.entity_revisions(None, 100).await.unwrap();
    let logged: u64 = revisions.iter().map(|r| r.upserted + r.deleted).sum();
    assert_eq!(u64::try_from(store.entity_changes_since(0).await.unwrap().len()).unwrap(), logged);
}

pub async fn entities_page_in_byte_order_and_by_type(db: &Db) {
    let store = db.open().await;
    // Byte order, not a locale's: upper case before `_` before lower case.
    let writes = vec![
        upsert("User", "b", "1"),
        upsert("User", "B", "1"),
        upsert("User", "_z", "1"),
        upsert("User", "a", "1"),
        upsert("Group", "g", "1"),
        upsert("Group", "G", "1"),
        upsert("Zone", "z", "1"),
    ];
    store.write_entities(writes, false, "admin", None).await.unwrap();
    let uids = |page: Vec<(String, String)>| page.into_iter().map(|(uid, _)| uid).collect::<Vec<_>>();
    let users = [uid("User", "B"), uid("User", "_z"), uid("User", "a"), uid("User", "b")];

    assert_eq!(uids(store.entities_page(Some("User"), None, 100).await.unwrap()), users);
    assert_eq!(uids(store.entities_page(Some("User"), None, 2).await.unwrap()), users[..2]);
    assert_eq!(uids(store.entities_page(Some("User"), Some(&users[1]), 2).await.unwrap()), users[2..]);
    assert_eq!(
        uids(store.entities_page(Some("User"), Some(&users[3]), 2).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(uids(store.entities_page(Some("Nobody"), None, 2).await.unwrap()), Vec::<String>::new());
    assert_eq!(
        uids(store.entities_page(Some("Group"), None, 10).await.unwrap()),
        [uid("Group", "G"), uid("Group", "g")]
    );

    let mut everything = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.entities_page(None, after.as_deref(), 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        everything.extend(page);
    }
    let (_, all) = store.all_entities().await.unwrap();
    assert_eq!(everything, all);
    assert_eq!(everything.len(), 7);
    assert!(everything.windows(2).all(|pair| pair[0].0.as_bytes() < pair[1].0.as_bytes()));
}

pub async fn entity_revisions_survive_reopening(db: &Db) {
    let store = db.open().await;
    let writes = vec![upsert("User", "a", "1")];
    let r1 = store.write_entities(writes.clone(), false, "admin", None).await.unwrap();
    drop(store);
    let store = db.open().await;
    assert_eq!(store.all_entities().await.unwrap(), (1, expected(&writes)));
    assert_eq!(store.entity_revisions(None, 10).await.unwrap(), vec![r1]);
    let r2 = store.write_entities(vec![delete("User", "a")], false, "admin", None).await.unwrap();
    assert_eq!(counts(&r2), (2, 0, 1, false));
}

pub async fn entity_history_cannot_be_updated_or_deleted(db: &Db) {
    let store = db.open().await;
    store.write_entities(vec![upsert("User", "a", "1")], false, "admin", None).await.unwrap();
    for table in ["entity_revisions", "entity_changes"] {
        let update = db.execute(&format!("UPDATE {table} SET revision = 9")).await.unwrap_err();
        assert!(update.to_string().contains("never changed"), "{table}: {update}");
        let delete = db.execute(&format!("DELETE FROM {table}")).await.unwrap_err();
        assert!(delete.to_string().contains("never"), "{table}: {delete}");
    }
    assert_eq!(store.entity_changes_since(0).await.unwrap().len(), 1);
    assert_eq!(store.entity_revisions(None, 10).await.unwrap().len(), 1);
}

pub async fn concurrent_entity_writers_get_consecutive_revisions(db: &Db) {
    const WRITERS: u64 = 6;
    const EACH: u64 = 10;
    let stores = [Arc::new(db.open().await), Arc::new(db.open().await)];
    let mut heard = [stores[0].subscribe(), stores[1].subscribe()];
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store: Arc<DurableStore> = Arc::clone(&stores[usize::try_from(writer % 2).unwrap()]);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for n in 0..EACH {
                // Every writer touches the shared entity and one of its own.
                let writes = vec![
                    upsert("User", "shared", &format!("{writer}-{n}")),
                    upsert("User", &format!("w{writer}"), &n.to_string()),
                ];
                let written = store.write_entities(writes, false, &format!("w{writer}"), None).await.unwrap();
                assert_eq!(written.upserted, 2);
                revisions.push((writer % 2, written.revision));
            }
            revisions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let total = WRITERS * EACH;
    let numbers: BTreeSet<u64> = acknowledged.iter().map(|(_, revision)| *revision).collect();
    assert_eq!(numbers, (1..=total).collect(), "a revision was lost or given twice");

    // The log replays to the stored state, and the shared entity holds the
    // last revision's body.
    let (revision, now) = stores[1].all_entities().await.unwrap();
    assert_eq!(revision, total);
    let changes = stores[0].entity_changes_since(0).await.unwrap();
    assert_eq!(replay(&[], &changes), now);
    assert_eq!(u64::try_from(changes.len()).unwrap(), 2 * total);
    let last_shared = changes.iter().rfind(|(_, uid, _)| uid.contains("shared")).unwrap();
    assert_eq!(last_shared.0, total);

    // On PostgreSQL each replica hears of the other's revisions. (Channels
    // are database-wide, but no other test writes that many revisions.)
    if matches!(db, Db::Postgres { .. }) {
        each_hears_the_other(&mut heard, &acknowledged, |n| StoreChange::Entities { revision: n }).await;
    }
}

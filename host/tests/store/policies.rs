//! Policy versions, on both backends.

use std::collections::BTreeSet;
use std::sync::Arc;

use consentry::store::{
    DurableStore, NewPolicyVersion, PolicyVersion, PolicyVersionSummary, StoreChange, StoreError,
    VersionOrigin,
};
use serde_json::json;

use super::{Db, each_hears_the_other, wait_for};

/// A policy version whose content is marked by `n`.
fn bundle(hash: &str, n: u64, origin: VersionOrigin) -> NewPolicyVersion {
    NewPolicyVersion {
        hash: hash.to_owned(),
        schema: n.is_multiple_of(2).then(|| format!("entity Patient{n};")),
        schema_is_json: n.is_multiple_of(3),
        policies: format!("permit (principal, action, resource) when {{ {n} == {n} }};"),
        links: json!([{ "template": "t", "link": format!("l{n}"), "values": { "?principal": "User::\"é\\u0000\"" } }]),
        special: (!n.is_multiple_of(2)).then(|| json!({ "z": n, "a": ["mental-health", 1.5] })),
        origin,
        actor: format!("admin-{n}"),
        comment: n.is_multiple_of(2).then(|| format!("change {n}")),
    }
}

fn summary(version: &PolicyVersion) -> PolicyVersionSummary {
    PolicyVersionSummary {
        version: version.version,
        hash: version.hash.clone(),
        origin: version.origin,
        actor: version.actor.clone(),
        comment: version.comment.clone(),
        recorded_at_unix_ms: version.recorded_at_unix_ms,
    }
}

/// Appends versions 1..=`count` with hashes `h1`, `h2`…
async fn append_versions(store: &DurableStore, count: u64) -> Vec<PolicyVersion> {
    let mut stored = Vec::new();
    for n in 1..=count {
        let origin = if n.is_multiple_of(2) { VersionOrigin::Api } else { VersionOrigin::Directory };
        stored.push(store.append_policy_version(bundle(&format!("h{n}"), n, origin), None).await.unwrap());
    }
    stored
}

pub async fn policy_versions_append_and_list_newest_first(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.current_policy_version().await.unwrap(), None);
    assert_eq!(store.policy_versions(None, 10).await.unwrap(), vec![]);
    let mut changes = store.subscribe();

    let stored = append_versions(&store, 5).await;
    assert_eq!(stored.iter().map(|v| v.version).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    wait_for(&mut changes, &StoreChange::Policies { version: 5 }).await;
    let new = bundle("h3", 3, VersionOrigin::Directory);
    assert_eq!(
        (stored[2].hash.as_str(), &stored[2].links, &stored[2].special),
        ("h3", &new.links, &new.special)
    );
    assert!(stored[0].recorded_at_unix_ms > 1_600_000_000_000);

    // What comes back is what was stored, JSON text included.
    assert_eq!(store.current_policy_version().await.unwrap().as_ref(), Some(&stored[4]));
    for version in &stored {
        let read = store.policy_version(version.version).await.unwrap().unwrap();
        assert_eq!(&read, version);
        assert_eq!(read.links.to_string(), version.links.to_string());
    }
    assert_eq!(store.policy_version(6).await.unwrap(), None);
    assert_eq!(store.policy_version(u64::MAX).await.unwrap(), None);

    let rollback = bundle("h2", 2, VersionOrigin::Rollback { from: 2 });
    let v6 = store.append_policy_version(rollback, Some("h5")).await.unwrap();
    assert_eq!((v6.version, v6.origin), (6, VersionOrigin::Rollback { from: 2 }));
    assert_eq!(store.policy_version(6).await.unwrap(), Some(v6.clone()));

    let all: Vec<PolicyVersionSummary> =
        std::iter::once(&v6).chain(stored.iter().rev()).map(summary).collect();
    assert_eq!(store.policy_versions(None, 100).await.unwrap(), all);
    assert_eq!(store.policy_versions(None, 2).await.unwrap(), all[..2]);
    assert_eq!(store.policy_versions(Some(5), 2).await.unwrap(), all[2..4]);
    assert_eq!(store.policy_versions(Some(3), 10).await.unwrap(), all[4..]);
    assert_eq!(store.policy_versions(Some(1), 10).await.unwrap(), vec![]);
    assert_eq!(store.policy_versions(Some(u64::MAX), 1).await.unwrap(), all[..1]);
    assert_eq!(store.policy_versions(None, 0).await.unwrap(), vec![]);
}

pub async fn a_stale_if_current_writes_nothing(db: &Db) {
    let store = db.open().await;
    // An empty store has no current hash: any expectation is stale.
    let error =
        store.append_policy_version(bundle("h1", 1, VersionOrigin::Api), Some("h0")).await.unwrap_err();
    assert!(matches!(&error, StoreError::Stale { current: None }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the policies changed meanwhile: the newest version now has hash none (no policies are stored)"
    );
    assert_eq!(store.current_policy_version().await.unwrap(), None);

    let v1 = store.append_policy_version(bundle("h1", 1, VersionOrigin::Api), None).await.unwrap();
    let error =
        store.append_policy_version(bundle("h2", 2, VersionOrigin::Api), Some("h0")).await.unwrap_err();
    assert!(matches!(&error, StoreError::Stale { current: Some(hash) } if hash == "h1"), "{error:?}");
    assert_eq!(error.to_string(), "the policies changed meanwhile: the newest version now has hash `h1`");
    assert_eq!(store.policy_versions(None, 10).await.unwrap(), vec![summary(&v1)]);

    // The failed attempt used no version number.
    let v2 = store.append_policy_version(bundle("h2", 2, VersionOrigin::Api), Some("h1")).await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.current_policy_version().await.unwrap(), Some(v2));
}

pub async fn by_hash_finds_the_newest_version_with_that_hash(db: &Db) {
    let store = db.open().await;
    assert_eq!(store.policy_version_by_hash("h1").await.unwrap(), None);
    append_versions(&store, 3).await;
    let v4 = store
        .append_policy_version(bundle("h1", 1, VersionOrigin::Rollback { from: 1 }), None)
        .await
        .unwrap();
    append_versions(&store, 2).await; // versions 5 (h1) and 6 (h2)
    let h1 = store.policy_version_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(h1.version, 5);
    assert_eq!(store.policy_version_by_hash("h3").await.unwrap().unwrap().version, 3);
    assert_eq!(store.policy_version(4).await.unwrap(), Some(v4));
    assert_eq!(store.policy_version_by_hash("H1").await.unwrap(), None);
}

pub async fn policy_versions_survive_reopening(db: &Db) {
    let store = db.open().await;
    let stored = append_versions(&store, 2).await;
    drop(store);
    let store = db.open().await;
    assert_eq!(store.current_policy_version().await.unwrap().as_ref(), Some(&stored[1]));
    assert_eq!(store.policy_version(1).await.unwrap().as_ref(), Some(&stored[0]));
    let v3 = store.append_policy_version(bundle("h3", 3, VersionOrigin::Api), Some("h2")).await.unwrap();
    assert_eq!(v3.version, 3);
}

pub async fn policy_versions_cannot_be_updated_or_deleted(db: &Db) {
    let store = db.open().await;
    let stored = append_versions(&store, 1).await;
    let update = db.execute("UPDATE policy_versions SET hash = 'forged'").await.unwrap_err();
    assert!(update.to_string().contains("never changed"), "{update}");
    let delete = db.execute("DELETE FROM policy_versions").await.unwrap_err();
    assert!(delete.to_string().contains("never"), "{delete}");
    assert_eq!(store.current_policy_version().await.unwrap().as_ref(), stored.first());
}

pub async fn an_unreadable_policy_version_is_reported_corrupt(db: &Db) {
    let store = db.open().await;
    db.execute(
        "INSERT INTO policy_versions (version, hash, schema, schema_is_json, policies, links, special, origin, \
         rolled_back_from, actor, comment, recorded_at_unix_ms) \
         VALUES (1, 'h1', NULL, FALSE, '', '[not json', NULL, 'api', NULL, 'a', NULL, 0)",
    )
    .await
    .unwrap();
    let error = store.policy_version(1).await.unwrap_err();
    assert!(matches!(&error, StoreError::CorruptRecord { .. }), "{error:?}");
    assert!(
        error.to_string().starts_with("stored policy version 1 is corrupt: its template links"),
        "{error}"
    );
    assert!(matches!(store.current_policy_version().await, Err(StoreError::CorruptRecord { .. })));
    // The summary does not read the links.
    assert_eq!(store.policy_versions(None, 1).await.unwrap().len(), 1);
}

pub async fn concurrent_policy_writers_get_consecutive_versions(db: &Db) {
    const WRITERS: u64 = 6;
    const EACH: u64 = 10;
    // Two stores over the same database, as two replicas would be.
    let stores = [Arc::new(db.open().await), Arc::new(db.open().await)];
    let mut heard = [stores[0].subscribe(), stores[1].subscribe()];
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&stores[usize::try_from(writer % 2).unwrap()]);
        tasks.push(tokio::spawn(async move {
            let mut versions = Vec::new();
            for n in 0..EACH {
                let hash = format!("w{writer}-{n}");
                let stored =
                    store.append_policy_version(bundle(&hash, n, VersionOrigin::Api), None).await.unwrap();
                assert_eq!(stored.hash, hash);
                versions.push((writer % 2, stored.version));
            }
            versions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let total = WRITERS * EACH;
    let numbers: BTreeSet<u64> = acknowledged.iter().map(|(_, version)| *version).collect();
    assert_eq!(numbers, (1..=total).collect(), "a version was lost or given twice");
    let listed = stores[1].policy_versions(None, 1000).await.unwrap();
    assert_eq!(listed.iter().map(|v| v.version).collect::<Vec<_>>(), (1..=total).rev().collect::<Vec<_>>());
    let hashes: BTreeSet<&str> = listed.iter().map(|v| v.hash.as_str()).collect();
    assert_eq!(hashes.len(), usize::try_from(total).unwrap());

    // On PostgreSQL each replica hears of the other's versions. (Channels
    // are database-wide, but no other test writes that many versions.)
    if matches!(db, Db::Postgres { .. }) {
        each_hears_the_other(&mut heard, &acknowledged, |n| StoreChange::Policies { version: n }).await;
    }
}

pub async fn racing_writers_of_the_same_base_version_win_once(db: &Db) {
    const WRITERS: u64 = 6;
    let stores = [Arc::new(db.open().await), Arc::new(db.open().await)];
    stores[0].append_policy_version(bundle("base", 0, VersionOrigin::Api), None).await.unwrap();
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&stores[usize::try_from(writer % 2).unwrap()]);
        tasks.push(tokio::spawn(async move {
            store
                .append_policy_version(
                    bundle(&format!("w{writer}"), writer, VersionOrigin::Api),
                    Some("base"),
                )
                .await
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(stored) => won.push(stored),
            Err(StoreError::Stale { current: Some(current) }) => {
                assert!(current.starts_with('w'), "{current}")
            }
            Err(error) => panic!("unexpected {error:?}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(won[0].version, 2);
    assert_eq!(stores[1].current_policy_version().await.unwrap().as_ref(), Some(&won[0]));
    assert_eq!(stores[1].policy_versions(None, 10).await.unwrap().len(), 2);
}

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{DecisionOptions, Presence};

use super::*;
use crate::policy_change::PolicyChange;
use crate::store::StoreLocation;

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

async fn store(dir: &Path) -> Arc<DurableStore> {
    Arc::new(DurableStore::open(&StoreLocation::Sqlite { dir: dir.to_owned() }).await.unwrap())
}

fn gate(tests: Option<PathBuf>) -> Option<PolicyGate> {
    tests.map(|tests| PolicyGate {
        tests,
        plugins: Arc::new(Plugins::none()),
        decisions: DecisionOptions::default(),
    })
}

/// A store-managed directory holding the bundled pack, imported.
async fn imported(data: &Path, tests: Option<PathBuf>) -> Directory {
    let directory = opened(data, PolicyTruth::Store, gate(tests)).await;
    directory.load_policy_dir(&policies()).await.unwrap();
    directory
}

fn ali() -> EntityUid {
    consentry_engine::parse_uid(&serde_json::json!("Practitioner::\"dr-ali\""), "uid").unwrap()
}

/// A copy of the store in `data`, opened as a server opens it.
async fn opened(data: &Path, truth: PolicyTruth, gate: Option<PolicyGate>) -> Directory {
    Directory::open(store(data).await, truth, gate, DEFAULT_CACHE_BYTES).await.unwrap().directory
}

fn by(actor: &str) -> ChangeBy {
    ChangeBy { actor: actor.to_owned(), ..ChangeBy::default() }
}

fn closed(current: &PolicyBundle) -> PolicyEdit {
    let text = format!("{}\n@id(\"closed\") forbid(principal, action, resource);", current.source().policies);
    PolicyEdit::Policies { text, links: None }
}

#[tokio::test]
async fn a_candidate_that_fails_the_policy_tests_is_refused_and_nothing_is_stored() {
    let data = tempfile::tempdir().unwrap();
    let directory = imported(data.path(), Some(policies().join("tests"))).await;
    let before = directory.bundle();
    let refused = directory.change_policies(closed(&before), &by("t")).await.unwrap_err();
    assert!(
        matches!(&refused, ChangeError::TestsFailed(refusal) if !refusal.failures.is_empty()),
        "{refused}"
    );
    assert!(Arc::ptr_eq(&directory.bundle(), &before), "the set in force stays");
    let versions = directory.durable().policy_versions(None, 10).await.unwrap();
    assert_eq!(versions.len(), 1, "nothing was stored");
}

#[tokio::test]
async fn a_change_is_stored_before_it_is_in_force_and_a_reopened_copy_has_it() {
    let data = tempfile::tempdir().unwrap();
    let directory = imported(data.path(), None).await;
    let before = directory.bundle();
    let changed = directory.change_policies(closed(&before), &by("privacy-team")).await.unwrap();
    assert_eq!(changed.version.version, 2);
    assert_eq!(changed.version.actor, "privacy-team");
    assert!(Arc::ptr_eq(&directory.bundle(), &changed.bundle));
    assert_eq!(PolicyChange::between(&before, &changed.bundle).added, ["closed"]);
    drop(directory);
    let reopened = opened(data.path(), PolicyTruth::Store, None).await;
    assert_eq!(reopened.bundle().hash(), changed.bundle.hash());
    assert_eq!(reopened.read().version, Some(2));
    assert!(reopened.read().store.is_empty(), "start-up reads no entity");
    reopened.load_entities([ali()]).await.unwrap();
    assert!(reopened.read().store.get(&ali()).is_some(), "the imported entities are read back");
}

#[tokio::test]
async fn a_policy_directory_owns_its_policies() {
    let data = tempfile::tempdir().unwrap();
    let truth = PolicyTruth::Directory(policies());
    let directory = opened(data.path(), truth, None).await;
    let refused = directory.change_policies(closed(&directory.bundle()), &by("t")).await.unwrap_err();
    assert!(matches!(refused, ChangeError::DirectoryOwned(_)), "{refused}");
}

#[tokio::test]
async fn a_second_copy_on_the_same_store_catches_up_with_the_first() {
    let data = tempfile::tempdir().unwrap();
    let writer = imported(data.path(), None).await;
    let reader = opened(data.path(), PolicyTruth::Store, None).await;
    let patch: consentry_engine::EntityPatch = serde_json::from_value(serde_json::json!({
        "delete": ["Practitioner::\"dr-ali\""]
    }))
    .unwrap();
    reader.load_entities([ali()]).await.unwrap();
    assert!(reader.read().store.get(&ali()).is_some());
    let changed = writer.change_entities(EntityEdit::Patch(patch), &by("t")).await.unwrap();
    assert_eq!(changed.outcome.deleted, 1);
    assert!(reader.read().store.get(&ali()).is_some(), "the reader has not heard of it yet");
    reader.catch_up_entities().await.unwrap();
    assert!(matches!(reader.read().store.presence(&ali()), Presence::Unloaded), "the change is forgotten");
    assert_eq!(reader.read().revision, changed.revision.revision);
    reader.load_entities([ali()]).await.unwrap();
    assert!(matches!(reader.read().store.presence(&ali()), Presence::Absent), "and read again: deleted");
    let text = format!("{}\n// reviewed", writer.bundle().source().policies);
    let versioned =
        writer.change_policies(PolicyEdit::Policies { text, links: None }, &by("t")).await.unwrap();
    reader.catch_up_policies().await.unwrap();
    assert_eq!(reader.bundle().hash(), versioned.bundle.hash());
}

#[tokio::test]
async fn a_stale_copy_cannot_overwrite_a_newer_policy_set() {
    let data = tempfile::tempdir().unwrap();
    let first = imported(data.path(), None).await;
    let second = opened(data.path(), PolicyTruth::Store, None).await;
    first.change_policies(closed(&first.bundle()), &by("a")).await.unwrap();
    let refused = second.change_policies(closed(&second.bundle()), &by("b")).await.unwrap_err();
    assert!(matches!(refused, ChangeError::Concurrent), "{refused}");
    let with_if_match = ChangeBy { if_match: Some(second.bundle().hash().to_owned()), ..by("b") };
    let refused = second.change_policies(closed(&second.bundle()), &with_if_match).await.unwrap_err();
    assert!(matches!(refused, ChangeError::PreconditionFailed { .. }), "{refused}");
}

/// Waits (generously) until `holds`; only a state that never comes fails.
async fn eventually(what: &str, holds: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !holds() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lost_change_feed_makes_the_copy_untrusted_until_it_is_reloaded() {
    let data = tempfile::tempdir().unwrap();
    let directory = Arc::new(imported(data.path(), None).await);
    let (changes, receiver) = tokio::sync::broadcast::channel(8);
    let task = follow(Arc::clone(&directory), Following::new(receiver));
    assert!(directory.out_of_touch().is_none());
    changes.send(crate::store::StoreChange::FeedLost).unwrap();
    eventually("the copy is untrusted", || directory.out_of_touch().is_some()).await;
    // A change made meanwhile, through another copy, that this one never heard of.
    let other = opened(data.path(), PolicyTruth::Store, None).await;
    let patch: consentry_engine::EntityPatch =
        serde_json::from_value(serde_json::json!({"delete": ["Practitioner::\"dr-ali\""]})).unwrap();
    other.change_entities(EntityEdit::Patch(patch), &by("t")).await.unwrap();
    changes.send(crate::store::StoreChange::Everything).unwrap();
    eventually("the copy is trusted again", || directory.out_of_touch().is_none()).await;
    assert_eq!(directory.read().revision, other.read().revision, "the reload brought the missed change");
    task.abort();
}

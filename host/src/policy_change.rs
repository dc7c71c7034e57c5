//! Putting a new policy set in force.
//!
//! Three paths change the policies while the server runs: a `--watch`
//! reload, `PUT /v1/policies` and `PUT /v1/schema`. They all end here, so
//! they pass the same gate and leave the same trace. With `--policy-tests`,
//! the candidate must first pass the policy tests, run against the entities
//! that will be in force with it; a candidate that fails is refused and the
//! set in force stays. Every set put in force is logged with the ids of the
//! policies it adds, removes and changes, so an operator can tell what a
//! reload did without diffing files.

use std::collections::BTreeMap;
use std::sync::Arc;

use consentry_engine::{EntityStore, PolicyBundle};

use crate::policy_test::{self, Refusal};
use crate::state::{AppState, ChangeGuard};

/// A policy set that may be put in force.
#[derive(Debug)]
pub struct Candidate {
    /// The validated bundle.
    pub bundle: PolicyBundle,
    /// The stored entities to go with it; `None` keeps the ones in force.
    pub store: Option<EntityStore>,
}

/// Runs the policy tests, when the server has them, against `candidate`,
/// then swaps it in and logs what changed; `via` names the path in the log
/// (`reload`, `PUT /v1/policies`). The caller holds the change lock, so the
/// entities the tests ran against are still those in force at the swap.
pub async fn put_in_force(
    state: &AppState,
    _change: &ChangeGuard<'_>,
    candidate: Candidate,
    via: &'static str,
) -> Result<Arc<PolicyBundle>, Refusal> {
    let Candidate { bundle, store } = candidate;
    let bundle = Arc::new(bundle);
    if let Some(tests) = &state.settings.policy_tests {
        let in_force;
        let tested = match &store {
            Some(store) => store,
            None => {
                in_force = state.read().store.clone();
                &in_force
            }
        };
        let passed =
            policy_test::gate(tests, &bundle, tested, &state.plugins, state.settings.decisions).await?;
        tracing::info!(via, passed, "the policy tests passed");
    }
    let change = PolicyChange::between(&state.bundle(), &bundle);
    tracing::info!(
        via,
        hash = bundle.hash(),
        policies = bundle.policy_count(),
        added = ?change.added,
        removed = ?change.removed,
        changed = ?change.changed,
        "policies put in force"
    );
    let mut snapshot = state.write();
    snapshot.bundle = Arc::clone(&bundle);
    if let Some(store) = store {
        snapshot.store = store;
    }
    Ok(bundle)
}

/// The ids of the policies (templates and links included) one set adds,
/// removes and changes relative to another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// In the new set only.
    pub added: Vec<String>,
    /// In the old set only.
    pub removed: Vec<String>,
    /// In both, with another text.
    pub changed: Vec<String>,
}

impl PolicyChange {
    /// What changes from `before` to `after`, each list sorted.
    pub fn between(before: &PolicyBundle, after: &PolicyBundle) -> Self {
        let texts = |bundle: &PolicyBundle| -> BTreeMap<String, String> {
            bundle.policy_summaries().into_iter().map(|p| (p.id, p.text)).collect()
        };
        let (before, after) = (texts(before), texts(after));
        let mut change = Self::default();
        for (id, text) in &after {
            match before.get(id) {
                None => change.added.push(id.clone()),
                Some(old) if old != text => change.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        change.removed = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
        change
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::auth::Auth;
    use crate::consents::Consents;
    use crate::plugins::Plugins;
    use crate::policy_dir;
    use crate::state::Settings;
    use crate::store::StoreLocation;

    fn bundle(text: &str) -> PolicyBundle {
        PolicyBundle::load(None, text, &[]).unwrap()
    }

    #[test]
    fn a_change_names_the_ids_added_removed_and_changed() {
        let before = bundle(
            "@id(\"keep\") permit(principal, action, resource);\n\
             @id(\"edit\") permit(principal, action, resource);\n\
             @id(\"drop\") forbid(principal, action, resource);",
        );
        let after = bundle(
            "@id(\"keep\") permit(principal, action, resource);\n\
             @id(\"edit\") forbid(principal, action, resource);\n\
             @id(\"new\") permit(principal, action, resource);",
        );
        let change = PolicyChange::between(&before, &after);
        assert_eq!(
            change,
            PolicyChange {
                added: vec!["new".into()],
                removed: vec!["drop".into()],
                changed: vec!["edit".into()]
            }
        );
        assert_eq!(PolicyChange::between(&after, &after), PolicyChange::default());
    }

    fn policies() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    async fn state(data: &Path, policy_tests: Option<PathBuf>) -> Arc<AppState> {
        let loaded = policy_dir::load(&policies()).unwrap();
        let consents = Consents::open(&StoreLocation::Sqlite { dir: data.to_owned() }).await.unwrap();
        let settings = Settings { policy_tests, ..Settings::default() };
        AppState::new(
            loaded.bundle,
            loaded.store,
            settings,
            Auth::with_admin_token(None),
            consents,
            Plugins::none(),
        )
    }

    fn closed(current: &PolicyBundle) -> Candidate {
        let text =
            format!("{}\n@id(\"closed\") forbid(principal, action, resource);", current.source().policies);
        Candidate { bundle: current.with_policies(&text, &current.source().links).unwrap(), store: None }
    }

    #[tokio::test]
    async fn a_candidate_that_fails_the_policy_tests_is_refused_and_the_set_in_force_stays() {
        let data = tempfile::tempdir().unwrap();
        let state = state(data.path(), Some(policies().join("tests"))).await;
        let before = state.bundle();
        let change = state.begin_change().await;
        let refusal = put_in_force(&state, &change, closed(&before), "test").await.unwrap_err();
        assert!(!refusal.failures.is_empty());
        assert!(Arc::ptr_eq(&state.bundle(), &before), "the set in force stays");
    }

    #[tokio::test]
    async fn without_policy_tests_a_candidate_is_put_in_force() {
        let data = tempfile::tempdir().unwrap();
        let state = state(data.path(), None).await;
        let before = state.bundle();
        let change = state.begin_change().await;
        let in_force = put_in_force(&state, &change, closed(&before), "test").await.unwrap();
        assert!(Arc::ptr_eq(&state.bundle(), &in_force));
        assert_eq!(PolicyChange::between(&before, &in_force).added, ["closed"]);
    }
}

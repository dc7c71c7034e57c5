//! Hot reload of the policy directory.
//!
//! A reload waits until the directory has settled (quiet for the settle
//! window and no policy file open for writing; see [`crate::file_watch`]),
//! reads it as one version (see [`crate::policy_dir`]), validates it and,
//! with `--policy-tests`, tests it, and swaps it in only if all of that
//! succeeds; otherwise the set in force keeps serving and the reason is
//! logged and shown in `/readyz`. Each load is recorded as a policy
//! version in the store, and `entities.json` replaces the stored entities
//! only when its content changed, so entities written through the admin
//! API are not thrown away by an unrelated policy edit (see
//! [`crate::directory`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::audit::{ChangeEntry, ChangeKind};
use crate::directory::{DIRECTORY_ACTOR, DirLoaded, ReloadStatus};
use crate::file_watch::{FileWatch, watch_dirs};
use crate::policy_dir;
use crate::state::AppState;
use crate::store::EntityRevision;

/// Starts watching `dir`, reloading once changes have settled for
/// `settle`; reloads run on `runtime`.
pub fn watch(
    dir: &Path,
    settle: Duration,
    state: Arc<AppState>,
    runtime: Handle,
) -> Result<FileWatch, notify::Error> {
    let watched: PathBuf = dir.to_owned();
    watch_dirs([dir], settle, policy_dir::is_read, move |_changed| {
        let loaded = runtime.block_on(async {
            let loaded = state.pipeline.directory.load_policy_dir(&watched).await?;
            record_load(&state, &loaded).await;
            Ok::<_, crate::directory::ReloadError>(())
        });
        let status = ReloadStatus::now(loaded.err().map(|e| e.to_string()));
        match &status.error {
            None => tracing::info!(dir = %watched.display(), "policy directory reloaded"),
            Some(error) => {
                tracing::warn!(dir = %watched.display(), %error, "reload refused; the previous set stays in force")
            }
        }
        state.pipeline.directory.record_reload(status);
    })
}

/// The change records of a load of the policy directory by `actor`: a new
/// policy version of `policies` policies, an import of `entities.json`.
pub fn load_changes(loaded: &DirLoaded, policies: usize, actor: &str) -> Vec<ChangeEntry> {
    let mut changes = Vec::new();
    if let Some(version) = &loaded.version {
        changes.push(
            ChangeEntry::now(ChangeKind::Policies, actor, format!("v{}", version.version))
                .with_hash(version.hash.as_str())
                .with_count("policies", u64::try_from(policies).unwrap_or(u64::MAX)),
        );
    }
    if let Some(revision) = &loaded.imported {
        changes.push(entities_change(revision, actor));
    }
    changes
}

/// The change record of an entity revision written by `actor`.
pub fn entities_change(revision: &EntityRevision, actor: &str) -> ChangeEntry {
    let mut change = ChangeEntry::now(ChangeKind::Entities, actor, format!("r{}", revision.revision))
        .with_count("upserted", revision.upserted)
        .with_count("deleted", revision.deleted);
    if revision.replaced_all {
        change = change.with_count("replaced_all", 1);
    }
    change
}

/// Records what a load of the policy directory changed in the decision log:
/// a new policy version, an import of `entities.json`. The change is in
/// force already, so a record that cannot be written is logged loudly.
pub async fn record_load(state: &AppState, loaded: &DirLoaded) {
    let policies = state.pipeline.read().bundle.policy_count();
    for change in load_changes(loaded, policies, DIRECTORY_ACTOR) {
        if let Err(error) = state.pipeline.record_change(change).await {
            tracing::error!(%error, "the policy directory was loaded but its change record was not written");
        }
    }
}

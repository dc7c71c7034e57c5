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

use crate::directory::ReloadStatus;
use crate::file_watch::{FileWatch, watch_dirs};
use crate::policy_dir;
use crate::state::AppState;

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
        let loaded = runtime.block_on(state.directory.load_policy_dir(&watched));
        let status = ReloadStatus::now(loaded.err().map(|e| e.to_string()));
        match &status.error {
            None => tracing::info!(dir = %watched.display(), "policy directory reloaded"),
            Some(error) => {
                tracing::warn!(dir = %watched.display(), %error, "reload refused; the previous set stays in force")
            }
        }
        state.directory.record_reload(status);
    })
}

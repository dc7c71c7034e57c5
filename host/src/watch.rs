//! Hot reload of the policy directory.
//!
//! A reload waits until the directory has settled (quiet for the settle
//! window and no policy file open for writing; see [`crate::file_watch`]),
//! reads it as one version (see [`crate::policy_dir`]), validates it and,
//! with `--policy-tests`, tests it, and swaps it in only if all of that
//! succeeds; otherwise the set in force keeps serving and the reason is
//! logged and shown in `/readyz`. `entities.json` replaces the stored
//! entities only when its content changed, so entities written through the
//! admin API are not thrown away by an unrelated policy edit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::file_watch::{FileWatch, watch_dirs};
use crate::policy_change::{Candidate, put_in_force};
use crate::policy_dir::{self, DirError};
use crate::state::{AppState, ReloadStatus};

/// Starts watching `dir`, reloading once changes have settled for
/// `settle`. `entities_text` is the `entities.json` loaded at start-up;
/// reloads run on `runtime`.
pub fn watch(
    dir: &Path,
    settle: Duration,
    state: Arc<AppState>,
    entities_text: Option<String>,
    runtime: Handle,
) -> Result<FileWatch, notify::Error> {
    let mut last_entities = entities_text;
    let watched: PathBuf = dir.to_owned();
    watch_dirs([dir], settle, policy_dir::is_read, move |_changed| {
        let status = ReloadStatus::now(runtime.block_on(reload(&watched, &state, &mut last_entities)).err());
        match &status.error {
            None => tracing::info!(dir = %watched.display(), "policy directory reloaded"),
            Some(error) => {
                tracing::warn!(dir = %watched.display(), %error, "reload refused; the previous set stays in force")
            }
        }
        state.record_reload(status);
    })
}

/// Reloads the directory into `state`, or leaves `state` untouched and says why.
pub async fn reload(dir: &Path, state: &AppState, last_entities: &mut Option<String>) -> Result<(), String> {
    let describe = |e: DirError| e.to_string();
    let (bundle, sources, entities_text, version) = policy_dir::read_snapshot(dir, |version| {
        let (bundle, sources) = policy_dir::load_bundle(version)?;
        Ok((bundle, sources, policy_dir::read_entities_text(version)?, version.to_owned()))
    })
    .map_err(describe)?;
    let change = state.begin_change().await;
    let store = if entities_text != *last_entities {
        match &entities_text {
            Some(text) => policy_dir::parse_entities(&version, text, &bundle, &sources).map_err(describe)?,
            None => consentry_engine::EntityStore::new(),
        }
    } else {
        state.read().store.reparsed(bundle.schema()).map_err(|e| e.to_string())?
    };
    put_in_force(state, &change, Candidate { bundle, store: Some(store) }, "reload")
        .await
        .map_err(|refusal| refusal.to_string())?;
    *last_entities = entities_text;
    Ok(())
}

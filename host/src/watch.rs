//! Hot reload of the policy directory.
//!
//! A reload validates the whole directory first and swaps it in only if it
//! is valid; otherwise the set in force keeps serving and the reason is
//! logged and shown in `/readyz`. `entities.json` replaces the stored
//! entities only when its content changed, so entities written through the
//! admin API are not thrown away by an unrelated policy edit.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::file_watch::{FileWatch, watch_dirs};
use crate::policy_dir::{self, DirError};
use crate::state::{AppState, ReloadStatus};

/// How long file events settle before a reload; editors write in bursts.
const SETTLE: Duration = Duration::from_millis(200);

/// Starts watching `dir`. `entities_text` is the `entities.json` loaded at start-up.
pub fn watch(
    dir: &Path,
    state: Arc<AppState>,
    entities_text: Option<String>,
) -> Result<FileWatch, notify_debouncer_full::notify::Error> {
    let last_entities = Mutex::new(entities_text);
    let watched: PathBuf = dir.to_owned();
    watch_dirs([dir], SETTLE, move |_changed| {
        let mut last = last_entities.lock().unwrap_or_else(PoisonError::into_inner);
        let status = ReloadStatus::now(reload(&watched, &state, &mut last).err());
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
pub fn reload(dir: &Path, state: &AppState, last_entities: &mut Option<String>) -> Result<(), String> {
    let describe = |e: DirError| e.to_string();
    let (bundle, sources) = policy_dir::load_bundle(dir).map_err(describe)?;
    let entities_text = policy_dir::read_entities_text(dir).map_err(describe)?;
    let _change = state.begin_change();
    let store = if entities_text != *last_entities {
        match &entities_text {
            Some(text) => policy_dir::parse_entities(dir, text, &bundle, &sources).map_err(describe)?,
            None => consentry_engine::EntityStore::new(),
        }
    } else {
        state.read().store.reparsed(bundle.schema()).map_err(|e| e.to_string())?
    };
    let mut snapshot = state.write();
    snapshot.bundle = Arc::new(bundle);
    snapshot.store = store;
    *last_entities = entities_text;
    Ok(())
}

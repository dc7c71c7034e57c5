//! Hot reload of the plugins when their configuration or a component
//! changes on disk.
//!
//! The directories holding those files are watched, not the files: build
//! tools and editors replace a file by renaming a new one over it, which a
//! watch on the old file would miss. A reload waits, as a policy reload
//! does, until the files have been quiet for the settle window and none is
//! still open for writing (see [`crate::file_watch`]): a build writes a
//! component in several steps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::file_watch::{FileWatch, watch_dirs};

/// The actor of change records for reloads the file watch made.
const WATCH_ACTOR: &str = "file-watch";
use crate::state::AppState;

/// Watches the plugin configuration and the components it names, reloading
/// once changes to them have settled for `settle`.
pub fn watch(state: Arc<AppState>, settle: Duration, runtime: Handle) -> Result<FileWatch, notify::Error> {
    let directories: BTreeSet<PathBuf> = state
        .pipeline
        .plugins
        .watched_files()
        .iter()
        .map(|file| match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        })
        .collect();
    let watching = Arc::clone(&state);
    let relevant =
        move |path: &Path| watching.pipeline.plugins.watched_files().iter().any(|file| same_file(path, file));
    watch_dirs(directories.iter().map(PathBuf::as_path), settle, relevant, move |_changed| {
        match state.pipeline.plugins.reload() {
            Ok(set) => {
                tracing::info!(plugins = set.plugins().len(), "plugins reloaded");
                let change = crate::http::plugins_change(&set, WATCH_ACTOR);
                if let Err(error) = runtime.block_on(state.pipeline.record_change(change)) {
                    tracing::error!(%error, "the plugins were reloaded but the change record was not written");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "plugin reload refused; the previous plugins stay in force")
            }
        }
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b)
}

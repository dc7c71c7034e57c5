//! Watching directories for changes that matter.
//!
//! On Linux, opening and reading a file is itself reported as an (access)
//! event. A reload reads the very files it watches, so counting those
//! events would make every reload trigger the next one, forever. Only
//! events that change something are passed on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

/// Watches `dirs` (not recursively) and calls `on_change` with the paths
/// that were created, changed or removed, once events have settled for `settle`.
pub fn watch_dirs<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    settle: Duration,
    mut on_change: impl FnMut(&[PathBuf]) + Send + 'static,
) -> Result<FileWatch, notify_debouncer_full::notify::Error> {
    let mut debouncer = new_debouncer(settle, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let changed: Vec<PathBuf> = events
            .iter()
            .filter(|event| !matches!(event.kind, EventKind::Access(_)))
            .flat_map(|event| event.paths.iter().cloned())
            .collect();
        if !changed.is_empty() {
            on_change(&changed);
        }
    })?;
    for dir in dirs {
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(FileWatch { _debouncer: debouncer })
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn reading_watched_files_does_not_count_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.cedar");
        std::fs::write(&file, "permit(principal, action, resource);").unwrap();
        let (changes, received) = mpsc::channel();
        let _watch = watch_dirs([dir.path()], Duration::from_millis(50), move |paths| {
            let _ = changes.send(paths.to_vec());
        })
        .unwrap();
        std::fs::write(&file, "forbid(principal, action, resource);").unwrap();
        let changed = received.recv_timeout(Duration::from_secs(10)).expect("a write is a change");
        assert!(changed.iter().any(|path| path.ends_with("policy.cedar")), "{changed:?}");
        while received.recv_timeout(Duration::from_millis(300)).is_ok() {}
        for _ in 0..5 {
            std::fs::read_to_string(&file).unwrap();
        }
        assert!(received.recv_timeout(Duration::from_millis(500)).is_err(), "reading is not a change");
    }
}

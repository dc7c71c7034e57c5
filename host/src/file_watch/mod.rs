//! Watching directories for changes that matter, and passing them on only
//! once they are complete.
//!
//! Three things make a raw stream of file events unfit to trigger a reload:
//!
//! - On Linux, opening and reading a file is itself reported. A reload
//!   reads the very files it watches, so counting those events would make
//!   every reload trigger the next one, forever. Opens and reads are
//!   ignored; a close after writing is not (see [`settle`]).
//! - Writers write in steps: an editor truncates then writes, a build
//!   writes a component in chunks, a person copies files one by one. A
//!   change is passed on only when the files are quiet and none is still
//!   open for writing ([`settle`]).
//! - A whole directory can be swapped in by renaming a symlink: Kubernetes
//!   mounts a ConfigMap as symlinks into `..data`, itself a symlink renamed
//!   to a new directory on every update, and a deployment may point the
//!   watched path itself at a new directory. A change to `..data` always
//!   matters, and when the watched path is a symlink its parent is watched
//!   too, so that swapping the link is seen and the watch follows it to the
//!   new directory.

mod settle;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use settle::{Change, Settler};

pub use settle::OPEN_FOR_WRITING_BOUND;

/// The symlink Kubernetes swaps to update a mounted ConfigMap or Secret.
pub const DATA_LINK: &str = "..data";

/// Whether the platform reports a file's close after writing: Linux's
/// inotify does; elsewhere only the quiet window applies.
const REPORTS_CLOSE_WRITE: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Keeps the watch alive; dropping it stops watching.
pub struct FileWatch {
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

/// A watched directory that is a symlink, seen from its parent.
#[derive(Debug, Clone)]
struct SwappableDir {
    /// The directory as it was given.
    dir: PathBuf,
    /// The symlink's path as events in the parent name it.
    link: PathBuf,
}

/// What the watch thread needs to tell events apart.
struct Scope {
    dirs: Vec<PathBuf>,
    swappable: Vec<SwappableDir>,
}

impl Scope {
    /// Whether `path` is in a watched directory, or is the link of one.
    fn covers(&self, path: &Path) -> bool {
        path.parent().is_some_and(|parent| self.dirs.iter().any(|dir| dir == parent))
            || self.swappable.iter().any(|swappable| swappable.link == path)
    }

    /// Whether a change to `path`, which [`Scope::covers`], swaps a whole directory.
    fn swaps(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|name| name == DATA_LINK)
            || self.swappable.iter().any(|swappable| swappable.link == path)
    }
}

/// Watches `dirs` (not recursively) and calls `on_change` with the changed
/// paths for which `relevant` holds, once they have been quiet for `settle`
/// and none of them is open for writing (see [`settle`]). A change to
/// `..data`, or to a watched directory that is a symlink, is always relevant.
/// `on_change` runs on the watch's own thread, one call at a time.
pub fn watch_dirs<'a>(
    dirs: impl IntoIterator<Item = &'a Path>,
    settle: Duration,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
    on_change: impl FnMut(&[PathBuf]) + Send + 'static,
) -> Result<FileWatch, notify::Error> {
    let (events, received) = mpsc::channel();
    let watcher = Arc::new(Mutex::new(notify::recommended_watcher(events)?));
    let mut scope = Scope { dirs: Vec::new(), swappable: Vec::new() };
    {
        let mut watcher = watcher.lock().unwrap_or_else(PoisonError::into_inner);
        for dir in dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
            scope.dirs.push(dir.to_owned());
            if let Some(swappable) = swappable(dir) {
                let parent = swappable.link.parent().unwrap_or(Path::new("."));
                watcher.watch(parent, RecursiveMode::NonRecursive)?;
                scope.swappable.push(swappable);
            }
        }
    }
    let handle = Arc::downgrade(&watcher);
    std::thread::Builder::new()
        .name("consentry-watch".to_owned())
        .spawn(move || run(&received, &handle, &scope, settle, relevant, on_change))
        .map_err(notify::Error::io)?;
    Ok(FileWatch { _watcher: watcher })
}

/// `dir` seen from its parent, when `dir` is a symlink.
fn swappable(dir: &Path) -> Option<SwappableDir> {
    if !std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
        return None;
    }
    let name = dir.file_name()?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Some(SwappableDir { dir: dir.to_owned(), link: parent.join(name) })
}

/// The watch thread: settles events until the watcher is dropped.
fn run(
    received: &mpsc::Receiver<notify::Result<Event>>,
    watcher: &Weak<Mutex<RecommendedWatcher>>,
    scope: &Scope,
    settle: Duration,
    relevant: impl Fn(&Path) -> bool,
    mut on_change: impl FnMut(&[PathBuf]),
) {
    let mut settler = Settler::new(settle);
    loop {
        let next = match settler.ready_at() {
            Some(ready) => received.recv_timeout(ready.saturating_duration_since(Instant::now())),
            None => received.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(Ok(event)) => {
                for change in changes(&event) {
                    let paths = change.paths();
                    follow_swaps(watcher, scope, &paths);
                    let matters = change == Change::Rescan
                        || paths
                            .iter()
                            .any(|path| scope.covers(path) && (scope.swaps(path) || relevant(path)));
                    if matters {
                        settler.observe(change, Instant::now());
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "file watch error; the watched files are read again");
                settler.observe(Change::Rescan, Instant::now());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if let Some(changed) = settler.take(Instant::now(), |path| path.symlink_metadata().is_ok()) {
            on_change(&changed);
        }
    }
}

/// Moves the watch of each swapped directory among `paths` to the
/// directory its link now points to.
fn follow_swaps(watcher: &Weak<Mutex<RecommendedWatcher>>, scope: &Scope, paths: &[&Path]) {
    let mut swapped = scope.swappable.iter().filter(|s| paths.contains(&s.link.as_path())).peekable();
    if swapped.peek().is_none() {
        return;
    }
    let Some(watcher) = watcher.upgrade() else { return };
    let mut watcher = watcher.lock().unwrap_or_else(PoisonError::into_inner);
    for swappable in swapped {
        // The old target may be gone already, taking its watch with it.
        let _ = watcher.unwatch(&swappable.dir);
        if let Err(error) = watcher.watch(&swappable.dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %swappable.dir.display(), %error, "cannot watch the directory the link now points to");
        }
    }
}

/// What an event means for the settling; reads and opens mean nothing.
fn changes(event: &Event) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Rescan];
    }
    let each = |change: fn(PathBuf) -> Change| event.paths.iter().cloned().map(change).collect();
    let written =
        |path: PathBuf| if REPORTS_CLOSE_WRITE { Change::Written(path) } else { Change::Touched(path) };
    match &event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(Change::Closed),
        EventKind::Access(_) => Vec::new(),
        EventKind::Create(CreateKind::File) => event
            .paths
            .iter()
            .map(|path| {
                // A symlink is complete when it appears; a new regular file
                // is then written.
                let regular = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_file());
                if regular { written(path.clone()) } else { Change::Touched(path.clone()) }
            })
            .collect(),
        EventKind::Modify(ModifyKind::Data(_)) => event.paths.iter().cloned().map(written).collect(),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => match event.paths.as_slice() {
            [from, to] => vec![Change::Renamed { from: from.clone(), to: to.clone() }],
            _ => each(Change::Touched),
        },
        EventKind::Remove(_) => each(Change::Removed),
        _ => each(Change::Touched),
    }
}

#[cfg(test)]
pub(crate) mod tests;

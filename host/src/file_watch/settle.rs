//! When a burst of file events has settled enough to read the files.
//!
//! A reload that reads a file while someone is still writing it puts a
//! half-written file in force; if what was written so far happens to be
//! valid (a truncated policy file usually is), the shorter set serves. Two
//! rules keep that from happening:
//!
//! - **Quiet**: a change is passed on only once no relevant event has been
//!   seen for the settle window, so a writer that truncates, pauses and
//!   writes again is read once, after the last write.
//! - **Closed**: a file whose content changed counts as open for writing
//!   until its close-write arrives (inotify's `IN_CLOSE_WRITE`), however
//!   long that takes, so a slow writer is not read mid-way even when it
//!   pauses for longer than the window. A file that is gone no longer
//!   counts, and a file that has not been written to for
//!   [`OPEN_FOR_WRITING_BOUND`] counts as closed: a close-write that never
//!   comes (a writer hung with the file open, events lost on an overflowing
//!   queue) must not stop reloads for good. A writer that crashes does not
//!   need the bound: the kernel closes its files, which reports the close.
//!
//! This module is pure bookkeeping over instants it is given, so its rules
//! are tested without a clock.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a file that was written to but never reported closed keeps
/// blocking reloads, counted from its last write.
pub const OPEN_FOR_WRITING_BOUND: Duration = Duration::from_secs(60);

/// What one file event means for the settling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The file's content was written (or it was created as a regular file):
    /// it is open for writing until its close-write.
    Written(PathBuf),
    /// A file open for writing was closed.
    Closed(PathBuf),
    /// A file was renamed within the directory; if it was open for
    /// writing, it still is, under its new name.
    Renamed {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// A file was removed: it is no longer open for writing.
    Removed(PathBuf),
    /// Anything else that changes what a reload reads: a rename's halves,
    /// attributes, a symlink or directory created or removed.
    Touched(PathBuf),
    /// Events were lost: everything may have changed.
    Rescan,
}

impl Change {
    /// The paths the change is about.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Self::Written(path) | Self::Closed(path) | Self::Removed(path) | Self::Touched(path) => {
                vec![path]
            }
            Self::Renamed { from, to } => vec![from, to],
            Self::Rescan => Vec::new(),
        }
    }
}

/// Changes seen since the last reload, and the files still open for writing.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    changed: BTreeSet<PathBuf>,
    last_change: Option<Instant>,
    open_for_writing: HashMap<PathBuf, Instant>,
}

impl Settler {
    /// Settles changes for `settle`.
    pub fn new(settle: Duration) -> Self {
        Self { settle, changed: BTreeSet::new(), last_change: None, open_for_writing: HashMap::new() }
    }

    /// Takes in `change`, seen at `now`.
    pub fn observe(&mut self, change: Change, now: Instant) {
        self.changed.extend(change.paths().into_iter().map(Path::to_owned));
        self.last_change = Some(now);
        match change {
            Change::Written(path) => {
                self.open_for_writing.insert(path, now);
            }
            Change::Closed(path) | Change::Removed(path) => {
                self.open_for_writing.remove(&path);
            }
            Change::Renamed { from, to } => {
                if let Some(written) = self.open_for_writing.remove(&from) {
                    self.open_for_writing.insert(to, written);
                }
            }
            Change::Touched(_) | Change::Rescan => {}
        }
    }

    /// When the changes seen may be passed on, if there are any: once the
    /// window has passed since the last one and no file is open for writing.
    pub fn ready_at(&self) -> Option<Instant> {
        let quiet = self.last_change? + self.settle;
        let closed = self.open_for_writing.values().map(|written| *written + OPEN_FOR_WRITING_BOUND).max();
        Some(closed.map_or(quiet, |closed| closed.max(quiet)))
    }

    /// The changed paths, when they may be passed on at `now`; the settler
    /// then starts over. `exists` tells whether a file still exists: a file
    /// open for writing that is gone cannot be read half-written.
    pub fn take(&mut self, now: Instant, exists: impl Fn(&Path) -> bool) -> Option<Vec<PathBuf>> {
        if self.last_change.is_some_and(|last| now >= last + self.settle) {
            self.open_for_writing.retain(|path, _| exists(path));
        }
        if self.ready_at().is_none_or(|ready| now < ready) {
            return None;
        }
        self.last_change = None;
        self.open_for_writing.clear();
        Some(std::mem::take(&mut self.changed).into_iter().collect())
    }

    /// The files that count as open for writing.
    #[cfg(test)]
    fn open(&self) -> Vec<&Path> {
        let mut open: Vec<&Path> = self.open_for_writing.keys().map(PathBuf::as_path).collect();
        open.sort();
        open
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SETTLE: Duration = Duration::from_secs(1);

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn path(name: &str) -> PathBuf {
        PathBuf::from("policies").join(name)
    }

    fn exists(_: &Path) -> bool {
        true
    }

    #[test]
    fn nothing_is_ready_before_a_change() {
        let mut settler = Settler::new(SETTLE);
        assert_eq!(settler.ready_at(), None);
        assert_eq!(settler.take(Instant::now(), exists), None);
    }

    #[test]
    fn a_truncation_and_a_rewrite_within_the_window_are_read_once_after_the_rewrite() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        let pack = path("pack.cedar");
        settler.observe(Change::Written(pack.clone()), at(start, 0));
        settler.observe(Change::Closed(pack.clone()), at(start, 1));
        // The window has not passed since the truncation when the rewrite comes.
        assert_eq!(settler.take(at(start, 600), exists), None);
        settler.observe(Change::Written(pack.clone()), at(start, 600));
        settler.observe(Change::Closed(pack.clone()), at(start, 601));
        assert_eq!(settler.take(at(start, 1_000), exists), None, "quiet only since the rewrite");
        assert_eq!(settler.ready_at(), Some(at(start, 1_601)));
        assert_eq!(settler.take(at(start, 1_601), exists), Some(vec![pack]));
        assert_eq!(settler.ready_at(), None, "the settler starts over");
    }

    #[test]
    fn a_file_open_for_writing_holds_the_reload_until_it_is_closed() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        let pack = path("pack.cedar");
        settler.observe(Change::Written(pack.clone()), at(start, 0));
        assert_eq!(settler.take(at(start, 5_000), exists), None, "quiet, but still open");
        assert_eq!(settler.open(), [pack.as_path()]);
        settler.observe(Change::Written(pack.clone()), at(start, 5_000));
        settler.observe(Change::Closed(pack.clone()), at(start, 5_001));
        assert_eq!(settler.take(at(start, 5_500), exists), None, "closed, but not yet quiet");
        assert_eq!(settler.take(at(start, 6_001), exists), Some(vec![pack]));
    }

    #[test]
    fn a_file_never_reported_closed_stops_blocking_after_the_bound() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        settler.observe(Change::Written(path("pack.cedar")), at(start, 0));
        settler.observe(Change::Written(path("pack.cedar")), at(start, 10_000));
        let bound = at(start, 10_000) + OPEN_FOR_WRITING_BOUND;
        assert_eq!(settler.ready_at(), Some(bound), "counted from the last write");
        assert_eq!(settler.take(bound - Duration::from_millis(1), exists), None);
        assert!(settler.take(bound, exists).is_some());
    }

    #[test]
    fn a_removed_or_vanished_file_is_no_longer_open() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        settler.observe(Change::Written(path("a.cedar")), at(start, 0));
        settler.observe(Change::Written(path("b.cedar")), at(start, 0));
        settler.observe(Change::Removed(path("a.cedar")), at(start, 10));
        assert_eq!(settler.open(), [path("b.cedar").as_path()]);
        let b_is_gone = |p: &Path| !p.ends_with("b.cedar");
        assert_eq!(settler.take(at(start, 500), b_is_gone), None, "not quiet yet");
        assert_eq!(settler.open(), [path("b.cedar").as_path()], "only checked once quiet");
        let taken = settler.take(at(start, 1_010), b_is_gone).unwrap();
        assert_eq!(taken, [path("a.cedar"), path("b.cedar")]);
    }

    #[test]
    fn a_file_renamed_while_open_stays_open_under_its_new_name() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        let (temporary, pack) = (path("pack.cedar.tmp"), path("pack.cedar"));
        settler.observe(Change::Written(temporary.clone()), at(start, 0));
        settler.observe(Change::Renamed { from: temporary.clone(), to: pack.clone() }, at(start, 1));
        assert_eq!(settler.open(), [pack.as_path()]);
        assert_eq!(settler.take(at(start, 2_000), exists), None);
        settler.observe(Change::Closed(pack.clone()), at(start, 2_000));
        assert_eq!(settler.take(at(start, 3_000), exists), Some(vec![pack, temporary]));
    }

    #[test]
    fn touches_and_rescans_wait_for_the_window_but_open_nothing() {
        let start = Instant::now();
        let mut settler = Settler::new(SETTLE);
        settler.observe(Change::Touched(path("..data")), at(start, 0));
        settler.observe(Change::Rescan, at(start, 300));
        assert_eq!(settler.open(), Vec::<&Path>::new());
        assert_eq!(settler.take(at(start, 1_299), exists), None);
        assert_eq!(settler.take(at(start, 1_300), exists), Some(vec![path("..data")]));
    }
}

//! The watch against a real file system. Each test waits generously for a
//! change that must come, and checks that one that must not come did not
//! come while the files were in a state that must not be read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::sync::mpsc::{self, Receiver};

use super::*;

const SETTLE: Duration = Duration::from_millis(100);
const PATIENCE: Duration = Duration::from_secs(20);

fn watch(dir: &Path, relevant: fn(&Path) -> bool) -> (FileWatch, Receiver<Vec<PathBuf>>) {
    let (changes, received) = mpsc::channel();
    let watch = watch_dirs([dir], SETTLE, relevant, move |paths| {
        let _ = changes.send(paths.to_vec());
    })
    .unwrap();
    (watch, received)
}

fn everything(_: &Path) -> bool {
    true
}

fn cedar_only(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "cedar")
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// Waits out any change still settling from the test's set-up.
fn drain(received: &Receiver<Vec<PathBuf>>) {
    while received.recv_timeout(SETTLE * 5).is_ok() {}
}

#[test]
fn reading_watched_files_does_not_count_as_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.cedar");
    fs::write(&file, "permit(principal, action, resource);").unwrap();
    let (_watch, received) = watch(dir.path(), everything);
    fs::write(&file, "forbid(principal, action, resource);").unwrap();
    let changed = received.recv_timeout(PATIENCE).expect("a write is a change");
    assert_eq!(names(&changed), ["policy.cedar"]);
    drain(&received);
    for _ in 0..5 {
        fs::read_to_string(&file).unwrap();
    }
    assert!(received.recv_timeout(SETTLE * 5).is_err(), "reading is not a change");
}

#[test]
fn files_that_are_not_relevant_neither_count_nor_block() {
    let dir = tempfile::tempdir().unwrap();
    let (_watch, received) = watch(dir.path(), cedar_only);
    // An editor's swap file, held open for writing for the whole session.
    let mut swap = fs::File::create(dir.path().join(".pack.cedar.swp")).unwrap();
    swap.write_all(b"b0VIM").unwrap();
    assert!(received.recv_timeout(SETTLE * 5).is_err(), "a swap file is not a change");
    fs::write(dir.path().join("pack.cedar"), "permit(principal, action, resource);").unwrap();
    let changed = received.recv_timeout(PATIENCE).expect("the policy file changed");
    assert_eq!(names(&changed), ["pack.cedar"]);
    drop(swap);
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_held_open_for_writing_is_passed_on_only_once_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pack.cedar");
    fs::write(&path, "permit(principal, action, resource);").unwrap();
    let (_watch, received) = watch(dir.path(), everything);
    let mut file = fs::File::create(&path).unwrap();
    file.write_all(b"permit(principal, action, ").unwrap();
    file.flush().unwrap();
    // Many settle windows pass with the file half-written and open.
    assert!(received.recv_timeout(SETTLE * 10).is_err(), "a file open for writing was passed on");
    file.write_all(b"resource);").unwrap();
    drop(file);
    let changed = received.recv_timeout(PATIENCE).expect("closing the file completes the change");
    assert_eq!(names(&changed), ["pack.cedar"]);
    assert_eq!(fs::read_to_string(&path).unwrap(), "permit(principal, action, resource);");
}

/// Builds what the kubelet mounts for a ConfigMap with `files`:
/// `..<version>/` with the files, `..data -> ..<version>`, and each file
/// as a symlink into `..data`.
#[cfg(unix)]
pub fn configmap(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let target = format!("..{version}");
    fs::create_dir(dir.join(&target)).unwrap();
    for (name, text) in files {
        fs::write(dir.join(&target).join(name), text).unwrap();
    }
    std::os::unix::fs::symlink(&target, dir.join(DATA_LINK)).unwrap();
    for (name, _) in files {
        std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), dir.join(name)).unwrap();
    }
}

/// Updates a ConfigMap as the kubelet does: a new version directory, a
/// temporary link to it renamed over `..data`, then the old version removed.
#[cfg(unix)]
pub fn swap_configmap(dir: &Path, version: &str, files: &[(&str, &str)]) {
    let old = fs::read_link(dir.join(DATA_LINK)).unwrap();
    let target = format!("..{version}");
    fs::create_dir(dir.join(&target)).unwrap();
    for (name, text) in files {
        fs::write(dir.join(&target).join(name), text).unwrap();
    }
    std::os::unix::fs::symlink(&target, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join(DATA_LINK)).unwrap();
    fs::remove_dir_all(dir.join(old)).unwrap();
}

#[cfg(unix)]
#[test]
fn a_configmap_swap_is_one_change_and_no_file_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let files = [("pack.cedar", "permit(principal, action, resource);")];
    configmap(dir.path(), "2026_01_01_00_00_00.1", &files);
    let (_watch, received) = watch(dir.path(), cedar_only);
    drain(&received);
    swap_configmap(
        dir.path(),
        "2026_01_01_00_01_00.2",
        &[("pack.cedar", "forbid(principal, action, resource);")],
    );
    let changed = received.recv_timeout(PATIENCE).expect("the swap is a change");
    assert!(names(&changed).contains(&DATA_LINK.to_owned()), "{changed:?}");
    assert!(received.recv_timeout(SETTLE * 5).is_err(), "one swap, one change");
}

#[cfg(unix)]
#[test]
fn a_watched_directory_that_is_a_symlink_is_followed_when_the_link_is_swapped() {
    let root = tempfile::tempdir().unwrap();
    for version in ["v1", "v2"] {
        fs::create_dir(root.path().join(version)).unwrap();
        fs::write(root.path().join(version).join("pack.cedar"), version).unwrap();
    }
    let current = root.path().join("current");
    std::os::unix::fs::symlink("v1", &current).unwrap();
    let (_watch, received) = watch(&current, cedar_only);
    // Unrelated files beside the link are not watched.
    fs::write(root.path().join("other.cedar"), "x").unwrap();
    assert!(received.recv_timeout(SETTLE * 5).is_err(), "a file beside the link is not a change");
    std::os::unix::fs::symlink("v2", root.path().join("next")).unwrap();
    fs::rename(root.path().join("next"), &current).unwrap();
    let changed = received.recv_timeout(PATIENCE).expect("the swap is a change");
    assert!(changed.contains(&current), "{changed:?}");
    // The watch now follows v2, not v1.
    fs::write(root.path().join("v1/pack.cedar"), "old").unwrap();
    assert!(received.recv_timeout(SETTLE * 5).is_err(), "the old directory is no longer watched");
    fs::write(root.path().join("v2/pack.cedar"), "new").unwrap();
    let changed = received.recv_timeout(PATIENCE).expect("a change in the new directory");
    assert_eq!(names(&changed), ["pack.cedar"]);
}

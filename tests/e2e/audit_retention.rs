//! The decision log at volume, through the real binary: finished files are
//! compressed with zstd in the background, `audit verify` and the patient
//! access log read them as before, and old files are retired only once an
//! anchor the operator kept covers them, which `verify` then reports. The
//! disk the log fills is watched against a low-water mark.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{ADMIN_TOKEN, Server, ali_breaks_the_glass, audit_verify, repo_root};

/// The log files of `dir`, plain and compressed.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with("decisions-") && (name.ends_with(".jsonl") || name.ends_with(".jsonl.zst"))
        })
        .collect();
    files.sort();
    files
}

/// Waits until `done` holds for the log files of `dir`.
fn wait_until(dir: &Path, what: &str, done: impl Fn(&[PathBuf]) -> bool) -> Vec<PathBuf> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let files = log_files(dir);
        if done(&files) {
            return files;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {files:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn compressed(files: &[PathBuf]) -> usize {
    files.iter().filter(|f| f.extension().is_some_and(|e| e == "zst")).count()
}

/// Break-glass reads of p-100's record, `to - from` of them: each is answered once its record
/// is durable, so each is a batch of its own, and with a 1-byte rotation a
/// file of its own.
fn break_glass(server: &Server, from: usize, to: usize) {
    for _ in from..to {
        let (status, body) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
        assert_eq!((status, body["decision"].as_str()), (200, Some("Allow")), "{body}");
    }
}

fn access_log(server: &Server) -> Vec<Value> {
    let (status, log) =
        server.send("GET", "/v1/patients/p-100/access-log?limit=1000", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{log}");
    log["entries"].as_array().unwrap().clone()
}

/// Waits until the disk gauge counts exactly `files`: it is set at the end
/// of each pass of compression and retention, so the pass that left them
/// has ended.
fn wait_for_the_pass(server: &Server, files: &[PathBuf]) {
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("consentry_audit_disk_bytes") != bytes as f64 {
        assert!(Instant::now() < deadline, "the gauge never counted {bytes} bytes");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `anchor: SEQ:HASH` line of a successful `audit verify`.
fn anchor_of(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix("anchor: ")).unwrap().to_owned()
}

#[test]
fn rotated_files_are_compressed_read_back_and_retired_only_under_an_anchor() {
    let server = Server::start(
        &repo_root().join("policies"),
        &["--audit-rotate-bytes", "1", "--audit-retain-files", "2"],
    );
    let dir = server.audit.as_ref().unwrap().path().to_owned();
    break_glass(&server, 0, 6);
    // Six files; the five finished ones are compressed in the background.
    let files = wait_until(&dir, "compression", |files| files.len() == 6 && compressed(files) == 5);
    assert!(files[5].extension().is_some_and(|e| e == "jsonl"), "the file being written stays plain");
    assert_eq!(access_log(&server).len(), 6, "the access log reads compressed files");
    let (code, text) = audit_verify(&dir, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact: 6 records"), "{text}");
    assert!(!text.contains("retired"), "{text}");

    // Over the limit, but nothing covers the old files: all are kept.
    break_glass(&server, 6, 7);
    // (A file being compressed is there twice for a moment.)
    let files = wait_until(&dir, "compression", |files| files.len() == 7 && compressed(files) == 6);
    wait_for_the_pass(&server, &files);
    assert_eq!(log_files(&dir).len(), 7);

    // The operator keeps the head of the log; at the next rotation every
    // file it covers goes, but never the newest two.
    let kept = anchor_of(&audit_verify(&dir, &[]).1);
    std::fs::write(dir.join("anchors.txt"), format!("{kept}\n")).unwrap();
    break_glass(&server, 7, 8);
    let files = wait_until(&dir, "retirement", |files| files.len() == 2 && compressed(files) == 1);
    wait_for_the_pass(&server, &files);
    assert!(files[0].to_str().unwrap().ends_with("decisions-000007.jsonl.zst"), "{files:?}");
    let (code, text) = audit_verify(&dir, &[&kept]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact: 2 records"), "{text}");
    assert!(text.contains(&format!("retired: 6 records before seq 6, covered by anchor {kept}")), "{text}");
    assert_eq!(access_log(&server).len(), 2);
    assert!(std::fs::read_to_string(dir.join("retired.jsonl")).unwrap().lines().count() == 6);
}

#[test]
fn a_restart_finishes_what_a_crash_left_mid_compression() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().to_str().unwrap().to_owned();
    let args = ["--audit", log.as_str(), "--audit-rotate-bytes", "1"];
    let server = Server::start(&repo_root().join("policies"), &args);
    break_glass(&server, 0, 3);
    wait_until(dir.path(), "compression", |files| files.len() == 3 && compressed(files) == 2);
    assert_eq!(server.terminate(), Some(0));
    // As if killed after the rename but before the plain file was removed
    // (file 1), and half-way through writing a copy (file 2).
    let zst = |i: u32| dir.path().join(format!("decisions-00000{i}.jsonl.zst"));
    let plain = |i: u32| dir.path().join(format!("decisions-00000{i}.jsonl"));
    let one = zstd::decode_all(std::fs::File::open(zst(1)).unwrap()).unwrap();
    std::fs::write(plain(1), one).unwrap();
    let two = std::fs::read(zst(2)).unwrap();
    std::fs::write(plain(2), zstd::decode_all(two.as_slice()).unwrap()).unwrap();
    std::fs::remove_file(zst(2)).unwrap();
    let tmp = dir.path().join("decisions-000002.jsonl.zst.tmp");
    std::fs::write(&tmp, &two[..two.len() / 2]).unwrap();

    let server = Server::start(&repo_root().join("policies"), &args);
    let files = wait_until(dir.path(), "recovery", |files| files.len() == 3 && compressed(files) == 2);
    assert!(!tmp.exists() && !plain(1).exists() && !plain(2).exists(), "{files:?}");
    break_glass(&server, 3, 4);
    wait_until(dir.path(), "compression", |files| files.len() == 4 && compressed(files) == 3);
    let (code, text) = audit_verify(dir.path(), &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact: 4 records"), "nothing lost or doubled: {text}");
    assert_eq!(access_log(&server).len(), 4);
}

/// A disk below the low-water mark is a warning in `/readyz` and a gauge
/// under its mark, while the sidecar stays ready: it still decides, and an
/// unready sidecar would take its service out of rotation.
#[test]
fn the_decision_logs_disk_below_its_low_water_mark_is_a_warning_and_a_gauge() {
    // No real disk has an exabyte free, so this mark is always above it.
    let exabyte = "1152921504606846976";
    let low = Server::start(&repo_root().join("policies"), &["--audit-low-water-bytes", exabyte]);
    let (status, probe) = low.get("/readyz");
    assert_eq!(status, 200, "{probe}");
    assert_eq!(probe, serde_json::json!({"status": "ready", "warning": "disk"}));
    let (status, ready) = low.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{ready}");
    let disk = &ready["decision_log"]["disk"];
    let free = disk["free_bytes"].as_u64().unwrap_or_else(|| panic!("{ready}"));
    assert!(free > 0, "{ready}");
    assert_eq!((disk["low_water_bytes"].as_u64(), &disk["low"]), (Some(1 << 60), &Value::Bool(true)));
    assert_eq!(low.metric("consentry_audit_disk_low_water_bytes"), (1u64 << 60) as f64);
    let gauge = low.metric("consentry_audit_disk_free_bytes");
    assert!(gauge > 0.0 && gauge < (1u64 << 60) as f64, "{gauge}");

    let roomy = Server::start(&repo_root().join("policies"), &["--audit-low-water-bytes", "0"]);
    let (status, probe) = roomy.get("/readyz");
    assert_eq!((status, probe), (200, serde_json::json!({"status": "ready"})));
    let (_, ready) = roomy.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!(ready["decision_log"]["disk"]["low"], Value::Bool(false), "{ready}");
}

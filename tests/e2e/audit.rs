//! The decision log through the real binary: every API's decisions are
//! recorded under the id the caller was given, `consentry audit verify`
//! accepts the log and names the record that was tampered with, and a log
//! that cannot be written denies new decisions.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Server, ali_breaks_the_glass, audit_verify, repo_root};

/// Every record in the log directory, in order.
pub(crate) fn records(dir: &Path) -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .iter()
        .flat_map(|file| {
            std::fs::read_to_string(file).unwrap().lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .map(|line| serde_json::from_str(&line).unwrap())
        .collect()
}

/// A representative's read: allowed, and not break-glass, so it is answered
/// before its record is written.
fn anna_reads_for_p100() -> Value {
    crate::support::cedar_request(
        "RelatedPerson::\"rp-anna\"",
        "Action::\"read\"",
        "Patient::\"p-100\"",
        json!({"purpose": "PWATRNY"}),
    )
}

fn verify(dir: &Path) -> (Option<i32>, String) {
    audit_verify(dir, &[])
}

/// Waits until the writer has written `count` records.
pub fn wait_for_records(dir: &Path, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let written = records(dir);
        if written.len() >= count {
            return written;
        }
        assert!(Instant::now() < deadline, "only {} of {count} records were written", written.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_api_records_its_decisions_and_verify_finds_tampering() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let dir = server.audit.as_ref().unwrap().path().to_owned();
    let (_, single) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    let (_, batch) = server.post(
        "/v1/is_authorized/batch",
        &json!({"requests": [ali_breaks_the_glass("psy-1"), ali_breaks_the_glass("obs-2")]}),
    );
    let evaluation = json!({"subject": {"type": "Practitioner", "id": "dr-chen"}, "action": {"name": "read"},
                            "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "TREAT"}});
    let (_, authzen) = server.post("/access/v1/evaluation", &evaluation);

    let ids = [
        single["decision_id"].clone(),
        batch["responses"][0]["decision_id"].clone(),
        batch["responses"][1]["decision_id"].clone(),
        authzen["context"]["decision_id"].clone(),
    ];
    let written = wait_for_records(&dir, ids.len());
    let recorded: Vec<&Value> = written.iter().map(|r| &r["decision_id"]).collect();
    assert_eq!(recorded, ids.iter().collect::<Vec<_>>());
    let first = &written[0];
    assert_eq!(first["principal"], "Practitioner::\"dr-ali\"");
    assert_eq!(first["resource"], "Record::\"obs-1\"");
    assert_eq!(first["patients"], json!(["p-100"]));
    assert_eq!(first["purpose"], "BTG");
    assert_eq!(first["decision"], "Allow");
    assert_eq!(first["reasons"], json!(["break-glass"]));
    assert_eq!(first["obligations"], json!(["notify-patient", "audit-priority"]));
    assert_eq!(written[3]["outcome"], "not_permitted");
    // Identifiers only: the free-text justification is not recorded.
    let all = written.iter().map(Value::to_string).collect::<String>();
    assert!(!all.contains("unconscious"), "{all}");

    let (code, text) = verify(&dir);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact: 4 records"), "{text}");
    // The writer counts a batch once its fsync returns, just after the lines appear.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("consentry_audit_written_total") < 4.0 {
        assert!(Instant::now() < deadline, "written records were never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.metric("consentry_audit_written_total"), 4.0);
    assert_eq!(server.metric("consentry_audit_failing"), 0.0);
    let (status, ready) = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!((status, &ready["decision_log"]["ok"]), (200, &json!(true)), "{ready}");
    assert_eq!(ready["decision_log"]["log"], dir.to_str().unwrap(), "{ready}");

    // Change the purpose the second decision was made for.
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let file = files.into_iter().find(|f| std::fs::metadata(f).unwrap().len() > 0).unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<String> = original.lines().map(str::to_owned).collect();
    let edited = lines[1].replacen("\"purpose\":\"BTG\"", "\"purpose\":\"TREAT\"", 1);
    assert_ne!(edited, lines[1]);
    lines[1] = edited;
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 2"), "{text}");

    // Delete the second record instead, then swap the second and third.
    let mut lines: Vec<&str> = original.lines().collect();
    let deleted = lines.remove(1);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 2"), "{text}");
    lines.insert(2, deleted);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 2"), "{text}");

    std::fs::write(&file, &original).unwrap();
    assert_eq!(verify(&dir).0, Some(0), "the untouched log verifies again");
}

#[test]
fn records_cut_from_the_end_pass_the_chain_but_not_the_anchor_kept_from_before() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let dir = server.audit.as_ref().unwrap().path().to_owned();
    let head = || server.send("GET", "/v1/audit/head", None, Some(ADMIN_TOKEN));
    assert_eq!(head(), (200, json!({"records": 0, "anchor": null, "at": null})));
    for record in ["obs-1", "obs-2", "obs-3"] {
        server.post("/v1/is_authorized", &ali_breaks_the_glass(record));
    }
    let written = wait_for_records(&dir, 3);
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(0), "{text}");
    let anchor = text.lines().find_map(|line| line.strip_prefix("anchor: ")).expect(&text).to_owned();
    assert_eq!(anchor, format!("2:{}", written[2]["hash"].as_str().unwrap()));
    let (status, newest) = head();
    assert_eq!((status, &newest["records"], &newest["anchor"]), (200, &json!(3), &json!(anchor)), "{newest}");
    let (code, text) = audit_verify(&dir, &[&anchor]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("intact: 3 records") && text.contains("including the anchored record"), "{text}");

    // Cut the last record: what is left is a chain intact in itself.
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|ext| ext == "jsonl"))
        .unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let kept: String = original.lines().take(2).map(|line| format!("{line}\n")).collect();
    std::fs::write(&file, kept).unwrap();
    let (code, text) = verify(&dir);
    assert_eq!(code, Some(0), "without the anchor the cut cannot show: {text}");
    let (code, text) = audit_verify(&dir, &[&anchor]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("names seq 2, but the log ends at seq 1: records were removed from its end"),
        "{text}"
    );

    let (code, text) = audit_verify(&dir, &["2:not-a-hash"]);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("invalid `--anchor`") && text.contains("`not-a-hash`"), "{text}");
}

/// A server whose decision log breaks after its first record: where the
/// log's directory was there is then a file, so no new log file can be
/// made, and the writer rotates before every write. Returns the server and
/// the directory holding the log's parent.
fn server_whose_log_breaks(backpressure: &str) -> (Server, tempfile::TempDir) {
    let audit = tempfile::tempdir().unwrap();
    let dir = audit.path().join("log");
    let dir_arg = dir.to_str().unwrap().to_owned();
    let server = Server::start(
        &repo_root().join("policies"),
        &["--audit", &dir_arg, "--audit-rotate-bytes", "1", "--audit-backpressure", backpressure],
    );
    let (_, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert_eq!(answer["decision"], "Allow");
    wait_for_records(&dir, 1);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    (server, audit)
}

#[test]
fn a_decision_log_that_cannot_be_written_denies_new_decisions() {
    let (server, _audit) = server_whose_log_breaks("fail-closed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
        assert_eq!(status, 200);
        if answer["decision"] == "Deny" {
            assert_eq!(answer["outcome"], "failed_closed");
            let summary = answer["summary"].as_str().unwrap();
            assert!(summary.contains("audit unavailable: the audit log cannot be written"), "{summary}");
            break;
        }
        assert!(Instant::now() < deadline, "decisions were still allowed with a broken decision log");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric("consentry_audit_write_failures_total") >= 1.0);
    assert_eq!(server.metric("consentry_audit_dropped_total"), 0.0);
    assert_eq!(server.metric("consentry_audit_failing"), 1.0);
    // Every decision is now denied, so the sidecar is not ready.
    let (status, ready) = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["decision_log"]["ok"], false, "{ready}");
    assert_eq!(ready["decision_log"]["backpressure"], "fail-closed", "{ready}");
    assert!(ready["decision_log"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{ready}");
    assert_eq!(ready["decision_log"]["code"], "audit_files_failed", "{ready}");
    assert_eq!(ready["store"]["ok"], true, "{ready}");
}

#[test]
fn with_drop_and_count_a_broken_log_decides_and_accounts_for_every_record() {
    let (server, _audit) = server_whose_log_breaks("drop-and-count");
    let decisions = 50;
    for _ in 0..decisions {
        let (_, answer) = server.post("/v1/is_authorized", &anna_reads_for_p100());
        assert_eq!(answer["decision"], "Allow", "{answer}");
    }
    // Never silent loss: each record after the break is either dropped from
    // a full queue or counted when its write fails.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let accounted = server.metric("consentry_audit_dropped_total")
            + server.metric("consentry_audit_write_failures_total");
        if accounted == f64::from(decisions) {
            break;
        }
        assert!(accounted < f64::from(decisions), "{accounted} records counted for {decisions} decisions");
        assert!(Instant::now() < deadline, "only {accounted} of {decisions} lost records were counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Decisions are still made, so the sidecar stays ready, but says why
    // records are being lost.
    let (status, ready) = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["decision_log"]["ok"], false, "{ready}");
    assert_eq!(ready["decision_log"]["backpressure"], "drop-and-count", "{ready}");
    // Emergency access must stay provable: a break-glass Allow whose record
    // cannot be written is denied, whatever the backpressure.
    let (_, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert_eq!(answer["outcome"], "failed_closed", "{answer}");
    let summary = answer["summary"].as_str().unwrap();
    assert!(summary.contains("audit unavailable: the audit log cannot be written"), "{summary}");
}

#[test]
fn sigterm_writes_every_answered_decision_before_the_process_exits() {
    for _ in 0..5 {
        let mut server = Server::start(&repo_root().join("policies"), &[]);
        let audit = server.audit.take().unwrap();
        let decisions = 200;
        for _ in 0..decisions {
            let (_, answer) = server.post("/v1/is_authorized", &anna_reads_for_p100());
            assert_eq!(answer["decision"], "Allow", "{answer}");
        }
        // At once: the last records are still queued (the writer batches;
        // these are not break-glass decisions, which wait for their records).
        assert_eq!(server.terminate(), Some(0));
        assert_eq!(records(audit.path()).len(), decisions, "an answered decision was not recorded");
        let (code, text) = verify(audit.path());
        assert_eq!(code, Some(0), "{text}");
    }
}

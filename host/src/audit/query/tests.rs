//! Tests of reading a JSON Lines log back, on real files written by the sink.

use std::fs;

use super::super::chain::AuditEntry;
use super::*;
use crate::audit::jsonl::JsonlSink;
use crate::audit::record::fixtures::read_by_weber;

/// Twelve decisions, one a month through 2026 (seq = month - 1), written
/// one per file: odd months are about p-1, even ones about p-2, and every
/// third month about both. A patient whose id contains p-1 (`p-10`) and a
/// principal naming `p-1` must not match p-1.
fn year_of_decisions(dir: &Path) {
    let mut sink = JsonlSink::open(dir, 1).unwrap();
    for month in 1..=12_u32 {
        let at = format!("2026-{month:02}-15T12:00:00.250Z");
        let mut patients = vec![if month % 2 == 1 { "p-1" } else { "p-2" }];
        if month % 3 == 0 {
            patients.push(if month % 2 == 1 { "p-2" } else { "p-1" });
        }
        patients.push("p-10");
        let mut entry = read_by_weber(month, &at, &patients);
        if month == 2 {
            entry.principal = "Patient::\"p-1\"".to_owned();
        }
        sink.append(vec![entry]).unwrap();
    }
}

/// [`year_of_decisions`], with May's record (about p-1) no longer a record;
/// returns its file.
fn year_with_a_damaged_may(dir: &Path) -> PathBuf {
    year_of_decisions(dir);
    let file = dir.join("decisions-000005.jsonl");
    let text = fs::read_to_string(&file).unwrap().replacen("\"principal\"", "\"principle\"", 1);
    fs::write(&file, text).unwrap();
    file
}

fn store(dir: &Path) -> AuditStore {
    AuditStore::jsonl(dir.to_path_buf())
}

fn bound(text: &str) -> EvaluationTime {
    parse_bound("from", text).unwrap()
}

fn seqs(found: &PatientRecords) -> Vec<u64> {
    found.records.iter().map(|r| r.seq).collect()
}

#[tokio::test]
async fn finds_a_patients_records_across_rotated_files_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    year_of_decisions(tmp.path());
    assert!(log_files(tmp.path()).unwrap().len() >= 12, "one file per record");
    let found = store(tmp.path()).about_patient("p-1", None, None, 100).await.unwrap();
    // Months 1, 3, 5, 6 (both), 7, 9, 11, 12 (both).
    assert_eq!(seqs(&found), vec![0, 2, 4, 5, 6, 8, 10, 11]);
    assert!(!found.more);
    assert!(found.records.iter().all(|r| r.entry.patients.contains(&"p-1".to_owned())));
    let found = store(tmp.path()).about_patient("p-2", None, None, 100).await.unwrap();
    assert_eq!(seqs(&found), vec![1, 2, 3, 5, 7, 8, 9, 11]);
    let found = store(tmp.path()).about_patient("p-3", None, None, 100).await.unwrap();
    assert_eq!(found, PatientRecords { records: vec![], more: false });
}

#[tokio::test]
async fn filters_by_a_half_open_range_of_any_precision() {
    let tmp = tempfile::tempdir().unwrap();
    year_of_decisions(tmp.path());
    let audit = store(tmp.path());
    let between = |from: Option<&str>, to: Option<&str>| {
        let (from, to) = (from.map(bound), to.map(bound));
        let audit = audit.clone();
        async move { seqs(&audit.about_patient("p-1", from.as_ref(), to.as_ref(), 100).await.unwrap()) }
    };
    // Months 3 to 6: from is inclusive, to exclusive.
    assert_eq!(between(Some("2026-03"), Some("2026-07")).await, vec![2, 4, 5]);
    assert_eq!(between(Some("2026-03-15"), Some("2026-06-15")).await, vec![2, 4]);
    // To the millisecond, in any offset.
    assert_eq!(between(Some("2026-05-15T12:00:00.250Z"), Some("2026-05-15T12:00:00.251Z")).await, vec![4]);
    assert_eq!(between(Some("2026-05-15T12:00:00.251Z"), None).await, vec![5, 6, 8, 10, 11]);
    assert_eq!(between(None, Some("2026-05-15T14:00:00.250+02:00")).await, vec![0, 2]);
    assert_eq!(between(Some("2027"), None).await, Vec::<u64>::new());
    assert_eq!(between(Some("2026"), Some("2027")).await.len(), 8);
    assert_eq!(between(Some("2026-07"), Some("2026-07")).await, Vec::<u64>::new());
}

#[tokio::test]
async fn stops_at_the_limit_and_says_more_matched() {
    let tmp = tempfile::tempdir().unwrap();
    year_of_decisions(tmp.path());
    let audit = store(tmp.path());
    let first = audit.about_patient("p-1", None, None, 3).await.unwrap();
    assert_eq!((seqs(&first), first.more), (vec![0, 2, 4], true));
    let exact = audit.about_patient("p-1", None, None, 8).await.unwrap();
    assert_eq!((exact.records.len(), exact.more), (8, false));
    let none = audit.about_patient("p-1", None, None, 0).await.unwrap();
    assert_eq!((none.records.len(), none.more), (0, true));
    let later = audit.about_patient("p-1", Some(&bound("2026-10")), None, 1).await.unwrap();
    assert_eq!((seqs(&later), later.more), (vec![10], true));
}

#[tokio::test]
async fn passes_over_the_lock_file_set_aside_lines_and_an_append_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut sink = JsonlSink::open(tmp.path(), u64::MAX).unwrap();
        sink.append(vec![read_by_weber(1, "2026-01-01T00:00:00Z", &["p-1"])]).unwrap();
    }
    let log = tmp.path().join("decisions-000001.jsonl");
    let line = fs::read_to_string(&log).unwrap();
    assert!(tmp.path().join("decisions.lock").exists());
    // A line set aside by the sink, and another file that is no log file.
    fs::write(tmp.path().join("decisions-000001.jsonl.torn-at-0"), &line).unwrap();
    fs::write(tmp.path().join("decisions-1.jsonl"), &line).unwrap();
    // Half of the next record, as if an append were under way.
    let mut partial = fs::read(&log).unwrap();
    partial.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
    fs::write(&log, partial).unwrap();
    let found = store(tmp.path()).about_patient("p-1", None, None, 100).await.unwrap();
    assert_eq!(seqs(&found), vec![0]);
}

#[tokio::test]
async fn a_damaged_line_about_the_patient_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = year_with_a_damaged_may(tmp.path());
    let error = store(tmp.path()).about_patient("p-1", None, None, 100).await.unwrap_err();
    assert!(matches!(&error, AuditReadError::Corrupt { file: f, line: 1, .. } if *f == file), "{error}");
    // Another patient's report does not read that line.
    assert!(store(tmp.path()).about_patient("p-2", None, None, 100).await.is_ok());
    let missing = store(&tmp.path().join("absent")).about_patient("p-1", None, None, 1).await;
    assert!(matches!(missing, Err(AuditReadError::Io { .. })));
}

#[test]
fn bounds_of_every_precision_parse_to_their_first_instant() {
    let ms = |text: &str| parse_bound("from", text).unwrap().unix_millis();
    assert_eq!(ms("2026"), ms("2026-01-01T00:00:00Z"));
    assert_eq!(ms("2026-11"), ms("2026-11-01T00:00:00Z"));
    assert_eq!(ms("2026-11-30"), ms("2026-11-30T00:00:00Z"));
    assert_eq!(ms("2026-11-30T09:00:00+01:00"), ms("2026-11-30T08:00:00Z"));
    assert_eq!(ms("2026-11-30T08:00:00.5Z") - ms("2026-11-30T08:00:00Z"), 500);
}

#[test]
fn a_bad_bound_names_its_parameter() {
    for bad in ["", "yesterday", "2026-13", "2026-02-30", "2026-11-30T08:00:00", "2026/11/30"] {
        let error = parse_bound("to", bad).unwrap_err();
        assert_eq!(error.parameter, "to");
        assert!(error.to_string().starts_with("invalid `to`: "), "{error}");
        if !bad.is_empty() {
            assert!(error.reason.contains(&format!("`{bad}`")), "{error}");
        }
    }
}

#[test]
fn the_instant_of_a_canonical_line_is_read_without_parsing_it() {
    let mut head = crate::audit::chain::ChainHead::genesis();
    let entry = read_by_weber(1, "2026-05-01T10:00:00.250Z", &["p-1"]);
    let (_, line) = crate::audit::chain::chain(entry.into(), &mut head);
    assert_eq!(canonical_at(&line), Some("2026-05-01T10:00:00.250Z"));
    assert_eq!(canonical_at("not a record"), None);
}

#[tokio::test]
async fn a_time_range_passes_over_lines_outside_it_by_their_instant() {
    let tmp = tempfile::tempdir().unwrap();
    let file = year_with_a_damaged_may(tmp.path());
    // May's damaged line lies outside June onwards, so it is not read...
    let found = store(tmp.path()).about_patient("p-1", Some(&bound("2026-06")), None, 100).await.unwrap();
    assert_eq!(seqs(&found), vec![5, 6, 8, 10, 11]);
    // ...but a range that holds it still reports it.
    let error =
        store(tmp.path()).about_patient("p-1", Some(&bound("2026-05")), Some(&bound("2026-06")), 100).await;
    assert!(
        matches!(&error, Err(AuditReadError::Corrupt { file: f, line: 1, .. }) if *f == file),
        "{error:?}"
    );
}

/// Decisions about p-1 (seq 0, 2, 4) with changes between them: policies
/// (1), a consent whose content hash happens to read `p-1` (3), plugins and
/// policies again in the same millisecond (5, 6).
fn decisions_and_changes(dir: &Path) {
    use crate::audit::change::fixtures::policies_loaded;
    let change = |n: u32, kind: &str, at: &str| {
        let mut change = policies_loaded(n, at);
        change.kind = kind.to_owned();
        if kind == "consent" {
            change.subject = "c-1/v3".to_owned();
            change.content_hash = "p-1".to_owned();
        }
        AuditEntry::from(change)
    };
    let decision = |n: u32, at: &str| AuditEntry::from(read_by_weber(n, at, &["p-1"]));
    let mut sink = JsonlSink::open(dir, 1).unwrap();
    sink.append(vec![decision(0, "2026-01-10T00:00:00Z"), change(1, "policies", "2026-01-20T12:00:00Z")])
        .unwrap();
    sink.append(vec![decision(2, "2026-02-10T00:00:00Z"), change(3, "consent", "2026-02-20T12:00:00Z")])
        .unwrap();
    sink.append(vec![
        decision(4, "2026-03-10T00:00:00Z"),
        change(5, "plugins", "2026-03-20T12:00:00Z"),
        change(6, "policies", "2026-03-20T12:00:00Z"),
    ])
    .unwrap();
}

fn change_query(
    since: Option<&str>,
    kind: Option<ChangeKind>,
    after: Option<u64>,
    limit: usize,
) -> ChangeQuery {
    ChangeQuery { since: since.map(bound), kind, after, limit }
}

fn change_seqs(found: &ChangeRecords) -> (Vec<u64>, bool) {
    (found.records.iter().map(|r| r.seq).collect(), found.more)
}

#[tokio::test]
async fn lists_change_records_oldest_first_by_since_kind_and_page() {
    let tmp = tempfile::tempdir().unwrap();
    decisions_and_changes(tmp.path());
    let audit = store(tmp.path());
    let cases = [
        (change_query(None, None, None, 100), (vec![1, 3, 5, 6], false)),
        (change_query(Some("2026-02"), None, None, 100), (vec![3, 5, 6], false)),
        (change_query(Some("2026-02-20T12:00:00Z"), None, None, 100), (vec![3, 5, 6], false)),
        (change_query(Some("2026-02-20T12:00:00.001Z"), None, None, 100), (vec![5, 6], false)),
        (change_query(None, Some(ChangeKind::Policies), None, 100), (vec![1, 6], false)),
        (change_query(None, Some(ChangeKind::Schema), None, 100), (vec![], false)),
        (change_query(None, None, None, 2), (vec![1, 3], true)),
        (change_query(None, None, Some(3), 2), (vec![5, 6], false)),
        (change_query(Some("2026-03-20T12:00:00Z"), None, Some(5), 1), (vec![6], false)),
        (change_query(Some("2027"), None, None, 100), (vec![], false)),
    ];
    for (query, expected) in cases {
        let found = audit.changes(query.clone()).await.unwrap();
        assert_eq!(change_seqs(&found), expected, "{query:?}");
    }
    let found = audit.changes(change_query(None, Some(ChangeKind::Consent), None, 1)).await.unwrap();
    let consent = &found.records[0].change;
    assert_eq!(
        (consent.kind.as_str(), consent.subject.as_str(), consent.actor.as_str()),
        ("consent", "c-1/v3", "admin")
    );
}

#[tokio::test]
async fn a_patients_report_and_the_head_see_change_records_rightly() {
    let tmp = tempfile::tempdir().unwrap();
    decisions_and_changes(tmp.path());
    let audit = store(tmp.path());
    // The consent change's line holds `"p-1"`, but it is no decision about p-1.
    let found = audit.about_patient("p-1", None, None, 100).await.unwrap();
    assert_eq!((seqs(&found), found.more), (vec![0, 2, 4], false));
    let head = audit.last_record().await.unwrap().unwrap();
    assert_eq!((head.seq(), head.at()), (6, "2026-03-20T12:00:00Z"));
    assert!(matches!(head, ChainLine::Change(_)));
}

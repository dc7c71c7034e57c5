//! Change records in the one chain, through the public API: a log written
//! before they existed (a directory, or a table at migration 1) still
//! verifies and goes on with them; `audit verify` checks mixed logs and
//! names an edited change record or a change row's edited column; and the
//! changes read back the same from a table and a directory. The directory
//! tests always run; the table tests when `CONSENTRY_TEST_POSTGRES_URL` is
//! set.

use std::path::Path;

use consentry::audit::chain::{ChainLine, ChainedChange};
use consentry::audit::query::ChangeQuery;
use consentry::audit::{ChangeEntry, ChangeKind, ChangeRecords};
use sha2::{Digest, Sha256};

use super::*;

/// The decision-only log the fixture directory holds: three records.
const OLD_LOG: &str = "tests/audit/fixtures/decisions-before-change-records";

fn options() -> AuditOptions {
    AuditOptions {
        rotate_bytes: u64::MAX,
        retention: audit::Retention::default(),
        low_water_bytes: 0,
        queue: 16,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    }
}

/// A copy of the fixture log, to append to.
fn copy_of_old_log() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(OLD_LOG);
    for item in std::fs::read_dir(source).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), dir.path().join(item.file_name())).unwrap();
    }
    dir
}

/// Policy set `v{n}` loaded by `admin`.
fn policies(n: u32) -> ChangeEntry {
    ChangeEntry::now(ChangeKind::Policies, "admin", format!("v{n}"))
        .with_hash(format!("sha256:{n:04}"))
        .with_count("policies", u64::from(n))
        .with_reason(Some("CHG-1 quarterly review"))
        .unwrap()
}

/// Consent `c-{n}` version 1 recorded by `consent-app`.
fn consent(n: u32) -> ChangeEntry {
    ChangeEntry::now(ChangeKind::Consent, "consent-app", format!("c-{n}/v1"))
}

fn all_changes() -> ChangeQuery {
    ChangeQuery { since: None, kind: None, after: None, limit: 100 }
}

fn change_seqs(found: &ChangeRecords) -> Vec<u64> {
    found.records.iter().map(|record| record.seq).collect()
}

/// The broken record's line number and reason, from `audit verify`.
fn broken(log: &str) -> (usize, String) {
    match verify(log) {
        Err(audit::VerifyFailure::Break(broken)) => (broken.line, broken.reason),
        other => panic!("expected a break, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_written_before_change_records_verifies_and_goes_on_with_them() {
    let dir = copy_of_old_log();
    let path = dir.path().to_str().unwrap().to_owned();
    assert_eq!(verify(&path).unwrap(), 3);

    let (log, store) =
        audit::open(&AuditTarget::Dir(dir.path().to_owned()), &options()).await.unwrap().unwrap();
    log.record_change(policies(2)).unwrap().durable().await.unwrap();
    log.submit(simple(10)).unwrap();
    log.record_change(consent(1)).unwrap().durable().await.unwrap();
    wait_for_records(&path, 6);

    let found = store.changes(all_changes()).await.unwrap();
    assert_eq!((change_seqs(&found), found.more), (vec![3, 5], false));
    assert_eq!(found.records[0].change.subject, "v2");
    assert_eq!(found.records[1].change.actor, "consent-app");
    let old = store.about_patient("p-100", None, None, 100).await.unwrap();
    assert_eq!(seqs(&old.records), vec![0, 1]);
    let head = store.last_record().await.unwrap().unwrap();
    assert!(matches!(head, ChainLine::Change(ChainedChange { seq: 5, .. })), "{head:?}");
    drop(log);

    // `audit verify` names an edited change record.
    let file = dir.path().join("decisions-000001.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("\"actor\":\"admin\"", "\"actor\":\"intern\"")).unwrap();
    let (line, reason) = broken(&path);
    assert_eq!(line, 4);
    assert!(reason.starts_with("`hash` does not match the record's content"), "{reason}");
}

/// Builds the table as a release before change records did: migration 1
/// only, holding the fixture's three decisions.
fn old_table(schema: &TestSchema) {
    let migration = include_str!("../../migrations/audit_postgres/0001_audit_log.sql");
    schema.run(migration).unwrap();
    let checksum: String = Sha256::digest(migration.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    schema
        .run(&format!(
            "CREATE TABLE consentry_audit_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, \
             checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
             INSERT INTO consentry_audit_migrations (version, description, checksum) \
             VALUES (1, 'audit log', '{checksum}')"
        ))
        .unwrap();
    let log = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(OLD_LOG).join("decisions-000001.jsonl"),
    )
    .unwrap();
    for line in log.lines() {
        let ChainLine::Decision(record) = ChainLine::parse(line).unwrap() else { panic!("{line}") };
        let patients: Vec<String> = record.entry.patients.iter().map(|p| format!("\"{p}\"")).collect();
        schema
            .run(&format!(
                "INSERT INTO consentry_audit_log (seq, decision_id, at, patients, line) \
                 VALUES ({}, '{}', '{}', '{{{}}}', '{}')",
                record.seq,
                record.entry.decision_id,
                record.entry.at,
                patients.join(","),
                line.replace('\'', "''"),
            ))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_written_before_change_records_verifies_and_goes_on_with_them() {
    let Some(schema) = TestSchema::create(
        "audit::changes::a_table_written_before_change_records_verifies_and_goes_on_with_them",
    ) else {
        return;
    };
    let url = schema.url();
    old_table(&schema);
    assert_eq!(verify(&url).unwrap(), 3);

    let (log, store) = audit::open(&AuditTarget::parse(&url).unwrap(), &options()).await.unwrap().unwrap();
    log.record_change(policies(2)).unwrap().durable().await.unwrap();
    log.submit(simple(10)).unwrap();
    log.record_change(consent(1)).unwrap().durable().await.unwrap();
    wait_for_records(&url, 6);
    let found = store.changes(all_changes()).await.unwrap();
    assert_eq!(change_seqs(&found), vec![3, 5]);
    let old = store.about_patient("p-100", None, None, 100).await.unwrap();
    assert_eq!(seqs(&old.records), vec![0, 1]);
    drop(log);

    // A change row holds no decision id, and its columns are checked.
    let refused = schema.run("UPDATE consentry_audit_log SET decision_id = NULL WHERE seq = 0").unwrap_err();
    assert!(refused.contains("consentry_audit_log_decision_or_change"), "{refused}");
    schema.run("UPDATE consentry_audit_log SET change_kind = 'schema' WHERE seq = 3").unwrap();
    let (line, reason) = broken(&url);
    assert_eq!(line, 4);
    assert_eq!(reason, "the row's `change_kind` column does not match its record (it was edited)");
    schema.run("UPDATE consentry_audit_log SET change_kind = 'policies' WHERE seq = 3").unwrap();
    assert_eq!(verify(&url).unwrap(), 6);

    // And an edited change record is named.
    schema
        .run("UPDATE consentry_audit_log SET line = replace(line, '\"actor\":\"consent-app\"', '\"actor\":\"x\"') WHERE seq = 5")
        .unwrap();
    let (line, reason) = broken(&url);
    assert_eq!(line, 6);
    assert!(reason.starts_with("`hash` does not match the record's content"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_read_the_same_from_a_table_and_a_directory() {
    let Some(schema) =
        TestSchema::create("audit::changes::changes_read_the_same_from_a_table_and_a_directory")
    else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let targets = [AuditTarget::parse(&url).unwrap(), AuditTarget::Dir(dir.path().to_owned())];
    let mut stores = Vec::new();
    for target in &targets {
        let (log, store) = audit::open(target, &options()).await.unwrap().unwrap();
        // The same entries in both, so the same chain.
        for month in 1..=6_u32 {
            log.submit(entry(month, &format!("2026-{month:02}-01T00:00:00Z"), &["p-1"])).unwrap();
            let mut change = if month % 2 == 0 { consent(month) } else { policies(month) };
            change.change_id = uuid::Uuid::from_u128(0xC000 + u128::from(month));
            change.at = format!("2026-{month:02}-15T12:00:00.000Z");
            log.record_change(change).unwrap().durable().await.unwrap();
        }
        stores.push((log, store));
    }
    wait_for_records(&url, 12);
    wait_for_records(dir.path().to_str().unwrap(), 12);
    let since = |text: &str| Some(parse_bound("since", text).unwrap());
    let cases = [
        (all_changes(), vec![1, 3, 5, 7, 9, 11], false),
        (ChangeQuery { since: since("2026-03-15T12:00:00Z"), ..all_changes() }, vec![5, 7, 9, 11], false),
        (ChangeQuery { kind: Some(ChangeKind::Consent), ..all_changes() }, vec![3, 7, 11], false),
        (ChangeQuery { kind: Some(ChangeKind::Consent), limit: 2, ..all_changes() }, vec![3, 7], true),
        (ChangeQuery { after: Some(7), limit: 1, ..all_changes() }, vec![9], true),
        (ChangeQuery { kind: Some(ChangeKind::Links), ..all_changes() }, vec![], false),
    ];
    for (query, expected, more) in cases {
        let mut answers = Vec::new();
        for (_, store) in &stores {
            let found = store.changes(query.clone()).await.unwrap();
            assert_eq!((change_seqs(&found), found.more), (expected.clone(), more), "{store:?} {query:?}");
            answers.push(found);
        }
        assert_eq!(answers[0], answers[1], "the table and the directory agree, record for record");
    }
    let decisions = stores[0].1.about_patient("p-1", None, None, 100).await.unwrap();
    assert_eq!(seqs(&decisions.records), vec![0, 2, 4, 6, 8, 10]);
}

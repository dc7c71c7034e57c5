//! The PostgreSQL decision log against a real database: batches are all or
//! nothing, sinks appending at once form one chain, the migrations are
//! tracked apart from the consent store's, a failing table is reported to
//! decisions and recovered from, and reading a patient's records back gives
//! the same answers as from a directory. Runs when
//! `CONSENTRY_TEST_POSTGRES_URL` names a database, each test in a fresh
//! schema of its own; otherwise each test says it was skipped and passes.
//! Change records, in both sinks, are in [`changes`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::time::{Duration, Instant};

use consentry::audit::chain::{ChainLine, ChainedRecord};
use consentry::audit::postgres::{self, PostgresSink};
use consentry::audit::record::DecisionEntry;
use consentry::audit::writer::{AuditLog, Backpressure, Durability};
use consentry::audit::{self, AuditOptions, AuditRefusal, AuditStore, AuditTarget, parse_bound};
use consentry::store::{DurableStore, StoreLocation};

#[path = "../../../tests/e2e/postgres_schema.rs"]
#[allow(dead_code, reason = "each suite uses part of the shared helper")]
mod postgres_schema;

mod changes;

use postgres_schema::TestSchema;

/// How long the writer may take. Generous: only what never happens fails.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `audit verify` of a table or directory, on a runtime of its own.
fn verify(log: &str) -> Result<u64, audit::VerifyFailure> {
    let target = AuditTarget::parse(log).unwrap();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(audit::verify(&target, Vec::new())).map(|verified| verified.records)
            })
            .join()
            .unwrap()
    })
}

/// Waits until the log at `log` (a URL or a directory) verifies with
/// `count` records.
fn wait_for_records(log: &str, count: u64) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match verify(log) {
            Ok(records) if records >= count => {
                assert_eq!(records, count);
                return;
            }
            Ok(_) => {}
            Err(error) => panic!("{error}"),
        }
        assert!(Instant::now() < deadline, "{count} records were not written");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Decision `n`, made at `at`, about `patients`.
fn entry(n: u32, at: &str, patients: &[&str]) -> DecisionEntry {
    DecisionEntry {
        decision_id: uuid::Uuid::from_u128(u128::from(n) + 1),
        at: at.to_owned(),
        principal: "Practitioner::\"dr-weber\"".to_owned(),
        action: "Action::\"read\"".to_owned(),
        resource: format!("Observation::\"obs-{n}\""),
        patients: patients.iter().map(|p| (*p).to_owned()).collect(),
        purpose: Some("TREAT".to_owned()),
        decision: "Allow".to_owned(),
        outcome: "allow".to_owned(),
        reasons: vec![],
        obligations: vec![],
        plugins: vec![],
        policy_hash: "abc123".to_owned(),
    }
}

fn simple(n: u32) -> DecisionEntry {
    entry(n, "2026-05-01T10:00:00Z", &["p-1"])
}

/// A sink over the table, migrated first.
fn sink(url: &str) -> PostgresSink {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async { postgres::open(&url, 1).await.unwrap().0 })
    })
    .join()
    .unwrap()
}

/// A query and its answer: patient, from, to, limit, the `seq`s found, and
/// whether more matched.
type Case = (&'static str, Option<&'static str>, Option<&'static str>, usize, Vec<u64>, bool);

fn seqs(records: &[ChainedRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn line_seqs(records: &[ChainLine]) -> Vec<u64> {
    records.iter().map(ChainLine::seq).collect()
}

#[test]
fn a_batch_that_fails_writes_nothing_and_the_chain_goes_on() {
    let Some(schema) = TestSchema::create("audit::a_batch_that_fails_writes_nothing_and_the_chain_goes_on")
    else {
        return;
    };
    let url = schema.url();
    let mut sink = sink(&url);
    assert_eq!(line_seqs(&sink.append(vec![simple(1), simple(2)]).unwrap()), vec![0, 1]);
    // The second record repeats a decision id: the whole batch is refused.
    let error = sink.append(vec![simple(3), simple(1), simple(4)]).unwrap_err();
    assert!(error.to_string().contains("audit database error"), "{error}");
    assert_eq!(verify(&url).unwrap(), 2);
    assert_eq!(line_seqs(&sink.append(vec![simple(3), simple(4)]).unwrap()), vec![2, 3]);
    assert_eq!(verify(&url).unwrap(), 4);
    assert!(!format!("{sink:?}").contains("search_path"), "{sink:?}");
}

#[test]
fn sinks_appending_at_once_form_one_chain() {
    let Some(schema) = TestSchema::create("audit::sinks_appending_at_once_form_one_chain") else {
        return;
    };
    let url = schema.url();
    std::thread::scope(|scope| {
        for writer in 0..3_u32 {
            let mut sink = sink(&url);
            scope.spawn(move || {
                for batch in 0..20_u32 {
                    let base = writer * 1000 + batch * 10;
                    sink.append((base..base + 3).map(simple).collect()).unwrap();
                }
            });
        }
    });
    assert_eq!(verify(&url).unwrap(), 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_tracked_apart_from_the_stores() {
    let Some(schema) = TestSchema::create("audit::migrations_are_tracked_apart_from_the_stores") else {
        return;
    };
    let url = schema.url();
    let consents = DurableStore::open(&StoreLocation::Postgres { url: url.clone() }).await.unwrap();
    let options = AuditOptions {
        rotate_bytes: u64::MAX,
        retention: audit::Retention::default(),
        low_water_bytes: 0,
        queue: 16,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    };
    let target = AuditTarget::parse(&url).unwrap();
    assert!(!format!("{target:?}").contains("search_path"));
    // Twice, as a second replica would.
    for _ in 0..2 {
        assert!(audit::open(&target, &options).await.unwrap().is_some());
    }
    drop(consents);
    DurableStore::open(&StoreLocation::Postgres { url: url.clone() }).await.unwrap();

    schema.run("UPDATE consentry_audit_migrations SET checksum = 'edited' WHERE version = 1").unwrap();
    let error = audit::open(&target, &options).await.unwrap_err().to_string();
    assert!(error.contains("migration 1 was changed after it was applied"), "{error}");
    schema.run("DELETE FROM consentry_audit_migrations WHERE version = 1").unwrap();
    schema
        .run("INSERT INTO consentry_audit_migrations (version, description, checksum) VALUES (99, 'x', 'x')")
        .unwrap();
    let error = audit::open(&target, &options).await.unwrap_err().to_string();
    assert!(error.contains("migration 99, which this release does not know"), "{error}");
}

/// Submits `entry` until the log accepts it (or refuses it, if `refused`),
/// failing after [`TIMEOUT`].
fn submit_until(
    log: &AuditLog,
    mut entry: impl FnMut() -> DecisionEntry,
    refused: bool,
) -> Option<AuditRefusal> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match log.submit(entry()) {
            Err(reason) if refused => return Some(reason),
            Ok(()) if !refused => return None,
            _ => {}
        }
        assert!(Instant::now() < deadline, "the log never {}", if refused { "refused" } else { "accepted" });
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_table_denies_decisions_until_it_is_back() {
    let Some(schema) = TestSchema::create("audit::a_failing_table_denies_decisions_until_it_is_back") else {
        return;
    };
    let url = schema.url();
    let options = AuditOptions {
        rotate_bytes: u64::MAX,
        retention: audit::Retention::default(),
        low_water_bytes: 0,
        queue: 16,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    };
    let (log, _) = audit::open(&AuditTarget::parse(&url).unwrap(), &options).await.unwrap().unwrap();
    let mut n = 0;
    let mut next = || {
        n += 1;
        simple(n)
    };
    log.submit(next()).unwrap();
    schema.run("ALTER TABLE consentry_audit_log RENAME TO moved_away").unwrap();
    let refusal = submit_until(&log, &mut next, true).unwrap();
    assert_eq!(refusal.code(), "audit_database_failed", "{refusal}");
    let reason = refusal.to_string();
    assert!(reason.starts_with("audit unavailable: the audit log cannot be written: "), "{reason}");
    assert!(reason.contains("consentry_audit_log"), "{reason}");
    schema.run("ALTER TABLE moved_away RENAME TO consentry_audit_log").unwrap();
    submit_until(&log, &mut next, false);
    // Whatever was written meanwhile is one intact chain.
    assert!(verify(&url).unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_records_read_the_same_from_a_table_and_a_directory() {
    let Some(schema) =
        TestSchema::create("audit::a_patients_records_read_the_same_from_a_table_and_a_directory")
    else {
        return;
    };
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        rotate_bytes: 1,
        retention: audit::Retention::default(),
        low_water_bytes: 0,
        queue: 64,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    };
    let targets = [AuditTarget::parse(&url).unwrap(), AuditTarget::Dir(dir.path().to_owned())];
    let mut stores: Vec<AuditStore> = Vec::new();
    for target in &targets {
        let (log, store) = audit::open(target, &options).await.unwrap().unwrap();
        // One decision a month; odd months about p-1, even ones about p-2,
        // every third about both; p-10 in all.
        for month in 1..=12_u32 {
            let at = format!("2026-{month:02}-15T12:00:00.250Z");
            let mut patients = vec![if month % 2 == 1 { "p-1" } else { "p-2" }, "p-10"];
            if month % 3 == 0 {
                patients.push(if month % 2 == 1 { "p-2" } else { "p-1" });
            }
            log.submit(entry(month, &at, &patients)).unwrap();
        }
        stores.push(store);
    }
    wait_for_records(&url, 12);
    wait_for_records(dir.path().to_str().unwrap(), 12);
    let bound = |text: Option<&str>| text.map(|t| parse_bound("from", t).unwrap());
    let cases: [Case; 7] = [
        ("p-1", None, None, 100, vec![0, 2, 4, 5, 6, 8, 10, 11], false),
        ("p-2", None, None, 100, vec![1, 2, 3, 5, 7, 8, 9, 11], false),
        ("p-1", Some("2026-03"), Some("2026-07"), 100, vec![2, 4, 5], false),
        ("p-1", Some("2026-05-15T12:00:00.250Z"), Some("2026-05-15T14:00:00.251+02:00"), 100, vec![4], false),
        ("p-1", Some("2026"), None, 3, vec![0, 2, 4], true),
        ("p-10", Some("2026-12-15T12:00:00.251Z"), None, 10, vec![], false),
        ("p-", None, None, 10, vec![], false),
    ];
    for (patient, from, to, limit, expected, more) in cases {
        let (from, to) = (bound(from), bound(to));
        let mut answers = Vec::new();
        for store in &stores {
            let found = store.about_patient(patient, from.as_ref(), to.as_ref(), limit).await.unwrap();
            assert_eq!((seqs(&found.records), found.more), (expected.clone(), more), "{store:?} {patient}");
            answers.push(found);
        }
        assert_eq!(answers[0], answers[1], "the table and the directory agree, record for record");
    }

    let mut heads = Vec::new();
    for store in &stores {
        heads.push(store.last_record().await.unwrap().expect("twelve records were written"));
    }
    assert_eq!(heads[0].seq(), 11);
    assert_eq!(heads[0], heads[1], "the same entries make the same chain, so the same head");
}

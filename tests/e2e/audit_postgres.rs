//! The decision log in PostgreSQL through the real binary: replicas sharing
//! one table write one chain, `consentry audit verify URL` accepts it and
//! names the row that was edited, and a sink that blocks denies decisions
//! without growing memory, then recovers. Runs when
//! `CONSENTRY_TEST_POSTGRES_URL` names a database, each test in a fresh
//! schema that is dropped afterwards; otherwise it says it was skipped.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use crate::postgres_schema::TestSchema;
use crate::support::{Server, ali_breaks_the_glass, audit_verify, cedar_request, poll_until, repo_root};

/// How long records may take to reach the table. Generous: only records
/// that never arrive fail a test, never slow ones.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The `decision_id`s in the table, in `seq` order (change records have none).
fn recorded_ids(url: &str) -> Vec<String> {
    runtime().block_on(async {
        let mut connection = PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(
            "SELECT decision_id::text FROM consentry_audit_log WHERE decision_id IS NOT NULL ORDER BY seq",
        )
        .fetch_all(&mut connection)
        .await
        .unwrap()
    })
}

/// Waits until the table holds at least `count` records; returns their ids.
fn wait_for_records(url: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WRITE_TIMEOUT;
    loop {
        let ids = recorded_ids(url);
        if ids.len() >= count {
            return ids;
        }
        assert!(Instant::now() < deadline, "only {} of {count} records were written", ids.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another session's `ACCESS EXCLUSIVE` lock on the log table, held until
/// [`TableLock::release`]: the writer's next batch waits on it, so its queue
/// fills as a blocked sink's would.
struct TableLock {
    runtime: tokio::runtime::Runtime,
    connection: PgConnection,
}

impl TableLock {
    fn take(url: &str) -> Self {
        let runtime = runtime();
        let connection = runtime
            .block_on(async {
                let mut connection = PgConnection::connect(url).await?;
                connection.execute("BEGIN").await?;
                connection.execute("LOCK TABLE consentry_audit_log IN ACCESS EXCLUSIVE MODE").await?;
                Ok::<_, sqlx::Error>(connection)
            })
            .unwrap();
        TableLock { runtime, connection }
    }

    fn release(mut self) {
        self.runtime.block_on(self.connection.execute("ROLLBACK")).unwrap();
    }
}

fn verify(url: &str) -> (Option<i32>, String) {
    audit_verify(url, &[])
}

#[test]
fn two_replicas_write_one_chain_and_verify_names_the_edited_row() {
    let Some(schema) =
        TestSchema::create("audit_postgres::two_replicas_write_one_chain_and_verify_names_the_edited_row")
    else {
        return;
    };
    let url = schema.url();
    let policies = repo_root().join("policies");
    let a = Server::start(&policies, &["--audit", &url]);
    let b = Server::start(&policies, &["--audit", &url]);
    // Both replicas decide at once, so their appends contend for the head.
    let ids: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = [&a, &b, &a, &b]
            .into_iter()
            .map(|server| {
                scope.spawn(move || {
                    (0..15)
                        .map(|_| {
                            let (status, answer) =
                                server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
                            assert_eq!(status, 200, "{answer}");
                            assert_eq!(answer["decision"], "Allow", "{answer}");
                            answer["decision_id"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|worker| worker.join().unwrap()).collect()
    });
    let recorded = wait_for_records(&url, ids.len());
    assert_eq!(recorded.len(), ids.len());
    assert_eq!(recorded.iter().collect::<HashSet<_>>(), ids.iter().collect::<HashSet<_>>());

    let (code, text) = verify(&url);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&format!("intact: {} records", ids.len())), "{text}");
    assert!(!text.contains("search_path"), "the URL is described, not echoed: {text}");
    let anchor = text.lines().find_map(|line| line.strip_prefix("anchor: ")).expect(&text).to_owned();
    assert!(anchor.starts_with(&format!("{}:", ids.len() - 1)), "{anchor}");

    // Turn the decision recorded at seq 7 into a Deny.
    let original: String = runtime().block_on(async {
        let mut connection = PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT line FROM consentry_audit_log WHERE seq = 7")
            .fetch_one(&mut connection)
            .await
            .unwrap()
    });
    let edited = original.replacen("\"decision\":\"Allow\"", "\"decision\":\"Deny\"", 1);
    assert_ne!(edited, original);
    let update =
        format!("UPDATE consentry_audit_log SET line = '{}' WHERE seq = 7", edited.replace('\'', "''"));
    assert_eq!(schema.run(&update).unwrap(), 1);
    let (code, text) = verify(&url);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("(seq 7)"), "{text}");
    assert!(text.contains("`hash` does not match"), "{text}");

    // Put it back, and hide another decision from its patient's report
    // instead: the chain is untouched, the indexed column is not.
    let restore =
        format!("UPDATE consentry_audit_log SET line = '{}' WHERE seq = 7", original.replace('\'', "''"));
    assert_eq!(schema.run(&restore).unwrap(), 1);
    assert_eq!(verify(&url).0, Some(0));
    assert_eq!(schema.run("UPDATE consentry_audit_log SET patients = '{}' WHERE seq = 3").unwrap(), 1);
    let (code, text) = verify(&url);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("(seq 3)") && text.contains("`patients` column"), "{text}");

    // Put that back too, and delete the newest two rows: the rest is a chain
    // intact in itself, which only the anchor printed earlier shows.
    assert_eq!(schema.run("UPDATE consentry_audit_log SET patients = '{p-100}' WHERE seq = 3").unwrap(), 1);
    let last = ids.len() - 1;
    let cut = format!("DELETE FROM consentry_audit_log WHERE seq >= {}", last - 1);
    assert_eq!(schema.run(&cut).unwrap(), 2);
    assert_eq!(verify(&url).0, Some(0), "without the anchor the cut cannot show");
    let (code, text) = audit_verify(&url, &[&anchor]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&format!("names seq {last}, but the log ends at seq {}", last - 2)), "{text}");
}

#[test]
fn verify_of_an_unreachable_database_exits_3() {
    let (code, text) = verify("postgres://consentry:secret-password@127.0.0.1:1/none");
    assert_eq!(code, Some(3), "{text}");
    assert!(!text.contains("secret-password"), "{text}");
}

/// The server's resident set size, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One decision over a kept-alive connection; a client timeout guards
/// against a hang but nothing is asserted about latency.
fn decide_timed(agent: &ureq::Agent, server: &Server, request: &Value) -> (Value, Duration) {
    let started = Instant::now();
    let mut response = agent.post(format!("{}/v1/is_authorized", server.url)).send_json(request).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 200);
    (response.body_mut().read_json().unwrap(), elapsed)
}

/// Patient p-100 reads their own record: an Allow that is no emergency.
fn patient_reads_own(resource: &str) -> Value {
    cedar_request(
        "Patient::\"p-100\"",
        "Action::\"read\"",
        &format!("Record::\"{resource}\""),
        json!({"purpose": "PATRQT"}),
    )
}

fn is_audit_denial(answer: &Value) -> bool {
    answer["decision"] == "Deny"
        && answer["outcome"] == "failed_closed"
        && answer["summary"].as_str().is_some_and(|s| s.contains("audit unavailable"))
}

#[test]
fn a_blocked_table_denies_decisions_without_growing_memory_then_recovers() {
    let Some(schema) = TestSchema::create(
        "audit_postgres::a_blocked_table_denies_decisions_without_growing_memory_then_recovers",
    ) else {
        return;
    };
    let url = schema.url();
    let server = Server::start(&repo_root().join("policies"), &["--audit", &url, "--audit-queue", "16"]);
    // Not an emergency: a break-glass Allow waits for its record, which is
    // the next test's subject.
    let request = patient_reads_own("obs-1");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    assert_eq!(decide_timed(&agent, &server, &request).0["decision"], "Allow");
    wait_for_records(&url, 1);

    let lock = TableLock::take(&url);

    let mut allowed_while_filling = 0;
    loop {
        let (answer, _) = decide_timed(&agent, &server, &request);
        if is_audit_denial(&answer) {
            break;
        }
        assert_eq!(answer["decision"], "Allow", "{answer}");
        allowed_while_filling += 1;
        assert!(allowed_while_filling < 5000, "the queue of 16 never filled: {answer}");
    }
    let rss_full = vm_rss_kib(server.pid());
    let mut latencies = Vec::new();
    for _ in 0..3000 {
        let (answer, elapsed) = decide_timed(&agent, &server, &request);
        assert!(is_audit_denial(&answer), "with the table locked, decisions are denied: {answer}");
        latencies.push(elapsed);
    }
    let rss_after = vm_rss_kib(server.pid());
    latencies.sort_unstable();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    eprintln!(
        "blocked PostgreSQL sink: {} denied decisions, p50 {:?}, p99 {:?}; VmRSS {rss_full} KiB when the \
         queue filled, {rss_after} KiB after ({allowed_while_filling} allowed while it filled)",
        latencies.len(),
        percentile(50),
        percentile(99),
    );
    assert!(
        rss_after < rss_full + 20 * 1024,
        "memory grew from {rss_full} KiB to {rss_after} KiB while decisions were denied"
    );

    // Release the table: the writer drains and decisions are allowed again.
    lock.release();
    poll_until(&server, &request, "Allow", WRITE_TIMEOUT);
    wait_for_records(&url, 2 + allowed_while_filling);
    let (code, text) = verify(&url);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn with_drop_and_count_a_blocked_table_drops_and_counts_what_the_queue_cannot_hold() {
    let Some(schema) = TestSchema::create(
        "audit_postgres::with_drop_and_count_a_blocked_table_drops_and_counts_what_the_queue_cannot_hold",
    ) else {
        return;
    };
    let url = schema.url();
    let args = ["--audit", &url, "--audit-queue", "16", "--audit-backpressure", "drop-and-count"];
    let server = Server::start(&repo_root().join("policies"), &args);
    let request = patient_reads_own("obs-1");
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Allow");
    wait_for_records(&url, 1);

    let lock = TableLock::take(&url);
    // An emergency record is never dropped: it waits to be durable, and the
    // blocked table makes the break-glass read a Deny that says why.
    let (_, emergency) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert!(is_audit_denial(&emergency), "{emergency}");
    let decisions = 200;
    for _ in 0..decisions {
        let (_, answer) = server.post("/v1/is_authorized", &request);
        assert_eq!(answer["decision"], "Allow", "{answer}");
    }
    // The queue and the batch waiting on the lock hold the rest.
    let dropped = server.metric("consentry_audit_dropped_total") as usize;
    assert!(dropped > 0, "a queue of 16 held {decisions} records");
    lock.release();

    // Every record is in the table or counted as dropped.
    let written = wait_for_records(&url, 2 + decisions - dropped).len();
    assert_eq!(written + dropped, 2 + decisions);
    assert_eq!(verify(&url).0, Some(0));
}

//! Startup time of `consentry serve` with 1 000 000 stored consents, against
//! an empty store (issue 3, §6).
//!
//! Partitions load lazily, per patient, on the first decision that needs
//! them, so opening the store must not read the consents and startup must
//! not grow with the store. The benchmark spawns the release binary on the
//! bundled pack and a SQLite store, times it from spawn to its first stdout
//! line (`consentry listening on http://…`), then times the first decision
//! about one of the million patients (its partition is loaded from the
//! store and compiled) and a second, identical one (served from the cache),
//! then 20 more for the steady state. Every time includes the HTTP round
//! trip on loopback (over a connection opened beforehand).
//!
//! The million-consent store, one consent for each of the patients
//! `p-0`…`p-999999`, is written once into `target/bench-data/startup-1m/`
//! and reused by later runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use consentry::policy_dir;
use consentry::store::{DurableStore, NewVersion, StoreLocation};
use consentry_engine::check_consent;
use consentry_engine::consent::Consent;
use serde_json::{Value, json};

#[path = "support/consent.rs"]
mod fixture;
use fixture::consent;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

/// Consents (and patients) in the large store.
const CONSENTS: u64 = 1_000_000;

/// Consents per `create_many` transaction while populating.
const CHUNK: u64 = 10_000;

/// Measured runs per store.
const RUNS: usize = 5;

/// Cached decisions timed after the second one in each run, to show the
/// steady state.
const STEADY: usize = 20;

/// The patient the decisions are about.
const PATIENT: &str = "p-123456";

/// The consent every patient has, under the given id.
fn consent_with_id(patient: &str, id: &str) -> Value {
    let mut body = consent(patient);
    body["id"] = Value::String(id.to_owned());
    body
}

/// Dr. Weber (St. Mary's) reads an observation of `PATIENT` for treatment;
/// the record and the patient come with the request.
fn decision_request() -> Value {
    let record = format!("obs-{PATIENT}");
    json!({
        "principal": "Practitioner::\"dr-weber\"",
        "action": "Action::\"read\"",
        "resource": format!("Record::\"{record}\""),
        "context": {"purpose": "TREAT"},
        "entities": [
            {"uid": {"type": "Patient", "id": PATIENT}, "attrs": {}, "parents": []},
            {"uid": {"type": "Record", "id": record},
             "attrs": {"patient": {"type": "Patient", "id": PATIENT}, "resourceType": "Observation",
                       "labels": [], "confidentiality": "N"},
             "parents": [{"type": "Patient", "id": PATIENT}]}
        ]
    })
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned())
}

/// How many consents the store in `dir` holds (0 if it does not exist yet).
async fn stored(dir: &Path) -> u64 {
    let file = dir.join("consents.sqlite3");
    if !file.exists() {
        return 0;
    }
    let mut connection =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&file)).await.unwrap();
    let count: Option<i64> = sqlx::query_scalar("SELECT count(*) FROM consent_heads")
        .fetch_optional(&mut connection)
        .await
        .unwrap_or(Some(0));
    connection.close().await.unwrap();
    count.unwrap_or(0).unsigned_abs()
}

/// Writes consents `c-N` for patients `p-N` until the store holds
/// [`CONSENTS`]. Chunks commit all or nothing and in order, so an
/// interrupted run resumes where it stopped.
async fn populate(dir: &Path) {
    let done = stored(dir).await;
    if done == CONSENTS {
        println!("store: {} already holds {CONSENTS} consents", dir.display());
        return;
    }
    assert!(
        done < CONSENTS && done.is_multiple_of(CHUNK),
        "{} holds {done} consents: delete it",
        dir.display()
    );
    // The body is checked once against the bundled pack, as the server
    // checks every consent it stores; the others differ only in ids.
    let bundle = policy_dir::load(&workspace().join("policies")).unwrap().bundle;
    let sample = Consent::from_json(&consent_with_id(PATIENT, "c-123456")).unwrap();
    check_consent(&bundle, "c-123456", 1, &sample).unwrap();
    let (status, fhir_version) = (sample.status().code().to_owned(), format!("{:?}", sample.fhir_version()));

    let store = DurableStore::open(&StoreLocation::Sqlite { dir: dir.to_owned() }).await.unwrap();
    println!("populating {} from {done} to {CONSENTS} consents", store.describe());
    let started = Instant::now();
    for first in (done..CONSENTS).step_by(usize::try_from(CHUNK).unwrap()) {
        let items = (first..first + CHUNK)
            .map(|n| {
                let (id, patient) = (format!("c-{n}"), format!("p-{n}"));
                let body = consent_with_id(&patient, &id);
                let version =
                    NewVersion { patient, status: status.clone(), fhir_version: fhir_version.clone(), body };
                (id, version)
            })
            .collect();
        store.create_many(items).await.unwrap();
        let written = first + CHUNK;
        if written.is_multiple_of(100_000) {
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "  {written:>9} consents, {elapsed:6.1} s, {:.0} consents/s",
                (written - done) as f64 / elapsed
            );
        }
    }
    drop(store);
    // Fold the write-ahead log into the database, so that no run pays
    // for recovering it.
    let file = dir.join("consents.sqlite3");
    let mut connection =
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&file)).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
    assert_eq!(stored(dir).await, CONSENTS);
    println!("populated in {:.1} s", started.elapsed().as_secs_f64());
}

/// A running server, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on `store` and returns it with the time from spawn to
/// its `listening` line.
fn start(store: &Path) -> (Server, Duration) {
    let root = workspace();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_consentry"))
        .current_dir(&root)
        .args(["serve", "--policies", "policies", "--bind", "127.0.0.1:0", "--store"])
        .arg(store)
        .env("RUST_LOG", "warn")
        .env_remove("CONSENTRY_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let elapsed = started.elapsed();
    let Some(url) = line.trim().strip_prefix("consentry listening on ").map(str::to_owned) else {
        let _ = child.kill();
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        panic!("the server did not start: stdout {line:?}, stderr:\n{stderr}");
    };
    (Server { child, url }, elapsed)
}

/// The decision for [`decision_request`] and how long it took.
fn decide(agent: &ureq::Agent, url: &str) -> Duration {
    let body = decision_request().to_string();
    let started = Instant::now();
    let response = agent
        .post(format!("{url}/v1/is_authorized"))
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let answer: Value = serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(answer["diagnostics"]["reason"], json!(["consent/c-123456/v1/root"]), "{answer}");
    elapsed
}

/// Median and maximum, in milliseconds, of [`RUNS`] runs (or of all the
/// steady-state decisions of those runs).
fn summary(times: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = times.iter().map(|t| t.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; this benchmark takes no options.
    let data = workspace().join("target/bench-data");
    let large = data.join("startup-1m");
    let empty = data.join("startup-empty");
    println!("load average before: {}", load_average());

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        populate(&large).await;
        // Created and migrated once, so every run opens an existing store.
        drop(DurableStore::open(&StoreLocation::Sqlite { dir: empty.clone() }).await.unwrap());
    });
    drop(runtime);
    let size: u64 = std::fs::read_dir(&large).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    println!("1M store: {:.0} MiB on disk", size as f64 / 1_048_576.0);

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let (mut startup_empty, mut startup_large, mut cold, mut cached) = (vec![], vec![], vec![], vec![]);
    let mut steady = vec![];
    for run in 1..=RUNS {
        let (server, elapsed) = start(&empty);
        drop(server);
        startup_empty.push(elapsed);

        let (server, elapsed) = start(&large);
        startup_large.push(elapsed);
        // Open the keep-alive connection first, so the decisions time only
        // the server's work.
        let health = agent.get(format!("{}/healthz", server.url)).call().unwrap();
        assert_eq!(health.status().as_u16(), 200);
        cold.push(decide(&agent, &server.url));
        cached.push(decide(&agent, &server.url));
        steady.extend((0..STEADY).map(|_| decide(&agent, &server.url)));
        drop(server);
        println!(
            "run {run}: startup empty {:.1} ms, 1M {:.1} ms; decision cold {:.2} ms, cached {:.2} ms",
            startup_empty[run - 1].as_secs_f64() * 1e3,
            startup_large[run - 1].as_secs_f64() * 1e3,
            cold[run - 1].as_secs_f64() * 1e3,
            cached[run - 1].as_secs_f64() * 1e3,
        );
    }
    println!("load average after: {}", load_average());
    println!();
    println!("| {RUNS} runs | median | max |");
    println!("|---|---|---|");
    for (name, times) in [
        ("startup, empty store", &startup_empty),
        ("startup, 1,000,000 consents", &startup_large),
        ("first decision about p-123456 (partition loaded)", &cold),
        ("second decision (partition cached)", &cached),
        ("the next decisions (steady state)", &steady),
    ] {
        let (median, max) = summary(times);
        println!("| {name} | {median:.2} ms | {max:.2} ms |");
    }
}

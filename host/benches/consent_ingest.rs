//! Consent ingest rate: FHIR JSON in, compiled, stored durably, in consents
//! per second, for SQLite and PostgreSQL (issue 3, §6).
//!
//! `ingest/{sqlite,postgres}`: one iteration is the server's write path for
//! `PUT /v1/consents/{id}`, `Consents::supersede` with a fresh id: parse the
//! FHIR R4 consent, compile it and validate the policies against the bundled
//! pack's schema, commit it (SQLite with `synchronous=FULL`), and drop the
//! patient's cached partition.
//!
//! `ingest/{sqlite,postgres}_batch_1000`: one iteration parses and checks
//! 1 000 consents, then stores them in one transaction with
//! `DurableStore::create_many`, so the commit is paid once per 1 000.
//!
//! `ingest/parse_and_check_only`: the first step alone, without the store,
//! to show how much of a write is compiling the consent.
//!
//! The PostgreSQL groups run only when `CONSENTRY_TEST_POSTGRES_URL` names a
//! database; they use a fresh schema, dropped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use consentry::consents::Consents;
use consentry::policy_dir;
use consentry::store::{NewVersion, StoreLocation};
use consentry_engine::consent::Consent;
use consentry_engine::{PolicyBundle, check_consent};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

#[path = "support/consent.rs"]
mod fixture;
use fixture::consent;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use tokio::runtime::Runtime;

/// The allocator the `consentry` binary uses, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The variable naming the PostgreSQL database the benchmark may use.
const POSTGRES_URL_VAR: &str = "CONSENTRY_TEST_POSTGRES_URL";

/// Consents per `create_many` call in the batched groups.
const BATCH: usize = 1000;

/// Patients the consents are spread over.
const PATIENTS: u64 = 10_000;

/// The bundled pack, as `consentry serve --policies policies` loads it.
fn bundle() -> PolicyBundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    policy_dir::load(&dir).unwrap().bundle
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Parses and checks one consent as `Consents::supersede` does, and makes
/// the version to store.
fn prepare(bundle: &PolicyBundle, id: &str, mut body: Value) -> NewVersion {
    let consent = Consent::from_json(&body).unwrap();
    check_consent(bundle, id, 1, &consent).unwrap();
    body["id"] = Value::String(id.to_owned());
    NewVersion {
        patient: consent.patient().to_owned(),
        status: consent.status().code().to_owned(),
        fhir_version: format!("{:?}", consent.fhir_version()),
        body,
    }
}

/// Runs the single and the batched group against one store.
fn bench_store(c: &mut Criterion, runtime: &Runtime, bundle: &PolicyBundle, name: &str, consents: &Consents) {
    let mut next = 0u64;
    let mut fresh = move || {
        next += 1;
        (format!("c-{next}"), format!("p-{}", next % PATIENTS))
    };

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                let (id, patient) = fresh();
                (id, consent(&patient))
            },
            |(id, body)| {
                let stored = runtime.block_on(consents.supersede(bundle, &id, body)).unwrap();
                black_box(stored);
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();

    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(20));
    group.bench_function(format!("{name}_batch_{BATCH}"), |b| {
        b.iter_batched(
            || {
                (0..BATCH)
                    .map(|_| {
                        let (id, patient) = fresh();
                        (id, consent(&patient))
                    })
                    .collect::<Vec<_>>()
            },
            |bodies| {
                let items: Vec<(String, NewVersion)> = bodies
                    .into_iter()
                    .map(|(id, body)| {
                        let version = prepare(bundle, &id, body);
                        (id, version)
                    })
                    .collect();
                let stored = runtime.block_on(consents.store().create_many(items)).unwrap();
                assert_eq!(stored.len(), BATCH);
                black_box(stored);
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

/// The part of every write that does not touch the store: parse the FHIR
/// consent, compile it and validate the policies against the schema.
fn parse_and_check(c: &mut Criterion) {
    let bundle = bundle();
    let body = consent("p-1");
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.bench_function("parse_and_check_only", |b| {
        b.iter(|| {
            let consent = Consent::from_json(black_box(&body)).unwrap();
            check_consent(&bundle, "c-1", 1, &consent).unwrap();
        });
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let runtime = runtime();
    let bundle = bundle();
    let dir = tempfile::tempdir().unwrap();
    let consents: Arc<Consents> =
        runtime.block_on(Consents::open(&StoreLocation::Sqlite { dir: dir.path().to_owned() })).unwrap();
    println!("store: {}", consents.store().describe());
    bench_store(c, &runtime, &bundle, "sqlite", &consents);
    drop(consents);
}

/// A PostgreSQL schema of the benchmark's own, dropped with everything in
/// it when the benchmark ends, even by a panic.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    fn create(runtime: &Runtime, base: &str) -> Self {
        let name = format!("consentry_bench_{}", uuid::Uuid::now_v7().simple());
        runtime.block_on(execute(base, &format!("CREATE SCHEMA {name}")));
        Self { base: base.to_owned(), name }
    }

    /// The database with `search_path` set to the schema.
    fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{1}&application_name={1}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (base, sql) = (self.base.clone(), format!("DROP SCHEMA {} CASCADE", self.name));
        // A runtime of its own on a thread of its own: this may run while a
        // panic unwinds through `Runtime::block_on`.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(execute(&base, &sql));
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop the benchmark schema {}", self.name);
        }
    }
}

/// Runs one statement on a connection of its own.
async fn execute(base: &str, sql: &str) {
    let mut connection = PgConnection::connect(base).await.unwrap();
    connection.execute(sql).await.unwrap();
    connection.close().await.unwrap();
}

fn postgres(c: &mut Criterion) {
    let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
        println!();
        println!(
            "*** SKIPPED: ingest/postgres and ingest/postgres_batch_{BATCH}: set {POSTGRES_URL_VAR} ***"
        );
        println!();
        return;
    };
    let runtime = runtime();
    let bundle = bundle();
    let schema = Schema::create(&runtime, &base);
    let consents = runtime.block_on(Consents::open(&StoreLocation::Postgres { url: schema.url() })).unwrap();
    println!("store: {} (schema {})", consents.store().describe(), schema.name);
    bench_store(c, &runtime, &bundle, "postgres", &consents);
    drop(consents);
    drop(schema);
}

criterion_group!(benches, parse_and_check, sqlite, postgres);
criterion_main!(benches);

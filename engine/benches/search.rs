//! Search latency of the engine, and how it grows with the candidates.
//!
//! Over the bundled pack, its special categories and one patient's treatment
//! consent (St. Mary's, except psychiatric records):
//!
//! - `search/resource/N`: which of p-100's N records may Dr. Weber read for
//!   treatment (a tenth carry `PSY`, a twentieth `GDIS`);
//! - `search/subject/N`: which of N practitioners (half at St. Mary's, the
//!   rest at a lab the consent does not name) may read `obs-1` for treatment;
//! - `search/*_one_by_one/N`: the same answers from `decide_with` called for
//!   every candidate, what a caller without search would do.
//!
//! Every figure is the whole search: grouping by patient, the slice, the
//! shared evaluation and every candidate's decision.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

#[path = "support/search_world.rs"]
mod world;

use std::hint::black_box;
use std::time::Duration;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{DecisionOptions, SearchRequest, Searched, decide_with, search};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use world::{bundle, partition, practitioner, record, request, store, uid};

/// The allocator the `consentry` binary uses, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 4] = [100, 1_000, 10_000, 100_000];

fn bench_search(c: &mut Criterion) {
    let bundle = bundle();
    let partition = partition(&bundle);
    let partitions = [&partition];
    let options = DecisionOptions::default();
    let mut group = c.benchmark_group("search");
    group.measurement_time(Duration::from_secs(5)).sample_size(10);
    for n in SIZES {
        let store = store(&bundle, (0..n).map(record));
        let candidates: Vec<EntityUid> = (0..n).map(|i| uid(&format!(r#"Record::"r-{i:06}""#))).collect();
        let query = SearchRequest::new(
            Searched::Resource,
            request(r#"Practitioner::"dr-weber""#, r#"Record::"obs-1""#),
        );
        let found = search(&bundle, &partitions, &store, &query, &candidates, &options).unwrap().found.len();
        assert_eq!(found, n / 20 * 17, "every record but the psychiatric and genetic ones");
        group.bench_with_input(BenchmarkId::new("resource", n), &n, |b, _| {
            b.iter(|| {
                black_box(search(&bundle, &partitions, &store, &query, &candidates, &options).unwrap())
            });
        });
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("resource_one_by_one", n), &n, |b, _| {
                b.iter(|| {
                    candidates
                        .iter()
                        .filter(|c| {
                            let request = query.candidate(c);
                            decide_with(&bundle, &partitions, &store, &request, &options)
                                .unwrap()
                                .is_allowed()
                        })
                        .count()
                });
            });
        }
    }
    for n in SIZES {
        let store = store(&bundle, (0..n).map(practitioner));
        let candidates: Vec<EntityUid> =
            (0..n).map(|i| uid(&format!(r#"Practitioner::"pr-{i:06}""#))).collect();
        let query = SearchRequest::new(
            Searched::Subject,
            request(r#"Practitioner::"dr-weber""#, r#"Record::"obs-1""#),
        );
        let found = search(&bundle, &partitions, &store, &query, &candidates, &options).unwrap().found.len();
        assert_eq!(found, n / 2, "the St. Mary's half");
        group.bench_with_input(BenchmarkId::new("subject", n), &n, |b, _| {
            b.iter(|| {
                black_box(search(&bundle, &partitions, &store, &query, &candidates, &options).unwrap())
            });
        });
        if n <= 10_000 {
            group.bench_with_input(BenchmarkId::new("subject_one_by_one", n), &n, |b, _| {
                b.iter(|| {
                    candidates
                        .iter()
                        .filter(|c| {
                            let request = query.candidate(c);
                            decide_with(&bundle, &partitions, &store, &request, &options)
                                .unwrap()
                                .is_allowed()
                        })
                        .count()
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_search);
criterion_main!(benches);

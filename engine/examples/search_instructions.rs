//! Runs one search of the search benchmarks' world R times (criterion
//! left out), so that `valgrind --tool=callgrind` counts the instructions a
//! search costs: `engine/benches/search_instructions.sh` subtracts a run of
//! 1 from a run of 3, which leaves out the world's set-up. Unlike a time,
//! the count does not move when other work shares the machine.
//!
//! Usage: `search_instructions resource|subject N R`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)] // fixtures are read from disk

#[path = "../benches/support/search_world.rs"]
mod world;

use std::hint::black_box;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{DecisionOptions, SearchRequest, Searched, search};
use world::{bundle, partition, practitioner, record, request, store, uid};

/// The allocator the `consentry` binary uses, so the counts match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, n, repetitions] = args.as_slice() else {
        panic!("usage: search_instructions resource|subject N R");
    };
    let n: usize = n.parse().expect("a number of candidates");
    let repetitions: usize = repetitions.parse().expect("a number of searches");
    let bundle = bundle();
    let partition = partition(&bundle);
    let (searched, store, candidates): (Searched, _, Vec<EntityUid>) = match kind.as_str() {
        "resource" => (
            Searched::Resource,
            store(&bundle, (0..n).map(record)),
            (0..n).map(|i| uid(&format!(r#"Record::"r-{i:06}""#))).collect(),
        ),
        "subject" => (
            Searched::Subject,
            store(&bundle, (0..n).map(practitioner)),
            (0..n).map(|i| uid(&format!(r#"Practitioner::"pr-{i:06}""#))).collect(),
        ),
        other => panic!("`{other}` is neither `resource` nor `subject`"),
    };
    let query = SearchRequest::new(searched, request(r#"Practitioner::"dr-weber""#, r#"Record::"obs-1""#));
    let options = DecisionOptions::default();
    for _ in 0..repetitions {
        black_box(search(&bundle, &[&partition], &store, &query, &candidates, &options).unwrap());
    }
}

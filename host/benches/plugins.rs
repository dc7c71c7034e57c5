//! The cost of a plugin (issue 4, §6).
//!
//! `plugin_call/trivial_enrich` is one call of the trivial enrich plugin as
//! the decision path makes it: a fresh store and instance from the pooling
//! allocator, the request passed in as the plugin sees it, the answer
//! passed out and checked. `decision/*` is a whole decision (the bundled
//! pack, break-glass on `obs-1`) through `AppState::decide`, without
//! plugins and with the trivial enricher, so the difference is what a
//! plugin adds to a decision. After criterion, the same call is timed
//! 20 000 times one by one and its p50 and p99 printed, since criterion
//! reports means and medians only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use consentry::auth::Auth;
use consentry::consents::Consents;
use consentry::plugins::{Plugins, hooks};
use consentry::state::{AppState, Settings};
use consentry::store::StoreLocation;
use consentry_engine::{DecisionRequest, parse_uid};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use tokio::runtime::Runtime;

/// Calls timed one by one for the percentiles.
const SAMPLES: usize = 20_000;

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

fn break_glass() -> DecisionRequest {
    let mut request = DecisionRequest::new(
        parse_uid(&json!("Practitioner::\"dr-ali\""), "principal").unwrap(),
        parse_uid(&json!("Action::\"read\""), "action").unwrap(),
        parse_uid(&json!("Record::\"obs-1\""), "resource").unwrap(),
    );
    request.context = Some(json!({"purpose": "BTG", "justification": "unconscious on arrival"}));
    request.now = Some(consentry::clock::now());
    request
}

/// The trivial enricher, configured for every request.
fn trivial_plugins(dir: &Path) -> Plugins {
    let config = dir.join("plugins.toml");
    let toml = format!(
        "[[plugins]]\nname = \"trivial\"\npath = \"{}\"\nhooks = [\"enrich\"]\n",
        consentry_test_plugins::TRIVIAL_ENRICHER
    );
    std::fs::write(&config, toml).unwrap();
    Plugins::load(&config).unwrap()
}

fn state(runtime: &Runtime, plugins: Plugins, store: &Path) -> Arc<AppState> {
    let loaded = consentry::policy_dir::load(&policies()).unwrap();
    let consents =
        runtime.block_on(Consents::open(&StoreLocation::Sqlite { dir: store.to_owned() })).unwrap();
    let settings = Settings { max_batch: 100, public_url: None, ..Settings::default() };
    AppState::new(loaded.bundle, loaded.store, settings, Auth::with_admin_token(None), consents, plugins)
}

fn percentiles(name: &str, mut call: impl FnMut()) {
    for _ in 0..1_000 {
        call();
    }
    let mut times: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let started = Instant::now();
            call();
            started.elapsed()
        })
        .collect();
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_secs_f64() * 1e6;
    println!("{name}: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (n = {SAMPLES})", at(0.50), at(0.99), at(1.0));
}

fn plugin_overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let bare = state(&runtime, Plugins::none(), dirs[0].path());
    let with_plugin = state(&runtime, trivial_plugins(dirs[2].path()), dirs[1].path());
    let request = break_glass();
    for state in [&bare, &with_plugin] {
        assert!(runtime.block_on(state.pipeline.decide(&request)).unwrap().decision.is_allowed());
    }

    let plugins = with_plugin.pipeline.plugins.current();
    let plugin = Arc::clone(&plugins.plugins()[0]);
    let seen = hooks::plugin_request(&request, &with_plugin.pipeline.read().store);
    c.bench_function("plugin_call/trivial_enrich", |b| b.iter(|| plugin.enrich(&seen).unwrap()));
    let mut group = c.benchmark_group("decision");
    group.bench_function("no_plugins", |b| {
        b.iter(|| runtime.block_on(bare.pipeline.decide(&request)).unwrap())
    });
    group.bench_function("trivial_enricher", |b| {
        b.iter(|| runtime.block_on(with_plugin.pipeline.decide(&request)).unwrap())
    });
    group.finish();

    percentiles("plugin_call/trivial_enrich", || {
        plugin.enrich(&seen).unwrap();
    });
    percentiles("decision/no_plugins", || {
        runtime.block_on(bare.pipeline.decide(&request)).unwrap();
    });
    percentiles("decision/trivial_enricher", || {
        runtime.block_on(with_plugin.pipeline.decide(&request)).unwrap();
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = plugin_overhead
}
criterion_main!(benches);

//! Hostile plugins are contained within their limits, deny with a reason
//! that names them and what went wrong, and leave the server serving.
//!
//! Each hostile plugin sees only requests about a `Patient`; the request
//! about a `Record` that follows shows the server is still healthy.

use consentry_test_plugins::{
    CLOCK_READER, DEEP_RECURSION, EXIT_CALLER, FILE_READER, HUGE_OUTPUT, LOOP_FOREVER, MALFORMED_OUTPUT,
    MEMORY_HOG, SOCKET_OPENER, STACK_OVERFLOW, TRAP, TRIVIAL_ENRICHER,
};

use super::*;

const ONLY_PATIENTS: &str = "[plugins.applies_to]\nresource_types = [\"Patient\"]\n";

/// rp-anna reads p-100, whom she represents: allowed by the pack without plugins.
async fn representative(app: &Router) -> Value {
    decide(app, "RelatedPerson::\"rp-anna\"", "read", "Patient::\"p-100\"", json!({"purpose": "PWATRNY"}))
        .await
}

/// Loads `component` as an enrich plugin for Patients, with `extra` TOML
/// (and a generous time limit unless it sets one), and checks that the
/// representative request denies with `parts` in its reason, twice, and that
/// a request the plugin does not see is allowed.
async fn contained(name: &str, component: &str, extra: &str, parts: &[&str]) {
    contained_by(&plugin(name, path_of(component), &["enrich"], &format!("{extra}\n{ONLY_PATIENTS}")), parts)
        .await;
}

/// [`contained`] for the plugin table `config`, taken as written.
async fn contained_by(config: &str, parts: &[&str]) {
    let app = app(config).await;
    for _ in 0..2 {
        assert_failed_closed(&representative(&app.router).await, parts);
        assert_allowed(&break_glass(&app.router).await);
    }
    let health = send(&app.router, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn an_infinite_loop_times_out() {
    // The default limit, as written: the timeout is the point.
    let config = plugin_as_written("loop-forever", path_of(LOOP_FOREVER), &["enrich"], ONLY_PATIENTS);
    contained_by(&config, &["plugin `loop-forever` (enrich) timed out after 10 ms"]).await;
}

#[tokio::test]
async fn a_longer_timeout_is_honoured_and_named() {
    contained(
        "loop-forever",
        LOOP_FOREVER,
        "[plugins.limits]\ntimeout_ms = 50\n",
        &["timed out after 50 ms"],
    )
    .await;
}

#[tokio::test]
async fn memory_growth_stops_at_the_limit() {
    // A generous timeout, so that the memory limit is what stops it.
    let config = "[plugins.limits]\ntimeout_ms = 2000\n";
    contained(
        "memory-hog",
        MEMORY_HOG,
        config,
        &["plugin `memory-hog` (enrich) exceeded its memory limit of 16 MiB"],
    )
    .await;
}

#[tokio::test]
async fn a_panic_traps() {
    contained(
        "trap",
        TRAP,
        "",
        &["plugin `trap` (enrich) trapped: unreachable code reached (a panic or abort)"],
    )
    .await;
}

/// What a Rust plugin whose shadow stack ran out is told: the trap as it
/// was, an out-of-bounds access next to 4 GiB, and what that most likely
/// means and how to fix it.
const SHADOW_STACK_OVERFLOW: [&str; 3] = [
    "trapped: out of bounds memory access at wasm address `0x",
    "`, next to 4 GiB, where a stack pointer that went below zero lands: most likely the plugin's shadow \
     stack overflowed",
    "`-C link-arg=-zstack-size=<bytes>`",
];

#[tokio::test]
async fn a_stack_overflow_traps() {
    // A generous timeout, so that the stack limit is what stops it even on
    // a machine busy with the other tests.
    let config = "[plugins.limits]\ntimeout_ms = 2000\n";
    let mut parts = vec!["plugin `stack-overflow` (enrich) trapped"];
    parts.extend(SHADOW_STACK_OVERFLOW);
    contained("stack-overflow", STACK_OVERFLOW, config, &parts).await;
}

#[tokio::test]
async fn a_shadow_stack_overflow_is_not_reported_as_a_bare_out_of_bounds_access() {
    let config = "[plugins.limits]\ntimeout_ms = 2000\n";
    contained("deep-recursion", DEEP_RECURSION, config, &SHADOW_STACK_OVERFLOW).await;
    // The same program, recursing less deeply, answers: it is the depth.
    let shallow = app(&plugin(
        "deep-recursion",
        path_of(DEEP_RECURSION),
        &["enrich"],
        &format!("{ONLY_PATIENTS}[plugins.config]\ndepth = \"100\"\n"),
    ))
    .await;
    assert_allowed(&representative(&shallow.router).await);
}

#[tokio::test]
async fn a_plugin_calling_exit_is_reported_as_an_exit() {
    let app = app(&plugin("exit-caller", path_of(EXIT_CALLER), &["enrich"], ONLY_PATIENTS)).await;
    let answer = representative(&app.router).await;
    // WASI 0.2's exit carries success or failure only: `exit(3)` arrives as 1.
    assert_failed_closed(
        &answer,
        &["plugin `exit-caller` (enrich) called exit with status `1` instead of returning"],
    );
    assert_eq!(answer["plugins"], json!(["exit-caller/enrich: exit, denied"]), "{answer}");
    assert_allowed(&break_glass(&app.router).await);
}

#[tokio::test]
async fn a_plugin_exiting_with_success_is_still_denied() {
    // Status 0 is not an answer either.
    let config = format!("{ONLY_PATIENTS}[plugins.config]\nstatus = \"0\"\n");
    let app = app(&plugin("exit-caller", path_of(EXIT_CALLER), &["enrich"], &config)).await;
    assert_failed_closed(
        &representative(&app.router).await,
        &["plugin `exit-caller` (enrich) called exit with status `0` instead of returning"],
    );
}

#[tokio::test]
async fn huge_output_and_a_huge_argument_to_an_import_are_refused_by_size() {
    for via in ["output", "config-key"] {
        // A generous timeout, so that the size limit is what stops it.
        let config = format!("[plugins.limits]\ntimeout_ms = 2000\n[plugins.config]\nvia = \"{via}\"\n");
        contained(
            "huge-output",
            HUGE_OUTPUT,
            &config,
            &["plugin `huge-output` (enrich) passed the host more than 1048576 bytes at once"],
        )
        .await;
    }
}

#[tokio::test]
async fn malformed_output_is_the_plugins_fault_never_the_callers() {
    for (mode, expected) in [
        ("not-json", "`context` is not JSON"),
        ("context-not-object", "`context` is not a JSON object"),
        ("bad-entity", "`entities[0]`"),
        ("sets-now", "`context.now` is the server's clock"),
        ("replaces-attribute", "`context.purpose` was sent by the caller"),
    ] {
        let config = format!("[plugins.config]\nmode = \"{mode}\"\n");
        contained("malformed-output", MALFORMED_OUTPUT, &config, &["returned invalid output", expected])
            .await;
    }
}

#[tokio::test]
async fn an_ungranted_clock_traps_and_a_granted_one_works() {
    contained("clock-reader", CLOCK_READER, "", &["trapped: used `wasi:clocks/wall-clock", "not granted"])
        .await;
    let granted =
        app(&plugin("clock-reader", path_of(CLOCK_READER), &["enrich"], "grants = [\"clocks\"]")).await;
    assert_allowed(&representative(&granted.router).await);
}

#[tokio::test]
async fn sockets_are_never_linked() {
    contained(
        "socket-opener",
        SOCKET_OPENER,
        "grants = [\"clocks\", \"random\"]",
        &["trapped: used `wasi:sockets/", "not granted"],
    )
    .await;
}

#[tokio::test]
async fn the_filesystem_is_never_linked() {
    // Rust's std imports the filesystem; opening a file is where it traps.
    contained(
        "file-reader",
        FILE_READER,
        "grants = [\"clocks\", \"random\"]",
        &["trapped: used `wasi:filesystem/", "not granted"],
    )
    .await;
}

#[tokio::test]
async fn a_plugin_set_to_skip_is_left_out_when_it_fails() {
    let app = app(&plugin("trap", path_of(TRAP), &["enrich"], "failure = \"skip\"")).await;
    let answer = representative(&app.router).await;
    assert_allowed(&answer);
    // Left out, but not silently: the answer says so.
    assert_eq!(answer["plugins"], json!(["trap/enrich: trap, skipped"]), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_calls_to_hostile_and_healthy_plugins_do_not_interfere() {
    let config = plugin_as_written("loop-forever", path_of(LOOP_FOREVER), &["enrich"], ONLY_PATIENTS)
        // Spinning plugins take the CPU a healthy one needs; its deadline is
        // generous so that only interference, not scheduling, could fail it.
        + &plugin(
            "trivial",
            path_of(TRIVIAL_ENRICHER),
            &["enrich"],
            "[plugins.applies_to]\nresource_types = [\"Record\"]\n[plugins.limits]\ntimeout_ms = 5000\n",
        );
    let app = app(&config).await;
    let parallel = 2 * std::thread::available_parallelism().map_or(2, usize::from);
    let tasks: Vec<_> = (0..parallel)
        .map(|i| {
            let router = app.router.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    if i % 2 == 0 {
                        assert_failed_closed(&representative(&router).await, &["timed out after 10 ms"]);
                    } else {
                        assert_allowed(&break_glass(&router).await);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("no task panicked");
    }
}

#[tokio::test]
async fn metrics_count_calls_errors_and_timeouts_per_plugin() {
    let config = plugin_as_written("metered-loop", path_of(LOOP_FOREVER), &["enrich"], ONLY_PATIENTS);
    let app = app(&config).await;
    representative(&app.router).await;
    representative(&app.router).await;
    let metrics = send(&app.router, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    let text = metrics.body.as_str().unwrap().to_owned();
    for line in [
        "consentry_plugin_calls_total{plugin=\"metered-loop\",hook=\"enrich\"} 2",
        "consentry_plugin_errors_total{plugin=\"metered-loop\",hook=\"enrich\"} 2",
        "consentry_plugin_timeouts_total{plugin=\"metered-loop\",hook=\"enrich\"} 2",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
    assert!(text.contains("consentry_plugin_call_duration_seconds"), "{text}");
}

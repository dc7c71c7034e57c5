//! Prometheus metrics, served at `GET /metrics`.
//!
//! One process-wide recorder, installed the first time anything asks for
//! it, so that metrics registered before the server starts (plugins load
//! first) are not lost to the no-op recorder. Every metric is described in
//! [`CATALOG`] when the recorder is installed, so `/metrics` carries HELP
//! text for each, and the list in `docs/operators/observability.md` can be checked against it.
//!
//! Labels are kept to small, fixed sets (an API, an outcome, a route
//! template, a cache, a store operation), never an id, a path or a
//! principal: a label per patient would grow the exporter without bound.
//!
//! Which API a decision was asked through is known to the HTTP layer, not
//! to the pipeline that makes it; the layer runs the handler inside
//! [`with_api`], a task-local scope, so the pipeline can count every
//! decision where its final outcome is known without every handler
//! passing the API along. Decisions outside such a scope (the policy
//! tests a reload runs, the CLI) are not traffic and are not counted; a new
//! entry point (a gRPC server, say) runs its calls in [`with_api`] too.

mod handles;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, histogram};

use handles::Counted;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets of every `_seconds` histogram: from 100 µs (a decision over
/// cached entities) to 10 s (a plugin or store at its time limit).
const SECONDS_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Decisions made, by API and outcome.
pub const DECISIONS: &str = "consentry_decisions_total";
/// Time to answer a decision request, by API.
pub const DECISION_DURATION: &str = "consentry_decision_duration_seconds";
/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "consentry_http_requests_total";
/// Time to answer an HTTP request, by route template.
pub const HTTP_DURATION: &str = "consentry_http_request_duration_seconds";
/// Cache lookups that found what they looked for, by cache.
pub const CACHE_HITS: &str = "consentry_cache_hits_total";
/// Cache lookups that had to go to the store, by cache.
pub const CACHE_MISSES: &str = "consentry_cache_misses_total";
/// Time of one store operation, by operation and result.
pub const STORE_DURATION: &str = "consentry_store_operation_duration_seconds";
/// Reloads of the policy directory or the plugins, by kind and outcome.
pub const RELOADS: &str = "consentry_reloads_total";
/// Free bytes on the decision log's disk.
pub const AUDIT_DISK_FREE: &str = "consentry_audit_disk_free_bytes";
/// The free bytes below which the decision log's disk is reported low.
pub const AUDIT_DISK_LOW_WATER: &str = "consentry_audit_disk_low_water_bytes";

/// How a metric is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, in buckets.
    Histogram,
}

/// One metric the server exposes: name, kind, labels and HELP text.
#[derive(Debug, Clone, Copy)]
pub struct Described {
    /// The name in `/metrics`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Its labels, for the documentation.
    pub labels: &'static [&'static str],
    /// The HELP text.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Described {
    Described { name, kind, labels, help }
}

/// Every metric the server exposes.
pub const CATALOG: &[Described] = &[
    metric(
        DECISIONS,
        Kind::Counter,
        &["api", "outcome"],
        "Decisions made, by API and outcome (allow, forbidden, not_permitted, failed_closed; a plan's kind: always, never, conditional).",
    ),
    metric(
        DECISION_DURATION,
        Kind::Histogram,
        &["api"],
        "Time to answer a decision request, by API; a batch counts once.",
    ),
    metric(
        HTTP_REQUESTS,
        Kind::Counter,
        &["route", "method", "status"],
        "HTTP requests answered, by route template, method and status.",
    ),
    metric(HTTP_DURATION, Kind::Histogram, &["route"], "Time to answer an HTTP request, by route template."),
    metric(
        CACHE_HITS,
        Kind::Counter,
        &["cache"],
        "Cache lookups answered from memory: entities, consents (a patient's parsed consents), partitions (compiled for the policies in force) and tokens (access tokens already verified).",
    ),
    metric(
        CACHE_MISSES,
        Kind::Counter,
        &["cache"],
        "Cache lookups that read the store (entities, consents), compiled anew (partitions) or verified a signature (tokens).",
    ),
    metric(
        STORE_DURATION,
        Kind::Histogram,
        &["operation", "result"],
        "Time of one store operation, by operation and result (ok, error).",
    ),
    metric(
        RELOADS,
        Kind::Counter,
        &["kind", "outcome"],
        "Reloads of the policy directory (policies) or the plugins (plugins), by outcome (ok, refused).",
    ),
    metric("consentry_audit_written_total", Kind::Counter, &[], "Decision log records written."),
    metric(
        "consentry_audit_dropped_total",
        Kind::Counter,
        &[],
        "Decision log records dropped under drop-and-count backpressure.",
    ),
    metric(
        "consentry_audit_write_failures_total",
        Kind::Counter,
        &[],
        "Decision log records that could not be written.",
    ),
    metric(
        "consentry_audit_failing",
        Kind::Gauge,
        &[],
        "1 while the decision log cannot be written (decisions fail closed), else 0.",
    ),
    metric(
        "consentry_audit_disk_bytes",
        Kind::Gauge,
        &[],
        "Bytes the decision log's files take on disk, as of its last rotation.",
    ),
    metric(
        AUDIT_DISK_FREE,
        Kind::Gauge,
        &[],
        "Bytes still free for the decision log on its disk, read at each scrape and readiness probe.",
    ),
    metric(
        AUDIT_DISK_LOW_WATER,
        Kind::Gauge,
        &[],
        "The free bytes (`audit.low_water_bytes`) below which the decision log's disk is reported low in /readyz.",
    ),
    metric("consentry_plugin_calls_total", Kind::Counter, &["plugin", "hook"], "Plugin hook calls."),
    metric(
        "consentry_plugin_errors_total",
        Kind::Counter,
        &["plugin", "hook"],
        "Plugin hook calls that failed (and so denied).",
    ),
    metric(
        "consentry_plugin_timeouts_total",
        Kind::Counter,
        &["plugin", "hook"],
        "Plugin hook calls stopped at their time limit.",
    ),
    metric(
        "consentry_plugin_call_duration_seconds",
        Kind::Histogram,
        &["plugin", "hook"],
        "Time of one plugin hook call.",
    ),
    metric(
        "consentry_connections_refused_total",
        Kind::Counter,
        &[],
        "Connections refused at the connection limit (`listen.max_connections`).",
    ),
    metric(
        "consentry_connections_closed_total",
        Kind::Counter,
        &["reason"],
        "Connections the server closed, by reason (idle, evicted, stopping).",
    ),
];

/// Installs the recorder if no other is installed, and returns its handle;
/// `None` when another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    for metric in CATALOG {
        let unit = metric.name.ends_with("_seconds").then_some(Unit::Seconds);
        match (metric.kind, unit) {
            (Kind::Counter, _) => describe_counter!(metric.name, metric.help),
            (Kind::Gauge, _) => describe_gauge!(metric.name, metric.help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(metric.name, unit, metric.help),
            (Kind::Histogram, None) => describe_histogram!(metric.name, metric.help),
        }
    }
}

/// The API a decision was asked through: a label of [`DECISIONS`] and
/// [`DECISION_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// `POST /v1/is_authorized`.
    IsAuthorized,
    /// `POST /v1/is_authorized/batch`.
    Batch,
    /// `POST /access/v1/evaluation`.
    Evaluation,
    /// `POST /access/v1/evaluations`.
    Evaluations,
    /// `POST /access/v1/search/{subject,resource,action}`.
    Search,
    /// `GET /v1/patients/{id}/access-overview`.
    AccessOverview,
    /// `POST /v1/plan`.
    Plan,
    /// Envoy's HTTP `ext_authz`.
    ExtAuthz,
    /// Envoy's gRPC `ext_authz` (`envoy.service.auth.v3.Authorization/Check`).
    GrpcExtAuthz,
}

impl Api {
    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Api::IsAuthorized => "is_authorized",
            Api::Batch => "batch",
            Api::Evaluation => "evaluation",
            Api::Evaluations => "evaluations",
            Api::Search => "search",
            Api::AccessOverview => "access_overview",
            Api::Plan => "plan",
            Api::ExtAuthz => "ext_authz",
            Api::GrpcExtAuthz => "grpc_ext_authz",
        }
    }
}

tokio::task_local! {
    static API: Api;
}

/// Runs `work` with its decisions counted under `api`.
pub async fn with_api<F: Future>(api: Api, work: F) -> F::Output {
    API.scope(api, work).await
}

/// The API of the decision being made; `None` outside a request, for the
/// decisions of the policy tests gate or the CLI.
pub fn current_api() -> Option<Api> {
    API.try_with(|api| *api).ok()
}

/// Counts one decision, or plan, that came out as `outcome`, when a caller
/// asked for it: the policy tests a reload runs are not traffic.
pub fn decision(outcome: &'static str) {
    if let Some(api) = current_api() {
        Counted::Decision(api, outcome).increment(1);
    }
}

/// Records how long a decision request under `api` took to answer.
pub fn decision_duration(api: Api, elapsed: Duration) {
    handles::decision_duration(api, elapsed.as_secs_f64());
}

/// Counts one answered HTTP request and its duration.
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    handles::http_request(route, method, status, elapsed.as_secs_f64());
}

/// A cache whose hit ratio is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cache {
    /// The replica's bounded copy of the entity directory.
    Entities,
    /// A patient's parsed consents.
    Consents,
    /// A patient's consents compiled for the policies in force.
    Partitions,
    /// Access tokens whose signature was verified.
    Tokens,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Entities => "entities",
            Cache::Consents => "consents",
            Cache::Partitions => "partitions",
            Cache::Tokens => "tokens",
        }
    }
}

/// Counts `hits` and `misses` of `cache`.
pub fn cache_lookups(cache: Cache, hits: usize, misses: usize) {
    if hits > 0 {
        Counted::CacheHits(cache).increment(hits as u64);
    }
    if misses > 0 {
        Counted::CacheMisses(cache).increment(misses as u64);
    }
}

/// Runs one store operation in a `store` span, and records its duration.
pub async fn store_operation<T, E>(
    operation: &'static str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = work.instrument(tracing::info_span!("store", operation)).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    histogram!(STORE_DURATION, "operation" => operation, "result" => outcome)
        .record(started.elapsed().as_secs_f64());
    result
}

/// What is reloaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// The policy directory.
    Policies,
    /// The plugins.
    Plugins,
}

/// Counts one reload of `kind`, put in force or refused.
pub fn reload(kind: Reload, ok: bool) {
    let kind = match kind {
        Reload::Policies => "policies",
        Reload::Plugins => "plugins",
    };
    counter!(RELOADS, "kind" => kind, "outcome" => if ok { "ok" } else { "refused" }).increment(1);
}

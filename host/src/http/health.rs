//! Liveness and readiness: what a probe needs to know, and, for
//! operators, why.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::audit::disk::DiskSpace;
use crate::audit::writer::AuditStatus;
use crate::auth::Role;
use crate::state::AppState;

/// Liveness: the process is up and serving.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object, example = json!({"status": "ok"})))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Who may read `/readyz`'s details: operators. The store's location,
/// reload errors and the policy set in force tell an attacker about the
/// deployment, and a probe needs none of them (issue 13, finding 15).
const DETAIL_READERS: &[Role] = &[Role::PolicyAdmin, Role::Auditor];

/// The warning of a ready sidecar whose decision log's disk has less free
/// space than `audit.low_water_bytes`: still ready, since an unready
/// sidecar takes its service out of rotation before anything has failed,
/// but the log will fail closed when the disk is full.
const DISK_LOW: &str = "disk";

/// Why a sidecar is not ready, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotReady {
    /// The store does not answer: every decision about a patient would be
    /// denied, and no change could be made or seen.
    Store,
    /// No policy set is stored yet: every decision is denied.
    NoPolicySet,
    /// The decision log fails closed and cannot be written: every decision
    /// is denied.
    DecisionLog,
}

impl NotReady {
    fn word(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::NoPolicySet => "no-policy-set",
            Self::DecisionLog => "decision-log",
        }
    }
}

/// Readiness: a policy set is in force, the store answers, and decisions
/// are served (200), or not (503).
///
/// Without a token the answer is
/// only `ready`, or `unavailable` and why in one word (`store`,
/// `no-policy-set`, `decision-log`), which is all a probe needs. With an operator's token
/// (`policy-admin` or `auditor`) it also names the policy set in force, the
/// outcome of the last reload, the store and the log, so a refused reload
/// (the old set still serving) is visible to operators; any other token gets
/// the short answer. Without its consent store a sidecar would deny every
/// decision about a patient, and with a decision log that fails closed and
/// cannot be written it denies every decision, so it is then not ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security((), ("bearer" = ["policy-admin", "auditor"])),
    responses(
        (status = 200, description = "ready: `{\"status\": \"ready\"}`, plus `\"warning\": \"disk\"` when the decision log's disk is below `audit.low_water_bytes`; with details for an operator's token", body = Object,
         example = json!({"status": "ready"})),
        (status = 503, description = "not ready: `{\"status\": \"unavailable\", \"reason\": \"store\" | \"no-policy-set\" | \"decision-log\"}`, with details for an operator's token", body = Object,
         example = json!({"status": "unavailable", "reason": "store"})),
    )
)]
pub async fn readyz(State(state): State<Arc<AppState>>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    // The route stays open: a probe, or a caller whose token is not an
    // operator's, gets the short answer rather than an error.
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let details = state.auth.authorize(authorization, DETAIL_READERS).await.is_ok();
    let store = state.pipeline.consents.store();
    let ping = store.ping().await;
    let audit = state.pipeline.audit_status();
    let not_ready = if ping.is_err() || state.pipeline.directory.out_of_touch().is_some() {
        Some(NotReady::Store)
    } else if !state.pipeline.directory.has_policy_set() {
        Some(NotReady::NoPolicySet)
    } else if audit.as_ref().is_some_and(AuditStatus::denies_decisions) {
        Some(NotReady::DecisionLog)
    } else {
        None
    };
    let status = if not_ready.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut answer = match not_ready {
        None => json!({"status": "ready"}),
        Some(reason) => json!({"status": "unavailable", "reason": reason.word()}),
    };
    let disk = audit.as_ref().and_then(|audit| audit.disk.clone());
    if let (Some(DiskSpace { low: true, .. }), Value::Object(fields)) = (&disk, &mut answer) {
        fields.insert("warning".to_owned(), json!(DISK_LOW));
    }
    if !details {
        return (status, Json(answer));
    }
    let store = match ping {
        Ok(()) => json!({"ok": true, "store": store.describe()}),
        Err(error) => {
            json!({"ok": false, "store": store.describe(), "code": error.code(), "error": error.to_string()})
        }
    };
    let decision_log = match audit {
        None => json!({"ok": true, "log": "off"}),
        Some(AuditStatus { log, backpressure, failure: None, disk }) => {
            json!({"ok": true, "log": log, "backpressure": backpressure, "disk": disk})
        }
        Some(AuditStatus { log, backpressure, failure: Some(failure), disk }) => json!({
            "ok": false, "log": log, "backpressure": backpressure,
            "code": failure.code(), "error": failure.to_string(), "disk": disk,
        }),
    };
    let snapshot = state.pipeline.read();
    if let Value::Object(fields) = &mut answer {
        fields.extend([
            ("store".to_owned(), store),
            ("decision_log".to_owned(), decision_log),
            ("policy_hash".to_owned(), json!(snapshot.bundle.hash())),
            ("policy_version".to_owned(), json!(snapshot.version)),
            ("entity_revision".to_owned(), json!(snapshot.revision)),
            ("policies".to_owned(), json!(snapshot.bundle.policy_count())),
            ("schema".to_owned(), json!(snapshot.bundle.schema().is_some())),
            ("entity_cache".to_owned(), entity_cache(&snapshot.store)),
            ("last_reload".to_owned(), json!(state.pipeline.directory.last_reload())),
        ]);
    }
    (status, Json(answer))
}

/// Prometheus metrics, in the text exposition format.
///
/// Decisions by API and outcome, decision latency, HTTP requests by route
/// and status, cache hit ratios, store latency, reloads, the decision log's
/// disk, and per-plugin calls, errors, timeouts and durations. The decision
/// log's disk is read first, so its free space is as of the scrape.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses((status = 200, description = "the metrics", content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let _ = state.pipeline.audit_disk();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}

/// What the entity cache holds: entities, bytes taken, budget.
fn entity_cache(store: &consentry_engine::EntityStore) -> Value {
    let (budget, bytes) = store.footprint().unwrap_or_default();
    json!({"entities": store.len(), "bytes": bytes, "budget_bytes": budget})
}

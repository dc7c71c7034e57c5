//! Liveness and readiness.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::audit::writer::AuditStatus;
use crate::state::AppState;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: a bundle is loaded, the consent store answers, and
/// decisions are served. The detail names the policy set in force and the
/// outcome of the last reload, so a refused reload (the old set still
/// serving) is visible to operators. Without its consent store a sidecar
/// would deny every decision about a patient, and with a decision log that
/// fails closed and cannot be written it denies every decision, so it is
/// then not ready (503).
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let store = state.consents.store();
    let ping = store.ping().await;
    let audit = state.audit_status();
    let ready = ping.is_ok() && !audit.as_ref().is_some_and(AuditStatus::denies_decisions);
    let consent_store = match ping {
        Ok(()) => json!({"ok": true, "store": store.describe()}),
        Err(error) => json!({"ok": false, "store": store.describe(), "error": error.to_string()}),
    };
    let decision_log = match audit {
        None => json!({"ok": true, "log": "off"}),
        Some(AuditStatus { log, backpressure, failure: None }) => {
            json!({"ok": true, "log": log, "backpressure": backpressure})
        }
        Some(AuditStatus { log, backpressure, failure: Some(error) }) => {
            json!({"ok": false, "log": log, "backpressure": backpressure, "error": error})
        }
    };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let snapshot = state.read();
    let detail = Json(json!({
        "status": if ready { "ready" } else { "unavailable" },
        "consent_store": consent_store,
        "decision_log": decision_log,
        "policy_hash": snapshot.bundle.hash(),
        "policies": snapshot.bundle.policy_count(),
        "schema": snapshot.bundle.schema().is_some(),
        "entities": snapshot.store.len(),
        "last_reload": state.last_reload(),
    }));
    (status, detail)
}

/// `GET /metrics`: Prometheus text format, including per-plugin calls,
/// errors, timeouts and durations.
pub async fn metrics() -> ([(axum::http::HeaderName, &'static str); 1], String) {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render())
}

//! Liveness and readiness.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: the process is up and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: a bundle is loaded and decisions are served. The detail
/// names the policy set in force and the outcome of the last reload, so a
/// refused reload (the old set still serving) is visible to operators.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Json<Value> {
    let snapshot = state.read();
    Json(json!({
        "status": "ready",
        "policy_hash": snapshot.bundle.hash(),
        "policies": snapshot.bundle.policy_count(),
        "schema": snapshot.bundle.schema().is_some(),
        "entities": snapshot.store.len(),
        "last_reload": state.last_reload(),
    }))
}

//! The plugin admin API: what is loaded, and an atomic reload.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::error::AppError;
use crate::plugins::{PluginError, PluginSet};
use crate::state::AppState;

/// `GET /v1/plugins`: the plugins in force.
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(describe(&state.plugins.current()))
}

/// `POST /v1/plugins/reload`: re-reads the configuration and every
/// component; on any error the plugins in force stay, and the answer says why.
pub async fn reload(State(state): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    let set = tokio::task::spawn_blocking(move || state.plugins.reload())
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string()))?
        .map_err(|error| match error {
            PluginError::NotConfigured => {
                AppError::new(StatusCode::CONFLICT, "plugins_not_configured", error.to_string())
            }
            other => AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugins_refused", other.to_string()),
        })?;
    tracing::info!(plugins = set.plugins().len(), "plugins reloaded through the admin API");
    Ok(Json(describe(&set)))
}

fn describe(set: &PluginSet) -> Value {
    let plugins: Vec<Value> = set
        .plugins()
        .iter()
        .map(|plugin| {
            let config = &plugin.config;
            json!({
                "name": config.name,
                "path": config.path.display().to_string(),
                "sha256": plugin.digest.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "hooks": config.hooks.iter().map(|h| h.name()).collect::<Vec<_>>(),
                "failure": config.failure,
                "grants": config.grants,
                "applies_to": {"resource_types": config.applies_to.resource_types, "actions": config.applies_to.actions},
                "may_change": config.may_change,
                "limits": config.limits,
            })
        })
        .collect();
    json!({"plugins": plugins})
}

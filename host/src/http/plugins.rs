//! The plugin admin API: what is loaded, and an atomic reload.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde_json::{Value, json};

use super::change_record::{self, ChangeReasonHeader};
use super::error::{AppError, ErrorBody};
use crate::audit::{ChangeEntry, ChangeKind};
use crate::auth::Caller;
use crate::plugins::{PluginError, PluginSet};
use crate::state::AppState;

/// The plugins in force.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = "admin",
    responses((status = 200, description = "`{plugins: [{name, path, sha256, hooks, failure, grants, applies_to, may_change, limits}]}`", body = Object))
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(describe(&state.pipeline.plugins.current()))
}

/// Re-reads the plugin configuration and every component.
///
/// On any error the plugins in force stay, and the answer says why.
#[utoipa::path(
    post,
    path = "/v1/plugins/reload",
    tag = "admin",
    params(ChangeReasonHeader),
    responses(
        (status = 200, description = "the plugins now in force, as `GET /v1/plugins`", body = Object),
        (status = 400, description = "`X-Change-Reason` is not visible ASCII, or too long", body = ErrorBody),
        (status = 409, description = "no plugins are configured", body = ErrorBody),
        (status = 422, description = "`plugins_refused`: a plugin was refused, its `cause` saying why (`core_module`, `hook_not_exported`, …); the plugins in force stay", body = ErrorBody),
        (status = 500, description = "the reload task failed", body = ErrorBody),
        (status = 503, description = "the plugins were put in force but their change record could not be written", body = ErrorBody),
    )
)]
pub async fn reload(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    let reason = change_record::reason(&headers)?;
    let reloading = Arc::clone(&state);
    let set = tokio::task::spawn_blocking(move || reloading.pipeline.plugins.reload())
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "reload_failed", e.to_string()))?
        .map_err(|error| match error {
            PluginError::NotConfigured => {
                AppError::new(StatusCode::CONFLICT, "plugins_not_configured", error.to_string())
            }
            // The code stays one for every refusal, so clients need not
            // learn each; `cause` says which.
            other => AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "plugins_refused", other.to_string())
                .with_cause(other.code()),
        })?;
    tracing::info!(plugins = set.plugins().len(), "plugins reloaded through the admin API");
    change_record::record(
        &state,
        plugins_change(&set, &caller.name),
        reason.as_deref(),
        "the plugin set in force",
    )
    .await?;
    Ok(Json(describe(&set)))
}

/// The change record of a plugin set put in force.
pub fn plugins_change(set: &PluginSet, actor: &str) -> ChangeEntry {
    ChangeEntry::now(ChangeKind::Plugins, actor, "plugins")
        .with_hash(set.fingerprint())
        .with_count("plugins", u64::try_from(set.plugins().len()).unwrap_or(u64::MAX))
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

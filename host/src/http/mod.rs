//! The HTTP surface: routes, middleware and the error format.

mod admin;
mod authzen;
mod consents;
mod decisions;
mod error;
mod ext_authz;
mod extract;
mod health;
mod plugins;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use error::AppError;

use crate::state::AppState;

/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// Builds the router over shared state, with `max_body` as the body size limit.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let admin = Router::new()
        .route("/v1/policies", get(admin::get_policies).put(admin::put_policies))
        .route("/v1/schema", get(admin::get_schema).put(admin::put_schema))
        .route(
            "/v1/entities",
            get(admin::get_entities)
                .put(admin::put_entities)
                .patch(admin::patch_entities)
                .delete(admin::delete_entities),
        )
        .route("/v1/consents", post(consents::create))
        .route("/v1/consents/{id}", get(consents::get).put(consents::supersede))
        .route("/v1/patients/{id}/consents", get(consents::for_patient))
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/reload", post(plugins::reload))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), require_admin));
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v1/is_authorized", post(decisions::is_authorized))
        .route("/v1/is_authorized/batch", post(decisions::is_authorized_batch))
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/.well-known/authzen-configuration", get(authzen::configuration))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(&format!("{}/{{*path}}", ext_authz::PREFIX), any(ext_authz::check))
        .route(ext_authz::PREFIX, any(ext_authz::check))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            refuse_declared_oversize(max_body, request, next)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn require_admin(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    state.admin.check(header)?;
    Ok(next.run(request).await)
}

/// Refuses a body whose declared `Content-Length` is over the limit before
/// reading any of it, so the client learns at once and the server never
/// buffers it. Bodies without a length are cut off by `DefaultBodyLimit`.
async fn refuse_declared_oversize(
    max_body: usize,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(AppError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body exceeds the limit of {max_body} bytes (--max-body)"),
        ));
    }
    Ok(next.run(request).await)
}

async fn not_found() -> AppError {
    AppError::not_found()
}

async fn method_not_allowed() -> AppError {
    AppError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

//! The HTTP surface: routes, middleware and the error format.

mod admin;
mod audit;
mod authzen;
mod change_record;
mod consents;
mod decisions;
mod error;
mod ext_authz;
mod extract;
mod health;
mod observe;
mod plan;
mod plugins;
mod search;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post, put};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

pub use error::AppError;
pub use plugins::plugins_change;

use crate::auth::Role;
use crate::state::AppState;

/// Default request body limit: 1 MiB.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The header `ext_authz` takes Consentry's own token from, when decisions
/// need one: the proxied request's `Authorization` belongs to the end
/// client. Envoy adds it with `authorization_request.headers_to_add`.
pub const EXT_AUTHZ_TOKEN_HEADER: &str = "x-consentry-authorization";

/// Roles that may change policies, schema, entities and plugins.
const POLICY_ADMIN: &[Role] = &[Role::PolicyAdmin];
/// Roles that may record consents.
const CONSENT_WRITER: &[Role] = &[Role::ConsentWriter];
/// Roles that may read consents back.
const CONSENT_READER: &[Role] = &[Role::ConsentWriter, Role::Auditor];
/// Roles that may read a patient's access log; a patient token only for a
/// patient the policy pack lets its principal act for.
const ACCESS_LOG_READER: &[Role] = &[Role::Auditor, Role::Patient];
/// Roles that may export the audit trail.
const AUDITOR: &[Role] = &[Role::Auditor];

/// The two halves of the HTTP surface, so they can be served on separate
/// listeners: decisions and health for the service beside the sidecar, and
/// the protected administration, consent and audit routes.
#[derive(Debug)]
pub struct Routers {
    /// Decision APIs, `ext_authz`, health, readiness, metrics and AuthZEN metadata.
    pub public: Router,
    /// Policies, schema, entities, plugins, consents and the audit trail.
    pub admin: Router,
}

/// Builds the router over shared state, with `max_body` as the body size
/// limit: every route on one listener.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let public = public_routes(&state);
    let admin = admin_routes(&state);
    finish(public.merge(admin), state, max_body)
}

/// Builds the public and admin routers separately, for `listen.admin_bind`.
pub fn routers(state: Arc<AppState>, max_body: usize) -> Routers {
    Routers {
        public: finish(public_routes(&state), Arc::clone(&state), max_body),
        admin: finish(admin_routes(&state), state, max_body),
    }
}

fn public_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let decisions = Router::new()
        .route("/v1/is_authorized", post(decisions::is_authorized))
        .route("/v1/is_authorized/batch", post(decisions::is_authorized_batch))
        .route("/v1/plan", post(plan::plan))
        .route("/access/v1/evaluation", post(authzen::evaluation))
        .route("/access/v1/evaluations", post(authzen::evaluations))
        .route("/access/v1/search/subject", post(search::subject))
        .route("/access/v1/search/resource", post(search::resource))
        .route("/access/v1/search/action", post(search::action))
        .route(&format!("{}/{{*path}}", ext_authz::PREFIX), any(ext_authz::check))
        .route(ext_authz::PREFIX, any(ext_authz::check))
        .route_layer(middleware::from_fn_with_state(Arc::clone(state), require_decision_token));
    Router::new()
        .route("/.well-known/authzen-configuration", get(authzen::configuration))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .merge(decisions)
}

fn admin_routes(state: &Arc<AppState>) -> Router<Arc<AppState>> {
    let policy_admin = Router::new()
        .route("/v1/policies", get(admin::get_policies).put(admin::put_policies))
        .route("/v1/policies/versions", get(admin::list_versions))
        .route("/v1/policies/rollback", post(admin::rollback))
        .route("/v1/entities/revisions", get(admin::list_entity_revisions))
        .route("/v1/entities/{type}/{id}", get(admin::get_entity))
        .route("/v1/schema", get(admin::get_schema).put(admin::put_schema))
        .route(
            "/v1/entities",
            get(admin::get_entities)
                .put(admin::put_entities)
                .patch(admin::patch_entities)
                .delete(admin::delete_entities),
        )
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/reload", post(plugins::reload))
        .route_layer(middleware::from_fn_with_state((Arc::clone(state), POLICY_ADMIN), require_role));
    let consent_writer = Router::new()
        .route("/v1/consents", post(consents::create))
        .route("/v1/consents/{id}", put(consents::supersede))
        .route_layer(middleware::from_fn_with_state((Arc::clone(state), CONSENT_WRITER), require_role));
    let consent_reader = Router::new()
        .route("/v1/consents/{id}", get(consents::get))
        .route("/v1/patients/{id}/consents", get(consents::for_patient))
        .route_layer(middleware::from_fn_with_state((Arc::clone(state), CONSENT_READER), require_role));
    let access_log = Router::new()
        .route("/v1/patients/{id}/access-log", get(audit::access_log))
        .route("/v1/patients/{id}/access-overview", get(search::access_overview))
        .route_layer(middleware::from_fn_with_state((Arc::clone(state), ACCESS_LOG_READER), require_role));
    let auditor = Router::new()
        .route("/v1/audit/events", get(audit::events))
        .route("/v1/audit/changes", get(audit::changes))
        .route("/v1/audit/head", get(audit::head))
        .route_layer(middleware::from_fn_with_state((Arc::clone(state), AUDITOR), require_role));
    policy_admin.merge(consent_writer).merge(consent_reader).merge(access_log).merge(auditor)
}

/// Adds the error fallbacks and the body limit, request id and observing
/// (metrics and trace span) layers.
fn finish(routes: Router<Arc<AppState>>, state: Arc<AppState>, max_body: usize) -> Router {
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            refuse_declared_oversize(max_body, request, next)
        }))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(middleware::from_fn(observe::observe))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Admits only callers whose token holds one of the roles in the state.
/// The caller goes into the request's extensions, for handlers that look
/// further (a patient token's principal).
async fn require_role(
    State((state, roles)): State<(Arc<AppState>, &'static [Role])>,
    mut request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let header = request.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = state.auth.authorize(header, roles).await?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// Admits decision requests: all of them, unless `auth.decisions` is
/// `token`, when they need the `decision` role.
async fn require_decision_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if state.auth.decisions_need_token() {
        let from = if request.uri().path().starts_with(ext_authz::PREFIX) {
            EXT_AUTHZ_TOKEN_HEADER
        } else {
            AUTHORIZATION.as_str()
        };
        let header = request.headers().get(from).and_then(|v| v.to_str().ok());
        state.auth.authorize(header, &[Role::Decision]).await?;
    }
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

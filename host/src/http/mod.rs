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
pub(crate) mod openapi;
mod plan;
mod plugins;
mod search;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::AppError;
pub use openapi::document;
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

/// Who may call a group of routes. The one place that says so: the router
/// guards each group with it, and the OpenAPI document derives each
/// operation's security from it.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone: probes, metrics, metadata and the API description.
    Open,
    /// Decision callers: anyone, unless `auth.decisions` is `token`, when
    /// they need the `decision` role.
    Decisions,
    /// A token with one of these roles.
    Roles(&'static [Role]),
}

/// A group of routes and who may call it. Routes are registered only
/// through utoipa-axum's `routes!`, which takes each route's path and
/// methods from its handler's `#[utoipa::path]`, so a route cannot be
/// served without being documented.
type Group = (Access, OpenApiRouter<Arc<AppState>>);

/// Builds the router over shared state, with `max_body` as the body size
/// limit: every route on one listener.
pub fn router(state: Arc<AppState>, max_body: usize) -> Router {
    let routes = guarded(&state, public_groups().into_iter().chain(admin_groups()));
    finish(routes, state, max_body)
}

/// Builds the public and admin routers separately, for `listen.admin_bind`.
pub fn routers(state: Arc<AppState>, max_body: usize) -> Routers {
    Routers {
        public: finish(guarded(&state, public_groups()), Arc::clone(&state), max_body),
        admin: finish(guarded(&state, admin_groups()), state, max_body),
    }
}

fn public_groups() -> [Group; 2] {
    let open = OpenApiRouter::new()
        .routes(routes!(authzen::configuration))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::document_json));
    let decisions = OpenApiRouter::new()
        .routes(routes!(decisions::is_authorized))
        .routes(routes!(decisions::is_authorized_batch))
        .routes(routes!(plan::plan))
        .routes(routes!(authzen::evaluation))
        .routes(routes!(authzen::evaluations))
        .routes(routes!(search::subject))
        .routes(routes!(search::resource))
        .routes(routes!(search::action))
        .routes(ext_authz::routes());
    [(Access::Open, open), (Access::Decisions, decisions)]
}

fn admin_groups() -> [Group; 5] {
    let policy_admin = OpenApiRouter::new()
        .routes(routes!(admin::get_policies, admin::policy_change::put_policies))
        .routes(routes!(admin::list_versions))
        .routes(routes!(admin::policy_change::rollback))
        .routes(routes!(admin::list_entity_revisions))
        .routes(routes!(admin::get_entity))
        .routes(routes!(admin::get_schema, admin::policy_change::put_schema))
        .routes(routes!(
            admin::get_entities,
            admin::put_entities,
            admin::patch_entities,
            admin::delete_entities
        ))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::reload));
    let consent_writer =
        OpenApiRouter::new().routes(routes!(consents::create)).routes(routes!(consents::supersede));
    let consent_reader =
        OpenApiRouter::new().routes(routes!(consents::get)).routes(routes!(consents::for_patient));
    let access_log =
        OpenApiRouter::new().routes(routes!(audit::access_log)).routes(routes!(search::access_overview));
    let auditor = OpenApiRouter::new()
        .routes(routes!(audit::events))
        .routes(routes!(audit::changes))
        .routes(routes!(audit::head));
    [
        (Access::Roles(POLICY_ADMIN), policy_admin),
        (Access::Roles(CONSENT_WRITER), consent_writer),
        (Access::Roles(CONSENT_READER), consent_reader),
        (Access::Roles(ACCESS_LOG_READER), access_log),
        (Access::Roles(AUDITOR), auditor),
    ]
}

/// The groups' routes, each group behind the guard its access needs.
fn guarded(state: &Arc<AppState>, groups: impl IntoIterator<Item = Group>) -> Router<Arc<AppState>> {
    groups.into_iter().fold(Router::new(), |router, (access, group)| {
        let routes = Router::from(group);
        let routes =
            match access {
                Access::Open => routes,
                Access::Decisions => routes
                    .route_layer(middleware::from_fn_with_state(Arc::clone(state), require_decision_token)),
                Access::Roles(roles) => routes
                    .route_layer(middleware::from_fn_with_state((Arc::clone(state), roles), require_role)),
            };
        router.merge(routes)
    })
}

/// Adds the error fallbacks and the body limit, request id and observing
/// (metrics and trace span) layers.
fn finish(routes: Router<Arc<AppState>>, state: Arc<AppState>, max_body: usize) -> Router {
    let request_id = axum::http::HeaderName::from_static("x-request-id");
    routes
        .merge(openapi::page())
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

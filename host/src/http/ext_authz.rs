//! `/ext_authz/*`: Envoy's external authorization HTTP service.
//!
//! Envoy forwards the method, path (after its `path_prefix`, here
//! `/ext_authz`), query and allowed headers of each proxied request; this
//! module only reads them from the HTTP request and writes the answer, and
//! [`crate::ext_authz::decide`] maps and decides, as it does for the gRPC
//! service. Envoy lets the request through on 200 and refuses it on
//! anything else, so every Deny, including a request no mapper recognised
//! or a mapper that failed, is a 403: the proxy then fails closed whatever
//! its own settings.
//!
//! The body of a 403 reaches the end client, so it carries only the
//! decision and its id; the reason is for operators, by decision id. A
//! proxied bearer token the identity provider's keys refuse is a 401 naming
//! why (see [`crate::ext_authz::decide`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use utoipa::openapi::path::{ParameterIn, Paths};
use utoipa_axum::router::UtoipaMethodRouter;
use utoipa_axum::routes;

use super::AppError;
use crate::ext_authz::{self as shared, ProxiedRequest};
use crate::pipeline::Decided;
use crate::state::AppState;

/// The prefix Envoy is configured to put before the proxied path.
pub const PREFIX: &str = "/ext_authz";

/// The verdict Envoy gets in the body; the reason is for operators, by id.
#[derive(utoipa::ToSchema)]
#[schema(as = ExtAuthzAnswer)]
#[expect(dead_code, reason = "schema only: `crate::ext_authz::answer_body` writes this body")]
struct AnswerSchema {
    /// `Allow` or `Deny`.
    decision: String,
    /// The decision's id in the decision log.
    decision_id: uuid::Uuid,
}

/// Envoy's HTTP external authorization check of a proxied request.
///
/// Any method, on `/ext_authz` and every path under it: the method, the
/// path after the prefix, the query and the allowed headers are the
/// proxied request's, which the configured mapper plugins turn into a
/// decision. Obligations and the verdict come back as `x-consentry-*`
/// headers.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/ext_authz/{*path}",
    tag = "ext_authz",
    params(("path" = String, Path, description = "the proxied request's path, after `/ext_authz`")),
    responses(
        (status = 200, description = "allowed: Envoy lets the proxied request through", body = AnswerSchema,
         headers(
             ("x-consentry-decision" = String, description = "`allow`"),
             ("x-consentry-decision-id" = String, description = "the decision's id"),
             ("x-consentry-outcome" = String, description = "the outcome, such as `allow`"),
             ("x-consentry-obligations" = String, description = "the obligations as JSON, when there are any"),
         )),
        (status = 401, description = "the proxied request's bearer token is refused by the identity provider's keys, or the check request lacks a decision token", body = super::error::ErrorBody),
        (status = 403, description = "denied, including a request no mapper recognised or a mapper that failed: Envoy refuses the proxied request", body = AnswerSchema,
         headers(
             ("x-consentry-decision" = String, description = "`deny`"),
             ("x-consentry-decision-id" = String, description = "the decision's id"),
             ("x-consentry-outcome" = String, description = "why, such as `not_permitted`"),
         )),
    )
)]
pub async fn check(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match shared::decide(&state, proxied_request(&method, &uri, &headers)).await {
        Ok(decided) => answer(&decided),
        Err(refused) => AppError::from(refused).into_response(),
    }
}

/// [`check`] on any method, under [`PREFIX`] and on it: documented with the
/// methods an HTTP request can have (`routes!` would route only those), and
/// the bare prefix documented without the path parameter.
pub(super) fn routes() -> UtoipaMethodRouter<Arc<AppState>> {
    let (schemas, documented, _listed_methods) = routes!(check);
    let mut paths = Paths::new();
    for (path, item) in documented.paths {
        let mut bare = item.clone();
        for operation in super::openapi::operations(&mut bare) {
            if let Some(parameters) = &mut operation.parameters {
                parameters.retain(|p| !matches!(p.parameter_in, ParameterIn::Path));
            }
        }
        paths.paths.insert(path, item);
        paths.paths.insert(PREFIX.to_owned(), bare);
    }
    (schemas, paths, any(check))
}

/// The proxied request: the path under [`PREFIX`]; header values that are
/// not visible ASCII are left out.
fn proxied_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> ProxiedRequest {
    let path = uri.path().strip_prefix(PREFIX).filter(|p| !p.is_empty()).unwrap_or("/");
    ProxiedRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
            .collect(),
    }
}

fn answer(decided: &Decided) -> Response {
    let allowed = decided.decision.is_allowed();
    if !allowed {
        tracing::info!(decision_id = %decided.id, outcome = ?decided.decision.outcome, "ext_authz denied");
    }
    let status = if allowed { StatusCode::OK } else { StatusCode::FORBIDDEN };
    let mut response = (status, Json(shared::answer_body(decided))).into_response();
    let headers = response.headers_mut();
    for (name, value) in shared::answer_headers(decided) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxied_path_is_the_one_under_the_prefix() {
        let uri: Uri = "/ext_authz/fhir/Observation?patient=p-1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-principal", HeaderValue::from_static("Practitioner/dr-weber"));
        let proxied = proxied_request(&Method::GET, &uri, &headers);
        assert_eq!(proxied.path, "/fhir/Observation");
        assert_eq!(proxied.query, "patient=p-1");
        assert_eq!(proxied.headers, [("x-principal".to_owned(), "Practitioner/dr-weber".to_owned())]);
        let bare: Uri = "/ext_authz".parse().unwrap();
        assert_eq!(proxied_request(&Method::GET, &bare, &HeaderMap::new()).path, "/");
    }
}

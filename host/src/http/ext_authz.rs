//! `/ext_authz/*`: Envoy's external authorization HTTP service.
//!
//! Envoy forwards the method, path (after its `path_prefix`, here
//! `/ext_authz`), query and allowed headers of each proxied request. A
//! `map-request` plugin turns them into a Cedar request, which is decided
//! like any other, plugins and consents included. Envoy lets the request
//! through on 200 and refuses it on anything else, so every Deny, including
//! a request no mapper recognised or a mapper that failed, is a 403: the
//! proxy then fails closed whatever its own settings.
//!
//! The body of a 403 reaches the end client, so it carries only the
//! decision and its id; the reason is for operators, by decision id.
//!
//! With an identity provider configured, a JWT in the proxied request's
//! `Authorization` header is verified first: an invalid one is a 401
//! naming why, and a valid one supplies the principal and context facts
//! (see [`crate::identity::rewrite_headers`]). The `x-principal` header
//! reaches mappers only when `identity.trust_principal_header` is on.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use consentry_engine::{Decision, DecisionRequest, check_request_entities};
use serde_json::json;
use uuid::Uuid;

use super::error::AppError;
use crate::identity::{self, TokenIdentity};
use crate::plugins::PluginTrace;
use crate::plugins::bindings::consentry::plugin::types::HttpRequest;
use crate::state::AppState;

/// The prefix Envoy is configured to put before the proxied path.
pub const PREFIX: &str = "/ext_authz";

const DECISION: HeaderName = HeaderName::from_static("x-consentry-decision");
const DECISION_ID: HeaderName = HeaderName::from_static("x-consentry-decision-id");
const OUTCOME: HeaderName = HeaderName::from_static("x-consentry-outcome");
const OBLIGATIONS: HeaderName = HeaderName::from_static("x-consentry-obligations");

/// Any method on `/ext_authz/*`.
pub async fn check(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let identity = match proxied_identity(&state, &headers).await {
        Ok(identity) => identity,
        Err(error) => return error.into_response(),
    };
    let (mut http, mut with_authorization) = proxied_request(&method, &uri, &headers);
    for request in [&mut http, &mut with_authorization] {
        identity::rewrite_headers(
            &mut request.headers,
            identity.as_ref(),
            state.settings.trust_principal_header,
        );
    }
    let mut trace = PluginTrace::default();
    let facts = |request: &DecisionRequest| {
        let snapshot = state.pipeline.read();
        check_request_entities(&snapshot.store, snapshot.bundle.schema(), request, &state.settings.decisions)
    };
    let decided =
        match state.pipeline.plugins.current().map_request(&http, &with_authorization, facts, &mut trace) {
            Ok(mut request) => {
                request.now = Some(crate::clock::now());
                let applied =
                    identity.as_ref().map_or(Ok(()), |i| identity::apply_to_mapped(i, &mut request));
                match applied {
                    Err(error) => {
                        let reason = format!("the token's facts cannot be used: {} {error}", error.field());
                        state.pipeline.record_unmapped(&http.method, &http.path, reason, trace).await
                    }
                    Ok(()) => decide(&state, &http, &request, trace).await,
                }
            }
            Err(reason) => state.pipeline.record_unmapped(&http.method, &http.path, reason, trace).await,
        };
    answer(decided.id, &decided.decision)
}

/// Decides a mapped request; one the engine refuses is recorded as unmapped.
async fn decide(
    state: &AppState,
    http: &HttpRequest,
    request: &DecisionRequest,
    trace: PluginTrace,
) -> crate::pipeline::Decided {
    match state.pipeline.decide_mapped(request, trace.clone()).await {
        Ok(decided) => decided,
        Err(error) => {
            state
                .pipeline
                .record_unmapped(
                    &http.method,
                    &http.path,
                    format!("the mapped request is invalid: {error}"),
                    trace,
                )
                .await
        }
    }
}

/// The verified token of the proxied request's `Authorization: Bearer`
/// JWT; `None` without an identity provider or such a token. A token the
/// provider's keys refuse is a 401 naming why (never the token).
async fn proxied_identity(state: &AppState, headers: &HeaderMap) -> Result<Option<TokenIdentity>, AppError> {
    let Some(verifier) = state.auth.verifier() else { return Ok(None) };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(token) = authorization.and_then(identity::bearer_jwt) else { return Ok(None) };
    match verifier.verify(token).await {
        Ok(identity) => Ok(Some(identity)),
        Err(error) => {
            tracing::info!(%error, "ext_authz refused the proxied request's bearer token");
            Err(AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid bearer token in `Authorization`: {error}"),
            ))
        }
    }
}

/// The proxied request as a mapper sees it: without the `Authorization`
/// header, and with it for mappers granted `authorization-header`; never
/// with Consentry's own token (`x-consentry-authorization`). Header
/// values that are not visible ASCII are left out.
fn proxied_request(method: &Method, uri: &Uri, headers: &HeaderMap) -> (HttpRequest, HttpRequest) {
    let path = uri.path().strip_prefix(PREFIX).filter(|p| !p.is_empty()).unwrap_or("/");
    let all: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect();
    let mut with_authorization = HttpRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: all,
    };
    with_authorization.headers.retain(|(name, _)| name != super::EXT_AUTHZ_TOKEN_HEADER);
    let mut without = with_authorization.clone();
    without.headers.retain(|(name, _)| name != AUTHORIZATION.as_str());
    (without, with_authorization)
}

fn answer(decision_id: Uuid, decision: &Decision) -> Response {
    let allowed = decision.is_allowed();
    if !allowed {
        tracing::info!(%decision_id, outcome = ?decision.outcome, "ext_authz denied");
    }
    let status = if allowed { StatusCode::OK } else { StatusCode::FORBIDDEN };
    let body = Json(json!({"decision": decision.verdict(), "decision_id": decision_id}));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(DECISION, HeaderValue::from_static(if allowed { "allow" } else { "deny" }));
    if let Ok(id) = HeaderValue::from_str(&decision_id.to_string()) {
        headers.insert(DECISION_ID, id);
    }
    headers.insert(OUTCOME, HeaderValue::from_static(decision.outcome.name()));
    if allowed && !decision.obligations.is_empty() {
        let obligations = serde_json::to_string(&decision.obligations).unwrap_or_default();
        // Serialized JSON escapes control characters, but a header must also be ASCII.
        let ascii: String = obligations.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect();
        if let Ok(value) = HeaderValue::from_str(&ascii) {
            headers.insert(OBLIGATIONS, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_reaches_only_mappers_granted_it() {
        let uri: Uri = "/ext_authz/fhir/Observation?patient=p-1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer secret"));
        headers.insert("x-principal", HeaderValue::from_static("Practitioner/dr-weber"));
        headers.insert(crate::http::EXT_AUTHZ_TOKEN_HEADER, HeaderValue::from_static("Bearer ours"));
        let (without, with) = proxied_request(&Method::GET, &uri, &headers);
        assert_eq!(without.path, "/fhir/Observation");
        assert_eq!(without.query, "patient=p-1");
        assert_eq!(without.headers, [("x-principal".to_owned(), "Practitioner/dr-weber".to_owned())]);
        assert!(with.headers.contains(&("authorization".to_owned(), "Bearer secret".to_owned())));
        assert!(with.headers.iter().all(|(name, _)| name != crate::http::EXT_AUTHZ_TOKEN_HEADER));
    }
}

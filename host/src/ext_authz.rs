//! Envoy external authorization, whatever the transport: the mapping of a
//! proxied request to a Cedar request and its decision, shared by the HTTP
//! service (`/ext_authz/*`, [`crate::http`]) and the gRPC one
//! (`envoy.service.auth.v3.Authorization/Check`, [`crate::grpc`]).
//!
//! Both transports only translate: each turns what Envoy sent into a
//! [`ProxiedRequest`], calls [`decide`], and turns the [`Decided`] into its
//! own answer with the headers of [`answer_headers`]. So a mapper, a grant,
//! a consent or a fail-closed rule can never differ between them, and
//! what reads more from the proxied request (a bearer token naming the
//! principal) is in [`decide`], once, for both.

use consentry_engine::{Decision, DecisionRequest, check_request_entities};
use serde_json::json;

use crate::identity::{self, TokenError, TokenIdentity};
use crate::pipeline::Decided;
use crate::plugins::PluginTrace;
use crate::plugins::bindings::consentry::plugin::types::HttpRequest;
use crate::state::AppState;

/// `allow` or `deny`.
pub const DECISION_HEADER: &str = "x-consentry-decision";
/// The decision id, by which operators find the reason in the decision log.
pub const DECISION_ID_HEADER: &str = "x-consentry-decision-id";
/// The decision's outcome (`permitted`, `not_permitted`, `failed_closed`, …).
pub const OUTCOME_HEADER: &str = "x-consentry-outcome";
/// The obligations of an Allow, as JSON.
pub const OBLIGATIONS_HEADER: &str = "x-consentry-obligations";

/// The header the end client's bearer token travels in; a mapper sees it
/// only when granted `authorization-header`.
const AUTHORIZATION: &str = "authorization";

/// The proxied request as Envoy described it, whichever way it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// The HTTP method.
    pub method: String,
    /// The path, without the query; `/` when empty.
    pub path: String,
    /// The query, without the `?`.
    pub query: String,
    /// The headers, names lower-case, values visible ASCII.
    pub headers: Vec<(String, String)>,
}

/// The proxied request's bearer token was refused: the one failure that
/// is not a recorded Deny, since no request was made yet to decide. Each
/// transport answers it as a 401 naming why, never the token.
#[derive(Debug, thiserror::Error)]
#[error("invalid bearer token in `Authorization`: {0}")]
pub struct RefusedToken(#[from] TokenError);

/// Maps `request` with the `map-request` plugins and decides the result
/// like any other request, plugins and consents included. Everything that
/// goes wrong is a recorded Deny: no mapper recognised the request, the
/// mapper failed, or what it made is not a valid request.
///
/// With an identity provider configured, a JWT in the proxied request's
/// `Authorization` header is verified first: an invalid one is refused
/// (401, naming why, never the token), and a valid one supplies the
/// principal and the context facts of the mapped request. The
/// `x-principal` header reaches mappers only when
/// `identity.trust_principal_header` is on, and never beside a token.
pub async fn decide(state: &AppState, request: ProxiedRequest) -> Result<Decided, RefusedToken> {
    let identity = proxied_identity(state, &request.headers).await?;
    let (mut http, mut with_authorization) = mapper_views(request);
    for view in [&mut http, &mut with_authorization] {
        identity::rewrite_headers(
            &mut view.headers,
            identity.as_ref(),
            state.settings.trust_principal_header,
        );
    }
    let mut trace = PluginTrace::default();
    let facts = |request: &DecisionRequest| {
        let snapshot = state.pipeline.read();
        check_request_entities(&snapshot.store, snapshot.bundle.schema(), request, &state.settings.decisions)
    };
    let mapped = state.pipeline.plugins.current().map_request(&http, &with_authorization, facts, &mut trace);
    let mut request = match mapped {
        Ok(request) => request,
        Err(reason) => {
            return Ok(state.pipeline.record_unmapped(&http.method, &http.path, reason, trace).await);
        }
    };
    request.now = Some(crate::clock::now());
    if let Some(Err(error)) = identity.as_ref().map(|i| identity::apply_to_mapped(i, &mut request)) {
        let reason = format!("the token's facts cannot be used: {} {error}", error.field());
        return Ok(state.pipeline.record_unmapped(&http.method, &http.path, reason, trace).await);
    }
    Ok(match state.pipeline.decide_mapped(&request, trace.clone()).await {
        Ok(decided) => decided,
        Err(error) => {
            let reason = format!("the mapped request is invalid: {error}");
            state.pipeline.record_unmapped(&http.method, &http.path, reason, trace).await
        }
    })
}

/// The verified token of the proxied request's `Authorization: Bearer`
/// JWT; `None` without an identity provider or such a token.
async fn proxied_identity(
    state: &AppState,
    headers: &[(String, String)],
) -> Result<Option<TokenIdentity>, RefusedToken> {
    let Some(verifier) = state.auth.verifier() else { return Ok(None) };
    let authorization =
        headers.iter().find(|(name, _)| name == AUTHORIZATION).map(|(_, value)| value.as_str());
    let Some(token) = authorization.and_then(identity::bearer_jwt) else { return Ok(None) };
    match verifier.verify(token).await {
        Ok(identity) => Ok(Some(identity)),
        Err(error) => {
            tracing::info!(%error, "ext_authz refused the proxied request's bearer token");
            Err(RefusedToken(error))
        }
    }
}

/// The proxied request as a mapper sees it: without the `Authorization`
/// header, and with it for mappers granted `authorization-header`; never
/// with Consentry's own token (`x-consentry-authorization`).
fn mapper_views(request: ProxiedRequest) -> (HttpRequest, HttpRequest) {
    let ProxiedRequest { method, path, query, mut headers } = request;
    headers.retain(|(name, _)| name != crate::http::EXT_AUTHZ_TOKEN_HEADER);
    let with_authorization = HttpRequest { method, path, query, headers };
    let mut without = with_authorization.clone();
    without.headers.retain(|(name, _)| name != AUTHORIZATION);
    (without, with_authorization)
}

/// The headers that carry a decision to Envoy, by name: the verdict, its
/// id and outcome and, on an Allow with obligations, the obligations as
/// JSON in ASCII (a header value must be).
pub fn answer_headers(decided: &Decided) -> Vec<(&'static str, String)> {
    let decision = &decided.decision;
    let allowed = decision.is_allowed();
    let mut headers = vec![
        (DECISION_HEADER, if allowed { "allow" } else { "deny" }.to_owned()),
        (DECISION_ID_HEADER, decided.id.to_string()),
        (OUTCOME_HEADER, decision.outcome.name().to_owned()),
    ];
    if let Some(obligations) = obligations(decision) {
        let ascii = serde_json::to_string(&obligations).unwrap_or_default();
        // Serialized JSON escapes control characters, but not what is beyond ASCII.
        headers
            .push((OBLIGATIONS_HEADER, ascii.chars().map(|c| if c.is_ascii() { c } else { '?' }).collect()));
    }
    headers
}

/// The obligations Envoy is told of: an Allow's, if it has any. A Deny's
/// are none of the upstream's business.
pub fn obligations(decision: &Decision) -> Option<serde_json::Value> {
    if decision.is_allowed() && !decision.obligations.is_empty() {
        serde_json::to_value(&decision.obligations).ok()
    } else {
        None
    }
}

/// The body of the answer, which on a denial reaches the end client: only
/// the decision and its id, since the reason is for operators.
pub fn answer_body(decided: &Decided) -> serde_json::Value {
    json!({"decision": decided.decision.verdict(), "decision_id": decided.id})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorization_header_reaches_only_mappers_granted_it() {
        let request = ProxiedRequest {
            method: "GET".to_owned(),
            path: "/fhir/Observation".to_owned(),
            query: "patient=p-1".to_owned(),
            headers: vec![
                ("authorization".to_owned(), "Bearer secret".to_owned()),
                ("x-principal".to_owned(), "Practitioner/dr-weber".to_owned()),
                (crate::http::EXT_AUTHZ_TOKEN_HEADER.to_owned(), "Bearer ours".to_owned()),
            ],
        };
        let (without, with) = mapper_views(request);
        assert_eq!(without.path, "/fhir/Observation");
        assert_eq!(without.query, "patient=p-1");
        assert_eq!(without.headers, [("x-principal".to_owned(), "Practitioner/dr-weber".to_owned())]);
        assert!(with.headers.contains(&("authorization".to_owned(), "Bearer secret".to_owned())));
        assert!(with.headers.iter().all(|(name, _)| name != crate::http::EXT_AUTHZ_TOKEN_HEADER));
    }
}

//! One layer for what every request reports about itself: its span, with
//! the caller's W3C `traceparent` as its parent, and the HTTP and decision
//! metrics.
//!
//! A layer over the whole router, rather than code in each handler, so a
//! new route is measured and traced without anyone remembering to. The
//! route is the matched template (`/v1/patients/{id}/consents`), never the
//! path: a path holds patient ids, which must stay out of labels (they
//! would grow the exporter without bound) and out of spans and logs
//! (identifiers of a route, not of people, are what operators need there).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::ext_authz;
use crate::metrics::{self, Api};

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// Runs the request in its span, under its API when it asks for
/// decisions, and counts it.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The template is shared (an `Arc`), so the request keeps no copy of its own.
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let method = method_label(request.method());
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    // With traces off the span is disabled, and the caller's trace is not
    // read at all.
    if !span.is_disabled() {
        let caller = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // Fails only without a trace layer to take the parent, where there
        // is nothing to link.
        let _ = span.set_parent(caller);
    }
    let api = api_of(route);
    let response = match api {
        Some(api) => metrics::with_api(api, next.run(request)).instrument(span.clone()).await,
        None => next.run(request).instrument(span.clone()).await,
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    // The route and method are the event's own fields: log lines take no
    // spans (see `telemetry`).
    tracing::debug!(
        parent: &span,
        http.route = %route,
        http.request.method = method,
        status,
        elapsed_ms = elapsed.as_millis(),
        "answered"
    );
    metrics::http_request(route, method, status, elapsed);
    if let Some(api) = api {
        metrics::decision_duration(api, elapsed);
    }
    response
}

/// The API a route template asks for decisions through, if it does.
fn api_of(route: &str) -> Option<Api> {
    Some(match route {
        "/v1/is_authorized" => Api::IsAuthorized,
        "/v1/is_authorized/batch" => Api::Batch,
        "/access/v1/evaluation" => Api::Evaluation,
        "/access/v1/evaluations" => Api::Evaluations,
        "/access/v1/search/subject" | "/access/v1/search/resource" | "/access/v1/search/action" => {
            Api::Search
        }
        "/v1/patients/{id}/access-overview" => Api::AccessOverview,
        "/v1/plan" => Api::Plan,
        _ if route.starts_with(ext_authz::PREFIX) => Api::ExtAuthz,
        _ => return None,
    })
}

/// The method as a label: `ext_authz` answers any method, and a label per
/// made-up method would be unbounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_decision_route_has_its_api_and_no_other_route_has_one() {
        assert_eq!(api_of("/v1/is_authorized"), Some(Api::IsAuthorized));
        assert_eq!(api_of("/access/v1/search/action"), Some(Api::Search));
        assert_eq!(api_of(&format!("{}/{{*path}}", ext_authz::PREFIX)), Some(Api::ExtAuthz));
        assert_eq!(api_of("/v1/consents/{id}"), None);
        assert_eq!(api_of(UNMATCHED), None);
    }

    #[test]
    fn a_made_up_method_is_one_label() {
        let made_up = Method::from_bytes(b"BREW").unwrap_or(Method::TRACE);
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(method_label(&Method::POST), "POST");
    }
}

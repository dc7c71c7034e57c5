//! `CheckRequest` to [`ProxiedRequest`], and a decision to `CheckResponse`.
//!
//! Envoy sends every header of the proxied request (the HTTP service gets
//! only the allowed ones), with HTTP/2 pseudo-headers among them and the
//! query inside `path`. The mapper must see what the HTTP service's mapper
//! sees, so pseudo-headers are dropped, `host` comes from its own field,
//! and values that could not be HTTP header values are left out, as
//! [`axum::http::HeaderValue::to_str`] leaves them out there.

use std::collections::HashMap;

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderName, HeaderValue as HttpHeaderValue, Method, StatusCode};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{ListValue, NullValue, Struct, Value};
use envoy_types::pb::google::rpc::{Code, Status};

use crate::ext_authz::{self as shared, OBLIGATIONS_HEADER, ProxiedRequest};
use crate::http::AppError;
use crate::pipeline::Decided;

/// A `CheckRequest` that does not describe an HTTP request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCheck {
    /// No HTTP attributes: a check from Envoy's network (TCP) filter, which
    /// a mapper of HTTP requests cannot decide.
    #[error("`attributes.request.http` is missing: only HTTP requests are authorized")]
    NotHttp,
    /// The method is not an HTTP method.
    #[error("`attributes.request.http.method` is not an HTTP method")]
    Method,
    /// The path is not an origin-form request target.
    #[error("`attributes.request.http.path` is not a request path and query")]
    Path,
}

impl InvalidCheck {
    fn field(&self) -> &'static str {
        match self {
            Self::NotHttp => "attributes.request.http",
            Self::Method => "attributes.request.http.method",
            Self::Path => "attributes.request.http.path",
        }
    }
}

impl From<InvalidCheck> for AppError {
    fn from(invalid: InvalidCheck) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", invalid.to_string()).with_field(invalid.field())
    }
}

/// The proxied request a check describes.
pub fn proxied_request(check: &CheckRequest) -> Result<ProxiedRequest, InvalidCheck> {
    let http = check
        .attributes
        .as_ref()
        .and_then(|attributes| attributes.request.as_ref())
        .and_then(|request| request.http.as_ref())
        .ok_or(InvalidCheck::NotHttp)?;
    let method = Method::from_bytes(http.method.as_bytes()).map_err(|_| InvalidCheck::Method)?;
    let target = if http.path.is_empty() { "/" } else { http.path.as_str() };
    let target = target.parse::<PathAndQuery>().map_err(|_| InvalidCheck::Path)?;
    let path = if target.path().is_empty() { "/" } else { target.path() };
    Ok(ProxiedRequest {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: target.query().unwrap_or_default().to_owned(),
        headers: headers(http),
    })
}

/// The headers a mapper sees, sorted by name so that a mapper reading the
/// first of several sees the same one each time.
fn headers(http: &HttpRequest) -> Vec<(String, String)> {
    // With `encode_raw_headers`, Envoy sends `header_map` in place of `headers`.
    let raw = http.header_map.as_ref().map(|map| {
        map.headers.iter().map(|h| {
            let value = if h.raw_value.is_empty() { h.value.as_bytes() } else { h.raw_value.as_slice() };
            (h.key.as_str(), value)
        })
    });
    let pairs: Vec<(&str, &[u8])> = match raw {
        Some(raw) => raw.collect(),
        None => http.headers.iter().map(|(name, value)| (name.as_str(), value.as_bytes())).collect(),
    };
    let mut headers: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(name, _)| !name.starts_with(':'))
        .filter_map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = HttpHeaderValue::from_bytes(value).ok()?;
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    if !http.host.is_empty()
        && !headers.iter().any(|(name, _)| name == "host")
        && let Ok(host) = HttpHeaderValue::from_str(&http.host)
        && let Ok(host) = host.to_str()
    {
        headers.push(("host".to_owned(), host.to_owned()));
    }
    headers.sort();
    headers
}

/// The answer to a decided check: `OK` with the decision's headers added
/// to the upstream request, or `PERMISSION_DENIED` with a 403 carrying them
/// to the client; either way the decision in `dynamic_metadata`.
pub fn answer(decided: &Decided) -> CheckResponse {
    let allowed = decided.decision.is_allowed();
    let headers: Vec<HeaderValueOption> =
        shared::answer_headers(decided).into_iter().map(|(name, value)| header(name, value)).collect();
    let http_response = if allowed {
        // A client could send its own obligations header; without
        // obligations of ours, the upstream must not see it.
        let has_obligations =
            headers.iter().any(|h| h.header.as_ref().is_some_and(|h| h.key == OBLIGATIONS_HEADER));
        let headers_to_remove =
            if has_obligations { Vec::new() } else { vec![OBLIGATIONS_HEADER.to_owned()] };
        HttpResponse::OkResponse(OkHttpResponse { headers, headers_to_remove, ..OkHttpResponse::default() })
    } else {
        HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: i32::from(StatusCode::FORBIDDEN.as_u16()) }),
            headers: with_json(headers),
            body: shared::answer_body(decided).to_string(),
        })
    };
    let code = if allowed { Code::Ok } else { Code::PermissionDenied };
    CheckResponse {
        status: Some(Status { code: code as i32, message: String::new(), details: Vec::new() }),
        http_response: Some(http_response),
        dynamic_metadata: Some(metadata(decided)),
    }
}

/// A denial that is not a decision: the caller lacks the decision token,
/// or the check is invalid. The end client gets the error in the house
/// format, as the HTTP service's client does.
pub fn refused(error: &AppError) -> CheckResponse {
    let code = match error.status() {
        StatusCode::UNAUTHORIZED => Code::Unauthenticated,
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        _ => Code::PermissionDenied,
    };
    let body = error.body();
    let message = body.get("message").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
    CheckResponse {
        status: Some(Status { code: code as i32, message, details: Vec::new() }),
        http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
            status: Some(HttpStatus { code: i32::from(error.status().as_u16()) }),
            headers: with_json(Vec::new()),
            body: body.to_string(),
        })),
        dynamic_metadata: None,
    }
}

fn with_json(mut headers: Vec<HeaderValueOption>) -> Vec<HeaderValueOption> {
    headers.push(header("content-type", "application/json".to_owned()));
    headers
}

/// A header that replaces any of the same name, so a client cannot send
/// its own decision along.
fn header(name: &str, value: String) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: name.to_owned(), value, raw_value: Vec::new() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..HeaderValueOption::default()
    }
}

/// The decision as Envoy's dynamic metadata (under the filter's name,
/// `envoy.filters.http.ext_authz`), for access logs and later filters:
/// `decision`, `decision_id`, `outcome` and an Allow's `obligations`.
fn metadata(decided: &Decided) -> Struct {
    let allowed = decided.decision.is_allowed();
    let mut fields = HashMap::from([
        ("decision".to_owned(), string(if allowed { "allow" } else { "deny" })),
        ("decision_id".to_owned(), string(&decided.id.to_string())),
        ("outcome".to_owned(), string(decided.decision.outcome.name())),
    ]);
    if let Some(obligations) = shared::obligations(&decided.decision) {
        fields.insert("obligations".to_owned(), value(obligations));
    }
    Struct { fields }
}

fn string(text: &str) -> Value {
    Value { kind: Some(Kind::StringValue(text.to_owned())) }
}

/// JSON as a protobuf `Value`, which is JSON's data model.
fn value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(NullValue::NullValue as i32),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => {
            n.as_f64().map_or(Kind::StringValue(n.to_string()), Kind::NumberValue)
        }
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => {
            Kind::ListValue(ListValue { values: items.into_iter().map(value).collect() })
        }
        serde_json::Value::Object(fields) => {
            Kind::StructValue(Struct { fields: fields.into_iter().map(|(k, v)| (k, value(v))).collect() })
        }
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests;

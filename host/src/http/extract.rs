//! Body extractors that answer in our error format.
//!
//! axum's own `Json` answers bad bodies in plain text and without the path
//! of the offending field; callers of a PDP need to know exactly which field
//! to fix, so these extractors report it.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::AppError;
use crate::connections::io::BodyTimedOut;

/// A JSON body, deserialized with the path of any bad field in the error.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(content_type(&request)) {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = body_bytes(request, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserializes JSON, naming the path of the first bad field, as a request
/// file is read ([`crate::request_body::from_json`]); a body that fails as
/// a whole names no field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    crate::request_body::from_json(bytes).map_err(|error| {
        if error.field == "." || error.field == "?" {
            let message = format!("invalid JSON body: {}", error.message);
            AppError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        } else {
            AppError::bad_field(error.field, error.message)
        }
    })
}

/// A body with its content type, for endpoints that take several formats.
pub struct TypedBody {
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The raw body.
    pub bytes: Bytes,
}

impl TypedBody {
    /// Whether the body declares JSON.
    pub fn is_json(&self) -> bool {
        is_json(self.content_type.as_deref())
    }

    /// Whether the body declares plain text.
    pub fn is_text(&self) -> bool {
        self.content_type.as_deref().is_some_and(|c| media_type(c) == "text/plain")
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, AppError> {
        std::str::from_utf8(&self.bytes)
            .map_err(|_| AppError::new(StatusCode::BAD_REQUEST, "invalid_request", "body is not valid UTF-8"))
    }
}

impl<S: Send + Sync> FromRequest<S> for TypedBody {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = content_type(&request).map(str::to_owned);
        let bytes = body_bytes(request, state).await?;
        Ok(Self { content_type, bytes })
    }
}

/// A 415 naming what the endpoint accepts.
pub fn unsupported(accepted: &str) -> AppError {
    AppError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("expected `Content-Type: {accepted}`"),
    )
}

fn content_type(request: &Request) -> Option<&str> {
    request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| {
        let mime = media_type(c);
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
    })
}

/// The media type without parameters, lowercased: media types are case-insensitive (RFC 9110 §8.3.1).
fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

async fn body_bytes<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, AppError> {
    Bytes::from_request(request, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::new(status, "payload_too_large", "request body exceeds the size limit (--max-body)")
        } else if let Some(timed_out) = body_timed_out(&rejection) {
            AppError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", timed_out.to_string())
        } else {
            AppError::new(status, "invalid_request", rejection.body_text())
        }
    })
}

/// The listener's body deadline, if that is why the body could not be read.
fn body_timed_out<'a>(rejection: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTimedOut> {
    let mut cause = Some(rejection);
    while let Some(error) = cause {
        if let Some(timed_out) = error.downcast_ref::<BodyTimedOut>() {
            return Some(timed_out);
        }
        cause = error.source();
    }
    None
}

/// Query parameters, with a bad one named in our error format.
pub struct QueryParams<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(query)) => Ok(Self(query)),
            Err(rejection) => {
                let text = rejection.body_text();
                let field = text.split('`').nth(1).unwrap_or("query").to_owned();
                Err(AppError::bad_field(field, text))
            }
        }
    }
}

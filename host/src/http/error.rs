//! The one error format every endpoint answers with:
//! `{"error": "<code>", "message": "…", "field"?: "…", "problems"?: […]}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use consentry_engine::{LoadError, Problem, RequestError, RequestErrorKind};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthFailure;
use crate::identity::{FactsError, TokenError};
use crate::store::StoreError;

/// An error answer: a status, a stable code and a message naming the problem.
#[derive(Debug, Clone)]
pub struct AppError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    cause: Option<&'static str>,
    problems: Vec<Problem>,
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(super) struct ErrorBody<'a> {
    /// A stable code, such as `invalid_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `schema_mismatch` or `store_unavailable`.
    error: &'a str,
    /// What is wrong, naming the field or header; never echoes a token.
    message: &'a str,
    /// The request field, query parameter or header at fault, as a path
    /// such as `requests[3].resource.id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    field: Option<&'a str>,
    /// For a 503: a stable code for what failed underneath, such as
    /// `store_unreachable` or `audit_files_failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    cause: Option<&'a str>,
    /// Every problem found in refused policies, a schema or entities.
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    #[schema(value_type = Vec<super::openapi::wire::ProblemSchema>, required = false)]
    problems: &'a [Problem],
}

impl AppError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, cause: None, problems: Vec::new() }
    }

    /// A 503 for a store that failed. The answer names the failure by its
    /// code; the store's own words, which describe the database, go to the
    /// log only.
    pub fn store_unavailable(error: StoreError) -> Self {
        tracing::error!(%error, cause = error.code(), "the store failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("the store failed (`{}`); the server's log has the details", error.code()),
        )
        .with_cause(error.code())
    }

    /// The same error, naming what failed underneath by a stable code.
    #[must_use]
    pub fn with_cause(self, cause: &'static str) -> Self {
        Self { cause: Some(cause), ..self }
    }

    /// A 400 about one field of the body.
    pub fn bad_field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", "")
        }
    }

    /// The same error, listing `problems`.
    #[must_use]
    pub fn with_problems(self, problems: Vec<Problem>) -> Self {
        Self { problems, ..self }
    }

    /// The same error, naming the field it is about.
    pub fn with_field(self, field: impl Into<String>) -> Self {
        Self { field: Some(field.into()), ..self }
    }

    /// A 422 for policies, a schema or entities that were refused; 413 for
    /// text over a size limit.
    pub fn refused(error: &LoadError) -> Self {
        let (status, code) = match error {
            LoadError::Schema(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema"),
            LoadError::Policies(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_policies"),
            LoadError::Entities(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities"),
            LoadError::Limit(exceeded) if exceeded.limit.is_size() => {
                (StatusCode::PAYLOAD_TOO_LARGE, "limit_exceeded")
            }
            LoadError::Limit(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        };
        Self { problems: error.problems(), ..Self::new(status, code, error.to_string()) }
    }

    /// 404 for a route that does not exist.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    /// The same error about a field nested under `prefix`, such as `requests[3]`.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        if let Some(field) = self.field.take() {
            let nested = format!("{prefix}.{field}");
            if let Some(rest) = self.message.strip_prefix(field.as_str()) {
                self.message = format!("{nested}{rest}");
            }
            self.field = Some(nested);
        } else {
            self.message = format!("{prefix}: {}", self.message);
        }
        self
    }

    /// The same error about item `index` of a batch.
    #[must_use]
    pub fn within_batch(self, index: usize) -> Self {
        self.within(&format!("requests[{index}]"))
    }

    /// The error body as JSON, for embedding in a larger answer.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!(ErrorBody {
            error: self.code,
            message: &self.message,
            field: self.field.as_deref(),
            cause: self.cause,
            problems: &self.problems,
        })
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<RequestError> for AppError {
    fn from(error: RequestError) -> Self {
        let (status, code) = match error.kind {
            RequestErrorKind::Malformed => (StatusCode::BAD_REQUEST, "invalid_request"),
            RequestErrorKind::SchemaMismatch => (StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch"),
            RequestErrorKind::StoredFactConflict => {
                (StatusCode::UNPROCESSABLE_ENTITY, "stored_fact_conflict")
            }
            RequestErrorKind::OverLimit => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
        };
        Self { field: Some(error.field.clone()), ..Self::new(status, code, error.to_string()) }
    }
}

impl From<AuthFailure> for AppError {
    fn from(failure: AuthFailure) -> Self {
        let message = match failure {
            AuthFailure::NotConfigured => {
                "this route is closed: no token is configured (set CONSENTRY_ADMIN_TOKEN or list tokens under `[auth]`)"
                    .to_owned()
            }
            AuthFailure::Missing => "missing bearer token in `Authorization`".to_owned(),
            AuthFailure::Invalid => "invalid bearer token".to_owned(),
            AuthFailure::Token(error) => format!("invalid bearer token: {error}"),
            AuthFailure::Forbidden { needs } => {
                let names: Vec<String> = needs.iter().map(|role| format!("`{role}`")).collect();
                return Self::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this route needs a token with the role {}", names.join(" or ")),
                );
            }
        };
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<TokenError> for AppError {
    /// A decision request's own token that is refused: 401, as on the
    /// protected routes, naming the field it came in.
    fn from(error: TokenError) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", format!("invalid `token`: {error}"))
            .with_field("token")
    }
}

impl From<crate::ext_authz::RefusedToken> for AppError {
    fn from(refused: crate::ext_authz::RefusedToken) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", refused.to_string())
    }
}

impl From<FactsError> for AppError {
    fn from(error: FactsError) -> Self {
        Self::bad_field(error.field().to_owned(), error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

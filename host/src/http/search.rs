//! The AuthZEN 1.0 Search APIs (§8): `POST /access/v1/search/subject`,
//! `/search/resource` and `/search/action`.
//!
//! The bodies, the paging and the candidates are [`crate::search`]'s; here
//! a body's access token is verified, as the decision endpoints verify
//! theirs, the body becomes a query against the server's store, and faults become
//! answers: a caller's mistake a 4xx naming the field, and a search that
//! could not be made at all a 503, never an empty list.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::audit::may_read_access_log;
use super::decisions::token_identity;
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::auth::Caller;
use crate::pipeline::SearchError;
use crate::search::body::{ActionSearchBody, ResourceSearchBody, SearchBody, SubjectSearchBody};
use crate::search::overview::{self, AccessOverview};
use crate::search::{Listing, SearchPage};
use crate::state::AppState;

/// Who may do this action to this resource? (AuthZEN Subject Search)
///
/// The subjects are what is searched for, so no caller's `token` can stand
/// for one: a body with a `token` is refused with 400 naming it.
#[utoipa::path(
    post,
    path = "/access/v1/search/subject",
    tag = "authzen",
    request_body = SubjectSearchBody,
    responses(
        (status = 200, description = "one page of subjects, each with why it is allowed", body = SearchPage),
        (status = 422, description = "the request does not match the schema or is over a limit", body = ErrorBody),
        (status = 503, description = "the search could not be made; never an empty list instead", body = ErrorBody),
    )
)]
pub async fn subject(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SubjectSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Subject(body)).await
}

/// Which resources may this subject do this action to? (AuthZEN Resource Search)
///
/// A `token` may stand for the subject, as in an evaluation.
#[utoipa::path(
    post,
    path = "/access/v1/search/resource",
    tag = "authzen",
    request_body = ResourceSearchBody,
    responses(
        (status = 200, description = "one page of resources, each with why it is allowed", body = SearchPage),
        (status = 401, description = "the body's `token` is refused by the identity provider's keys, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 422, description = "the request does not match the schema or is over a limit", body = ErrorBody),
        (status = 503, description = "the search could not be made; never an empty list instead", body = ErrorBody),
    )
)]
pub async fn resource(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<ResourceSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Resource(body)).await
}

/// Which actions may this subject do to this resource? (AuthZEN Action Search)
///
/// A `token` may stand for the subject, as in an evaluation.
#[utoipa::path(
    post,
    path = "/access/v1/search/action",
    tag = "authzen",
    request_body = ActionSearchBody,
    responses(
        (status = 200, description = "one page of actions, each with why it is allowed", body = SearchPage),
        (status = 401, description = "the body's `token` is refused by the identity provider's keys, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 422, description = "the request does not match the schema or is over a limit", body = ErrorBody),
        (status = 503, description = "the search could not be made; never an empty list instead", body = ErrorBody),
    )
)]
pub async fn action(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<ActionSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Action(body)).await
}

/// Who may read the patient's records now, and by which consent version or pack rule.
///
/// For an auditor, or a patient token whose principal may read the
/// patient's access log (as the patient, or as their representative).
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/access-overview",
    tag = "patients",
    params(("id" = String, Path, description = "the patient id, such as `p-100`")),
    responses(
        (status = 200, description = "`{patient, decision_id, purposes, access: [{principal, purposes}], break_glass: [...]}`", body = Object),
        (status = 403, description = "a patient token whose principal may not read this patient's access log", body = ErrorBody),
        (status = 503, description = "the overview could not be made", body = ErrorBody),
    )
)]
pub async fn access_overview(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(patient): Path<String>,
) -> Result<Json<AccessOverview>, AppError> {
    may_read_access_log(&state, &caller, &patient).await?;
    let pipeline = &state.pipeline;
    Ok(Json(overview::access_overview(pipeline, Listing::Store(pipeline.consents.store()), &patient).await?))
}

async fn answer(state: &AppState, mut body: SearchBody) -> Result<Json<SearchPage>, AppError> {
    let identity = token_identity(state, body.take_token()).await?;
    let pipeline = &state.pipeline;
    let query = crate::search::query_for(&pipeline.bundle(), body, identity.as_ref())?;
    Ok(Json(query.run(pipeline, Listing::Store(pipeline.consents.store())).await?))
}

impl From<SearchError> for AppError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::Request(error) => error.into(),
            SearchError::Unavailable(unavailable) => {
                let cause = unavailable.code();
                let error: &dyn std::error::Error = &unavailable;
                let underneath = error.source().map(ToString::to_string);
                tracing::error!(%unavailable, cause, underneath, "a search could not be made");
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", unavailable.to_string())
                    .with_cause(cause)
            }
        }
    }
}

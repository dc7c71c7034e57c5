//! The AuthZEN 1.0 Search APIs (§8): `POST /access/v1/search/subject`,
//! `/search/resource` and `/search/action`.
//!
//! The bodies, the paging and the candidates are [`crate::search`]'s; here
//! a body becomes a query against the server's store, and faults become
//! answers: a caller's mistake a 4xx naming the field, and a search that
//! could not be made at all a 503, never an empty list.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::audit::may_read_access_log;
use super::error::AppError;
use super::extract::JsonBody;
use crate::auth::Caller;
use crate::pipeline::SearchError;
use crate::search::body::{ActionSearchBody, ResourceSearchBody, SearchBody, SubjectSearchBody};
use crate::search::overview::{self, AccessOverview};
use crate::search::{Listing, SearchPage};
use crate::state::AppState;

/// `POST /access/v1/search/subject`: who may do this to this resource?
pub async fn subject(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<SubjectSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Subject(body)).await
}

/// `POST /access/v1/search/resource`: what may this subject do this to?
pub async fn resource(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<ResourceSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Resource(body)).await
}

/// `POST /access/v1/search/action`: what may this subject do to this resource?
pub async fn action(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<ActionSearchBody>,
) -> Result<Json<SearchPage>, AppError> {
    answer(&state, SearchBody::Action(body)).await
}

/// `GET /v1/patients/{id}/access-overview`: who may read the patient's
/// records now, and by which consent version or pack rule; for an auditor,
/// or a patient token whose principal may read the patient's access log.
pub async fn access_overview(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(patient): Path<String>,
) -> Result<Json<AccessOverview>, AppError> {
    may_read_access_log(&state, &caller, &patient).await?;
    let pipeline = &state.pipeline;
    Ok(Json(overview::access_overview(pipeline, Listing::Store(pipeline.consents.store()), &patient).await?))
}

async fn answer(state: &AppState, body: SearchBody) -> Result<Json<SearchPage>, AppError> {
    let pipeline = &state.pipeline;
    let query = crate::search::query_for(&pipeline.bundle(), body)?;
    Ok(Json(query.run(pipeline, Listing::Store(pipeline.consents.store())).await?))
}

impl From<SearchError> for AppError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::Request(error) => error.into(),
            SearchError::Unavailable(reason) => {
                tracing::error!(%reason, "a search could not be made");
                AppError::new(StatusCode::SERVICE_UNAVAILABLE, "search_unavailable", reason)
            }
        }
    }
}

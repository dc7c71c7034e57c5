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
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::authzen::{Action, Party};
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::auth::Caller;
use crate::pipeline::SearchError;
use crate::search::body::{ActionSearchBody, ResourceSearchBody, SearchBody, SubjectSearchBody};
use crate::search::overview::{self, AccessOverview};
use crate::search::{Listing, SearchPage};
use crate::state::AppState;

/// The searched subject or resource: its type; an `id` is accepted and ignored (§8.4.1).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SearchedParty)]
#[expect(dead_code, reason = "schema only: describes the body `crate::search::body` reads")]
struct SearchedPartySchema {
    /// The entity type searched for, such as `Practitioner`.
    #[serde(rename = "type")]
    kind: String,
    /// Ignored.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    id: Option<Value>,
    /// Attributes the results must be decided with.
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// `page` of a search request (§8.3.1).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PageRequest)]
#[expect(dead_code, reason = "schema only: describes the body `crate::search::body` reads")]
struct PageRequestSchema {
    /// The `next_token` of the previous page.
    #[serde(default)]
    token: Option<String>,
    /// Results per page; 50 when not given.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Paging properties; accepted, unused.
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/search/subject` body (`crate::search::body::SubjectSearchBody`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SubjectSearchBody)]
#[expect(dead_code, reason = "schema only: describes the body `crate::search::body` reads")]
struct SubjectSearchSchema {
    /// The subject type searched for.
    subject: SearchedPartySchema,
    /// The action.
    action: Action,
    /// The resource.
    resource: Party,
    /// The context every candidate is decided with.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: Option<PageRequestSchema>,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default)]
    #[schema(value_type = Vec<Object>, required = false)]
    entities: Vec<Value>,
}

/// `POST /access/v1/search/resource` body (`crate::search::body::ResourceSearchBody`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ResourceSearchBody)]
#[expect(dead_code, reason = "schema only: describes the body `crate::search::body` reads")]
struct ResourceSearchSchema {
    /// The subject.
    subject: Party,
    /// The action.
    action: Action,
    /// The resource type searched for.
    resource: SearchedPartySchema,
    /// The context every candidate is decided with.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: Option<PageRequestSchema>,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default)]
    #[schema(value_type = Vec<Object>, required = false)]
    entities: Vec<Value>,
}

/// `POST /access/v1/search/action` body (`crate::search::body::ActionSearchBody`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ActionSearchBody)]
#[expect(dead_code, reason = "schema only: describes the body `crate::search::body` reads")]
struct ActionSearchSchema {
    /// The subject.
    subject: Party,
    /// The resource.
    resource: Party,
    /// The context every candidate is decided with.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: Option<PageRequestSchema>,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default)]
    #[schema(value_type = Vec<Object>, required = false)]
    entities: Vec<Value>,
}

/// Who may do this action to this resource? (AuthZEN Subject Search)
#[utoipa::path(
    post,
    path = "/access/v1/search/subject",
    tag = "authzen",
    request_body = SubjectSearchSchema,
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
#[utoipa::path(
    post,
    path = "/access/v1/search/resource",
    tag = "authzen",
    request_body = ResourceSearchSchema,
    responses(
        (status = 200, description = "one page of resources, each with why it is allowed", body = SearchPage),
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
#[utoipa::path(
    post,
    path = "/access/v1/search/action",
    tag = "authzen",
    request_body = ActionSearchSchema,
    responses(
        (status = 200, description = "one page of actions, each with why it is allowed", body = SearchPage),
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

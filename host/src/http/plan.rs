//! `POST /v1/plan`: which of a patient's records an actor may act on, as a
//! filter (see [`consentry_engine::plan`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use consentry_engine::Plan;

use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::planning::PlanBody;
use crate::state::AppState;

/// Which of a patient's records an actor may act on, as a filter over
/// record attributes and as FHIR search parameters.
#[utoipa::path(
    post,
    path = "/v1/plan",
    tag = "decisions",
    request_body = PlanBody,
    responses(
        (status = 200, description = "the plan; one that could not be made admits nothing", body = super::openapi::wire::PlanSchema),
        (status = 422, description = "the request does not match the schema", body = ErrorBody),
    )
)]
pub async fn plan(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<PlanBody>,
) -> Result<Json<Plan>, AppError> {
    let request = body.into_request()?;
    Ok(Json(state.pipeline.plan(&request).await?))
}

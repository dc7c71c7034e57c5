//! `POST /v1/plan`: which of a patient's records an actor may act on, as a
//! filter (see [`consentry_engine::plan`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use consentry_engine::Plan;

use super::decisions::token_identity;
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::planning::PlanBody;
use crate::state::AppState;

/// Which of a patient's records an actor may act on, as a filter over
/// record attributes and as FHIR search parameters.
///
/// A `token` may stand for the actor, as in `/v1/is_authorized`.
#[utoipa::path(
    post,
    path = "/v1/plan",
    tag = "decisions",
    request_body = PlanBody,
    responses(
        (status = 200, description = "the plan; one that could not be made admits nothing", body = super::openapi::wire::PlanSchema),
        (status = 401, description = "the body's `token` is refused by the identity provider's keys, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 422, description = "the request does not match the schema", body = ErrorBody),
    )
)]
pub async fn plan(
    State(state): State<Arc<AppState>>,
    JsonBody(mut body): JsonBody<PlanBody>,
) -> Result<Json<Plan>, AppError> {
    let identity = token_identity(&state, body.take_token()).await?;
    let request = body.into_request(identity.as_ref())?;
    Ok(Json(state.pipeline.plan(&request).await?))
}

//! `POST /v1/plan`: which of a patient's records an actor may act on, as a
//! filter (see [`consentry_engine::plan`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use consentry_engine::Plan;

use super::error::AppError;
use super::extract::JsonBody;
use crate::planning::PlanBody;
use crate::state::AppState;

/// `POST /v1/plan`.
pub async fn plan(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<PlanBody>,
) -> Result<Json<Plan>, AppError> {
    let request = body.into_request()?;
    Ok(Json(state.pipeline.plan(&request).await?))
}

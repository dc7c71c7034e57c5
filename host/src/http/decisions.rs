//! `POST /v1/is_authorized` and its batch form, compatible with cedar-agent.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use consentry_engine::{Obligation, Reason};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::identity::{BearerToken, FactsError, TokenIdentity};
use crate::pipeline::Decided;
use crate::request_body::IsAuthorizedBody;
use crate::state::AppState;

/// The answer of `/v1/is_authorized`.
#[derive(Debug, Serialize, ToSchema)]
pub struct IsAuthorizedAnswer {
    /// `Allow` or `Deny`.
    #[schema(value_type = String, examples("Allow", "Deny"))]
    decision: &'static str,
    /// cedar-agent's diagnostics.
    diagnostics: Diagnostics,
    /// What the caller must (obligations) or should (advice) do.
    #[schema(value_type = Vec<super::openapi::wire::ObligationSchema>)]
    obligations: Vec<Obligation>,
    /// The decision's id in the decision log.
    decision_id: Uuid,
    /// Allow, or which kind of Deny.
    #[schema(value_type = super::openapi::wire::OutcomeSchema)]
    outcome: consentry_engine::Outcome,
    /// The decision in one sentence.
    summary: String,
    /// The determining policies with their `@reason`.
    #[schema(value_type = Vec<super::openapi::wire::ReasonSchema>)]
    explanation: Vec<Reason>,
    /// Present when plugins ran: what each did, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    plugins: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
struct Diagnostics {
    /// The ids of the determining policies.
    reason: Vec<String>,
    /// Errors met while deciding, naming the policy.
    errors: Vec<String>,
}

impl From<Decided> for IsAuthorizedAnswer {
    fn from(Decided { id, decision, plugins }: Decided) -> Self {
        let errors = decision
            .errors
            .iter()
            .map(|e| match &e.policy {
                Some(policy) => format!("error while evaluating policy `{policy}`: {}", e.message),
                None => e.message.clone(),
            })
            .collect();
        Self {
            decision: decision.verdict(),
            summary: decision.summary(),
            diagnostics: Diagnostics {
                reason: decision.reasons.iter().map(|r| r.policy.clone()).collect(),
                errors,
            },
            obligations: decision.obligations,
            decision_id: id,
            outcome: decision.outcome,
            explanation: decision.reasons,
            plugins,
        }
    }
}

/// A cedar-agent compatible decision: may the principal do the action to the resource?
#[utoipa::path(
    post,
    path = "/v1/is_authorized",
    tag = "decisions",
    request_body = IsAuthorizedBody,
    responses(
        (status = 200, description = "the decision, Allow or Deny", body = IsAuthorizedAnswer),
        (status = 401, description = "the body's `token` is refused by the identity provider's keys, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 422, description = "the request does not match the schema, contradicts a stored fact, or is over a limit", body = ErrorBody),
    )
)]
pub async fn is_authorized(
    State(state): State<Arc<AppState>>,
    JsonBody(mut body): JsonBody<IsAuthorizedBody>,
) -> Result<Json<IsAuthorizedAnswer>, AppError> {
    let identity = token_identity(&state, body.take_token()).await?;
    let request = body.into_request(identity.as_ref())?;
    let decision = state.pipeline.decide(&request).await?;
    Ok(Json(decision.into()))
}

/// The body of `/v1/is_authorized/batch`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The requests, each as `/v1/is_authorized` takes it; at most `--max-batch`.
    requests: Vec<IsAuthorizedBody>,
}

/// The answer of `/v1/is_authorized/batch`, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// One answer per request, in order.
    responses: Vec<IsAuthorizedAnswer>,
}

/// Several cedar-agent decisions in one call, answered in request order.
///
/// An item that cannot be decided fails the whole batch, with `field`
/// naming it (`requests[3].resource`).
#[utoipa::path(
    post,
    path = "/v1/is_authorized/batch",
    tag = "decisions",
    request_body = BatchBody,
    responses(
        (status = 200, description = "the decisions, in request order", body = BatchAnswer),
        (status = 401, description = "an item's `token` is refused, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 413, description = "more requests than `--max-batch`, or a body over `--max-body`", body = ErrorBody),
        (status = 422, description = "an item does not match the schema, contradicts a stored fact, or is over a limit", body = ErrorBody),
    )
)]
pub async fn is_authorized_batch(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<BatchAnswer>, AppError> {
    check_batch_size(body.requests.len(), state.settings.max_batch)?;
    let mut requests = Vec::with_capacity(body.requests.len());
    for (i, mut item) in body.requests.into_iter().enumerate() {
        let identity = token_identity(&state, item.take_token()).await.map_err(|e| e.within_batch(i))?;
        requests.push(item.into_request(identity.as_ref()).map_err(|e| AppError::from(e).within_batch(i))?);
    }
    let decisions = state.pipeline.decide_all(&requests).await;
    let responses = decisions
        .into_iter()
        .enumerate()
        .map(|(i, result)| {
            result.map(IsAuthorizedAnswer::from).map_err(|e| AppError::from(e).within_batch(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(BatchAnswer { responses }))
}

/// The identity of a decision request's own token: `None` without one, 401
/// for a token the identity provider's keys refuse, 400 when no identity
/// provider is configured.
pub(super) async fn token_identity(
    state: &AppState,
    token: Option<BearerToken>,
) -> Result<Option<TokenIdentity>, AppError> {
    let Some(token) = token else { return Ok(None) };
    let verifier = state.auth.verifier().ok_or(FactsError::NotConfigured)?;
    Ok(Some(verifier.verify(token.as_str()).await?))
}

/// Refuses a batch over the configured limit with a 413 that names the limit.
pub fn check_batch_size(len: usize, limit: usize) -> Result<(), AppError> {
    if len > limit {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("batch of {len} requests exceeds the limit of {limit} (--max-batch)"),
        ));
    }
    Ok(())
}

//! Changes to the policy set through the API: new policies, a new schema,
//! a rollback to a stored version. Each is one new policy version, made on
//! the set the caller saw (`If-Match`) and recorded with its reason
//! (`X-Change-Reason`); they share those headers and their answers, so the
//! document says them once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::{Extension, Json};
use consentry_engine::TemplateLink;
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::{Content, HeaderBuilder, ObjectBuilder, RefOr, ResponseBuilder, Type};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::{change_by, change_error, count, entity_count, with_etag};
use crate::audit::{ChangeEntry, ChangeKind};
use crate::auth::Caller;
use crate::directory::{PolicyEdit, Versioned};
use crate::http::change_record::{ChangeReasonHeader, record};
use crate::http::error::{AppError, ErrorBody};
use crate::http::extract::{JsonBody, TypedBody, parse_json, unsupported};
use crate::http::openapi::error_answer;
use crate::state::AppState;
use crate::store::VersionOrigin;

/// The precondition of a change to the policy set (`PUT /v1/policies`,
/// `PUT /v1/schema`, `POST /v1/policies/rollback`), as [`change_by`] reads
/// it; the reason is [`ChangeReasonHeader`].
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "schema only: `change_by` reads the header")]
struct IfMatchHeader {
    /// the hash (`ETag`) of the policy set the change was made on; 412 if another is in force
    #[param(rename = "If-Match")]
    if_match: Option<String>,
}

/// What a change to the policy set answers: the version now in force, or
/// why nothing changed.
struct PolicyChangeAnswers;

impl IntoResponses for PolicyChangeAnswers {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let in_force = ResponseBuilder::new()
            .description("in force: `{version, hash, policies, entities}`")
            .content("application/json", Content::new(Some(ObjectBuilder::new().schema_type(Type::Object))))
            .header(
                "ETag",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some("the new policy set's hash"))
                    .build(),
            )
            .build();
        [
            (200, in_force),
            (
                409,
                error_answer(
                    "the policies are managed in the policy directory, or another change was made at the same time",
                ),
            ),
            (412, error_answer("`If-Match` names another policy set than the one in force")),
            (
                422,
                error_answer(
                    "refused: invalid, or failing the policy tests; every problem is listed and nothing changed",
                ),
            ),
            (
                503,
                error_answer(
                    "the store failed, or the change was stored but its change record could not be written",
                ),
            ),
        ]
        .into_iter()
        .map(|(status, answer)| (status.to_string(), RefOr::T(answer)))
        .collect()
    }
}

/// The JSON form of a new policy set.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PoliciesBody {
    /// The policies, as Cedar text.
    policies: String,
    /// The template links; none when not given.
    #[serde(default)]
    #[schema(value_type = Vec<crate::http::openapi::wire::TemplateLinkSchema>, required = false)]
    links: Vec<TemplateLink>,
}

/// Replaces the policy set, as a new version.
///
/// Cedar text (`text/plain`, keeping the current template links) or
/// `{"policies": "...", "links": [...]}` (`application/json`). The set is
/// validated in full, and must pass the policy tests, before it is stored
/// and put in force.
#[utoipa::path(
    put,
    path = "/v1/policies",
    tag = "admin",
    request_body(content((String = "text/plain"), (PoliciesBody = "application/json"))),
    params(IfMatchHeader, ChangeReasonHeader),
    responses(PolicyChangeAnswers)
)]
pub async fn put_policies(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: TypedBody,
) -> Result<Response, AppError> {
    let edit = if body.is_json() {
        let parsed: PoliciesBody = parse_json(&body.bytes)?;
        PolicyEdit::Policies { text: parsed.policies, links: Some(parsed.links) }
    } else if body.is_text() {
        PolicyEdit::Policies { text: body.text()?.to_owned(), links: None }
    } else {
        return Err(unsupported("text/plain or application/json"));
    };
    change_policies(&state, edit, &caller, &headers).await
}

/// Replaces the schema: Cedar schema text (`text/plain`) or JSON.
///
/// The policies and every stored entity are validated again under the new
/// schema; the change is a new policy version.
#[utoipa::path(
    put,
    path = "/v1/schema",
    tag = "admin",
    request_body(content((String = "text/plain"), (Object = "application/json"))),
    params(IfMatchHeader, ChangeReasonHeader),
    responses(PolicyChangeAnswers)
)]
pub async fn put_schema(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: TypedBody,
) -> Result<Response, AppError> {
    let text = body.text()?.to_owned();
    let edit = if body.is_json() {
        PolicyEdit::Schema { text, is_json: true }
    } else if body.is_text() {
        PolicyEdit::Schema { text, is_json: false }
    } else {
        return Err(unsupported("text/plain or application/json"));
    };
    change_policies(&state, edit, &caller, &headers).await
}

/// `{"version": N}`: the version to put in force again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    /// The stored version's number.
    version: u64,
}

/// Puts a stored policy version in force again, as a new version.
#[utoipa::path(
    post,
    path = "/v1/policies/rollback",
    tag = "admin",
    request_body = RollbackBody,
    params(IfMatchHeader, ChangeReasonHeader),
    responses(
        PolicyChangeAnswers,
        (status = 404, description = "no such version; `field` is `version`", body = ErrorBody),
    )
)]
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RollbackBody>,
) -> Result<Response, AppError> {
    change_policies(&state, PolicyEdit::Rollback(body.version), &caller, &headers).await
}

async fn change_policies(
    state: &AppState,
    edit: PolicyEdit,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let by = change_by(caller, headers)?;
    let kind = match &edit {
        PolicyEdit::Schema { .. } => ChangeKind::Schema,
        PolicyEdit::Policies { links: Some(links), .. }
            if *links != state.pipeline.bundle().source().links =>
        {
            ChangeKind::Links
        }
        PolicyEdit::Policies { .. } | PolicyEdit::Rollback(_) => ChangeKind::Policies,
    };
    let Versioned { bundle, version } =
        state.pipeline.directory.change_policies(edit, &by).await.map_err(change_error)?;
    let mut change = ChangeEntry::now(kind, &by.actor, format!("v{}", version.version))
        .with_hash(bundle.hash())
        .with_count("policies", count(bundle.policy_count()));
    if let VersionOrigin::Rollback { from } = version.origin {
        change = change.with_count("rolled_back_from", from);
    }
    record(state, change, by.comment.as_deref(), &format!("policy version {}", version.version)).await?;
    let body = json!({
        "version": version.version,
        "hash": bundle.hash(),
        "policies": bundle.policy_count(),
        "entities": entity_count(state).await?,
    });
    Ok(with_etag(bundle.hash(), Json(body)))
}

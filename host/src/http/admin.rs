//! The admin API: policies (with their versions), schema and entities.
//!
//! Handlers only translate HTTP: every change is made by
//! [`crate::directory::Directory`], which validates it in full, commits it
//! to the store and only then puts it in force. A refused change leaves
//! everything as it was and answers 422 with every problem found; a change
//! made on a stale view of the policy set answers 412 (`If-Match`) or 409.
//! The changes to the policy set itself are in [`policy_change`].

// utoipa's generated `IntoParams` calls name the query types in full.
#![allow(unused_qualifications)]

pub mod policy_change;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use consentry_engine::{EntityPatch, PatchOutcome, uid_from_parts};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::change_record::{ChangeReasonHeader, reason, record};
use super::error::{AppError, ErrorBody};
use super::extract::{JsonBody, QueryParams};
use crate::audit::{ChangeEntry, ChangeKind};
use crate::auth::Caller;
use crate::directory::{ChangeBy, ChangeError, EntityChanged, EntityEdit, PolicyVersionRef};
use crate::state::AppState;
use crate::store::{PolicyVersion, VersionOrigin};

/// The most items one page of a listing holds.
const MAX_PAGE: u32 = 1000;

/// `?version=N` or `?hash=H`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// A stored policy version's number.
    version: Option<u64>,
    /// A stored policy version's hash; not with `version`.
    hash: Option<String>,
}

/// The policy set in force, or a stored version (`?version=N` / `?hash=H`).
///
/// Every policy with its id, kind, effect, text and annotations; the
/// `ETag` is the hash.
#[utoipa::path(
    get,
    path = "/v1/policies",
    tag = "admin",
    params(VersionQuery),
    responses(
        (status = 200, description = "in force: `{version, hash, policies: [{id, kind, effect, text, annotations}], links, text}`; a stored version: `{version, hash, origin, rolled_back_from, actor, comment, recorded_at_unix_ms, text, links, schema, schema_is_json}`",
         body = Object, headers(("ETag" = String, description = "the policy set's hash"))),
        (status = 404, description = "no stored version matches", body = ErrorBody),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn get_policies(
    State(state): State<Arc<AppState>>,
    QueryParams(query): QueryParams<VersionQuery>,
) -> Result<Response, AppError> {
    let which = match (query.version, query.hash) {
        (Some(_), Some(_)) => {
            return Err(AppError::bad_field("hash", "give `version` or `hash`, not both"));
        }
        (Some(number), None) => Some(PolicyVersionRef::Number(number)),
        (None, Some(hash)) => Some(PolicyVersionRef::Hash(hash)),
        (None, None) => None,
    };
    let Some(which) = which else {
        let (bundle, version) = {
            let snapshot = state.pipeline.read();
            (Arc::clone(&snapshot.bundle), snapshot.version)
        };
        let body = json!({
            "version": version,
            "hash": bundle.hash(),
            "policies": bundle.policy_summaries(),
            "links": bundle.source().links,
            "text": bundle.source().policies,
        });
        return Ok(with_etag(bundle.hash(), Json(body)));
    };
    let stored =
        state.pipeline.directory.policy_version(&which).await.map_err(AppError::store_unavailable)?;
    let stored = stored.ok_or_else(|| {
        AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no policy version matches {which:?}"))
    })?;
    let hash = stored.hash.clone();
    Ok(with_etag(&hash, Json(version_body(stored))))
}

/// `?before=N&limit=L`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Only what is older than this number (the previous page's `next_before`).
    before: Option<u64>,
    /// Items per page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The stored policy versions, newest first.
#[utoipa::path(
    get,
    path = "/v1/policies/versions",
    tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "`{versions: [{version, hash, origin, rolled_back_from, actor, comment, recorded_at_unix_ms}], next_before}`", body = Object),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn list_versions(
    State(state): State<Arc<AppState>>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = page_limit(query.limit)?;
    let versions = state
        .pipeline
        .directory
        .durable()
        .policy_versions(query.before, limit)
        .await
        .map_err(AppError::store_unavailable)?;
    let next = (versions.len() == limit as usize).then(|| versions.last().map(|v| v.version)).flatten();
    let versions: Vec<Value> = versions
        .into_iter()
        .map(|v| {
            json!({
                "version": v.version, "hash": v.hash, "origin": origin_name(v.origin),
                "rolled_back_from": rolled_back_from(v.origin), "actor": v.actor,
                "comment": v.comment, "recorded_at_unix_ms": v.recorded_at_unix_ms,
            })
        })
        .collect();
    Ok(Json(json!({"versions": versions, "next_before": next})))
}

/// The entity directory's revisions, newest first.
///
/// Whoever wrote them: an admin token, a load of the policy directory, or
/// `consentry entities import` (actor `import`).
#[utoipa::path(
    get,
    path = "/v1/entities/revisions",
    tag = "admin",
    params(PageQuery),
    responses(
        (status = 200, description = "`{revisions: [{revision, actor, comment, upserted, deleted, replaced_all, recorded_at_unix_ms}], next_before}`", body = Object),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn list_entity_revisions(
    State(state): State<Arc<AppState>>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<Value>, AppError> {
    let limit = page_limit(query.limit)?;
    let revisions = state
        .pipeline
        .directory
        .durable()
        .entity_revisions(query.before, limit)
        .await
        .map_err(AppError::store_unavailable)?;
    let next = (revisions.len() == limit as usize).then(|| revisions.last().map(|r| r.revision)).flatten();
    let revisions: Vec<Value> = revisions
        .into_iter()
        .map(|r| {
            json!({
                "revision": r.revision, "actor": r.actor, "comment": r.comment, "upserted": r.upserted,
                "deleted": r.deleted, "replaced_all": r.replaced_all, "recorded_at_unix_ms": r.recorded_at_unix_ms,
            })
        })
        .collect();
    Ok(Json(json!({"revisions": revisions, "next_before": next})))
}

/// The schema as it was given, Cedar text or JSON.
#[utoipa::path(
    get,
    path = "/v1/schema",
    tag = "admin",
    responses(
        (status = 200, description = "the schema", content((String = "text/plain"), (Object = "application/json")),
         headers(("ETag" = String, description = "the policy set's hash"))),
        (status = 404, description = "no schema is loaded", body = ErrorBody),
    )
)]
pub async fn get_schema(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    let bundle = state.pipeline.bundle();
    let source = bundle.source();
    let text = source
        .schema
        .clone()
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "not_found", "no schema is loaded"))?;
    let content_type = if source.schema_is_json { "application/json" } else { "text/plain; charset=utf-8" };
    Ok(with_etag(bundle.hash(), ([(header::CONTENT_TYPE, content_type)], text)))
}

/// `?type=T&after=UID&limit=L`.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntitiesQuery {
    /// Only entities of this type.
    #[serde(rename = "type")]
    entity_type: Option<String>,
    /// Only entities after this uid (the previous page's `next_after`).
    after: Option<String>,
    /// Entities per page, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// The stored entities, in Cedar's entity JSON format.
///
/// Without parameters, every one of them as an array; with `limit` (and
/// `type`, `after`), one page of them by uid:
/// `{"entities": [...], "next_after": uid | null}`.
#[utoipa::path(
    get,
    path = "/v1/entities",
    tag = "admin",
    params(EntitiesQuery),
    responses(
        (status = 200, description = "an array of entities, or a page `{entities, next_after}`", body = Object),
        (status = 500, description = "a stored entity is corrupt", body = ErrorBody),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn get_entities(
    State(state): State<Arc<AppState>>,
    QueryParams(query): QueryParams<EntitiesQuery>,
) -> Result<Json<Value>, AppError> {
    if query.limit.is_none() && query.after.is_none() && query.entity_type.is_none() {
        let (_, rows) =
            state.pipeline.directory.durable().all_entities().await.map_err(AppError::store_unavailable)?;
        let entities = rows.iter().map(|(uid, body)| stored_entity(uid, body)).collect::<Result<_, _>>()?;
        return Ok(Json(Value::Array(entities)));
    }
    let limit = page_limit(query.limit)?;
    let rows = state
        .pipeline
        .directory
        .durable()
        .entities_page(query.entity_type.as_deref(), query.after.as_deref(), limit)
        .await
        .map_err(AppError::store_unavailable)?;
    let next = (rows.len() == limit as usize).then(|| rows.last().map(|(uid, _)| uid.clone())).flatten();
    let entities = rows.iter().map(|(uid, body)| stored_entity(uid, body)).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"entities": entities, "next_after": next})))
}

/// One stored entity, in Cedar's entity JSON format.
#[utoipa::path(
    get,
    path = "/v1/entities/{type}/{id}",
    tag = "admin",
    params(
        ("type" = String, Path, description = "the entity type, such as `Practitioner`"),
        ("id" = String, Path, description = "the entity id"),
    ),
    responses(
        (status = 200, description = "the entity `{uid, attrs, parents}`", body = Object),
        (status = 400, description = "not a valid entity uid", body = ErrorBody),
        (status = 404, description = "no such entity is stored", body = ErrorBody),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn get_entity(
    State(state): State<Arc<AppState>>,
    Path((entity_type, id)): Path<(String, String)>,
) -> Result<Json<Value>, AppError> {
    let uid = uid_from_parts(&entity_type, &id, "path")?;
    let body = state
        .pipeline
        .directory
        .durable()
        .entity(&uid.to_string())
        .await
        .map_err(AppError::store_unavailable)?;
    let body = body.ok_or_else(|| {
        AppError::new(StatusCode::NOT_FOUND, "not_found", format!("no entity `{uid}` is stored"))
    })?;
    Ok(Json(stored_entity(&uid.to_string(), &body)?))
}

/// Replaces every stored entity, as one new revision.
#[utoipa::path(
    put,
    path = "/v1/entities",
    tag = "admin",
    request_body(content = Vec<Object>, description = "every entity, in Cedar's entity JSON format"),
    params(ChangeReasonHeader),
    responses(
        (status = 200, description = "`{entities, revision}`", body = Object),
        (status = 409, description = "another change was made at the same time", body = ErrorBody),
        (status = 422, description = "refused: an entity is invalid under the schema; every problem is listed and nothing changed", body = ErrorBody),
        (status = 503, description = "the store failed, or the change was stored but its change record could not be written", body = ErrorBody),
    )
)]
pub async fn put_entities(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, AppError> {
    let changed = change_entities(&state, EntityEdit::Replace(body), &caller, &headers).await?;
    Ok(Json(json!({"entities": entity_count(&state).await?, "revision": changed.revision.revision})))
}

/// How many entities the store holds: the copy in memory is only a cache.
async fn entity_count(state: &AppState) -> Result<u64, AppError> {
    state.pipeline.directory.durable().entity_count().await.map_err(AppError::store_unavailable)
}

/// Upserts and deletes entities, all or nothing, as one new revision.
#[utoipa::path(
    patch,
    path = "/v1/entities",
    tag = "admin",
    request_body = super::openapi::wire::EntityPatchSchema,
    params(ChangeReasonHeader),
    responses(
        (status = 200, description = "`{upserted, deleted, revision}`", body = Object),
        (status = 409, description = "another change was made at the same time", body = ErrorBody),
        (status = 422, description = "refused: an entity is invalid under the schema; every problem is listed and nothing changed", body = ErrorBody),
        (status = 503, description = "the store failed, or the change was stored but its change record could not be written", body = ErrorBody),
    )
)]
pub async fn patch_entities(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<EntityPatch>,
) -> Result<Json<Value>, AppError> {
    let changed = change_entities(&state, EntityEdit::Patch(patch), &caller, &headers).await?;
    Ok(Json(patched(&changed)))
}

/// Deletes entities, as one new revision.
#[utoipa::path(
    delete,
    path = "/v1/entities",
    tag = "admin",
    request_body(content = super::openapi::wire::EntityUids, description = "the uids to remove"),
    params(ChangeReasonHeader),
    responses(
        (status = 200, description = "`{upserted, deleted, revision}`", body = Object),
        (status = 409, description = "another change was made at the same time", body = ErrorBody),
        (status = 422, description = "refused: an entity is invalid under the schema; every problem is listed and nothing changed", body = ErrorBody),
        (status = 503, description = "the store failed, or the change was stored but its change record could not be written", body = ErrorBody),
    )
)]
pub async fn delete_entities(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(uids): JsonBody<Vec<Value>>,
) -> Result<Json<Value>, AppError> {
    let edit = EntityEdit::Patch(EntityPatch { upsert: Vec::new(), delete: uids });
    let changed = change_entities(&state, edit, &caller, &headers).await?;
    Ok(Json(patched(&changed)))
}

async fn change_entities(
    state: &AppState,
    edit: EntityEdit,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<EntityChanged, AppError> {
    let by = change_by(caller, headers)?;
    let replaced_all = matches!(edit, EntityEdit::Replace(_));
    let changed = state.pipeline.directory.change_entities(edit, &by).await.map_err(change_error)?;
    let revision = changed.revision.revision;
    let mut change = ChangeEntry::now(ChangeKind::Entities, &by.actor, format!("r{revision}"))
        .with_count("upserted", changed.revision.upserted)
        .with_count("deleted", changed.revision.deleted);
    if replaced_all {
        change = change.with_count("replaced_all", 1);
    }
    record(state, change, by.comment.as_deref(), &format!("entity revision {revision}")).await?;
    Ok(changed)
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn patched(changed: &EntityChanged) -> Value {
    let PatchOutcome { upserted, deleted } = changed.outcome;
    json!({"upserted": upserted, "deleted": deleted, "revision": changed.revision.revision})
}

/// Who changes what, and why (`X-Change-Reason`), on which hash (`If-Match`).
fn change_by(caller: &Caller, headers: &HeaderMap) -> Result<ChangeBy, AppError> {
    let text = |name: &'static str| -> Result<Option<String>, AppError> {
        headers
            .get(name)
            .map(|value| {
                value
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| AppError::bad_field(name, "must be visible ASCII"))
            })
            .transpose()
    };
    let if_match =
        text("if-match")?.map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"').to_owned());
    Ok(ChangeBy { actor: caller.name.clone(), comment: reason(headers)?, if_match })
}

fn page_limit(limit: Option<u32>) -> Result<u32, AppError> {
    match limit {
        None => Ok(100),
        Some(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        Some(_) => Err(AppError::bad_field("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

fn version_body(version: PolicyVersion) -> Value {
    json!({
        "version": version.version,
        "hash": version.hash,
        "origin": origin_name(version.origin),
        "rolled_back_from": rolled_back_from(version.origin),
        "actor": version.actor,
        "comment": version.comment,
        "recorded_at_unix_ms": version.recorded_at_unix_ms,
        "text": version.policies,
        "links": version.links,
        "schema": version.schema,
        "schema_is_json": version.schema_is_json,
    })
}

fn origin_name(origin: VersionOrigin) -> &'static str {
    match origin {
        VersionOrigin::Api => "api",
        VersionOrigin::Directory => "directory",
        VersionOrigin::Rollback { .. } => "rollback",
    }
}

fn rolled_back_from(origin: VersionOrigin) -> Option<u64> {
    match origin {
        VersionOrigin::Rollback { from } => Some(from),
        VersionOrigin::Api | VersionOrigin::Directory => None,
    }
}

fn stored_entity(uid: &str, body: &str) -> Result<Value, AppError> {
    serde_json::from_str(body).map_err(|e| {
        tracing::error!(uid, error = %e, "a stored entity is not valid JSON");
        AppError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt_entity",
            format!("stored entity `{uid}` is corrupt"),
        )
    })
}

fn with_etag(hash: &str, body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    if let Ok(tag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
        response.headers_mut().insert(header::ETAG, tag);
    }
    response
}

/// The HTTP answer for a refused change.
fn change_error(error: ChangeError) -> AppError {
    match error {
        ChangeError::Invalid(error) => AppError::refused(&error),
        ChangeError::TestsFailed(refusal) => {
            let message = format!(
                "the change fails {} of {} policy test case(s); the policies in force are unchanged",
                refusal.failures.len(),
                refusal.cases
            );
            AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_tests_failed", message).with_problems(
                refusal.failures.iter().map(|f| consentry_engine::Problem::message(f.as_str())).collect(),
            )
        }
        ChangeError::DirectoryOwned(_) => {
            AppError::new(StatusCode::CONFLICT, "managed_in_directory", error.to_string())
        }
        ChangeError::PreconditionFailed { .. } => {
            AppError::new(StatusCode::PRECONDITION_FAILED, "precondition_failed", error.to_string())
                .with_field("If-Match")
        }
        ChangeError::Concurrent => {
            AppError::new(StatusCode::CONFLICT, "concurrent_change", error.to_string())
        }
        ChangeError::NoSuchVersion(_) => {
            AppError::new(StatusCode::NOT_FOUND, "not_found", error.to_string()).with_field("version")
        }
        ChangeError::Store(error) => AppError::store_unavailable(error),
    }
}

//! The admin API: policies, schema and entities.
//!
//! Every change is validated in full before it is swapped in; a refused
//! change leaves the state exactly as it was and answers 422 with every
//! problem found. A change of the policies or the schema must also pass the
//! server's policy tests, when it has them (`--policy-tests`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use consentry_engine::{EntityPatch, EntityStore, PatchOutcome, Problem, SchemaSource, TemplateLink};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::AppError;
use super::extract::{JsonBody, TypedBody, parse_json, unsupported};
use crate::policy_change::{Candidate, put_in_force};
use crate::policy_test::Refusal;
use crate::state::AppState;

/// `GET /v1/policies`: every policy with its id, kind, effect, text and annotations.
pub async fn get_policies(State(state): State<Arc<AppState>>) -> Json<Value> {
    let bundle = state.bundle();
    Json(json!({
        "hash": bundle.hash(),
        "policies": bundle.policy_summaries(),
        "links": bundle.source().links,
        "text": bundle.source().policies,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesBody {
    policies: String,
    #[serde(default)]
    links: Vec<TemplateLink>,
}

/// `PUT /v1/policies`: Cedar text (`text/plain`, keeping the current template
/// links) or `{"policies": "...", "links": [...]}` (`application/json`).
pub async fn put_policies(
    State(state): State<Arc<AppState>>,
    body: TypedBody,
) -> Result<Json<Value>, AppError> {
    let change = state.begin_change().await;
    let current = state.bundle();
    let (text, links) = if body.is_json() {
        let parsed: PoliciesBody = parse_json(&body.bytes)?;
        (parsed.policies, parsed.links)
    } else if body.is_text() {
        (body.text()?.to_owned(), current.source().links.clone())
    } else {
        return Err(unsupported("text/plain or application/json"));
    };
    let bundle = current.with_policies(&text, &links).map_err(|e| AppError::refused(&e))?;
    let answer = json!({"hash": bundle.hash(), "policies": bundle.policy_count()});
    put_in_force(&state, &change, Candidate { bundle, store: None }, "PUT /v1/policies")
        .await
        .map_err(|refusal| tests_failed(&refusal))?;
    Ok(Json(answer))
}

/// `GET /v1/schema`: the schema as it was given, Cedar text or JSON.
pub async fn get_schema(State(state): State<Arc<AppState>>) -> Result<Response, AppError> {
    let bundle = state.bundle();
    let source = bundle.source();
    let text = source
        .schema
        .clone()
        .ok_or_else(|| AppError::new(StatusCode::NOT_FOUND, "not_found", "no schema is loaded"))?;
    let content_type = if source.schema_is_json { "application/json" } else { "text/plain; charset=utf-8" };
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

/// `PUT /v1/schema`: Cedar schema text (`text/plain`) or JSON. The policies
/// and every stored entity are validated again under the new schema.
pub async fn put_schema(
    State(state): State<Arc<AppState>>,
    body: TypedBody,
) -> Result<Json<Value>, AppError> {
    let text = body.text()?;
    let source = if body.is_json() {
        SchemaSource::Json(text)
    } else if body.is_text() {
        SchemaSource::CedarText(text)
    } else {
        return Err(unsupported("text/plain or application/json"));
    };
    let change = state.begin_change().await;
    let bundle = state.bundle().with_schema(Some(source)).map_err(|e| AppError::refused(&e))?;
    let store = state.read().store.reparsed(bundle.schema()).map_err(|e| AppError::refused(&e))?;
    let answer = json!({"hash": bundle.hash(), "entities": store.len()});
    put_in_force(&state, &change, Candidate { bundle, store: Some(store) }, "PUT /v1/schema")
        .await
        .map_err(|refusal| tests_failed(&refusal))?;
    Ok(Json(answer))
}

/// 422 `policy_tests_failed` for a change the policy tests refused, with
/// one problem per failed case or unusable test file.
fn tests_failed(refusal: &Refusal) -> AppError {
    let message = format!(
        "the change fails {} of {} policy test case(s); the policies in force are unchanged",
        refusal.failures.len(),
        refusal.cases
    );
    AppError::new(StatusCode::UNPROCESSABLE_ENTITY, "policy_tests_failed", message)
        .with_problems(refusal.failures.iter().map(|failure| Problem::message(failure.as_str())).collect())
}

/// `GET /v1/entities`: every stored entity, in Cedar's entity JSON format.
pub async fn get_entities(State(state): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    let json = state.read().store.to_json().map_err(|e| AppError::refused(&e))?;
    Ok(Json(json))
}

/// `PUT /v1/entities`: replaces every stored entity.
pub async fn put_entities(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<Value>,
) -> Result<Json<Value>, AppError> {
    let _change = state.begin_change().await;
    let store = EntityStore::from_json(&body, state.bundle().schema()).map_err(|e| AppError::refused(&e))?;
    let count = store.len();
    state.write().store = store;
    Ok(Json(json!({"entities": count})))
}

/// `PATCH /v1/entities`: `{"upsert": [entities], "delete": [uids]}`, all or nothing.
pub async fn patch_entities(
    State(state): State<Arc<AppState>>,
    JsonBody(patch): JsonBody<EntityPatch>,
) -> Result<Json<PatchOutcome>, AppError> {
    apply(&state, &patch).await
}

/// `DELETE /v1/entities`: a JSON array of uids to remove.
pub async fn delete_entities(
    State(state): State<Arc<AppState>>,
    JsonBody(uids): JsonBody<Vec<Value>>,
) -> Result<Json<PatchOutcome>, AppError> {
    apply(&state, &EntityPatch { upsert: Vec::new(), delete: uids }).await
}

async fn apply(state: &AppState, patch: &EntityPatch) -> Result<Json<PatchOutcome>, AppError> {
    let _change = state.begin_change().await;
    let bundle = state.bundle();
    let parsed = patch.parse(bundle.schema()).map_err(|e| AppError::refused(&e))?;
    Ok(Json(state.write().store.apply(parsed)))
}

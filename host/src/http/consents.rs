//! The consent API: patients' FHIR `Consent` resources, stored as versions.
//!
//! A consent is a legal record, so nothing here overwrites or deletes: a
//! `PUT` stores the next version, and withdrawal is a version whose status
//! is `inactive`. The write is acknowledged only once it is durable and the
//! patient's cached partition is gone, so the next decision already obeys it.

// utoipa's generated `IntoParams` calls name the query types in full.
#![allow(unused_qualifications)]

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use consentry_engine::consent::ConsentErrorKind;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::change_record::{self, ChangeReasonHeader};
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::audit::{ChangeEntry, ChangeKind};
use crate::auth::Caller;
use crate::consents::ConsentWriteError;
use crate::state::AppState;
use crate::store::{ConsentRecord, StoreError};

/// Stores a new FHIR `Consent` (R4 or R5) under a server-assigned id, as version 1.
///
/// Acknowledged once it is durable and the patient's cached partition is
/// gone, so the next decision already obeys it.
#[utoipa::path(
    post,
    path = "/v1/consents",
    tag = "consents",
    request_body(content = Object, description = "a FHIR `Consent` resource"),
    params(ChangeReasonHeader),
    responses(
        (status = 201, description = "stored: `{id, version, patient, status, fhir_version, recorded_at_unix_ms}`", body = Object, headers(("Location" = String, description = "`/v1/consents/{id}?version={n}`")),
         example = json!({"id": "c-1", "version": 1, "patient": "p-100", "status": "active", "fhir_version": "R4", "recorded_at_unix_ms": 1767225600000_u64})),
        (status = 422, description = "not a valid FHIR Consent, or its rules cannot be compiled against the policies in force; `field` names the path", body = ErrorBody),
        (status = 503, description = "the store failed, or the consent was stored but its change record could not be written", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, AppError> {
    let reason = change_record::reason(&headers)?;
    let bundle = state.pipeline.bundle();
    let record = state.pipeline.consents.create(&bundle, body).await.map_err(write_error)?;
    record_consent(&state, &caller, &record, reason.as_deref()).await?;
    Ok(stored(StatusCode::CREATED, &record))
}

/// Records a stored consent version in the decision log.
async fn record_consent(
    state: &AppState,
    caller: &Caller,
    record: &ConsentRecord,
    reason: Option<&str>,
) -> Result<(), AppError> {
    let subject = format!("{}/v{}", record.id, record.version);
    let change = ChangeEntry::now(ChangeKind::Consent, &caller.name, subject.as_str());
    change_record::record(state, change, reason, &format!("consent version `{subject}`")).await
}

/// Stores the next version of a consent (the first, if it is new); withdrawal is a version with status `inactive`.
#[utoipa::path(
    put,
    path = "/v1/consents/{id}",
    tag = "consents",
    request_body(content = Object, description = "a FHIR `Consent` resource; its `id`, if any, must be the path's"),
    params(
        ("id" = String, Path, description = "the consent id"),
        ChangeReasonHeader,
    ),
    responses(
        (status = 200, description = "stored as the next version", body = Object, headers(("Location" = String, description = "`/v1/consents/{id}?version={n}`")),
         example = json!({"id": "c-1", "version": 1, "patient": "p-100", "status": "active", "fhir_version": "R4", "recorded_at_unix_ms": 1767225600000_u64})),
        (status = 201, description = "stored as version 1", body = Object, headers(("Location" = String, description = "`/v1/consents/{id}?version={n}`")),
         example = json!({"id": "c-1", "version": 1, "patient": "p-100", "status": "active", "fhir_version": "R4", "recorded_at_unix_ms": 1767225600000_u64})),
        (status = 409, description = "another version was stored at the same time", body = ErrorBody),
        (status = 422, description = "not a valid FHIR Consent, or its rules cannot be compiled against the policies in force; `field` names the path", body = ErrorBody),
        (status = 503, description = "the store failed, or the consent was stored but its change record could not be written", body = ErrorBody),
    )
)]
pub async fn supersede(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, AppError> {
    let reason = change_record::reason(&headers)?;
    let bundle = state.pipeline.bundle();
    let record = state.pipeline.consents.supersede(&bundle, &id, body).await.map_err(write_error)?;
    record_consent(&state, &caller, &record, reason.as_deref()).await?;
    let status = if record.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok(stored(status, &record))
}

/// `?version=N` on `GET /v1/consents/{id}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VersionQuery {
    /// The version; the latest when not given.
    version: Option<u64>,
}

/// A consent as stored: the latest version, or `?version=N`.
#[utoipa::path(
    get,
    path = "/v1/consents/{id}",
    tag = "consents",
    params(("id" = String, Path, description = "the consent id"), VersionQuery),
    responses(
        (status = 200, description = "the FHIR `Consent`, with `id` and `meta.versionId` filled in", body = Object,
         headers(("ETag" = String, description = "`W/\"{version}\"`"))),
        (status = 404, description = "no such consent, or no such version", body = ErrorBody),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<VersionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_field("version", e.body_text()))?;
    state.pipeline.consents.check_id(&id).await.map_err(write_error)?;
    let record = state.pipeline.consents.store().get(&id, query.version).await.map_err(store_error)?;
    let Some(record) = record else {
        let message = match query.version {
            Some(version) => format!("consent `{id}` has no version {version}"),
            None => format!("no consent `{id}`"),
        };
        return Err(AppError::new(StatusCode::NOT_FOUND, "not_found", message));
    };
    let mut response = Json(resource(&record)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("W/\"{}\"", record.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

/// The latest version of each of the patient's consents.
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/consents",
    tag = "consents",
    params(("id" = String, Path, description = "the patient id, such as `p-100`")),
    responses(
        (status = 200, description = "`{patient, consents: [{summary: {id, version, patient, status, fhir_version, recorded_at_unix_ms}, resource}]}`", body = Object),
        (status = 503, description = "the store failed", body = ErrorBody),
    )
)]
pub async fn for_patient(
    State(state): State<Arc<AppState>>,
    Path(patient): Path<String>,
) -> Result<Json<Value>, AppError> {
    let records = state.pipeline.consents.store().latest_for_patient(&patient).await.map_err(store_error)?;
    let consents: Vec<Value> =
        records.iter().map(|r| json!({"summary": summary(r), "resource": resource(r)})).collect();
    Ok(Json(json!({"patient": patient, "consents": consents})))
}

fn stored(status: StatusCode, record: &ConsentRecord) -> Response {
    let mut response = (status, Json(summary(record))).into_response();
    response.headers_mut().insert(header::LOCATION, location(record));
    response
}

/// `/v1/consents/{id}?version={n}`. New ids are FHIR ids, which need no
/// escaping; one stored before that rule is percent-encoded, so the header
/// is always present and names exactly that consent.
fn location(record: &ConsentRecord) -> HeaderValue {
    let mut path = String::from("/v1/consents/");
    for byte in record.id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(&format!("?version={}", record.version));
    // Only visible ASCII was written, which every header value may hold.
    HeaderValue::from_str(&path).unwrap_or_else(|_| HeaderValue::from_static("/v1/consents"))
}

fn summary(record: &ConsentRecord) -> Value {
    json!({
        "id": record.id,
        "version": record.version,
        "patient": record.patient,
        "status": record.status,
        "fhir_version": record.fhir_version,
        "recorded_at_unix_ms": record.recorded_at_unix_ms,
    })
}

/// The stored FHIR resource, with FHIR's version metadata filled in.
fn resource(record: &ConsentRecord) -> Value {
    let mut body = record.body.clone();
    if let Some(object) = body.as_object_mut() {
        object.insert("id".to_owned(), Value::String(record.id.clone()));
        let meta = object.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".to_owned(), Value::String(record.version.to_string()));
        }
    }
    body
}

fn write_error(error: ConsentWriteError) -> AppError {
    match error {
        ConsentWriteError::Fhir(error) => {
            let (status, code) = match error.kind {
                ConsentErrorKind::Malformed => (StatusCode::BAD_REQUEST, "invalid_request"),
                ConsentErrorKind::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent"),
            };
            // A problem with the consent as a whole has the path `.`: it names no field.
            if error.path == "." {
                AppError::new(status, code, error.message)
            } else {
                AppError::new(status, code, format!("{}: {}", error.path, error.message))
                    .with_field(error.path)
            }
        }
        ConsentWriteError::Policies(error) => AppError::refused(&error),
        ConsentWriteError::IdMismatch { .. } => AppError::bad_field("id", error),
        ConsentWriteError::Store(error) => store_error(error),
    }
}

fn store_error(error: StoreError) -> AppError {
    match error {
        StoreError::Conflict { .. } => AppError::new(StatusCode::CONFLICT, "conflict", error.to_string()),
        other => AppError::store_unavailable(other),
    }
}

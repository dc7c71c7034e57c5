//! The audit trail, read back: a patient's access log, the FHIR AuditEvent
//! export, the changes to the rules, and the log's head for anchoring.
//!
//! A patient may ask who accessed their records (GDPR Art. 15, the ePA's
//! access log); an auditor may ask about anyone. Whom a patient token may
//! ask about is not a list in the configuration but a decision of the
//! policy pack: the token's principal must be allowed to read the patient,
//! as the patient (`PATRQT`) or as their representative (`PWATRNY`), at the
//! server's clock. A representation that has lapsed, or that a consent
//! refuses, then closes the access log too, and that decision is itself
//! recorded.

// utoipa's generated `IntoParams` calls name the query types in full.
#![allow(unused_qualifications)]

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, extract::rejection::QueryRejection};
use consentry_engine::{DecisionRequest, EvaluationTime};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::error::{AppError, ErrorBody};
use crate::audit::chain::{Canonical, ChainedChange};
use crate::audit::fhir::{AccessLogEntry, bundle};
use crate::audit::query::ChangeQuery;
use crate::audit::{Anchor, AuditReadError, AuditStore, ChangeKind, PatientRecords, parse_bound};
use crate::auth::{Caller, Role};
use crate::state::AppState;

/// Records returned when the caller gives no limit.
const DEFAULT_LIMIT: usize = 100;
/// The most records one answer holds.
const MAX_LIMIT: usize = 1000;

/// `?from=&to=&limit=` on the access log.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessLogQuery {
    /// The earliest time, RFC 3339 or a date.
    from: Option<String>,
    /// The latest time, RFC 3339 or a date.
    to: Option<String>,
    /// Entries at most, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// `?patient=&from=&to=&_count=` on the AuditEvent export.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// The patient, `p-100` or `Patient/p-100`; required.
    patient: Option<String>,
    /// The earliest time, RFC 3339 or a date.
    from: Option<String>,
    /// The latest time, RFC 3339 or a date.
    to: Option<String>,
    /// Events at most, 1 to 1000; 100 when not given.
    #[serde(rename = "_count")]
    #[param(minimum = 1, maximum = 1000)]
    count: Option<usize>,
}

/// Who accessed, or tried to access, the patient's records, when, for what purpose, with what outcome.
///
/// For an auditor, or a patient token whose principal may read the
/// patient's access log (as the patient, or as their representative), as
/// the policy pack decides now.
#[utoipa::path(
    get,
    path = "/v1/patients/{id}/access-log",
    tag = "patients",
    params(("id" = String, Path, description = "the patient id, such as `p-100`"), AccessLogQuery),
    responses(
        (status = 200, description = "`{patient, from, to, entries: [...], more}`", body = Object),
        (status = 403, description = "a patient token whose principal may not read this patient's access log", body = ErrorBody),
        (status = 503, description = "the decision log is off, or cannot be read", body = ErrorBody),
    )
)]
pub async fn access_log(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(patient): Path<String>,
    query: Result<Query<AccessLogQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(query) = query.map_err(query_error)?;
    let window = Window::parse(query.from.as_deref(), query.to.as_deref(), query.limit, "limit")?;
    may_read_access_log(&state, &caller, &patient).await?;
    let found = window.read(&state, &patient).await?;
    let entries: Vec<AccessLogEntry> = found.records.iter().map(AccessLogEntry::of).collect();
    Ok(Json(json!({
        "patient": patient,
        "from": query.from,
        "to": query.to,
        "entries": entries,
        "more": found.more,
    })))
}

/// The patient's decisions as a FHIR R4 Bundle of AuditEvents (IHE BALP AuthZ-Consent).
#[utoipa::path(
    get,
    path = "/v1/audit/events",
    tag = "audit",
    params(EventsQuery),
    responses(
        (status = 200, description = "a FHIR `Bundle` of `AuditEvent`s", body = Object),
        (status = 503, description = "the decision log is off, or cannot be read", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(query) = query.map_err(query_error)?;
    let patient = query
        .patient
        .as_deref()
        .map(|p| p.strip_prefix("Patient/").unwrap_or(p))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AppError::bad_field("patient", "required: the patient whose events to export"))?;
    let window = Window::parse(query.from.as_deref(), query.to.as_deref(), query.count, "_count")?;
    let found = window.read(&state, patient).await?;
    Ok(Json(bundle(&found.records, found.more)))
}

/// `?since=&kind=&after=&limit=` on the list of changes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The earliest time, RFC 3339 or a date.
    since: Option<String>,
    /// Only changes of this kind: `policies`, `schema`, `links`, `entities`, `consent` or `plugins`.
    kind: Option<String>,
    /// Only changes after this `seq` (the last of the previous page).
    after: Option<u64>,
    /// Changes at most, 1 to 1000; 100 when not given.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Who changed policies, schema, links, entities, consents or plugins,
/// when, to what, and why, oldest first.
/// `after` (the
/// last `seq` of the previous page) pages through them exactly, where
/// `since` alone could repeat records made in the same millisecond.
#[utoipa::path(
    get,
    path = "/v1/audit/changes",
    tag = "audit",
    params(ChangesQuery),
    responses(
        (status = 200, description = "`{since, kind, after, changes: [{seq, change_id, at, actor, kind, subject, content_hash, counts, reason}], more}`", body = Object),
        (status = 503, description = "the decision log is off, or cannot be read", body = ErrorBody),
    )
)]
pub async fn changes(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Json<Value>, AppError> {
    let Query(query) = query.map_err(query_error)?;
    let since = bound("since", query.since.as_deref())?;
    let limit = limit_of(query.limit, "limit")?;
    let kind = query
        .kind
        .as_deref()
        .map(|name| {
            ChangeKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = ChangeKind::ALL.iter().map(|kind| kind.name()).collect();
                AppError::bad_field("kind", format!("unknown kind `{name}`; known: {}", known.join(", ")))
            })
        })
        .transpose()?;
    let found = audit_store(&state)?
        .changes(ChangeQuery { since, kind, after: query.after, limit })
        .await
        .map_err(read_error)?;
    let changes: Vec<Value> = found.records.iter().map(change_json).collect();
    Ok(Json(json!({
        "since": query.since,
        "kind": query.kind,
        "after": query.after,
        "changes": changes,
        "more": found.more,
    })))
}

/// A change record as the list shows it: its place in the chain and what
/// it says.
fn change_json(record: &ChainedChange) -> Value {
    let change = &record.change;
    json!({
        "seq": record.seq,
        "change_id": change.change_id,
        "at": change.at,
        "actor": change.actor,
        "kind": change.kind,
        "subject": change.subject,
        "content_hash": change.content_hash,
        "counts": change.counts,
        "reason": change.reason,
    })
}

/// The newest record of the decision log, as an anchor.
///
/// The anchor an auditor keeps outside the log for later `consentry audit verify
/// --anchor` runs (see [`crate::audit::anchor`]).
#[utoipa::path(
    get,
    path = "/v1/audit/head",
    tag = "audit",
    responses(
        (status = 200, description = "`{records, anchor, at}`; `anchor` and `at` are null when the log is empty", body = Object),
        (status = 503, description = "the decision log is off, or cannot be read", body = ErrorBody),
    )
)]
pub async fn head(State(state): State<Arc<AppState>>) -> Result<Json<Value>, AppError> {
    let last = audit_store(&state)?.last_record().await.map_err(read_error)?;
    Ok(Json(match last {
        Some(record) => json!({
            "records": record.seq().saturating_add(1),
            "anchor": Anchor { seq: record.seq(), hash: record.stored_hash().to_owned() }.to_string(),
            "at": record.at(),
        }),
        None => json!({"records": 0, "anchor": null, "at": null}),
    }))
}

/// The time range and size of a read.
struct Window {
    from: Option<EvaluationTime>,
    to: Option<EvaluationTime>,
    limit: usize,
}

impl Window {
    fn parse(
        from: Option<&str>,
        to: Option<&str>,
        limit: Option<usize>,
        limit_name: &str,
    ) -> Result<Self, AppError> {
        Ok(Self { from: bound("from", from)?, to: bound("to", to)?, limit: limit_of(limit, limit_name)? })
    }

    async fn read(&self, state: &AppState, patient: &str) -> Result<PatientRecords, AppError> {
        audit_store(state)?
            .about_patient(patient, self.from.as_ref(), self.to.as_ref(), self.limit)
            .await
            .map_err(read_error)
    }
}

/// The time bound `name` = `text`, if given.
fn bound(name: &str, text: Option<&str>) -> Result<Option<EvaluationTime>, AppError> {
    text.map(|text| parse_bound(name, text)).transpose().map_err(|e| AppError::bad_field(name, e.reason))
}

/// The limit `name` = `limit`, or the default.
fn limit_of(limit: Option<usize>, name: &str) -> Result<usize, AppError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AppError::bad_field(name, format!("must be between 1 and {MAX_LIMIT}, not {limit}")));
    }
    Ok(limit)
}

/// An auditor may read any access log; a patient token only that of a
/// patient its principal may read, as the policy pack decides now.
pub(super) async fn may_read_access_log(
    state: &AppState,
    caller: &Caller,
    patient: &str,
) -> Result<(), AppError> {
    if caller.has(Role::Auditor) {
        return Ok(());
    }
    let refused = |why: String| {
        AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token `{}` may not read the access log of patient `{patient}`: {why}", caller.name),
        )
    };
    let Some(principal) = caller.principal.clone() else {
        return Err(refused("it stands for no patient".to_owned()));
    };
    let purpose = if principal.type_name().to_string() == "Patient" { "PATRQT" } else { "PWATRNY" };
    let uid = |text: &str| {
        text.parse().map_err(|_| AppError::bad_field("id", format!("`{patient}` is not a valid patient id")))
    };
    let mut request = DecisionRequest::new(
        principal,
        uid(r#"Action::"read""#)?,
        uid(&format!("Patient::{}", Value::String(patient.to_owned())))?,
    );
    request.context = Some(json!({"purpose": purpose}));
    request.now = Some(crate::clock::now());
    let decided = state.pipeline.decide(&request).await?;
    if decided.decision.is_allowed() {
        Ok(())
    } else {
        Err(refused(format!("denied by decision `{}`", decided.id)))
    }
}

fn audit_store(state: &AppState) -> Result<&AuditStore, AppError> {
    state.pipeline.audit_store().ok_or_else(|| {
        AppError::new(StatusCode::SERVICE_UNAVAILABLE, "audit_off", "the decision log is off (--audit off)")
    })
}

fn query_error(rejection: QueryRejection) -> AppError {
    let text = rejection.body_text();
    // An unknown parameter is quoted in backticks; a value of the wrong type
    // is reported as `…query string: NAME: why`.
    let named = text
        .split_once("query string: ")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(name, _)| name)
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    let field = text.split('`').nth(1).or(named).unwrap_or("query").to_owned();
    AppError::bad_field(field, text)
}

fn read_error(error: AuditReadError) -> AppError {
    tracing::error!(%error, "the decision log could not be read");
    AppError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit_unavailable",
        format!("the decision log cannot be read: {error}"),
    )
}

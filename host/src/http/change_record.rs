//! Every change to the rules (policies, schema, links, entities, consents,
//! plugins) leaves a record in the decision log, so an auditor can show who
//! changed the rules that allowed an access, and why (GDPR Art. 5(2)).
//!
//! The change is committed first and recorded next: the store is the truth,
//! and a record of a change that never happened would be worse than a
//! missing one. A record that cannot be made durable is therefore a 503
//! that says the change itself was stored.

use axum::http::{HeaderMap, StatusCode};

use super::error::AppError;
use crate::audit::{ChangeEntry, checked_reason};
use crate::state::AppState;

/// The header a caller gives the reason for a change in.
pub const REASON_HEADER: &str = "x-change-reason";

/// The reason header of every route that changes the rules, for the
/// OpenAPI document: said once here, as [`reason`] reads it once.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[expect(dead_code, reason = "schema only: `reason` reads the header")]
pub(super) struct ChangeReasonHeader {
    /// why, recorded with the change in the decision log
    #[param(rename = "X-Change-Reason")]
    reason: Option<String>,
}

/// The caller's reason, checked before the change is made.
pub fn reason(headers: &HeaderMap) -> Result<Option<String>, AppError> {
    let text = headers
        .get(REASON_HEADER)
        .map(|value| value.to_str().map_err(|_| AppError::bad_field(REASON_HEADER, "must be visible ASCII")))
        .transpose()?;
    checked_reason(text).map_err(|e| AppError::bad_field(REASON_HEADER, e))
}

/// Records `change`, made as `made` (e.g. `policy version 3`), with the reason given.
pub async fn record(
    state: &AppState,
    change: ChangeEntry,
    reason: Option<&str>,
    made: &str,
) -> Result<(), AppError> {
    let change = change.with_reason(reason).map_err(|e| AppError::bad_field(REASON_HEADER, e))?;
    state.pipeline.record_change(change).await.map_err(|error| {
        tracing::error!(%error, made, "a change was stored but its change record was not written");
        AppError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            format!(
                "the change was stored as {made}, but its change record could not be written (`{}`); the server's log has the details",
                error.code()
            ),
        )
        .with_cause(error.code())
    })
}

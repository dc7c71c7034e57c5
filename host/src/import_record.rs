//! The change records of the CLI's imports.
//!
//! `consentry entities import` and `consentry policies import` write to the
//! store without a server, so no server's decision log hears of them, and a
//! change that allowed an access must still be shown (GDPR Art. 5(2)). So
//! an import records its own change, in the decision log the server uses,
//! where `audit verify` and `GET /v1/audit/changes` cover it like an admin
//! request. The log is opened, and the reason checked, before the store is
//! touched: an import that could not be recorded is not made.

use thiserror::Error;

use crate::audit::NotDurable;
use crate::audit::writer::AuditLog;
use crate::audit::{AuditOpenError, ChangeEntry, InvalidReason, checked_reason};
use crate::config::AuditConfig;

/// An open decision log and the reason to record, or nothing with `--audit off`.
#[derive(Debug)]
pub struct ImportRecord {
    log: Option<AuditLog>,
    reason: Option<String>,
}

/// Why an import's change cannot be, or was not, recorded.
#[derive(Debug, Error)]
pub enum ImportRecordError {
    /// The reason given cannot be recorded.
    #[error("invalid `--reason`: {0}")]
    Reason(#[from] InvalidReason),
    /// The decision log cannot be opened.
    #[error(transparent)]
    Open(#[from] AuditOpenError),
    /// The change was not made durable.
    #[error(transparent)]
    NotDurable(#[from] NotDurable),
}

impl ImportRecord {
    /// Checks `reason` and opens the log for an import into `store`: the
    /// one `audit` names (as `serve --audit` takes it), else the server's.
    pub async fn open(
        store: &str,
        audit: Option<String>,
        reason: Option<&str>,
    ) -> Result<Self, ImportRecordError> {
        let reason = checked_reason(reason)?;
        let config = AuditConfig { target: audit, ..AuditConfig::default() };
        let log = config.open(store).await?.map(|(log, _)| log);
        Ok(Self { log, reason })
    }

    /// Records `changes`, each once durable; the import is committed
    /// already, so a failure says so.
    pub async fn record(&self, changes: Vec<ChangeEntry>) -> Result<(), ImportRecordError> {
        let Some(log) = &self.log else { return Ok(()) };
        for change in changes {
            let change = change.with_reason(self.reason.as_deref())?;
            log.record_change(change)?.durable().await?;
        }
        Ok(())
    }
}

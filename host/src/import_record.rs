//! The change records of the CLI's imports.
//!
//! `consentry entities import` and `consentry policies import` write to the
//! store without a server, so no server's decision log hears of them, and a
//! change that allowed an access must still be shown (GDPR Art. 5(2)). So
//! an import records its own change, in the decision log the server uses,
//! where `audit verify` and `GET /v1/audit/changes` cover it like an admin
//! request. The log is opened, and the reason checked, before the store is
//! touched: an import that could not be recorded is not made.

use crate::audit::writer::AuditLog;
use crate::audit::{ChangeEntry, checked_reason};
use crate::cli::ImportRecordArgs;
use crate::config::AuditConfig;
use crate::serve::open_audit;

/// An open decision log and the reason to record, or nothing with `--audit off`.
#[derive(Debug)]
pub struct ImportRecord {
    log: Option<AuditLog>,
    reason: Option<String>,
}

impl ImportRecord {
    /// Checks the reason and opens the log for an import into `store`.
    pub async fn open(store: &str, args: &ImportRecordArgs) -> Result<Self, String> {
        let reason =
            checked_reason(args.reason.as_deref()).map_err(|e| format!("invalid `--reason`: {e}"))?;
        let config = AuditConfig { target: args.audit.clone(), ..AuditConfig::default() };
        let log = open_audit(store, &config).await?.map(|(log, _)| log);
        Ok(Self { log, reason })
    }

    /// Records `changes`, each once durable; the import is committed
    /// already, so a failure says so.
    pub async fn record(&self, changes: Vec<ChangeEntry>) -> Result<(), String> {
        let Some(log) = &self.log else { return Ok(()) };
        for change in changes {
            let change = change.with_reason(self.reason.as_deref()).map_err(|e| e.to_string())?;
            let recording = log.record_change(change).map_err(|e| e.to_string())?;
            recording.durable().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

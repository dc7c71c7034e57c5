//! Why the decision log could not take a record, as types with stable codes.
//!
//! A refused record denies its decision, and the reason reaches the caller
//! in the Deny, operators in `/readyz`, and dashboards in logs. Each needs
//! to tell a full queue from a failing disk from a database that is down
//! without parsing prose, so every failure has a [`code`](NotDurable::code)
//! as well as a message.

use std::sync::Arc;

use super::sink::SinkError;
use super::writer::DURABLE_WAIT;

/// Why the sink's last write failed. Shared, because the log's status and
/// every decision waiting on the batch all report the one failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct WriteFailure(Arc<SinkError>);

impl WriteFailure {
    /// The failure of a batch's write.
    pub fn new(error: SinkError) -> Self {
        Self(Arc::new(error))
    }

    /// `audit_files_failed` for a directory log, `audit_database_failed`
    /// for a PostgreSQL one.
    pub fn code(&self) -> &'static str {
        match *self.0 {
            SinkError::Jsonl(_) => "audit_files_failed",
            SinkError::Postgres(_) => "audit_database_failed",
        }
    }
}

/// Why the log refused a record before writing it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditRefusal {
    /// The writer has stopped.
    #[error("audit unavailable: the audit writer has stopped")]
    Stopped,
    /// The last write failed, and the log fails closed.
    #[error("audit unavailable: the audit log cannot be written: {0}")]
    Failing(WriteFailure),
    /// The queue is full.
    #[error("audit unavailable: the audit log is falling behind")]
    FallingBehind,
}

impl AuditRefusal {
    /// A stable code: `audit_stopped`, the failing write's code, or `audit_behind`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Stopped => "audit_stopped",
            Self::Failing(failure) => failure.code(),
            Self::FallingBehind => "audit_behind",
        }
    }
}

/// Why a record that had to be durable is not: the decision it records is
/// then denied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotDurable {
    /// The log refused the record before writing it (full, failing or stopped).
    #[error(transparent)]
    Refused(#[from] AuditRefusal),
    /// The batch that held the record could not be written.
    #[error("audit unavailable: the audit log cannot be written: {0}")]
    WriteFailed(WriteFailure),
    /// The writer stopped before it wrote the batch.
    #[error("audit unavailable: the audit writer stopped before the record was written")]
    WriterStopped,
    /// The record was not durable within [`DURABLE_WAIT`]: the log is
    /// blocked (a locked table, a stalled disk).
    #[error(
        "audit unavailable: the record was not durable within {}",
        humantime::format_duration(DURABLE_WAIT)
    )]
    TimedOut,
}

impl NotDurable {
    /// A stable code for the reason, for answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Refused(refusal) => refusal.code(),
            Self::WriteFailed(failure) => failure.code(),
            Self::WriterStopped => "audit_stopped",
            Self::TimedOut => "audit_timed_out",
        }
    }
}

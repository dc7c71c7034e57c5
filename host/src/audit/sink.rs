//! Where the writer puts its batches, and how the `--audit` value picks it.
//!
//! The writer's job (batching, backpressure, reporting failures, counting)
//! is the same whatever holds the records, so it is written once over this
//! enum: a directory of JSON Lines files for a lone sidecar, or a PostgreSQL
//! table that replicas share. Both store the same canonical lines, so one
//! `audit verify` and one reader serve both.

use std::fmt;
use std::path::PathBuf;

use super::anchor::{Anchor, MissingAnchor, Verified};
use super::chain::{AuditEntry, ChainBreak, ChainLine, Verifier};
use super::disk::DiskWatch;
use super::jsonl::{AuditIoError, JsonlSink, Retention, VerifyError, verify_dir};
use super::postgres::{self, AuditDbError, PostgresSink};
use super::query::AuditStore;
use super::writer::{AuditLog, Backpressure, Durability};

/// Connections the PostgreSQL read side may hold.
const READ_CONNECTIONS: u32 = 4;

/// A sink the writer appends batches to.
#[derive(Debug)]
pub enum AuditSink {
    /// JSON Lines files in a directory.
    Jsonl(JsonlSink),
    /// A PostgreSQL table shared by replicas (boxed: its connection options
    /// are large).
    Postgres(Box<PostgresSink>),
}

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The directory sink failed.
    #[error(transparent)]
    Jsonl(#[from] AuditIoError),
    /// The PostgreSQL sink failed.
    #[error(transparent)]
    Postgres(#[from] AuditDbError),
}

impl AuditSink {
    /// Chains and stores `entries` in order, all or none; returns the records
    /// as stored.
    pub fn append(&mut self, entries: Vec<AuditEntry>) -> Result<Vec<ChainLine>, SinkError> {
        match self {
            Self::Jsonl(sink) => Ok(sink.append(entries)?),
            Self::Postgres(sink) => Ok(sink.append(entries)?),
        }
    }
}

/// Where the decision log is kept, as `--audit` names it.
#[derive(Clone, PartialEq, Eq)]
pub enum AuditTarget {
    /// Nowhere: decisions are not recorded.
    Off,
    /// A directory of hash-chained JSON Lines files.
    Dir(PathBuf),
    /// A PostgreSQL database, by `postgres://…` or `postgresql://…` URL.
    Postgres {
        /// The URL; it may hold a password, so it is never shown.
        url: String,
    },
}

impl AuditTarget {
    /// `off`, a PostgreSQL URL (checked here, without echoing it), or else
    /// a directory.
    pub fn parse(text: &str) -> Result<Self, AuditDbError> {
        if text == "off" {
            return Ok(Self::Off);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            postgres::connect_options(text)?;
            return Ok(Self::Postgres { url: text.to_owned() });
        }
        Ok(Self::Dir(PathBuf::from(text)))
    }

    /// The target for logs and messages: never a password.
    pub fn describe(&self) -> String {
        match self {
            Self::Off => "off".to_owned(),
            Self::Dir(dir) => dir.display().to_string(),
            Self::Postgres { url } => postgres::connect_options(url).map_or_else(
                |_| "an invalid PostgreSQL URL".to_owned(),
                |options| postgres::describe(&options),
            ),
        }
    }
}

impl fmt::Debug for AuditTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuditTarget({})", self.describe())
    }
}

/// How the decision log is run, from the command line.
#[derive(Debug, Clone, Copy)]
pub struct AuditOptions {
    /// Size at which a JSON Lines file is closed and the next one begun.
    pub rotate_bytes: u64,
    /// Which finished files are deleted once covered by an anchor.
    pub retention: Retention,
    /// Free bytes on a directory log's disk below which it is reported low.
    pub low_water_bytes: u64,
    /// Records held in memory before backpressure applies.
    pub queue: usize,
    /// What happens to decisions when the log cannot keep up.
    pub backpressure: Backpressure,
    /// Which decisions are answered only once their record is durable.
    pub durability: Durability,
}

/// Opens the decision log at `target` (creating the directory, or
/// migrating the table) and starts its writer; returns the handle decisions
/// submit through and the read side, or `None` when the target is `off`.
pub async fn open(
    target: &AuditTarget,
    options: &AuditOptions,
) -> Result<Option<(AuditLog, AuditStore)>, AuditOpenError> {
    let (sink, store, disk) = match target {
        AuditTarget::Off => return Ok(None),
        AuditTarget::Dir(dir) => {
            let sink = JsonlSink::open_tidied(dir, options.rotate_bytes, options.retention)
                .map_err(|source| AuditOpenError::Directory { log: target.describe(), source })?;
            let disk = DiskWatch::new(dir, options.low_water_bytes);
            (AuditSink::Jsonl(sink), AuditStore::jsonl(dir.clone()), Some(disk))
        }
        // The database's disk is the database's operators' to watch.
        AuditTarget::Postgres { url } => {
            let (sink, pool) = postgres::open(url, READ_CONNECTIONS)
                .await
                .map_err(|source| AuditOpenError::Database { log: target.describe(), source })?;
            (AuditSink::Postgres(Box::new(sink)), AuditStore::postgres(pool), None)
        }
    };
    tracing::info!(
        log = %target.describe(),
        backpressure = ?options.backpressure,
        durability = ?options.durability,
        "decision log open"
    );
    let log =
        AuditLog::start(sink, target.describe(), options.queue, options.backpressure, options.durability)
            .map_err(AuditOpenError::Writer)?
            .watching_disk(disk);
    Ok(Some((log, store)))
}

/// Why [`open`] could not open a decision log.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    /// The configured target is not a usable log address.
    #[error("invalid `audit.target`: {0}")]
    Target(AuditDbError),
    /// The directory could not be opened or tidied.
    #[error("cannot open the decision log `{log}`: {source}")]
    Directory {
        /// The log, as operators see it.
        log: String,
        /// Why.
        source: AuditIoError,
    },
    /// The database could not be reached or migrated.
    #[error("cannot open the decision log `{log}`: {source}")]
    Database {
        /// The log, as operators see it (never the URL's password).
        log: String,
        /// Why.
        source: AuditDbError,
    },
    /// The writer thread could not be started.
    #[error("cannot start the decision log writer: {0}")]
    Writer(std::io::Error),
}

/// Why [`verify`] could not vouch for a log.
#[derive(Debug, thiserror::Error)]
pub enum VerifyFailure {
    /// The chain is broken, or a record differs from its anchor.
    #[error(transparent)]
    Break(#[from] ChainBreak),
    /// An anchor names a record past the end of the log.
    #[error(transparent)]
    Truncated(#[from] MissingAnchor),
    /// The log could not be read.
    #[error("{0}")]
    Unreadable(String),
}

/// Checks the whole chain of the log at `target`, a directory's files in
/// order or a table's rows in `seq` order, against `anchors` noted earlier:
/// its records and head, or the first break.
pub async fn verify(target: &AuditTarget, anchors: Vec<Anchor>) -> Result<Verified, VerifyFailure> {
    let mut verifier = Verifier::anchored(anchors);
    match target {
        AuditTarget::Off => return Err(VerifyFailure::Unreadable("`off` names no decision log".to_owned())),
        AuditTarget::Dir(dir) => verify_dir(dir, &mut verifier).map_err(|error| match error {
            VerifyError::Break(broken) => VerifyFailure::Break(broken),
            error @ VerifyError::Io { .. } => VerifyFailure::Unreadable(error.to_string()),
        })?,
        AuditTarget::Postgres { url } => {
            let options =
                postgres::connect_options(url).map_err(|e| VerifyFailure::Unreadable(e.to_string()))?;
            postgres::verify(&options, &mut verifier)
                .await
                .map_err(|error| VerifyFailure::Unreadable(error.to_string()))??;
        }
    }
    Ok(verifier.finish()?)
}

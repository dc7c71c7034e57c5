//! Reading the decision log back: what was decided about one patient, and
//! when; and who changed the rules, and when.
//!
//! Patients may ask who looked at their records, and privacy officers must
//! answer from the log; so the log answers "every decision about patient P
//! made between T1 and T2", in chain order, from either sink. Auditors ask
//! who changed the rules that allowed an access; so it also answers "every
//! change since T", of one kind or all. A directory is scanned file by
//! file, off the async runtime; a table answers from its `patients` index
//! and its index of change rows. Reading does not check the chain, which is
//! `consentry audit verify`'s job: a report is as trustworthy as the last
//! verification of the log it came from.
//!
//! # Time bounds
//!
//! `from` and `to` are FHIR dateTimes of any precision (`2026`, `2026-11`,
//! `2026-11-30`, `2026-11-30T08:00:00+01:00`). Each stands for its first
//! instant, a date without a time being midnight UTC, and the range is
//! half-open, `[from, to)`: `from=2026-11&to=2026-12` is all of November.
//! Records are compared by their `at`, the server clock's UTC instant.

use std::fmt;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use consentry_engine::EvaluationTime;
use sqlx::PgPool;

use super::chain::{ChainLine, ChainedChange, ChainedRecord, is_change_line, push_string};
use super::change::ChangeKind;
use super::jsonl::{AuditIoError, last_record, log_files, open_lines};
use super::postgres::{self, AuditDbError};

/// The records a query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientRecords {
    /// The matching records in `seq` order, at most the limit asked for.
    pub records: Vec<ChainedRecord>,
    /// Whether more records matched than were returned.
    pub more: bool,
}

/// The change records a query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecords {
    /// The matching records in `seq` order, at most the limit asked for.
    pub records: Vec<ChainedChange>,
    /// Whether more records matched than were returned.
    pub more: bool,
}

/// Which change records to read: those made at or after `since`, of `kind`,
/// after the record `after` (a `seq`, for paging), at most `limit`; a
/// missing condition admits every record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeQuery {
    /// The earliest instant, inclusive.
    pub since: Option<EvaluationTime>,
    /// The one kind of change wanted.
    pub kind: Option<ChangeKind>,
    /// Only records with a greater `seq`: the last `seq` of the page before.
    pub after: Option<u64>,
    /// How many records at most.
    pub limit: usize,
}

/// A time bound that is not a FHIR dateTime: the caller's mistake, to be
/// answered with a 400 naming the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{parameter}`: {reason}")]
pub struct BoundError {
    /// The parameter, e.g. `from`.
    pub parameter: String,
    /// What is wrong with its value (which it quotes).
    pub reason: String,
}

/// Parses the value of the time-bound parameter `parameter` (see the
/// [module documentation](self)) as the instant it starts at.
pub fn parse_bound(parameter: &str, text: &str) -> Result<EvaluationTime, BoundError> {
    EvaluationTime::parse(text).map_err(|reason| BoundError { parameter: parameter.to_owned(), reason })
}

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditReadError {
    /// A log file or the directory could not be read.
    #[error("cannot read the decision log `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A line that should hold a record does not.
    #[error("the decision log `{file}` line {line} is not a record: {reason}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// The line, 1-based.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A log file's last record cannot be read back.
    #[error(transparent)]
    Log(#[from] AuditIoError),
    /// The audit database failed.
    #[error(transparent)]
    Database(#[from] AuditDbError),
    /// The blocking scan did not finish.
    #[error("the decision log reader stopped: {0}")]
    Task(String),
}

/// The read side of the decision log.
#[derive(Clone)]
pub struct AuditStore {
    source: Source,
}

/// Where the records are read from.
#[derive(Clone)]
enum Source {
    /// A directory of JSON Lines files.
    Jsonl(PathBuf),
    /// A PostgreSQL table, through a pool on the server's runtime.
    Postgres(PgPool),
}

impl fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Jsonl(dir) => f.debug_tuple("AuditStore::Jsonl").field(dir).finish(),
            Source::Postgres(_) => f.write_str("AuditStore::Postgres"),
        }
    }
}

impl AuditStore {
    /// Reads the log files in `dir`.
    pub fn jsonl(dir: PathBuf) -> Self {
        Self { source: Source::Jsonl(dir) }
    }

    /// Reads the audit table through `pool`.
    pub(super) fn postgres(pool: PgPool) -> Self {
        Self { source: Source::Postgres(pool) }
    }

    /// The records whose `patients` include `patient` and whose `at` lies in
    /// `[from, to)` (a missing bound is open), in `seq` order: at most
    /// `limit`, and whether more matched.
    pub async fn about_patient(
        &self,
        patient: &str,
        from: Option<&EvaluationTime>,
        to: Option<&EvaluationTime>,
        limit: usize,
    ) -> Result<PatientRecords, AuditReadError> {
        match &self.source {
            Source::Jsonl(dir) => {
                let query = Query {
                    patient: patient.to_owned(),
                    from: from.map(EvaluationTime::unix_millis),
                    to: to.map(EvaluationTime::unix_millis),
                    limit,
                };
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || scan_dir(&dir, &query))
                    .await
                    .map_err(|error| AuditReadError::Task(error.to_string()))?
            }
            Source::Postgres(pool) => {
                let (records, more) = postgres::about_patient(pool, patient, from, to, limit).await?;
                Ok(PatientRecords { records, more })
            }
        }
    }

    /// The change records `query` asks for, in `seq` order: at most its
    /// limit, and whether more matched.
    pub async fn changes(&self, query: ChangeQuery) -> Result<ChangeRecords, AuditReadError> {
        match &self.source {
            Source::Jsonl(dir) => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || scan_changes(&dir, &query))
                    .await
                    .map_err(|error| AuditReadError::Task(error.to_string()))?
            }
            Source::Postgres(pool) => {
                let (records, more) = postgres::changes(pool, &query).await?;
                Ok(ChangeRecords { records, more })
            }
        }
    }

    /// The newest record written, whose `seq` and `hash` make the anchor an
    /// auditor keeps outside the log; `None` while the log is empty.
    pub async fn last_record(&self) -> Result<Option<ChainLine>, AuditReadError> {
        match &self.source {
            Source::Jsonl(dir) => {
                let dir = dir.clone();
                Ok(tokio::task::spawn_blocking(move || last_record(&dir))
                    .await
                    .map_err(|error| AuditReadError::Task(error.to_string()))??)
            }
            Source::Postgres(pool) => Ok(postgres::last_record(pool).await?),
        }
    }
}

/// A query, as the directory scan needs it.
struct Query {
    patient: String,
    /// Inclusive, in milliseconds since the Unix epoch.
    from: Option<i64>,
    /// Exclusive, in milliseconds since the Unix epoch.
    to: Option<i64>,
    limit: usize,
}

impl Query {
    /// Whether an instant (milliseconds since the Unix epoch) lies in
    /// `[from, to)`.
    fn admits(&self, at: i64) -> bool {
        self.from.is_none_or(|from| at >= from) && self.to.is_none_or(|to| at < to)
    }
}

/// The `at` of a line in canonical form, read without parsing the line:
/// it is the third member, after `seq` (a number) and `decision_id` (a
/// UUID), so the first `,"at":"` is its start, and an instant holds no `"`.
fn canonical_at(line: &str) -> Option<&str> {
    const KEY: &str = ",\"at\":\"";
    let start = line.find(KEY)? + KEY.len();
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Calls `visit` with each complete line of the log files of `dir`, in
/// order, and its file and line number, until it answers `false`. A last
/// line without its line break is an append in progress (or a torn one the
/// sink will set aside), not yet a record, and is passed over.
fn each_line(
    dir: &Path,
    mut visit: impl FnMut(&str, &Path, usize) -> Result<bool, AuditReadError>,
) -> Result<(), AuditReadError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditReadError::Io { path, source }
    };
    for (_, path) in log_files(dir).map_err(io_error(dir))? {
        let mut reader = match open_lines(&path) {
            Ok(reader) => reader,
            // Retired since the directory was listed: its records are no
            // longer part of the log.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(io_error(&path)(error)),
        };
        let mut buf = Vec::new();
        let mut line_no = 0_usize;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(io_error(&path))? == 0 {
                break;
            }
            line_no = line_no.saturating_add(1);
            let Some(line) = buf.strip_suffix(b"\n") else {
                break;
            };
            let line = std::str::from_utf8(line).map_err(|_| AuditReadError::Corrupt {
                file: path.clone(),
                line: line_no,
                reason: "not UTF-8".to_owned(),
            })?;
            if !visit(line, &path, line_no)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The error for line `line` of `file`, which is not the record it should be.
fn corrupt(file: &Path, line: usize, reason: String) -> AuditReadError {
    AuditReadError::Corrupt { file: file.to_path_buf(), line, reason }
}

/// Scans the log files of `dir` for a patient's decisions.
fn scan_dir(dir: &Path, query: &Query) -> Result<PatientRecords, AuditReadError> {
    // The patient id as the canonical form writes it, to pass over most
    // lines without parsing them.
    let mut needle = String::new();
    push_string(&mut needle, &query.patient);
    let bounded = query.from.is_some() || query.to.is_some();
    let mut records = Vec::new();
    let mut more = false;
    each_line(dir, |line, path, line_no| {
        // A change record names no patients, though its text may hold the
        // patient's id (a consent's subject).
        if !line.contains(&needle) || is_change_line(line) {
            return Ok(true);
        }
        // Most lines about a busy patient lie outside a time range:
        // passing over them by their `at` spares parsing them.
        if bounded
            && let Some(at) = canonical_at(line).and_then(|at| EvaluationTime::parse(at).ok())
            && !query.admits(at.unix_millis())
        {
            return Ok(true);
        }
        let record: ChainedRecord =
            serde_json::from_str(line).map_err(|error| corrupt(path, line_no, error.to_string()))?;
        if !record.entry.patients.contains(&query.patient) {
            return Ok(true);
        }
        let at =
            EvaluationTime::parse(&record.entry.at).map_err(|e| corrupt(path, line_no, e))?.unix_millis();
        if !query.admits(at) {
            return Ok(true);
        }
        if records.len() >= query.limit {
            more = true;
            return Ok(false);
        }
        records.push(record);
        Ok(true)
    })?;
    Ok(PatientRecords { records, more })
}

/// Scans the log files of `dir` for change records. Change records are few
/// and marked, so decision lines are passed over without being parsed.
fn scan_changes(dir: &Path, query: &ChangeQuery) -> Result<ChangeRecords, AuditReadError> {
    let since = query.since.as_ref().map(EvaluationTime::unix_millis);
    let mut records = Vec::new();
    let mut more = false;
    each_line(dir, |line, path, line_no| {
        if !is_change_line(line) {
            return Ok(true);
        }
        let record: ChainedChange =
            serde_json::from_str(line).map_err(|error| corrupt(path, line_no, error.to_string()))?;
        let change = &record.change;
        if query.after.is_some_and(|after| record.seq <= after)
            || query.kind.is_some_and(|kind| kind.name() != change.kind)
        {
            return Ok(true);
        }
        let at = EvaluationTime::parse(&change.at).map_err(|e| corrupt(path, line_no, e))?.unix_millis();
        if since.is_some_and(|since| at < since) {
            return Ok(true);
        }
        if records.len() >= query.limit {
            more = true;
            return Ok(false);
        }
        records.push(record);
        Ok(true)
    })?;
    Ok(ChangeRecords { records, more })
}

#[cfg(test)]
mod tests;

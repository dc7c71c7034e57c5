//! Compressing finished files and retiring old ones, off the request path.
//!
//! A full disk stops a fail-closed sidecar as surely as a crash, so old
//! files must go; but a deleted record is evidence gone, so a file is only
//! deleted once its records are *covered*: every `seq` in it is at or below
//! an anchor kept outside the log, which still proves what they were. The
//! anchors the operator kept are listed in `DIR/anchors.txt` (one `SEQ:HASH`
//! a line, as `audit verify` prints them; `#` starts a comment); retention counts the newest one,
//! and only if the log still holds that record with that hash.
//!
//! Every deletion is first written to `DIR/retired.jsonl` (the file, its
//! first and last `seq`, its last `hash` and the anchor that covered it), so
//! `verify` can tell a retired beginning from records cut out: the chain then
//! starts at the first record kept, whose `prev` must be the last retired
//! hash. Files go oldest first, so the records kept stay one run.
//!
//! All of it runs on a thread of its own, woken at start-up and after each
//! rotation: compressing 64 MiB takes long enough to stall a batch.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

use super::files::{compress, is_compressed, open_lines};
use super::{AuditIoError, VerifyError, io_error, last_record_in, log_files, sync_dir};
use crate::audit::anchor::Anchor;
use crate::audit::chain::{Canonical, ChainBreak, ChainLine, Verifier};

/// Where the operator lists the anchors kept outside the log.
pub const ANCHORS_FILE: &str = "anchors.txt";
/// Where each retired file is recorded before it is deleted.
pub const RETIRED_FILE: &str = "retired.jsonl";

/// How many log files to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many files, the one being written included, once
    /// older ones are covered by an anchor; 0 keeps every file.
    pub keep_files: usize,
}

/// One retired file, as `retired.jsonl` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredFile {
    /// The file's name.
    pub file: String,
    /// The `seq` of its first record.
    pub first_seq: u64,
    /// The `seq` of its last record.
    pub last_seq: u64,
    /// The `hash` of its last record: the `prev` of the next one kept.
    pub last_hash: String,
    /// The anchor that covered it, `SEQ:HASH`.
    pub anchor: String,
}

/// What one pass of [`tidy`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tidied {
    /// Files compressed.
    pub compressed: usize,
    /// Files retired (deleted).
    pub retired: usize,
    /// Why files over the limit were kept, if some were.
    pub kept_because: Option<String>,
}

/// Starts the thread that tidies `dir`; it tidies whenever it is sent the
/// number of the file being written, and ends when the sender is dropped.
pub(super) fn start(dir: PathBuf, retention: Retention) -> io::Result<mpsc::Sender<u64>> {
    let (sender, receiver) = mpsc::channel::<u64>();
    std::thread::Builder::new().name("audit-tidy".to_owned()).spawn(move || {
        while let Ok(mut current) = receiver.recv() {
            // Rotations that came while a pass ran need one pass, not one each.
            while let Ok(newer) = receiver.try_recv() {
                current = newer;
            }
            let result = tidy(&dir, current, retention);
            if let Ok(bytes) = disk_bytes(&dir) {
                metrics::gauge!("consentry_audit_disk_bytes").set(bytes as f64);
            }
            match result {
                Ok(done) => {
                    if let Some(reason) = done.kept_because {
                        tracing::warn!(dir = %dir.display(), %reason, "decision log files kept past the retention limit");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot compress or retire decision log files"),
            }
        }
    })?;
    Ok(sender)
}

/// Compresses every finished plain file (numbered below `current`, the one
/// being written), then retires the oldest files past `retention` that an
/// anchor covers.
pub fn tidy(dir: &Path, current: u64, retention: Retention) -> Result<Tidied, AuditIoError> {
    let mut done = Tidied::default();
    for (index, path) in log_files(dir).map_err(io_error("list", dir))? {
        if index < current && !is_compressed(&path) {
            compress(dir, &path)?;
            done.compressed += 1;
        }
    }
    if retention.keep_files == 0 {
        return Ok(done);
    }
    let files = log_files(dir).map_err(io_error("list", dir))?;
    let excess: Vec<_> = files
        .iter()
        .take(files.len().saturating_sub(retention.keep_files))
        .filter(|(index, _)| *index < current)
        .collect();
    if excess.is_empty() {
        return Ok(done);
    }
    let Some(anchor) = holding_anchor(dir, &files)? else {
        done.kept_because = Some(format!(
            "{} file(s) are past the limit, but `{ANCHORS_FILE}` names no anchor the log holds",
            excess.len()
        ));
        return Ok(done);
    };
    for (_, path) in excess {
        let Some(retired) = describe(path, &anchor)? else {
            continue;
        };
        if retired.last_seq > anchor.seq {
            done.kept_because = Some(format!(
                "`{}` holds records up to seq {}, past the newest anchor `{anchor}`",
                retired.file, retired.last_seq
            ));
            break;
        }
        record_retired(dir, &retired)?;
        fs::remove_file(path).map_err(io_error("remove", path))?;
        sync_dir(dir)?;
        tracing::info!(file = %retired.file, last_seq = retired.last_seq, anchor = %anchor, "retired a decision log file");
        done.retired += 1;
    }
    Ok(done)
}

/// What the log's files take on disk, for the gauge an operator alerts on
/// before the disk fills.
pub fn disk_bytes(dir: &Path) -> Result<u64, AuditIoError> {
    let mut total = 0_u64;
    for (_, path) in log_files(dir).map_err(io_error("list", dir))? {
        total =
            total.saturating_add(fs::metadata(&path).map_err(io_error("read the metadata of", &path))?.len());
    }
    Ok(total)
}

/// The newest anchor in `anchors.txt` whose record the log holds with that
/// hash; a line that is no anchor is passed over with a warning.
fn holding_anchor(dir: &Path, files: &[(u64, PathBuf)]) -> Result<Option<Anchor>, AuditIoError> {
    let path = dir.join(ANCHORS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AuditIoError::Io { action: "read", path, source }),
    };
    let newest = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            line.parse::<Anchor>()
                .inspect_err(|error| tracing::warn!(%error, file = %path.display(), "not an anchor; ignored"))
                .ok()
        })
        .max_by_key(|anchor| anchor.seq);
    let Some(anchor) = newest else {
        return Ok(None);
    };
    for (_, file) in files {
        let (Some(last), _) = last_record_in(file)? else {
            continue;
        };
        if last.seq() < anchor.seq {
            continue;
        }
        let held = record_in(file, anchor.seq)?.is_some_and(|record| record.stored_hash() == anchor.hash);
        if !held {
            tracing::warn!(%anchor, "the newest recorded anchor does not match the log; retiring nothing");
        }
        return Ok(held.then_some(anchor));
    }
    Ok(None)
}

/// The record with `seq` in `file`, if it holds one.
fn record_in(file: &Path, seq: u64) -> Result<Option<ChainLine>, AuditIoError> {
    let prefix = format!("{{\"seq\":{seq},");
    let mut reader = open_lines(file).map_err(io_error("read", file))?;
    let mut buf = String::new();
    loop {
        buf.clear();
        if reader.read_line(&mut buf).map_err(io_error("read", file))? == 0 {
            return Ok(None);
        }
        if buf.starts_with(&prefix) {
            return Ok(ChainLine::parse(buf.trim_end()).ok());
        }
    }
}

/// What retiring `file` under `anchor` would record; `None` for a file with
/// no records.
fn describe(file: &Path, anchor: &Anchor) -> Result<Option<RetiredFile>, AuditIoError> {
    let (Some(last), _) = last_record_in(file)? else {
        return Ok(None);
    };
    let mut reader = open_lines(file).map_err(io_error("read", file))?;
    let mut first = String::new();
    reader.read_line(&mut first).map_err(io_error("read", file))?;
    let first_seq = ChainLine::parse(first.trim_end()).map_or(last.seq(), |record| record.seq());
    Ok(Some(RetiredFile {
        file: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        first_seq,
        last_seq: last.seq(),
        last_hash: last.stored_hash().to_owned(),
        anchor: anchor.to_string(),
    }))
}

/// Appends `retired` to `retired.jsonl`, durably, before its file goes.
fn record_retired(dir: &Path, retired: &RetiredFile) -> Result<(), AuditIoError> {
    let path = dir.join(RETIRED_FILE);
    let mut line = serde_json::to_string(retired).map_err(|error| AuditIoError::Io {
        action: "write",
        path: path.clone(),
        source: io::Error::other(error),
    })?;
    line.push('\n');
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(line.as_bytes()).and_then(|()| file.sync_all()))
        .map_err(io_error("append to", &path))?;
    sync_dir(dir)
}

/// The retirement that ends just before `seq`, from `retired.jsonl`: what
/// lets `verify` start a chain at `seq` rather than 0.
pub(super) fn retired_before(dir: &Path, seq: u64) -> io::Result<Option<RetiredFile>> {
    let text = match fs::read_to_string(dir.join(RETIRED_FILE)) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    Ok(text
        .lines()
        .filter_map(|line| serde_json::from_str::<RetiredFile>(line).ok())
        .find(|retired| retired.last_seq.checked_add(1) == Some(seq)))
}

/// Starts `verifier` after the retired records, when the log's first line
/// is not `seq` 0: `retired.jsonl` must record the retirement that ended
/// just before it, or records are missing from the log's beginning.
pub(super) fn resume_after_retired(
    dir: &Path,
    verifier: &mut Verifier,
    file: &str,
    line: &str,
) -> Result<(), VerifyError> {
    let seq = match ChainLine::parse(line) {
        Ok(record) if record.seq() > 0 => record.seq(),
        // A first line that is no record is reported by the check itself.
        _ => return Ok(()),
    };
    let retired = retired_before(dir, seq)
        .map_err(|source| VerifyError::Io { path: dir.join(RETIRED_FILE), source })?;
    let Some(retired) = retired else {
        return Err(ChainBreak {
            file: file.to_owned(),
            line: 1,
            seq: Some(seq),
            reason: format!(
                "the log begins at seq {seq}: records before it are missing, and `{}` records no retirement \
                 ending at seq {}",
                RETIRED_FILE,
                seq - 1
            ),
        }
        .into());
    };
    verifier
        .resume(seq, retired.last_hash, retired.anchor)
        .map_err(|reason| ChainBreak { file: file.to_owned(), line: 1, seq: Some(seq), reason }.into())
}

#[cfg(test)]
mod tests;

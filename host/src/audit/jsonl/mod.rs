//! The embedded audit sink: JSON Lines files in a directory.
//!
//! A sidecar must be able to keep an audit trail with nothing but a disk, and
//! the trail must outlive the process: so every batch is fsynced before the
//! sink reports success, and on restart the sink reads the chain head back
//! from the last record and carries on, so one directory holds one unbroken
//! chain however often the sidecar restarts. The files rotate by size, so old
//! ones can be shipped or archived whole; the chain runs across them, so the
//! set can still be checked end to end by [`verify_dir`].
//!
//! # Layout
//!
//! `DIR/decisions-000001.jsonl`, `DIR/decisions-000002.jsonl`, …: six or more
//! digits, taken in numeric order; other names are ignored. Each line is one
//! record in the canonical form of [`super::chain`]. `DIR/decisions.lock` is
//! locked while a sink is open, so two writers cannot interleave one chain.
//! A finished file may be compressed, `decisions-NNNNNN.jsonl.zst` ([`files`]);
//! `DIR/anchors.txt` and `DIR/retired.jsonl` serve retention ([`retention`]).
//!
//! # A torn last line
//!
//! A crash in the middle of an append can leave the newest file ending in a
//! partial line. That line belongs to a batch whose fsync never returned, so
//! no caller was ever told it was recorded; but it is still audit data, and
//! it is not this process's place to destroy it. Refusing to open would be
//! safe but would stop decisions (or auditing) after any power cut until
//! someone intervened by hand. So [`JsonlSink::open`] *moves it aside*: the
//! partial bytes are written to `decisions-NNNNNN.jsonl.torn-at-OFFSET` (a
//! name the log ignores), that file is synced, and only then is the log file
//! cut back to its last complete line, which the chain continues from. A
//! warning is logged and [`JsonlSink::torn_tail_moved_to`] names the file.
//! Redoing it after a crash half-way is harmless. Only the newest file can be
//! torn by a crash (a file is only left behind after a successful append), so
//! a torn older file, or a last record whose hash does not match its content,
//! is refused: that is damage for a person to look at, not for the sink to
//! paper over.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

mod files;
mod retention;

pub(super) use files::open_lines;
pub use retention::{ANCHORS_FILE, Retention};

use super::chain::{AuditEntry, Canonical, ChainBreak, ChainHead, ChainLine, Verifier, chain, record_hash};

/// The start of a log file's name.
const PREFIX: &str = "decisions-";
/// The end of a log file's name.
const SUFFIX: &str = ".jsonl";
/// The file locked while a sink has the directory open.
const LOCK_FILE: &str = "decisions.lock";
/// How much of a file's end is read first when looking for its last line.
const TAIL_WINDOW: u64 = 8 * 1024;
/// How many set-aside files one offset may get before giving up.
const MAX_ASIDE: u32 = 1000;

/// Why the sink could not open or write.
#[derive(Debug, thiserror::Error)]
pub enum AuditIoError {
    /// A file or directory operation failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done, e.g. `append to`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another sink, in this process or another, has the directory open.
    #[error("the audit directory `{path}` is in use by another writer")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The log cannot be continued from what is on disk.
    #[error("cannot continue the audit log from `{path}`: {reason}")]
    Corrupt {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier fsync failed, so what the file holds is unknown; the sink
    /// refuses to write after it.
    #[error(
        "the audit log `{path}` stopped accepting records after a failed sync; reopen it to continue \
         from what is on disk"
    )]
    Poisoned {
        /// The file whose sync failed.
        path: PathBuf,
    },
}

/// Why [`verify_dir`] could not vouch for a directory.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A file or the directory could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The chain is broken.
    #[error(transparent)]
    Break(#[from] ChainBreak),
}

/// Appends chained records to JSON Lines files in one directory.
///
/// One sink per directory: the directory is locked while the sink lives.
#[derive(Debug)]
pub struct JsonlSink {
    /// The directory.
    dir: PathBuf,
    /// The size at which the next append starts a new file.
    rotate_bytes: u64,
    /// Where the next record attaches: only moved once its batch is synced.
    head: ChainHead,
    /// The number of the file appended to.
    index: u64,
    /// The file appended to.
    path: PathBuf,
    /// The file appended to, opened for appending.
    file: File,
    /// The length of `file` as of the last successful append.
    len: u64,
    /// Set when a sync failed: the file's contents are then unknown.
    poisoned: bool,
    /// Where `open` moved a torn last line, if it found one.
    torn_tail: Option<PathBuf>,
    /// Wakes the thread that compresses and retires finished files, if one
    /// was started.
    tidier: Option<std::sync::mpsc::Sender<u64>>,
    /// Holds the directory's lock until the sink is dropped.
    _lock: File,
}

impl JsonlSink {
    /// Opens (creating) `dir`; recovers the chain head from the last record
    /// of the newest file (so a restart continues the chain); the newest file
    /// is appended to.
    ///
    /// A torn last line in the newest file is moved aside (see the [module
    /// documentation](self)). The last record's own hash is checked, since the
    /// chain is continued from it; the rest of the log is not read here (see
    /// [`verify_dir`]).
    pub fn open(dir: &Path, rotate_bytes: u64) -> Result<Self, AuditIoError> {
        fs::create_dir_all(dir).map_err(io_error("create the directory", dir))?;
        let lock = lock_dir(dir)?;
        files::recover(dir)?;
        let files = log_files(dir).map_err(io_error("list the directory", dir))?;
        let (index, path, torn_tail) = match files.last() {
            // A compressed file is finished: the next one is begun.
            Some((index, path)) if files::is_compressed(path) => {
                let next = index.saturating_add(1);
                (next, dir.join(file_name(next)), None)
            }
            Some((index, path)) => (*index, path.clone(), set_aside_torn_tail(dir, path)?),
            None => (1, dir.join(file_name(1)), None),
        };
        let head = recover_head(&files)?;
        let file = open_append(&path)?;
        if files.is_empty() {
            sync_dir(dir)?;
        }
        let len = file.metadata().map_err(io_error("read the metadata of", &path))?.len();
        Ok(Self {
            dir: dir.to_path_buf(),
            rotate_bytes,
            head,
            index,
            path,
            file,
            len,
            poisoned: false,
            torn_tail,
            tidier: None,
            _lock: lock,
        })
    }

    /// [`open`](Self::open), and start a thread that compresses each file
    /// once the sink has moved past it and retires old ones as `retention`
    /// allows (see [`retention`]); it runs once at start-up too, to finish
    /// what the last run left.
    pub fn open_tidied(dir: &Path, rotate_bytes: u64, retention: Retention) -> Result<Self, AuditIoError> {
        let mut sink = Self::open(dir, rotate_bytes)?;
        let tidier = retention::start(dir.to_path_buf(), retention)
            .map_err(io_error("start the compression thread for", dir))?;
        // The thread is alive: it holds the receiver until the sender drops.
        let _ = tidier.send(sink.index);
        sink.tidier = Some(tidier);
        Ok(sink)
    }

    /// Chains and appends `entries` in order, then flushes and fsyncs
    /// (`sync_data`) once. Rotates to a new file first when the current one
    /// has reached `rotate_bytes`, so a file exceeds it by at most one batch.
    ///
    /// Returns the records as written. On error the head does not move: a
    /// failed write is cut back off the file so the next append starts on a
    /// line boundary; a failed sync leaves the file's state unknown, so the
    /// sink then refuses further appends ([`AuditIoError::Poisoned`]) and must
    /// be reopened, which continues from whatever reached the disk.
    pub fn append<E: Into<AuditEntry>>(&mut self, entries: Vec<E>) -> Result<Vec<ChainLine>, AuditIoError> {
        if self.poisoned {
            return Err(AuditIoError::Poisoned { path: self.path.clone() });
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if self.len > 0 && self.len >= self.rotate_bytes {
            self.rotate()?;
        }
        let mut head = self.head.clone();
        let mut text = String::new();
        let records: Vec<ChainLine> = entries
            .into_iter()
            .map(|entry| {
                let (record, line) = chain(entry.into(), &mut head);
                text.push_str(&line);
                text.push('\n');
                record
            })
            .collect();
        if let Err(source) = self.file.write_all(text.as_bytes()).and_then(|()| self.file.flush()) {
            self.roll_back();
            return Err(AuditIoError::Io { action: "append to", path: self.path.clone(), source });
        }
        if let Err(source) = self.file.sync_data() {
            self.poisoned = true;
            return Err(AuditIoError::Io { action: "sync", path: self.path.clone(), source });
        }
        self.len = self.len.saturating_add(text.len() as u64);
        self.head = head;
        Ok(records)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record attaches; worth recording elsewhere, since the
    /// chain alone cannot show that its end was cut off.
    pub fn head(&self) -> &ChainHead {
        &self.head
    }

    /// The file being appended to.
    pub fn current_file(&self) -> &Path {
        &self.path
    }

    /// Where [`open`](Self::open) moved a torn last line, if it found one.
    pub fn torn_tail_moved_to(&self) -> Option<&Path> {
        self.torn_tail.as_deref()
    }

    /// Cuts a failed write back off the file, so that no partial line is
    /// left for the next append to continue after; if even that fails, the
    /// sink stops.
    fn roll_back(&mut self) {
        if self.file.set_len(self.len).and_then(|()| self.file.sync_data()).is_err() {
            self.poisoned = true;
        }
    }

    /// Starts the next file. The current one was synced by its last append.
    fn rotate(&mut self) -> Result<(), AuditIoError> {
        let index = self.index.saturating_add(1);
        let path = self.dir.join(file_name(index));
        let file = open_append(&path)?;
        let len = file.metadata().map_err(io_error("read the metadata of", &path))?.len();
        if len != 0 {
            return Err(AuditIoError::Corrupt {
                path,
                reason: "a new log file already holds data".to_owned(),
            });
        }
        sync_dir(&self.dir)?;
        self.index = index;
        self.path = path;
        self.file = file;
        self.len = 0;
        if let Some(tidier) = &self.tidier {
            // Only fails once the thread is gone; the files then stay plain.
            let _ = tidier.send(index);
        }
        Ok(())
    }
}

/// Checks every file in `dir` in order through `verifier`, up to the first
/// break; [`Verifier::finish`] then says what it found.
///
/// A missing final line break (a torn write) is a break too: the sink sets
/// such a line aside when it next opens the directory.
pub fn verify_dir(dir: &Path, verifier: &mut Verifier) -> Result<(), VerifyError> {
    let files = log_files(dir).map_err(|source| VerifyError::Io { path: dir.to_path_buf(), source })?;
    let mut first = true;
    for (_, path) in files {
        let read_error = |source| VerifyError::Io { path: path.clone(), source };
        let mut reader = open_lines(&path).map_err(read_error)?;
        let name = path.display().to_string();
        let mut buf = Vec::new();
        let mut line_no = 0usize;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(read_error)? == 0 {
                break;
            }
            line_no += 1;
            let fail = |reason: &str| ChainBreak {
                file: name.clone(),
                line: line_no,
                seq: None,
                reason: reason.to_owned(),
            };
            let Some(line) = buf.strip_suffix(b"\n") else {
                return Err(
                    fail("the line has no line break: a torn write (opening the log sets it aside)").into()
                );
            };
            let line = std::str::from_utf8(line).map_err(|_| fail("not UTF-8"))?;
            if std::mem::take(&mut first) {
                retention::resume_after_retired(dir, verifier, &name, line)?;
            }
            verifier.check_line(&name, line_no, line)?;
        }
    }
    Ok(())
}

/// The name of log file number `index`.
fn file_name(index: u64) -> String {
    format!("{PREFIX}{index:06}{SUFFIX}")
}

/// The number of the log file called `name`, if it is one.
fn file_index(name: &str) -> Option<u64> {
    let plain = name.strip_suffix(files::ZST).unwrap_or(name);
    let digits = plain.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index: u64 = digits.parse().ok()?;
    // Exactly one spelling per number, so `decisions-1.jsonl` is not a
    // second file 1.
    (file_name(index) == plain).then_some(index)
}

/// The log files in `dir`, in order, plain or compressed: the lock file and
/// set-aside torn lines have other names and are left out. While a file is
/// there both plain and compressed (being compressed), the plain one is
/// listed.
pub(in crate::audit) fn log_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        if let Some(index) = item.file_name().to_str().and_then(file_index)
            && item.file_type()?.is_file()
        {
            files.push((index, item.path()));
        }
    }
    files.sort_unstable_by(|(a, a_path), (b, b_path)| {
        a.cmp(b).then_with(|| files::is_compressed(a_path).cmp(&files::is_compressed(b_path)))
    });
    files.dedup_by_key(|(index, _)| *index);
    Ok(files)
}

/// Takes the directory's lock, held as long as the returned file is open.
fn lock_dir(dir: &Path) -> Result<File, AuditIoError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error("create the lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(AuditIoError::Locked { path: dir.to_path_buf() }),
        Err(fs::TryLockError::Error(error)) if error.kind() == io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), "file locks are not supported here; not locking the audit directory");
            Ok(file)
        }
        Err(fs::TryLockError::Error(source)) => Err(AuditIoError::Io { action: "lock", path, source }),
    }
}

/// Opens `path` for appending, creating it.
fn open_append(path: &Path) -> Result<File, AuditIoError> {
    OpenOptions::new().create(true).append(true).open(path).map_err(io_error("open", path))
}

/// Makes the directory's entries (a new file's name) durable.
fn sync_dir(dir: &Path) -> Result<(), AuditIoError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An [`AuditIoError::Io`] maker for `map_err`.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> AuditIoError {
    let path = path.to_path_buf();
    move |source| AuditIoError::Io { action, path, source }
}

/// The end of a file: its last complete line and what follows it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tail {
    /// The last line ending in a line break, without it.
    last_line: Option<Vec<u8>>,
    /// Bytes after the last line break, and the offset they start at.
    torn: Option<(u64, Vec<u8>)>,
}

/// Reads the end of `path`, as much as it takes to hold the last complete
/// line, rather than the whole file.
fn read_tail(path: &Path) -> io::Result<Tail> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut window = TAIL_WINDOW;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        (&mut file).take(len - start).read_to_end(&mut bytes)?;
        // Two line breaks in the window enclose the last complete line
        // (whether or not a torn line follows it).
        if start == 0 || bytes.iter().filter(|&&b| b == b'\n').count() >= 2 {
            return Ok(split_tail(start, bytes));
        }
        window = window.saturating_mul(2);
    }
}

/// Splits the end of a file, read from offset `start`, into its last complete
/// line and a torn remainder.
fn split_tail(start: u64, mut bytes: Vec<u8>) -> Tail {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn = (complete < bytes.len()).then(|| (start + complete as u64, bytes.split_off(complete)));
    if complete == 0 {
        return Tail { last_line: None, torn };
    }
    bytes.pop();
    let from = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    Tail { last_line: Some(bytes.split_off(from)), torn }
}

/// Moves a torn last line of `path` to a file of its own and cuts it off
/// `path`; returns where it went.
fn set_aside_torn_tail(dir: &Path, path: &Path) -> Result<Option<PathBuf>, AuditIoError> {
    let tail = read_tail(path).map_err(io_error("read", path))?;
    let Some((offset, torn)) = tail.torn else {
        return Ok(None);
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("decisions");
    let mut aside = None;
    for n in 0..MAX_ASIDE {
        let candidate = match n {
            0 => path.with_file_name(format!("{name}.torn-at-{offset}")),
            n => path.with_file_name(format!("{name}.torn-at-{offset}.{n}")),
        };
        match fs::read(&candidate) {
            // Set aside before a crash cut the move short.
            Ok(existing) if existing == torn => {
                aside = Some(candidate);
                break;
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&candidate)
                    .map_err(io_error("create", &candidate))?;
                file.write_all(&torn)
                    .and_then(|()| file.sync_all())
                    .map_err(io_error("write", &candidate))?;
                sync_dir(dir)?;
                aside = Some(candidate);
                break;
            }
            Err(source) => return Err(AuditIoError::Io { action: "read", path: candidate, source }),
        }
    }
    let Some(aside) = aside else {
        return Err(AuditIoError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("its torn last line cannot be set aside: {MAX_ASIDE} files already hold others"),
        });
    };
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.set_len(offset).and_then(|()| file.sync_all()))
        .map_err(io_error("cut the torn last line off", path))?;
    tracing::warn!(
        file = %path.display(),
        moved_to = %aside.display(),
        bytes = torn.len(),
        "the audit log ended in a torn line, left by a crash during an append; moved it aside"
    );
    Ok(Some(aside))
}

/// The head to continue from: after the last record of the newest file that
/// holds one, or the genesis head.
fn recover_head(files: &[(u64, PathBuf)]) -> Result<ChainHead, AuditIoError> {
    for (_, path) in files.iter().rev() {
        let (record, torn) = last_record_in(path)?;
        if torn {
            return Err(AuditIoError::Corrupt {
                path: path.clone(),
                reason: "it ends in a torn line, but only the newest file can be torn by a crash".to_owned(),
            });
        }
        if let Some(record) = record {
            return Ok(ChainHead::after(&record));
        }
    }
    Ok(ChainHead::genesis())
}

/// The newest complete record in `dir`, as a reader sees it while the
/// writer may be appending: a line not yet ended is passed over.
pub(in crate::audit) fn last_record(dir: &Path) -> Result<Option<ChainLine>, AuditIoError> {
    let files = log_files(dir).map_err(io_error("list", dir))?;
    for (_, path) in files.iter().rev() {
        if let (Some(record), _) = last_record_in(path)? {
            return Ok(Some(record));
        }
    }
    Ok(None)
}

/// The last complete record of `path`, if it holds one, its hash checked
/// against its content; and whether a torn line follows it.
fn last_record_in(path: &Path) -> Result<(Option<ChainLine>, bool), AuditIoError> {
    let (last_line, torn) = if files::is_compressed(path) {
        files::compressed_tail(path).map_err(io_error("read", path))?
    } else {
        let tail = read_tail(path).map_err(io_error("read", path))?;
        (tail.last_line, tail.torn.is_some())
    };
    let Some(line) = last_line else {
        return Ok((None, torn));
    };
    let corrupt = |reason: String| AuditIoError::Corrupt { path: path.to_path_buf(), reason };
    let record = std::str::from_utf8(&line)
        .map_err(|_| corrupt("its last line is not UTF-8".to_owned()))
        .and_then(|text| {
            ChainLine::parse(text).map_err(|error| corrupt(format!("its last line is not a record: {error}")))
        })?;
    if record_hash(&record) != record.stored_hash() {
        return Err(corrupt(format!(
            "the `hash` of its last record (seq {}) does not match the record's content",
            record.seq()
        )));
    }
    Ok((Some(record), torn))
}

#[cfg(test)]
mod tests;

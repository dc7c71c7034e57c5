//! `consentry entities import`: a large directory into the store, in one
//! transaction.
//!
//! A hospital's directory runs to millions of entities, far more than an
//! admin request should carry, or than is worth holding in memory at once.
//! The file is read as JSON Lines (one entity per line) or as one JSON
//! array, streamed either way, in parts of [`PART`] entities. Each part is
//! parsed and validated under the schema of the store's newest policy
//! version in parallel (Cedar's parse is most of the cost), then written
//! inside the one transaction the import holds open, while the next part
//! is being validated: validation and the database work side by side
//! instead of one after the other. A bad line drops the transaction, so the
//! store stays as it was; otherwise the import commits as one revision,
//! which replicas on the store pick up like any other change.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use consentry_engine::{EntityPatch, LoadError, PolicyBundle};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::de::{self, Deserializer as _, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::sync::mpsc;

use crate::directory::{bundle_of, entity_write};
use crate::store::{DurableStore, EntityRevision, EntityWrite, StoreError};

/// The actor import revisions are recorded under.
pub const IMPORT_ACTOR: &str = "import";

/// Entities read, validated and written together: enough to keep both
/// cores busy, few enough that the first write starts early.
const PART: usize = 8192;

/// Entities one parallel validation task takes.
const TASK: usize = 512;

/// Validated parts waiting for the database: validation may run this far
/// ahead of the writes, and no further, so memory stays bounded.
const PARTS_AHEAD: usize = 2;

/// Why an import was refused; nothing was written.
#[derive(Debug, Error)]
pub enum ImportError {
    /// The file cannot be read.
    #[error("cannot read `{}`: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line or element is not JSON.
    #[error("`{}` {at}: not JSON: {source}", .path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// `line N`, `element N`, or `array` when the array itself is broken.
        at: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// An entity does not parse or fit the schema.
    #[error("`{}` {at}: {source}", .path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `line N` or `element N`.
        at: String,
        /// The cause.
        source: LoadError,
    },
    /// The store's policy version cannot be loaded, so its schema is unknown.
    #[error("the store's newest policy version does not load: {0}")]
    Policies(LoadError),
    /// Reading and validating stopped before the end of the file.
    #[error("the import's validation stopped: {0}")]
    Stopped(tokio::task::JoinError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an entity is in the file, named only when it is refused.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// 1-based, as editors count lines.
    Line(usize),
    /// 0-based, as JSON arrays are indexed.
    Element(usize),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(number) => write!(f, "line {number}"),
            Self::Element(index) => write!(f, "element {index}"),
        }
    }
}

/// Reads, validates and writes `path` into `store`; returns the revision.
pub async fn import(
    store: &DurableStore,
    path: &Path,
    progress: bool,
) -> Result<EntityRevision, ImportError> {
    let bundle = match store.current_policy_version().await? {
        Some(version) => bundle_of(&version).map_err(ImportError::Policies)?,
        None => PolicyBundle::load(None, "", &[]).map_err(ImportError::Policies)?,
    };
    let failed = |source| ImportError::Read { path: path.to_owned(), source };
    let file = File::open(path).map_err(failed)?;
    let size = file.metadata().map_err(failed)?.len();
    let mut import = store.begin_entity_import().await?;

    let bar = if progress { ProgressBar::new(size) } else { ProgressBar::hidden() };
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)")
    {
        bar.set_style(style);
    }
    bar.set_message("validating and writing: 0 entities");
    let (parts, mut incoming) = mpsc::channel(PARTS_AHEAD);
    let reader =
        Reader { path: path.to_owned(), bundle: Arc::new(bundle), parts, bar: bar.clone(), checked: 0 };
    let counted = Counted { inner: file, bar: bar.clone() };
    let validation = tokio::task::spawn_blocking(move || reader.run(counted));
    let mut written = Ok(());
    while let Some(part) = incoming.recv().await {
        if let Err(error) = import.write(part).await {
            written = Err(error);
            break;
        }
    }
    // Stops the validation early if a write failed.
    drop(incoming);
    let validated = validation.await;
    bar.finish_and_clear();
    // A failed write is the cause of whatever the validation then saw.
    // Either, or a bad entity, drops `import`: nothing is kept.
    written?;
    validated.map_err(ImportError::Stopped)??;

    let spinner = if progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    spinner.set_message("committing");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let comment = format!("consentry entities import {}", path.display());
    let revision = import.commit(IMPORT_ACTOR, Some(&comment)).await;
    spinner.finish_and_clear();
    Ok(revision?)
}

/// The reading and validating side of an import, on a thread of its own.
struct Reader {
    path: PathBuf,
    bundle: Arc<PolicyBundle>,
    parts: mpsc::Sender<Vec<EntityWrite>>,
    bar: ProgressBar,
    /// Entities validated so far.
    checked: usize,
}

impl Reader {
    /// Reads `file` as JSON Lines (blank lines skipped) unless it starts
    /// with `[`, and hands each validated part to the writer. Returns early,
    /// without error, once the writer has stopped.
    fn run(mut self, file: Counted) -> Result<(), ImportError> {
        let path = self.path.clone();
        let failed = |source| ImportError::Read { path: path.clone(), source };
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let starts_array =
            reader.fill_buf().map_err(failed)?.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if starts_array {
            return self.run_array(reader);
        }
        let mut part = Vec::with_capacity(PART);
        let mut number = 0;
        loop {
            // Bytes, not a `String`: a line that is not UTF-8 is then a
            // JSON error that names it, not a read error of the file.
            let mut line = Vec::new();
            if reader.read_until(b'\n', &mut line).map_err(failed)? == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            part.push((Position::Line(number), line));
            if part.len() == PART && !self.hand_over(std::mem::take(&mut part))? {
                return Ok(());
            }
        }
        self.hand_over(part).map(drop)
    }

    /// Reads a JSON array one element at a time: each element stays text
    /// until its part is validated.
    fn run_array(&mut self, reader: BufReader<Counted>) -> Result<(), ImportError> {
        let mut deserializer = serde_json::Deserializer::from_reader(reader);
        let mut refused = None;
        let array = Elements { reader: self, refused: &mut refused };
        let read = deserializer.deserialize_seq(array).and_then(|()| deserializer.end());
        match (refused, read) {
            (Some(error), _) => Err(error),
            (None, Err(source)) => {
                Err(ImportError::Json { path: self.path.clone(), at: "array".to_owned(), source })
            }
            (None, Ok(())) => Ok(()),
        }
    }

    /// Validates `part` and sends it to the writer; `false` once the writer
    /// has stopped.
    fn hand_over(&mut self, part: Vec<(Position, Vec<u8>)>) -> Result<bool, ImportError> {
        if part.is_empty() {
            return Ok(true);
        }
        let checked: Vec<Result<Vec<EntityWrite>, ImportError>> = part
            .par_chunks(TASK)
            .map(|task| task.iter().map(|(at, text)| self.check(*at, text)).collect())
            .collect();
        // The first bad entity of the file is the one named.
        let mut writes = Vec::with_capacity(part.len());
        for task in checked {
            writes.extend(task?);
        }
        self.checked += writes.len();
        self.bar.set_message(format!("validating and writing: {} entities", self.checked));
        Ok(self.parts.blocking_send(writes).is_ok())
    }

    /// Parses and validates one entity, as `EntityPatch::parse` does, into
    /// the write every other writer would make of it.
    fn check(&self, at: Position, text: &[u8]) -> Result<EntityWrite, ImportError> {
        let item: Value = serde_json::from_slice(text).map_err(|source| ImportError::Json {
            path: self.path.clone(),
            at: at.to_string(),
            source,
        })?;
        let invalid = |source| ImportError::Invalid { path: self.path.clone(), at: at.to_string(), source };
        // The stored body and uid come from the JSON as given; Cedar then
        // takes it by value (a refusal of Cedar's is the clearer one).
        let write = entity_write(&item, "entity");
        EntityPatch::check_upsert(item, self.bundle.schema()).map_err(invalid)?;
        write.map_err(invalid)
    }
}

/// The visitor that takes a JSON array's elements in parts.
struct Elements<'r> {
    reader: &'r mut Reader,
    /// Why the import stopped, when the array itself is not to blame.
    refused: &'r mut Option<ImportError>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of entities")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut elements: A) -> Result<(), A::Error> {
        let mut part = Vec::with_capacity(PART);
        let mut index = 0;
        let mut hand_over = |part: Vec<(Position, Vec<u8>)>| match self.reader.hand_over(part) {
            Ok(true) => Ok(()),
            Ok(false) => Err(de::Error::custom("the writer stopped")),
            Err(error) => {
                *self.refused = Some(error);
                Err(de::Error::custom("an entity was refused"))
            }
        };
        while let Some(element) = elements.next_element::<Box<RawValue>>()? {
            part.push((Position::Element(index), String::from(Box::<str>::from(element)).into_bytes()));
            index += 1;
            if part.len() == PART {
                hand_over(std::mem::take(&mut part))?;
            }
        }
        hand_over(part)
    }
}

/// The file, counting its bytes into the progress bar as they are read.
struct Counted {
    inner: File,
    bar: ProgressBar,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.bar.inc(read as u64);
        Ok(read)
    }
}

//! `consentry entities import`: a large directory into the store, in one
//! transaction.
//!
//! A hospital's directory runs to millions of entities, far more than an
//! admin request should carry. The file is read as JSON Lines (one entity
//! per line, streamed) or as one JSON array, every entity is parsed and
//! validated under the schema of the store's newest policy version in
//! parallel (Cedar's parse is most of the cost), and only then is anything
//! written: one transaction, one revision, so a bad line leaves the store as
//! it was. Replicas on the store pick the revision up like any other change.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use consentry_engine::{EntityPatch, LoadError, PolicyBundle};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde_json::Value;
use thiserror::Error;

use crate::directory::{bundle_of, entity_write};
use crate::store::{DurableStore, EntityRevision, EntityWrite, StoreError};

/// The actor import revisions are recorded under.
pub const IMPORT_ACTOR: &str = "import";

/// Entities validated per parallel task.
const CHUNK: usize = 1000;

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
        /// `line N` or `element N`.
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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    let items = read(path)?;
    let bar = if progress { ProgressBar::new(items.len() as u64) } else { ProgressBar::hidden() };
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} ({per_sec}, {eta} left)") {
        bar.set_style(style);
    }
    bar.set_message("validating");
    let writes: Vec<EntityWrite> = items
        .par_chunks(CHUNK)
        .map(|chunk| {
            let checked = chunk
                .iter()
                .map(|(at, item)| validate(&bundle, path, at, item))
                .collect::<Result<Vec<_>, _>>();
            bar.inc(chunk.len() as u64);
            checked
        })
        .collect::<Result<Vec<Vec<_>>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    bar.finish_and_clear();
    let spinner = if progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    spinner.set_message(format!("writing {} entities in one transaction", writes.len()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let comment = format!("consentry entities import {}", path.display());
    let revision = store.write_entities(writes, false, IMPORT_ACTOR, Some(&comment)).await;
    spinner.finish_and_clear();
    Ok(revision?)
}

/// Each entity with where it is in the file: JSON Lines (blank lines
/// skipped) unless the file starts with `[`.
fn read(path: &Path) -> Result<Vec<(String, Value)>, ImportError> {
    let failed = |source| ImportError::Read { path: path.to_owned(), source };
    let mut reader = BufReader::new(File::open(path).map_err(failed)?);
    let starts_array =
        reader.fill_buf().map_err(failed)?.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if starts_array {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(failed)?;
        let items: Vec<Value> = serde_json::from_str(&text).map_err(|source| ImportError::Json {
            path: path.to_owned(),
            at: "array".to_owned(),
            source,
        })?;
        return Ok(items.into_iter().enumerate().map(|(i, item)| (format!("element {i}"), item)).collect());
    }
    let mut items = Vec::new();
    for (number, line) in reader.lines().enumerate() {
        let line = line.map_err(failed)?;
        if line.trim().is_empty() {
            continue;
        }
        let at = format!("line {}", number + 1);
        let item = serde_json::from_str(&line).map_err(|source| ImportError::Json {
            path: path.to_owned(),
            at: at.clone(),
            source,
        })?;
        items.push((at, item));
    }
    Ok(items)
}

fn validate(bundle: &PolicyBundle, path: &Path, at: &str, item: &Value) -> Result<EntityWrite, ImportError> {
    let invalid = |source| ImportError::Invalid { path: path.to_owned(), at: at.to_owned(), source };
    EntityPatch { upsert: vec![item.clone()], delete: Vec::new() }.parse(bundle.schema()).map_err(invalid)?;
    entity_write(item, "entity").map_err(invalid)
}

//! The policy directory: the on-disk form of a bundle and its entities.
//!
//! `DIR/*.cedar` (concatenated in file-name order, so Cedar's `policyN` ids
//! follow the order a reader sees), `DIR/schema.cedarschema` or
//! `DIR/schema.json`, `DIR/entities.json` and `DIR/links.json` for template
//! links. Everything is read and validated before anything is swapped in.

use std::path::{Path, PathBuf};

use consentry_engine::{EntityStore, LoadError, PolicyBundle, Problem, SchemaSource, TemplateLink};
use thiserror::Error;

/// Why a policy directory could not be loaded.
#[derive(Debug, Error)]
pub enum DirError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("`{path}` is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The directory holds no policies.
    #[error("no `*.cedar` files in `{0}`")]
    NoPolicies(PathBuf),
    /// The schema, policies or entities were refused.
    #[error("{error}")]
    Invalid {
        /// What the engine refused.
        error: LoadError,
        /// The policy files, to place problems in their source.
        sources: PolicySources,
    },
}

/// The policy files of a directory, concatenated, with where each begins.
#[derive(Debug, Clone, Default)]
pub struct PolicySources {
    /// The concatenated text handed to the engine.
    pub text: String,
    files: Vec<(PathBuf, usize)>,
}

impl PolicySources {
    /// Maps a byte offset in the concatenated text to `(file, line, column, line text)`, 1-based.
    pub fn locate(&self, offset: usize) -> Option<(PathBuf, usize, usize, String)> {
        let (path, start) = self.files.iter().rev().find(|(_, start)| *start <= offset)?;
        let end = self.files.iter().find(|(_, s)| *s > *start).map_or(self.text.len(), |(_, s)| *s);
        let file_text = self.text.get(*start..end)?;
        let local = offset - start;
        let before = file_text.get(..local)?;
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..)?.chars().count() + 1;
        let line_text = file_text.get(line_start..)?.lines().next().unwrap_or("").to_owned();
        Some((path.clone(), line, column, line_text))
    }

    /// Renders problems like a compiler: message, location, the source line and a caret.
    pub fn render(&self, problems: &[Problem]) -> String {
        let mut out = String::new();
        for problem in problems {
            out.push_str(&format!("error: {problem}\n"));
            if let Some((path, line, column, text)) = problem.offset.and_then(|o| self.locate(o)) {
                let gutter = " ".repeat(line.to_string().len());
                out.push_str(&format!("{gutter}--> {}:{line}:{column}\n", path.display()));
                out.push_str(&format!("{gutter} |\n{line} | {text}\n"));
                out.push_str(&format!("{gutter} | {}^\n", " ".repeat(column.saturating_sub(1))));
            }
            if let Some(help) = &problem.help {
                out.push_str(&format!("  help: {help}\n"));
            }
        }
        out
    }
}

/// A loaded directory.
#[derive(Debug)]
pub struct LoadedDir {
    /// The validated bundle.
    pub bundle: PolicyBundle,
    /// The entities from `entities.json` (empty when there is none).
    pub store: EntityStore,
    /// The raw `entities.json`, to notice when it changes.
    pub entities_text: Option<String>,
}

/// Reads the schema, policies and links, and validates them into a bundle.
pub fn load_bundle(dir: &Path) -> Result<(PolicyBundle, PolicySources), DirError> {
    let sources = read_policies(dir)?;
    let cedar_schema = read_optional(&dir.join("schema.cedarschema"))?;
    let json_schema = read_optional(&dir.join("schema.json"))?;
    let schema = match (&cedar_schema, &json_schema) {
        (Some(text), _) => Some(SchemaSource::CedarText(text)),
        (None, Some(text)) => Some(SchemaSource::Json(text)),
        (None, None) => None,
    };
    let links = match read_optional(&dir.join("links.json"))? {
        Some(text) => serde_json::from_str::<Vec<TemplateLink>>(&text)
            .map_err(|source| DirError::Json { path: dir.join("links.json"), source })?,
        None => Vec::new(),
    };
    match PolicyBundle::load(schema, &sources.text, &links) {
        Ok(bundle) => Ok((bundle, sources)),
        Err(error) => Err(DirError::Invalid { error, sources }),
    }
}

/// Loads the bundle and the entities of a directory.
pub fn load(dir: &Path) -> Result<LoadedDir, DirError> {
    let (bundle, sources) = load_bundle(dir)?;
    let entities_text = read_optional(&dir.join("entities.json"))?;
    let store = match &entities_text {
        Some(text) => parse_entities(dir, text, &bundle, &sources)?,
        None => EntityStore::new(),
    };
    Ok(LoadedDir { bundle, store, entities_text })
}

/// Parses `entities.json` under the bundle's schema.
pub fn parse_entities(
    dir: &Path,
    text: &str,
    bundle: &PolicyBundle,
    sources: &PolicySources,
) -> Result<EntityStore, DirError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|source| DirError::Json { path: dir.join("entities.json"), source })?;
    EntityStore::from_json(&value, bundle.schema())
        .map_err(|error| DirError::Invalid { error, sources: sources.clone() })
}

/// Reads `entities.json` if there is one.
pub fn read_entities_text(dir: &Path) -> Result<Option<String>, DirError> {
    read_optional(&dir.join("entities.json"))
}

fn read_policies(dir: &Path) -> Result<PolicySources, DirError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DirError::Io { path: dir.to_owned(), source })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(DirError::NoPolicies(dir.to_owned()));
    }
    let mut sources = PolicySources::default();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(|source| DirError::Io { path: path.clone(), source })?;
        sources.files.push((path, sources.text.len()));
        sources.text.push_str(&text);
        sources.text.push('\n');
    }
    Ok(sources)
}

fn read_optional(path: &Path) -> Result<Option<String>, DirError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DirError::Io { path: path.to_owned(), source }),
    }
}

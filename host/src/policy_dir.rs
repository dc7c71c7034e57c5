//! The policy directory: the on-disk form of a bundle and its entities.
//!
//! `DIR/*.cedar` (concatenated in file-name order, so Cedar's `policyN` ids
//! follow the order a reader sees), `DIR/schema.cedarschema` or
//! `DIR/schema.json`, `DIR/entities.json`, `DIR/links.json` for template
//! links and `DIR/special-categories.json` for the labels that need a
//! consent naming them. Everything is read and validated before anything is swapped in.
//!
//! A directory is read as one version. When it holds `..data` (a
//! Kubernetes ConfigMap or Secret volume: the files are symlinks into
//! `..data`, itself a symlink the kubelet swaps by rename), or is itself a
//! symlink, the link is resolved once and every file is read from the
//! directory it points to. If the link moved, or a file changed (its size or
//! modification time), while reading, the read starts over. So a reload
//! never mixes files of two versions, nor reads a file someone began to
//! rewrite after the watch saw the directory settle.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use consentry_engine::{
    EntityStore, LoadError, PolicyBundle, Problem, SchemaSource, SpecialCategories, TemplateLink,
};
use thiserror::Error;

use crate::file_watch::DATA_LINK;

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
    /// The directory was swapped again and again while it was read.
    #[error("`{0}` kept changing while it was read")]
    Unsettled(PathBuf),
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

/// The labels that only a consent naming them opens; no file means none.
pub const SPECIAL_CATEGORIES_FILE: &str = "special-categories.json";

/// Reads the schema, policies, links and special categories of `dir` itself (no
/// [`read_snapshot`]), and validates them into a bundle.
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
    let special =
        read_optional(&dir.join(SPECIAL_CATEGORIES_FILE))?.map(|text| SpecialCategories::from_json(&text));
    match (PolicyBundle::load(schema, &sources.text, &links), special.transpose()) {
        (Ok(bundle), Ok(special)) => {
            Ok((bundle.with_special_categories(special.unwrap_or_default()), sources))
        }
        // A schema's problems are placed in the schema's own file.
        (Err(error @ LoadError::Schema(_)), _) => {
            let (name, text) = match (cedar_schema, json_schema) {
                (Some(text), _) => ("schema.cedarschema", text),
                (None, Some(text)) => ("schema.json", text),
                (None, None) => return Err(DirError::Invalid { error, sources }),
            };
            let sources = PolicySources { text, files: vec![(dir.join(name), 0)] };
            Err(DirError::Invalid { error, sources })
        }
        (Err(error), _) | (_, Err(error)) => Err(DirError::Invalid { error, sources }),
    }
}

/// How many times a read starts over when the directory changes meanwhile.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// Runs `read` on the version of `dir` in force (see the module
/// documentation): `dir` itself, or the directory its `..data` link or `dir`
/// as a link points to. If the link moved, or a file `read` may have read
/// changed, meanwhile, `read` runs again on what is there now.
pub fn read_snapshot<T>(
    dir: &Path,
    mut read: impl FnMut(&Path) -> Result<T, DirError>,
) -> Result<T, DirError> {
    let mut before = Version::of(dir)?;
    for _ in 0..SNAPSHOT_ATTEMPTS {
        let result = read(before.linked.as_deref().unwrap_or(dir));
        let after = Version::of(dir)?;
        if after == before {
            return result;
        }
        before = after;
    }
    Err(DirError::Unsettled(dir.to_owned()))
}

/// What a read of a directory sees: where its files are, and the size and
/// modification time of each that a reload reads. Two reads that see the
/// same version read the same files.
#[derive(Debug, PartialEq, Eq)]
struct Version {
    /// The directory the files are read from, when `dir` is reached through a link.
    linked: Option<PathBuf>,
    files: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
}

impl Version {
    fn of(dir: &Path) -> Result<Self, DirError> {
        let linked = linked_directory(dir)?;
        let mut files: Vec<(PathBuf, Option<(u64, SystemTime)>)> =
            std::fs::read_dir(linked.as_deref().unwrap_or(dir))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| is_read(path))
                .map(|path| {
                    let stamp =
                        std::fs::metadata(&path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
                    (path, stamp)
                })
                .collect();
        files.sort();
        Ok(Self { linked, files })
    }
}

/// The directory `dir` stands for now, when it is reached through a link.
fn linked_directory(dir: &Path) -> Result<Option<PathBuf>, DirError> {
    let data = dir.join(DATA_LINK);
    match std::fs::read_link(&data) {
        Ok(target) => return Ok(Some(dir.join(target))),
        // Not there, or not a link: an ordinary directory.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput) => {}
        Err(source) => return Err(DirError::Io { path: data, source }),
    }
    let io = |source| DirError::Io { path: dir.to_owned(), source };
    if std::fs::symlink_metadata(dir).map_err(io)?.file_type().is_symlink() {
        return std::fs::canonicalize(dir).map(Some).map_err(io);
    }
    Ok(None)
}

/// Whether a reload reads `path`, or a file like it: the policy, schema and
/// JSON files of the directory, not an editor's hidden swap files, backups
/// or temporary files.
pub fn is_read(path: &Path) -> bool {
    let hidden = path.file_name().is_some_and(|name| name.to_string_lossy().starts_with('.'));
    !hidden && path.extension().is_some_and(|e| e == "cedar" || e == "cedarschema" || e == "json")
}

/// Loads the bundle and the entities of a directory, all from one version
/// of it ([`read_snapshot`]).
pub fn load(dir: &Path) -> Result<LoadedDir, DirError> {
    read_snapshot(dir, load_version)
}

fn load_version(dir: &Path) -> Result<LoadedDir, DirError> {
    let (bundle, sources) = load_bundle(dir)?;
    let entities_text = read_optional(&dir.join("entities.json"))?;
    let store = match &entities_text {
        Some(text) => parse_entities(&entities_json(dir, text)?, &bundle, &sources)?,
        None => EntityStore::new(),
    };
    Ok(LoadedDir { bundle, store, entities_text })
}

/// Reads the text of `dir`'s `entities.json` as JSON.
pub fn entities_json(dir: &Path, text: &str) -> Result<serde_json::Value, DirError> {
    serde_json::from_str(text).map_err(|source| DirError::Json { path: dir.join("entities.json"), source })
}

/// Parses the entities of `entities.json` under the bundle's schema.
pub fn parse_entities(
    entities: &serde_json::Value,
    bundle: &PolicyBundle,
    sources: &PolicySources,
) -> Result<EntityStore, DirError> {
    EntityStore::from_json(entities, bundle.schema())
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

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::fs;

    use super::*;
    use crate::file_watch::tests::{configmap, swap_configmap};

    const SCHEMA: &str = "entity User; action read appliesTo { principal: User, resource: User };";

    fn ids(loaded: &LoadedDir) -> Vec<String> {
        loaded.bundle.policy_summaries().into_iter().map(|p| p.id).collect()
    }

    #[test]
    fn a_configmap_volume_is_read_through_its_data_link() {
        let dir = tempfile::tempdir().unwrap();
        configmap(
            dir.path(),
            "2026_01_01_00_00_00.1",
            &[
                ("schema.cedarschema", SCHEMA),
                ("pack.cedar", "@id(\"one\") permit(principal, action, resource);"),
            ],
        );
        let loaded = load(dir.path()).unwrap();
        assert_eq!(ids(&loaded), ["one"]);
        assert!(loaded.bundle.schema().is_some());
        swap_configmap(
            dir.path(),
            "2026_01_01_00_01_00.2",
            &[
                ("schema.cedarschema", SCHEMA),
                ("pack.cedar", "@id(\"two\") forbid(principal, action, resource);"),
            ],
        );
        assert_eq!(ids(&load(dir.path()).unwrap()), ["two"]);
    }

    #[test]
    fn a_swap_while_reading_starts_the_read_over_on_the_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = [
            ("schema.cedarschema", SCHEMA),
            ("pack.cedar", "@id(\"one\") permit(principal, action, resource);"),
        ];
        // Version 2 adds a file: a reader that mixed versions would see
        // version 1's pack with version 2's extra file, or fail on a file
        // that a removed version no longer has.
        let v2 = [
            ("schema.cedarschema", SCHEMA),
            ("pack.cedar", "@id(\"two\") permit(principal, action, resource);"),
            ("more.cedar", "@id(\"more\") forbid(principal, action, resource);"),
        ];
        configmap(dir.path(), "v1", &v1);
        let mut reads = Vec::new();
        let loaded = read_snapshot(dir.path(), |version| {
            reads.push(version.file_name().unwrap().to_string_lossy().into_owned());
            let loaded = load_version(version);
            if reads.len() == 1 {
                swap_configmap(dir.path(), "v2", &v2);
            }
            loaded
        })
        .unwrap();
        assert_eq!(reads, ["..v1", "..v2"]);
        assert_eq!(ids(&loaded), ["more", "two"]);
    }

    #[test]
    fn a_file_rewritten_while_reading_starts_the_read_over() {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("pack.cedar");
        fs::write(&pack, "@id(\"one\") permit(principal, action, resource);").unwrap();
        let mut reads = 0;
        let loaded = read_snapshot(dir.path(), |version| {
            reads += 1;
            let loaded = load_version(version);
            if reads == 1 {
                fs::write(&pack, "@id(\"rewritten\") forbid(principal, action, resource);").unwrap();
            }
            loaded
        })
        .unwrap();
        assert_eq!(reads, 2);
        assert_eq!(ids(&loaded), ["rewritten"]);
    }

    #[test]
    fn a_directory_that_keeps_changing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        configmap(dir.path(), "v0", &[("pack.cedar", "permit(principal, action, resource);")]);
        let mut version = 0;
        let error = read_snapshot(dir.path(), |_| {
            version += 1;
            swap_configmap(dir.path(), &format!("v{version}"), &[("pack.cedar", "")]);
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(error, DirError::Unsettled(_)), "{error}");
        assert!(error.to_string().ends_with("kept changing while it was read"), "{error}");
    }

    #[test]
    fn a_directory_that_is_a_symlink_is_read_where_it_points() {
        let root = tempfile::tempdir().unwrap();
        for (version, id) in [("v1", "one"), ("v2", "two")] {
            fs::create_dir(root.path().join(version)).unwrap();
            let text = format!("@id(\"{id}\") permit(principal, action, resource);");
            fs::write(root.path().join(version).join("pack.cedar"), text).unwrap();
        }
        let current = root.path().join("current");
        std::os::unix::fs::symlink("v1", &current).unwrap();
        assert_eq!(ids(&load(&current).unwrap()), ["one"]);
        std::os::unix::fs::symlink("v2", root.path().join("next")).unwrap();
        fs::rename(root.path().join("next"), &current).unwrap();
        assert_eq!(ids(&load(&current).unwrap()), ["two"]);
    }

    #[test]
    fn only_the_files_a_reload_reads_are_relevant() {
        for name in ["pack.cedar", "schema.cedarschema", "schema.json", "entities.json", "links.json"] {
            assert!(is_read(Path::new("policies").join(name).as_path()), "{name}");
        }
        for name in [".pack.cedar.swp", "pack.cedar~", "#pack.cedar#", "..data", "..2026_01_01", "notes.md"] {
            assert!(!is_read(Path::new("policies").join(name).as_path()), "{name}");
        }
    }
}

//! The plugin configuration file (`plugins.toml`).
//!
//! It is read in full and checked before anything is loaded, so a typo
//! never half-applies: a bad file keeps the plugins in force, and the error
//! names the plugin and the key. Defaults are the safe ones: fail closed,
//! no capabilities, tight limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use consentry_engine::cedar_policy::EntityTypeName;
use consentry_engine::{ChangeKind, Fact};
use serde::{Deserialize, Serialize};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the plugin configuration `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid plugin configuration `{path}`: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid plugin configuration `{path}`: plugin `{plugin}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    plugins: Vec<PluginConfig>,
}

/// One plugin, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Unique name, used in reasons, logs and metrics.
    pub name: String,
    /// The component file; relative paths are relative to the configuration file.
    pub path: PathBuf,
    /// The hooks it is called for; each must be exported by the component.
    pub hooks: BTreeSet<Hook>,
    /// What an error, trap or timeout does to the decision.
    #[serde(default)]
    pub failure: FailureMode,
    /// Capabilities beyond the sandbox's none.
    #[serde(default)]
    pub grants: BTreeSet<Grant>,
    /// Which requests it is called for.
    #[serde(default)]
    pub applies_to: AppliesTo,
    /// Stored facts an `enrich` hook may change, and the protected context
    /// attributes it may supply; see [`MayChange`].
    #[serde(default)]
    pub may_change: MayChange,
    /// Resource limits of one call.
    #[serde(default)]
    pub limits: Limits,
    /// Values handed to the plugin through the `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

/// A hook of the WIT interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// `consentry:plugin/enrich`: adds context and entities before evaluation.
    Enrich,
    /// `consentry:plugin/map-request`: turns an HTTP request into a Cedar request.
    MapRequest,
    /// `consentry:plugin/obligations`: adds obligations after a decision.
    Obligations,
}

impl Hook {
    /// Every hook, in interface order.
    pub const ALL: [Hook; 3] = [Hook::Enrich, Hook::MapRequest, Hook::Obligations];

    /// The hook's name in the configuration and the WIT interface.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Enrich => "enrich",
            Hook::MapRequest => "map-request",
            Hook::Obligations => "obligations",
        }
    }
}

/// What a failing plugin does to the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Deny, with a reason naming the plugin and the error.
    #[default]
    FailClosed,
    /// Decide as if the plugin were not configured; chosen explicitly only.
    Skip,
}

/// A capability a plugin may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Grant {
    /// `wasi:clocks`: the wall and monotonic clocks.
    Clocks,
    /// `wasi:random`: secure and insecure randomness.
    Random,
    /// `map-request` sees the `Authorization` header.
    AuthorizationHeader,
}

/// What an `enrich` hook may change beyond adding what the store lacks,
/// by key (`[plugins.may_change]`):
///
/// - `"Type.attribute"`: that attribute of a stored entity of that type,
///   e.g. `"Record.labels" = "add"`;
/// - `"Type in"`: the parents of a stored entity of that type, e.g.
///   `"Practitioner in" = "add"`;
/// - `"context.attribute"` for the context attributes only the caller may
///   give ([`PROTECTED_CONTEXT`]): `"add"` lets the plugin supply it when
///   the caller did not (what a caller sent is never replaced).
///
/// A key is split at its first `.` (Cedar type names hold none); a key
/// without one must be `Type in`. Tags cannot be granted. Nothing is
/// granted by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct MayChange(BTreeMap<String, Change>);

/// How a granted fact may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Members may be added to a set (an attribute, or the parents); for a
    /// protected context attribute, it may be supplied.
    Add,
    /// Members may be removed from a set; the set itself stays.
    Remove,
    /// Any change, including leaving the attribute out.
    Replace,
}

impl Change {
    /// Whether a change of `kind` is within this grant.
    pub fn covers(self, kind: ChangeKind) -> bool {
        match self {
            Change::Add => kind == ChangeKind::Added,
            Change::Remove => kind == ChangeKind::Removed,
            Change::Replace => true,
        }
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Remove => "remove",
            Change::Replace => "replace",
        }
    }
}

/// Context attributes a person declares, which a plugin may supply only
/// when granted: the purpose of use, and the justification a human gives
/// for breaking the glass.
pub const PROTECTED_CONTEXT: [&str; 2] = ["purpose", "justification"];

impl MayChange {
    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key that grants `fact` of a stored entity of type `entity_type`;
    /// tags cannot be granted.
    pub fn key(entity_type: &str, fact: &Fact) -> Option<String> {
        match fact {
            Fact::Parents => Some(format!("{entity_type} in")),
            Fact::Attribute(name) => Some(format!("{entity_type}.{name}")),
            Fact::Tag(_) => None,
        }
    }

    /// The grant under `key`, if any.
    pub fn get(&self, key: &str) -> Option<Change> {
        self.0.get(key).copied()
    }

    fn check(&self) -> Result<(), String> {
        for (key, change) in &self.0 {
            let bad = |why: &str| Err(format!("`may_change`: `{key}`: {why}"));
            match key.split_once('.') {
                Some(("context", name)) => {
                    if !PROTECTED_CONTEXT.contains(&name) {
                        return bad(&format!(
                            "only {} need a grant; any other context attribute the caller did not send may be added",
                            PROTECTED_CONTEXT.map(|n| format!("`context.{n}`")).join(" and ")
                        ));
                    }
                    if *change != Change::Add {
                        return bad(
                            "a plugin may only supply (`add`) a context attribute, never replace the caller's",
                        );
                    }
                }
                Some((entity_type, attribute)) => {
                    if attribute.is_empty() {
                        return bad("the attribute name is missing");
                    }
                    check_type(entity_type).or_else(|e| bad(&e))?;
                }
                None => match key.strip_suffix(" in") {
                    Some(entity_type) => check_type(entity_type).or_else(|e| bad(&e))?,
                    None => {
                        return bad(
                            "expected `Type.attribute`, `Type in` (its parents) or `context.attribute`",
                        );
                    }
                },
            }
        }
        Ok(())
    }
}

fn check_type(entity_type: &str) -> Result<(), String> {
    EntityTypeName::from_str(entity_type)
        .map(drop)
        .map_err(|_| format!("`{entity_type}` is not a Cedar entity type name"))
}

/// Which requests a plugin is called for; an empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliesTo {
    /// Resource entity types, such as `Record`.
    #[serde(default)]
    pub resource_types: BTreeSet<String>,
    /// Action ids, such as `read`.
    #[serde(default)]
    pub actions: BTreeSet<String>,
}

impl AppliesTo {
    /// Whether a request for `action` on a resource of `resource_type` matches.
    pub fn matches(&self, resource_type: &str, action: &str) -> bool {
        (self.resource_types.is_empty() || self.resource_types.contains(resource_type))
            && (self.actions.is_empty() || self.actions.contains(action))
    }
}

/// Limits of one call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Linear memory, in MiB.
    pub memory_mib: u64,
    /// Bytes a hook may return, summed over its strings.
    pub max_output_bytes: usize,
    /// Bytes the plugin may pass to the host in one host call.
    pub max_hostcall_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { timeout_ms: 10, memory_mib: 16, max_output_bytes: 1024 * 1024, max_hostcall_bytes: 64 * 1024 }
    }
}

/// The largest memory limit a plugin may ask for; the pooling allocator
/// reserves address space for it in every slot.
pub const MAX_MEMORY_MIB: u64 = 1024;
/// The longest timeout a plugin may ask for: a decision point that waits
/// longer than this holds up treatment.
pub const MAX_TIMEOUT_MS: u64 = 10_000;

impl Limits {
    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "`limits.timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, not `{}`",
                self.timeout_ms
            ));
        }
        if !(1..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(format!(
                "`limits.memory_mib` must be between 1 and {MAX_MEMORY_MIB}, not `{}`",
                self.memory_mib
            ));
        }
        if self.max_output_bytes == 0 {
            return Err("`limits.max_output_bytes` must be positive".to_owned());
        }
        if self.max_hostcall_bytes == 0 {
            return Err("`limits.max_hostcall_bytes` must be positive".to_owned());
        }
        Ok(())
    }
}

/// Reads and checks a configuration file. Relative plugin paths are
/// resolved against the file's directory.
pub fn read(path: &Path) -> Result<Vec<PluginConfig>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    parse(&text, path)
}

/// Parses and checks configuration text; `path` locates relative plugin paths.
pub fn parse(text: &str, path: &Path) -> Result<Vec<PluginConfig>, ConfigError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        message: e.message().to_owned() + &locate(&e),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut names = BTreeSet::new();
    let mut plugins = Vec::with_capacity(file.plugins.len());
    for mut plugin in file.plugins {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            plugin: plugin.name.clone(),
            message,
        };
        if plugin.name.is_empty()
            || !plugin.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                "`name` must be non-empty ASCII letters, digits, `-`, `_` or `.`".to_owned(),
            ));
        }
        if !names.insert(plugin.name.clone()) {
            return Err(invalid("`name` is used by another plugin".to_owned()));
        }
        if plugin.hooks.is_empty() {
            return Err(invalid(
                "`hooks` must name at least one of `enrich`, `map-request`, `obligations`".to_owned(),
            ));
        }
        if plugin.grants.contains(&Grant::AuthorizationHeader) && !plugin.hooks.contains(&Hook::MapRequest) {
            return Err(invalid(
                "`grants`: `authorization-header` only applies to the `map-request` hook".to_owned(),
            ));
        }
        if !plugin.may_change.is_empty() && !plugin.hooks.contains(&Hook::Enrich) {
            return Err(invalid("`may_change` only applies to the `enrich` hook".to_owned()));
        }
        plugin.may_change.check().map_err(invalid)?;
        plugin.limits.check().map_err(invalid)?;
        if plugin.path.is_relative() {
            plugin.path = base.join(&plugin.path);
        }
        plugins.push(plugin);
    }
    Ok(plugins)
}

fn locate(error: &toml::de::Error) -> String {
    error.span().map(|span| format!(" (at byte {})", span.start)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<PluginConfig>, String> {
        parse(text, Path::new("/etc/consentry/plugins.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fail_closed_with_no_grants_and_tight_limits() {
        let plugins = parse_str("[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\n")
            .unwrap_or_default();
        let [plugin] = plugins.as_slice() else { unreachable!("one plugin was configured: {plugins:?}") };
        assert_eq!(plugin.failure, FailureMode::FailClosed);
        assert!(plugin.grants.is_empty());
        assert_eq!(plugin.limits, Limits::default());
        assert_eq!(plugin.limits.timeout(), Duration::from_millis(10));
        assert_eq!(plugin.limits.memory_bytes(), 16 * 1024 * 1024);
        assert_eq!(plugin.path, Path::new("/etc/consentry/a.wasm"));
        assert!(plugin.applies_to.matches("Record", "read"));
    }

    #[test]
    fn unknown_keys_and_hooks_are_refused_by_name() {
        let typo = parse_str(
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\nfailur = \"skip\"\n",
        );
        assert!(typo.as_ref().is_err_and(|e| e.contains("failur")), "{typo:?}");
        let hook = parse_str("[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrichh\"]\n");
        assert!(hook.as_ref().is_err_and(|e| e.contains("enrichh")), "{hook:?}");
    }

    #[test]
    fn out_of_range_limits_name_the_key() {
        let error = parse_str(
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\n[plugins.limits]\ntimeout_ms = 0\n",
        );
        assert!(
            error.as_ref().is_err_and(|e| e.contains("`limits.timeout_ms`") && e.contains("plugin `a`")),
            "{error:?}"
        );
    }

    #[test]
    fn duplicate_names_and_misplaced_grants_are_refused() {
        let twice = "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\n";
        let error = parse_str(&format!("{twice}{twice}"));
        assert!(error.as_ref().is_err_and(|e| e.contains("used by another plugin")), "{error:?}");
        let grant = parse_str(
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\ngrants = [\"authorization-header\"]\n",
        );
        assert!(grant.as_ref().is_err_and(|e| e.contains("authorization-header")), "{grant:?}");
    }

    fn with_grants(grants: &str) -> Result<Vec<PluginConfig>, String> {
        parse_str(&format!(
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"enrich\"]\n[plugins.may_change]\n{grants}\n"
        ))
    }

    #[test]
    fn may_change_grants_attributes_parents_and_protected_context_by_key() {
        let plugins = with_grants(
            "\"Record.labels\" = \"add\"\n\"RelatedPerson.represents\" = \"remove\"\n\"App::User in\" = \"replace\"\n\"context.justification\" = \"add\"",
        )
        .unwrap();
        let grants = &plugins[0].may_change;
        assert_eq!(grants.get("Record.labels"), Some(Change::Add));
        assert_eq!(grants.get("RelatedPerson.represents"), Some(Change::Remove));
        assert_eq!(grants.get("App::User in"), Some(Change::Replace));
        assert_eq!(grants.get("context.justification"), Some(Change::Add));
        assert_eq!(grants.get("Record.patient"), None);
        assert_eq!(MayChange::key("Practitioner", &Fact::Parents).as_deref(), Some("Practitioner in"));
        assert!(Change::Add.covers(ChangeKind::Added) && !Change::Add.covers(ChangeKind::Replaced));
        assert!(Change::Remove.covers(ChangeKind::Removed) && !Change::Remove.covers(ChangeKind::Dropped));
        assert!(Change::Replace.covers(ChangeKind::Dropped));
        assert!(with_grants("").unwrap()[0].may_change.is_empty(), "nothing is granted by default");
    }

    #[test]
    fn bad_may_change_keys_and_modes_are_refused_by_name() {
        for (grants, expected) in [
            ("\"Record\" = \"add\"", "expected `Type.attribute`"),
            ("\"Record.\" = \"add\"", "attribute name is missing"),
            ("\"Not A Type.x\" = \"add\"", "not a Cedar entity type name"),
            ("\"context.site\" = \"add\"", "only `context.purpose` and `context.justification`"),
            ("\"context.purpose\" = \"replace\"", "only supply"),
            ("\"Record.labels\" = \"append\"", "append"),
        ] {
            let error = with_grants(grants);
            assert!(error.as_ref().is_err_and(|e| e.contains(expected)), "{grants}: {error:?}");
        }
        let mapper = parse_str(
            "[[plugins]]\nname = \"a\"\npath = \"a.wasm\"\nhooks = [\"map-request\"]\n[plugins.may_change]\n\"Record.labels\" = \"add\"\n",
        );
        assert!(
            mapper.as_ref().is_err_and(|e| e.contains("only applies to the `enrich` hook")),
            "{mapper:?}"
        );
    }

    #[test]
    fn applies_to_filters_by_resource_type_and_action() {
        let applies = AppliesTo {
            resource_types: ["Record".to_owned()].into(),
            actions: ["read".to_owned(), "search".to_owned()].into(),
        };
        assert!(applies.matches("Record", "search"));
        assert!(!applies.matches("Patient", "read"));
        assert!(!applies.matches("Record", "update"));
    }
}

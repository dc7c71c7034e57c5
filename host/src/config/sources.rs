//! Where settings come from: the file, the environment and the flags, each
//! a figment provider whose metadata names it for error messages.

use std::path::{Path, PathBuf};

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider, Source};
use serde::Serialize;

use super::ServeArgs;
use super::{CONFIG_ENV, ConfigError, ENV_PREFIX};
use crate::auth::ADMIN_TOKEN_ENV;

/// A setting the environment and the command line can set: its dotted key
/// in the file and its flag, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key in the file, e.g. `audit.queue`.
    pub key: &'static str,
    /// The flag without its dashes, e.g. `audit-queue`.
    pub flag: Option<&'static str>,
}

const fn setting(key: &'static str, flag: Option<&'static str>) -> Setting {
    Setting { key, flag }
}

/// Every setting but the tokens and `identity.role_mapping`, which only the file lists. Each is read
/// from `CONSENTRY_` and its key upper-cased with `__` for the dots
/// (`CONSENTRY_AUDIT__QUEUE`) and, if it has a flag, from `CONSENTRY_` and
/// the flag's name (`CONSENTRY_AUDIT_QUEUE`), the names the flags have
/// always read.
pub const SETTINGS: &[Setting] = &[
    setting("policies", Some("policies")),
    setting("store", Some("store")),
    setting("plugins", Some("plugins")),
    setting("watch", Some("watch")),
    setting("watch_settle", Some("watch-settle")),
    setting("policy_tests", Some("policy-tests")),
    setting("fhir_base", Some("fhir-base")),
    setting("max_batch", Some("max-batch")),
    setting("max_body", Some("max-body")),
    setting("cache_bytes", Some("cache-bytes")),
    setting("public_url", Some("public-url")),
    setting("listen.bind", Some("bind")),
    setting("listen.admin_bind", Some("admin-bind")),
    setting("listen.grpc_bind", Some("grpc-bind")),
    setting("listen.header_timeout", Some("header-timeout")),
    setting("listen.body_timeout", Some("body-timeout")),
    setting("listen.idle_timeout", Some("idle-timeout")),
    setting("listen.max_connections", Some("max-connections")),
    setting("tls.cert", Some("tls-cert")),
    setting("tls.key", Some("tls-key")),
    setting("audit.target", Some("audit")),
    setting("audit.backpressure", Some("audit-backpressure")),
    setting("audit.queue", Some("audit-queue")),
    setting("audit.rotate_bytes", Some("audit-rotate-bytes")),
    setting("audit.retain_files", Some("audit-retain-files")),
    setting("audit.low_water_bytes", Some("audit-low-water-bytes")),
    setting("audit.durability", Some("audit-durability")),
    setting("auth.decisions", Some("decisions")),
    setting("decisions.forbid_errors", Some("forbid-errors")),
    setting("decisions.request_entities", Some("request-entities")),
    setting("telemetry.log_format", Some("log-format")),
    setting("telemetry.otlp_endpoint", Some("otlp-endpoint")),
    setting("identity.trust_principal_header", Some("trust-principal-header")),
    setting("identity.issuer", Some("oidc-issuer")),
    setting("identity.audience", Some("oidc-audience")),
    setting("identity.jwks_file", Some("oidc-jwks-file")),
    setting("identity.jwks_url", Some("oidc-jwks-url")),
    setting("identity.refresh_interval", Some("oidc-refresh-interval")),
    setting("identity.unknown_kid_cooldown", Some("oidc-unknown-kid-cooldown")),
    setting("identity.clock_skew", Some("oidc-clock-skew")),
    setting("identity.role_claim", Some("oidc-role-claim")),
    setting("identity.patient_principal", Some("oidc-patient-principal")),
];

/// `CONSENTRY_` variables that are not settings: the development token,
/// the file's own name, and the test suite's (`CONSENTRY_TEST_…`).
const NOT_SETTINGS: &[&str] = &[ADMIN_TOKEN_ENV, CONFIG_ENV];

/// The prefix of the test suite's variables.
const TEST_PREFIX: &str = "CONSENTRY_TEST_";

impl Setting {
    /// The variable named after the key: `CONSENTRY_AUDIT__QUEUE`.
    pub fn key_var(self) -> String {
        format!("{ENV_PREFIX}{}", self.key.replace('.', "__").to_uppercase())
    }

    /// The variable named after the flag: `CONSENTRY_AUDIT_QUEUE`.
    pub fn flag_var(self) -> Option<String> {
        self.flag.map(|flag| format!("{ENV_PREFIX}{}", flag.replace('-', "_").to_uppercase()))
    }
}

/// The setting a `CONSENTRY_` variable sets; `None` for the variables that
/// are not settings.
pub(super) fn env_key(name: &str) -> Option<Result<&'static str, ConfigError>> {
    if NOT_SETTINGS.contains(&name) || name.starts_with(TEST_PREFIX) || !name.starts_with(ENV_PREFIX) {
        return None;
    }
    let found = SETTINGS.iter().find(|s| s.key_var() == name || s.flag_var().as_deref() == Some(name));
    Some(found.map(|s| s.key).ok_or_else(|| ConfigError::UnknownVariable { var: name.to_owned() }))
}

/// One value from the environment or the command line.
#[derive(Debug)]
pub(super) struct Given {
    key: &'static str,
    value: Value,
    /// The variable or the flag, e.g. `CONSENTRY_BIND` or `--bind`.
    origin: String,
}

impl Provider for Given {
    fn metadata(&self) -> Metadata {
        Metadata::from("setting", Source::Custom(self.origin.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let dict = figment::util::nest(self.key, self.value.clone())
            .into_dict()
            .ok_or_else(|| figment::Error::from(format!("`{}` is not a key", self.key)))?;
        Ok(Profile::Default.collect(dict))
    }
}

/// The settings in the environment, in a stable order. Empty variables
/// count as unset, as they did for the flags' `env`.
pub(super) fn from_env(mut env: Vec<(String, String)>) -> Result<Vec<Given>, ConfigError> {
    env.sort();
    let mut values: Vec<Given> = Vec::new();
    for (name, text) in env {
        let Some(key) = env_key(&name).transpose()? else { continue };
        if text.is_empty() {
            continue;
        }
        if let Some(other) = values.iter().find(|v| v.key == key) {
            return Err(ConfigError::DuplicateVariable {
                key: key.to_owned(),
                first: other.origin.clone(),
                second: name,
            });
        }
        // Strings throughout: extraction converts numbers and booleans
        // where the setting is one, so `CONSENTRY_POLICIES=2026` stays a path.
        values.push(Given { key, value: Value::from(text), origin: name });
    }
    Ok(values)
}

/// The settings given as flags.
pub(super) fn from_flags(args: &ServeArgs) -> Vec<Given> {
    let mut values = Vec::new();
    let mut add = |key: &'static str, value: Option<Value>| {
        if let Some(value) = value {
            let flag = SETTINGS.iter().find(|s| s.key == key).and_then(|s| s.flag).unwrap_or(key);
            values.push(Given { key, value, origin: format!("--{flag}") });
        }
    };
    add("policies", path(args.policies.as_deref()));
    add("store", args.store.clone().map(Value::from));
    add("plugins", path(args.plugins.as_deref()));
    add("watch", args.watch.map(Value::from));
    add("watch_settle", args.watch_settle.map(duration));
    add("policy_tests", path(args.policy_tests.as_deref()));
    add("fhir_base", args.fhir_base.clone().map(Value::from));
    add("max_batch", args.max_batch.map(Value::from));
    add("max_body", args.max_body.map(Value::from));
    add("cache_bytes", args.cache_bytes.map(Value::from));
    add("public_url", args.public_url.clone().map(Value::from));
    add("listen.bind", args.bind.map(|a| Value::from(a.to_string())));
    add("listen.admin_bind", args.admin_bind.map(|a| Value::from(a.to_string())));
    add("listen.grpc_bind", args.grpc_bind.map(|a| Value::from(a.to_string())));
    add("listen.header_timeout", args.header_timeout.map(duration));
    add("listen.body_timeout", args.body_timeout.map(duration));
    add("listen.idle_timeout", args.idle_timeout.map(duration));
    add("listen.max_connections", args.max_connections.map(Value::from));
    add("tls.cert", path(args.tls_cert.as_deref()));
    add("tls.key", path(args.tls_key.as_deref()));
    add("audit.target", args.audit.clone().map(Value::from));
    add("audit.backpressure", args.audit_backpressure.and_then(|b| serialized(&b)));
    add("audit.queue", args.audit_queue.map(Value::from));
    add("audit.rotate_bytes", args.audit_rotate_bytes.map(Value::from));
    add("audit.retain_files", args.audit_retain_files.map(Value::from));
    add("audit.low_water_bytes", args.audit_low_water_bytes.map(Value::from));
    add("audit.durability", args.audit_durability.and_then(|d| serialized(&d)));
    add("auth.decisions", args.decisions.and_then(|d| serialized(&d)));
    add("decisions.forbid_errors", args.forbid_errors.and_then(|f| serialized(&f)));
    add("decisions.request_entities", args.request_entities.and_then(|r| serialized(&r)));
    add("telemetry.log_format", args.log_format.and_then(|f| serialized(&f)));
    add("telemetry.otlp_endpoint", args.otlp_endpoint.clone().map(Value::from));
    add("identity.trust_principal_header", args.trust_principal_header.map(Value::from));
    add("identity.issuer", args.oidc_issuer.clone().map(Value::from));
    add(
        "identity.audience",
        (!args.oidc_audience.is_empty()).then(|| Value::from(args.oidc_audience.clone())),
    );
    add("identity.jwks_file", path(args.oidc_jwks_file.as_deref()));
    add("identity.jwks_url", args.oidc_jwks_url.clone().map(Value::from));
    add("identity.refresh_interval", args.oidc_refresh_interval.map(duration));
    add("identity.unknown_kid_cooldown", args.oidc_unknown_kid_cooldown.map(duration));
    add("identity.clock_skew", args.oidc_clock_skew.map(duration));
    add("identity.role_claim", args.oidc_role_claim.clone().map(Value::from));
    add("identity.patient_principal", args.oidc_patient_principal.clone().map(Value::from));
    values
}

fn path(path: Option<&Path>) -> Option<Value> {
    path.map(|p| Value::from(p.to_string_lossy().into_owned()))
}

/// A duration as the file writes it, e.g. `1s` or `500ms`.
fn duration(duration: std::time::Duration) -> Value {
    Value::from(humantime::format_duration(duration).to_string())
}

fn serialized(value: &impl Serialize) -> Option<Value> {
    Value::serialize(value).ok()
}

/// The configuration file.
#[derive(Debug)]
pub(super) struct File {
    path: PathBuf,
    dict: Dict,
}

impl File {
    /// Reads and parses the file.
    pub(super) fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), message: e.to_string() })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        let dict =
            Value::serialize(&table).ok().and_then(Value::into_dict).ok_or_else(|| ConfigError::Syntax {
                path: path.to_owned(),
                message: "holds values that are not settings".to_owned(),
            })?;
        Ok(Self { path: path.to_owned(), dict })
    }
}

impl Provider for File {
    fn metadata(&self) -> Metadata {
        Metadata::from("configuration file", Source::File(self.path.clone()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// `in `FILE`` or `from `VARIABLE``, for error messages.
pub(super) fn describe(metadata: &Metadata) -> String {
    match &metadata.source {
        Some(Source::File(path)) => format!("in `{}`", path.display()),
        Some(Source::Custom(origin)) => format!("from `{origin}`"),
        _ => format!("in the {}", metadata.name),
    }
}

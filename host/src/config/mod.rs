//! The configuration of `consentry serve`: a TOML file, the environment and
//! the command line, merged in that order over built-in defaults.
//!
//! A deployment keeps its settings, its tokens' digests in particular, in
//! one reviewable file, while containers and tests still override single
//! settings through the environment or a flag. The merging is figment's, so
//! every value keeps its origin and an error names both the key and where
//! the value came from (the file's path, the variable or the flag). clap's
//! own `env` support was the alternative, but it cannot put a file between
//! the environment and the defaults, and it refuses a bad variable with its
//! usage error (exit 2) under the flag's name rather than the variable's.
//!
//! Figment is used without its `toml` and `env` providers: the file is read
//! with the workspace's `toml` (figment's would add a second version) so a
//! syntax error names the file, and the environment is mapped by
//! [`SETTINGS`], which keeps the flat names the flags always had
//! (`CONSENTRY_BIND`, `CONSENTRY_AUDIT`), refuses a misspelt variable as
//! the file refuses a misspelt key, and takes the variables as a list, so
//! the tests need not change the process's environment. Variables are text;
//! extraction is figment's "lossy" one, which reads `8` or `true` as a
//! number or a boolean where the setting is one.
//!
//! Relative paths, in the file as on the command line, are relative to the
//! working directory.

mod flags;
mod sources;

pub use flags::{DEFAULT_STORE, ServeArgs};
pub(crate) use flags::{forbid_errors, request_entities};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use consentry_engine::consent::FhirBase;
use consentry_engine::{ForbidErrors, RequestEntities};

use figment::Figment;
use figment::error::Kind;
use serde::Deserialize;

use crate::audit::query::AuditStore;
use crate::audit::writer::{AuditLog, Backpressure, Durability};
use crate::audit::{AuditOpenError, AuditOptions, AuditTarget};
use crate::auth::{Auth, AuthConfig};
use crate::identity::IdentityConfig;
use crate::store::StoreLocation;
use crate::telemetry::TelemetryConfig;

pub use sources::{SETTINGS, Setting};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "CONSENTRY_CONFIG";

/// The prefix of every environment variable Consentry reads.
pub const ENV_PREFIX: &str = "CONSENTRY_";

/// Everything `consentry serve` is configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The policy directory, the truth for the policies, schema and links;
    /// without one, the store is, and the API manages them.
    pub policies: Option<PathBuf>,
    /// The consent store: a SQLite directory or a `postgres://` URL.
    pub store: String,
    /// A plugin configuration (`plugins.toml`).
    pub plugins: Option<PathBuf>,
    /// Reload the policy directory and the plugins when their files change.
    pub watch: bool,
    /// How long a watched directory must be quiet before it is reloaded.
    #[serde(with = "humantime_serde")]
    pub watch_settle: Duration,
    /// Policy tests that every reload and every change of the policies or
    /// the schema must pass before it is put in force.
    pub policy_tests: Option<PathBuf>,
    /// This server's FHIR base URL: an absolute reference in a consent
    /// binds only when it is under this base.
    pub fhir_base: Option<FhirBase>,
    /// Largest batch accepted by the batch endpoints.
    pub max_batch: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// How many bytes of entities a replica keeps in memory; the rest of
    /// the directory stays in the store and is loaded when needed.
    pub cache_bytes: usize,
    /// Base URL advertised in the AuthZEN metadata.
    pub public_url: Option<String>,
    /// Where to listen.
    pub listen: ListenConfig,
    /// Serve HTTPS with this certificate, on every listener.
    pub tls: Option<TlsFiles>,
    /// The decision log.
    pub audit: AuditConfig,
    /// The accepted tokens and whether decisions need one.
    pub auth: AuthConfig,
    /// How decisions treat what plain Cedar leaves open.
    pub decisions: DecisionsConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The identity provider whose tokens are accepted, and whether
    /// `ext_authz` trusts the principal header.
    pub identity: IdentityConfig,
}

/// The `[decisions]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionsConfig {
    /// `deny`: a forbid that cannot be evaluated denies; `skip`: it is
    /// skipped, as plain Cedar does.
    pub forbid_errors: ForbidErrors,
    /// `add-only`: request entities and properties may add what the store
    /// lacks, never change a stored fact; `replace`: they replace stored
    /// entities, as in cedar-agent.
    pub request_entities: RequestEntities,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            policies: None,
            store: DEFAULT_STORE.to_owned(),
            plugins: None,
            watch: false,
            watch_settle: Duration::from_secs(1),
            policy_tests: None,
            fhir_base: None,
            max_batch: 100,
            max_body: crate::http::DEFAULT_MAX_BODY,
            cache_bytes: crate::directory::DEFAULT_CACHE_BYTES,
            public_url: None,
            listen: ListenConfig::default(),
            tls: None,
            audit: AuditConfig::default(),
            auth: AuthConfig::default(),
            decisions: DecisionsConfig::default(),
            telemetry: TelemetryConfig::default(),
            identity: IdentityConfig::default(),
        }
    }
}

/// The `[listen]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The address of the decision APIs, and of everything else unless
    /// `admin_bind` is set; port 0 picks a free port.
    pub bind: SocketAddr,
    /// A separate address for the policy, consent and audit routes, which
    /// then are not served on `bind`.
    pub admin_bind: Option<SocketAddr>,
    /// The address of Envoy's gRPC external authorization service; none
    /// by default.
    pub grpc_bind: Option<SocketAddr>,
    /// How long a client may take to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// How long a connection may stay open between requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The most connections served at once, over all listeners.
    pub max_connections: usize,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8180)),
            admin_bind: None,
            grpc_bind: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
        }
    }
}

/// The `[tls]` section: PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The `[audit]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Where the decision log is written, or `off`; by default beside the
    /// consent store.
    pub target: Option<String>,
    /// What happens to decisions when the log cannot keep up.
    #[serde(deserialize_with = "backpressure")]
    pub backpressure: Backpressure,
    /// Records held in memory before backpressure applies.
    pub queue: usize,
    /// Size at which a log file is closed and the next one begun.
    pub rotate_bytes: u64,
    /// Files kept once older ones are covered by an anchor; 0 keeps all.
    pub retain_files: usize,
    /// Free bytes on the log's disk below which `/readyz` warns.
    pub low_water_bytes: u64,
    /// Which decisions are answered only once their record is durable.
    #[serde(deserialize_with = "durability")]
    pub durability: Durability,
}

impl AuditConfig {
    /// Opens the decision log this section names for a server on `store`
    /// (by default `audit/` in a SQLite store's directory, else
    /// `consentry-audit`) and starts its writer: for `serve`, and for the
    /// imports of the CLI, which record their changes in the log the
    /// server uses.
    pub async fn open(&self, store: &str) -> Result<Option<(AuditLog, AuditStore)>, AuditOpenError> {
        let target = match self.target.as_deref() {
            Some(text) => AuditTarget::parse(text).map_err(AuditOpenError::Target)?,
            None => AuditTarget::Dir(match StoreLocation::from_str(store) {
                Ok(StoreLocation::Sqlite { dir }) => dir.join("audit"),
                _ => PathBuf::from("consentry-audit"),
            }),
        };
        let options = AuditOptions {
            rotate_bytes: self.rotate_bytes,
            retention: crate::audit::Retention { keep_files: self.retain_files },
            low_water_bytes: self.low_water_bytes,
            queue: self.queue,
            backpressure: self.backpressure,
            durability: self.durability,
        };
        crate::audit::open(&target, &options).await
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            target: None,
            backpressure: Backpressure::FailClosed,
            queue: 10_000,
            rotate_bytes: 64 * 1024 * 1024,
            retain_files: 0,
            low_water_bytes: 1024 * 1024 * 1024,
            durability: Durability::BreakGlass,
        }
    }
}

/// Reads `fail-closed` or `drop-and-count`, the names the flag takes.
fn backpressure<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Backpressure, D::Error> {
    let text = String::deserialize(deserializer)?;
    <Backpressure as clap::ValueEnum>::from_str(&text, false).map_err(|_| {
        serde::de::Error::invalid_value(
            serde::de::Unexpected::Str(&text),
            &"`fail-closed` or `drop-and-count`",
        )
    })
}

/// Reads `break-glass` or `sync`, the names the flag takes.
fn durability<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Durability, D::Error> {
    let text = String::deserialize(deserializer)?;
    <Durability as clap::ValueEnum>::from_str(&text, false).map_err(|_| {
        serde::de::Error::invalid_value(serde::de::Unexpected::Str(&text), &"`break-glass` or `sync`")
    })
}

/// A configuration `consentry serve` refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read the configuration file `{path}`: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The configuration file is not TOML.
    #[error("the configuration file `{path}` is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// A key the configuration does not have.
    #[error("unknown key `{key}` {origin}{expected}")]
    UnknownKey {
        /// The dotted key.
        key: String,
        /// Where it was found.
        origin: String,
        /// The keys that would have been accepted there, as a hint.
        expected: String,
    },
    /// A `CONSENTRY_` variable that names no setting.
    #[error(
        "the environment variable `{var}` is not a setting (the settings are `CONSENTRY_` and a key, with `__` between nested keys, e.g. `CONSENTRY_AUDIT__QUEUE`)"
    )]
    UnknownVariable {
        /// The variable.
        var: String,
    },
    /// Two environment variables set the same key.
    #[error("`{first}` and `{second}` both set `{key}`: keep one")]
    DuplicateVariable {
        /// The key.
        key: String,
        /// One variable.
        first: String,
        /// The other.
        second: String,
    },
    /// An environment variable's value is not text.
    #[error("the environment variable `{var}` is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: String,
    },
    /// The decision API would listen on an address other than loopback,
    /// open to anyone who reaches it, without the operator having said so.
    #[error(
        "the decision API would listen on `{bind}` (`{key}` {origin}), which is not a loopback address, \
         and answer anyone who reaches it: require a token with the `decision` role (`--decisions token`, \
         `CONSENTRY_DECISIONS=token` or `auth.decisions = \"token\"`), or say that open access is meant \
         (`--decisions open`, `CONSENTRY_DECISIONS=open` or `auth.decisions = \"open\"`)"
    )]
    OpenDecisions {
        /// The setting: `listen.bind` or `listen.grpc_bind`.
        key: &'static str,
        /// The address.
        bind: SocketAddr,
        /// Where it came from.
        origin: String,
    },
    /// A value of the wrong type or form, or a missing one.
    #[error("invalid `{key}` {origin}: {message}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Where the value came from.
        origin: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The configuration for `args`: its flags over the process's environment
/// over the file it names (`--config` or `CONSENTRY_CONFIG`) over the
/// defaults.
pub fn load(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().map(str::to_owned) else { continue };
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        match value.into_string() {
            Ok(value) => env.push((name, value)),
            Err(_) if sources::env_key(&name).is_none() => {}
            Err(_) => return Err(ConfigError::NotUnicode { var: name }),
        }
    }
    load_from(args, env)
}

/// [`load`] with the environment given as `(name, value)` pairs.
pub fn load_from(args: &ServeArgs, env: Vec<(String, String)>) -> Result<ServeConfig, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = &args.config {
        figment = figment.merge(sources::File::read(path)?);
    }
    for setting in sources::from_env(env)? {
        figment = figment.merge(setting);
    }
    for setting in sources::from_flags(args) {
        figment = figment.merge(setting);
    }
    let config: ServeConfig = figment.extract_lossy().map_err(|e| explain(&figment, e))?;
    check(&figment, &config)?;
    Ok(config)
}

/// Checks what the types alone do not, the tokens included, so that their
/// errors too name the file.
fn check(figment: &Figment, config: &ServeConfig) -> Result<(), ConfigError> {
    if let Some(admin) = config.listen.admin_bind
        && admin == config.listen.bind
        && admin.port() != 0
    {
        return Err(ConfigError::Invalid {
            key: "listen.admin_bind".to_owned(),
            origin: origin_of(figment, "listen.admin_bind"),
            message: format!(
                "`{admin}` is also `listen.bind`; the admin listener needs an address of its own"
            ),
        });
    }
    if let Some(grpc) = config.listen.grpc_bind
        && grpc.port() != 0
        && (grpc == config.listen.bind || Some(grpc) == config.listen.admin_bind)
    {
        return Err(ConfigError::Invalid {
            key: "listen.grpc_bind".to_owned(),
            origin: origin_of(figment, "listen.grpc_bind"),
            message: format!(
                "`{grpc}` is also an HTTP listener's; the gRPC listener needs an address of its own"
            ),
        });
    }
    // Open decisions are the default only where the sidecar's own service
    // is the only caller that can reach them.
    let decision_listeners =
        [Some(("listen.bind", config.listen.bind)), config.listen.grpc_bind.map(|a| ("listen.grpc_bind", a))];
    for (key, bind) in decision_listeners.into_iter().flatten() {
        if !bind.ip().is_loopback() && config.auth.decisions.is_none() {
            return Err(ConfigError::OpenDecisions { key, bind, origin: origin_of(figment, key) });
        }
    }
    if let Err(error) = Auth::new(&config.auth, None) {
        // Only the file lists tokens.
        let origin = origin_of(figment, "auth.tokens");
        return Err(ConfigError::Invalid { key: error.field, origin, message: error.message });
    }
    if let Err(error) = config.identity.oidc() {
        let origin = origin_of(figment, &error.key);
        return Err(ConfigError::Invalid { key: error.key, origin, message: error.message });
    }
    Ok(())
}

/// Where the value of the dotted `key` came from.
fn origin_of(figment: &Figment, key: &str) -> String {
    figment.find_metadata(key).map_or_else(|| "in the built-in defaults".to_owned(), sources::describe)
}

/// Turns figment's error into one naming the key and the value's origin.
fn explain(figment: &Figment, error: figment::Error) -> ConfigError {
    let mut key = dotted(&error.path);
    let origin = match &error.metadata {
        Some(metadata) => sources::describe(metadata),
        None => origin_of(figment, &error.path.join(".")),
    };
    let message = match &error.kind {
        Kind::UnknownField(field, expected) => {
            let expected = if expected.is_empty() {
                String::new()
            } else {
                let names: Vec<String> = expected.iter().map(|name| format!("`{name}`")).collect();
                format!("; expected one of {}", names.join(", "))
            };
            // The path already ends with the unknown key, as figment
            // descends into each key before the struct refuses it.
            if error.path.last() != Some(field) {
                key = join(&key, field);
            }
            return ConfigError::UnknownKey { key, origin, expected };
        }
        Kind::UnknownVariant(found, expected) => {
            let names: Vec<String> = expected.iter().map(|name| format!("`{name}`")).collect();
            format!("unknown value `{found}`; expected one of {}", names.join(", "))
        }
        Kind::MissingField(field) => {
            key = join(&key, field);
            "missing".to_owned()
        }
        other => other.to_string(),
    };
    ConfigError::Invalid { key, origin, message }
}

/// `["auth", "tokens", "0", "roles"]` as `auth.tokens[0].roles`.
fn dotted(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            key.push_str(&format!("[{segment}]"));
        } else {
            key = join(&key, segment);
        }
    }
    key
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

#[cfg(test)]
mod tests;

//! The command line of `consentry serve`, as one of the configuration's
//! sources.
//!
//! The flags belong to the configuration rather than to the CLI because
//! they are merged with the file and the environment here, key by key: the
//! CLI only parses them and hands them over, so the configuration never
//! reaches back into the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use consentry_engine::{ForbidErrors, RequestEntities};

use crate::audit::writer::{Backpressure, Durability};
use crate::auth::DecisionAccess;
use crate::telemetry::LogFormat;

/// The embedded consent store: a SQLite data directory beside the working directory.
pub const DEFAULT_STORE: &str = "consentry-data";

/// How the serve options combine, shown under `consentry serve --help`.
const SERVE_AFTER_HELP: &str = "\
Every option can also be set in the configuration file (--config) or in the
environment: a flag wins over a variable, which wins over the file, which
wins over the default. The variable of an option is CONSENTRY_ and its name
(CONSENTRY_MAX_BATCH), or CONSENTRY_ and its key in the file, with __
between nested keys (CONSENTRY_AUDIT__QUEUE). Tokens are listed in the
file's [auth] section (see `consentry token new`); CONSENTRY_ADMIN_TOKEN
adds a development token holding every operator role.";

/// Options of `consentry serve`. Unset options fall back to the
/// environment, then to the configuration file, then to the defaults
/// (see [`crate::config`]), so none has a default here.
#[derive(Debug, Default, clap::Args)]
#[command(after_help = SERVE_AFTER_HELP)]
pub struct ServeArgs {
    /// A TOML configuration file holding any of the settings below, and
    /// the accepted tokens.
    #[arg(long, env = crate::config::CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// The policy directory: `*.cedar`, `schema.cedarschema` or `schema.json`,
    /// `entities.json`, `links.json`. It is then the truth for the policies,
    /// schema and links (API writes to them are refused); without it the
    /// store is, and the API manages them.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port [default: 127.0.0.1:8180].
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// A separate address for the policy, consent and audit routes, which
    /// are then not served on `--bind` (`listen.admin_bind`).
    #[arg(long)]
    pub admin_bind: Option<SocketAddr>,
    /// Serve Envoy's gRPC external authorization
    /// (`envoy.service.auth.v3.Authorization`) on this address; off unless
    /// set (`listen.grpc_bind`).
    #[arg(long)]
    pub grpc_bind: Option<SocketAddr>,
    /// Serve HTTPS with this PEM certificate chain, leaf first (`tls.cert`).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (`tls.key`).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// How long a client may take to send a request's headers, and to
    /// finish the TLS handshake (`listen.header_timeout`) [default: 10s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub header_timeout: Option<Duration>,
    /// How long a client may take to send a request's body; later is 408
    /// (`listen.body_timeout`) [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub body_timeout: Option<Duration>,
    /// How long a connection may stay open with no request being answered
    /// (`listen.idle_timeout`) [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// The most connections open at once, over all listeners, lowered to
    /// what the open-file limit allows; at the cap the connection idle the
    /// longest is closed to make room (`listen.max_connections`) [default: 4096].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Reload the policy directory, and the plugins, when their files
    /// change; `--watch=false` turns off a `watch = true` from the file.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub watch: Option<bool>,
    /// How long the watched files must be quiet before a reload, e.g.
    /// `1s` or `500ms`; a file still open for writing holds the reload
    /// until it is closed (`watch_settle`) [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub watch_settle: Option<Duration>,
    /// A directory of policy tests (as for `consentry test`) that the
    /// policies at start-up, every reload and every change of the policies
    /// or the schema must pass before they are put in force (`policy_tests`).
    #[arg(long)]
    pub policy_tests: Option<PathBuf>,
    /// This server's FHIR base URL, e.g. `https://fhir.example/r4`: an
    /// absolute reference in a consent binds only under it (`fhir_base`).
    #[arg(long)]
    pub fhir_base: Option<String>,
    /// Largest batch accepted by the batch endpoints [default: 100].
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Largest request body, in bytes [default: 1048576].
    #[arg(long)]
    pub max_body: Option<usize>,
    /// How many bytes of entities a replica keeps in memory; the rest of
    /// the directory stays in the store and is loaded when a decision
    /// needs it [default: 67108864].
    #[arg(long)]
    pub cache_bytes: Option<usize>,
    /// Where consents are kept: a SQLite data directory (`DIR` or
    /// `sqlite://DIR`), or a PostgreSQL database shared by several replicas
    /// (`postgres://user@host/db`) [default: consentry-data].
    #[arg(long)]
    pub store: Option<String>,
    /// Base URL advertised in `/.well-known/authzen-configuration`;
    /// by default it is derived from the request's `Host` header.
    #[arg(long)]
    pub public_url: Option<String>,
    /// A plugin configuration (`plugins.toml`). With `--watch`, a change to
    /// it or to a component it names reloads the plugins.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Where the decision log is written: a directory of hash-chained JSON
    /// Lines files, a PostgreSQL database shared by several replicas
    /// (`postgres://user@host/db`; the table `consentry_audit_log` holds one
    /// chain for all of them), or `off`. By default `audit/` inside a SQLite
    /// store's directory, or `consentry-audit` beside a PostgreSQL store
    /// (`audit.target`).
    #[arg(long)]
    pub audit: Option<String>,
    /// What happens to new decisions when the decision log falls behind or
    /// cannot be written [default: fail-closed].
    #[arg(long, value_enum)]
    pub audit_backpressure: Option<Backpressure>,
    /// Records the decision log may hold in memory before backpressure
    /// applies [default: 10000].
    #[arg(long)]
    pub audit_queue: Option<usize>,
    /// Size at which a decision log file is closed and the next one begun
    /// [default: 67108864].
    #[arg(long)]
    pub audit_rotate_bytes: Option<u64>,
    /// Decision log files to keep: older ones, compressed, are deleted once
    /// an anchor listed in the log's `anchors.txt` covers them; 0 keeps
    /// every file (`audit.retain_files`) [default: 0].
    #[arg(long)]
    pub audit_retain_files: Option<usize>,
    /// Free bytes on the decision log's disk below which `/readyz` warns
    /// (`disk`) and `consentry_audit_disk_free_bytes` falls under
    /// `consentry_audit_disk_low_water_bytes` (`audit.low_water_bytes`)
    /// [default: 1073741824].
    #[arg(long)]
    pub audit_low_water_bytes: Option<u64>,
    /// Which decisions are answered only once their record is durable:
    /// `break-glass` Allows, or every decision with `sync`
    /// (`audit.durability`) [default: break-glass].
    #[arg(long, value_enum)]
    pub audit_durability: Option<Durability>,
    /// Who may ask for decisions: `open` (anyone who reaches `--bind`) or
    /// `token` (a token with the `decision` role) (`auth.decisions`).
    #[arg(long, value_enum)]
    pub decisions: Option<DecisionAccess>,
    /// What a forbid that cannot be evaluated does: `deny`, or `skip` as
    /// plain Cedar does (`decisions.forbid_errors`) [default: deny].
    #[arg(long, value_parser = forbid_errors())]
    pub forbid_errors: Option<ForbidErrors>,
    /// What request entities and AuthZEN properties may do to stored
    /// facts: `add-only`, or `replace` as cedar-agent does
    /// (`decisions.request_entities`) [default: add-only].
    #[arg(long, value_parser = request_entities())]
    pub request_entities: Option<RequestEntities>,
    /// How log lines are written to stderr: `text`, or `json` (one object
    /// per line) (`telemetry.log_format`) [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Send traces over OTLP/HTTP to this URL, e.g.
    /// `http://127.0.0.1:4318/v1/traces`; off by default
    /// (`telemetry.otlp_endpoint`).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Let `ext_authz` mappers read the principal from the `x-principal`
    /// header; `--trust-principal-header=false` turns off a `true` from the
    /// file (`identity.trust_principal_header`) [default: false].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub trust_principal_header: Option<bool>,
    /// Accept JWTs of this OpenID Connect issuer, checked against its `iss`
    /// (`identity.issuer`).
    #[arg(long)]
    pub oidc_issuer: Option<String>,
    /// An audience the issuer's tokens must name in `aud`; repeatable
    /// (`identity.audience`).
    #[arg(long = "oidc-audience")]
    pub oidc_audience: Vec<String>,
    /// The issuer's signing keys as a JWKS file (`identity.jwks_file`).
    #[arg(long)]
    pub oidc_jwks_file: Option<PathBuf>,
    /// Where the issuer publishes its JWKS: `https://`, or `http://` to a
    /// loopback address (`identity.jwks_url`).
    #[arg(long)]
    pub oidc_jwks_url: Option<String>,
    /// How often the JWKS is read again (`identity.refresh_interval`) [default: 5m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub oidc_refresh_interval: Option<Duration>,
    /// The least time between two JWKS fetches caused by tokens with an
    /// unknown `kid` (`identity.unknown_kid_cooldown`) [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub oidc_unknown_kid_cooldown: Option<Duration>,
    /// How far `exp` and `nbf` may be off (`identity.clock_skew`) [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub oidc_clock_skew: Option<Duration>,
    /// The claim holding the token's roles, or a dotted path to it
    /// (`identity.role_claim`) [default: roles].
    #[arg(long)]
    pub oidc_role_claim: Option<String>,
    /// The principal of a token without `fhirUser`, as a FHIR reference
    /// with `{sub}`, e.g. `Patient/{sub}` (`identity.patient_principal`).
    #[arg(long)]
    pub oidc_patient_principal: Option<String>,
}

/// `deny` or `skip`: the engine's names, which the file uses too.
pub(crate) fn forbid_errors() -> impl TypedValueParser<Value = ForbidErrors> {
    PossibleValuesParser::new(["deny", "skip"])
        .map(|name| if name == "skip" { ForbidErrors::Skip } else { ForbidErrors::Deny })
}

/// `add-only` or `replace`: the engine's names, which the file uses too.
pub(crate) fn request_entities() -> impl TypedValueParser<Value = RequestEntities> {
    PossibleValuesParser::new(["add-only", "replace"])
        .map(|name| if name == "replace" { RequestEntities::Replace } else { RequestEntities::AddOnly })
}

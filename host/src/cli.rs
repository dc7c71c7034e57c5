//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::audit::writer::Backpressure;

/// The embedded consent store: a SQLite data directory beside the working directory.
pub const DEFAULT_STORE: &str = "consentry-data";

/// Consentry: a consent-aware policy decision point for health data.
#[derive(Debug, Parser)]
#[command(name = "consentry", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the decision and admin APIs over HTTP.
    Serve(ServeArgs),
    /// Decide one request from a file and print the decision as JSON.
    /// Exits 0 on Allow, 2 on Deny, 3 on invalid policies or request.
    Check(CheckArgs),
    /// Validate a policy directory. Exits 3 if it is invalid.
    Validate(ValidateArgs),
    /// Run policy tests: YAML or JSON files of consents, entities, requests
    /// and expected decisions. Exits 0 when all pass, 1 when a case fails,
    /// 3 on an ill-formed test file, invalid policies or a refused consent.
    Test(TestArgs),
    /// Print the Cedar policies a FHIR Consent compiles to, after checking
    /// them against the policy directory's schema. Exits 3 if it is refused.
    CompileConsent(CompileConsentArgs),
    /// Work with WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Work with the decision log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `consentry audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a decision log's hash chain, across its rotated files or the
    /// rows of its table. Exits 0 if it is intact, 1 naming the first record
    /// that was edited, deleted or moved, 3 if it cannot be read.
    Verify(AuditVerifyArgs),
}

/// Options of `consentry audit verify`.
#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    /// The decision log, as given to `serve --audit`: a directory, or a
    /// PostgreSQL URL (`postgres://user@host/db`).
    pub log: String,
}

/// `consentry plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Check a component against the plugin interface and print the hooks it
    /// exports and the imports it needs. Exits 3 if it is not a usable plugin.
    Check(PluginCheckArgs),
}

/// Options of `consentry plugin check`.
#[derive(Debug, clap::Args)]
pub struct PluginCheckArgs {
    /// A WebAssembly component, as built for `wasm32-wasip2`.
    pub component: PathBuf,
}

/// Options of `consentry serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The policy directory: `*.cedar`, `schema.cedarschema` or `schema.json`,
    /// `entities.json`, `links.json`.
    #[arg(long, env = "CONSENTRY_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "CONSENTRY_BIND", default_value = "127.0.0.1:8180")]
    pub bind: SocketAddr,
    /// Reload the policy directory, and the plugins, when their files change.
    #[arg(long)]
    pub watch: bool,
    /// Largest batch accepted by the batch endpoints.
    #[arg(long, env = "CONSENTRY_MAX_BATCH", default_value_t = 100)]
    pub max_batch: usize,
    /// Largest request body, in bytes.
    #[arg(long, env = "CONSENTRY_MAX_BODY", default_value_t = crate::http::DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Where consents are kept: a SQLite data directory (`DIR` or
    /// `sqlite://DIR`), or a PostgreSQL database shared by several replicas
    /// (`postgres://user@host/db`).
    #[arg(long, env = "CONSENTRY_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Base URL advertised in `/.well-known/authzen-configuration`;
    /// by default it is derived from the request's `Host` header.
    #[arg(long, env = "CONSENTRY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// A plugin configuration (`plugins.toml`). With `--watch`, a change to
    /// it or to a component it names reloads the plugins.
    #[arg(long, env = "CONSENTRY_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Where the decision log is written: a directory of hash-chained JSON
    /// Lines files, a PostgreSQL database shared by several replicas
    /// (`postgres://user@host/db`; the table `consentry_audit_log` holds one
    /// chain for all of them), or `off`. By default `audit/` inside a SQLite
    /// store's directory, or `consentry-audit` beside a PostgreSQL store.
    #[arg(long, env = "CONSENTRY_AUDIT")]
    pub audit: Option<String>,
    /// What happens to new decisions when the decision log falls behind or
    /// cannot be written.
    #[arg(long, env = "CONSENTRY_AUDIT_BACKPRESSURE", value_enum, default_value_t = Backpressure::FailClosed)]
    pub audit_backpressure: Backpressure,
    /// Records the decision log may hold in memory before backpressure applies.
    #[arg(long, env = "CONSENTRY_AUDIT_QUEUE", default_value_t = 10_000)]
    pub audit_queue: usize,
    /// Size at which a decision log file is closed and the next one begun.
    #[arg(long, env = "CONSENTRY_AUDIT_ROTATE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub audit_rotate_bytes: u64,
}

/// Options of `consentry check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The policy directory.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// A request in the `/v1/is_authorized` body format.
    #[arg(long)]
    pub request: PathBuf,
    /// The consent store to consult, as for `serve`.
    #[arg(long, env = "CONSENTRY_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// A plugin configuration, as for `serve`.
    #[arg(long, env = "CONSENTRY_PLUGINS")]
    pub plugins: Option<PathBuf>,
}

/// Options of `consentry validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// The policy directory.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

/// Options of `consentry test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The directory of test files (`*.yaml`, `*.yml`, `*.json`), run in
    /// name order; subdirectories are not searched.
    #[arg(default_value = "policies/tests")]
    pub dir: PathBuf,
    /// The policy directory the tests run against.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

/// Options of `consentry compile-consent`.
#[derive(Debug, clap::Args)]
pub struct CompileConsentArgs {
    /// A FHIR R4 or R5 `Consent` resource, as JSON.
    pub consent: PathBuf,
    /// The policy directory whose schema the compiled policies must fit.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
}

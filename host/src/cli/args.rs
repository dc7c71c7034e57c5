//! What the command line says: every subcommand's arguments, as clap
//! derives them. `serve`'s flags are [`crate::config::ServeArgs`], since
//! the configuration merges them with the file and the environment.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use consentry_engine::consent::FhirBase;
use consentry_engine::{DecisionOptions, ForbidErrors, RequestEntities};

use crate::auth::Role;
use crate::config::{DEFAULT_STORE, ServeArgs, forbid_errors, request_entities};

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
    /// Serve the decision and admin APIs over HTTP or HTTPS.
    Serve(Box<ServeArgs>),
    /// Decide one request from a file and print the decision as JSON.
    /// Exits 0 on Allow, 2 on Deny, 3 on invalid policies or request.
    Check(OfflineArgs),
    /// Search for the subjects, resources or actions a request allows, as
    /// `POST /access/v1/search/KIND` would, over a policy directory's
    /// entities, and print the page as JSON. Exits 0 when something was
    /// found, 2 when nothing was, 3 on invalid policies or request.
    Search(SearchArgs),
    /// Plan which of a patient's records a request may reach, from a file
    /// in the `/v1/plan` body format, and print the plan as JSON. Exits 0
    /// when some records may be reached, 2 when none, 3 on invalid input.
    Plan(OfflineArgs),
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
    /// Make bearer tokens for the configuration file's `[auth]` section.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Work with the policy sets in the store.
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Work with the entities in the store.
    #[command(subcommand)]
    Entities(EntitiesCommand),
    /// Print a shell completion script on stdout, for example
    /// `consentry completions bash > /etc/bash_completion.d/consentry`.
    Completions(CompletionsArgs),
    /// Print the man page, as roff, on stdout (`consentry man | man -l -`),
    /// or, with `--out-dir`, write one page per command into a directory.
    Man(ManArgs),
}

/// Options of `consentry completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Options of `consentry man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `consentry.1` and a page for every subcommand
    /// (`consentry-serve.1`, …) into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// `consentry entities …`.
#[derive(Debug, Subcommand)]
pub enum EntitiesCommand {
    /// Upsert the entities of a JSON Lines file (one entity per line) or a
    /// JSON array into the store, validated under the schema of its newest
    /// policy version, in one transaction. Exits 3, writing nothing, if an
    /// entity is invalid (naming its line).
    Import(EntitiesImportArgs),
}

/// Options of `consentry entities import`.
#[derive(Debug, clap::Args)]
pub struct EntitiesImportArgs {
    /// The file: JSON Lines, or a JSON array of Cedar entities.
    pub file: PathBuf,
    /// The store, as for `serve`.
    #[arg(long, default_value = DEFAULT_STORE)]
    pub store: String,
    /// Where the change is recorded.
    #[command(flatten)]
    pub record: ImportRecordArgs,
}

/// Where an import by the CLI records its change.
#[derive(Debug, clap::Args)]
pub struct ImportRecordArgs {
    /// The decision log the change is recorded in, as `serve --audit` takes
    /// it (`off`: not recorded); by default the one `serve` uses with this
    /// store. A JSON Lines log is locked by the server writing it: import
    /// while it is stopped, or use a PostgreSQL log, which replicas share.
    #[arg(long)]
    pub audit: Option<String>,
    /// Why, recorded with the change (as `X-Change-Reason` is).
    #[arg(long)]
    pub reason: Option<String>,
}

/// `consentry policies …`.
#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// Record a policy directory in the store as its newest policy version
    /// (and import its `entities.json`), so that a server started without
    /// `--policies` serves it and the API manages it from then on. Exits 3
    /// if the directory is invalid or fails the policy tests.
    Import(PoliciesImportArgs),
}

/// Options of `consentry policies import`.
#[derive(Debug, clap::Args)]
pub struct PoliciesImportArgs {
    /// The policy directory.
    pub dir: PathBuf,
    /// The store, as for `serve`.
    #[arg(long, default_value = DEFAULT_STORE)]
    pub store: String,
    /// Policy tests the directory must pass first, as for `serve`.
    #[arg(long)]
    pub policy_tests: Option<PathBuf>,
    /// Where the change is recorded.
    #[command(flatten)]
    pub record: ImportRecordArgs,
}

/// `consentry token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token, once, then the `[[auth.tokens]]` entry
    /// that holds only its SHA-256 digest. Exits 3 if the roles and the
    /// principal do not go together.
    New(TokenNewArgs),
}

/// Options of `consentry token new`.
#[derive(Debug, clap::Args)]
pub struct TokenNewArgs {
    /// Who will hold the token, for logs, e.g. `ehr-gateway`.
    #[arg(long)]
    pub name: String,
    /// What the token may do; repeat for several roles.
    #[arg(long = "role", value_enum, required = true)]
    pub roles: Vec<Role>,
    /// For the `patient` role: the patient or representative the token
    /// stands for, e.g. `Patient::"p-100"`.
    #[arg(long)]
    pub principal: Option<String>,
}

/// `consentry audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check a decision log's hash chain, across its rotated files or the
    /// rows of its table, and print its head as an anchor to keep elsewhere.
    /// Exits 0 if it is intact, 1 naming the first record that was edited,
    /// deleted or moved, or an anchor the log no longer holds, 3 if it
    /// cannot be read.
    Verify(AuditVerifyArgs),
}

/// Options of `consentry audit verify`.
#[derive(Debug, clap::Args)]
pub struct AuditVerifyArgs {
    /// The decision log, as given to `serve --audit`: a directory, or a
    /// PostgreSQL URL (`postgres://user@host/db`).
    pub log: String,
    /// A record noted earlier, `SEQ:HASH` as a previous run printed it; the
    /// log must still hold it unchanged, which shows records cut from its
    /// end or a chain rewritten with recomputed hashes. Repeatable.
    #[arg(long = "anchor", value_name = "SEQ:HASH")]
    pub anchors: Vec<String>,
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

/// What `check`, `plan` and `search` read: a request and what a server
/// would hold, so that they answer as the server they stand for does.
#[derive(Debug, clap::Args)]
pub struct OfflineArgs {
    /// The policy directory: pack, schema, and the entities (the stored
    /// candidates of `search`).
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// A request body, as the command's endpoint takes it: `POST
    /// /v1/is_authorized` for `check`, `POST /v1/plan` for `plan`, `POST
    /// /access/v1/search/KIND` for `search`.
    #[arg(long)]
    pub request: PathBuf,
    /// The consent store to consult, as for `serve`.
    #[arg(long, env = "CONSENTRY_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// A plugin configuration, as for `serve`.
    #[arg(long, env = "CONSENTRY_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// This server's FHIR base URL, as for `serve` (`fhir_base`): stored
    /// consents are read as the server reads them.
    #[arg(long, env = "CONSENTRY_FHIR_BASE", value_parser = FhirBase::parse)]
    pub fhir_base: Option<FhirBase>,
    /// How decisions treat erroring forbids and request entities, as for `serve`.
    #[command(flatten)]
    pub decisions: DecisionFlags,
}

/// Options of `consentry search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What is searched for: `subject`, `resource` or `action`.
    #[arg(value_enum)]
    pub kind: SearchKind,
    /// The request, and what the server would hold.
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// What `consentry search` looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchKind {
    /// Who may do the action to the resource.
    Subject,
    /// What the subject may do the action to.
    Resource,
    /// What the subject may do to the resource.
    Action,
}

/// `--forbid-errors` and `--request-entities` of the commands that decide
/// offline, so that they decide as the server they stand for does.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct DecisionFlags {
    /// What a forbid that cannot be evaluated does: `deny`, or `skip` as
    /// plain Cedar does.
    #[arg(long, value_parser = forbid_errors(), default_value = "deny")]
    pub forbid_errors: ForbidErrors,
    /// What request entities may do to stored facts: `add-only`, or
    /// `replace` as cedar-agent does.
    #[arg(long, value_parser = request_entities(), default_value = "add-only")]
    pub request_entities: RequestEntities,
}

impl DecisionFlags {
    /// The engine's options.
    pub fn options(self) -> DecisionOptions {
        DecisionOptions { forbid_errors: self.forbid_errors, request_entities: self.request_entities }
    }
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
    /// A plugin configuration (`plugins.toml`): every case then runs through
    /// these plugins, as the server would with `serve --plugins`.
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// How decisions treat erroring forbids and request entities, as for `serve`.
    #[command(flatten)]
    pub decisions: DecisionFlags,
}

/// Options of `consentry compile-consent`.
#[derive(Debug, clap::Args)]
pub struct CompileConsentArgs {
    /// A FHIR R4 or R5 `Consent` resource, as JSON.
    pub consent: PathBuf,
    /// The policy directory whose schema the compiled policies must fit.
    #[arg(long, default_value = "policies")]
    pub policies: PathBuf,
    /// This server's FHIR base URL, as for `serve` (`fhir_base`): absolute
    /// references under it bind.
    #[arg(long, env = "CONSENTRY_FHIR_BASE", value_parser = FhirBase::parse)]
    pub fhir_base: Option<FhirBase>,
}

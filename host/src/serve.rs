//! `consentry serve`: open the store, load the policies and entities (and
//! the policy directory, when one is given), then serve until a signal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use consentry_engine::DecisionOptions;
use consentry_engine::consent::FhirBase;
use tokio::runtime::Handle;

use crate::audit::query::AuditStore;
use crate::audit::writer::AuditLog;
use crate::audit::{self, AuditOptions, AuditTarget};
use crate::auth::{ADMIN_TOKEN_ENV, Auth};
use crate::cli::ServeArgs;
use crate::commands::{EXIT_INVALID, report_dir_error};
use crate::config::{self, AuditConfig, ServeConfig};
use crate::consents::Consents;
use crate::directory::{self, Directory, Opened, PolicyTruth, ReloadError};
use crate::identity::{IdentityConfig, Verifier};
use crate::plugins::Plugins;
use crate::state::{AppState, Settings};
use crate::store::StoreLocation;
use crate::{listen, policy_test, telemetry, watch};

/// Runs the server with the configuration `args` resolve to. The first
/// line on stdout is `consentry listening on http://ADDR` (`https` with
/// TLS), so scripts and tests that bind port 0 learn the port; see
/// [`listen::serve`]. A configuration, token or certificate it refuses
/// exits 3 before anything is loaded or listens.
pub async fn serve(args: ServeArgs) -> ExitCode {
    let args = match config::load(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let _telemetry = match telemetry::init(&args.telemetry) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    // Before anything is counted: what is counted before the recorder is
    // installed is lost.
    crate::metrics::handle();
    let admin_token = std::env::var(ADMIN_TOKEN_ENV).ok();
    let auth = match Auth::new(&args.auth, admin_token.as_deref()) {
        Ok(auth) => auth,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let (auth, _key_refresh) = match start_oidc(&args.identity, auth).await {
        Ok(started) => started,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let tls = match args.tls.as_ref().map(listen::load_tls).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let settings = Settings {
        max_batch: args.max_batch,
        public_url: args.public_url.clone(),
        decisions: DecisionOptions {
            forbid_errors: args.decisions.forbid_errors,
            request_entities: args.decisions.request_entities,
        },
        policy_tests: args.policy_tests.clone(),
        trust_principal_header: args.identity.trust_principal_header,
    };
    let consents = match open_consents(&args.store, args.fhir_base.clone()).await {
        Ok(consents) => consents,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(store = consents.store().describe(), "consent store open");
    let plugins = match Plugins::load_optional(args.plugins.as_deref()) {
        Ok(plugins) => plugins,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    for plugin in plugins.current().plugins() {
        tracing::info!(plugin = plugin.name(), hooks = ?plugin.config.hooks, "plugin loaded");
    }
    if !auth.is_configured() {
        tracing::warn!(
            "no token is configured ({ADMIN_TOKEN_ENV} or `[auth]`): the admin, consent and audit routes refuse every request"
        );
    }
    let plugins = Arc::new(plugins);
    let truth = args.policies.clone().map_or(PolicyTruth::Store, PolicyTruth::Directory);
    let gate = settings.policy_gate(&plugins);
    let Opened { directory, following, loaded } =
        match Directory::open(consents.durable(), truth, gate, args.cache_bytes).await {
            Ok(opened) => opened,
            Err(ReloadError::Dir(error)) => {
                report_dir_error(&error);
                return ExitCode::from(EXIT_INVALID);
            }
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(EXIT_INVALID);
            }
        };
    let directory = Arc::new(directory);
    let _follow = AbortOnDrop(directory::follow(Arc::clone(&directory), following));
    {
        let snapshot = directory.read();
        tracing::info!(
            version = snapshot.version,
            policies = snapshot.bundle.policy_count(),
            entity_revision = snapshot.revision,
            cache_bytes = args.cache_bytes,
            hash = snapshot.bundle.hash(),
            "policies loaded from the store; entities are loaded as decisions need them"
        );
    }
    if !directory.has_policy_set() {
        tracing::warn!(
            "no policy set is stored: every decision is denied until one is put (PUT /v1/policies)"
        );
    }
    let state = AppState::with_directory(directory, settings, auth, consents, plugins);
    if let Err(message) = test_policies_in_force(&state).await {
        eprintln!("error: {message}");
        return ExitCode::from(EXIT_INVALID);
    }
    match start_audit(&args).await {
        Ok(Some((log, store))) => {
            state.pipeline.start_audit(log, store);
            watch::record_load(&state, &loaded).await;
        }
        Ok(None) => tracing::warn!("the decision log is off (--audit off): decisions are not recorded"),
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::FAILURE;
        }
    }
    let _watch = if let (true, Some(policies)) = (args.watch, &args.policies) {
        match watch::watch(policies, args.watch_settle, state.clone(), Handle::current()) {
            Ok(watch) => Some(watch),
            Err(error) => {
                eprintln!("error: cannot watch `{}`: {error}", policies.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let _plugin_watch = if args.watch && state.pipeline.plugins.config_path().is_some() {
        match crate::plugins::watch::watch(state.clone(), args.watch_settle, Handle::current()) {
            Ok(watch) => Some(watch),
            Err(error) => {
                eprintln!("error: cannot watch the plugins: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    match listen::serve(&args.listen, tls, state, args.max_body, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// With an identity provider configured, loads its keys and starts their
/// background refresh. A JWKS file that cannot be read stops the start; a
/// URL alone that cannot be fetched only warns, since the IdP may be
/// starting too: tokens are refused until the keys arrive, by refresh or
/// for an unknown kid.
async fn start_oidc(config: &IdentityConfig, auth: Auth) -> Result<(Auth, Option<AbortOnDrop>), String> {
    let Some(settings) = config.oidc().map_err(|e| e.to_string())? else { return Ok((auth, None)) };
    let has_file = settings.source.file.is_some();
    let verifier = Arc::new(Verifier::new(settings));
    match verifier.refresh().await {
        Ok(keys) => {
            tracing::info!(keys, issuer = %verifier.settings().issuer, "identity provider keys loaded")
        }
        Err(error) if has_file => return Err(error.to_string()),
        Err(error) => {
            tracing::warn!(%error, "identity provider keys not loaded yet; tokens are refused until they are");
        }
    }
    let refresh = AbortOnDrop(verifier.spawn_refresh());
    Ok((auth.with_oidc(verifier), Some(refresh)))
}

/// With `--policy-tests`, runs them against the policies loaded at
/// start-up: a server must not start with a set it would refuse to reload.
async fn test_policies_in_force(state: &AppState) -> Result<(), String> {
    let Some(tests) = &state.settings.policy_tests else { return Ok(()) };
    // The replica's copy is bounded and starts empty: the tests need the whole directory.
    let store = state
        .pipeline
        .directory
        .whole_store()
        .await
        .map_err(|e| format!("cannot read the entities for the policy tests: {e}"))?;
    match policy_test::gate(
        tests,
        &state.pipeline.bundle(),
        &store,
        &state.pipeline.plugins,
        state.settings.decisions,
    )
    .await
    {
        Ok(passed) => {
            tracing::info!(passed, tests = %tests.display(), "the policies in force pass the policy tests");
            Ok(())
        }
        Err(refusal) => {
            let failures: Vec<String> = refusal.failures.iter().map(|f| format!("\n  {f}")).collect();
            Err(format!(
                "the policies fail the policy tests in `{}` ({} failure(s) in {} case(s)):{}",
                tests.display(),
                refusal.failures.len(),
                refusal.cases,
                failures.concat()
            ))
        }
    }
}

/// Opens the decision log the configuration names and starts its writer.
async fn start_audit(args: &ServeConfig) -> Result<Option<(AuditLog, AuditStore)>, String> {
    open_audit(&args.store, &args.audit).await
}

/// Opens the decision log `config` names for a server on `store` (by
/// default `audit/` in a SQLite store's directory, else `consentry-audit`)
/// and starts its writer: for `serve`, and for the imports of the CLI,
/// which record their changes in the log the server uses.
pub async fn open_audit(store: &str, config: &AuditConfig) -> Result<Option<(AuditLog, AuditStore)>, String> {
    let target = match config.target.as_deref() {
        Some(text) => AuditTarget::parse(text).map_err(|e| format!("invalid `audit.target`: {e}"))?,
        None => AuditTarget::Dir(match StoreLocation::from_str(store) {
            Ok(StoreLocation::Sqlite { dir }) => dir.join("audit"),
            _ => PathBuf::from("consentry-audit"),
        }),
    };
    let options = AuditOptions {
        rotate_bytes: config.rotate_bytes,
        retention: audit::jsonl::Retention { keep_files: config.retain_files },
        low_water_bytes: config.low_water_bytes,
        queue: config.queue,
        backpressure: config.backpressure,
        durability: config.durability,
    };
    audit::open(&target, &options).await
}

/// Opens the consent store named on the command line, running its
/// migrations; consents are read with `fhir_base` as this server's FHIR base.
pub async fn open_consents(location: &str, fhir_base: Option<FhirBase>) -> Result<Arc<Consents>, String> {
    let location = StoreLocation::from_str(location).map_err(|e| e.to_string())?;
    Consents::open_under(&location, fhir_base)
        .await
        .map_err(|e| format!("cannot open the consent store: {e}"))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

/// Stops a background task when the server stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! `consentry serve`: open the store, load the policies and entities (and
//! the policy directory, when one is given), then serve until a signal.
//!
//! This is where the library's parts are put together for a server, so
//! their order lives here: nothing listens before everything it answers
//! with has loaded, and the recorder is installed before anything counts.

use std::sync::Arc;

use consentry_engine::DecisionOptions;
use tokio::runtime::Handle;

use super::error::{CliError, Outcome};
use super::stores::open_consents;
use crate::auth::{ADMIN_TOKEN_ENV, Auth};
use crate::config::{self, ServeArgs};
use crate::directory::{self, Directory, Opened, PolicyTruth, ReloadError};
use crate::identity::{IdentityConfig, Verifier};
use crate::plugins::Plugins;
use crate::state::{AppState, Settings};
use crate::{listen, policy_test, telemetry, watch};

/// Runs the server with the configuration `args` resolve to. The first
/// line on stdout is `consentry listening on http://ADDR` (`https` with
/// TLS), so scripts and tests that bind port 0 learn the port; see
/// [`listen::serve`]. A configuration, token or certificate it refuses
/// exits 3 before anything is loaded or listens.
pub async fn serve(args: ServeArgs) -> Result<Outcome, CliError> {
    let args = config::load(&args).map_err(CliError::invalid)?;
    let _telemetry = telemetry::init(&args.telemetry).map_err(CliError::invalid)?;
    // Before anything is counted: what is counted before the recorder is
    // installed is lost.
    crate::metrics::handle();
    let admin_token = std::env::var(ADMIN_TOKEN_ENV).ok();
    let auth = Auth::new(&args.auth, admin_token.as_deref()).map_err(CliError::invalid)?;
    let (auth, _key_refresh) = start_oidc(&args.identity, auth).await?;
    let tls = args.tls.as_ref().map(listen::load_tls).transpose().map_err(CliError::invalid)?;
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
    let consents = open_consents(&args.store, args.fhir_base.clone()).await?;
    tracing::info!(store = consents.store().describe(), "consent store open");
    let plugins = Plugins::load_optional(args.plugins.as_deref()).map_err(CliError::invalid)?;
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
        Directory::open(consents.durable(), truth, gate, args.cache_bytes).await.map_err(
            |error| match error {
                ReloadError::Dir(error) => error.into(),
                other => CliError::invalid(other),
            },
        )?;
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
    test_policies_in_force(&state).await?;
    match args.audit.open(&args.store).await.map_err(CliError::failed)? {
        Some((log, store)) => {
            state.pipeline.start_audit(log, store);
            watch::record_load(&state, &loaded).await;
        }
        None => tracing::warn!("the decision log is off (--audit off): decisions are not recorded"),
    }
    let _watch = match (args.watch, &args.policies) {
        (true, Some(policies)) => Some(
            watch::watch(policies, args.watch_settle, state.clone(), Handle::current())
                .map_err(|e| CliError::failed(format!("cannot watch `{}`: {e}", policies.display())))?,
        ),
        _ => None,
    };
    let _plugin_watch = if args.watch && state.pipeline.plugins.config_path().is_some() {
        Some(
            crate::plugins::watch::watch(state.clone(), args.watch_settle, Handle::current())
                .map_err(|e| CliError::failed(format!("cannot watch the plugins: {e}")))?,
        )
    } else {
        None
    };
    listen::serve(&args.listen, tls, state, args.max_body, shutdown_signal())
        .await
        .map_err(CliError::failed)?;
    Ok(Outcome::Done)
}

/// With an identity provider configured, loads its keys and starts their
/// background refresh. A JWKS file that cannot be read stops the start; a
/// URL alone that cannot be fetched only warns, since the IdP may be
/// starting too: tokens are refused until the keys arrive, by refresh or
/// for an unknown kid.
async fn start_oidc(config: &IdentityConfig, auth: Auth) -> Result<(Auth, Option<AbortOnDrop>), CliError> {
    let Some(settings) = config.oidc().map_err(CliError::invalid)? else { return Ok((auth, None)) };
    let has_file = settings.source.file.is_some();
    let verifier = Arc::new(Verifier::new(settings));
    match verifier.refresh().await {
        Ok(keys) => {
            tracing::info!(keys, issuer = %verifier.settings().issuer, "identity provider keys loaded")
        }
        Err(error) if has_file => return Err(CliError::invalid(error)),
        Err(error) => {
            tracing::warn!(%error, "identity provider keys not loaded yet; tokens are refused until they are");
        }
    }
    let refresh = AbortOnDrop(verifier.spawn_refresh());
    Ok((auth.with_oidc(verifier), Some(refresh)))
}

/// With `--policy-tests`, runs them against the policies loaded at
/// start-up: a server must not start with a set it would refuse to reload.
async fn test_policies_in_force(state: &AppState) -> Result<(), CliError> {
    let Some(tests) = &state.settings.policy_tests else { return Ok(()) };
    // The replica's copy is bounded and starts empty: the tests need the whole directory.
    let store = state
        .pipeline
        .directory
        .whole_store()
        .await
        .map_err(|e| CliError::failed(format!("cannot read the entities for the policy tests: {e}")))?;
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
            Err(CliError::invalid(format!(
                "the policies fail the policy tests in `{}` ({} failure(s) in {} case(s)):{}",
                tests.display(),
                refusal.failures.len(),
                refusal.cases,
                failures.concat()
            )))
        }
    }
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

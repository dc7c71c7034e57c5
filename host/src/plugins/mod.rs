//! Sandboxed WebAssembly plugins: policy information points (`enrich`),
//! request mappers for Envoy's `ext_authz` (`map-request`) and obligation
//! providers (`obligations`), as components of `wasm-plugins/sdk/wit/plugin.wit`.
//!
//! The set in force is swapped atomically, like a policy reload: a new
//! configuration is read, every plugin compiled and linked, and only then
//! does it replace the old set; a failure leaves the old set serving. A
//! decision holds the set it started with to the end.

pub mod bindings;
pub mod config;
pub mod enrichment;
pub mod fault;
pub mod hooks;
pub mod metrics;
pub mod runtime;
pub mod sandbox;
pub mod watch;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use consentry_engine::{Decision, DecisionRequest, RequestError, RequestErrorKind};

use self::bindings::consentry::plugin::types::{DecisionRequest as PluginRequest, Enrichment, HttpRequest};
use self::config::{FailureMode, Hook, MayChange, PluginConfig};
use self::fault::PluginFault;
use self::runtime::{LoadedPlugin, Runtime};

/// What each plugin that ran for one decision did, for its audit record:
/// `name/hook: ok`, `name/hook: no-match`, or the fault's kind and what
/// followed, e.g. `guardian/enrich: timeout, denied`. Kinds only: a fault's
/// message may carry data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginTrace(Vec<String>);

impl PluginTrace {
    fn ran(&mut self, plugin: &LoadedPlugin, hook: Hook, outcome: &str) {
        self.0.push(format!("{}/{}: {outcome}", plugin.name(), hook.name()));
    }

    fn faulted(&mut self, plugin: &LoadedPlugin, hook: Hook, fault: &PluginFault) {
        let followed = match plugin.config.failure {
            FailureMode::FailClosed => "denied",
            FailureMode::Skip => "skipped",
        };
        self.ran(plugin, hook, &format!("{}, {followed}", fault.kind()));
    }

    /// This trace, then `later`'s.
    pub fn followed_by(mut self, later: PluginTrace) -> PluginTrace {
        self.0.extend(later.0);
        self
    }

    /// The outcomes, in the order the plugins ran.
    pub fn into_outcomes(self) -> Vec<String> {
        self.0
    }
}

/// The plugins in force, in configuration order.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: Vec<Arc<LoadedPlugin>>,
}

impl PluginSet {
    /// Whether no plugin is configured.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// SHA-256 over each plugin's name and component digest, in order:
    /// names the plugin set in change records.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for plugin in &self.plugins {
            hasher.update(plugin.config.name.as_bytes());
            hasher.update([0]);
            hasher.update(plugin.digest);
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The plugins, in configuration order.
    pub fn plugins(&self) -> &[Arc<LoadedPlugin>] {
        &self.plugins
    }

    /// Whether any plugin takes part in decisions (rather than only mapping).
    pub fn decides(&self) -> bool {
        self.plugins
            .iter()
            .any(|p| p.config.hooks.contains(&Hook::Enrich) || p.config.hooks.contains(&Hook::Obligations))
    }

    fn applicable<'a>(
        &'a self,
        hook: Hook,
        request: &'a DecisionRequest,
    ) -> impl Iterator<Item = &'a Arc<LoadedPlugin>> {
        let resource_type = request.resource.type_name().to_string();
        let action = request.action.id().unescaped().to_owned();
        self.plugins.iter().filter(move |p| {
            p.config.hooks.contains(&hook) && p.config.applies_to.matches(&resource_type, &action)
        })
    }

    /// Runs the `enrich` hooks that apply, in order, each seeing what the
    /// ones before it added. `view` shows a plugin the request as it stands;
    /// `apply` lays a plugin's enrichment over it within the plugin's grants
    /// (see [`enrichment::apply_enrichment`]). A failing fail-closed plugin
    /// ends it with a Deny that names it.
    pub fn enrich(
        &self,
        request: &mut DecisionRequest,
        view: impl Fn(&DecisionRequest) -> PluginRequest,
        apply: impl Fn(&mut DecisionRequest, &Enrichment, &MayChange) -> Result<(), PluginFault>,
        trace: &mut PluginTrace,
    ) -> Result<(), Decision> {
        let enrichers: Vec<Arc<LoadedPlugin>> = self.applicable(Hook::Enrich, request).cloned().collect();
        for plugin in enrichers {
            let result = plugin.enrich(&view(request)).and_then(|enrichment| {
                apply(request, &enrichment, &plugin.config.may_change)
                    .inspect_err(|fault| plugin.record_fault(Hook::Enrich, fault))
            });
            match result {
                Ok(()) => trace.ran(&plugin, Hook::Enrich, "ok"),
                Err(fault) => {
                    trace.faulted(&plugin, Hook::Enrich, &fault);
                    failed(&plugin, Hook::Enrich, &fault)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the `obligations` hooks that apply and adds what they return.
    /// A failing fail-closed plugin turns the decision into a Deny.
    pub fn add_obligations(
        &self,
        request: &DecisionRequest,
        decision: &mut Decision,
        view: impl Fn(&DecisionRequest) -> PluginRequest,
        trace: &mut PluginTrace,
    ) {
        for plugin in self.applicable(Hook::Obligations, request) {
            let seen = hooks::plugin_decision(decision);
            let result = plugin.obligations(&view(request), &seen).and_then(|returned| {
                hooks::plugin_obligations(plugin.name(), returned)
                    .inspect_err(|fault| plugin.record_fault(Hook::Obligations, fault))
            });
            match result {
                Ok(obligations) => {
                    trace.ran(plugin, Hook::Obligations, "ok");
                    decision.obligations.extend(obligations);
                }
                Err(fault) => {
                    trace.faulted(plugin, Hook::Obligations, &fault);
                    if let Err(denied) = failed(plugin, Hook::Obligations, &fault) {
                        *decision = denied;
                        return;
                    }
                }
            }
        }
    }

    /// Asks the `map-request` plugins in order for a Cedar request; the
    /// first that recognises the HTTP request answers. `Err` carries the
    /// reason for the Deny when none does or a fail-closed one fails.
    /// `facts` checks a mapped request's entities against the store: a
    /// mapper's entities are its output, so one that would change a stored
    /// fact is the mapper's fault.
    pub fn map_request(
        &self,
        http: &HttpRequest,
        with_authorization: &HttpRequest,
        facts: impl Fn(&DecisionRequest) -> Result<(), RequestError>,
        trace: &mut PluginTrace,
    ) -> Result<DecisionRequest, String> {
        for plugin in self.plugins.iter().filter(|p| p.config.hooks.contains(&Hook::MapRequest)) {
            let seen = if plugin.config.grants.contains(&config::Grant::AuthorizationHeader) {
                with_authorization
            } else {
                http
            };
            let result = plugin.map_request(seen).and_then(|mapped| {
                mapped
                    .map(|mapped| {
                        let request = hooks::mapped_request(mapped)?;
                        match facts(&request) {
                            Err(error) if error.kind == RequestErrorKind::StoredFactConflict => {
                                Err(PluginFault::Ungranted(error.to_string()))
                            }
                            _ => Ok(request),
                        }
                    })
                    .transpose()
                    .inspect_err(|fault| plugin.record_fault(Hook::MapRequest, fault))
            });
            match result {
                Ok(Some(request)) => {
                    trace.ran(plugin, Hook::MapRequest, "ok");
                    return Ok(request);
                }
                Ok(None) => trace.ran(plugin, Hook::MapRequest, "no-match"),
                Err(fault) => {
                    trace.faulted(plugin, Hook::MapRequest, &fault);
                    if let Err(denied) = failed(plugin, Hook::MapRequest, &fault) {
                        return Err(denied.summary());
                    }
                }
            }
        }
        Err(format!("no request mapper recognised `{} {}`", http.method, http.path))
    }
}

/// Logs a fault (its kind only: the message may carry data) and, for a
/// fail-closed plugin, gives the Deny.
fn failed(plugin: &LoadedPlugin, hook: Hook, fault: &PluginFault) -> Result<(), Decision> {
    match plugin.config.failure {
        FailureMode::FailClosed => {
            tracing::warn!(
                plugin = plugin.name(),
                hook = hook.name(),
                fault = fault.kind(),
                "plugin failed; denying"
            );
            Err(Decision::fail_closed(format!("plugin `{}` ({}) {fault}", plugin.name(), hook.name())))
        }
        FailureMode::Skip => {
            tracing::warn!(
                plugin = plugin.name(),
                hook = hook.name(),
                fault = fault.kind(),
                "plugin failed; skipped as configured"
            );
            Ok(())
        }
    }
}

/// Why the plugins could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PluginError {
    /// The configuration file was refused.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A plugin was refused.
    #[error(transparent)]
    Load(#[from] runtime::LoadError),
    /// The engine could not start.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// There is no configuration file to reload.
    #[error("no plugin configuration was given at start-up (--plugins)")]
    NotConfigured,
}

impl PluginError {
    /// A short, stable name for the failure, for answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            PluginError::Config(_) => "plugin_config_invalid",
            PluginError::Load(error) => error.code(),
            PluginError::Runtime(error) => error.code(),
            PluginError::NotConfigured => "plugins_not_configured",
        }
    }
}

/// The plugin set in force and how to reload it.
#[derive(Debug)]
pub struct Plugins {
    runtime: Option<Arc<Runtime>>,
    config_path: Option<PathBuf>,
    current: ArcSwap<PluginSet>,
    reloading: Mutex<()>,
}

impl Plugins {
    /// No plugins, and no engine.
    pub fn none() -> Self {
        Self {
            runtime: None,
            config_path: None,
            current: ArcSwap::from_pointee(PluginSet::default()),
            reloading: Mutex::new(()),
        }
    }

    /// Starts the engine and loads the plugins configured in `config_path`.
    pub fn load(config_path: &Path) -> Result<Self, PluginError> {
        let runtime = Runtime::new()?;
        let set = load_set(&runtime, &config::read(config_path)?)?;
        Ok(Self {
            runtime: Some(runtime),
            config_path: Some(config_path.to_owned()),
            current: ArcSwap::from_pointee(set),
            reloading: Mutex::new(()),
        })
    }

    /// Another handle on the same engine and plugin set, for another
    /// state: each `consentry test` file gets a fresh state, and compiling
    /// the components once serves them all. A reload through one handle
    /// does not reach the other.
    pub fn share(&self) -> Self {
        Self {
            runtime: self.runtime.clone(),
            config_path: self.config_path.clone(),
            current: ArcSwap::new(self.current()),
            reloading: Mutex::new(()),
        }
    }

    /// The plugins configured in `config_path` if one is given, else none.
    pub fn load_optional(config_path: Option<&Path>) -> Result<Self, PluginError> {
        config_path.map_or_else(|| Ok(Self::none()), Self::load)
    }

    /// The set in force.
    pub fn current(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// The configuration file, if plugins were configured.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// The files whose change should reload the set: the configuration and
    /// every component it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        files.extend(self.current().plugins.iter().map(|p| p.config.path.clone()));
        files
    }

    /// Re-reads the configuration and every component, and swaps the new
    /// set in only if all of it loads.
    pub fn reload(&self) -> Result<Arc<PluginSet>, PluginError> {
        let (Some(runtime), Some(path)) = (&self.runtime, &self.config_path) else {
            return Err(PluginError::NotConfigured);
        };
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let loaded =
            config::read(path).map_err(PluginError::from).and_then(|configs| load_set(runtime, &configs));
        crate::metrics::reload(crate::metrics::Reload::Plugins, loaded.is_ok());
        let set = Arc::new(loaded?);
        self.current.store(Arc::clone(&set));
        runtime.retain(&set.plugins.iter().map(|p| p.digest).collect::<HashSet<_>>());
        Ok(set)
    }
}

fn load_set(runtime: &Runtime, configs: &[PluginConfig]) -> Result<PluginSet, PluginError> {
    let plugins =
        configs.iter().map(|config| runtime.load(config).map(Arc::new)).collect::<Result<_, _>>()?;
    Ok(PluginSet { plugins })
}

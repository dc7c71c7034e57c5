//! Compiling, sandboxing and calling plugin components with wasmtime.
//!
//! Every call gets a fresh instance in its own `Store`, made from an
//! `InstancePre` prepared when the plugin loaded, out of the pooling
//! allocator's ready-made slots. Nothing survives a call, so one request
//! can never see another's data through a plugin, and a plugin that went
//! wrong once cannot stay wrong. Time is bounded by epoch interruption (a
//! ticker thread advances the epoch every millisecond), which costs less per
//! call than fuel; memory by a resource limiter; data the guest hands the
//! host by hostcall fuel; results by a byte limit checked before use.
//!
//! What a plugin may reach is decided in [`super::sandbox`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use super::bindings::consentry::plugin::types::{
    CedarRequest, Decision, DecisionRequest, Enrichment, HttpRequest, Obligation,
};
use super::bindings::enricher::EnricherPre;
use super::bindings::obligation_provider::ObligationProviderPre;
use super::bindings::request_mapper::RequestMapperPre;
use super::bindings::{self, Plugin};
use super::config::{Grant, Hook, MAX_MEMORY_MIB, PluginConfig};
use super::fault::PluginFault;
use super::metrics::HookMetrics;
use super::sandbox::{CallState, link_sandbox, trap_unlinked_imports};

/// How often the epoch advances: the granularity of plugin timeouts.
const TICK: Duration = Duration::from_millis(1);

/// Instances that may run at once, across all plugins. A call beyond this
/// fails (and so denies, for a fail-closed plugin) rather than queueing.
const POOL_INSTANCES: u32 = 256;

/// Memory a slot keeps mapped between calls, as much as the default memory
/// limit: releasing pages to the kernel (`madvise`) in a multi-threaded
/// server costs a TLB shootdown on every core, and faulting them back in
/// on the next call costs more again.
const KEEP_RESIDENT_BYTES: usize = 16 * 1024 * 1024;
/// Idle slots that keep their resident memory; beyond these, slots are
/// released. With the per-slot residency above, this bounds the idle RSS.
const WARM_SLOTS: u32 = 16;
/// Table bytes a slot keeps mapped between calls.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 * 1024;

/// A content digest of a component file.
pub type Digest32 = [u8; 32];

/// What the plugin runtime could not do with a component, or could not
/// start. Each has a stable [`RuntimeError::code`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine's configuration.
    #[error("cannot start the plugin engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The thread that advances the epoch could not be started.
    #[error("cannot start the plugin epoch thread: {0}")]
    EpochThread(std::io::Error),
    /// The file does not start with WebAssembly's magic number.
    #[error(
        "not WebAssembly (it does not start with `\\0asm`); a plugin is a WebAssembly component: {hint}",
        hint = BUILD_HINT
    )]
    NotWasm,
    /// The file is a core module, the output of a build for another target.
    #[error(
        "a core WebAssembly module, not a component; Consentry loads components: {hint}, which makes one, \
         or turn a module built for another target into a component with `wasm-tools component new`",
        hint = BUILD_HINT
    )]
    CoreModule,
    /// The file claims to be a component but wasmtime cannot compile it.
    #[error("not a valid WebAssembly component: {0:#}")]
    InvalidComponent(wasmtime::Error),
    /// The component's imports cannot be linked.
    #[error("cannot link: {0:#}")]
    Link(wasmtime::Error),
}

impl RuntimeError {
    /// A short, stable name for the failure, for answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::Engine(_) | RuntimeError::EpochThread(_) => "plugin_engine_unavailable",
            RuntimeError::NotWasm => "not_wasm",
            RuntimeError::CoreModule => "core_module",
            RuntimeError::InvalidComponent(_) => "invalid_component",
            RuntimeError::Link(_) => "link_failed",
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("plugin `{plugin}`: cannot read `{path}`: {error}")]
    Read {
        /// The plugin.
        plugin: String,
        /// The file.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a valid component, or cannot be linked.
    #[error("plugin `{plugin}`: {error}")]
    Component {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        error: RuntimeError,
    },
    /// The component does not export a hook the configuration names.
    #[error(
        "plugin `{plugin}`: declares hook `{name}` but does not export `consentry:plugin/{name}` of {interface}: \
         {error:#}",
        name = .hook.name(),
        interface = bindings::INTERFACE
    )]
    MissingHook {
        /// The plugin.
        plugin: String,
        /// The hook it is configured for.
        hook: Hook,
        /// wasmtime's account of the mismatch.
        error: wasmtime::Error,
    },
}

impl LoadError {
    /// A short, stable name for the failure, for answers and logs.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::Read { .. } => "plugin_unreadable",
            LoadError::Component { error, .. } => error.code(),
            LoadError::MissingHook { .. } => "hook_not_exported",
        }
    }
}

/// The wasmtime engine shared by every plugin, and the compiled components.
pub struct Runtime {
    engine: Engine,
    /// Compiled components by content digest. Only this process compiles
    /// them, so nothing is ever deserialized from disk.
    compiled: Mutex<HashMap<Digest32, Component>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// An engine with the pooling allocator and epoch interruption, and the
    /// thread that advances the epoch.
    pub fn new() -> Result<Arc<Self>, RuntimeError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(usize::try_from(MAX_MEMORY_MIB * 1024 * 1024).unwrap_or(usize::MAX))
            // Resetting a slot by rewriting the pages a call dirtied, found
            // with PAGEMAP_SCAN where the kernel has it, keeps them mapped:
            // the next call neither faults them in nor pays for `madvise`.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .max_unused_warm_slots(WARM_SLOTS)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .wasm_component_model(true);
        let engine = Engine::new(&config).map_err(RuntimeError::Engine)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".to_owned())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(RuntimeError::EpochThread)?;
        Ok(Arc::new(Self { engine, compiled: Mutex::new(HashMap::new()) }))
    }

    /// Compiles `bytes`, or reuses the component compiled from the same bytes.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Digest32, Component), RuntimeError> {
        let digest: Digest32 = Sha256::digest(bytes).into();
        if let Some(component) = self.compiled.lock().unwrap_or_else(PoisonError::into_inner).get(&digest) {
            return Ok((digest, component.clone()));
        }
        check_preamble(bytes)?;
        let component =
            Component::from_binary(&self.engine, bytes).map_err(RuntimeError::InvalidComponent)?;
        self.compiled.lock().unwrap_or_else(PoisonError::into_inner).insert(digest, component.clone());
        Ok((digest, component))
    }

    /// Forgets compiled components whose digest is not in `keep`.
    pub fn retain(&self, keep: &HashSet<Digest32>) {
        self.compiled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|digest, _| keep.contains(digest));
    }

    /// Reads, compiles and links one configured plugin, checking that it
    /// exports every hook it is configured for.
    pub fn load(&self, config: &PluginConfig) -> Result<LoadedPlugin, LoadError> {
        let invalid = |error: RuntimeError| LoadError::Component { plugin: config.name.clone(), error };
        let bytes = std::fs::read(&config.path).map_err(|error| LoadError::Read {
            plugin: config.name.clone(),
            path: config.path.display().to_string(),
            error,
        })?;
        let (digest, component) = self.compile(&bytes).map_err(invalid)?;
        let pre = self.instance_pre(&component, &config.grants).map_err(invalid)?;
        let hook_error = |hook: Hook, error: wasmtime::Error| LoadError::MissingHook {
            plugin: config.name.clone(),
            hook,
            error,
        };
        let mut loaded = LoadedPlugin {
            config: config.clone(),
            digest,
            engine: self.engine.clone(),
            settings: Arc::new(config.config.clone()),
            enrich: None,
            map_request: None,
            obligations: None,
            metrics: BTreeMap::new(),
        };
        for hook in &config.hooks {
            match hook {
                Hook::Enrich => {
                    loaded.enrich = Some(EnricherPre::new(pre.clone()).map_err(|e| hook_error(*hook, e))?);
                }
                Hook::MapRequest => {
                    loaded.map_request =
                        Some(RequestMapperPre::new(pre.clone()).map_err(|e| hook_error(*hook, e))?);
                }
                Hook::Obligations => {
                    loaded.obligations =
                        Some(ObligationProviderPre::new(pre.clone()).map_err(|e| hook_error(*hook, e))?);
                }
            }
            loaded.metrics.insert(*hook, HookMetrics::new(&config.name, *hook));
        }
        Ok(loaded)
    }

    /// Describes a component: the hooks it exports and everything it imports.
    pub fn describe(&self, bytes: &[u8]) -> Result<ComponentDescription, RuntimeError> {
        let (_, component) = self.compile(bytes)?;
        let every_grant = [Grant::Clocks, Grant::Random].into_iter().collect();
        let pre = self.instance_pre(&component, &every_grant)?;
        let hooks = Hook::ALL
            .into_iter()
            .filter(|hook| match hook {
                Hook::Enrich => EnricherPre::new(pre.clone()).is_ok(),
                Hook::MapRequest => RequestMapperPre::new(pre.clone()).is_ok(),
                Hook::Obligations => ObligationProviderPre::new(pre.clone()).is_ok(),
            })
            .collect();
        let ty = component.component_type();
        Ok(ComponentDescription {
            hooks,
            exports: ty.exports(&self.engine).map(|(name, _)| name.to_owned()).collect(),
            imports: ty.imports(&self.engine).map(|(name, _)| name.to_owned()).collect(),
        })
    }

    fn instance_pre(
        &self,
        component: &Component,
        grants: &std::collections::BTreeSet<Grant>,
    ) -> Result<InstancePre<CallState>, RuntimeError> {
        let mut linker = Linker::<CallState>::new(&self.engine);
        let linked = link_sandbox(&mut linker, grants).map_err(RuntimeError::Link)?;
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(RuntimeError::Link)?;
        trap_unlinked_imports(&mut linker, component, &self.engine, &linked).map_err(RuntimeError::Link)?;
        linker.instantiate_pre(component).map_err(RuntimeError::Link)
    }
}

/// How to build a component, for the messages about files that are not one.
const BUILD_HINT: &str = "build the plugin with `cargo build --release --target wasm32-wasip2`";

/// Tells a component from a core module and from a file that is not
/// WebAssembly at all, by the preamble every binary starts with: `\0asm`,
/// then a version and a layer, each a little-endian `u16` (layer 0 is a
/// core module, layer 1 a component). Compiling either of the others fails
/// with a parser error that does not say what to do, and new integrators
/// most often hand Consentry a module built for another target.
fn check_preamble(bytes: &[u8]) -> Result<(), RuntimeError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_LAYER: &[u8] = &[0, 0];
    let layer = bytes.get(6..8);
    if bytes.get(..4) != Some(MAGIC) {
        Err(RuntimeError::NotWasm)
    } else if layer == Some(CORE_LAYER) {
        Err(RuntimeError::CoreModule)
    } else {
        Ok(())
    }
}

/// What `consentry plugin check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDescription {
    /// Hooks the component exports with the right types.
    pub hooks: Vec<Hook>,
    /// Every export, by name.
    pub exports: Vec<String>,
    /// Every import, by name.
    pub imports: Vec<String>,
}

/// A plugin ready to be called.
pub struct LoadedPlugin {
    /// Its configuration.
    pub config: PluginConfig,
    /// The digest of its component file.
    pub digest: Digest32,
    engine: Engine,
    settings: Arc<BTreeMap<String, String>>,
    enrich: Option<EnricherPre<CallState>>,
    map_request: Option<RequestMapperPre<CallState>>,
    obligations: Option<ObligationProviderPre<CallState>>,
    metrics: BTreeMap<Hook, HookMetrics>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("name", &self.config.name).finish_non_exhaustive()
    }
}

impl LoadedPlugin {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Calls `enrich`.
    pub fn enrich(&self, request: &DecisionRequest) -> Result<Enrichment, PluginFault> {
        let pre = self.enrich.as_ref().ok_or_else(|| not_configured(Hook::Enrich))?;
        let enrichment = self.call(Hook::Enrich, |store| {
            let instance = pre.instantiate(&mut *store).map_err(instantiate)?;
            instance
                .consentry_plugin_enrich()
                .call_enrich(&mut *store, request)
                .map_err(Failed::Call)?
                .map_err(Failed::Returned)
        })?;
        self.check_size(Hook::Enrich, enrichment.context.len() + enrichment.entities.len())?;
        Ok(enrichment)
    }

    /// Calls `map-request`.
    pub fn map_request(&self, request: &HttpRequest) -> Result<Option<CedarRequest>, PluginFault> {
        let pre = self.map_request.as_ref().ok_or_else(|| not_configured(Hook::MapRequest))?;
        let mapped = self.call(Hook::MapRequest, |store| {
            let instance = pre.instantiate(&mut *store).map_err(instantiate)?;
            instance
                .consentry_plugin_map_request()
                .call_map_request(&mut *store, request)
                .map_err(Failed::Call)?
                .map_err(Failed::Returned)
        })?;
        if let Some(mapped) = &mapped {
            let uids = [&mapped.principal, &mapped.action, &mapped.resource];
            let size = uids.iter().map(|u| u.type_name.len() + u.id.len()).sum::<usize>()
                + mapped.context.len()
                + mapped.entities.len();
            self.check_size(Hook::MapRequest, size)?;
        }
        Ok(mapped)
    }

    /// Calls `obligations`.
    pub fn obligations(
        &self,
        request: &DecisionRequest,
        decision: &Decision,
    ) -> Result<Vec<Obligation>, PluginFault> {
        let pre = self.obligations.as_ref().ok_or_else(|| not_configured(Hook::Obligations))?;
        let obligations = self.call(Hook::Obligations, |store| {
            let instance = pre.instantiate(&mut *store).map_err(instantiate)?;
            instance
                .consentry_plugin_obligations()
                .call_obligations(&mut *store, request, decision)
                .map_err(Failed::Call)?
                .map_err(Failed::Returned)
        })?;
        let size =
            obligations.iter().map(|o| o.id.len() + o.values.iter().map(String::len).sum::<usize>()).sum();
        self.check_size(Hook::Obligations, size)?;
        Ok(obligations)
    }

    /// Runs one call in a fresh store under the plugin's limits, and
    /// records it in the metrics.
    fn call<R>(
        &self,
        hook: Hook,
        run: impl FnOnce(&mut Store<CallState>) -> Result<R, Failed>,
    ) -> Result<R, PluginFault> {
        let limits = &self.config.limits;
        let state = CallState::new(limits.memory_bytes(), Arc::clone(&self.settings));
        let mut store = Store::new(&self.engine, state);
        store.limiter(CallState::limiter);
        store.set_epoch_deadline(limits.timeout_ms);
        store.epoch_deadline_trap();
        // Hostcall fuel bounds what the guest hands the host, in an import
        // call and in an export's results alike.
        let data_limit = limits.max_hostcall_bytes.max(limits.max_output_bytes);
        store.set_hostcall_fuel(data_limit);
        let _span = tracing::info_span!("plugin", plugin = %self.config.name, hook = hook.name()).entered();
        let started = Instant::now();
        // A panic inside wasmtime or a host function must deny, not take
        // the request's task down with it; the store is dropped either way.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut store)))
            .unwrap_or_else(|_| {
                Err(Failed::Call(wasmtime::format_err!("the host panicked while running the plugin")))
            });
        let elapsed = started.elapsed();
        let result = match outcome {
            Ok(value) => Ok(value),
            Err(Failed::Returned(message)) => Err(PluginFault::Returned(message)),
            Err(Failed::Instantiate(error)) => Err(PluginFault::Instantiate(format!("{error:#}"))),
            Err(Failed::Call(error)) => Err(if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                PluginFault::Timeout(limits.timeout_ms)
            } else if store.data().exceeded_memory() {
                PluginFault::MemoryLimit(limits.memory_mib)
            } else if error.root_cause().to_string().contains(HOSTCALL_FUEL_EXHAUSTED) {
                PluginFault::DataLimit(data_limit)
            } else {
                PluginFault::unwound(&error)
            }),
        };
        if let Some(metrics) = self.metrics.get(&hook) {
            metrics.record(elapsed, result.as_ref().err());
        }
        result
    }

    fn check_size(&self, hook: Hook, size: usize) -> Result<(), PluginFault> {
        let limit = self.config.limits.max_output_bytes;
        if size > limit {
            let fault = PluginFault::OutputTooLarge { size, limit };
            if let Some(metrics) = self.metrics.get(&hook) {
                metrics.record_fault(&fault);
            }
            return Err(fault);
        }
        Ok(())
    }

    /// Records a fault found after the call, such as invalid output.
    pub fn record_fault(&self, hook: Hook, fault: &PluginFault) {
        if let Some(metrics) = self.metrics.get(&hook) {
            metrics.record_fault(fault);
        }
    }
}

/// How wasmtime says hostcall fuel ran out; its error type is private.
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// How a call failed: before the guest returned, or by the guest's own error.
enum Failed {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
    Returned(String),
}

fn instantiate(error: wasmtime::Error) -> Failed {
    // The time limit runs from the start of instantiation: on a busy
    // machine the deadline can fall before the guest's code runs, and that
    // is a timeout like any other, not a broken plugin.
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Failed::Call(error);
    }
    Failed::Instantiate(error)
}

fn not_configured(hook: Hook) -> PluginFault {
    PluginFault::Instantiate(format!("the plugin is not configured for hook `{}`", hook.name()))
}

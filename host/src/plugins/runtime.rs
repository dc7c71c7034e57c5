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
//! The sandbox grants nothing by default. Only WASI's environment (empty),
//! exit and terminal queries (no terminals) are linked for every plugin;
//! clocks and randomness only when granted; streams, stdio, the filesystem
//! and sockets never. Every other import is linked as a trap, so a plugin
//! that merely imports a capability loads (Rust's std imports several), and
//! one that uses it fails, naming the import.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker, ResourceTable, ResourceType, types};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::consentry::plugin::types::{
    CedarRequest, Decision, DecisionRequest, Enrichment, HttpRequest, Obligation,
};
use super::bindings::enricher::EnricherPre;
use super::bindings::obligation_provider::ObligationProviderPre;
use super::bindings::request_mapper::RequestMapperPre;
use super::bindings::{self, Plugin};
use super::config::{Grant, Hook, MAX_MEMORY_MIB, PluginConfig};
use super::metrics::HookMetrics;

/// How often the epoch advances: the granularity of plugin timeouts.
const TICK: Duration = Duration::from_millis(1);

/// Instances that may run at once, across all plugins. A call beyond this
/// fails (and so denies, for a fail-closed plugin) rather than queueing.
const POOL_INSTANCES: u32 = 256;

/// A content digest of a component file.
pub type Digest32 = [u8; 32];

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    /// The component file could not be read.
    #[error("plugin `{plugin}`: cannot read `{path}`: {message}")]
    Read {
        /// The plugin.
        plugin: String,
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The file is not a valid component, or cannot be linked.
    #[error("plugin `{plugin}`: {message}")]
    Invalid {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
}

/// What went wrong in one call. Each is contained: the call's instance is
/// discarded and the server goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginFault {
    /// The call ran past its time limit.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// The plugin tried to grow its memory past the limit.
    #[error("exceeded its memory limit of {0} MiB")]
    MemoryLimit(u64),
    /// The plugin trapped: a panic, a stack overflow, an ungranted import.
    #[error("trapped: {0}")]
    Trap(String),
    /// The plugin returned an error of its own.
    #[error("returned an error: {0}")]
    Returned(String),
    /// The plugin passed the host more data at once than its limits allow.
    #[error("passed the host more than {0} bytes at once")]
    DataLimit(usize),
    /// The plugin's output is larger than allowed.
    #[error("returned {size} bytes, more than its limit of {limit}")]
    OutputTooLarge {
        /// Bytes returned.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The plugin's output is not what the interface promises.
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    /// No instance could be made, for example because the pool is exhausted.
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
}

impl PluginFault {
    /// A short, PHI-free name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginFault::Timeout(_) => "timeout",
            PluginFault::MemoryLimit(_) => "memory",
            PluginFault::Trap(_) => "trap",
            PluginFault::Returned(_) => "returned-error",
            PluginFault::DataLimit(_) | PluginFault::OutputTooLarge { .. } => "output-too-large",
            PluginFault::InvalidOutput(_) => "invalid-output",
            PluginFault::Instantiate(_) => "instantiate",
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
    pub fn new() -> Result<Arc<Self>, String> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(usize::try_from(MAX_MEMORY_MIB * 1024 * 1024).unwrap_or(usize::MAX));
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| format!("cannot start the plugin engine: {e:#}"))?;
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
            .map_err(|e| format!("cannot start the plugin epoch thread: {e}"))?;
        Ok(Arc::new(Self { engine, compiled: Mutex::new(HashMap::new()) }))
    }

    /// Compiles `bytes`, or reuses the component compiled from the same bytes.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Digest32, Component), String> {
        let digest: Digest32 = Sha256::digest(bytes).into();
        if let Some(component) = self.compiled.lock().unwrap_or_else(PoisonError::into_inner).get(&digest) {
            return Ok((digest, component.clone()));
        }
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))?;
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
        let invalid = |message: String| LoadError::Invalid { plugin: config.name.clone(), message };
        let bytes = std::fs::read(&config.path).map_err(|e| LoadError::Read {
            plugin: config.name.clone(),
            path: config.path.display().to_string(),
            message: e.to_string(),
        })?;
        let (digest, component) = self.compile(&bytes).map_err(invalid)?;
        let pre = self.instance_pre(&component, &config.grants).map_err(invalid)?;
        let hook_error = |hook: Hook, e: wasmtime::Error| {
            invalid(format!(
                "declares hook `{}` but does not export `consentry:plugin/{}` of {}: {e:#}",
                hook.name(),
                hook.name(),
                bindings::INTERFACE
            ))
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
    pub fn describe(&self, bytes: &[u8]) -> Result<ComponentDescription, String> {
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
    ) -> Result<InstancePre<CallState>, String> {
        let link = |e: wasmtime::Error| format!("cannot link: {e:#}");
        let mut linker = Linker::<CallState>::new(&self.engine);
        let linked = link_sandbox(&mut linker, grants).map_err(link)?;
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state).map_err(link)?;
        trap_unlinked_imports(&mut linker, component, &self.engine, &linked).map_err(link)?;
        linker.instantiate_pre(component).map_err(link)
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

/// The interfaces every plugin gets. They reach nothing outside the call:
/// the environment and arguments are empty, and there are no terminals.
const SANDBOX_INTERFACES: [&str; 7] = [
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
];
const CLOCK_INTERFACES: [&str; 2] = ["wasi:clocks/wall-clock", "wasi:clocks/monotonic-clock"];
const RANDOM_INTERFACES: [&str; 3] =
    ["wasi:random/random", "wasi:random/insecure", "wasi:random/insecure-seed"];
/// The plugin interface's own imports.
const PLUGIN_INTERFACES: [&str; 2] = ["consentry:plugin/types", "consentry:plugin/config"];

/// Links the WASI interfaces that grant nothing over an empty context, and
/// the granted ones. Returns the names, without versions, of what it linked.
///
/// Streams, polling, stdio, the filesystem and sockets are never linked:
/// besides granting access, wasmtime-wasi implements their blocking calls
/// by entering Tokio, which must not happen on the server's worker threads.
/// A plugin reports through its return value, not by printing.
fn link_sandbox(
    linker: &mut Linker<CallState>,
    grants: &std::collections::BTreeSet<Grant>,
) -> wasmtime::Result<Vec<&'static str>> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::random::WasiRandom;

    let l = linker;
    let mut linked: Vec<&'static str> = SANDBOX_INTERFACES.into_iter().chain(PLUGIN_INTERFACES).collect();
    cli::exit::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::environment::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_input::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_output::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdin::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stdout::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    cli::terminal_stderr::add_to_linker::<CallState, WasiCli>(l, CallState::cli)?;
    if grants.contains(&Grant::Clocks) {
        clocks::wall_clock::add_to_linker::<CallState, WasiClocks>(l, CallState::clocks)?;
        clocks::monotonic_clock::add_to_linker::<CallState, WasiClocks>(l, CallState::clocks)?;
        linked.extend(CLOCK_INTERFACES);
    }
    if grants.contains(&Grant::Random) {
        random::random::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
        random::insecure::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
        random::insecure_seed::add_to_linker::<CallState, WasiRandom>(l, |s| s.wasi.random())?;
        linked.extend(RANDOM_INTERFACES);
    }
    Ok(linked)
}

/// Stands for a resource of an interface the plugin was not granted; no
/// value of it can ever be made, since every function that would make one traps.
struct Ungranted;

/// The type a trapping `wasi:io` resource must have: a granted interface
/// (the monotonic clock hands out pollables) shares it with the trapping one.
fn stub_resource_type(interface: &str, resource: &str) -> ResourceType {
    use wasmtime_wasi_io::{poll, streams};
    match (interface, resource) {
        (_, "pollable") => ResourceType::host::<poll::DynPollable>(),
        (_, "input-stream") => ResourceType::host::<streams::DynInputStream>(),
        (_, "output-stream") => ResourceType::host::<streams::DynOutputStream>(),
        ("wasi:io/error" | "wasi:io/streams", "error") => ResourceType::host::<streams::Error>(),
        _ => ResourceType::host::<Ungranted>(),
    }
}

/// Links every import of `component` outside `linked` as functions that
/// trap, naming the import. wasmtime's `define_unknown_imports_as_traps`
/// would do it by exact name, and so shadow a linked interface whose
/// version differs from the guest's (`@0.2.6` against the host's `@0.2.x`);
/// this compares names without versions.
fn trap_unlinked_imports(
    linker: &mut Linker<CallState>,
    component: &Component,
    engine: &Engine,
    linked: &[&str],
) -> wasmtime::Result<()> {
    for (name, import) in component.component_type().imports(engine) {
        let unversioned = name.split('@').next().unwrap_or(name);
        if linked.contains(&unversioned) {
            continue;
        }
        let types::ComponentItem::ComponentInstance(instance) = import.ty else { continue };
        let mut stubs = linker.instance(name)?;
        for (item, export) in instance.exports(engine) {
            match export.ty {
                types::ComponentItem::ComponentFunc(_) => {
                    let called = format!("{name}#{item}");
                    stubs.func_new(item, move |_, _, _, _| {
                        wasmtime::bail!("used `{called}`, which the plugin was not granted")
                    })?;
                }
                types::ComponentItem::Resource(_) => {
                    stubs.resource(item, stub_resource_type(unversioned, item), |_, _| Ok(()))?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The state of one call's store.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    settings: Arc<BTreeMap<String, String>>,
}

impl CallState {
    fn cli(&mut self) -> wasmtime_wasi::cli::WasiCliCtxView<'_> {
        wasmtime_wasi::cli::WasiCliView::cli(self)
    }

    fn clocks(&mut self) -> wasmtime_wasi::clocks::WasiClocksCtxView<'_> {
        wasmtime_wasi::clocks::WasiClocksView::clocks(self)
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::consentry::plugin::types::Host for CallState {}

impl bindings::consentry::plugin::config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn entries(&mut self) -> Vec<(String, String)> {
        self.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Refuses memory growth past the plugin's limit and remembers that it
/// did, so that the allocation failure the guest then traps on is reported
/// as what it is.
struct MemoryLimiter {
    max_bytes: usize,
    exceeded: bool,
}

/// Table entries one instance may have; Rust guests need a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
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
            instance.consentry_plugin_enrich().call_enrich(&mut *store, request).map_err(Failed::Call)
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
                .map_err(Failed::Call)
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
                .map_err(Failed::Call)
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
        run: impl FnOnce(&mut Store<CallState>) -> Result<Result<R, String>, Failed>,
    ) -> Result<R, PluginFault> {
        let limits = &self.config.limits;
        let state = CallState {
            wasi: WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter { max_bytes: limits.memory_bytes(), exceeded: false },
            settings: Arc::clone(&self.settings),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(limits.timeout_ms);
        store.epoch_deadline_trap();
        // Hostcall fuel bounds what the guest hands the host, in an import
        // call and in an export's results alike.
        let data_limit = limits.max_hostcall_bytes.max(limits.max_output_bytes);
        store.set_hostcall_fuel(data_limit);
        let started = Instant::now();
        let outcome = run(&mut store);
        let elapsed = started.elapsed();
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(PluginFault::Returned(message)),
            Err(Failed::Instantiate(message)) => Err(PluginFault::Instantiate(message)),
            Err(Failed::Call(error)) => Err(if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                PluginFault::Timeout(limits.timeout_ms)
            } else if store.data().limiter.exceeded {
                PluginFault::MemoryLimit(limits.memory_mib)
            } else if error.root_cause().to_string().contains(HOSTCALL_FUEL_EXHAUSTED) {
                PluginFault::DataLimit(data_limit)
            } else {
                PluginFault::Trap(describe_trap(&error))
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

/// How a call failed before the guest returned.
enum Failed {
    Instantiate(String),
    Call(wasmtime::Error),
}

fn instantiate(error: wasmtime::Error) -> Failed {
    Failed::Instantiate(format!("{error:#}"))
}

fn not_configured(hook: Hook) -> PluginFault {
    PluginFault::Instantiate(format!("the plugin is not configured for hook `{}`", hook.name()))
}

/// The trap's cause in one line, without the guest backtrace (which names
/// only guest functions, and can be long).
fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "stack overflow".to_owned(),
        Some(Trap::UnreachableCodeReached) => "unreachable code reached (a panic or abort)".to_owned(),
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

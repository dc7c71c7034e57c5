//! What a plugin can reach: the imports linked for it, and the state of
//! one call.
//!
//! The sandbox grants nothing by default. Only WASI's environment (empty),
//! exit and terminal queries (no terminals) are linked for every plugin;
//! clocks and randomness only when granted; streams, stdio, the filesystem
//! and sockets never. Every other import is linked as a trap, so a plugin
//! that merely imports a capability loads (Rust's std imports several), and
//! one that uses it fails, naming the import.
//!
//! Exit is linked as wasmtime-wasi implements it, since its unwinding is
//! what a host needs to tell an exit from a crash; but a hook that exits
//! has not answered, so the call is a fault that names the exit and its
//! status (see [`super::fault`]), never an answer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceTable, ResourceType, types};
use wasmtime::{Engine, ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::bindings::{cli, clocks, random};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use super::config::Grant;

/// `wasi:cli/exit`: linked, but a call to it ends the call without an answer.
const EXIT_INTERFACE: &str = "wasi:cli/exit";
/// The interfaces every plugin gets. They reach nothing outside the call:
/// the environment and arguments are empty, there are no terminals, and an
/// exit unwinds only the call's own instance.
const SANDBOX_INTERFACES: [&str; 7] = [
    EXIT_INTERFACE,
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
pub(super) fn link_sandbox(
    linker: &mut Linker<CallState>,
    grants: &BTreeSet<Grant>,
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

/// What the sandbox does with an import, for `consentry plugin check`.
pub fn import_treatment(import: &str) -> &'static str {
    let unversioned = import.split('@').next().unwrap_or(import);
    if PLUGIN_INTERFACES.contains(&unversioned) {
        "the plugin interface"
    } else if unversioned == EXIT_INTERFACE {
        "linked, but calling it is a fault (`exit`): the hook ends without an answer"
    } else if SANDBOX_INTERFACES.contains(&unversioned) {
        "linked, empty"
    } else if CLOCK_INTERFACES.contains(&unversioned) {
        "needs grant `clocks`, else traps when called"
    } else if RANDOM_INTERFACES.contains(&unversioned) {
        "needs grant `random`, else traps when called"
    } else {
        "never granted: traps when called"
    }
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
pub(super) fn trap_unlinked_imports(
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
    /// A call under a memory limit of `max_memory_bytes`, seeing `settings`
    /// through the `config` import.
    pub(super) fn new(max_memory_bytes: usize, settings: Arc<BTreeMap<String, String>>) -> Self {
        Self {
            wasi: WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(max_memory_bytes),
            settings,
        }
    }

    /// The limiter the store consults when memory grows.
    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Whether the plugin tried to grow its memory past the limit.
    pub(super) fn exceeded_memory(&self) -> bool {
        self.limiter.exceeded
    }
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

/// wasmtime's `StoreLimits`, which remembers when it refused to grow
/// memory, so that the allocation failure the guest then traps on is
/// reported as what it is.
struct MemoryLimiter {
    limits: StoreLimits,
    exceeded: bool,
}

/// Table entries one instance may have; Rust guests need a few hundred.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl MemoryLimiter {
    fn new(max_memory_bytes: usize) -> Self {
        let limits = StoreLimitsBuilder::new()
            .memory_size(max_memory_bytes)
            .table_elements(MAX_TABLE_ELEMENTS)
            .build();
        Self { limits, exceeded: false }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.exceeded |= !allowed;
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

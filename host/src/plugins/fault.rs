//! What went wrong in one plugin call, told so that the plugin's author can
//! act on it.
//!
//! wasmtime's own words are often true but unhelpful: a plugin that calls
//! `exit` unwinds with an `I32Exit` error, not a trap, and a Rust plugin
//! that recurses too deeply runs its shadow stack (kept in linear memory)
//! below address zero, which wasmtime reports as an out-of-bounds memory
//! access rather than a stack overflow. The fault names what happened and,
//! where the evidence supports it, what to do.

use consentry_engine::cedar_policy::EntityUid;
use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

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
    /// The plugin called `wasi:cli/exit`, which ends the call without an
    /// answer. WASI 0.2's `exit` carries only success or failure, so any
    /// non-zero status a Rust program passes arrives as 1.
    #[error("called exit with status `{0}` instead of returning")]
    Exited(i32),
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
    /// The plugin changed a stored fact, or supplied a context attribute
    /// only the caller may give, without a grant in `plugins.toml`.
    #[error("tried a change it was not granted: {0}")]
    Ungranted(String),
    /// The entity the plugin enriched is not in the directory's cache yet,
    /// so its change could not be checked; the decision is made again once
    /// it is loaded.
    #[error("enriched `{0}`, which could not be checked: the directory's cache has not loaded it")]
    Unloaded(EntityUid),
}

impl PluginFault {
    /// A short, PHI-free name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginFault::Timeout(_) => "timeout",
            PluginFault::MemoryLimit(_) => "memory",
            PluginFault::Exited(_) => "exit",
            PluginFault::Trap(_) => "trap",
            PluginFault::Returned(_) => "returned-error",
            PluginFault::DataLimit(_) | PluginFault::OutputTooLarge { .. } => "output-too-large",
            PluginFault::InvalidOutput(_) => "invalid-output",
            PluginFault::Instantiate(_) => "instantiate",
            PluginFault::Ungranted(_) => "ungranted-change",
            PluginFault::Unloaded(_) => "unloaded",
        }
    }

    /// The fault of a call that ended in `error` before the guest returned,
    /// once the limits the store enforces (time, memory, data) are ruled out.
    pub(super) fn unwound(error: &wasmtime::Error) -> Self {
        match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(status)) => PluginFault::Exited(*status),
            None => PluginFault::Trap(describe_trap(error)),
        }
    }
}

/// The trap's cause in one line, without the guest backtrace (which names
/// only guest functions, and can be long).
fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::StackOverflow) => "stack overflow".to_owned(),
        Some(Trap::UnreachableCodeReached) => "unreachable code reached (a panic or abort)".to_owned(),
        Some(Trap::MemoryOutOfBounds) => describe_out_of_bounds(memory_fault_address(error)),
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    }
}

/// How to give a Rust plugin a larger shadow stack, for the fault messages.
const STACK_SIZE_HINT: &str = "link with a larger stack, `-C link-arg=-zstack-size=<bytes>` in `RUSTFLAGS` \
                               or `.cargo/config.toml`, or recurse less deeply";

/// Addresses this close to 4 GiB are where a stack pointer that went
/// below zero lands: it wraps to just below 4 GiB in 32-bit arithmetic,
/// and a store's offset can carry the access just past it. The frame being
/// pushed is smaller than this.
const WRAPPED_WINDOW: u64 = 16 * 1024 * 1024;
const FOUR_GIB: u64 = 1 << 32;

/// An out-of-bounds access, with what its address says about it.
///
/// Rust programs for `wasm32` keep their stack in linear memory, below the
/// data (`wasm-ld --stack-first`), and move the `__stack_pointer` global
/// down as frames are pushed. One that runs out of stack subtracts past
/// zero and wraps to just below 4 GiB, far beyond any plugin's memory: an
/// out-of-bounds access near there is most likely that, while one at any
/// other address is not a stack overflow at all. Without the address (an
/// access caught by an explicit bounds check), both remain possible.
fn describe_out_of_bounds(address: Option<u64>) -> String {
    match address {
        Some(address) if wrapped_below_zero(address) => format!(
            "out of bounds memory access at wasm address `{address:#x}`, {WRAPPED_STACK_POINTER}; {STACK_SIZE_HINT}"
        ),
        Some(address) => format!("out of bounds memory access at wasm address `{address:#x}`"),
        None => format!(
            "out of bounds memory access (if the plugin recurses deeply, its shadow stack may have overflowed: \
             {STACK_SIZE_HINT})"
        ),
    }
}

/// What an access next to 4 GiB most likely means.
const WRAPPED_STACK_POINTER: &str = "next to 4 GiB, where a stack pointer that went below zero lands: most likely \
                                     the plugin's shadow stack overflowed (a Rust plugin keeps its stack in \
                                     linear memory, 1 MiB by default, and deep recursion or large local \
                                     variables run it out)";

/// Whether `address` is where a stack pointer that went below zero lands.
fn wrapped_below_zero(address: u64) -> bool {
    (FOUR_GIB - WRAPPED_WINDOW..FOUR_GIB + WRAPPED_WINDOW).contains(&address)
}

/// How wasmtime describes the address of a memory fault caught by a guard
/// page, the context of the trap; its type (`WasmFault`) is private.
const MEMORY_FAULT_PREFIX: &str = "memory fault at wasm address 0x";

/// The wasm address of a memory fault, if wasmtime recorded one.
fn memory_fault_address(error: &wasmtime::Error) -> Option<u64> {
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let hex = text.strip_prefix(MEMORY_FAULT_PREFIX)?.split(' ').next()?;
        u64::from_str_radix(hex, 16).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_next_to_four_gib_is_named_a_likely_shadow_stack_overflow() {
        for address in [0xffff_fc10, 0x1_0000_0288] {
            let described = describe_out_of_bounds(Some(address));
            assert!(
                described.contains(&format!("at wasm address `{address:#x}`, next to 4 GiB")),
                "{described}"
            );
            assert!(described.contains("most likely the plugin's shadow stack overflowed"), "{described}");
            assert!(described.contains("-C link-arg=-zstack-size=<bytes>"), "{described}");
        }
    }

    #[test]
    fn an_access_elsewhere_is_not_called_a_stack_overflow() {
        let described = describe_out_of_bounds(Some(0x0200_0000));
        assert_eq!(described, "out of bounds memory access at wasm address `0x2000000`");
    }

    #[test]
    fn an_access_without_an_address_leaves_the_stack_as_a_possibility() {
        let described = describe_out_of_bounds(None);
        assert!(
            described.starts_with("out of bounds memory access (if the plugin recurses deeply"),
            "{described}"
        );
    }

    #[test]
    fn the_fault_address_is_read_from_wasmtimes_context() {
        let error = wasmtime::Error::from(Trap::MemoryOutOfBounds)
            .context("memory fault at wasm address 0xfffffc10 in linear memory of size 0x110000");
        assert_eq!(memory_fault_address(&error), Some(0xffff_fc10));
        assert!(describe_trap(&error).contains("shadow stack"));
    }

    #[test]
    fn an_exit_is_reported_with_its_status() {
        let error = wasmtime::format_err!(I32Exit(1));
        let fault = PluginFault::unwound(&error);
        assert_eq!(fault, PluginFault::Exited(1));
        assert_eq!(fault.to_string(), "called exit with status `1` instead of returning");
        assert_eq!(fault.kind(), "exit");
    }
}

//! Host bindings of `wasm-plugins/sdk/wit/plugin.wit`.
//!
//! The `plugin` world supplies the shared types and the `config` import;
//! each hook's own world checks, when a plugin loads, that the component
//! exports that hook with the right types, and calls it.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "plugin",
    path: "../wasm-plugins/sdk/wit",
});

/// The `enrich` hook.
pub mod enricher {
    wasmtime::component::bindgen!({
        world: "enricher",
        path: "../wasm-plugins/sdk/wit",
        with: {
            "consentry:plugin/types": super::consentry::plugin::types,
            "consentry:plugin/config": super::consentry::plugin::config,
        },
    });
}

/// The `map-request` hook.
pub mod request_mapper {
    wasmtime::component::bindgen!({
        world: "request-mapper",
        path: "../wasm-plugins/sdk/wit",
        with: {
            "consentry:plugin/types": super::consentry::plugin::types,
            "consentry:plugin/config": super::consentry::plugin::config,
        },
    });
}

/// The `obligations` hook.
pub mod obligation_provider {
    wasmtime::component::bindgen!({
        world: "obligation-provider",
        path: "../wasm-plugins/sdk/wit",
        with: {
            "consentry:plugin/types": super::consentry::plugin::types,
            "consentry:plugin/config": super::consentry::plugin::config,
        },
    });
}

/// The WIT package and version this host implements.
pub const INTERFACE: &str = "consentry:plugin@0.1.0";

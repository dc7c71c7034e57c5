//! The bindings wit-bindgen generates from `wit/plugin.wit`, one module per
//! world.
//!
//! Each world gets its own `generate!` so that a plugin exports only the hooks
//! it implements. With `pub_export_macro`, the custom section that wit-bindgen
//! embeds in this library describes the world with its exports removed (only
//! the `config` import, shared by every world); the full world, exports
//! included, is embedded by the export macro, which runs in the plugin's crate
//! and only for the hooks the plugin names in `export_plugin!`.

#![allow(missing_docs)]

/// The `enricher` world; also the home of the shared `types` and `config`
/// bindings, which the other worlds reuse through `with`.
pub mod enricher {
    wit_bindgen::generate!({
        world: "enricher",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_enricher",
        default_bindings_module: "consentry_plugin_sdk::__private::enricher",
    });
}

/// The `request-mapper` world.
pub mod request_mapper {
    wit_bindgen::generate!({
        world: "request-mapper",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_request_mapper",
        default_bindings_module: "consentry_plugin_sdk::__private::request_mapper",
        with: {
            "consentry:plugin/types@0.1.0": crate::bindings::enricher::consentry::plugin::types,
            "consentry:plugin/config@0.1.0": crate::bindings::enricher::consentry::plugin::config,
        },
    });
}

/// The `obligation-provider` world.
pub mod obligation_provider {
    wit_bindgen::generate!({
        world: "obligation-provider",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "__export_obligation_provider",
        default_bindings_module: "consentry_plugin_sdk::__private::obligation_provider",
        with: {
            "consentry:plugin/types@0.1.0": crate::bindings::enricher::consentry::plugin::types,
            "consentry:plugin/config@0.1.0": crate::bindings::enricher::consentry::plugin::config,
        },
    });
}

/// The WIT types shared by every world.
pub use enricher::consentry::plugin::types as wit;

//! Write Consentry plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. It
//! implements one or more hooks — [`Enrich`], [`MapRequest`],
//! [`Obligations`] — on a type of its own and names them in
//! [`export_plugin!`], which generates the component's exports. The component
//! exports exactly the hooks named there, which is how the host tells which
//! hooks a plugin has.
//!
//! ```no_run
//! use consentry_plugin_sdk::{Enrich, Enrichment, Request, config, export_plugin};
//!
//! struct Recipient;
//!
//! impl Enrich for Recipient {
//!     fn enrich(request: Request) -> Result<Enrichment, String> {
//!         // Requests from the lab portal disclose data to the lab.
//!         if request.principal.type_name != "Organization" {
//!             return Ok(Enrichment::new());
//!         }
//!         let Some(lab) = config("lab") else { return Ok(Enrichment::new()) };
//!         Ok(Enrichment::new().with_context(
//!             "recipient",
//!             consentry_plugin_sdk::EntityUid::new("Organization", lab).to_entity_ref(),
//!         ))
//!     }
//! }
//!
//! export_plugin!(Recipient: enrich);
//! ```
//!
//! The host makes a fresh instance for every call, so a plugin keeps no
//! state between calls. See the README beside this crate for building,
//! checking and loading a plugin, and for the sandbox it runs in.

#![warn(missing_docs)]

mod bindings;
mod config;
mod decision;
pub mod fhir;
mod hooks;
mod http;
mod json;
mod request;
mod uid;

pub use config::{config, config_entries, config_or};
pub use decision::{Decision, Obligation, Outcome};
pub use hooks::{Enrich, MapRequest, Obligations};
pub use http::{CedarRequest, HttpRequest, percent_decode};
pub use request::{Enrichment, Request};
pub use serde_json;
pub use uid::EntityUid;

/// What `export_plugin!` expands to; not part of the SDK's API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{enricher, obligation_provider, request_mapper, wit};
    pub use crate::hooks::{enrich, map_request, obligations};
}

/// Exports a type's hooks from the plugin component.
///
/// Name the type, then the hooks it implements, from `enrich` ([`Enrich`]),
/// `map_request` ([`MapRequest`]) and `obligations` ([`Obligations`]). Use it
/// once per plugin, at the top level of the crate:
///
/// ```ignore
/// export_plugin!(Labeler: enrich);
/// export_plugin!(Everything: enrich, map_request, obligations);
/// ```
///
/// The component exports the named hooks and no others.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty : $($hook:ident),+ $(,)?) => {
        $( $crate::__export_hook!($plugin, $hook); )+
    };
}

/// Exports one hook; used by [`export_plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    ($plugin:ty, enrich) => {
        const _: () = {
            struct ConsentryEnrichHook;
            impl $crate::__private::enricher::exports::consentry::plugin::enrich::Guest for ConsentryEnrichHook {
                fn enrich(
                    request: $crate::__private::wit::DecisionRequest,
                ) -> ::core::result::Result<$crate::__private::wit::Enrichment, ::std::string::String> {
                    $crate::__private::enrich::<$plugin>(request)
                }
            }
            $crate::__private::enricher::__export_enricher!(
                ConsentryEnrichHook with_types_in $crate::__private::enricher
            );
        };
    };
    ($plugin:ty, map_request) => {
        const _: () = {
            struct ConsentryMapRequestHook;
            impl $crate::__private::request_mapper::exports::consentry::plugin::map_request::Guest
                for ConsentryMapRequestHook
            {
                fn map_request(
                    request: $crate::__private::wit::HttpRequest,
                ) -> ::core::result::Result<
                    ::core::option::Option<$crate::__private::wit::CedarRequest>,
                    ::std::string::String,
                > {
                    $crate::__private::map_request::<$plugin>(request)
                }
            }
            $crate::__private::request_mapper::__export_request_mapper!(
                ConsentryMapRequestHook with_types_in $crate::__private::request_mapper
            );
        };
    };
    ($plugin:ty, obligations) => {
        const _: () = {
            struct ConsentryObligationsHook;
            impl $crate::__private::obligation_provider::exports::consentry::plugin::obligations::Guest
                for ConsentryObligationsHook
            {
                fn obligations(
                    request: $crate::__private::wit::DecisionRequest,
                    decision: $crate::__private::wit::Decision,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::__private::wit::Obligation>,
                    ::std::string::String,
                > {
                    $crate::__private::obligations::<$plugin>(request, decision)
                }
            }
            $crate::__private::obligation_provider::__export_obligation_provider!(
                ConsentryObligationsHook with_types_in $crate::__private::obligation_provider
            );
        };
    };
    ($plugin:ty, $other:ident) => {
        ::core::compile_error!(::core::concat!(
            "unknown hook `",
            ::core::stringify!($other),
            "`: expected `enrich`, `map_request` or `obligations`"
        ));
    };
}

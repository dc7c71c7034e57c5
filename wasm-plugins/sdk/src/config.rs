//! The plugin's configuration, from its `[plugins.config]` table.
//!
//! These functions call the host, so they work only inside a plugin running
//! in Consentry: in a host-target unit test they panic. Keep the logic that
//! uses configuration values in functions that take them as arguments, and
//! test those.

use crate::bindings::enricher::consentry::plugin::config as host;

/// The configured value of `key`, if there is one.
pub fn config(key: &str) -> Option<String> {
    host::get(key)
}

/// The configured value of `key`, or `default`.
pub fn config_or(key: &str, default: &str) -> String {
    config(key).unwrap_or_else(|| default.to_owned())
}

/// Every configured key and value, sorted by key.
pub fn config_entries() -> Vec<(String, String)> {
    host::entries()
}

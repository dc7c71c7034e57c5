//! The example and test plugins, built from source, for the host's tests.
//!
//! Plugins are WebAssembly components built for `wasm32-wasip2` in the guest
//! workspace `wasm-plugins/`, which is kept out of the root workspace: its
//! crates are compiled for another target, with their own profile and lock
//! file. This crate's build script runs that build (a nested `cargo build
//! --release --target wasm32-wasip2`, reusing its own target directory, so
//! it is quick once done), and this crate exposes the absolute path of every
//! component it made, so that tests load the plugins built from the sources
//! in this repository rather than prebuilt binaries.
//!
//! The build needs the target installed: `rustup target add wasm32-wasip2`.
//! It reruns when anything under `wasm-plugins/` (the WIT, the SDK, the
//! examples, the test programs, the manifest or the lock file) changes.
//!
//! ```no_run
//! let component = std::fs::read(consentry_test_plugins::TRIVIAL_ENRICHER)?;
//! # Ok::<(), std::io::Error>(())
//! ```

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

use std::path::Path;

/// The time limit of plugins in tests about what a plugin does: the
/// default 10 ms is a production budget, and a test that asserts behaviour
/// must not fail because a busy machine ran it slowly (issue 13, finding 16).
pub const GENEROUS_LIMITS: &str = "[plugins.limits]\ntimeout_ms = 5000\n";

/// `plugins_toml` with [`GENEROUS_LIMITS`] for every plugin that sets no limits.
pub fn with_generous_limits(plugins_toml: &str) -> String {
    let mut tables = plugins_toml.split("[[plugins]]");
    let mut generous = tables.next().unwrap_or_default().to_owned();
    for table in tables {
        generous.push_str("[[plugins]]");
        generous.push_str(table);
        if !table.contains("[plugins.limits]") {
            generous.push('\n');
            generous.push_str(GENEROUS_LIMITS);
        }
    }
    generous
}

/// The bundled `wasm-plugins/plugins.toml`, pointing at the components
/// built here, with [`GENEROUS_LIMITS`].
pub fn bundled_plugins_toml() -> std::io::Result<String> {
    let built = Path::new(SENSITIVITY_LABELER)
        .parent()
        .and_then(Path::to_str)
        .ok_or_else(|| std::io::Error::other("the components' directory is not UTF-8"))?;
    let bundled = std::fs::read_to_string(Path::new(GUESTS_DIR).join("plugins.toml"))?;
    Ok(with_generous_limits(&bundled.replace("../target/wasm-plugins/wasm32-wasip2/release", built)))
}

#[cfg(test)]
mod tests {
    /// The preamble of a WebAssembly component (not a core module).
    const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_path_is_a_component() {
        for (name, path) in super::ALL_COMPONENTS {
            let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("{name}: {path}: {error}"));
            assert!(bytes.starts_with(&COMPONENT_PREAMBLE), "{name}: {path} is not a component");
        }
        assert!(std::path::Path::new(super::WIT_DIR).join("plugin.wit").is_file());
    }
}

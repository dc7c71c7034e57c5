//! The SDK builds a plugin outside this repository, as a new integrator
//! builds one: the crate and the code of the SDK README's steps 2 and 3,
//! taken from the README as written, next to a copy of nothing but
//! `wasm-plugins/sdk`, built with step 4's command.
//!
//! Inside the checkout the SDK once built only because it inherited the
//! guest workspace's settings and read `../wit`; copied out, Cargo failed
//! with "failed to find a workspace root" (issue 16). This test fails the
//! same way if the SDK leans on anything outside its own directory again,
//! or if the README's plugin stops compiling.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::Path;
use std::process::Command;

use consentry_test_plugins::{GUEST_TARGET_DIR, GUESTS_DIR};

/// The preamble of a WebAssembly component (not a core module).
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

#[test]
fn the_readme_plugin_builds_against_a_copy_of_the_sdk_outside_the_checkout() {
    let sdk = Path::new(GUESTS_DIR).join("sdk");
    let readme = std::fs::read_to_string(sdk.join("README.md")).unwrap();
    let manifest = fenced_block(&readme, "toml", "A plugin is a `cdylib`.");
    let source = fenced_block(&readme, "rust", "## 3. Write the plugin");

    // The README's layout: the checkout at `~/src/consentry`, the plugin's
    // crate made by `cargo new` in `~`.
    let home = tempfile::tempdir().unwrap();
    copy_dir(&sdk, &home.path().join("src/consentry/wasm-plugins/sdk"));
    let crate_dir = home.path().join("restriction-list");
    std::fs::create_dir_all(crate_dir.join("src")).unwrap();
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(crate_dir.join("src/lib.rs"), source).unwrap();
    // The versions the guest workspace locked, so that the build reuses
    // what the guest build compiled instead of resolving and compiling anew.
    std::fs::copy(Path::new(GUESTS_DIR).join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--release", "--target", "wasm32-wasip2"]).current_dir(&crate_dir);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(leaks_from_this_build) {
            build.env_remove(name);
        }
    }
    let output = build.env("CARGO_TARGET_DIR", GUEST_TARGET_DIR).output().unwrap();
    assert!(
        output.status.success(),
        "the README's plugin does not build outside the checkout:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let component = Path::new(GUEST_TARGET_DIR).join("wasm32-wasip2/release/restriction_list.wasm");
    let bytes = std::fs::read(&component).unwrap();
    assert!(bytes.starts_with(&COMPONENT_PREAMBLE), "{} is not a component", component.display());
}

/// The first block fenced as `language` after the line containing `after`.
fn fenced_block<'a>(markdown: &'a str, language: &str, after: &str) -> &'a str {
    let start = markdown.find(after).unwrap_or_else(|| panic!("the README has no `{after}`"));
    let fence = format!("```{language}\n");
    let rest = &markdown[start..];
    let open = rest.find(&fence).unwrap_or_else(|| panic!("no {language} block after `{after}`"));
    let body = &rest[open + fence.len()..];
    &body[..body.find("```\n").unwrap()]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Whether the variable is one `cargo test` set for this test, or a setting
/// for the host build, that would change the plugin's build.
fn leaks_from_this_build(name: &str) -> bool {
    const KEPT: [&str; 4] = ["CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_"];
    let cargo_setting = name.starts_with("CARGO_") && !KEPT.iter().any(|kept| name.starts_with(kept));
    cargo_setting
        || name.starts_with("__CARGO")
        || ["RUSTFLAGS", "RUSTDOCFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "OUT_DIR", "TARGET"]
            .contains(&name)
}

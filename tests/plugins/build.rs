//! Builds the guest workspace `wasm-plugins/` for `wasm32-wasip2` and writes
//! `$OUT_DIR/plugins.rs`, the paths of the components it made.
//!
//! The guests are a Cargo workspace of their own, built by a nested
//! `cargo build --release --target wasm32-wasip2` with its own target
//! directory, `wasm-plugins/` beside the outer build's profile directories
//! (`target/wasm-plugins` in the usual layout), so that debug, release and
//! clippy builds of the host share one guest build.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest target.
const TARGET: &str = "wasm32-wasip2";

/// What the guest build reads, relative to `wasm-plugins/`.
const WATCHED: [&str; 7] =
    ["sdk/wit", "sdk/src", "sdk/Cargo.toml", "examples", "test-programs", "Cargo.toml", "Cargo.lock"];

/// Each component: the constant naming it, its file stem, and what it is.
const COMPONENTS: [(&str, &str, &str); 18] = [
    (
        "SENSITIVITY_LABELER",
        "sensitivity_labeler",
        "Example `enrich` plugin: adds HL7 sensitivity labels to a `Record` from its ICD-10 `codes`, by the \
         `icd10:<pattern>` table in its config.",
    ),
    (
        "FHIR_REST_MAPPER",
        "fhir_rest_mapper",
        "Example `map-request` plugin: maps FHIR REST requests under config `base_path` (default `/fhir`) to \
         Cedar requests.",
    ),
    (
        "GUARDIAN",
        "guardian",
        "Example `enrich` plugin: removes a patient who has come of age from a parent's `represents`.",
    ),
    (
        "TRIVIAL_ENRICHER",
        "trivial_enricher",
        "Test program (`enrich`): adds nothing, to measure the cost of a call.",
    ),
    (
        "OBLIGATION_ADDER",
        "obligation_adder",
        "Test program (`obligations`): on allow, adds the obligation config `id` (default `log-access`) \
         with config `values` (comma-separated); otherwise nothing.",
    ),
    (
        "FACT_REWRITER",
        "fact_rewriter",
        "Test program (`enrich`, `map-request`): tries to rewrite a stored fact, by config `mode`: `joins-break-glass` (the \
         principal joins `Group::\"break-glass\"`), `lifts-restriction` (the patient concerned loses \
         `restricted`), `moves-record` (the resource Record is filed under config `patient`, default `p-100`), \
         `detaches-record` (the resource Record loses its parents) or `supplies-justification` (adds \
         `context.justification`). As `map-request`: maps every request to Dr. Weber's break-glass read of \
         obs-1, sending his entity with `Group::\"break-glass\"` added to its parents.",
    ),
    (
        "CONTEXT_ADDER",
        "context_adder",
        "Test program (`enrich`): adds the context attribute config `attribute` (default `ward`) with the string \
         config `value` (default `icu`), which the bundled schema does not declare.",
    ),
    ("LOOP_FOREVER", "loop_forever", "Test program (`enrich`): never returns."),
    (
        "MEMORY_HOG",
        "memory_hog",
        "Test program (`enrich`): allocates and writes 1 MiB chunks until an allocation fails, which aborts \
         (traps).",
    ),
    ("TRAP", "trap", "Test program (`enrich`): panics, which traps."),
    ("STACK_OVERFLOW", "stack_overflow", "Test program (`enrich`): recurses until the stack overflows."),
    (
        "DEEP_RECURSION",
        "deep_recursion",
        "Test program (`enrich`): recurses to config `depth` (default 10000), about 2 KiB a frame, then adds \
         nothing; the default depth overflows Rust's default 1 MiB shadow stack, a depth of 100 does not.",
    ),
    (
        "EXIT_CALLER",
        "exit_caller",
        "Test program (`enrich`): calls `std::process::exit` with config `status` (default 3) instead of \
         returning.",
    ),
    (
        "HUGE_OUTPUT",
        "huge_output",
        "Test program (`enrich`): passes the host config `bytes` letters (default 4194304) at once, by config \
         `via`: as the context `{\"blob\": \"aaaa…\"}` (`output`, the default) or as a key asked of the \
         `config` import (`config-key`).",
    ),
    (
        "MALFORMED_OUTPUT",
        "malformed_output",
        "Test program (`enrich`): returns output the host must reject, by config `mode`: `not-json`, \
         `context-not-object`, `bad-entity`, `sets-now` or `replaces-attribute`.",
    ),
    (
        "CLOCK_READER",
        "clock_reader",
        "Test program (`enrich`): reads the wall clock, then adds nothing; it must trap without the `clocks` \
         grant.",
    ),
    (
        "SOCKET_OPENER",
        "socket_opener",
        "Test program (`enrich`): tries to connect to 127.0.0.1:5432; an error `sandbox breach: ...` if it \
         connects, an empty enrichment (or a trap) if the sandbox stops it.",
    ),
    (
        "FILE_READER",
        "file_reader",
        "Test program (`enrich`): tries to read `/etc/hostname` and the environment; an error `sandbox \
         breach: ...` if it gets either, an empty enrichment otherwise.",
    ),
];

fn main() {
    if let Err(message) = run() {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let guests = manifest_dir.join("../../wasm-plugins");
    let guests =
        guests.canonicalize().map_err(|error| format!("cannot find {}: {error}", guests.display()))?;

    for watched in WATCHED {
        println!("cargo:rerun-if-changed={}", guests.join(watched).display());
    }

    check_target()?;
    let target_dir = guest_target_dir(&out_dir);
    build(&guests, &target_dir)?;

    let artifacts = target_dir.join(TARGET).join("release");
    let mut source = String::from("// Generated by build.rs.\n");
    for (name, stem, doc) in COMPONENTS {
        let path = artifacts.join(format!("{stem}.wasm"));
        if !path.is_file() {
            return Err(format!("the guest build did not produce {}", path.display()));
        }
        write_const(&mut source, name, doc, &path)?;
    }
    source.push_str(
        "/// Every component above, by constant name.\npub const ALL_COMPONENTS: [(&str, &str); 18] = [\n",
    );
    for (name, _, _) in COMPONENTS {
        writeln!(source, "    ({name:?}, {name}),").map_err(|error| error.to_string())?;
    }
    source.push_str("];\n");
    write_const(
        &mut source,
        "WIT_DIR",
        "The directory of `plugin.wit`, the plugin interface, which the SDK vendors.",
        &guests.join("sdk/wit"),
    )?;
    write_const(&mut source, "GUESTS_DIR", "The guest workspace, `wasm-plugins/`.", &guests)?;
    write_const(
        &mut source,
        "GUEST_TARGET_DIR",
        "The guest build's target directory, for builds that want to reuse what it compiled.",
        &target_dir,
    )?;
    fs::write(out_dir.join("plugins.rs"), source).map_err(|error| format!("cannot write plugins.rs: {error}"))
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// Fails with advice when the standard library for the guest target is not
/// installed.
fn check_target() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", Path::new(&rustc).display()))?;
    let libdir = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && Path::new(libdir.trim()).is_dir() {
        Ok(())
    } else {
        Err(format!("the {TARGET} target is missing: run rustup target add {TARGET}"))
    }
}

/// `wasm-plugins` beside the outer build's profile directory, found from
/// `OUT_DIR` (`<dir>/<profile>/build/<package>-<hash>/out`); under `OUT_DIR`
/// when it is laid out otherwise.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    let build = out_dir.ancestors().nth(2).filter(|build| build.file_name() == Some("build".as_ref()));
    match build.and_then(Path::parent).and_then(Path::parent) {
        Some(dir) => dir.join("wasm-plugins"),
        None => out_dir.join("wasm-plugins"),
    }
}

/// Runs the nested cargo with none of the outer build's settings.
fn build(guests: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--locked", "--workspace", "--target", TARGET])
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(guests);
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if leaks_from_outer_build(name) {
            command.env_remove(name);
        }
    }
    let status = command.status().map_err(|error| format!("cannot run cargo: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the plugins in {} failed ({status}); see the output above", guests.display()))
    }
}

/// Whether the variable is one the outer cargo set for this build script, or
/// a setting for the outer build, that would change the guest build.
fn leaks_from_outer_build(name: &str) -> bool {
    const NAMES: [&str; 13] = [
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_INCREMENTAL",
        "CARGO_LLVM_COV",
        "OUT_DIR",
        "TARGET",
    ];
    const PREFIXES: [&str; 9] = [
        "CARGO_BUILD_",
        "CARGO_TARGET_",
        "CARGO_PROFILE_",
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_",
        "__CARGO",
    ];
    NAMES.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

fn write_const(source: &mut String, name: &str, doc: &str, path: &Path) -> Result<(), String> {
    let path = path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    writeln!(source, "/// {doc}\npub const {name}: &str = {path:?};").map_err(|error| error.to_string())
}

//! Plugins through the real binary: `--plugins`, Envoy's `ext_authz` with
//! the FHIR REST mapper, a hostile plugin contained, hot reload with
//! `--watch`, and `consentry plugin check`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use consentry_test_plugins::{
    CONTEXT_ADDER, FHIR_REST_MAPPER, GUARDIAN, LOOP_FOREVER, OBLIGATION_ADDER, SENSITIVITY_LABELER,
    bundled_plugins_toml, with_generous_limits,
};
use serde_json::{Value, json};

use crate::audit::wait_for_records;
use crate::support::{Server, ali_breaks_the_glass, binary, cedar_request, decide, repo_root};

/// Writes `toml` as `plugins.toml` in a fresh directory.
pub(crate) fn config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// A `[[plugins]]` table, with a generous time limit unless `extra` sets the limits.
pub(crate) fn plugin(name: &str, path: &str, hooks: &str, extra: &str) -> String {
    with_generous_limits(&plugin_as_written(name, path, hooks, extra))
}

/// A `[[plugins]]` table with the default limits unless `extra` sets them:
/// for the tests where the time limit is the point.
fn plugin_as_written(name: &str, path: &str, hooks: &str, extra: &str) -> String {
    format!("[[plugins]]\nname = \"{name}\"\npath = \"{path}\"\nhooks = [{hooks}]\n{extra}\n")
}

/// The bundled `wasm-plugins/plugins.toml`, pointing at the components the
/// test-plugins crate built, with generous time limits, written in `dir`.
pub(crate) fn bundled_plugins_with_generous_limits(dir: &Path) -> PathBuf {
    let path = dir.join("plugins.toml");
    std::fs::write(&path, bundled_plugins_toml().unwrap()).unwrap();
    path
}

/// What Envoy's ext_authz filter sends: the original method and path under
/// the configured prefix, and the allowed headers. Returns the status and
/// the `x-consentry-*` headers.
pub(crate) fn envoy_check(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request =
        ureq::http::Request::builder().method(method).uri(format!("{}/ext_authz{path}", server.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = agent.run(request.body(()).unwrap()).unwrap();
    let consentry_headers = response
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("x-consentry-"))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap().to_owned()))
        .collect();
    (response.status().as_u16(), consentry_headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn envoy_ext_authz_with_the_fhir_mapper_allows_and_denies_fhir_requests() {
    let (_dir, path) = config(&plugin("fhir", FHIR_REST_MAPPER, "\"map-request\"", ""));
    let server = Server::start(
        &repo_root().join("policies"),
        &["--plugins", path.to_str().unwrap(), "--trust-principal-header"],
    );
    let emergency = [
        ("x-principal", "Practitioner/dr-ali"),
        ("x-purpose-of-use", "BTG"),
        ("x-justification", "unconscious on arrival"),
    ];
    let (status, headers) = envoy_check(&server, "GET", "/fhir/Observation/obs-1", &emergency);
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(header(&headers, "x-consentry-decision"), Some("allow"));
    assert!(header(&headers, "x-consentry-decision-id").is_some_and(|id| id.len() == 36), "{headers:?}");
    let first_id = header(&headers, "x-consentry-decision-id").unwrap().to_owned();
    let obligations: Value =
        serde_json::from_str(header(&headers, "x-consentry-obligations").unwrap()).unwrap();
    assert_eq!(obligations[0]["id"], "notify-patient");

    let (status, headers) = envoy_check(
        &server,
        "GET",
        "/fhir/Patient/p-100/Observation?category=laboratory",
        &[("x-principal", "Practitioner/dr-chen"), ("x-purpose-of-use", "TREAT")],
    );
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "x-consentry-outcome"), Some("not_permitted"));

    let (status, unmapped) = envoy_check(&server, "POST", "/fhir/Observation?name=Anna", &emergency);
    assert_eq!(status, 403, "a create that names no patient cannot be mapped");
    assert_eq!(header(&unmapped, "x-consentry-outcome"), Some("failed_closed"));

    // Every answer is in the decision log, the unmapped one included, with
    // what the mapper did; the query (search terms) is not.
    let records = wait_for_records(server.audit.as_ref().unwrap().path(), 3);
    assert_eq!(records[0]["decision_id"], first_id.as_str());
    assert_eq!(records[0]["plugins"], json!(["fhir/map-request: ok"]));
    assert_eq!(records[0]["principal"], "Practitioner::\"dr-ali\"");
    let last = &records[2];
    assert_eq!(last["decision_id"].as_str(), header(&unmapped, "x-consentry-decision-id"));
    assert_eq!(last["principal"], "");
    assert_eq!(last["action"], "HTTP POST");
    assert_eq!(last["resource"], "/fhir/Observation");
    assert_eq!(last["outcome"], "failed_closed");
    assert_eq!(last["plugins"], json!(["fhir/map-request: returned-error, denied"]));
}

#[test]
fn a_runaway_plugin_denies_within_its_limit_and_the_server_keeps_serving() {
    // The default limit, as written: the timeout is the point.
    let toml = plugin_as_written(
        "loop-forever",
        LOOP_FOREVER,
        "\"enrich\"",
        "[plugins.applies_to]\nresource_types = [\"Patient\"]\n",
    );
    let (_dir, path) = config(&toml);
    let server = Server::start(&repo_root().join("policies"), &["--plugins", path.to_str().unwrap()]);
    let anna = cedar_request(
        "RelatedPerson::\"rp-anna\"",
        "Action::\"read\"",
        "Patient::\"p-100\"",
        json!({"purpose": "PWATRNY"}),
    );
    for _ in 0..3 {
        let (status, answer) = server.post("/v1/is_authorized", &anna);
        assert_eq!(status, 200);
        assert_eq!(answer["outcome"], "failed_closed", "{answer}");
        assert!(
            answer["summary"]
                .as_str()
                .unwrap()
                .contains("plugin `loop-forever` (enrich) timed out after 10 ms")
        );
        assert_eq!(decide(&server, &ali_breaks_the_glass("obs-1")).0, "Allow");
    }
    let records = wait_for_records(server.audit.as_ref().unwrap().path(), 6);
    assert_eq!(records[0]["plugins"], json!(["loop-forever/enrich: timeout, denied"]));
    assert_eq!(records[1]["plugins"], json!([]), "the plugin applies to patients only");
    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("consentry_plugin_timeouts_total{plugin=\"loop-forever\",hook=\"enrich\"} 3"),
        "{metrics}"
    );
}

#[test]
fn watch_reloads_the_plugins_when_their_configuration_changes() {
    let adder = |id: &str| {
        plugin("adder", OBLIGATION_ADDER, "\"obligations\"", &format!("[plugins.config]\nid = \"{id}\"\n"))
    };
    let (_dir, path) = config(&adder("first"));
    let server =
        Server::start(&repo_root().join("policies"), &["--watch", "--plugins", path.to_str().unwrap()]);
    let added = || {
        let (_, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
        answer["obligations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["policy"] == "plugin/adder")
            .map(|o| o["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(added(), [json!("first")]);
    std::fs::write(&path, adder("second")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while added() != [json!("second")] {
        assert!(Instant::now() < deadline, "the plugins were not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken configuration is refused; the plugins in force keep serving.
    std::fs::write(&path, "[[plugins]]\nname = \"adder\"\n").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(added(), [json!("second")]);
}

/// `consentry serve` over the bundled pack with the plugins of `config`,
/// run to its end (a refused start): its exit code and stderr.
fn serve_with_plugins(config: &Path) -> (Option<i32>, String) {
    let store = tempfile::tempdir().unwrap();
    let output = binary()
        .args(["serve", "--bind", "127.0.0.1:0", "--policies"])
        .arg(repo_root().join("policies"))
        .arg("--store")
        .arg(store.path())
        .arg("--plugins")
        .arg(config)
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn serve_refuses_a_bad_plugin_configuration_with_exit_code_3() {
    let (_dir, path) = config(&plugin("labeler", SENSITIVITY_LABELER, "\"map-request\"", ""));
    let (code, stderr) = serve_with_plugins(&path);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("plugin `labeler`: declares hook `map-request` but does not export"), "{stderr}");
}

#[test]
fn plugin_check_prints_the_hooks_and_imports_of_a_component() {
    let output = binary().args(["plugin", "check", SENSITIVITY_LABELER]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("interface: consentry:plugin@0.1.0"), "{stdout}");
    assert!(stdout.contains("hooks:\n  enrich\nimports:"), "{stdout}");
    assert!(stdout.contains("consentry:plugin/config@0.1.0: the plugin interface"), "{stdout}");
    assert!(stdout.contains("wasi:io/streams@0.2.6: never granted: traps when called"), "{stdout}");
    assert!(
        stdout.contains(
            "wasi:cli/exit@0.2.6: linked, but calling it is a fault (`exit`): the hook ends without an answer"
        ),
        "{stdout}"
    );
}

/// `consentry plugin check` on `bytes` written to a file: the exit code and stderr.
fn plugin_check_on(bytes: &[u8]) -> (Option<i32>, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    let output = binary().args(["plugin", "check"]).arg(file.path()).output().unwrap();
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn plugin_check_on_garbage_says_it_is_not_wasm() {
    let manifest = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let (code, stderr) = plugin_check_on(&manifest);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("not WebAssembly (it does not start with `\\0asm`)"), "{stderr}");
    assert!(stderr.contains("cargo build --release --target wasm32-wasip2"), "{stderr}");
    assert!(!stderr.contains("actual=["), "no byte dump: {stderr}");
}

#[test]
fn plugin_check_on_a_core_module_hints_at_wasm32_wasip2() {
    // The smallest valid core module: the magic, version 1, layer 0.
    let (code, stderr) = plugin_check_on(b"\0asm\x01\0\0\0");
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("a core WebAssembly module, not a component"), "{stderr}");
    assert!(stderr.contains("cargo build --release --target wasm32-wasip2"), "{stderr}");
    assert!(stderr.contains("wasm-tools component new"), "{stderr}");
}

#[test]
fn a_core_module_in_the_plugin_configuration_is_refused_with_the_same_hint() {
    let module = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(module.path(), b"\0asm\x01\0\0\0").unwrap();
    let (_dir, path) = config(&plugin("core", module.path().to_str().unwrap(), "\"enrich\"", ""));
    let (code, stderr) = serve_with_plugins(&path);
    assert_eq!(code, Some(3));
    assert!(stderr.contains("plugin `core`: a core WebAssembly module, not a component"), "{stderr}");
    assert!(stderr.contains("--target wasm32-wasip2"), "{stderr}");
}

#[test]
fn check_decides_through_the_plugins_and_shows_what_they_did() {
    let (_dir, path) = config(&plugin(
        "guardian",
        GUARDIAN,
        "\"enrich\"",
        "[plugins.may_change]\n\"RelatedPerson.represents\" = \"remove\"",
    ));
    let store = tempfile::tempdir().unwrap();
    let request = tempfile::NamedTempFile::new().unwrap();
    // rp-otto is p-500's parent, and p-500 (born 2006) is an adult.
    std::fs::write(
        request.path(),
        r#"{"principal": "RelatedPerson::\"rp-otto\"", "action": "Action::\"read\"", "resource": "Patient::\"p-500\"", "context": {"purpose": "PWATRNY"}}"#,
    )
    .unwrap();
    let check = |extra: &[&str]| {
        binary()
            .args(["check", "--policies"])
            .arg(repo_root().join("policies"))
            .arg("--request")
            .arg(request.path())
            .arg("--store")
            .arg(store.path())
            .args(extra)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let without = check(&[]);
    assert_eq!(without.status.code(), Some(0), "{}", String::from_utf8_lossy(&without.stderr));
    let decision: Value = serde_json::from_slice(&without.stdout).unwrap();
    assert!(decision.get("plugins").is_none(), "{decision}");
    let with = check(&["--plugins", path.to_str().unwrap()]);
    assert_eq!(with.status.code(), Some(2), "{}", String::from_utf8_lossy(&with.stderr));
    let decision: Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(decision["outcome"], "not_permitted", "{decision}");
    assert_eq!(decision["plugins"], json!(["guardian/enrich: ok"]), "{decision}");
}

#[test]
fn an_enrichment_adding_an_undeclared_context_attribute_names_it_and_the_schema_fix() {
    // A policy information point that adds `context.ward`, which the bundled
    // schema's closed `RequestContext` does not declare.
    let (_dir, path) = config(&plugin("ward", CONTEXT_ADDER, "\"enrich\"", ""));
    let request = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(request.path(), ali_breaks_the_glass("obs-1").to_string()).unwrap();
    let check = |policies: &Path| {
        let store = tempfile::tempdir().unwrap();
        let output = binary()
            .args(["check", "--policies"])
            .arg(policies)
            .arg("--request")
            .arg(request.path())
            .arg("--store")
            .arg(store.path())
            .arg("--plugins")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let decision: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), decision)
    };

    let (code, decision) = check(&repo_root().join("policies"));
    assert_eq!(code, Some(2), "{decision}");
    assert_eq!(decision["outcome"], "failed_closed", "{decision}");
    let message = decision["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "plugin `ward` (enrich) returned invalid output: it adds `context.ward`, which the schema's context \
             for `Action::\"read\"` does not declare"
        ),
        "{message}"
    );
    assert!(message.contains("\"Extending the schema for a plugin\" in wasm-plugins/README.md"), "{message}");

    // The fix the message points to: declare the attribute, optional, in
    // the context type of a copy of the pack.
    let extended = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo_root().join("policies")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), extended.path().join(entry.file_name())).unwrap();
        }
    }
    let schema_path = extended.path().join("schema.cedarschema");
    let schema = std::fs::read_to_string(&schema_path).unwrap();
    assert!(schema.contains("type RequestContext = {\n"));
    let schema = schema.replace("type RequestContext = {\n", "type RequestContext = {\n  ward?: String,\n");
    std::fs::write(&schema_path, schema).unwrap();
    let (code, decision) = check(extended.path());
    assert_eq!(code, Some(0), "{decision}");
    assert_eq!(decision["outcome"], "allow", "{decision}");
    assert_eq!(decision["plugins"], json!(["ward/enrich: ok"]), "{decision}");
}

//! `consentry test`: the bundled policy tests pass, and the runner reports a
//! wrong expectation (exit 1, with a diff) and an ill-formed file (exit 3).

use std::fs;
use std::path::Path;
use std::process::Output;

use consentry_test_plugins::{GUARDIAN, SENSITIVITY_LABELER};

use crate::support::{binary, repo_root};

fn run_tests(dir: &Path) -> Output {
    run_tests_with(dir, &[])
}

fn run_tests_with(dir: &Path, extra: &[&str]) -> Output {
    binary()
        .arg("test")
        .arg(dir)
        .arg("--policies")
        .arg(repo_root().join("policies"))
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

const CONSENT: &str = r#"
  - consent:
      resourceType: Consent
      id: c-treat
      status: active
      patient: {reference: Patient/p-100}
      provision:
        type: permit
        actor: [{reference: {reference: Practitioner/dr-weber}}]
        purpose: [{code: TREAT}]
"#;

const READ: &str = r#"{principal: 'Practitioner::"dr-weber"', action: 'Action::"read"', resource: 'Record::"obs-1"', context: {purpose: TREAT}}"#;

#[test]
fn the_bundled_policy_tests_pass() {
    let out = run_tests(&repo_root().join("policies/tests"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")), "{stdout}");
    let cases = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(cases >= 30, "only {cases} cases:\n{stdout}");
    assert!(!stdout.contains("FAIL "), "{stdout}");
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "name: deliberately wrong\nnow: 2026-06-01T10:00:00Z\nsteps:{CONSENT}\
         \x20 - name: right\n    request: {READ}\n    expect: {{decision: Allow, reasons: [consent/c-treat/v1/root]}}\n\
         \x20 - name: wrong\n    request: {READ}\n    expect: {{decision: Allow, reasons: [consent/c-treat/v2/root]}}\n"
    );
    fs::write(dir.path().join("wrong.yaml"), text).unwrap();
    let out = run_tests(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("PASS wrong.yaml › right\n"), "{stdout}");
    assert!(stdout.contains("FAIL wrong.yaml › wrong\n"), "{stdout}");
    assert!(
        stdout.contains(
            "  reasons:\n    expected: [consent/c-treat/v2/root]\n    actual:   [consent/c-treat/v1/root]\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("  summary: allowed by `consent/c-treat/v1/root`"), "{stdout}");
    assert!(!stdout.contains("  decision:\n"), "only differing fields are shown:\n{stdout}");
    assert!(stdout.ends_with("1 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn an_ill_formed_file_exits_3_naming_the_file_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        format!("now: 2026-06-01T10:00:00Z\nsteps:\n  - request: {READ}\n    expect: {{decison: Allow}}\n");
    fs::write(dir.path().join("typo.yaml"), text).unwrap();
    let out = run_tests(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("typo.yaml"), "{stderr}");
    assert!(stderr.contains("steps[0].expect"), "{stderr}");
    assert!(stderr.contains("unknown field `decison`"), "{stderr}");
}

#[test]
fn a_consent_the_server_would_refuse_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let refused = CONSENT.replace("type: permit", "type: maybe");
    let text = format!(
        "now: 2026-06-01T10:00:00Z\nsteps:{refused}  - request: {READ}\n    expect: {{decision: Allow}}\n"
    );
    fs::write(dir.path().join("refused.yaml"), text).unwrap();
    let out = run_tests(dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("refused.yaml"), "{stderr}");
    assert!(stderr.contains("steps[0]: the consent was refused"), "{stderr}");
}

#[test]
fn an_invalid_policy_directory_or_an_empty_test_directory_exits_3() {
    let empty = tempfile::tempdir().unwrap();
    let out = binary().arg("test").arg(empty.path()).arg("--policies").arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no test files"));
    let out = binary()
        .arg("test")
        .arg(repo_root().join("policies/tests"))
        .arg("--policies")
        .arg(empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `*.cedar` files"));
}

#[test]
fn the_example_plugins_tests_pass_with_the_plugins_and_fail_without() {
    // The bundled plugins.toml names the components the test-plugins crate builds.
    for component in [SENSITIVITY_LABELER, GUARDIAN] {
        assert!(Path::new(component).is_file(), "`{component}` was not built");
    }
    let dir = repo_root().join("wasm-plugins/policy-tests");
    // Generous time limits: the tests are about what the plugins do.
    let config_dir = tempfile::tempdir().unwrap();
    let config = crate::plugins::bundled_plugins_with_generous_limits(config_dir.path());
    let out = run_tests_with(&dir, &["--plugins", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.ends_with("5 passed, 0 failed\n"), "{stdout}");

    let out = run_tests(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL example-plugins.yaml › the labeler marks"), "{stdout}");
    assert!(
        stdout.contains("FAIL example-plugins.yaml › and no longer from the child's 18th birthday"),
        "{stdout}"
    );
    assert!(stdout.ends_with("3 passed, 2 failed\n"), "{stdout}");
}

#[test]
fn a_plugin_configuration_that_cannot_be_loaded_exits_3_before_any_test_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugins.toml");
    fs::write(&config, "[[plugins]]\nname = \"gone\"\npath = \"missing.wasm\"\nhooks = [\"enrich\"]\n")
        .unwrap();
    let out = run_tests_with(&repo_root().join("policies/tests"), &["--plugins", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("gone"), "the plugin is named: {stderr}");
    assert!(out.stdout.is_empty(), "no test ran: {}", String::from_utf8_lossy(&out.stdout));
}

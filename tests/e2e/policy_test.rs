//! `consentry test`: the bundled policy tests pass, and the runner reports a
//! wrong expectation (exit 1, with a diff) and an ill-formed file (exit 3).

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::support::{binary, repo_root};

fn run_tests(dir: &Path) -> Output {
    binary()
        .arg("test")
        .arg(dir)
        .arg("--policies")
        .arg(repo_root().join("policies"))
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

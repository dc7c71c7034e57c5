//! `consentry validate`, `check` and `compile-consent`, with their exit codes.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::support::{ADMIN_TOKEN, Server, binary, put_consent, readme_consent, repo_root};

fn copy_bundled() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(repo_root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

#[test]
fn validate_accepts_the_bundled_pack() {
    let out = binary().args(["validate", "--policies"]).arg(repo_root().join("policies")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_exits_3_and_points_at_the_source_of_every_error() {
    let dir = copy_bundled();
    fs::write(
        dir.path().join("zz-broken.cedar"),
        "// two mistakes\npermit(principal, action, resource) when { principal.nope };\npermit(principal == Nurse::\"x\", action, resource);\n",
    )
    .unwrap();
    let out = binary().args(["validate", "--policies"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("zz-broken.cedar:2:"), "{stderr}");
    assert!(stderr.contains("zz-broken.cedar:3:"), "{stderr}");
    assert!(stderr.contains("Nurse"), "{stderr}");
}

#[test]
fn a_schema_error_points_at_the_schema_file_not_at_a_policy() {
    let dir = copy_bundled();
    let schema = dir.path().join("schema.cedarschema");
    let mut text = fs::read_to_string(&schema).unwrap();
    text.push_str("\nentity Broken in [;\n");
    let broken_line = text.lines().count();
    fs::write(&schema, text).unwrap();
    let out = binary().args(["validate", "--policies"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("schema.cedarschema:{broken_line}:")), "{stderr}");
    assert!(!stderr.contains(".cedar:"), "no policy file is blamed: {stderr}");
}

#[test]
fn a_json_schema_that_does_not_parse_is_placed_at_its_line() {
    let dir = copy_bundled();
    fs::remove_file(dir.path().join("schema.cedarschema")).unwrap();
    fs::write(dir.path().join("schema.json"), "{\n  \"\": {\n    \"entityTypes\": {,\n").unwrap();
    let out = binary().args(["validate", "--policies"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("schema.json:3:"), "{stderr}");
}

/// Runs `consentry check` on the bundled pack with `body` as the request
/// file, consulting the consent store in `store`.
fn check(store: &Path, body: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    fs::write(&file, body).unwrap();
    binary()
        .args(["check", "--policies"])
        .arg(repo_root().join("policies"))
        .arg("--request")
        .arg(&file)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap()
}

#[test]
fn check_exits_0_on_allow_2_on_deny_and_3_on_invalid_input() {
    let store = tempfile::tempdir().unwrap();
    let allow = check(
        store.path(),
        r#"{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}"#,
    );
    assert_eq!(allow.status.code(), Some(0), "{}", String::from_utf8_lossy(&allow.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&allow.stdout).unwrap();
    assert_eq!(decision["outcome"], "allow");
    assert_eq!(decision["reasons"][0]["policy"], "break-glass", "{decision}");
    let deny = check(
        store.path(),
        r#"{"principal": "Practitioner::\"dr-weber\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "TREAT"}}"#,
    );
    assert_eq!(deny.status.code(), Some(2), "{}", String::from_utf8_lossy(&deny.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&deny.stdout).unwrap();
    assert_eq!(decision["outcome"], "not_permitted");
    let invalid = check(
        store.path(),
        r#"{"principal": "nobody", "action": "Action::\"read\"", "resource": "Record::\"obs-2\""}"#,
    );
    assert_eq!(invalid.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("principal"));
}

#[test]
fn check_refuses_a_caller_supplied_now_with_exit_3() {
    let store = tempfile::tempdir().unwrap();
    let out = check(
        store.path(),
        r#"{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival", "now": "2026-01-01T00:00:00Z"}}"#,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("context.now"), "{stderr}");
    assert!(out.stdout.is_empty(), "no decision is printed: {}", String::from_utf8_lossy(&out.stdout));
}

/// `check` decides with the consents a server stored in the same store.
#[test]
fn check_consults_the_store() {
    let store = tempfile::tempdir().unwrap();
    let request = r#"{"principal": "Practitioner::\"dr-weber\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "TREAT"}}"#;
    assert_eq!(check(store.path(), request).status.code(), Some(2));

    let server =
        Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), ADMIN_TOKEN, &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    drop(server);

    let allow = check(store.path(), request);
    assert_eq!(allow.status.code(), Some(0), "{}", String::from_utf8_lossy(&allow.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&allow.stdout).unwrap();
    assert_eq!(decision["reasons"][0]["policy"], "consent/c-100/v1/root", "{decision}");

    // Another, empty store has no consent to allow it.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(check(empty.path(), request).status.code(), Some(2));
}

#[test]
fn compile_consent_prints_the_rules_a_consent_becomes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c-100.json");
    fs::write(&file, crate::support::README_CONSENT).unwrap();
    let policies = repo_root().join("policies");
    let out = binary().arg("compile-consent").arg(&file).arg("--policies").arg(&policies).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for id in
        ["consent/c-100/v1/root", "consent/c-100/v1/provision[0]", "consent/c-100/v1/provision[0]/redact"]
    {
        assert!(stdout.contains(&format!("@id(\"{id}\")")), "{id} missing from:\n{stdout}");
    }
    assert!(stdout.contains("@active_from(\"2026-01-01T00:00:00Z\")"), "{stdout}");

    fs::write(
        &file,
        r#"{"resourceType": "Consent", "status": "sometimes", "patient": {"reference": "Patient/p-1"}}"#,
    )
    .unwrap();
    let out = binary().arg("compile-consent").arg(&file).arg("--policies").arg(&policies).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("status"), "the error names the field: {stderr}");
}

/// `check` only asks: pointed at a store that does not exist, it decides
/// with no consents and leaves nothing behind (it used to create
/// `consents.sqlite3`, and the directory, wherever `--store` pointed).
#[test]
fn check_does_not_create_a_store_when_none_exists() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("consentry-data");
    let deny = check(
        &missing,
        r#"{"principal": "Practitioner::\"dr-weber\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "TREAT"}}"#,
    );
    assert_eq!(deny.status.code(), Some(2), "{}", String::from_utf8_lossy(&deny.stderr));
    let decision: serde_json::Value = serde_json::from_slice(&deny.stdout).unwrap();
    assert_eq!(decision["outcome"], "not_permitted", "{decision}");
    assert!(!missing.exists(), "check created `{}`", missing.display());

    // An existing directory without a store gets no store file either.
    let empty = tempfile::tempdir().unwrap();
    let allow = check(
        empty.path(),
        r#"{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}"#,
    );
    assert_eq!(allow.status.code(), Some(0), "{}", String::from_utf8_lossy(&allow.stderr));
    let left: Vec<_> = fs::read_dir(empty.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
    assert!(left.is_empty(), "check left {left:?} behind");
}

/// The subcommands `consentry --help` lists, as the completions and the
/// man page must name them.
const SUBCOMMANDS: &[&str] = &[
    "serve",
    "check",
    "search",
    "plan",
    "validate",
    "test",
    "compile-consent",
    "plugin",
    "audit",
    "token",
    "policies",
    "entities",
    "completions",
    "man",
];

/// What bash offers after `words`, from the script `consentry completions
/// bash` prints, run by bash itself.
fn bash_completes(words: &[&str]) -> Vec<String> {
    let script = binary().args(["completions", "bash"]).output().unwrap();
    assert_eq!(script.status.code(), Some(0), "{}", String::from_utf8_lossy(&script.stderr));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("consentry.bash");
    fs::write(&file, &script.stdout).unwrap();
    let current = words.last().unwrap();
    let previous = words.get(words.len().wrapping_sub(2)).unwrap_or(&"consentry");
    let program = format!(
        "source \"$1\"; COMP_WORDS=({}); COMP_CWORD={}; _consentry consentry '{current}' '{previous}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        words.len() - 1,
    );
    let out = std::process::Command::new("bash").args(["-c", &program, "bash"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn completions_for_bash_complete_every_subcommand() {
    let offered = bash_completes(&["consentry", ""]);
    for subcommand in SUBCOMMANDS {
        assert!(offered.iter().any(|w| w == subcommand), "`{subcommand}` is not offered: {offered:?}");
    }
    // A subcommand's options are completed too.
    assert_eq!(bash_completes(&["consentry", "check", "--po"]), ["--policies"]);

    let unknown = binary().args(["completions", "cmd.exe"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2), "clap's usage error");
}

#[test]
fn the_man_page_renders_with_the_name_and_every_subcommand() {
    let out = binary().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains(".TH consentry 1"), "{page}");
    assert!(page.contains(".SH NAME") && page.contains("consentry \\- "), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("consentry\\-{}(1)", subcommand.replace('-', "\\-"))),
            "no `{subcommand}`: {page}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out = binary().args(["man", "--out-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["consentry.1", "consentry-serve.1", "consentry-audit-verify.1"] {
        let text = fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

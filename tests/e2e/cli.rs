//! `consentry validate` and `consentry check`, with their exit codes.

use std::fs;

use crate::support::{binary, repo_root};

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
fn check_exits_0_on_allow_2_on_deny_and_3_on_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let policies = repo_root().join("policies");
    let run = |body: &str| {
        let file = dir.path().join("request.json");
        fs::write(&file, body).unwrap();
        binary().args(["check", "--policies"]).arg(&policies).arg("--request").arg(&file).output().unwrap()
    };
    let allow = run(
        r#"{"principal": "Practitioner::\"dr-weber\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "TREAT"}}"#,
    );
    assert_eq!(allow.status.code(), Some(0));
    let decision: serde_json::Value = serde_json::from_slice(&allow.stdout).unwrap();
    assert_eq!(decision["outcome"], "allow");
    let deny = run(
        r#"{"principal": "Practitioner::\"dr-weber\"", "action": "Action::\"read\"", "resource": "Record::\"obs-2\"", "context": {"purpose": "TREAT"}}"#,
    );
    assert_eq!(deny.status.code(), Some(2));
    let invalid =
        run(r#"{"principal": "nobody", "action": "Action::\"read\"", "resource": "Record::\"obs-2\""}"#);
    assert_eq!(invalid.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("principal"));
}

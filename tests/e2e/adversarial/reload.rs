//! Half-written policy files put in force (finding 4).
//!
//! Each test changes a watched directory the way the attack did, while a
//! client asks a question whose answer must never change, and asserts on
//! the answers: no timing is asserted, and every wait for a reload polls
//! `/readyz` with a generous deadline.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Server, ali_breaks_the_glass, binary, copy_policies, patch_entities, repo_root, run_to_exit,
    wait_for_readyz, weber_reads,
};

/// The one id the truncation cuts off: the pack's last rule, which keeps
/// restricted patient p-200's records closed to break-glass.
const RESTRICTION: &str = "@id(\"restriction\")";

/// `pack.cedar` as the attack leaves it for a moment: cut just before the
/// restriction rule, still valid.
fn truncated(pack: &str) -> &str {
    let cut = pack.find(RESTRICTION).expect("the pack has a restriction rule");
    &pack[..cut]
}

/// The decision the attack turned: Dr. Ali breaks the glass on p-200's `obs-2`.
fn attack() -> Value {
    ali_breaks_the_glass("obs-2")
}

/// The truncated pack really is dangerous: put in force, it allows the attack.
fn assert_the_truncated_pack_allows_the_attack(pack: &str) {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    fs::write(dir.path().join("pack.cedar"), truncated(pack)).unwrap();
    let request = dir.path().join("request.json");
    fs::write(&request, attack().to_string()).unwrap();
    let store = tempfile::tempdir().unwrap();
    let status = binary()
        .stdout(std::process::Stdio::null())
        .args(["check", "--policies"])
        .arg(dir.path())
        .arg("--request")
        .arg(&request)
        .arg("--store")
        .arg(store.path())
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "the truncated pack must allow the attack, or this test proves nothing"
    );
}

/// `/readyz` with details (the admin token may be needed to see them).
fn readyz(server: &Server) -> Value {
    server.send("GET", "/readyz", None, Some(ADMIN_TOKEN)).1
}

/// Polls `/readyz` until `done` holds, for at most a minute.
fn wait_for(server: &Server, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for_readyz(server, what, Duration::from_secs(60), done)
}

/// Runs `change` while a client keeps asking [`attack`]; returns every
/// decision the client got, once `change` returned.
fn hammered(server: &Server, change: impl FnOnce()) -> Vec<String> {
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut decisions = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let (status, answer) = server.post("/v1/is_authorized", &attack());
                assert_eq!(status, 200, "{answer}");
                decisions.push(answer["decision"].as_str().unwrap().to_owned());
            }
            decisions
        });
        // Stops the client even when `change` fails an assertion.
        let stopping = Stop(&stop);
        change();
        drop(stopping);
        client.join().unwrap()
    })
}

struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn assert_never_allowed(decisions: &[String]) {
    assert!(!decisions.is_empty(), "the client asked nothing");
    let allowed = decisions.iter().filter(|d| *d == "Allow").count();
    assert_eq!(allowed, 0, "p-200's record was allowed {allowed} time(s) in {} decisions", decisions.len());
}

#[test]
fn finding_04_a_truncated_then_rewritten_policy_file_is_never_put_in_force() {
    let pack = fs::read_to_string(repo_root().join("policies/pack.cedar")).unwrap();
    assert_the_truncated_pack_allows_the_attack(&pack);
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    // The default settle window.
    let server = Server::start(dir.path(), &["--watch"]);
    let hash = readyz(&server)["policy_hash"].clone();
    let decisions = hammered(&server, || {
        fs::write(dir.path().join("pack.cedar"), truncated(&pack)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        fs::write(dir.path().join("pack.cedar"), &pack).unwrap();
        wait_for(&server, "the reload of the rewritten file", |r| {
            r["last_reload"]["ok"] == true && r["policy_hash"] == hash
        });
    });
    assert_never_allowed(&decisions);
}

#[test]
fn finding_04_a_policy_file_held_open_for_writing_is_not_read_until_it_is_closed() {
    let pack = fs::read_to_string(repo_root().join("policies/pack.cedar")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let server = Server::start(dir.path(), &["--watch", "--watch-settle", "200ms"]);
    let decisions = hammered(&server, || {
        let mut file = fs::File::create(dir.path().join("pack.cedar")).unwrap();
        file.write_all(truncated(&pack).as_bytes()).unwrap();
        // Ten settle windows with the file half-written and open.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(readyz(&server)["last_reload"], Value::Null, "a file open for writing was reloaded");
        file.write_all(&pack.as_bytes()[truncated(&pack).len()..]).unwrap();
        drop(file);
        wait_for(&server, "the reload once the file is closed", |r| r["last_reload"]["ok"] == true);
    });
    assert_never_allowed(&decisions);
}

/// What the kubelet mounts for a ConfigMap: `..<version>/` with the files,
/// `..data -> ..<version>`, and each file as a symlink into `..data`.
#[cfg(unix)]
fn configmap(dir: &Path, version: &str, files: &[(&str, String)]) {
    fs::create_dir(dir.join(format!("..{version}"))).unwrap();
    for (name, text) in files {
        fs::write(dir.join(format!("..{version}")).join(name), text).unwrap();
    }
    std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data")).unwrap();
    for (name, _) in files {
        std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
    }
}

/// A ConfigMap update as the kubelet makes it: a new version directory, a
/// temporary link to it renamed over `..data`, the old version removed.
#[cfg(unix)]
fn swap_configmap(dir: &Path, version: &str, files: &[(&str, String)]) {
    let old = fs::read_link(dir.join("..data")).unwrap();
    fs::create_dir(dir.join(format!("..{version}"))).unwrap();
    for (name, text) in files {
        fs::write(dir.join(format!("..{version}")).join(name), text).unwrap();
    }
    std::os::unix::fs::symlink(format!("..{version}"), dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join(old)).unwrap();
}

#[cfg(unix)]
#[test]
fn finding_04_a_configmap_update_is_read_as_one_version() {
    let bundled = |name: &str| fs::read_to_string(repo_root().join("policies").join(name)).unwrap();
    let names = ["schema.cedarschema", "pack.cedar", "transfers.cedar", "entities.json"];
    let v1: Vec<(&str, String)> = names.iter().map(|name| (*name, bundled(name))).collect();
    // Version 2 changes two files that only work together: a new attribute
    // in the schema and a rule that reads it. The new rule with the old
    // schema is refused.
    let mut v2 = v1.clone();
    for (name, text) in &mut v2 {
        match *name {
            "schema.cedarschema" => {
                assert!(text.contains("resourceType: String"), "the schema declares Record.resourceType");
                *text = text.replacen("resourceType: String", "resourceType: String, onCall?: Bool", 1);
            }
            "pack.cedar" => text.push_str(
                "\n@id(\"on-call-reads\") permit(principal == Practitioner::\"dr-weber\", action == Action::\"read\", \
                 resource is Record) when { resource has onCall && !resource.onCall };\n",
            ),
            _ => {}
        }
    }
    let dir = tempfile::tempdir().unwrap();
    configmap(dir.path(), "2026_01_01_00_00_00.1", &v1);
    let server = Server::start(dir.path(), &["--watch", "--watch-settle", "200ms"]);
    let (status, before) = server.post("/v1/is_authorized", &weber_reads("obs-1"));
    assert_eq!((status, &before["decision"]), (200, &json!("Deny")), "{before}");
    let patch = json!({"upsert": [{"uid": {"type": "Record", "id": "obs-1"},
        "attrs": {"patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation", "labels": [],
                  "confidentiality": "N", "onCall": false},
        "parents": [{"type": "Patient", "id": "p-100"}]}]});
    swap_configmap(dir.path(), "2026_01_01_00_01_00.2", &v2);
    wait_for(&server, "the ConfigMap update", |r| r["last_reload"]["ok"] == true);
    let (status, answer) = patch_entities(&server, &patch);
    assert_eq!(status, 200, "version 2's schema is in force: {answer}");
    let (_, after) = server.post("/v1/is_authorized", &weber_reads("obs-1"));
    assert_eq!(after["decision"], "Allow", "{after}");
    assert_eq!(after["diagnostics"]["reason"], json!(["on-call-reads"]), "{after}");
}

/// A policy test that pins the answer the attack turned.
const RESTRICTED_STAYS_CLOSED: &str = r#"now: 2026-06-01T10:00:00Z
steps:
- name: break-glass does not open a restricted patient's record
  request: {principal: 'Practitioner::"dr-ali"', action: 'Action::"read"', resource: 'Record::"obs-2"',
            context: {purpose: BTG, justification: unconscious on arrival}}
  expect: {decision: Deny, outcome: forbidden}
"#;

#[test]
fn finding_04_policy_tests_refuse_a_reload_a_put_and_a_start_that_fail_them() {
    let pack = fs::read_to_string(repo_root().join("policies/pack.cedar")).unwrap();
    let tests = tempfile::tempdir().unwrap();
    fs::write(tests.path().join("restriction.yaml"), RESTRICTED_STAYS_CLOSED).unwrap();
    let tests_arg = tests.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let server =
        Server::start(dir.path(), &["--watch", "--watch-settle", "200ms", "--policy-tests", tests_arg]);
    let hash = readyz(&server)["policy_hash"].clone();

    // A reload that fails the tests is refused, and says why.
    let decisions = hammered(&server, || {
        fs::write(dir.path().join("pack.cedar"), truncated(&pack)).unwrap();
        let ready = wait_for(&server, "the refused reload", |r| r["last_reload"]["ok"] == false);
        let error = ready["last_reload"]["error"].as_str().unwrap();
        assert!(error.contains("policy tests failed"), "{error}");
        assert!(
            error.contains("restriction.yaml › break-glass does not open a restricted patient's record"),
            "{error}"
        );
        assert_eq!(ready["policy_hash"], hash, "the set in force stays");
    });
    assert_never_allowed(&decisions);

    // So is a PUT to a server whose store holds the policies, with 422 naming the case.
    let server = Server::start_managed_pack(&["--policy-tests", tests_arg]);
    let hash = readyz(&server)["policy_hash"].clone();
    let put = |text: &str| {
        server.send("PUT", "/v1/policies", Some(("text/plain", text.to_owned())), Some(ADMIN_TOKEN))
    };
    let (status, answer) = put(truncated(&pack));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "policy_tests_failed", "{answer}");
    let problem = answer["problems"][0]["message"].as_str().unwrap();
    assert!(problem.starts_with("restriction.yaml › break-glass does not open a restricted patient's record: decision: expected Deny, actual Allow"), "{problem}");
    assert_eq!(readyz(&server)["policy_hash"], hash);
    assert_eq!(server.post("/v1/is_authorized", &attack()).1["decision"], "Deny");
    // A change that passes them is put in force.
    let (status, answer) = put(&format!("{pack}\n// reviewed\n"));
    assert_eq!(status, 200, "{answer}");
    assert_ne!(readyz(&server)["policy_hash"], hash);

    // And a server does not start with policies that fail them.
    fs::write(dir.path().join("pack.cedar"), truncated(&pack)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let args = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--audit",
        "off",
        "--policies",
        dir.path().to_str().unwrap(),
        "--store",
        store.path().to_str().unwrap(),
        "--policy-tests",
        tests_arg,
    ];
    let (code, stderr) = run_to_exit(&args, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("restriction.yaml › break-glass does not open"), "{stderr}");
}

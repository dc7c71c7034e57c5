//! `serve --watch`: valid changes are swapped in, invalid ones are refused
//! while the previous set keeps serving.

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Server, cedar_request, repo_root, wait_for_readyz};

fn wait_for(server: &Server, what: &str, done: impl FnMut(&Value) -> bool) -> Value {
    wait_for_readyz(server, what, Duration::from_secs(20), done)
}

#[test]
fn watch_swaps_valid_changes_and_keeps_the_old_set_on_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["schema.cedarschema", "pack.cedar", "entities.json"] {
        fs::copy(repo_root().join("policies").join(name), dir.path().join(name)).unwrap();
    }
    let server = Server::start(dir.path(), &["--watch"]);
    let request = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-2\"",
        json!({"purpose": "TREAT"}),
    );
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Deny");
    let first_hash = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN)).1["policy_hash"].clone();

    fs::write(dir.path().join("pack.cedar"), "permit(principal, action, resource) when { principal.nope };")
        .unwrap();
    let ready = wait_for(&server, "a refused reload", |r| r["last_reload"]["ok"] == false);
    assert!(ready["last_reload"]["error"].as_str().unwrap().contains("nope"), "{ready}");
    assert_eq!(ready["policy_hash"], first_hash);
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Deny");

    fs::write(dir.path().join("pack.cedar"), "@id(\"open\") permit(principal, action, resource);").unwrap();
    wait_for(&server, "a successful reload", |r| r["last_reload"]["ok"] == true);
    let answer = server.post("/v1/is_authorized", &request).1;
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(answer["diagnostics"]["reason"], json!(["open"]));
}

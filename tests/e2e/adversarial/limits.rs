//! Policies and schemas deep enough to crash the process (finding 9).
//!
//! Each way text reaches Cedar's recursive parser is tried with the shapes
//! that once overflowed the stack and aborted the server: it must answer
//! 422 (413 for size) naming the limit, and go on serving; `validate` and
//! start-up must refuse the same text with the same limit.

use std::fs;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Server, binary, copy_policies, decide, patch_entities, repo_root, run_to_exit,
    wait_for_readyz, weber_reads,
};

/// A policy whose condition is 150 nested parentheses.
fn nested_parentheses() -> String {
    format!(
        "@id(\"deep\") permit(principal, action, resource) when {{ {}true{} }};\n",
        "(".repeat(150),
        ")".repeat(150)
    )
}

/// A policy whose condition is a 1,000-term `||`.
fn long_or() -> String {
    format!("@id(\"long\") permit(principal, action, resource) when {{ {}true }};\n", "false || ".repeat(999))
}

/// The bundled schema with an entity type whose attribute nests 1,000 records.
fn deep_schema() -> String {
    let schema = fs::read_to_string(repo_root().join("policies/schema.cedarschema")).unwrap();
    format!("{schema}\nentity Deep {{ a: {}Long{} }};\n", "{ a: ".repeat(1000), " }".repeat(1000))
}

fn put(server: &Server, path: &str, content_type: &str, body: String) -> (u16, Value) {
    server.send("PUT", path, Some((content_type, body)), Some(ADMIN_TOKEN))
}

fn get(server: &Server, path: &str) -> Value {
    let (status, answer) = server.send("GET", path, None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The server answers decisions, as the bundled pack decides them (Dr.
/// Weber reads obs-1 with no consent in the store: not permitted).
fn assert_serving(server: &Server) {
    let answered = decide(server, &weber_reads("obs-1"));
    assert_eq!(answered, ("Deny".to_owned(), "not_permitted".to_owned()), "the server must keep serving");
}

/// Refused as over `limit`, by name; and the server still decides.
fn assert_refused_and_serving(server: &Server, (status, answer): (u16, Value), limit: &str) {
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"], "limit_exceeded", "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains(&format!("`{limit}`")), "{answer}");
    assert_serving(server);
}

#[test]
fn finding_09_deep_policies_put_through_the_api_are_refused_and_the_server_keeps_serving() {
    let server = Server::start_managed_pack(&[]);
    assert_serving(&server);
    let hash = get(&server, "/v1/policies")["hash"].clone();
    let pack = get(&server, "/v1/policies")["text"].as_str().unwrap().to_owned();
    for deep in [nested_parentheses(), long_or()] {
        let answer = put(&server, "/v1/policies", "text/plain", format!("{pack}\n{deep}"));
        assert_refused_and_serving(&server, answer, "expression_depth");
        let as_json = json!({"policies": format!("{pack}\n{deep}")}).to_string();
        let answer = put(&server, "/v1/policies", "application/json", as_json);
        assert_refused_and_serving(&server, answer, "expression_depth");
    }
    assert_eq!(get(&server, "/v1/policies")["hash"], hash, "the set in force stays");
}

#[test]
fn finding_09_a_schema_with_1000_nested_records_put_through_the_api_is_refused() {
    let server = Server::start_managed_pack(&[]);
    let answer = put(&server, "/v1/schema", "text/plain", deep_schema());
    assert_refused_and_serving(&server, answer, "schema_nesting");
    // JSON nests no deeper than serde_json parses (128), still over the limit.
    let mut shape = json!({"type": "Long"});
    for _ in 0..60 {
        shape = json!({"type": "Record", "attributes": {"a": shape}});
    }
    let schema = json!({"": {"entityTypes": {"Deep": {"shape": shape}}, "actions": {}}}).to_string();
    let answer = put(&server, "/v1/schema", "application/json", schema);
    assert_refused_and_serving(&server, answer, "schema_json_depth");
}

#[test]
fn finding_09_deep_values_in_entities_and_contexts_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let server = Server::start(dir.path(), &[]);
    let deep = (0..40).fold(json!(1), |inner, _| json!([inner]));
    let mut request = weber_reads("obs-1");
    request["context"]["history"] = deep.clone();
    let (status, answer) = server.post("/v1/is_authorized", &request);
    assert_eq!((status, answer["field"].as_str()), (422, Some("context.history")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("`value_depth`"), "{answer}");
    let patch = json!({"upsert": [{"uid": {"type": "Patient", "id": "p-9"}, "attrs": {"deep": deep}, "parents": []}]});
    let (status, answer) = patch_entities(&server, &patch);
    assert_eq!(status, 422, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("`value_depth`"), "{answer}");
    assert_serving(&server);
}

#[test]
fn finding_09_policy_text_over_the_size_limit_is_413_even_under_a_larger_body_limit() {
    let server = Server::start_managed_pack(&["--max-body", "8388608"]);
    let text = format!("permit(principal, action, resource) when {{ \"{}\" == \"\" }};", "x".repeat(3 << 20));
    let (status, answer) = put(&server, "/v1/policies", "text/plain", text);
    assert_eq!((status, &answer["error"]), (413, &json!("limit_exceeded")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("`policy_text_bytes`"), "{answer}");
}

#[test]
fn finding_09_a_deep_policy_in_a_watched_file_is_refused_and_the_set_in_force_stays() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let server = Server::start(dir.path(), &["--watch", "--watch-settle", "200ms"]);
    assert_serving(&server);
    let hash = get(&server, "/v1/policies")["hash"].clone();
    fs::write(dir.path().join("deep.cedar"), format!("{}{}", nested_parentheses(), long_or())).unwrap();
    let ready = wait_for_readyz(&server, "the refused reload", Duration::from_secs(60), |r| {
        r["last_reload"]["ok"] == false
    });
    let error = ready["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("`expression_depth`"), "{ready}");
    assert_eq!(get(&server, "/v1/policies")["hash"], hash, "the set in force stays");
    assert_serving(&server);
}

#[test]
fn finding_09_validate_and_start_up_refuse_deep_policies_and_schemas_naming_the_limit() {
    for (file, text, limit) in [
        ("deep.cedar", nested_parentheses(), "expression_depth"),
        ("long.cedar", long_or(), "expression_depth"),
        ("schema.cedarschema", deep_schema(), "schema_nesting"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_policies(dir.path());
        fs::write(dir.path().join(file), &text).unwrap();
        let out = binary().args(["validate", "--policies"]).arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{file}: {stderr}");
        assert!(stderr.contains(&format!("`{limit}`")), "{file}: {stderr}");
        if file.ends_with(".cedar") {
            assert!(stderr.contains(&format!("{file}:1:")), "{file}: the error points at the file: {stderr}");
        }
        let store = tempfile::tempdir().unwrap();
        let policies = dir.path().to_str().unwrap();
        let args = [
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--policies",
            policies,
            "--store",
            store.path().to_str().unwrap(),
        ];
        let (code, stderr) = run_to_exit(&args, &[("CONSENTRY_ADMIN_TOKEN", ADMIN_TOKEN)]);
        assert_eq!(code, Some(3), "{file}: {stderr}");
        assert!(stderr.contains(&format!("`{limit}`")), "{file}: {stderr}");
    }
}

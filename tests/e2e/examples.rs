//! The request bodies of `examples/`, sent as the documentation sends them
//! (method and route from `examples/index.json`), to the real binary with
//! the bundled pack: each must get the answer the documentation gives.

use std::fs;

use serde_json::{Value, json};

use crate::support::{Server, repo_root};

/// The admin token the README starts the server with, and the examples send.
const TOKEN: &str = "change-me";

/// The consent id the consent examples are sent under.
const CONSENT: &str = "c-100";

/// An example's body, and the method and route its manifest entry gives.
struct Example {
    method: String,
    path: String,
    content_type: &'static str,
    body: String,
}

fn example(file: &str) -> Example {
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(repo_root().join("examples/index.json")).unwrap()).unwrap();
    let entry = manifest.as_array().unwrap().iter().find(|e| e["file"] == file);
    let entry = entry.unwrap_or_else(|| panic!("`{file}` is not in examples/index.json"));
    Example {
        method: entry["method"].as_str().unwrap().to_owned(),
        path: entry["path"].as_str().unwrap().replace("{id}", CONSENT),
        content_type: if file.ends_with(".cedar") { "text/plain" } else { "application/json" },
        body: fs::read_to_string(repo_root().join("examples").join(file)).unwrap(),
    }
}

/// Sends `file` as the documentation does: the decision APIs open, as on
/// loopback, and the admin and consent routes with `token`.
fn send_with(server: &Server, file: &str, token: &str) -> (u16, Value) {
    let Example { method, path, content_type, body } = example(file);
    let decision = ["/v1/is_authorized", "/v1/plan", "/access/"].iter().any(|p| path.starts_with(p));
    server.send(&method, &path, Some((content_type, body)), (!decision).then_some(token))
}

fn send(server: &Server, file: &str) -> (u16, Value) {
    send_with(server, file, TOKEN)
}

fn decided(server: &Server, file: &str) -> Value {
    let (status, answer) = send(server, file);
    assert_eq!(status, 200, "{file}: {answer}");
    answer
}

fn ids(values: &Value, field: &str) -> Vec<String> {
    values.as_array().unwrap().iter().map(|v| v[field].as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_example_gets_the_answer_the_docs_give() {
    let store = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), TOKEN, &[]);

    // README, quick start. The tests' own copy of the consent is this file.
    assert_eq!(example("consent-c-100.json").body.trim_end(), crate::support::README_CONSENT);
    let glass = decided(&server, "is-authorized-break-glass.json");
    assert_eq!((&glass["decision"], &glass["outcome"]), (&json!("Allow"), &json!("allow")), "{glass}");
    assert_eq!(glass["diagnostics"]["reason"], json!(["break-glass"]));
    assert_eq!(ids(&glass["obligations"], "id"), ["notify-patient", "audit-priority"]);
    let before = decided(&server, "is-authorized-treatment.json");
    assert_eq!(before["outcome"], "not_permitted", "{before}");

    let (status, stored) = send(&server, "consent-c-100.json");
    assert_eq!((status, &stored["version"]), (201, &json!(1)), "{stored}");
    let obs = decided(&server, "is-authorized-treatment.json");
    assert_eq!(obs["diagnostics"]["reason"], json!(["consent/c-100/v1/root"]), "{obs}");
    let psy = decided(&server, "is-authorized-treatment-psy.json");
    assert_eq!(psy["outcome"], "forbidden", "{psy}");
    assert_eq!(psy["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]));

    // docs/services/decision-api.md: the batch and AuthZEN.
    let batch = decided(&server, "is-authorized-batch.json");
    assert_eq!(ids(&batch["responses"], "outcome"), ["allow", "allow", "forbidden"], "{batch}");
    let evaluation = decided(&server, "evaluation-break-glass.json");
    assert_eq!(evaluation["decision"], true, "{evaluation}");
    assert_eq!(evaluation["context"]["reason"]["policies"][0]["policy"], "break-glass", "{evaluation}");
    let evaluations = decided(&server, "evaluations-treatment.json");
    let answers: Vec<&Value> =
        evaluations["evaluations"].as_array().unwrap().iter().map(|e| &e["decision"]).collect();
    assert_eq!(answers, [&json!(true), &json!(false)], "{evaluations}");

    // docs/services/filters-and-plans.md.
    let plan = decided(&server, "plan-treatment.json");
    assert_eq!(plan["kind"], "conditional", "{plan}");
    assert_eq!(
        plan["filter"],
        json!({"any_of": [{"all_of": [{"attribute": "labels", "op": "contains_none", "values": ["ETH", "GDIS", "HIV", "PSY"]}]}], "exact": true}),
    );

    // docs/services/search.md.
    let records = decided(&server, "search-resource-treatment.json");
    assert_eq!(ids(&records["results"], "id"), ["cond-1", "obs-1"], "{records}");
    let glass_staff = decided(&server, "search-subject-break-glass.json");
    assert_eq!(ids(&glass_staff["results"], "id"), ["dr-ali"], "{glass_staff}");
    assert_eq!(glass_staff["page"]["next_token"], "", "{glass_staff}");
    let actions = decided(&server, "search-action-treatment.json");
    assert_eq!(ids(&actions["results"], "name"), ["read", "search"], "{actions}");
    let own = decided(&server, "search-action-own-records.json");
    assert_eq!(ids(&own["results"], "name"), ["read", "search"], "{own}");
    assert_eq!(own["context"]["decisions"][0]["policies"][0]["policy"], "own-records", "{own}");

    // docs/services/tokens-in-decisions.md: this server trusts no identity
    // provider, so a token cannot be verified: refused, naming the field.
    for file in ["is-authorized-token.json", "plan-token.json", "search-resource-token.json"] {
        let (status, refused) = send(&server, file);
        assert_eq!((status, &refused["field"]), (400, &json!("token")), "{file}: {refused}");
        assert!(refused["message"].as_str().unwrap().contains("identity.issuer"), "{file}: {refused}");
    }

    // README: the withdrawal; the next decision is a Deny again.
    let (status, withdrawn) = send(&server, "consent-c-100-withdrawn.json");
    assert_eq!((status, &withdrawn["version"]), (200, &json!(2)), "{withdrawn}");
    assert_eq!(decided(&server, "is-authorized-treatment.json")["outcome"], "not_permitted");

    // docs/operators/admin-api.md: dr-ali leaves the break-glass group.
    let (status, patched) = send(&server, "entities-patch-ali-leaves-break-glass.json");
    assert_eq!(status, 200, "{patched}");
    assert_eq!(decided(&server, "is-authorized-break-glass.json")["decision"], "Deny");
}

/// docs/operators/admin-api.md: a policy set put through the API, and
/// rolled back, on a server whose store manages the policies.
#[test]
fn the_policy_examples_put_a_set_and_roll_it_back() {
    let server = Server::start_managed_pack(&[]);
    let put = |file: &str| send_with(&server, file, crate::support::ADMIN_TOKEN);
    let (status, trial) = put("policies-put.cedar");
    assert_eq!(status, 200, "{trial}");
    let (_, policies) = server.send("GET", "/v1/policies", None, Some(crate::support::ADMIN_TOKEN));
    assert_eq!(ids(&policies["policies"], "id"), ["purpose-required", "break-glass"], "{policies}");
    assert_eq!(decided(&server, "is-authorized-break-glass.json")["decision"], "Allow");

    let (status, rolled) = put("policies-rollback.json");
    assert_eq!(status, 200, "{rolled}");
    let (_, policies) = server.send("GET", "/v1/policies", None, Some(crate::support::ADMIN_TOKEN));
    assert!(ids(&policies["policies"], "id").contains(&"third-country-transfer".to_owned()), "{policies}");
}

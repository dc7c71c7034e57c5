//! The sidecar with the bundled policy pack, as the README's quick start
//! shows it.

use serde_json::json;

use crate::support::{
    ADMIN_TOKEN, README_CONSENT, Server, ali_breaks_the_glass, cedar_request, decide, patch_entities,
    put_consent, readme_consent, repo_root, weber_reads,
};

fn bundled() -> Server {
    Server::start(&repo_root().join("policies"), &[])
}

/// A request of the README's quick start, byte for byte: the file in
/// `examples/` its curl command sends.
fn quick_start(file: &str) -> String {
    std::fs::read_to_string(repo_root().join("examples").join(file)).unwrap()
}
/// The admin token the README starts the server with.
const README_TOKEN: &str = "change-me";

fn obligation_ids(answer: &serde_json::Value) -> Vec<&str> {
    answer["obligations"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect()
}

/// The README's quick start, request for request: break the glass, record
/// a consent, decide under it, withdraw it.
#[test]
fn readme_example_break_glass_then_consent_then_withdrawal() {
    let store = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), README_TOKEN, &[]);
    let post = |body: &str| {
        let (status, answer) =
            server.send("POST", "/v1/is_authorized", Some(("application/json", body.to_owned())), None);
        assert_eq!(status, 200, "{body} -> {answer}");
        answer
    };
    let put = |body: String| {
        server.send("PUT", "/v1/consents/c-100", Some(("application/json", body)), Some(README_TOKEN))
    };

    // a. Break the glass: allowed, with obligations.
    let glass = post(&quick_start("is-authorized-break-glass.json"));
    assert_eq!(glass["decision"], "Allow", "{glass}");
    assert_eq!(glass["diagnostics"]["reason"], json!(["break-glass"]));
    assert_eq!(obligation_ids(&glass), ["notify-patient", "audit-priority"]);
    assert!(glass["decision_id"].as_str().is_some_and(|id| id.len() == 36));
    assert!(glass["summary"].as_str().is_some_and(|s| s.contains("break-glass")), "{glass}");

    // Without a consent, treatment has no legal basis.
    let before = post(&quick_start("is-authorized-treatment.json"));
    assert_eq!((&before["decision"], &before["outcome"]), (&json!("Deny"), &json!("not_permitted")));

    // b. The patient's consent.
    let (status, stored) = put(README_CONSENT.to_owned());
    assert_eq!(status, 201, "{stored}");
    assert_eq!(stored["id"], "c-100");
    assert_eq!(stored["version"], 1);
    assert_eq!(stored["patient"], "p-100");

    // c. Treatment is allowed by the consent; PSY-labelled records are not.
    let obs = post(&quick_start("is-authorized-treatment.json"));
    assert_eq!(obs["decision"], "Allow", "{obs}");
    assert_eq!(obs["diagnostics"]["reason"], json!(["consent/c-100/v1/root"]));
    let psy = post(&quick_start("is-authorized-treatment-psy.json"));
    assert_eq!(psy["decision"], "Deny", "{psy}");
    assert_eq!(psy["outcome"], "forbidden");
    assert_eq!(psy["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]));

    // d. Withdrawal: the next decision is a Deny again.
    let inactive = README_CONSENT.replace(r#""status": "active""#, r#""status": "inactive""#);
    assert_ne!(inactive, README_CONSENT);
    let (status, stored) = put(inactive);
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], 2);
    assert_eq!(stored["status"], "inactive");
    let after = post(&quick_start("is-authorized-treatment.json"));
    assert_eq!(after["decision"], "Deny", "{after}");
    assert_eq!(after["outcome"], "not_permitted");

    // The README's token is the only one that works.
    let (status, _) = server.send(
        "PUT",
        "/v1/consents/c-100",
        Some(("application/json", README_CONSENT.to_owned())),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 401);
}

#[test]
fn bundled_pack_explains_denials_and_attaches_obligations() {
    let server = bundled();
    // No consent: no legal basis, and the answer says so.
    let (status, psy) = server.post("/v1/is_authorized", &weber_reads("psy-1"));
    assert_eq!(status, 200, "{psy}");
    assert_eq!(psy["outcome"], "not_permitted");
    assert_eq!(psy["diagnostics"]["reason"], json!([]));
    assert!(psy["summary"].as_str().is_some_and(|s| s.starts_with("denied")), "{psy}");

    let (_, glass) = server.post("/v1/is_authorized", &ali_breaks_the_glass("psy-1"));
    assert_eq!(glass["decision"], "Allow", "{glass}");
    assert_eq!(obligation_ids(&glass), ["notify-patient", "audit-priority"]);

    // Breaking the glass from outside the group is forbidden, naming the rule.
    let (_, outsider) = server.post(
        "/v1/is_authorized",
        &cedar_request(
            "Practitioner::\"dr-weber\"",
            "Action::\"read\"",
            "Record::\"obs-1\"",
            json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
        ),
    );
    assert_eq!(outsider["outcome"], "forbidden", "{outsider}");
    assert_eq!(outsider["diagnostics"]["reason"], json!(["break-glass-needs-authorisation"]));

    let (_, no_purpose) = server.post(
        "/v1/is_authorized",
        &cedar_request("Practitioner::\"dr-weber\"", "Action::\"read\"", "Record::\"obs-1\"", json!({})),
    );
    assert_eq!(no_purpose["decision"], "Deny");
    assert_eq!(no_purpose["diagnostics"]["reason"], json!(["purpose-required"]));

    // With the consent, the PSY exclusion is the reason.
    let (status, _) = put_consent(&server, "c-100", &readme_consent("active"));
    assert_eq!(status, 201);
    let (_, psy) = server.post("/v1/is_authorized", &weber_reads("psy-1"));
    assert_eq!(psy["outcome"], "forbidden", "{psy}");
    assert_eq!(psy["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]));
}

#[test]
fn bad_input_gets_a_precise_4xx_and_the_server_keeps_serving() {
    let mut server = bundled();
    let good = ali_breaks_the_glass("obs-1");
    let cases = [
        (
            json!({"principal": "dr-weber", "action": "Action::\"read\"", "resource": "Record::\"obs-1\""}),
            400,
            "principal",
        ),
        (
            json!({"principal": "Practitioner::\"a\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": 7}}),
            422,
            "context",
        ),
        (
            json!({"principal": "Practitioner::\"a\"", "action": "Action::\"fly\"", "resource": "Record::\"obs-1\""}),
            422,
            "action",
        ),
        (
            json!({"principal": "Practitioner::\"a\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": []}),
            400,
            "context",
        ),
        (
            json!({"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"",
                   "context": {"purpose": "BTG", "justification": "x", "now": "2026-01-01T00:00:00Z"}}),
            400,
            "context.now",
        ),
    ];
    for (body, expected_status, field) in cases {
        let (status, answer) = server.post("/v1/is_authorized", &body);
        assert_eq!(status, expected_status, "{body} -> {answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(answer["message"].as_str().unwrap().starts_with(field), "{answer}");
        let (status, _) = server.post("/v1/is_authorized", &good);
        assert_eq!(status, 200);
    }
    let (status, answer) =
        server.send("POST", "/v1/is_authorized", Some(("text/plain", good.to_string())), None);
    assert_eq!((status, answer["error"].as_str()), (415, Some("unsupported_media_type")));
    let (status, answer) =
        server.send("POST", "/v1/is_authorized", Some(("application/json", "{".into())), None);
    assert_eq!((status, answer["error"].as_str()), (400, Some("invalid_request")));
    let (status, answer) = server.post_announcing_length("/v1/is_authorized", 2 * 1024 * 1024);
    assert_eq!((status, answer["error"].as_str()), (413, Some("payload_too_large")), "{answer}");
    assert!(server.is_running());
    assert_eq!(server.post("/v1/is_authorized", &good).1["decision"], "Allow");
}

#[test]
fn batch_answers_in_order_and_names_its_limit() {
    let server = Server::start(&repo_root().join("policies"), &["--max-batch", "3"]);
    let allow = ali_breaks_the_glass("obs-1");
    let deny = weber_reads("obs-2");
    let (status, body) = server.post("/v1/is_authorized/batch", &json!({"requests": [allow, deny, allow]}));
    assert_eq!(status, 200);
    let decisions: Vec<&str> =
        body["responses"].as_array().unwrap().iter().map(|r| r["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["Allow", "Deny", "Allow"]);
    let (status, body) =
        server.post("/v1/is_authorized/batch", &json!({"requests": [allow, allow, allow, allow]}));
    assert_eq!(status, 413);
    assert_eq!(body["error"], "batch_too_large");
    assert!(body["message"].as_str().unwrap().contains("limit of 3"), "{body}");
}

#[test]
fn authzen_evaluation_and_metadata() {
    let server = bundled();
    let (status, stored) = put_consent(&server, "c-100", &readme_consent("active"));
    assert_eq!(status, 201, "{stored}");
    let (status, body) = server.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "Practitioner", "id": "dr-weber"}, "action": {"name": "read"},
                "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "TREAT"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], true);
    assert_eq!(body["context"]["reason"]["policies"][0]["policy"], "consent/c-100/v1/root");
    assert!(body["context"]["reason"]["summary"].as_str().is_some_and(|s| s.contains("c-100")), "{body}");
    let (_, batch) = server.post(
        "/access/v1/evaluations",
        &json!({"subject": {"type": "Practitioner", "id": "dr-weber"}, "action": {"name": "read"}, "context": {"purpose": "TREAT"},
                "evaluations": [{"resource": {"type": "Record", "id": "obs-1"}}, {"resource": {"type": "Record", "id": "obs-2"}},
                                {"resource": {"type": "Record", "id": "obs-1"}}],
                "options": {"evaluations_semantic": "deny_on_first_deny"}}),
    );
    let decisions: Vec<bool> =
        batch["evaluations"].as_array().unwrap().iter().map(|e| e["decision"].as_bool().unwrap()).collect();
    assert_eq!(decisions, [true, false]);
    let (status, meta) = server.get("/.well-known/authzen-configuration");
    assert_eq!(status, 200);
    assert_eq!(meta["access_evaluation_endpoint"], format!("{}/access/v1/evaluation", server.url));
}

#[test]
fn admin_routes_need_the_token_and_changes_apply_to_the_next_decision() {
    let server = Server::start_managed_pack(&[]);
    assert_eq!(server.get("/v1/policies").0, 401);
    assert_eq!(server.send("GET", "/v1/policies", None, Some("wrong")).0, 401);
    let consent = readme_consent("active").to_string();
    assert_eq!(
        server.send("PUT", "/v1/consents/c-100", Some(("application/json", consent.clone())), None).0,
        401
    );
    assert_eq!(
        server.send("PUT", "/v1/consents/c-100", Some(("application/json", consent)), Some("wrong")).0,
        401
    );
    assert_eq!(server.send("GET", "/v1/consents/c-100", None, Some(ADMIN_TOKEN)).0, 404);
    let request = weber_reads("obs-1");
    assert_eq!(decide(&server, &request), ("Deny".to_owned(), "not_permitted".to_owned()));
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Allow");
    let patch = json!({"upsert": [{"uid": {"type": "Practitioner", "id": "dr-weber"}, "attrs": {"role": "physician"}, "parents": []}]});
    let (status, body) = patch_entities(&server, &patch);
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Deny");
    let (status, body) = server.send(
        "PUT",
        "/v1/policies",
        Some(("text/plain", "permit(principal, action, resource) when { principal.nope };".into())),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "invalid_policies");
    let (status, _) = server.send(
        "PUT",
        "/v1/policies",
        Some(("text/plain", "@id(\"all\") permit(principal, action, resource);".into())),
        Some(ADMIN_TOKEN),
    );
    assert_eq!(status, 200);
    assert_eq!(server.post("/v1/is_authorized", &request).1["diagnostics"]["reason"], json!(["all"]));
}

//! The sidecar with the bundled policy pack, as the README shows it.

use serde_json::json;

use crate::support::{ADMIN_TOKEN, Server, cedar_request, repo_root};

fn bundled() -> Server {
    Server::start(&repo_root().join("policies"), &[])
}

#[test]
fn readme_example_allows_a_clinician_to_read_for_treatment() {
    let server = bundled();
    let (status, body) = server.post(
        "/v1/is_authorized",
        &cedar_request(
            "Practitioner::\"dr-weber\"",
            "Action::\"read\"",
            "Record::\"obs-1\"",
            json!({"purpose": "TREAT"}),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "Allow");
    assert_eq!(body["diagnostics"]["reason"], json!(["treatment"]));
    assert!(body["decision_id"].as_str().is_some_and(|id| id.len() == 36));
}

#[test]
fn bundled_pack_explains_denials_and_attaches_obligations() {
    let server = bundled();
    let (_, psy) = server.post(
        "/v1/is_authorized",
        &cedar_request(
            "Practitioner::\"dr-weber\"",
            "Action::\"read\"",
            "Record::\"psy-1\"",
            json!({"purpose": "TREAT"}),
        ),
    );
    assert_eq!(psy["decision"], "Deny");
    assert_eq!(psy["outcome"], "forbidden");
    assert_eq!(psy["diagnostics"]["reason"], json!(["psychiatry-needs-specialist"]));

    let (_, glass) = server.post(
        "/v1/is_authorized",
        &cedar_request(
            "Practitioner::\"dr-ali\"",
            "Action::\"read\"",
            "Record::\"psy-1\"",
            json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
        ),
    );
    assert_eq!(glass["decision"], "Allow");
    let obligations: Vec<&str> =
        glass["obligations"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(obligations, ["notify-patient", "audit-priority"]);

    let (_, no_purpose) = server.post(
        "/v1/is_authorized",
        &cedar_request("Practitioner::\"dr-weber\"", "Action::\"read\"", "Record::\"obs-1\"", json!({})),
    );
    assert_eq!(no_purpose["decision"], "Deny");
    assert_eq!(no_purpose["diagnostics"]["reason"], json!(["purpose-required"]));
}

#[test]
fn bad_input_gets_a_precise_4xx_and_the_server_keeps_serving() {
    let mut server = bundled();
    let good = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "TREAT"}),
    );
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
    let allow = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "TREAT"}),
    );
    let deny = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-2\"",
        json!({"purpose": "TREAT"}),
    );
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
    let (status, body) = server.post(
        "/access/v1/evaluation",
        &json!({"subject": {"type": "Practitioner", "id": "dr-weber"}, "action": {"name": "read"},
                "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "TREAT"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], true);
    assert_eq!(body["context"]["reason"]["policies"][0]["policy"], "treatment");
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
    let server = bundled();
    assert_eq!(server.get("/v1/policies").0, 401);
    assert_eq!(server.send("GET", "/v1/policies", None, Some("wrong")).0, 401);
    let request = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "TREAT"}),
    );
    assert_eq!(server.post("/v1/is_authorized", &request).1["decision"], "Allow");
    let patch = json!({"upsert": [{"uid": {"type": "Practitioner", "id": "dr-weber"}, "attrs": {"role": "physician"}, "parents": []}]});
    let (status, body) = server.send(
        "PATCH",
        "/v1/entities",
        Some(("application/json", patch.to_string())),
        Some(ADMIN_TOKEN),
    );
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

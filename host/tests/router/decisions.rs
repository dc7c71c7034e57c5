//! `/v1/is_authorized`: decisions, reasons, obligations and request entities.

use consentry_engine::{DecisionOptions, RequestEntities};

use super::*;

#[tokio::test]
async fn allow_names_determining_policy_and_carries_its_obligations_and_advice() {
    let app = app().await;
    let answer = is_authorized(&app, &cedar_agent("alice", "read", "r1")).await;
    assert_eq!(answer["decision"], "Allow");
    assert_eq!(answer["outcome"], "allow");
    assert_eq!(answer["diagnostics"]["reason"], json!(["doctors-read"]));
    assert_eq!(answer["diagnostics"]["errors"], json!([]));
    assert_eq!(
        answer["explanation"],
        json!([{"policy": "doctors-read", "reason": "doctors may read patient records"}])
    );
    assert_eq!(
        answer["obligations"],
        json!([
            {"id": "audit-log", "kind": "obligation", "policy": "doctors-read"},
            {"id": "notify-patient", "kind": "obligation", "policy": "doctors-read"},
            {"id": "show-privacy-banner", "kind": "advice", "policy": "doctors-read"},
        ])
    );
    let summary = answer["summary"].as_str().expect("summary is a string");
    assert!(summary.contains("doctors-read"), "the summary names the policy: {summary}");
    assert!(summary.contains("doctors may read patient records"), "and its reason: {summary}");
}

#[tokio::test]
async fn satisfied_forbid_denies_as_forbidden_naming_the_forbid_without_permit_obligations() {
    let app = app().await;
    // bob is a doctor (doctors-read holds) but lacks clearance for the sensitive r2.
    let answer = is_authorized(&app, &cedar_agent("bob", "read", "r2")).await;
    assert_eq!(answer["decision"], "Deny");
    assert_eq!(answer["outcome"], "forbidden");
    assert_eq!(answer["diagnostics"]["reason"], json!(["sensitive-needs-clearance"]));
    assert_eq!(answer["obligations"], json!([]));
    let summary = answer["summary"].as_str().expect("summary is a string");
    assert!(summary.contains("sensitive-needs-clearance"), "the summary names the forbid: {summary}");
    assert!(summary.contains("sensitive records need clearance 3"), "and its reason: {summary}");
}

#[tokio::test]
async fn no_satisfied_permit_denies_as_not_permitted_with_no_reasons() {
    let app = app().await;
    let answer = is_authorized(&app, &cedar_agent("carol", "read", "r1")).await;
    assert_eq!(answer["decision"], "Deny");
    assert_eq!(answer["outcome"], "not_permitted");
    assert_eq!(answer["diagnostics"]["reason"], json!([]));
    assert_eq!(answer["obligations"], json!([]));
    let summary = answer["summary"].as_str().expect("summary is a string");
    assert!(summary.starts_with("denied"), "{summary}");
    let allowed = is_authorized(&app, &cedar_agent("alice", "read", "r1")).await;
    assert_ne!(allowed["summary"], answer["summary"]);
}

#[tokio::test]
async fn context_matching_the_schema_reaches_policies() {
    let app = app().await;
    let mut body = cedar_agent("carol", "read", "r1");
    body["context"] = json!({"emergency": true});
    let answer = is_authorized(&app, &body).await;
    assert_eq!(answer["outcome"], "allow");
    assert_eq!(answer["diagnostics"]["reason"], json!(["break-glass"]));
    assert_eq!(
        answer["obligations"],
        json!([{"id": "notify-dpo", "kind": "obligation", "policy": "break-glass"}])
    );
}

#[tokio::test]
async fn decision_id_is_a_uuid_fresh_for_every_call() {
    let app = app().await;
    let body = cedar_agent("alice", "read", "r1");
    let first = is_authorized(&app, &body).await;
    let second = is_authorized(&app, &body).await;
    let first_id = uuid::Uuid::parse_str(first["decision_id"].as_str().expect("decision_id is a string"))
        .expect("decision_id is a UUID");
    let second_id = uuid::Uuid::parse_str(second["decision_id"].as_str().expect("decision_id is a string"))
        .expect("decision_id is a UUID");
    assert_ne!(first_id, second_id);
}

#[tokio::test]
async fn uid_as_cedar_text_and_as_type_id_object_decide_alike() {
    let app = app().await;
    for (principal, resource) in [("alice", "r1"), ("bob", "r2"), ("carol", "r1")] {
        let text = is_authorized(&app, &cedar_agent(principal, "read", resource)).await;
        let object = is_authorized(
            &app,
            &json!({
                "principal": {"type": "User", "id": principal},
                "action": {"type": "Action", "id": "read"},
                "resource": {"type": "Record", "id": resource},
            }),
        )
        .await;
        assert_eq!(text["decision"], object["decision"], "{principal} on {resource}");
        assert_eq!(text["outcome"], object["outcome"], "{principal} on {resource}");
        assert_eq!(text["diagnostics"], object["diagnostics"], "{principal} on {resource}");
        assert_eq!(text["obligations"], object["obligations"], "{principal} on {resource}");
    }
}

#[tokio::test]
async fn request_entities_may_add_to_stored_ones_but_not_change_them() {
    let app = app().await;
    // carol is stored with no parents: declaring her a doctor would change a stored fact.
    let mut body = cedar_agent("carol", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "carol"},
        "attrs": {"department": "cardiology", "clearance": 5},
        "parents": [{"type": "Role", "id": "doctor"}],
    }]);
    let reply = send(&app.router, json_request(Method::POST, "/v1/is_authorized", &body)).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    assert_eq!(reply.body["error"], "stored_fact_conflict", "{}", reply.body);
    assert_eq!(reply.body["field"], "entities[0].parents", "{}", reply.body);
    // Sent exactly as stored, she is accepted and decided as usual.
    let stored = stored_entities(&app).await;
    let carol = stored.as_array().unwrap().iter().find(|e| e["uid"]["id"] == "carol").unwrap().clone();
    body["entities"] = json!([carol]);
    assert_eq!(is_authorized(&app, &body).await["outcome"], "not_permitted");
}

#[tokio::test]
async fn with_replace_request_entities_shadow_stored_ones_for_that_request_only() {
    let replace =
        DecisionOptions { request_entities: RequestEntities::Replace, ..DecisionOptions::default() };
    let app = app_with(
        Settings { decisions: replace, ..settings() },
        Auth::with_admin_token(Some(TOKEN)),
        DEFAULT_MAX_BODY,
    )
    .await;
    let mut body = cedar_agent("carol", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "carol"},
        "attrs": {"department": "cardiology", "clearance": 5},
        "parents": [{"type": "Role", "id": "doctor"}],
    }]);
    let shadowed = is_authorized(&app, &body).await;
    assert_eq!(shadowed["outcome"], "allow");
    assert_eq!(shadowed["diagnostics"]["reason"], json!(["doctors-read"]));

    // And the other way: a request entity can take a stored doctor out of the group.
    let mut body = cedar_agent("alice", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "alice"},
        "attrs": {"department": "cardiology", "clearance": 5},
        "parents": [],
    }]);
    assert_eq!(is_authorized(&app, &body).await["outcome"], "not_permitted");

    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
    let stored = stored_entities(&app).await;
    let carol = stored.as_array().unwrap().iter().find(|e| e["uid"]["id"] == "carol").unwrap();
    assert_eq!(carol["parents"], json!([]), "the store itself is untouched");
}

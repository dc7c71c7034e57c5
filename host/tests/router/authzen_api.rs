//! The AuthZEN evaluation, evaluations and metadata endpoints.

use consentry_engine::{DecisionOptions, RequestEntities};

use super::*;

#[tokio::test]
async fn authzen_evaluation_answers_true_and_false_with_reasons() {
    let app = app().await;
    let allowed = evaluation(&app, &authzen("alice", "read", "r1")).await;
    assert_eq!(allowed["decision"], true);
    assert_eq!(allowed["context"]["reason"]["outcome"], "allow");
    assert_eq!(allowed["context"]["reason"]["policies"][0]["policy"], "doctors-read");
    assert_eq!(allowed["context"]["obligations"].as_array().map(Vec::len), Some(3));
    assert!(uuid::Uuid::parse_str(allowed["context"]["decision_id"].as_str().unwrap()).is_ok());

    let forbidden = evaluation(&app, &authzen("bob", "read", "r2")).await;
    assert_eq!(forbidden["decision"], false);
    assert_eq!(forbidden["context"]["reason"]["outcome"], "forbidden");

    let not_permitted = evaluation(&app, &authzen("carol", "read", "r1")).await;
    assert_eq!(not_permitted["decision"], false);
    assert_eq!(not_permitted["context"]["reason"]["outcome"], "not_permitted");

    // The reason's summary is the same sentence /v1/is_authorized gives.
    for (subject, resource) in [("alice", "r1"), ("bob", "r2"), ("carol", "r1")] {
        let answer = evaluation(&app, &authzen(subject, "read", resource)).await;
        let cedar_agent = is_authorized(&app, &cedar_agent(subject, "read", resource)).await;
        assert!(answer["context"]["reason"]["summary"].as_str().is_some_and(|s| !s.is_empty()), "{answer}");
        assert_eq!(answer["context"]["reason"]["summary"], cedar_agent["summary"], "{subject} on {resource}");
    }

    // A full Cedar action uid is accepted as the action name.
    let full = evaluation(&app, &authzen("alice", "Action::\"read\"", "r1")).await;
    assert_eq!(full["decision"], true);
}

#[tokio::test]
async fn authzen_properties_may_restate_but_not_change_stored_attributes() {
    let app = app().await;
    let mut body = authzen("bob", "read", "r2");
    body["subject"]["properties"] = json!({"clearance": 4});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stored_fact_conflict",
        Some("subject.properties.clearance"),
    );
    body["subject"]["properties"] = json!({"clearance": 1, "department": "oncology"});
    assert_eq!(evaluation(&app, &body).await["decision"], false, "the stored values, restated");
    let mut body = authzen("bob", "read", "r2");
    body["resource"]["properties"] = json!({"sensitive": false});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "stored_fact_conflict",
        Some("resource.properties.sensitive"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn with_replace_authzen_subject_properties_overlay_stored_attributes_for_that_request_only() {
    let replace =
        DecisionOptions { request_entities: RequestEntities::Replace, ..DecisionOptions::default() };
    let settings = Settings { decisions: replace, ..settings() };
    let app = app_with(settings, Auth::with_admin_token(Some(TOKEN)), DEFAULT_MAX_BODY).await;
    assert_eq!(evaluation(&app, &authzen("bob", "read", "r2")).await["decision"], false);

    let mut body = authzen("bob", "read", "r2");
    body["subject"]["properties"] = json!({"clearance": 4});
    let overlaid = evaluation(&app, &body).await;
    assert_eq!(overlaid["decision"], true, "clearance 4 lifts the forbid; stored parents still apply");
    assert_eq!(overlaid["context"]["reason"]["policies"][0]["policy"], "doctors-read");

    assert_eq!(evaluation(&app, &authzen("bob", "read", "r2")).await["decision"], false);
    let stored = stored_entities(&app).await;
    let bob = stored.as_array().unwrap().iter().find(|e| e["uid"]["id"] == "bob").unwrap();
    assert_eq!(bob["attrs"]["clearance"], 1);

    // Resource properties work the same way.
    let mut body = authzen("bob", "read", "r2");
    body["resource"]["properties"] = json!({"sensitive": false});
    assert_eq!(evaluation(&app, &body).await["decision"], true);
    assert_eq!(evaluation(&app, &authzen("bob", "read", "r2")).await["decision"], false);
}

#[tokio::test]
async fn authzen_properties_not_fitting_schema_are_422_naming_them() {
    let app = app().await;
    let mut body = authzen("bob", "read", "r2");
    body["subject"]["properties"] = json!({"clearance": "high"});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("subject.properties"));
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_action_properties_are_refused_with_400() {
    let app = app().await;
    let mut body = authzen("alice", "read", "r1");
    body["action"]["properties"] = json!({"method": "GET"});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("action.properties"));
    still_answers(&app).await;

    // Empty properties are harmless.
    body["action"]["properties"] = json!({});
    assert_eq!(evaluation(&app, &body).await["decision"], true);
}

#[tokio::test]
async fn authzen_unparsable_subject_type_is_400_naming_it() {
    let app = app().await;
    let mut body = authzen("alice", "read", "r1");
    body["subject"]["type"] = json!("not a type");
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("subject.type"));
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_batch_items_take_top_level_defaults_and_override_them() {
    let app = app().await;
    let body = json!({
        "subject": {"type": "User", "id": "alice"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "r1"},
        "evaluations": [
            {},
            {"subject": {"type": "User", "id": "carol"}},
            {"subject": {"type": "User", "id": "bob"}, "resource": {"type": "Record", "id": "r2"}},
            {"action": {"name": "write"}, "resource": {"type": "Record", "id": "r2"}},
        ],
    });
    let settings = Settings { max_batch: 10, public_url: None, ..Settings::default() };
    let app_10 = app_with(settings, Auth::with_admin_token(Some(TOKEN)), DEFAULT_MAX_BODY).await;
    let answers = evaluations(&app_10, &body).await;
    assert_eq!(decisions(&answers), [true, false, false, true]);
    assert_eq!(answers[2]["context"]["reason"]["outcome"], "forbidden");
    assert_eq!(answers[3]["context"]["reason"]["policies"][0]["policy"], "same-department-write");

    // A default context applies unless an item gives its own.
    let body = json!({
        "subject": {"type": "User", "id": "carol"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "r1"},
        "context": {"emergency": true},
        "evaluations": [{}, {"context": {"emergency": false}}],
    });
    assert_eq!(decisions(&evaluations(&app, &body).await), [true, false]);
}

#[tokio::test]
async fn authzen_execute_all_evaluates_every_item() {
    let app = app().await;
    let body = json!({
        "action": {"name": "read"},
        "evaluations": [
            authzen("carol", "read", "r1"),
            authzen("alice", "read", "r1"),
            authzen("bob", "read", "r2"),
        ],
        "options": {"evaluations_semantic": "execute_all"},
    });
    assert_eq!(decisions(&evaluations(&app, &body).await), [false, true, false]);
    // execute_all is the default.
    let mut body = body;
    body.as_object_mut().unwrap().remove("options");
    assert_eq!(decisions(&evaluations(&app, &body).await), [false, true, false]);
}

#[tokio::test]
async fn authzen_deny_on_first_deny_stops_after_the_first_deny() {
    let app = app().await;
    let body = json!({
        "evaluations": [
            authzen("alice", "read", "r1"),
            authzen("carol", "read", "r1"),
            authzen("alice", "read", "r1"),
        ],
        "options": {"evaluations_semantic": "deny_on_first_deny"},
    });
    let answers = evaluations(&app, &body).await;
    assert_eq!(answers.len(), 2);
    assert_eq!(decisions(&answers), [true, false]);
}

#[tokio::test]
async fn authzen_permit_on_first_permit_stops_after_the_first_permit() {
    let app = app().await;
    let body = json!({
        "evaluations": [
            authzen("carol", "read", "r1"),
            authzen("alice", "read", "r1"),
            authzen("carol", "read", "r1"),
        ],
        "options": {"evaluations_semantic": "permit_on_first_permit"},
    });
    let answers = evaluations(&app, &body).await;
    assert_eq!(answers.len(), 2);
    assert_eq!(decisions(&answers), [false, true]);
}

#[tokio::test]
async fn authzen_bad_batch_item_gets_its_own_error_and_the_others_are_still_evaluated() {
    let app = app().await;
    let mut bad_type = authzen("alice", "read", "r1");
    bad_type["subject"]["type"] = json!("not a type");
    let body = json!({
        "evaluations": [
            authzen("alice", "read", "r1"),
            bad_type,
            authzen("alice", "delete", "r1"),
        ],
    });
    let answers = evaluations(&app, &body).await;
    assert_eq!(answers.len(), 3);
    assert_eq!(decisions(&answers), [true, false, false]);
    assert!(answers[0]["context"].get("error").is_none());

    let error = &answers[1]["context"]["error"];
    assert_error_body(error, "invalid_request", Some("evaluations[1].subject.type"));
    assert_eq!(error["status"], 400);
    let error = &answers[2]["context"]["error"];
    assert_error_body(error, "schema_mismatch", Some("evaluations[2].action"));
    assert_eq!(error["status"], 422);

    // A missing part with no default is an item error too, and the next item still runs.
    let body = json!({
        "evaluations": [
            {"subject": {"type": "User", "id": "alice"}, "action": {"name": "read"}},
            authzen("alice", "read", "r1"),
        ],
    });
    let answers = evaluations(&app, &body).await;
    assert_eq!(decisions(&answers), [false, true]);
    assert_error_body(&answers[0]["context"]["error"], "invalid_request", Some("evaluations[0].resource"));
}

#[tokio::test]
async fn authzen_evaluations_without_array_answer_as_single_evaluation() {
    let app = app().await;
    let reply = send(&app, post("/access/v1/evaluations", &authzen("alice", "read", "r1"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["decision"], true);
    assert!(reply.body.get("evaluations").is_none(), "{}", reply.text);
    assert_eq!(reply.body["context"]["reason"]["outcome"], "allow");

    let reply = send(&app, post("/access/v1/evaluations", &authzen("carol", "read", "r1"))).await;
    assert_eq!(reply.body["decision"], false);

    // Without a subject and without items, the missing part is named.
    let reply = send(&app, post("/access/v1/evaluations", &json!({"action": {"name": "read"}}))).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("subject"));
}

#[tokio::test]
async fn authzen_batch_over_max_batch_is_413() {
    let app = app().await;
    let body = json!({"evaluations": vec![authzen("alice", "read", "r1"); 4]});
    let reply = send(&app, post("/access/v1/evaluations", &body)).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", None);
    assert!(reply.body["message"].as_str().unwrap().contains("limit of 3"));
}

#[tokio::test]
async fn authzen_metadata_is_derived_from_the_host_header() {
    let app = app().await;
    let mut request = get("/.well-known/authzen-configuration");
    request.headers_mut().insert(header::HOST, "pdp.clinic.test:8180".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({
            "policy_decision_point": "http://pdp.clinic.test:8180",
            "access_evaluation_endpoint": "http://pdp.clinic.test:8180/access/v1/evaluation",
            "access_evaluations_endpoint": "http://pdp.clinic.test:8180/access/v1/evaluations",
            "search_subject_endpoint": "http://pdp.clinic.test:8180/access/v1/search/subject",
            "search_resource_endpoint": "http://pdp.clinic.test:8180/access/v1/search/resource",
            "search_action_endpoint": "http://pdp.clinic.test:8180/access/v1/search/action",
        })
    );

    let reply = send(&app, get("/.well-known/authzen-configuration")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("Host"));
}

#[tokio::test]
async fn authzen_metadata_prefers_public_url_over_host() {
    let settings = Settings {
        max_batch: 3,
        public_url: Some("https://pdp.clinic.example/".into()),
        ..Settings::default()
    };
    let app = app_with(settings, Auth::with_admin_token(Some(TOKEN)), DEFAULT_MAX_BODY).await;
    let mut request = get("/.well-known/authzen-configuration");
    request.headers_mut().insert(header::HOST, "internal:8180".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({
            "policy_decision_point": "https://pdp.clinic.example",
            "access_evaluation_endpoint": "https://pdp.clinic.example/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.clinic.example/access/v1/evaluations",
            "search_subject_endpoint": "https://pdp.clinic.example/access/v1/search/subject",
            "search_resource_endpoint": "https://pdp.clinic.example/access/v1/search/resource",
            "search_action_endpoint": "https://pdp.clinic.example/access/v1/search/action",
        })
    );
}

#[tokio::test]
async fn finding_15_authzen_metadata_refuses_a_host_it_cannot_validate() {
    let app = app().await;
    for host in ["evil.example/phish?", "user@evil.example", "evil.example:99999", "<b>x</b>", "[::1"] {
        let mut request = get("/.well-known/authzen-configuration");
        request.headers_mut().insert(header::HOST, host.parse().unwrap());
        let reply = send(&app, request).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("Host"));
    }
    let mut request = get("/.well-known/authzen-configuration");
    request.headers_mut().insert(header::HOST, "[::1]:8180".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.body["policy_decision_point"], "http://[::1]:8180", "{}", reply.text);
}

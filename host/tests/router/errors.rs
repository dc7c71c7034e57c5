//! `/v1/is_authorized`: every kind of bad input, and the server still answering after it.

use super::*;

#[tokio::test]
async fn unparsable_principal_uid_is_400_naming_principal() {
    let app = app().await;
    let mut body = cedar_agent("alice", "read", "r1");
    body["principal"] = json!("alice");
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("principal"));
    still_answers(&app).await;

    body["principal"] = json!(42);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("principal"));
    still_answers(&app).await;
}

#[tokio::test]
async fn context_of_wrong_json_type_is_400_naming_context() {
    let app = app().await;
    for context in [json!("emergency"), json!([true]), json!(7)] {
        let mut body = cedar_agent("alice", "read", "r1");
        body["context"] = context;
        let reply = send(&app, post("/v1/is_authorized", &body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context"));
        still_answers(&app).await;
    }
}

#[tokio::test]
async fn unknown_body_field_is_400_naming_it() {
    let app = app().await;
    let mut body = cedar_agent("alice", "read", "r1");
    body["principle"] = json!("User::\"alice\"");
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("principle"));
    still_answers(&app).await;

    let mut body = authzen("alice", "read", "r1");
    body["subject"]["role"] = json!("doctor");
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("subject.role"));
    still_answers(&app).await;

    let reply =
        send(&app, admin(json_request(Method::PATCH, "/v1/entities", &json!({"upsert": [], "remove": []}))))
            .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("remove"));
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_batch_unknown_top_level_field_is_400_naming_it_in_the_message() {
    let app = app().await;
    let mut body = authzen("alice", "read", "r1");
    body["evaluations"] = json!([{}]);
    body["semantics"] = json!("execute_all");
    let reply = send(&app, post("/access/v1/evaluations", &body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.body["error"], "invalid_request");
    assert!(reply.body["message"].as_str().unwrap().contains("`semantics`"), "{}", reply.text);
    still_answers(&app).await;
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let app = app().await;
    for text in ["", "[1, 2", "nul"] {
        let reply =
            send(&app, request(Method::POST, "/v1/is_authorized", Some("application/json"), text)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
        assert!(
            reply.body["message"].as_str().unwrap().starts_with("invalid JSON body"),
            "{text:?}: {}",
            reply.text
        );
        still_answers(&app).await;
    }
    // A syntax error inside a member's value is blamed on that member.
    let text = r#"{"principal": "User::\"alice\"", "action": }"#;
    let reply = send(&app, request(Method::POST, "/v1/is_authorized", Some("application/json"), text)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("action"));
    still_answers(&app).await;
}

/// Regression: serde_path_to_error renders an unknown position as `?`, and
/// the answer once blamed a field named `?`.
#[tokio::test]
async fn malformed_json_is_not_blamed_on_a_field_named_question_mark() {
    let app = app().await;
    for text in ["{not json", r#"{"principal": "User::\"alice\"""#] {
        let reply =
            send(&app, request(Method::POST, "/v1/is_authorized", Some("application/json"), text)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
        still_answers(&app).await;
    }
}

/// Regression: media types are case-insensitive (RFC 9110 section 8.3.1),
/// but `Application/JSON` and `Text/Plain` were once refused with 415.
#[tokio::test]
async fn content_type_is_matched_case_insensitively() {
    let app = app().await;
    let body = cedar_agent("alice", "read", "r1").to_string();
    let reply = send(&app, request(Method::POST, "/v1/is_authorized", Some("Application/JSON"), body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let text = "permit(principal, action, resource);";
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("Text/Plain"), text))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// Regression: Cedar keeps the specific reason (`in attribute `clearance`
/// on `User::"carol"`, type mismatch ...`) in the error's `source()`, which
/// was once dropped, so the answer named neither attribute nor type. The
/// answer is a 422 naming the entity's index, and the server keeps serving.
#[tokio::test]
async fn entity_not_fitting_schema_is_explained_down_to_the_attribute() {
    let app = app().await;
    let mut body = cedar_agent("carol", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "carol"},
        "attrs": {"department": "cardiology", "clearance": "top"},
        "parents": [],
    }]);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("entities[0]"));
    assert!(reply.body["message"].as_str().unwrap().contains("clearance"), "{}", reply.text);

    let patch = json!({"upsert": [body["entities"][0].clone()]});
    let reply = send(&app, admin(json_request(Method::PATCH, "/v1/entities", &patch))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    assert!(reply.body["message"].as_str().unwrap().contains("clearance"), "{}", reply.text);
    still_answers(&app).await;
}

#[tokio::test]
async fn missing_or_non_json_content_type_is_415() {
    let app = app().await;
    let body = cedar_agent("alice", "read", "r1").to_string();
    for content_type in [None, Some("text/plain"), Some("application/x-www-form-urlencoded")] {
        let reply = send(&app, request(Method::POST, "/v1/is_authorized", content_type, body.clone())).await;
        assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);
        still_answers(&app).await;
    }
    // A charset parameter and `+json` types are still JSON.
    for content_type in ["application/json; charset=utf-8", "application/vnd.consentry+json"] {
        let reply =
            send(&app, request(Method::POST, "/v1/is_authorized", Some(content_type), body.clone())).await;
        assert_eq!(reply.status, StatusCode::OK, "{content_type}: {}", reply.text);
    }
}

#[tokio::test]
async fn body_over_max_body_is_413_payload_too_large() {
    let app = app_with(settings(), Auth::with_admin_token(Some(TOKEN)), 1024).await;
    let mut body = cedar_agent("alice", "read", "r1");
    body["context"] = json!({"padding": "x".repeat(2048)});
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    still_answers(&app).await;

    // Also when the client declares the length up front.
    let text = body.to_string();
    let mut declared = request(Method::POST, "/v1/is_authorized", Some("application/json"), text.clone());
    declared.headers_mut().insert(header::CONTENT_LENGTH, text.len().into());
    let reply = send(&app, declared).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None);
    still_answers(&app).await;
}

#[tokio::test]
async fn context_not_fitting_schema_is_422_schema_mismatch_on_context() {
    let app = app().await;
    for context in [json!({"emergency": "yes"}), json!({"ward": "icu"})] {
        let mut body = cedar_agent("alice", "read", "r1");
        body["context"] = context.clone();
        let reply = send(&app, post("/v1/is_authorized", &body)).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("context"));
        still_answers(&app).await;
    }
}

/// The server's clock is the only source of the evaluation time: a `now`
/// in the context is refused even where the schema does not declare one.
#[tokio::test]
async fn caller_supplied_now_in_context_is_400_naming_context_now() {
    let app = app().await;
    for now in [json!("2026-01-01T00:00:00Z"), json!(true), json!(null)] {
        let mut body = cedar_agent("alice", "read", "r1");
        body["context"] = json!({"now": now});
        let reply = send(&app, post("/v1/is_authorized", &body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
        still_answers(&app).await;
    }
    let mut body = authzen("alice", "read", "r1");
    body["context"] = json!({"emergency": true, "now": "2026-01-01"});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
    still_answers(&app).await;
}

#[tokio::test]
async fn undeclared_action_is_422_naming_action() {
    let app = app().await;
    let reply = send(&app, post("/v1/is_authorized", &cedar_agent("alice", "delete", "r1"))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("action"));
    still_answers(&app).await;
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = app().await;
    let reply = send(&app, post("/v1/is_authorised", &cedar_agent("alice", "read", "r1"))).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    let reply = send(&app, get("/nope")).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    still_answers(&app).await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let app = app().await;
    let reply = send(&app, get("/v1/is_authorized")).await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    still_answers(&app).await;
    let reply = send(&app, post("/healthz", &json!({}))).await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    still_answers(&app).await;
}

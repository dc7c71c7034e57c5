//! In-process tests of the HTTP router: every endpoint is driven through
//! `tower::ServiceExt::oneshot`, with no socket, over a small clinic schema
//! (doctors read records, sensitive records need clearance, break-glass in
//! an emergency). Error answers are checked for their exact status and for
//! the `{"error", "message", "field"}` body.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use consentry::auth::AdminAuth;
use consentry::http::{DEFAULT_MAX_BODY, router};
use consentry::state::{AppState, Settings};
use consentry_engine::{EntityStore, PolicyBundle, SchemaSource};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "s3cret-admin-token";

const SCHEMA: &str = r#"
entity Role;
entity User in [Role] { department: String, clearance: Long };
entity Record { department: String, sensitive: Bool };
action read appliesTo { principal: [User], resource: [Record], context: { emergency?: Bool } };
action write appliesTo { principal: [User], resource: [Record] };
"#;

const POLICIES: &str = r#"
@id("doctors-read")
@reason("doctors may read patient records")
@obligation("audit-log, notify-patient")
@advice("show-privacy-banner")
permit(principal in Role::"doctor", action == Action::"read", resource);

@id("sensitive-needs-clearance")
@reason("sensitive records need clearance 3")
forbid(principal, action, resource) when { resource.sensitive && principal.clearance < 3 };

@id("same-department-write")
permit(principal, action == Action::"write", resource) when { principal.department == resource.department };

@id("break-glass")
@obligation("notify-dpo")
permit(principal, action == Action::"read", resource) when { context has emergency && context.emergency };
"#;

fn entities() -> Value {
    json!([
        {"uid": {"type": "Role", "id": "doctor"}, "attrs": {}, "parents": []},
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": [{"type": "Role", "id": "doctor"}]},
        {"uid": {"type": "User", "id": "bob"}, "attrs": {"department": "oncology", "clearance": 1},
         "parents": [{"type": "Role", "id": "doctor"}]},
        {"uid": {"type": "User", "id": "carol"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": []},
        {"uid": {"type": "Record", "id": "r1"}, "attrs": {"department": "cardiology", "sensitive": false},
         "parents": []},
        {"uid": {"type": "Record", "id": "r2"}, "attrs": {"department": "cardiology", "sensitive": true},
         "parents": []},
    ])
}

fn state(settings: Settings, admin: AdminAuth) -> std::sync::Arc<AppState> {
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), POLICIES, &[])
        .expect("test bundle loads");
    let store = EntityStore::from_json(&entities(), bundle.schema()).expect("test entities load");
    AppState::new(bundle, store, settings, admin)
}

fn settings() -> Settings {
    Settings {
        max_batch: 3,
        public_url: None,
    }
}

/// The router most tests use: admin token set, batches of at most 3.
fn app() -> Router {
    router(
        state(settings(), AdminAuth::new(Some(TOKEN))),
        DEFAULT_MAX_BODY,
    )
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    body: Value,
    text: String,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app
        .clone()
        .oneshot(request)
        .await
        .expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body is readable")
        .to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
    Reply {
        status,
        headers,
        body,
        text,
    }
}

fn request(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).expect("valid request")
}

fn json_request(method: Method, uri: &str, body: &Value) -> Request<Body> {
    request(method, uri, Some("application/json"), body.to_string())
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    json_request(Method::POST, uri, body)
}

fn get(uri: &str) -> Request<Body> {
    request(Method::GET, uri, None, Body::empty())
}

fn with_token(mut request: Request<Body>, token: &str) -> Request<Body> {
    let value = format!("Bearer {token}")
        .parse()
        .expect("valid header value");
    request.headers_mut().insert(header::AUTHORIZATION, value);
    request
}

fn admin(request: Request<Body>) -> Request<Body> {
    with_token(request, TOKEN)
}

fn uid(kind: &str, id: &str) -> String {
    format!("{kind}::\"{id}\"")
}

fn cedar_agent(principal: &str, action: &str, resource: &str) -> Value {
    json!({
        "principal": uid("User", principal),
        "action": uid("Action", action),
        "resource": uid("Record", resource),
    })
}

/// Posts a cedar-agent request that must succeed, and returns the answer.
async fn is_authorized(app: &Router, body: &Value) -> Value {
    let reply = send(app, post("/v1/is_authorized", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

/// The `outcome` of `principal` doing `action` on `resource`.
async fn outcome(app: &Router, principal: &str, action: &str, resource: &str) -> String {
    let answer = is_authorized(app, &cedar_agent(principal, action, resource)).await;
    answer["outcome"]
        .as_str()
        .expect("outcome is a string")
        .to_owned()
}

/// A known-good request on the same router still answers 200 Allow.
async fn still_answers(app: &Router) {
    let answer = is_authorized(app, &cedar_agent("alice", "read", "r1")).await;
    assert_eq!(answer["decision"], "Allow");
}

/// Asserts an error answer: its status, JSON content type, code, a message,
/// and the field (absent when `None`). A message about a field starts with it.
fn assert_error(reply: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(reply.status, status, "body: {}", reply.text);
    let content_type = reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    assert_eq!(
        content_type,
        Some("application/json"),
        "error bodies are JSON: {}",
        reply.text
    );
    assert_error_body(&reply.body, code, field);
}

fn assert_error_body(body: &Value, code: &str, field: Option<&str>) {
    assert_eq!(body["error"], code, "body: {body}");
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("message is a string: {body}"));
    assert!(!message.is_empty(), "message is not empty: {body}");
    assert_eq!(
        body.get("field").and_then(Value::as_str),
        field,
        "body: {body}"
    );
    if let Some(field) = field {
        assert!(
            message.starts_with(field),
            "message `{message}` names field `{field}`"
        );
    }
}

async fn stored_entities(app: &Router) -> Value {
    let reply = send(app, admin(get("/v1/entities"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

fn uids(entities: &Value) -> Vec<String> {
    entities
        .as_array()
        .expect("an array of entities")
        .iter()
        .map(|e| {
            format!(
                "{}::{}",
                e["uid"]["type"].as_str().unwrap(),
                e["uid"]["id"].as_str().unwrap()
            )
        })
        .collect()
}

// ----- /v1/is_authorized: decisions -------------------------------------------------------

#[tokio::test]
async fn allow_names_determining_policy_and_carries_its_obligations_and_advice() {
    let app = app();
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
}

#[tokio::test]
async fn satisfied_forbid_denies_as_forbidden_naming_the_forbid_without_permit_obligations() {
    let app = app();
    // bob is a doctor (doctors-read holds) but lacks clearance for the sensitive r2.
    let answer = is_authorized(&app, &cedar_agent("bob", "read", "r2")).await;
    assert_eq!(answer["decision"], "Deny");
    assert_eq!(answer["outcome"], "forbidden");
    assert_eq!(
        answer["diagnostics"]["reason"],
        json!(["sensitive-needs-clearance"])
    );
    assert_eq!(answer["obligations"], json!([]));
}

#[tokio::test]
async fn no_satisfied_permit_denies_as_not_permitted_with_no_reasons() {
    let app = app();
    let answer = is_authorized(&app, &cedar_agent("carol", "read", "r1")).await;
    assert_eq!(answer["decision"], "Deny");
    assert_eq!(answer["outcome"], "not_permitted");
    assert_eq!(answer["diagnostics"]["reason"], json!([]));
    assert_eq!(answer["obligations"], json!([]));
}

#[tokio::test]
async fn context_matching_the_schema_reaches_policies() {
    let app = app();
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
    let app = app();
    let body = cedar_agent("alice", "read", "r1");
    let first = is_authorized(&app, &body).await;
    let second = is_authorized(&app, &body).await;
    let first_id = uuid::Uuid::parse_str(
        first["decision_id"]
            .as_str()
            .expect("decision_id is a string"),
    )
    .expect("decision_id is a UUID");
    let second_id = uuid::Uuid::parse_str(
        second["decision_id"]
            .as_str()
            .expect("decision_id is a string"),
    )
    .expect("decision_id is a UUID");
    assert_ne!(first_id, second_id);
}

#[tokio::test]
async fn uid_as_cedar_text_and_as_type_id_object_decide_alike() {
    let app = app();
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
        assert_eq!(
            text["decision"], object["decision"],
            "{principal} on {resource}"
        );
        assert_eq!(
            text["outcome"], object["outcome"],
            "{principal} on {resource}"
        );
        assert_eq!(
            text["diagnostics"], object["diagnostics"],
            "{principal} on {resource}"
        );
        assert_eq!(
            text["obligations"], object["obligations"],
            "{principal} on {resource}"
        );
    }
}

#[tokio::test]
async fn request_entities_shadow_stored_ones_for_that_request_only() {
    let app = app();
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
    let carol = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"]["id"] == "carol")
        .unwrap();
    assert_eq!(carol["parents"], json!([]), "the store itself is untouched");
}

// ----- /v1/is_authorized: errors ----------------------------------------------------------

#[tokio::test]
async fn unparsable_principal_uid_is_400_naming_principal() {
    let app = app();
    let mut body = cedar_agent("alice", "read", "r1");
    body["principal"] = json!("alice");
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("principal"),
    );
    still_answers(&app).await;

    body["principal"] = json!(42);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("principal"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn context_of_wrong_json_type_is_400_naming_context() {
    let app = app();
    for context in [json!("emergency"), json!([true]), json!(7)] {
        let mut body = cedar_agent("alice", "read", "r1");
        body["context"] = context;
        let reply = send(&app, post("/v1/is_authorized", &body)).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("context"),
        );
        still_answers(&app).await;
    }
}

#[tokio::test]
async fn unknown_body_field_is_400_naming_it() {
    let app = app();
    let mut body = cedar_agent("alice", "read", "r1");
    body["principle"] = json!("User::\"alice\"");
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("principle"),
    );
    still_answers(&app).await;

    let mut body = authzen("alice", "read", "r1");
    body["subject"]["role"] = json!("doctor");
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("subject.role"),
    );
    still_answers(&app).await;

    let reply = send(
        &app,
        admin(json_request(
            Method::PATCH,
            "/v1/entities",
            &json!({"upsert": [], "remove": []}),
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("remove"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_batch_unknown_top_level_field_is_400_naming_it_in_the_message() {
    let app = app();
    let mut body = authzen("alice", "read", "r1");
    body["evaluations"] = json!([{}]);
    body["semantics"] = json!("execute_all");
    let reply = send(&app, post("/access/v1/evaluations", &body)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert_eq!(reply.body["error"], "invalid_request");
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("`semantics`"),
        "{}",
        reply.text
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let app = app();
    for text in ["", "[1, 2", "nul"] {
        let reply = send(
            &app,
            request(
                Method::POST,
                "/v1/is_authorized",
                Some("application/json"),
                text,
            ),
        )
        .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
        assert!(
            reply.body["message"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{text:?}: {}",
            reply.text
        );
        still_answers(&app).await;
    }
    // A syntax error inside a member's value is blamed on that member.
    let text = r#"{"principal": "User::\"alice\"", "action": }"#;
    let reply = send(
        &app,
        request(
            Method::POST,
            "/v1/is_authorized",
            Some("application/json"),
            text,
        ),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("action"),
    );
    still_answers(&app).await;
}

/// BUG (host/src/http/extract.rs `parse_json`): serde_path_to_error renders an
/// unknown position as `?`, and only `.` is treated as "no field", so these
/// answer `{"field": "?", "message": "?: key must be a string ..."}`.
#[tokio::test]
async fn malformed_json_is_not_blamed_on_a_field_named_question_mark() {
    let app = app();
    for text in ["{not json", r#"{"principal": "User::\"alice\"""#] {
        let reply = send(
            &app,
            request(
                Method::POST,
                "/v1/is_authorized",
                Some("application/json"),
                text,
            ),
        )
        .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
        still_answers(&app).await;
    }
}

/// BUG (host/src/http/extract.rs `is_json` and `TypedBody::is_text`): media
/// types are case-insensitive (RFC 9110 section 8.3.1), but `Application/JSON`
/// and `Text/Plain` are refused with 415.
#[tokio::test]
async fn content_type_is_matched_case_insensitively() {
    let app = app();
    let body = cedar_agent("alice", "read", "r1").to_string();
    let reply = send(
        &app,
        request(
            Method::POST,
            "/v1/is_authorized",
            Some("Application/JSON"),
            body,
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let text = "permit(principal, action, resource);";
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("Text/Plain"),
            text,
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

/// BUG (engine/src/store.rs `parse_entity`): Cedar keeps the specific reason
/// (`in attribute `clearance` on `User::"carol"`, type mismatch ...`) in the
/// error's `source()`, which is dropped, so every entity that does not fit the
/// schema is answered with only "entity does not conform to the schema" (or
/// "error during entity deserialization"), naming neither attribute nor type.
/// Affects request `entities`, AuthZEN `properties`, PATCH/PUT /v1/entities and
/// the entity re-check of PUT /v1/schema.
#[tokio::test]
async fn entity_not_fitting_schema_is_explained_down_to_the_attribute() {
    let app = app();
    let mut body = cedar_agent("carol", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "carol"},
        "attrs": {"department": "cardiology", "clearance": "top"},
        "parents": [],
    }]);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("entities[0]"),
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("clearance"),
        "{}",
        reply.text
    );

    let patch = json!({"upsert": [body["entities"][0].clone()]});
    let reply = send(
        &app,
        admin(json_request(Method::PATCH, "/v1/entities", &patch)),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("clearance"),
        "{}",
        reply.text
    );
}

#[tokio::test]
async fn missing_or_non_json_content_type_is_415() {
    let app = app();
    let body = cedar_agent("alice", "read", "r1").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let reply = send(
            &app,
            request(
                Method::POST,
                "/v1/is_authorized",
                content_type,
                body.clone(),
            ),
        )
        .await;
        assert_error(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        );
        still_answers(&app).await;
    }
    // A charset parameter and `+json` types are still JSON.
    for content_type in [
        "application/json; charset=utf-8",
        "application/vnd.consentry+json",
    ] {
        let reply = send(
            &app,
            request(
                Method::POST,
                "/v1/is_authorized",
                Some(content_type),
                body.clone(),
            ),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{content_type}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn body_over_max_body_is_413_payload_too_large() {
    let app = router(state(settings(), AdminAuth::new(Some(TOKEN))), 1024);
    let mut body = cedar_agent("alice", "read", "r1");
    body["context"] = json!({"padding": "x".repeat(2048)});
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );
    still_answers(&app).await;

    // Also when the client declares the length up front.
    let text = body.to_string();
    let mut declared = request(
        Method::POST,
        "/v1/is_authorized",
        Some("application/json"),
        text.clone(),
    );
    declared
        .headers_mut()
        .insert(header::CONTENT_LENGTH, text.len().into());
    let reply = send(&app, declared).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn context_not_fitting_schema_is_422_schema_mismatch_on_context() {
    let app = app();
    for context in [json!({"emergency": "yes"}), json!({"ward": "icu"})] {
        let mut body = cedar_agent("alice", "read", "r1");
        body["context"] = context.clone();
        let reply = send(&app, post("/v1/is_authorized", &body)).await;
        assert_error(
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_mismatch",
            Some("context"),
        );
        still_answers(&app).await;
    }
}

#[tokio::test]
async fn request_entity_not_fitting_schema_is_422_naming_its_index() {
    let app = app();
    let mut body = cedar_agent("carol", "read", "r1");
    body["entities"] = json!([{
        "uid": {"type": "User", "id": "carol"},
        "attrs": {"department": "cardiology", "clearance": "top"},
        "parents": [],
    }]);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("entities[0]"),
    );
    still_answers(&app).await;

    // The second entity is the bad one: the index follows it.
    body["entities"] = json!([
        {"uid": {"type": "Record", "id": "r9"}, "attrs": {"department": "icu", "sensitive": false}, "parents": []},
        {"uid": {"type": "User", "id": "carol"}, "attrs": {"department": "cardiology"}, "parents": []},
    ]);
    let reply = send(&app, post("/v1/is_authorized", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("entities[1]"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn undeclared_action_is_422_naming_action() {
    let app = app();
    let reply = send(
        &app,
        post("/v1/is_authorized", &cedar_agent("alice", "delete", "r1")),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("action"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = app();
    let reply = send(
        &app,
        post("/v1/is_authorised", &cedar_agent("alice", "read", "r1")),
    )
    .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    let reply = send(&app, get("/nope")).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    still_answers(&app).await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let app = app();
    let reply = send(&app, get("/v1/is_authorized")).await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    still_answers(&app).await;
    let reply = send(&app, post("/healthz", &json!({}))).await;
    assert_error(
        &reply,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
    );
    still_answers(&app).await;
}

// ----- /v1/is_authorized/batch ------------------------------------------------------------

#[tokio::test]
async fn batch_answers_in_request_order() {
    let app = app();
    let body = json!({"requests": [
        cedar_agent("bob", "read", "r2"),
        cedar_agent("alice", "read", "r1"),
        cedar_agent("carol", "read", "r1"),
    ]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let outcomes: Vec<&Value> = reply.body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["outcome"])
        .collect();
    assert_eq!(
        outcomes,
        [
            &json!("forbidden"),
            &json!("allow"),
            &json!("not_permitted")
        ]
    );
    let reasons = &reply.body["responses"][0]["diagnostics"]["reason"];
    assert_eq!(reasons, &json!(["sensitive-needs-clearance"]));
}

#[tokio::test]
async fn batch_over_max_batch_is_413_naming_the_limit() {
    let app = app();
    let body = json!({"requests": vec![cedar_agent("alice", "read", "r1"); 4]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        None,
    );
    let message = reply.body["message"].as_str().unwrap();
    assert!(
        message.contains("limit of 3"),
        "message names the limit: {message}"
    );
    still_answers(&app).await;

    let body = json!({"requests": vec![cedar_agent("alice", "read", "r1"); 3]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "exactly the limit is fine: {}",
        reply.text
    );
}

#[tokio::test]
async fn batch_bad_item_is_400_naming_its_index_and_field() {
    let app = app();
    let mut bad = cedar_agent("alice", "read", "r1");
    bad["principal"] = json!("not a uid");
    let body = json!({"requests": [cedar_agent("alice", "read", "r1"), bad, cedar_agent("bob", "read", "r2")]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("requests[1].principal"),
    );
    still_answers(&app).await;

    // An item that parses but does not fit the schema is a 422 naming it too.
    let body = json!({"requests": [cedar_agent("alice", "read", "r1"), cedar_agent("alice", "delete", "r1")]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("requests[1].action"),
    );
    still_answers(&app).await;
}

// ----- AuthZEN -----------------------------------------------------------------------------

fn authzen(subject: &str, action: &str, resource: &str) -> Value {
    json!({
        "subject": {"type": "User", "id": subject},
        "action": {"name": action},
        "resource": {"type": "Record", "id": resource},
    })
}

async fn evaluation(app: &Router, body: &Value) -> Value {
    let reply = send(app, post("/access/v1/evaluation", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

async fn evaluations(app: &Router, body: &Value) -> Vec<Value> {
    let reply = send(app, post("/access/v1/evaluations", body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["evaluations"]
        .as_array()
        .unwrap_or_else(|| panic!("an evaluations array: {}", reply.text))
        .clone()
}

fn decisions(answers: &[Value]) -> Vec<bool> {
    answers
        .iter()
        .map(|a| a["decision"].as_bool().expect("decision is a bool"))
        .collect()
}

#[tokio::test]
async fn authzen_evaluation_answers_true_and_false_with_reasons() {
    let app = app();
    let allowed = evaluation(&app, &authzen("alice", "read", "r1")).await;
    assert_eq!(allowed["decision"], true);
    assert_eq!(allowed["context"]["reason"]["outcome"], "allow");
    assert_eq!(
        allowed["context"]["reason"]["policies"][0]["policy"],
        "doctors-read"
    );
    assert_eq!(
        allowed["context"]["obligations"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(uuid::Uuid::parse_str(allowed["context"]["decision_id"].as_str().unwrap()).is_ok());

    let forbidden = evaluation(&app, &authzen("bob", "read", "r2")).await;
    assert_eq!(forbidden["decision"], false);
    assert_eq!(forbidden["context"]["reason"]["outcome"], "forbidden");

    let not_permitted = evaluation(&app, &authzen("carol", "read", "r1")).await;
    assert_eq!(not_permitted["decision"], false);
    assert_eq!(
        not_permitted["context"]["reason"]["outcome"],
        "not_permitted"
    );

    // A full Cedar action uid is accepted as the action name.
    let full = evaluation(&app, &authzen("alice", "Action::\"read\"", "r1")).await;
    assert_eq!(full["decision"], true);
}

#[tokio::test]
async fn authzen_subject_properties_overlay_stored_attributes_for_that_request_only() {
    let app = app();
    assert_eq!(
        evaluation(&app, &authzen("bob", "read", "r2")).await["decision"],
        false
    );

    let mut body = authzen("bob", "read", "r2");
    body["subject"]["properties"] = json!({"clearance": 4});
    let overlaid = evaluation(&app, &body).await;
    assert_eq!(
        overlaid["decision"], true,
        "clearance 4 lifts the forbid; stored parents still apply"
    );
    assert_eq!(
        overlaid["context"]["reason"]["policies"][0]["policy"],
        "doctors-read"
    );

    assert_eq!(
        evaluation(&app, &authzen("bob", "read", "r2")).await["decision"],
        false
    );
    let stored = stored_entities(&app).await;
    let bob = stored
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"]["id"] == "bob")
        .unwrap();
    assert_eq!(bob["attrs"]["clearance"], 1);

    // Resource properties work the same way.
    let mut body = authzen("bob", "read", "r2");
    body["resource"]["properties"] = json!({"sensitive": false});
    assert_eq!(evaluation(&app, &body).await["decision"], true);
    assert_eq!(
        evaluation(&app, &authzen("bob", "read", "r2")).await["decision"],
        false
    );
}

#[tokio::test]
async fn authzen_properties_not_fitting_schema_are_422_naming_them() {
    let app = app();
    let mut body = authzen("bob", "read", "r2");
    body["subject"]["properties"] = json!({"clearance": "high"});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "schema_mismatch",
        Some("subject.properties"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_action_properties_are_refused_with_400() {
    let app = app();
    let mut body = authzen("alice", "read", "r1");
    body["action"]["properties"] = json!({"method": "GET"});
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("action.properties"),
    );
    still_answers(&app).await;

    // Empty properties are harmless.
    body["action"]["properties"] = json!({});
    assert_eq!(evaluation(&app, &body).await["decision"], true);
}

#[tokio::test]
async fn authzen_unparsable_subject_type_is_400_naming_it() {
    let app = app();
    let mut body = authzen("alice", "read", "r1");
    body["subject"]["type"] = json!("not a type");
    let reply = send(&app, post("/access/v1/evaluation", &body)).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("subject.type"),
    );
    still_answers(&app).await;
}

#[tokio::test]
async fn authzen_batch_items_take_top_level_defaults_and_override_them() {
    let app = app();
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
    let settings = Settings {
        max_batch: 10,
        public_url: None,
    };
    let app_10 = router(
        state(settings, AdminAuth::new(Some(TOKEN))),
        DEFAULT_MAX_BODY,
    );
    let answers = evaluations(&app_10, &body).await;
    assert_eq!(decisions(&answers), [true, false, false, true]);
    assert_eq!(answers[2]["context"]["reason"]["outcome"], "forbidden");
    assert_eq!(
        answers[3]["context"]["reason"]["policies"][0]["policy"],
        "same-department-write"
    );

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
    let app = app();
    let body = json!({
        "action": {"name": "read"},
        "evaluations": [
            authzen("carol", "read", "r1"),
            authzen("alice", "read", "r1"),
            authzen("bob", "read", "r2"),
        ],
        "options": {"evaluations_semantic": "execute_all"},
    });
    assert_eq!(
        decisions(&evaluations(&app, &body).await),
        [false, true, false]
    );
    // execute_all is the default.
    let mut body = body;
    body.as_object_mut().unwrap().remove("options");
    assert_eq!(
        decisions(&evaluations(&app, &body).await),
        [false, true, false]
    );
}

#[tokio::test]
async fn authzen_deny_on_first_deny_stops_after_the_first_deny() {
    let app = app();
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
    let app = app();
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
    let app = app();
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
    assert_error_body(
        error,
        "invalid_request",
        Some("evaluations[1].subject.type"),
    );
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
    assert_error_body(
        &answers[0]["context"]["error"],
        "invalid_request",
        Some("evaluations[0].resource"),
    );
}

#[tokio::test]
async fn authzen_evaluations_without_array_answer_as_single_evaluation() {
    let app = app();
    let reply = send(
        &app,
        post("/access/v1/evaluations", &authzen("alice", "read", "r1")),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["decision"], true);
    assert!(reply.body.get("evaluations").is_none(), "{}", reply.text);
    assert_eq!(reply.body["context"]["reason"]["outcome"], "allow");

    let reply = send(
        &app,
        post("/access/v1/evaluations", &authzen("carol", "read", "r1")),
    )
    .await;
    assert_eq!(reply.body["decision"], false);

    // Without a subject and without items, the missing part is named.
    let reply = send(
        &app,
        post(
            "/access/v1/evaluations",
            &json!({"action": {"name": "read"}}),
        ),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request",
        Some("subject"),
    );
}

#[tokio::test]
async fn authzen_batch_over_max_batch_is_413() {
    let app = app();
    let body = json!({"evaluations": vec![authzen("alice", "read", "r1"); 4]});
    let reply = send(&app, post("/access/v1/evaluations", &body)).await;
    assert_error(
        &reply,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
        None,
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("limit of 3")
    );
}

#[tokio::test]
async fn authzen_metadata_is_derived_from_the_host_header() {
    let app = app();
    let mut request = get("/.well-known/authzen-configuration");
    request
        .headers_mut()
        .insert(header::HOST, "pdp.clinic.test:8180".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({
            "policy_decision_point": "http://pdp.clinic.test:8180",
            "access_evaluation_endpoint": "http://pdp.clinic.test:8180/access/v1/evaluation",
            "access_evaluations_endpoint": "http://pdp.clinic.test:8180/access/v1/evaluations",
        })
    );

    let reply = send(&app, get("/.well-known/authzen-configuration")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
}

#[tokio::test]
async fn authzen_metadata_prefers_public_url_over_host() {
    let settings = Settings {
        max_batch: 3,
        public_url: Some("https://pdp.clinic.example/".into()),
    };
    let app = router(
        state(settings, AdminAuth::new(Some(TOKEN))),
        DEFAULT_MAX_BODY,
    );
    let mut request = get("/.well-known/authzen-configuration");
    request
        .headers_mut()
        .insert(header::HOST, "internal:8180".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body,
        json!({
            "policy_decision_point": "https://pdp.clinic.example",
            "access_evaluation_endpoint": "https://pdp.clinic.example/access/v1/evaluation",
            "access_evaluations_endpoint": "https://pdp.clinic.example/access/v1/evaluations",
        })
    );
}

// ----- admin: authentication ---------------------------------------------------------------

/// Every admin route, with a body that would change the state if it got through.
fn admin_requests() -> Vec<Request<Body>> {
    vec![
        get("/v1/policies"),
        request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain"),
            "forbid(principal, action, resource);",
        ),
        get("/v1/schema"),
        request(
            Method::PUT,
            "/v1/schema",
            Some("text/plain"),
            SCHEMA.replace("clearance: Long", "clearance: Long, x?: Long"),
        ),
        get("/v1/entities"),
        json_request(Method::PUT, "/v1/entities", &json!([])),
        json_request(
            Method::PATCH,
            "/v1/entities",
            &json!({"delete": ["User::\"alice\""]}),
        ),
        json_request(
            Method::DELETE,
            "/v1/entities",
            &json!(["User::\"alice\"", "Role::\"doctor\""]),
        ),
    ]
}

async fn assert_all_admin_refused(app: &Router, token: Option<&str>) {
    for request in admin_requests() {
        let label = format!("{} {}", request.method(), request.uri());
        let request = match token {
            Some(token) => with_token(request, token),
            None => request,
        };
        let reply = send(app, request).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized", None);
        let challenge = reply
            .headers
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(challenge, Some("Bearer"), "{label}");
    }
    // Nothing got through.
    assert_eq!(outcome(app, "alice", "read", "r1").await, "allow");
    assert_eq!(outcome(app, "bob", "read", "r2").await, "forbidden");
}

#[tokio::test]
async fn admin_routes_refuse_a_missing_token_with_401() {
    let app = app();
    assert_all_admin_refused(&app, None).await;
    // A token without the Bearer scheme counts as missing.
    let mut request = get("/v1/policies");
    request
        .headers_mut()
        .insert(header::AUTHORIZATION, TOKEN.parse().unwrap());
    assert_error(
        &send(&app, request).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn admin_routes_refuse_a_wrong_token_with_401() {
    let app = app();
    assert_all_admin_refused(&app, Some("s3cret-admin-toke")).await;
    assert_all_admin_refused(&app, Some("")).await;
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn admin_routes_are_closed_when_no_token_is_configured() {
    let app = router(state(settings(), AdminAuth::new(None)), DEFAULT_MAX_BODY);
    assert_all_admin_refused(&app, Some(TOKEN)).await;
    assert_all_admin_refused(&app, None).await;
    let app = router(
        state(settings(), AdminAuth::new(Some(""))),
        DEFAULT_MAX_BODY,
    );
    assert_all_admin_refused(&app, Some("")).await;
}

fn entities_sorted() -> Value {
    let mut all = entities().as_array().unwrap().clone();
    all.sort_by_key(|e| {
        format!(
            "{}::\"{}\"",
            e["uid"]["type"].as_str().unwrap(),
            e["uid"]["id"].as_str().unwrap()
        )
    });
    Value::Array(all)
}

// ----- admin: policies ---------------------------------------------------------------------

async fn policies_hash(app: &Router) -> String {
    let reply = send(app, admin(get("/v1/policies"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["hash"]
        .as_str()
        .expect("hash is a string")
        .to_owned()
}

#[tokio::test]
async fn put_policies_text_takes_effect_on_the_next_decision() {
    let app = app();
    let before = policies_hash(&app).await;
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
    let text = r#"@id("carol-reads") permit(principal == User::"carol", action == Action::"read", resource);"#;
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain; charset=utf-8"),
            text,
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["policies"], 1);
    assert_ne!(reply.body["hash"], before.as_str());
    assert_eq!(reply.body["hash"], policies_hash(&app).await.as_str());

    let answer = is_authorized(&app, &cedar_agent("carol", "read", "r1")).await;
    assert_eq!(answer["outcome"], "allow");
    assert_eq!(answer["diagnostics"]["reason"], json!(["carol-reads"]));
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "not_permitted");

    let reply = send(&app, admin(get("/v1/policies"))).await;
    assert_eq!(reply.body["text"], text);
}

#[tokio::test]
async fn put_policies_with_unsupported_content_type_is_415() {
    let app = app();
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("application/xml"),
            "<x/>",
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            None,
            "permit(principal, action, resource);",
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    );
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn invalid_policies_are_422_listing_every_problem_and_old_policies_keep_deciding() {
    let app = app();
    let before = policies_hash(&app).await;
    let text = r#"
        @id("typo-attr") permit(principal, action == Action::"read", resource) when { principal.clearence > 2 };
        @id("ok") permit(principal == User::"carol", action == Action::"read", resource);
        @id("bad-type") permit(principal, action == Action::"read", resource) when { resource.sensitive == "no" };
    "#;
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain"),
            text,
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policies",
        None,
    );
    let problems = reply.body["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("a problems array: {}", reply.text));
    let ids: Vec<&str> = problems
        .iter()
        .filter_map(|p| p["policy_id"].as_str())
        .collect();
    assert!(ids.contains(&"typo-attr"), "{}", reply.text);
    assert!(ids.contains(&"bad-type"), "{}", reply.text);
    assert!(!ids.contains(&"ok"), "{}", reply.text);
    assert!(
        problems
            .iter()
            .all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty()))
    );

    // Two syntax errors in separate policies are both listed too.
    let text = "permit(principal, action, resource) when { principal. };\nforbid(principal, action resource);";
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain"),
            text,
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policies",
        None,
    );
    assert!(
        reply.body["problems"]
            .as_array()
            .is_some_and(|p| p.len() >= 2),
        "{}",
        reply.text
    );

    assert_eq!(policies_hash(&app).await, before);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn put_policies_json_with_template_link_allows_only_the_linked_user() {
    let app = app();
    let body = json!({
        "policies": concat!(
            "@id(\"sensitive-needs-clearance\")\n",
            "forbid(principal, action, resource) when { resource.sensitive && principal.clearance < 3 };\n",
            "@id(\"assigned-clinician\") @obligation(\"audit-log\")\n",
            "permit(principal == ?principal, action, resource);\n",
        ),
        "links": [
            {"template": "assigned-clinician", "id": "assigned-carol", "values": {"?principal": "User::\"carol\""}},
        ],
    });
    let reply = send(
        &app,
        admin(json_request(Method::PUT, "/v1/policies", &body)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body["policies"], 2,
        "the static policy and the link are evaluable; the template is not"
    );

    let answer = is_authorized(&app, &cedar_agent("carol", "read", "r1")).await;
    assert_eq!(answer["outcome"], "allow");
    assert_eq!(answer["diagnostics"]["reason"], json!(["assigned-carol"]));
    assert_eq!(
        answer["obligations"],
        json!([{"id": "audit-log", "kind": "obligation", "policy": "assigned-carol"}])
    );
    assert_eq!(outcome(&app, "carol", "write", "r2").await, "allow");
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");
    assert_eq!(outcome(&app, "bob", "read", "r1").await, "not_permitted");

    let listed = send(&app, admin(get("/v1/policies"))).await;
    assert_eq!(listed.status, StatusCode::OK);
    let kinds: Vec<(&str, &str)> = listed.body["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("sensitive-needs-clearance", "static"),
            ("assigned-clinician", "template"),
            ("assigned-carol", "linked")
        ]
    );
    assert_eq!(listed.body["policies"][2]["template"], "assigned-clinician");
    assert_eq!(listed.body["policies"][0]["effect"], "forbid");
    assert_eq!(listed.body["links"], body["links"]);

    // PUT as text keeps the links in force.
    let text = listed.body["text"].as_str().unwrap().to_owned();
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain"),
            text,
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");

    // A link to a template that does not exist is refused and names the link.
    let bad = json!({
        "policies": "permit(principal == ?principal, action, resource);",
        "links": [{"template": "nope", "id": "l1", "values": {"?principal": {"type": "User", "id": "bob"}}}],
    });
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/policies", &bad))).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policies",
        None,
    );
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "bob", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn put_policies_json_with_unknown_field_is_400_naming_it() {
    let app = app();
    let body = json!({"policies": "permit(principal, action, resource);", "link": []});
    let reply = send(
        &app,
        admin(json_request(Method::PUT, "/v1/policies", &body)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(
        reply.body["message"].as_str().unwrap().contains("link"),
        "{}",
        reply.text
    );
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

// ----- admin: schema -----------------------------------------------------------------------

#[tokio::test]
async fn get_schema_returns_the_schema_as_given() {
    let app = app();
    let reply = send(&app, admin(get("/v1/schema"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text, SCHEMA);
    let content_type = reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
}

#[tokio::test]
async fn put_schema_that_current_policies_do_not_satisfy_is_422_and_changes_nothing() {
    let app = app();
    let hash = policies_hash(&app).await;
    // Records lose `sensitive`, which the forbid reads.
    let schema = SCHEMA.replace(
        "entity Record { department: String, sensitive: Bool };",
        "entity Record { department: String };",
    );
    assert_ne!(schema, SCHEMA);
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/schema",
            Some("text/plain"),
            schema,
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_policies",
        None,
    );
    assert!(
        reply.body["problems"]
            .as_array()
            .is_some_and(|p| !p.is_empty()),
        "{}",
        reply.text
    );

    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, SCHEMA);
    assert_eq!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn put_schema_that_stored_entities_do_not_fit_is_422_and_changes_nothing() {
    let app = app();
    let hash = policies_hash(&app).await;
    // A new required attribute no stored record has.
    let schema = SCHEMA.replace("sensitive: Bool }", "sensitive: Bool, ward: String }");
    assert_ne!(schema, SCHEMA);
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/schema",
            Some("text/plain"),
            schema,
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, SCHEMA);
    assert_eq!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
}

#[tokio::test]
async fn put_compatible_schema_replaces_it_and_changes_the_hash() {
    let app = app();
    let hash = policies_hash(&app).await;
    let schema = SCHEMA.replace("sensitive: Bool }", "sensitive: Bool, ward?: String }");
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/schema",
            Some("text/plain"),
            schema.clone(),
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["entities"], 6);
    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, schema);
    assert_ne!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");

    // And the new attribute can now be given in request entities.
    let mut body = cedar_agent("alice", "read", "r9");
    body["entities"] = json!([{"uid": {"type": "Record", "id": "r9"}, "attrs": {"department": "icu", "sensitive": false, "ward": "icu-2"}, "parents": []}]);
    assert_eq!(is_authorized(&app, &body).await["outcome"], "allow");
}

// ----- admin: entities ---------------------------------------------------------------------

#[tokio::test]
async fn get_entities_returns_every_stored_entity_sorted_by_uid() {
    let app = app();
    let stored = stored_entities(&app).await;
    assert_eq!(
        uids(&stored),
        [
            "Record::r1",
            "Record::r2",
            "Role::doctor",
            "User::alice",
            "User::bob",
            "User::carol"
        ]
    );
    assert_eq!(stored, entities_sorted());
}

#[tokio::test]
async fn patch_with_one_bad_upsert_among_good_ones_is_422_and_changes_no_entity() {
    let app = app();
    let before = stored_entities(&app).await;
    let patch = json!({
        "upsert": [
            {"uid": {"type": "User", "id": "carol"}, "attrs": {"department": "cardiology", "clearance": 5},
             "parents": [{"type": "Role", "id": "doctor"}]},
            {"uid": {"type": "User", "id": "dave"}, "attrs": {"department": "icu", "clearance": "high"}, "parents": []},
            {"uid": {"type": "User", "id": "erin"}, "attrs": {"department": "icu", "clearance": 2}, "parents": []},
        ],
        "delete": ["User::\"bob\""],
    });
    let reply = send(
        &app,
        admin(json_request(Method::PATCH, "/v1/entities", &patch)),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("upsert[1]"),
        "{}",
        reply.text
    );

    assert_eq!(stored_entities(&app).await, before);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");

    // A bad uid in `delete` also refuses the whole patch.
    let patch = json!({"upsert": [patch["upsert"][0].clone()], "delete": ["bob"]});
    let reply = send(
        &app,
        admin(json_request(Method::PATCH, "/v1/entities", &patch)),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    assert_eq!(stored_entities(&app).await, before);
}

#[tokio::test]
async fn patch_removing_a_user_from_a_group_flips_the_next_decision() {
    let app = app();
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
    let patch = json!({"upsert": [
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "cardiology", "clearance": 5}, "parents": []},
    ]});
    let reply = send(
        &app,
        admin(json_request(Method::PATCH, "/v1/entities", &patch)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"upserted": 1, "deleted": 0}));
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    // And back in: the decision flips again.
    let patch = json!({"upsert": [
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": [{"type": "Role", "id": "doctor"}]},
    ]});
    let reply = send(
        &app,
        admin(json_request(Method::PATCH, "/v1/entities", &patch)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
}

#[tokio::test]
async fn delete_entities_removes_the_listed_uids() {
    let app = app();
    let uids_to_delete =
        json!(["User::\"alice\"", {"type": "Record", "id": "r2"}, "User::\"nobody\""]);
    let reply = send(
        &app,
        admin(json_request(
            Method::DELETE,
            "/v1/entities",
            &uids_to_delete,
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"upserted": 0, "deleted": 2}));
    assert_eq!(
        uids(&stored_entities(&app).await),
        ["Record::r1", "Role::doctor", "User::bob", "User::carol"]
    );
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    let reply = send(
        &app,
        admin(json_request(
            Method::DELETE,
            "/v1/entities",
            &json!(["alice"]),
        )),
    )
    .await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    let reply = send(
        &app,
        admin(json_request(
            Method::DELETE,
            "/v1/entities",
            &json!({"uid": "x"}),
        )),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
    assert_eq!(uids(&stored_entities(&app).await).len(), 4);
}

#[tokio::test]
async fn put_entities_replaces_every_stored_entity() {
    let app = app();
    let replacement = json!([
        {"uid": {"type": "Role", "id": "doctor"}, "attrs": {}, "parents": []},
        {"uid": {"type": "User", "id": "carol"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": [{"type": "Role", "id": "doctor"}]},
        {"uid": {"type": "Record", "id": "r1"}, "attrs": {"department": "cardiology", "sensitive": false}, "parents": []},
    ]);
    let reply = send(
        &app,
        admin(json_request(Method::PUT, "/v1/entities", &replacement)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"entities": 3}));
    assert_eq!(
        uids(&stored_entities(&app).await),
        ["Record::r1", "Role::doctor", "User::carol"]
    );
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    // A replacement that does not fit the schema changes nothing.
    let bad = json!([{"uid": {"type": "User", "id": "zed"}, "attrs": {}, "parents": []}]);
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/entities", &bad))).await;
    assert_error(
        &reply,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_entities",
        None,
    );
    assert_eq!(
        uids(&stored_entities(&app).await),
        ["Record::r1", "Role::doctor", "User::carol"]
    );
}

// ----- health ------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_answers_200_ok() {
    let app = app();
    let reply = send(&app, get("/healthz")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ok"}));
    assert!(
        reply.headers.contains_key("x-request-id"),
        "every answer carries a request id"
    );
}

#[tokio::test]
async fn readyz_policy_hash_is_the_admin_policies_hash_and_follows_changes() {
    let app = app();
    let ready = send(&app, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["policies"], 4);
    assert_eq!(ready.body["entities"], 6);
    assert_eq!(ready.body["schema"], true);
    assert_eq!(
        ready.body["policy_hash"],
        policies_hash(&app).await.as_str()
    );

    let text = "permit(principal, action, resource) when { principal.clearance > 4 };";
    let reply = send(
        &app,
        admin(request(
            Method::PUT,
            "/v1/policies",
            Some("text/plain"),
            text,
        )),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let ready_after = send(&app, get("/readyz")).await;
    assert_ne!(ready_after.body["policy_hash"], ready.body["policy_hash"]);
    assert_eq!(
        ready_after.body["policy_hash"],
        policies_hash(&app).await.as_str()
    );
    assert_eq!(ready_after.body["policy_hash"], reply.body["hash"]);
    assert_eq!(ready_after.body["policies"], 1);
}

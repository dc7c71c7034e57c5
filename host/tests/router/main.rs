//! In-process tests of the HTTP router: every endpoint is driven through
//! `tower::ServiceExt::oneshot`, with no socket, over a small clinic schema
//! (doctors read records, sensitive records need clearance, break-glass in
//! an emergency) or, for consents, over the bundled healthcare pack. Every
//! router has a real SQLite consent store of its own in a temporary
//! directory. Error answers are checked for their exact status and for the
//! `{"error", "message", "field"}` body.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use consentry::auth::Auth;
use consentry::consents::Consents;
use consentry::http::{DEFAULT_MAX_BODY, router};
use consentry::plugins::Plugins;
use consentry::state::{AppState, Settings};
use consentry::store::StoreLocation;
use consentry_engine::{EntityStore, PolicyBundle, SchemaSource};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

mod access_log;
mod access_tokens;
mod admin_auth;
mod admin_policies;
mod admin_schema_entities;
mod audit_changes;
mod auth_matrix;
mod authzen_api;
mod batch;
mod consents;
mod decisions;
mod errors;
mod health;
mod openapi;
mod policy_tests_gate;
mod search_api;

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

/// A router with the consent store it decides with. The store lives in a
/// temporary directory that is removed when the app is dropped, so it
/// derefs to the router for the helpers that take `&Router`.
struct App {
    router: Router,
    _store: TempDir,
}

impl Deref for App {
    type Target = Router;

    fn deref(&self) -> &Router {
        &self.router
    }
}

/// A fresh SQLite consent store in a temporary directory, migrated.
async fn consents_in_tempdir() -> (Arc<Consents>, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let consents = Consents::open(&StoreLocation::Sqlite { dir: dir.path().to_owned() })
        .await
        .expect("the consent store opens");
    (consents, dir)
}

/// The clinic bundle and entities with these settings, over a fresh consent store.
async fn app_with(settings: Settings, auth: Auth, max_body: usize) -> App {
    let bundle =
        PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), POLICIES, &[]).expect("test bundle loads");
    let store = EntityStore::from_json(&entities(), bundle.schema()).expect("test entities load");
    let (consents, dir) = consents_in_tempdir().await;
    let state = AppState::seeded(bundle, store, settings, auth, consents, Plugins::none())
        .await
        .expect("the test state is stored");
    App { router: router(state, max_body), _store: dir }
}

fn settings() -> Settings {
    Settings { max_batch: 3, public_url: None, ..Settings::default() }
}

/// The router most tests use: admin token set, batches of at most 3.
async fn app() -> App {
    app_with(settings(), Auth::with_admin_token(Some(TOKEN)), DEFAULT_MAX_BODY).await
}

/// The bundled policy directory (`policies/` at the repository root).
fn bundled_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("policies")
}

/// The bundled healthcare pack and its entities, over a fresh consent store:
/// the router `consentry serve` builds by default.
async fn pack_app() -> App {
    pack_app_with(Auth::with_admin_token(Some(TOKEN))).await
}

/// The bundled pack, admitting the callers `auth` knows.
async fn pack_app_with(auth: Auth) -> App {
    let loaded = consentry::policy_dir::load(&bundled_policies()).expect("the bundled pack loads");
    let (consents, dir) = consents_in_tempdir().await;
    let settings = Settings { max_batch: 10, public_url: None, ..Settings::default() };
    let state = AppState::seeded(loaded.bundle, loaded.store, settings, auth, consents, Plugins::none())
        .await
        .expect("the test state is stored");
    App { router: router(state, DEFAULT_MAX_BODY), _store: dir }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    body: Value,
    text: String,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body is readable").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(text.clone()));
    Reply { status, headers, body, text }
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
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
    let value = format!("Bearer {token}").parse().expect("valid header value");
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
    answer["outcome"].as_str().expect("outcome is a string").to_owned()
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
    let content_type = reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/json"), "error bodies are JSON: {}", reply.text);
    assert_error_body(&reply.body, code, field);
}

fn assert_error_body(body: &Value, code: &str, field: Option<&str>) {
    assert_eq!(body["error"], code, "body: {body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("message is a string: {body}"));
    assert!(!message.is_empty(), "message is not empty: {body}");
    assert_eq!(body.get("field").and_then(Value::as_str), field, "body: {body}");
    if let Some(field) = field {
        assert!(message.starts_with(field), "message `{message}` names field `{field}`");
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
        .map(|e| format!("{}::{}", e["uid"]["type"].as_str().unwrap(), e["uid"]["id"].as_str().unwrap()))
        .collect()
}

/// Every admin route, with a body that would change the state if it got through.
fn admin_requests() -> Vec<Request<Body>> {
    vec![
        get("/v1/policies"),
        request(Method::PUT, "/v1/policies", Some("text/plain"), "forbid(principal, action, resource);"),
        get("/v1/schema"),
        request(
            Method::PUT,
            "/v1/schema",
            Some("text/plain"),
            SCHEMA.replace("clearance: Long", "clearance: Long, x?: Long"),
        ),
        get("/v1/entities"),
        json_request(Method::PUT, "/v1/entities", &json!([])),
        json_request(Method::PATCH, "/v1/entities", &json!({"delete": ["User::\"alice\""]})),
        json_request(Method::DELETE, "/v1/entities", &json!(["User::\"alice\"", "Role::\"doctor\""])),
        post("/v1/consents", &minimal_consent()),
        json_request(Method::PUT, "/v1/consents/c-1", &minimal_consent()),
        get("/v1/consents/c-1"),
        get("/v1/patients/p-1/consents"),
    ]
}

/// A small valid FHIR R4 consent, for routes that only need one.
fn minimal_consent() -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": "Patient/p-1"},
        "provision": {"type": "deny"},
    })
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
        let challenge = reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
        assert_eq!(challenge, Some("Bearer"), "{label}");
    }
    // Nothing got through.
    assert_eq!(outcome(app, "alice", "read", "r1").await, "allow");
    assert_eq!(outcome(app, "bob", "read", "r2").await, "forbidden");
}

fn entities_sorted() -> Value {
    let mut all = entities().as_array().unwrap().clone();
    all.sort_by_key(|e| {
        format!("{}::\"{}\"", e["uid"]["type"].as_str().unwrap(), e["uid"]["id"].as_str().unwrap())
    });
    Value::Array(all)
}

async fn policies_hash(app: &Router) -> String {
    let reply = send(app, admin(get("/v1/policies"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["hash"].as_str().expect("hash is a string").to_owned()
}

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
    answers.iter().map(|a| a["decision"].as_bool().expect("decision is a bool")).collect()
}

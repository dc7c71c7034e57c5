//! Plugins built from source (by `consentry-test-plugins`) run through the
//! real router and wasmtime: the example plugins change decisions the way
//! their READMEs say, hostile plugins are contained and deny, reloads are
//! atomic, and metrics count what happened.
//!
//! Each test has its own consent store and plugin configuration in a
//! temporary directory, over the bundled healthcare pack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use consentry::auth::Auth;
use consentry::consents::Consents;
use consentry::http::{DEFAULT_MAX_BODY, router};
use consentry::plugins::Plugins;
use consentry::state::{AppState, Settings};
use consentry::store::StoreLocation;
use consentry_engine::DecisionOptions;
use consentry_test_plugins::{bundled_plugins_toml, with_generous_limits};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

mod examples;
mod ext_authz;
mod hostile;
mod reload;
mod rewriters;

const TOKEN: &str = "plugin-test-admin-token";

/// A router over the bundled pack with the plugins of `plugins_toml`.
struct App {
    router: Router,
    config: PathBuf,
    _dirs: (TempDir, TempDir),
}

/// A `[[plugins]]` table for the component at `path`, with a generous time
/// limit unless `extra` sets the limits.
fn plugin(name: &str, path: &str, hooks: &[&str], extra: &str) -> String {
    with_generous_limits(&plugin_as_written(name, path, hooks, extra))
}

/// A `[[plugins]]` table with the default limits unless `extra` sets them:
/// for the tests where the time limit is the point.
fn plugin_as_written(name: &str, path: &str, hooks: &[&str], extra: &str) -> String {
    let hooks: Vec<String> = hooks.iter().map(|h| format!("\"{h}\"")).collect();
    format!("[[plugins]]\nname = \"{name}\"\npath = \"{path}\"\nhooks = [{}]\n{extra}\n", hooks.join(", "))
}

async fn app(plugins_toml: &str) -> App {
    app_with(plugins_toml, DecisionOptions::default()).await
}

/// [`app`] with decisions made under `options`.
async fn app_with(plugins_toml: &str, options: DecisionOptions) -> App {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("plugins.toml");
    std::fs::write(&config, plugins_toml).unwrap();
    let plugins = Plugins::load(&config).unwrap_or_else(|e| panic!("the plugins load: {e}"));
    let (router, store_dir) = router_with(plugins, options).await;
    App { router, config, _dirs: (config_dir, store_dir) }
}

/// A router over the bundled pack with `plugins`, and its consent store's directory.
async fn router_with(plugins: Plugins, decisions: DecisionOptions) -> (Router, TempDir) {
    let policies = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let loaded = consentry::policy_dir::load(&policies).expect("the bundled pack loads");
    let store_dir = tempfile::tempdir().unwrap();
    let consents = Consents::open(&StoreLocation::Sqlite { dir: store_dir.path().to_owned() }).await.unwrap();
    // The tests name the principal in `x-principal`, as an operator who
    // trusts the proxy in front does.
    let settings = Settings {
        max_batch: 10,
        public_url: None,
        decisions,
        trust_principal_header: true,
        ..Settings::default()
    };
    let state = AppState::new(
        loaded.bundle,
        loaded.store,
        settings,
        Auth::with_admin_token(Some(TOKEN)),
        consents,
        plugins,
    );
    (router(state, DEFAULT_MAX_BODY), store_dir)
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Reply { status, headers, body }
}

fn json_request(method: Method, uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn admin(mut request: Request<Body>) -> Request<Body> {
    request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {TOKEN}").parse().unwrap());
    request
}

/// `/v1/is_authorized` for `principal` doing `action` to `resource` (Cedar uid text).
async fn decide(app: &Router, principal: &str, action: &str, resource: &str, context: Value) -> Value {
    let body = json!({"principal": principal, "action": format!("Action::\"{action}\""), "resource": resource, "context": context});
    let reply = send(app, json_request(Method::POST, "/v1/is_authorized", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body
}

/// dr-ali breaks the glass on obs-1: the pack allows it with two obligations.
async fn break_glass(app: &Router) -> Value {
    decide(
        app,
        "Practitioner::\"dr-ali\"",
        "read",
        "Record::\"obs-1\"",
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    )
    .await
}

fn assert_allowed(answer: &Value) {
    assert_eq!(answer["decision"], "Allow", "{answer}");
}

/// Asserts a fail-closed Deny whose summary contains every one of `parts`.
fn assert_failed_closed(answer: &Value, parts: &[&str]) {
    assert_eq!(answer["decision"], "Deny", "{answer}");
    assert_eq!(answer["outcome"], "failed_closed", "{answer}");
    let summary = answer["summary"].as_str().unwrap();
    for part in parts {
        assert!(summary.contains(part), "`{summary}` should contain `{part}`");
    }
}

/// The README's consent: st-mary may read p-100's records for treatment, except PSY.
fn consent_c100() -> Value {
    json!({"resourceType": "Consent", "id": "c-100", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"}, "dateTime": "2026-01-15",
        "provision": {"type": "permit", "period": {"start": "2026-01-01"},
            "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
            "provision": [{"type": "deny", "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}]}})
}

fn path_of(component: &str) -> &str {
    assert!(Path::new(component).is_file(), "`{component}` was not built");
    component
}

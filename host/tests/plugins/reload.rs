//! Reloads swap the whole plugin set atomically, or nothing.

use consentry_test_plugins::{OBLIGATION_ADDER, TRIVIAL_ENRICHER};

use super::*;

fn adder(id: &str) -> String {
    plugin(
        "adder",
        path_of(OBLIGATION_ADDER),
        &["obligations"],
        &format!("[plugins.config]\nid = \"{id}\"\n"),
    )
}

async fn added(app: &Router) -> Vec<String> {
    let answer = break_glass(app).await;
    answer["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["policy"] == "plugin/adder")
        .map(|o| o["id"].as_str().unwrap().to_owned())
        .collect()
}

fn reload_request() -> Request<Body> {
    Request::post("/v1/plugins/reload").body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_reload_through_the_admin_api_swaps_the_set_or_keeps_the_old_one() {
    let app = app(&adder("first")).await;
    assert_eq!(added(&app.router).await, ["first"]);

    std::fs::write(&app.config, adder("second")).unwrap();
    let reply = send(&app.router, admin(reload_request())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["plugins"][0]["name"], "adder");
    assert_eq!(added(&app.router).await, ["second"]);

    // A component that lacks a configured hook refuses the whole new set.
    let broken = adder("third") + &plugin("wrong-hook", path_of(TRIVIAL_ENRICHER), &["map-request"], "");
    std::fs::write(&app.config, broken).unwrap();
    let reply = send(&app.router, admin(reload_request())).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.contains("plugin `wrong-hook`") && message.contains("does not export"), "{message}");
    assert_eq!(reply.body["error"], "plugins_refused", "{}", reply.body);
    assert_eq!(reply.body["cause"], "hook_not_exported", "{}", reply.body);
    assert_eq!(added(&app.router).await, ["second"]);

    std::fs::write(&app.config, "[[plugins]]\nname = 7\n").unwrap();
    let reply = send(&app.router, admin(reload_request())).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.body);
    assert_eq!(reply.body["cause"], "plugin_config_invalid", "{}", reply.body);
    assert_eq!(added(&app.router).await, ["second"]);
}

#[tokio::test]
async fn the_plugin_admin_api_needs_the_admin_token() {
    // The default limits, as written: the listing shows them.
    let config = plugin_as_written("adder", path_of(OBLIGATION_ADDER), &["obligations"], "");
    let app = app(&config).await;
    let unauthenticated = send(&app.router, reload_request()).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let listing = send(&app.router, Request::get("/v1/plugins").body(Body::empty()).unwrap()).await;
    assert_eq!(listing.status, StatusCode::UNAUTHORIZED);
    let listing = send(&app.router, admin(Request::get("/v1/plugins").body(Body::empty()).unwrap())).await;
    assert_eq!(listing.status, StatusCode::OK);
    let listed = &listing.body["plugins"][0];
    assert_eq!(listed["hooks"], json!(["obligations"]));
    assert_eq!(listed["failure"], "fail-closed");
    assert_eq!(listed["limits"]["timeout_ms"], 10);
    assert_eq!(listed["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn reloading_without_a_plugin_configuration_is_a_conflict() {
    let (router, _store) = router_with(Plugins::none(), DecisionOptions::default()).await;
    let reply = send(&router, admin(reload_request())).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{}", reply.body);
    assert_eq!(reply.body["error"], "plugins_not_configured", "{}", reply.body);
}

#[test]
fn a_component_missing_a_configured_hook_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, plugin("wrong-hook", path_of(TRIVIAL_ENRICHER), &["obligations"], "")).unwrap();
    let error = Plugins::load(&config).unwrap_err();
    assert_eq!(error.code(), "hook_not_exported");
    let error = error.to_string();
    assert!(
        error.contains("declares hook `obligations` but does not export `consentry:plugin/obligations`"),
        "{error}"
    );
}

#[test]
fn a_core_module_is_refused_with_its_own_code_and_the_build_hint() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("core.wasm");
    // The smallest valid core module: the magic, version 1, layer 0.
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    let config = dir.path().join("plugins.toml");
    std::fs::write(&config, plugin("core", module.to_str().unwrap(), &["enrich"], "")).unwrap();
    let error = Plugins::load(&config).unwrap_err();
    assert_eq!(error.code(), "core_module");
    let error = error.to_string();
    assert!(error.starts_with("plugin `core`: a core WebAssembly module, not a component"), "{error}");
    assert!(error.contains("`cargo build --release --target wasm32-wasip2`"), "{error}");
}

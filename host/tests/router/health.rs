//! `/healthz` and `/readyz`.

use super::*;

#[tokio::test]
async fn healthz_answers_200_ok() {
    let app = app().await;
    let reply = send(&app, get("/healthz")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"status": "ok"}));
    assert!(reply.headers.contains_key("x-request-id"), "every answer carries a request id");
}

#[tokio::test]
async fn readyz_policy_hash_is_the_admin_policies_hash_and_follows_changes() {
    let app = app().await;
    let ready = send(&app, admin(get("/readyz"))).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["policies"], 4);
    assert_eq!(ready.body["entity_revision"], 1, "the seeded entities are the store's first revision");
    assert_eq!(ready.body["entity_cache"]["entities"], 0, "no decision has loaded one yet");
    assert_eq!(ready.body["entity_cache"]["budget_bytes"], consentry::directory::DEFAULT_CACHE_BYTES);
    assert_eq!(ready.body["schema"], true);
    assert_eq!(ready.body["policy_hash"], policies_hash(&app).await.as_str());

    let text = "permit(principal, action, resource) when { principal.clearance > 4 };";
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), text))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let ready_after = send(&app, admin(get("/readyz"))).await;
    assert_ne!(ready_after.body["policy_hash"], ready.body["policy_hash"]);
    assert_eq!(ready_after.body["policy_hash"], policies_hash(&app).await.as_str());
    assert_eq!(ready_after.body["policy_hash"], reply.body["hash"]);
    assert_eq!(ready_after.body["policies"], 1);
}

#[tokio::test]
async fn readyz_reports_the_store_it_depends_on() {
    let app = app().await;
    let ready = send(&app, admin(get("/readyz"))).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body["store"]["ok"], true, "{}", ready.text);
    let store = ready.body["store"]["store"].as_str().unwrap_or_default();
    assert!(store.starts_with("sqlite:") && store.contains("consents.sqlite3"), "{store}");
}

#[tokio::test]
async fn finding_15_readyz_without_a_token_says_only_whether_it_is_ready() {
    let app = app().await;
    let ready = send(&app, get("/readyz")).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text);
    assert_eq!(ready.body, json!({"status": "ready"}), "no store path, hash or reload errors");
}

#[tokio::test]
async fn readyz_details_need_an_operators_token() {
    let app = app().await;
    let wrong = send(&app, with_token(get("/readyz"), "not-the-token")).await;
    assert_eq!((wrong.status, &wrong.body), (StatusCode::OK, &json!({"status": "ready"})), "{}", wrong.text);
    let detailed = send(&app, admin(get("/readyz"))).await;
    assert_eq!(detailed.status, StatusCode::OK, "{}", detailed.text);
    assert_eq!(detailed.body["status"], "ready");
    assert!(detailed.body["store"]["store"].is_string(), "{}", detailed.text);
}

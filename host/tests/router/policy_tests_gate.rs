//! `serve --policy-tests`: `PUT /v1/policies` and `PUT /v1/schema` must
//! pass the policy tests before they are put in force.

use super::*;

/// The clinic schema with an optional `ward` on records, which the test below uses.
fn schema_with_wards() -> String {
    SCHEMA.replace("sensitive: Bool }", "sensitive: Bool, ward?: String }")
}

const ICU_TEST: &str = r#"now: 2026-06-01T10:00:00Z
entities:
- {uid: {type: Record, id: r9}, attrs: {department: cardiology, sensitive: false, ward: ICU}, parents: []}
steps:
- name: alice reads an ICU record
  request: {principal: 'User::"alice"', action: 'Action::"read"', resource: 'Record::"r9"'}
  expect: {decision: Allow, reasons: [doctors-read]}
"#;

/// The clinic over `schema_with_wards`, with `ICU_TEST` as its policy tests.
async fn gated_app() -> (App, TempDir) {
    let tests = tempfile::tempdir().unwrap();
    std::fs::write(tests.path().join("icu-ward.yaml"), ICU_TEST).unwrap();
    let schema = schema_with_wards();
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(&schema)), POLICIES, &[]).unwrap();
    let store = EntityStore::from_json(&entities(), bundle.schema()).unwrap();
    let (consents, dir) = consents_in_tempdir().await;
    let settings = Settings { policy_tests: Some(tests.path().to_owned()), ..settings() };
    let state = AppState::seeded(
        bundle,
        store,
        settings,
        Auth::with_admin_token(Some(TOKEN)),
        consents,
        Plugins::none(),
    )
    .await
    .expect("the test state is stored");
    (App { router: router(state, DEFAULT_MAX_BODY), _store: dir }, tests)
}

fn problems(reply: &Reply) -> Vec<String> {
    let list = reply.body["problems"].as_array().unwrap();
    list.iter().map(|p| p["message"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn put_policies_that_fail_the_policy_tests_is_422_naming_the_case_and_changes_nothing() {
    let (app, _tests) = gated_app().await;
    let hash = policies_hash(&app).await;
    let closed = format!("{POLICIES}\n@id(\"closed\") forbid(principal, action, resource);");
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), closed))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "policy_tests_failed", None);
    assert_eq!(
        problems(&reply),
        ["icu-ward.yaml › alice reads an ICU record: decision: expected Allow, actual Deny; \
          reasons: expected [doctors-read], actual [closed]"]
    );
    assert_eq!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");

    let reviewed = format!("{POLICIES}\n// reviewed\n");
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), reviewed))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_ne!(policies_hash(&app).await, hash);
}

#[tokio::test]
async fn put_schema_that_fails_the_policy_tests_is_422_and_changes_nothing() {
    let (app, _tests) = gated_app().await;
    let hash = policies_hash(&app).await;
    // Valid for the policies and the stored entities, but the test's ICU record no longer fits.
    let reply = send(&app, admin(request(Method::PUT, "/v1/schema", Some("text/plain"), SCHEMA))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "policy_tests_failed", None);
    let problems = problems(&reply);
    assert!(problems.len() == 1 && problems[0].contains("icu-ward.yaml`: entities:"), "{problems:?}");
    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, schema_with_wards());
    assert_eq!(policies_hash(&app).await, hash);

    let commented = format!("{}\n// reviewed\n", schema_with_wards());
    let reply = send(&app, admin(request(Method::PUT, "/v1/schema", Some("text/plain"), commented))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

//! `/v1/schema` and `/v1/entities`.

use super::*;

#[tokio::test]
async fn get_schema_returns_the_schema_as_given() {
    let app = app().await;
    let reply = send(&app, admin(get("/v1/schema"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text, SCHEMA);
    let content_type = reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
}

#[tokio::test]
async fn put_schema_that_current_policies_do_not_satisfy_is_422_and_changes_nothing() {
    let app = app().await;
    let hash = policies_hash(&app).await;
    // Records lose `sensitive`, which the forbid reads.
    let schema = SCHEMA.replace(
        "entity Record { department: String, sensitive: Bool };",
        "entity Record { department: String };",
    );
    assert_ne!(schema, SCHEMA);
    let reply = send(&app, admin(request(Method::PUT, "/v1/schema", Some("text/plain"), schema))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_policies", None);
    assert!(reply.body["problems"].as_array().is_some_and(|p| !p.is_empty()), "{}", reply.text);

    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, SCHEMA);
    assert_eq!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");
    assert_eq!(stored_entities(&app).await, entities_sorted());
}

#[tokio::test]
async fn put_schema_that_stored_entities_do_not_fit_is_422_and_changes_nothing() {
    let app = app().await;
    let hash = policies_hash(&app).await;
    // A new required attribute no stored record has.
    let schema = SCHEMA.replace("sensitive: Bool }", "sensitive: Bool, ward: String }");
    assert_ne!(schema, SCHEMA);
    let reply = send(&app, admin(request(Method::PUT, "/v1/schema", Some("text/plain"), schema))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    assert_eq!(send(&app, admin(get("/v1/schema"))).await.text, SCHEMA);
    assert_eq!(policies_hash(&app).await, hash);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
}

#[tokio::test]
async fn put_compatible_schema_replaces_it_and_changes_the_hash() {
    let app = app().await;
    let hash = policies_hash(&app).await;
    let schema = SCHEMA.replace("sensitive: Bool }", "sensitive: Bool, ward?: String }");
    let reply =
        send(&app, admin(request(Method::PUT, "/v1/schema", Some("text/plain"), schema.clone()))).await;
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
    let app = app().await;
    let stored = stored_entities(&app).await;
    assert_eq!(
        uids(&stored),
        ["Record::r1", "Record::r2", "Role::doctor", "User::alice", "User::bob", "User::carol"]
    );
    assert_eq!(stored, entities_sorted());
}

#[tokio::test]
async fn patch_with_one_bad_upsert_among_good_ones_is_422_and_changes_no_entity() {
    let app = app().await;
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
    let reply = send(&app, admin(json_request(Method::PATCH, "/v1/entities", &patch))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    assert!(reply.body["message"].as_str().unwrap().contains("upsert[1]"), "{}", reply.text);

    assert_eq!(stored_entities(&app).await, before);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");

    // A bad uid in `delete` also refuses the whole patch.
    let patch = json!({"upsert": [patch["upsert"][0].clone()], "delete": ["bob"]});
    let reply = send(&app, admin(json_request(Method::PATCH, "/v1/entities", &patch))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    assert_eq!(stored_entities(&app).await, before);
}

#[tokio::test]
async fn patch_removing_a_user_from_a_group_flips_the_next_decision() {
    let app = app().await;
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
    let patch = json!({"upsert": [
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "cardiology", "clearance": 5}, "parents": []},
    ]});
    let reply = send(&app, admin(json_request(Method::PATCH, "/v1/entities", &patch))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"upserted": 1, "deleted": 0, "revision": 2}));
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    // And back in: the decision flips again.
    let patch = json!({"upsert": [
        {"uid": {"type": "User", "id": "alice"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": [{"type": "Role", "id": "doctor"}]},
    ]});
    let reply = send(&app, admin(json_request(Method::PATCH, "/v1/entities", &patch))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
}

#[tokio::test]
async fn delete_entities_removes_the_listed_uids() {
    let app = app().await;
    let uids_to_delete = json!(["User::\"alice\"", {"type": "Record", "id": "r2"}, "User::\"nobody\""]);
    let reply = send(&app, admin(json_request(Method::DELETE, "/v1/entities", &uids_to_delete))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"upserted": 0, "deleted": 2, "revision": 2}));
    assert_eq!(
        uids(&stored_entities(&app).await),
        ["Record::r1", "Role::doctor", "User::bob", "User::carol"]
    );
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    let reply = send(&app, admin(json_request(Method::DELETE, "/v1/entities", &json!(["alice"])))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    let reply = send(&app, admin(json_request(Method::DELETE, "/v1/entities", &json!({"uid": "x"})))).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
    assert_eq!(uids(&stored_entities(&app).await).len(), 4);
}

#[tokio::test]
async fn put_entities_replaces_every_stored_entity() {
    let app = app().await;
    let replacement = json!([
        {"uid": {"type": "Role", "id": "doctor"}, "attrs": {}, "parents": []},
        {"uid": {"type": "User", "id": "carol"}, "attrs": {"department": "cardiology", "clearance": 5},
         "parents": [{"type": "Role", "id": "doctor"}]},
        {"uid": {"type": "Record", "id": "r1"}, "attrs": {"department": "cardiology", "sensitive": false}, "parents": []},
    ]);
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/entities", &replacement))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body, json!({"entities": 3, "revision": 2}));
    assert_eq!(uids(&stored_entities(&app).await), ["Record::r1", "Role::doctor", "User::carol"]);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "not_permitted");

    // A replacement that does not fit the schema changes nothing.
    let bad = json!([{"uid": {"type": "User", "id": "zed"}, "attrs": {}, "parents": []}]);
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/entities", &bad))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_entities", None);
    assert_eq!(uids(&stored_entities(&app).await), ["Record::r1", "Role::doctor", "User::carol"]);
}

//! `/v1/policies`.

use super::*;

#[tokio::test]
async fn put_policies_text_takes_effect_on_the_next_decision() {
    let app = app().await;
    let before = policies_hash(&app).await;
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
    let text =
        r#"@id("carol-reads") permit(principal == User::"carol", action == Action::"read", resource);"#;
    let reply =
        send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain; charset=utf-8"), text)))
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
    let app = app().await;
    let reply =
        send(&app, admin(request(Method::PUT, "/v1/policies", Some("application/xml"), "<x/>"))).await;
    assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);
    let reply =
        send(&app, admin(request(Method::PUT, "/v1/policies", None, "permit(principal, action, resource);")))
            .await;
    assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn invalid_policies_are_422_listing_every_problem_and_old_policies_keep_deciding() {
    let app = app().await;
    let before = policies_hash(&app).await;
    let text = r#"
        @id("typo-attr") permit(principal, action == Action::"read", resource) when { principal.clearence > 2 };
        @id("ok") permit(principal == User::"carol", action == Action::"read", resource);
        @id("bad-type") permit(principal, action == Action::"read", resource) when { resource.sensitive == "no" };
    "#;
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), text))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_policies", None);
    let problems =
        reply.body["problems"].as_array().unwrap_or_else(|| panic!("a problems array: {}", reply.text));
    let ids: Vec<&str> = problems.iter().filter_map(|p| p["policy_id"].as_str()).collect();
    assert!(ids.contains(&"typo-attr"), "{}", reply.text);
    assert!(ids.contains(&"bad-type"), "{}", reply.text);
    assert!(!ids.contains(&"ok"), "{}", reply.text);
    assert!(problems.iter().all(|p| p["message"].as_str().is_some_and(|m| !m.is_empty())));

    // Two syntax errors in separate policies are both listed too.
    let text =
        "permit(principal, action, resource) when { principal. };\nforbid(principal, action resource);";
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), text))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_policies", None);
    assert!(reply.body["problems"].as_array().is_some_and(|p| p.len() >= 2), "{}", reply.text);

    assert_eq!(policies_hash(&app).await, before);
    assert_eq!(outcome(&app, "alice", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "bob", "read", "r2").await, "forbidden");
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn put_policies_json_with_template_link_allows_only_the_linked_user() {
    let app = app().await;
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
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/policies", &body))).await;
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
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), text))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");

    // A link to a template that does not exist is refused and names the link.
    let bad = json!({
        "policies": "permit(principal == ?principal, action, resource);",
        "links": [{"template": "nope", "id": "l1", "values": {"?principal": {"type": "User", "id": "bob"}}}],
    });
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/policies", &bad))).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_policies", None);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "allow");
    assert_eq!(outcome(&app, "bob", "read", "r1").await, "not_permitted");
}

#[tokio::test]
async fn put_policies_json_with_unknown_field_is_400_naming_it() {
    let app = app().await;
    let body = json!({"policies": "permit(principal, action, resource);", "link": []});
    let reply = send(&app, admin(json_request(Method::PUT, "/v1/policies", &body))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(reply.body["message"].as_str().unwrap().contains("link"), "{}", reply.text);
    assert_eq!(outcome(&app, "carol", "read", "r1").await, "not_permitted");
}

//! `/v1/is_authorized/batch`.

use super::*;

#[tokio::test]
async fn batch_answers_in_request_order() {
    let app = app().await;
    let body = json!({"requests": [
        cedar_agent("bob", "read", "r2"),
        cedar_agent("alice", "read", "r1"),
        cedar_agent("carol", "read", "r1"),
    ]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let outcomes: Vec<&Value> =
        reply.body["responses"].as_array().unwrap().iter().map(|r| &r["outcome"]).collect();
    assert_eq!(outcomes, [&json!("forbidden"), &json!("allow"), &json!("not_permitted")]);
    let reasons = &reply.body["responses"][0]["diagnostics"]["reason"];
    assert_eq!(reasons, &json!(["sensitive-needs-clearance"]));
}

#[tokio::test]
async fn batch_over_max_batch_is_413_naming_the_limit() {
    let app = app().await;
    let body = json!({"requests": vec![cedar_agent("alice", "read", "r1"); 4]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", None);
    let message = reply.body["message"].as_str().unwrap();
    assert!(message.contains("limit of 3"), "message names the limit: {message}");
    still_answers(&app).await;

    let body = json!({"requests": vec![cedar_agent("alice", "read", "r1"); 3]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "exactly the limit is fine: {}", reply.text);
}

#[tokio::test]
async fn batch_bad_item_is_400_naming_its_index_and_field() {
    let app = app().await;
    let mut bad = cedar_agent("alice", "read", "r1");
    bad["principal"] = json!("not a uid");
    let body =
        json!({"requests": [cedar_agent("alice", "read", "r1"), bad, cedar_agent("bob", "read", "r2")]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("requests[1].principal"));
    still_answers(&app).await;

    // An item that parses but does not fit the schema is a 422 naming it too.
    let body =
        json!({"requests": [cedar_agent("alice", "read", "r1"), cedar_agent("alice", "delete", "r1")]});
    let reply = send(&app, post("/v1/is_authorized/batch", &body)).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("requests[1].action"));
    still_answers(&app).await;
}

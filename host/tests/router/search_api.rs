//! The AuthZEN 1.0 Search APIs (OpenID AuthZEN Authorization API 1.0,
//! final, January 2026, section 8), shape by shape: the specification's own
//! request and response examples are the fixtures. Their types (`user`,
//! `account`) are not the clinic's, so the requests are checked to parse
//! into a query, and the responses to have the shape the clinic's answers
//! are checked against.

use consentry::search::body::SearchBody;
use consentry_engine::Searched;

use super::*;

/// §8.3.3 "Example initial Search API Request" (pagination, limit 2).
const PAGINATION_INITIAL_REQUEST: &str = r#"{
  "subject": {"type": "user", "id": "alice@example.com"},
  "action": {"name": "can_read"},
  "resource": {"type": "account"},
  "page": {"limit": 2}
}"#;

/// §8.3.3 "Example initial Search API Response".
const PAGINATION_INITIAL_RESPONSE: &str = r#"{
  "page": {"next_token": "a3M9NDU2O3N6PTI=", "count": 2, "total": 3},
  "results": [{"type": "account", "id": "123"}, {"type": "account", "id": "456"}]
}"#;

/// §8.3.3 "Example second Search API Request": the token of another PDP.
const PAGINATION_SECOND_REQUEST: &str = r#"{
  "subject": {"type": "user", "id": "alice@example.com"},
  "action": {"name": "can_read"},
  "resource": {"type": "account"},
  "page": {"token": "a3M9NDU2O3N6PTI="}
}"#;

/// §8.3.3 "Example second Search API Response": the last page.
const PAGINATION_SECOND_RESPONSE: &str = r#"{
  "page": {"next_token": "", "count": 1, "total": 3},
  "results": [{"type": "account", "id": "789"}]
}"#;

/// §8.3.4 "Example Resource Search API Response", with a `context`.
const SEARCH_RESPONSE: &str = r#"{
  "page": {"count": 2, "total": 102},
  "context": {"query_execution_time_ms": 42},
  "results": [{"type": "account", "id": "123"}, {"type": "account", "id": "456"}]
}"#;

/// §8.4.2 "Example Subject Search API Request".
const SUBJECT_REQUEST: &str = r#"{
  "subject": {"type": "user"},
  "action": {"name": "can_read"},
  "resource": {"type": "account", "id": "123"},
  "context": {"time": "2024-10-26T01:22-07:00"}
}"#;

/// §8.4.2 "Example Subject Search API Response".
const SUBJECT_RESPONSE: &str = r#"{
  "results": [{"type": "user", "id": "alice@example.com"}, {"type": "user", "id": "bob@example.com"}]
}"#;

/// §8.5.2 "Example Resource Search API Request".
const RESOURCE_REQUEST: &str = r#"{
  "subject": {"type": "user", "id": "alice@example.com"},
  "action": {"name": "can_read"},
  "resource": {"type": "account"}
}"#;

/// §8.5.2 "Example Resource Search API Response".
const RESOURCE_RESPONSE: &str = r#"{
  "results": [{"type": "account", "id": "123"}, {"type": "account", "id": "456"}]
}"#;

/// §8.6.2 "Example Action Search API Request".
const ACTION_REQUEST: &str = r#"{
  "subject": {"type": "user", "id": "alice@example.com"},
  "resource": {"type": "account", "id": "123"},
  "context": {"time": "2024-10-26T01:22-07:00"}
}"#;

/// §8.6.2 "Example Action Search API Response".
const ACTION_RESPONSE: &str = r#"{"results": [{"name": "can_read"}, {"name": "can_write"}]}"#;

/// Whether `answer` has the shape of a Search API Response (§8.3.2,
/// §8.3.4): only `page`, `context` and `results`; a page of a string
/// `next_token` and numbers; results all entities `{type, id}` or all
/// actions `{name}`.
fn is_search_response(answer: &Value, searched: Searched) -> Result<(), String> {
    let fields = answer.as_object().ok_or("not an object")?;
    if let Some(other) = fields.keys().find(|k| !["page", "context", "results"].contains(&k.as_str())) {
        return Err(format!("unknown key `{other}`"));
    }
    if let Some(page) = fields.get("page") {
        let page = page.as_object().ok_or("page is not an object")?;
        for (key, value) in page {
            let fits = match key.as_str() {
                "next_token" => value.is_string(),
                "count" | "total" => value.is_u64(),
                "properties" => value.is_object(),
                _ => false,
            };
            if !fits {
                return Err(format!("page.{key} = {value}"));
            }
        }
    }
    let results = fields.get("results").and_then(Value::as_array).ok_or("results is not an array")?;
    for result in results {
        let keys: Vec<&str> =
            result.as_object().ok_or("a result is not an object")?.keys().map(String::as_str).collect();
        let fits = match searched {
            Searched::Action => keys == ["name"],
            Searched::Subject | Searched::Resource => keys == ["type", "id"],
        };
        if !fits || result.as_object().is_some_and(|r| r.values().any(|v| !v.is_string())) {
            return Err(format!("result {result}"));
        }
    }
    Ok(())
}

#[test]
fn the_specs_search_requests_parse() {
    for (searched, text) in [
        (Searched::Resource, PAGINATION_INITIAL_REQUEST),
        (Searched::Subject, SUBJECT_REQUEST),
        (Searched::Resource, RESOURCE_REQUEST),
        (Searched::Action, ACTION_REQUEST),
    ] {
        let body = SearchBody::parse(searched, text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        let query = body.into_query(None, |_, _| Some(Vec::new())).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(query.search.searched, searched);
    }
    let limited = SearchBody::parse(Searched::Resource, PAGINATION_INITIAL_REQUEST.as_bytes()).unwrap();
    assert_eq!(limited.into_query(None, |_, _| None).unwrap().limit, 2);
    // A token is opaque and bound to its query: another PDP's is refused, naming it.
    let second = SearchBody::parse(Searched::Resource, PAGINATION_SECOND_REQUEST.as_bytes()).unwrap();
    assert_eq!(second.into_query(None, |_, _| None).unwrap_err().field, "page.token");
}

#[test]
fn the_specs_search_responses_have_the_shape_ours_are_checked_against() {
    for (searched, text) in [
        (Searched::Resource, PAGINATION_INITIAL_RESPONSE),
        (Searched::Resource, PAGINATION_SECOND_RESPONSE),
        (Searched::Resource, SEARCH_RESPONSE),
        (Searched::Subject, SUBJECT_RESPONSE),
        (Searched::Resource, RESOURCE_RESPONSE),
        (Searched::Action, ACTION_RESPONSE),
    ] {
        let answer: Value = serde_json::from_str(text).unwrap();
        is_search_response(&answer, searched).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[tokio::test]
async fn the_clinics_answers_have_the_specs_shape() {
    let app = app().await;
    let cases = [
        (
            Searched::Subject,
            "/access/v1/search/subject",
            json!({"subject": {"type": "User"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}}),
            vec![json!({"type": "User", "id": "alice"}), json!({"type": "User", "id": "bob"})],
        ),
        (
            Searched::Resource,
            "/access/v1/search/resource",
            json!({"subject": {"type": "User", "id": "bob"}, "action": {"name": "read"}, "resource": {"type": "Record"}}),
            vec![json!({"type": "Record", "id": "r1"})],
        ),
        (
            Searched::Action,
            "/access/v1/search/action",
            json!({"subject": {"type": "User", "id": "carol"}, "resource": {"type": "Record", "id": "r1"}}),
            vec![json!({"name": "write"})],
        ),
    ];
    for (searched, path, body, results) in cases {
        let reply = send(&app, post(path, &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        is_search_response(&reply.body, searched).unwrap_or_else(|e| panic!("{}: {e}", reply.text));
        assert_eq!(reply.body["results"], json!(results), "{}", reply.text);
        assert_eq!(reply.body["page"], json!({"next_token": "", "count": results.len()}));
        assert!(reply.text.starts_with(r#"{"page":"#), "the page comes first (§8.3.4): {}", reply.text);
        let decisions = reply.body["context"]["decisions"].as_array().unwrap();
        assert_eq!(decisions.len(), results.len(), "one decision per result");
    }
}

#[tokio::test]
async fn a_search_body_that_is_not_one_is_refused_naming_the_field() {
    let app = app().await;
    let cases = [
        (json!({"subject": {"type": "User"}, "action": {"name": "read"}}), "resource"),
        (
            json!({"subject": {}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}}),
            "subject",
        ),
        (
            json!({"subject": {"type": "User"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}, "page": {"limit": 0}}),
            "page.limit",
        ),
        (
            json!({"subject": {"type": "User"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}, "page": {"limit": 1001}}),
            "page.limit",
        ),
        (
            json!({"subject": {"type": "User"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}, "page": {"token": "nope"}}),
            "page.token",
        ),
        (
            json!({"subject": {"type": "User", "properties": {"department": "x"}}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}}),
            "subject.properties",
        ),
        (
            json!({"subject": {"type": "User"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}, "extra": 1}),
            "extra",
        ),
    ];
    for (body, field) in cases {
        let reply = send(&app, post("/access/v1/search/subject", &body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        // A missing top-level part is named in the message, as for every body.
        let named = reply.body["field"].as_str().is_some_and(|f| f.starts_with(field))
            || reply.body["message"].as_str().is_some_and(|m| m.contains(&format!("`{field}`")));
        assert!(named, "{body}: {}", reply.text);
    }
    let undeclared = json!({"subject": {"type": "Usr"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "r1"}});
    let reply = send(&app, post("/access/v1/search/subject", &undeclared)).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "schema_mismatch", Some("subject.type"));
    let filtered = json!({"subject": {"type": "User", "id": "bob"}, "action": {"name": "read"},
        "resource": {"type": "Record", "properties": {"department": "cardiology"}}});
    let reply = send(&app, post("/access/v1/search/resource", &filtered)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("resource.properties.department"));
}

//! `/openapi.json` and the `/docs` page, and the router against the
//! document: every documented operation is routed, and no other method is
//! on a documented path.

use super::*;

#[tokio::test]
async fn the_document_and_the_page_are_served_without_a_token() {
    let app = app().await;
    let reply = send(&app, get("/openapi.json")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
    let built: Value = serde_json::from_str(&consentry::http::document().to_json().unwrap()).unwrap();
    assert_eq!(reply.body, built);
    assert!(reply.body["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(reply.body["paths"]["/v1/is_authorized"]["post"].is_object());

    let redirect = send(&app, get("/docs")).await;
    assert!(redirect.status.is_redirection(), "{}", redirect.status);
    let page = send(&app, get("/docs/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("swagger-ui"), "{}", page.text);
    // The page's assets are in the binary, and it reads the document above.
    let initializer = send(&app, get("/docs/swagger-initializer.js")).await;
    assert_eq!(initializer.status, StatusCode::OK);
    assert!(initializer.text.contains("/openapi.json"), "{}", initializer.text);
    for asset in ["/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js"] {
        let reply = send(&app, get(asset)).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert!(reply.text.len() > 10_000, "{asset} is {} bytes", reply.text.len());
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method() {
    let app = app().await;
    let document: Value = serde_json::from_str(&consentry::http::document().to_json().unwrap()).unwrap();
    let methods = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::OPTIONS,
        Method::HEAD,
        Method::PATCH,
        Method::TRACE,
    ];
    let mut wrong = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        let path = concrete(template);
        for method in &methods {
            let key = method.as_str().to_ascii_lowercase();
            // axum answers HEAD wherever it answers GET.
            let documented =
                item.get(&key).is_some() || (*method == Method::HEAD && item.get("get").is_some());
            let reply = send(&app, request(method.clone(), &path, None, Body::empty())).await;
            let unrouted = reply.status == StatusCode::METHOD_NOT_ALLOWED
                || (reply.status == StatusCode::NOT_FOUND && reply.body["message"] == "no such route")
                || (reply.status == StatusCode::NOT_FOUND
                    && *method == Method::HEAD
                    && reply.text.is_empty());
            if documented == unrouted {
                wrong.push(format!(
                    "{method} {path} (documented: {documented}) answered {} {}",
                    reply.status, reply.text
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "the router and the document disagree:\n{}", wrong.join("\n"));
}

/// A path for the template, with each `{name}` filled in.
fn concrete(template: &str) -> String {
    let mut path = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        path.push_str(&rest[..open]);
        let close = rest[open..].find('}').unwrap() + open;
        path.push_str(&format!("x-{}", &rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    path.push_str(rest);
    path
}

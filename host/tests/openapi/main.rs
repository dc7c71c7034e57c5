//! The OpenAPI 3.1 document `/openapi.json` serves: that it lists exactly
//! the routes the router serves, that it is a valid OpenAPI 3.1 document,
//! and that every request body in `examples/` (which the README and the
//! documents under `docs/` use) is valid against the schema the document
//! gives for its route. The router side (that each documented operation is
//! routed, and nothing else on its path) is in `host/tests/router/openapi.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Every operation the router serves, as `METHOD path`. A route added to
/// the router is added here too, and so is its documentation: the router
/// registers routes only from their handlers' `#[utoipa::path]`.
const OPERATIONS: &[&str] = &[
    "GET /.well-known/authzen-configuration",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "POST /v1/is_authorized",
    "POST /v1/is_authorized/batch",
    "POST /v1/plan",
    "POST /access/v1/evaluation",
    "POST /access/v1/evaluations",
    "POST /access/v1/search/subject",
    "POST /access/v1/search/resource",
    "POST /access/v1/search/action",
    "GET /v1/policies",
    "PUT /v1/policies",
    "GET /v1/policies/versions",
    "POST /v1/policies/rollback",
    "GET /v1/entities/revisions",
    "GET /v1/entities/{type}/{id}",
    "GET /v1/schema",
    "PUT /v1/schema",
    "GET /v1/entities",
    "PUT /v1/entities",
    "PATCH /v1/entities",
    "DELETE /v1/entities",
    "GET /v1/plugins",
    "POST /v1/plugins/reload",
    "POST /v1/consents",
    "PUT /v1/consents/{id}",
    "GET /v1/consents/{id}",
    "GET /v1/patients/{id}/consents",
    "GET /v1/patients/{id}/access-log",
    "GET /v1/patients/{id}/access-overview",
    "GET /v1/audit/events",
    "GET /v1/audit/changes",
    "GET /v1/audit/head",
];

/// `ext_authz` answers every method, on its prefix and under it.
const EXT_AUTHZ_PATHS: &[&str] = &["/ext_authz", "/ext_authz/{path}"];
const HTTP_METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"];

fn document() -> Value {
    serde_json::from_str(&consentry::http::document().to_json().unwrap()).unwrap()
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn documented_operations(document: &Value) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in HTTP_METHODS {
            if item.get(method.to_ascii_lowercase()).is_some() {
                found.insert(format!("{method} {path}"));
            }
        }
    }
    found
}

#[test]
fn the_document_lists_exactly_the_routes_served() {
    let mut expected: BTreeSet<String> = OPERATIONS.iter().map(|op| (*op).to_owned()).collect();
    for path in EXT_AUTHZ_PATHS {
        for method in HTTP_METHODS {
            expected.insert(format!("{method} {path}"));
        }
    }
    let documented = documented_operations(&document());
    let missing: Vec<_> = expected.difference(&documented).collect();
    let unexpected: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "undocumented: {missing:?}; not in the list: {unexpected:?}"
    );
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    let schema: Value = serde_json::from_str(include_str!("../fixtures/openapi-3.1-schema.json")).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let document = document();
    let errors: Vec<String> =
        validator.iter_errors(&document).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert!(errors.is_empty(), "the document is not valid OpenAPI 3.1:\n{}", errors.join("\n"));
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
}

/// The OpenAPI 3.1 schema leaves the schemas inside a document to their
/// dialect, JSON Schema 2020-12 by default; each is checked against it.
#[test]
fn every_schema_in_the_document_is_valid_json_schema_2020_12() {
    let document = document();
    let mut schemas = Vec::new();
    collect_schemas(&document, "", &mut schemas);
    assert!(schemas.len() > 30, "found only {} schemas", schemas.len());
    for (at, schema) in schemas {
        if let Err(error) = jsonschema::draft202012::meta::validate(schema) {
            panic!("the schema at {at} is not valid JSON Schema 2020-12: {error}");
        }
    }
}

/// The JSON Schemas of a document: components, bodies and parameters.
fn collect_schemas<'a>(value: &'a Value, at: &str, found: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) => {
            if at.ends_with("/components/schemas") {
                for (name, schema) in map {
                    found.push((format!("{at}/{name}"), schema));
                }
                return;
            }
            for (key, inner) in map {
                let here = format!("{at}/{key}");
                if key == "schema" {
                    found.push((here, inner));
                } else {
                    collect_schemas(inner, &here, found);
                }
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                collect_schemas(inner, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// One entry of `examples/index.json`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Example {
    file: String,
    method: String,
    path: String,
    description: String,
}

fn examples() -> Vec<Example> {
    let manifest = repository().join("examples/index.json");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()))
}

/// The request body schema of `method path`, with every `$ref` into the
/// document's components replaced by what it names.
fn request_schema(document: &Value, method: &str, path: &str) -> Result<Value, String> {
    let operation = document["paths"]
        .get(path)
        .ok_or_else(|| format!("the document has no path `{path}`"))?
        .get(method.to_ascii_lowercase())
        .ok_or_else(|| format!("the document has no `{method} {path}`"))?;
    let schema = operation
        .pointer("/requestBody/content/application~1json/schema")
        .ok_or_else(|| format!("`{method} {path}` takes no JSON request body"))?;
    inline_refs(document, schema, 0)
}

/// Whether `method path` documents a `text/plain` request body.
fn takes_text(document: &Value, method: &str, path: &str) -> Result<(), String> {
    let pointer = format!(
        "/paths/{}/{}/requestBody/content/text~1plain",
        path.replace('~', "~0").replace('/', "~1"),
        method.to_ascii_lowercase()
    );
    document
        .pointer(&pointer)
        .map(|_| ())
        .ok_or_else(|| format!("`{method} {path}` takes no text/plain body"))
}

fn inline_refs(document: &Value, schema: &Value, depth: usize) -> Result<Value, String> {
    if depth > 32 {
        return Err("references nest more than 32 deep".to_owned());
    }
    Ok(match schema {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer =
                    reference.strip_prefix('#').ok_or_else(|| format!("a remote `$ref`: {reference}"))?;
                let target =
                    document.pointer(pointer).ok_or_else(|| format!("`$ref` {reference} names nothing"))?;
                let mut resolved = inline_refs(document, target, depth + 1)?;
                // Keywords beside a `$ref` apply too (JSON Schema 2020-12).
                if let Value::Object(resolved_map) = &mut resolved {
                    for (key, value) in map.iter().filter(|(key, _)| key.as_str() != "$ref") {
                        resolved_map.insert(key.clone(), inline_refs(document, value, depth + 1)?);
                    }
                }
                resolved
            } else {
                let mut out = serde_json::Map::new();
                for (key, value) in map {
                    out.insert(key.clone(), inline_refs(document, value, depth + 1)?);
                }
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(
            items.iter().map(|item| inline_refs(document, item, depth + 1)).collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

#[test]
fn every_example_request_body_is_valid_against_its_route() {
    let document = document();
    let examples = examples();
    assert!(!examples.is_empty(), "examples/index.json lists no example");
    let mut failures = Vec::new();
    for example in &examples {
        let name = format!("{} ({} {})", example.file, example.method, example.path);
        if example.description.trim().is_empty() {
            failures.push(format!("{name}: no description"));
        }
        if example.file.contains("..") || example.file.starts_with('/') {
            failures.push(format!("{name}: the file must be inside examples/"));
            continue;
        }
        let file = repository().join("examples").join(&example.file);
        let body = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        // A text body (a Cedar policy file) is checked against the media
        // types the route documents, since there is no schema to hold it to.
        if !example.file.ends_with(".json") {
            if let Err(error) = takes_text(&document, &example.method, &example.path) {
                failures.push(format!("{name}: {error}"));
            }
            continue;
        }
        let body: Value = match serde_json::from_str(&body) {
            Ok(body) => body,
            Err(error) => {
                failures.push(format!("{name}: not JSON: {error}"));
                continue;
            }
        };
        let schema = match request_schema(&document, &example.method, &example.path) {
            Ok(schema) => schema,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        for error in validator.iter_errors(&body) {
            failures.push(format!("{name}: at `{}`: {error}", error.instance_path()));
        }
    }
    assert!(failures.is_empty(), "examples that do not match the document:\n{}", failures.join("\n"));
}

/// The check above can fail: an example that breaks its schema is caught.
#[test]
fn a_body_the_schema_refuses_is_caught() {
    let document = document();
    let schema = request_schema(&document, "POST", "/v1/is_authorized").unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let good = serde_json::json!({"principal": "User::\"alice\"", "action": "Action::\"read\"", "resource": {"type": "Record", "id": "r-1"}});
    assert!(validator.is_valid(&good));
    for bad in [
        serde_json::json!({"principal": "User::\"alice\"", "resource": "Record::\"r-1\""}),
        serde_json::json!({"action": "Action::\"read\"", "resource": "Record::\"r-1\"", "princpal": "User::\"alice\""}),
        serde_json::json!({"action": "Action::\"read\"", "resource": 7}),
        serde_json::json!({"action": "Action::\"read\"", "resource": {"type": "Record"}}),
    ] {
        assert!(!validator.is_valid(&bad), "{bad}");
    }
    assert!(request_schema(&document, "POST", "/v1/no_such_route").is_err());
    assert!(request_schema(&document, "GET", "/healthz").is_err());
}

/// Every `@examples/NAME` the README and the documents under `docs/` send
/// with curl is in the manifest, so the test above checks it.
#[test]
fn every_example_the_documentation_sends_is_in_the_manifest() {
    let listed: BTreeSet<String> = examples().into_iter().map(|example| example.file).collect();
    let mut documents = vec![repository().join("README.md")];
    if let Ok(entries) = std::fs::read_dir(repository().join("docs")) {
        documents.extend(
            entries
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "md")),
        );
    }
    let mut unlisted = Vec::new();
    for document in &documents {
        let text = std::fs::read_to_string(document).unwrap();
        for name in example_references(&text) {
            if !listed.contains(&name) {
                unlisted.push(format!("{}: @examples/{name}", document.display()));
            }
        }
    }
    assert!(unlisted.is_empty(), "not in examples/index.json:\n{}", unlisted.join("\n"));

    let on_disk: BTreeSet<String> = std::fs::read_dir(repository().join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json") && name != "index.json")
        .collect();
    let unlisted_files: Vec<_> = on_disk.difference(&listed).collect();
    assert!(unlisted_files.is_empty(), "example files not in examples/index.json: {unlisted_files:?}");
}

/// The file names after `@examples/` in `text`.
fn example_references(text: &str) -> Vec<String> {
    text.match_indices("@examples/")
        .map(|(at, marker)| {
            text[at + marker.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
                .collect::<String>()
                .trim_end_matches('.')
                .to_owned()
        })
        .collect()
}

#[test]
fn example_references_are_read_from_curl_lines() {
    let text = "curl -d @examples/consent-c-100.json localhost\n`-d @examples/a_b.json`.";
    assert_eq!(example_references(text), ["consent-c-100.json", "a_b.json"]);
}

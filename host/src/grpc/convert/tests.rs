use consentry_engine::{Decision, Obligation, ObligationKind, Outcome};
use envoy_types::pb::envoy::config::core::v3::HeaderMap;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::Request;
use uuid::Uuid;

use super::*;

fn check(http: HttpRequest) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request { http: Some(http), ..Request::default() }),
            ..AttributeContext::default()
        }),
    }
}

fn get(path: &str, headers: &[(&str, &str)]) -> HttpRequest {
    HttpRequest {
        method: "GET".to_owned(),
        path: path.to_owned(),
        host: "fhir.example".to_owned(),
        headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        ..HttpRequest::default()
    }
}

fn decided(decision: Decision) -> Decided {
    Decided { id: Uuid::now_v7(), decision, plugins: Vec::new() }
}

fn allow(obligations: Vec<Obligation>) -> Decision {
    Decision { outcome: Outcome::Allow, obligations, ..Decision::fail_closed("") }
}

fn header_of<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
}

#[test]
fn the_query_is_split_from_the_path_and_the_headers_are_those_of_the_http_service() {
    let http = get(
        "/fhir/Observation?patient=p-1&category=laboratory",
        &[
            (":authority", "fhir.example"),
            (":path", "/fhir/Observation?patient=p-1"),
            ("x-principal", "Practitioner/dr-weber"),
            ("x-note", "caf\u{e9}"),
            ("Authorization", "Bearer theirs"),
        ],
    );
    let proxied = proxied_request(&check(http)).unwrap();
    assert_eq!(proxied.method, "GET");
    assert_eq!(proxied.path, "/fhir/Observation");
    assert_eq!(proxied.query, "patient=p-1&category=laboratory");
    let names: Vec<&str> = proxied.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["authorization", "host", "x-principal"],
        "pseudo-headers and non-ASCII values are left out"
    );
    assert!(proxied.headers.contains(&("host".to_owned(), "fhir.example".to_owned())));
}

#[test]
fn raw_headers_are_read_when_envoy_sends_them() {
    let mut http = get("/", &[]);
    http.header_map = Some(HeaderMap {
        headers: vec![
            HeaderValue {
                key: "x-principal".to_owned(),
                value: String::new(),
                raw_value: b"Practitioner/dr-ali".to_vec(),
            },
            HeaderValue { key: "x-bad".to_owned(), value: String::new(), raw_value: vec![0xff, 0x01] },
            HeaderValue {
                key: "host".to_owned(),
                value: String::new(),
                raw_value: b"other.example".to_vec(),
            },
        ],
    });
    let proxied = proxied_request(&check(http)).unwrap();
    assert_eq!(
        proxied.headers,
        [
            ("host".to_owned(), "other.example".to_owned()),
            ("x-principal".to_owned(), "Practitioner/dr-ali".to_owned())
        ]
    );
}

#[test]
fn a_check_that_is_not_about_an_http_request_is_refused_naming_the_field() {
    assert_eq!(proxied_request(&CheckRequest::default()), Err(InvalidCheck::NotHttp));
    let mut http = get("/fhir", &[]);
    http.method = "GET /".to_owned();
    assert_eq!(proxied_request(&check(http)), Err(InvalidCheck::Method));
    assert_eq!(proxied_request(&check(get("/fhir\n/x", &[]))), Err(InvalidCheck::Path));
    assert_eq!(proxied_request(&check(get("", &[]))).unwrap().path, "/");
    let refused = refused(&AppError::from(InvalidCheck::Method));
    assert_eq!(refused.status.as_ref().unwrap().code, Code::InvalidArgument as i32);
    let Some(HttpResponse::DeniedResponse(denied)) = &refused.http_response else { panic!("{refused:?}") };
    assert_eq!(denied.status.unwrap().code, 400);
    let body: serde_json::Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["field"], "attributes.request.http.method");
}

#[test]
fn an_allow_adds_its_headers_upstream_and_removes_a_clients_obligations() {
    let answer = answer(&decided(allow(Vec::new())));
    assert_eq!(answer.status.as_ref().unwrap().code, Code::Ok as i32);
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else { panic!("{answer:?}") };
    assert_eq!(header_of(&ok.headers, "x-consentry-decision"), Some("allow"));
    assert_eq!(header_of(&ok.headers, "x-consentry-outcome"), Some("allow"));
    assert!(ok.headers.iter().all(|h| h.append_action == HeaderAppendAction::OverwriteIfExistsOrAdd as i32));
    assert_eq!(ok.headers_to_remove, [OBLIGATIONS_HEADER]);
    let metadata = answer.dynamic_metadata.unwrap();
    assert_eq!(metadata.fields["decision"], string("allow"));
    assert!(!metadata.fields.contains_key("obligations"));
}

#[test]
fn obligations_are_in_the_headers_and_in_the_metadata_as_structure() {
    let notify = Obligation {
        id: "notify-patient".to_owned(),
        kind: ObligationKind::Obligation,
        policy: "break-glass".to_owned(),
        values: vec!["within 24h".to_owned()],
        filter: None,
    };
    let answer = answer(&decided(allow(vec![notify])));
    let Some(HttpResponse::OkResponse(ok)) = &answer.http_response else { panic!("{answer:?}") };
    assert!(ok.headers_to_remove.is_empty());
    let header: serde_json::Value =
        serde_json::from_str(header_of(&ok.headers, OBLIGATIONS_HEADER).unwrap()).unwrap();
    assert_eq!(header[0]["id"], "notify-patient");
    let metadata = answer.dynamic_metadata.unwrap();
    let Some(Kind::ListValue(list)) = &metadata.fields["obligations"].kind else { panic!("{metadata:?}") };
    let Some(Kind::StructValue(first)) = &list.values[0].kind else { panic!("{list:?}") };
    assert_eq!(first.fields["id"], string("notify-patient"));
    let Some(Kind::ListValue(values)) = &first.fields["values"].kind else { panic!("{first:?}") };
    assert_eq!(values.values, [string("within 24h")]);
}

#[test]
fn a_deny_is_a_403_with_only_the_decision_and_its_id() {
    let deny = decided(Decision::fail_closed("the mapper failed on patient p-1"));
    let answer = answer(&deny);
    assert_eq!(answer.status.as_ref().unwrap().code, Code::PermissionDenied as i32);
    let Some(HttpResponse::DeniedResponse(denied)) = &answer.http_response else { panic!("{answer:?}") };
    assert_eq!(denied.status.unwrap().code, 403);
    assert_eq!(header_of(&denied.headers, "x-consentry-decision"), Some("deny"));
    assert_eq!(header_of(&denied.headers, "x-consentry-outcome"), Some("failed_closed"));
    let decision_id = deny.id.to_string();
    assert_eq!(header_of(&denied.headers, "x-consentry-decision-id"), Some(decision_id.as_str()));
    assert!(!denied.body.contains("p-1"), "the reason is for operators: {}", denied.body);
    assert_eq!(answer.dynamic_metadata.unwrap().fields["decision_id"], string(&decision_id));
}

#[test]
fn json_becomes_protobuf_values_of_the_same_shape() {
    let json = serde_json::json!({"a": [1, true, null, "x"], "b": {"c": 2.5}});
    let Some(Kind::StructValue(top)) = value(json).kind else { panic!() };
    let Some(Kind::ListValue(a)) = &top.fields["a"].kind else { panic!() };
    assert_eq!(a.values[0].kind, Some(Kind::NumberValue(1.0)));
    assert_eq!(a.values[1].kind, Some(Kind::BoolValue(true)));
    assert_eq!(a.values[2].kind, Some(Kind::NullValue(0)));
    let Some(Kind::StructValue(b)) = &top.fields["b"].kind else { panic!() };
    assert_eq!(b.fields["c"].kind, Some(Kind::NumberValue(2.5)));
}

//! Envoy's gRPC external authorization through the real binary
//! (`--grpc-bind`), asked by a real tonic client with the `CheckRequest`
//! shapes Envoy sends: the same mappers, decisions and decision log as the
//! HTTP service, over HTTP/2 and over TLS, and the proxied requests' own
//! JWTs verified against keys a real JWKS endpoint serves.

use std::collections::HashMap;

use consentry_test_plugins::{FACT_REWRITER, FHIR_REST_MAPPER};
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value as ProtoValue};
use envoy_types::pb::google::rpc::Code;
use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::audit::wait_for_records;
use crate::identity::JwksEndpoint;
use crate::identity::test_keys::{self, AUDIENCE, ISSUER, TestKey, claims, now};
use crate::plugins::{config, envoy_check, plugin};
use crate::support::{ADMIN_TOKEN, Server, repo_root};

/// A tonic client of the server's gRPC listener, with a runtime of its own
/// since the tests are synchronous.
struct Client {
    runtime: tokio::runtime::Runtime,
    client: AuthorizationClient<Channel>,
}

impl Client {
    fn connect(server: &Server) -> Self {
        let url = server.grpc_url.clone().expect("the server was started with --grpc-bind");
        Self::over(Endpoint::from_shared(url).unwrap())
    }

    fn over(endpoint: Endpoint) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let channel = runtime.block_on(endpoint.connect()).unwrap();
        Self { runtime, client: AuthorizationClient::new(channel) }
    }

    /// `Check`, with `token` as the call's bearer token if given.
    fn check(&mut self, check: CheckRequest, token: Option<&str>) -> Result<CheckResponse, tonic::Status> {
        let mut request = tonic::Request::new(check);
        if let Some(token) = token {
            request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.runtime.block_on(self.client.check(request)).map(tonic::Response::into_inner)
    }
}

/// What Envoy's HTTP filter sends for a proxied HTTP/1.1 request: the
/// method, the path with its query, the host, every header (pseudo-headers
/// included) and the peers.
fn envoy_request(method: &str, path_and_query: &str, headers: &[(&str, &str)]) -> CheckRequest {
    let mut all: HashMap<String, String> =
        headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    all.insert(":authority".to_owned(), "fhir.example".to_owned());
    all.insert(":method".to_owned(), method.to_owned());
    all.insert(":path".to_owned(), path_and_query.to_owned());
    all.insert("x-request-id".to_owned(), "0b6c6b1e-5b5f-4c1d-9d5c-3c0e2c5f3a11".to_owned());
    let peer = |port| Peer {
        address: Some(envoy_types::pb::envoy::config::core::v3::Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.7".to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        }),
        ..Peer::default()
    };
    let http = HttpRequest {
        id: "4815162342".to_owned(),
        method: method.to_owned(),
        headers: all,
        path: path_and_query.to_owned(),
        host: "fhir.example".to_owned(),
        scheme: "https".to_owned(),
        protocol: "HTTP/1.1".to_owned(),
        size: 0,
        ..HttpRequest::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(51234)),
            destination: Some(peer(8443)),
            request: Some(Request { http: Some(http), ..Request::default() }),
            ..AttributeContext::default()
        }),
    }
}

const EMERGENCY: [(&str, &str); 3] = [
    ("x-principal", "Practitioner/dr-ali"),
    ("x-purpose-of-use", "BTG"),
    ("x-justification", "unconscious on arrival"),
];

fn header<'a>(headers: &'a [HeaderValueOption], name: &str) -> Option<&'a str> {
    headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
}

fn code(response: &CheckResponse) -> i32 {
    response.status.as_ref().unwrap().code
}

/// The headers of an answer, whether it allows or denies.
fn headers_of(response: &CheckResponse) -> &[HeaderValueOption] {
    match response.http_response.as_ref().unwrap() {
        HttpResponse::OkResponse(ok) => &ok.headers,
        HttpResponse::DeniedResponse(denied) => &denied.headers,
        HttpResponse::ErrorResponse(error) => panic!("an error response: {error:?}"),
    }
}

fn metadata_string<'a>(metadata: &'a Struct, key: &str) -> &'a str {
    match &metadata.fields[key].kind {
        Some(Kind::StringValue(text)) => text,
        other => panic!("`{key}` is not a string: {other:?}"),
    }
}

/// A protobuf value back as JSON, to compare with the header's JSON.
fn json_of(value: &ProtoValue) -> Value {
    match value.kind.as_ref().unwrap() {
        Kind::NullValue(_) => Value::Null,
        Kind::NumberValue(n) => json!(n),
        Kind::StringValue(s) => json!(s),
        Kind::BoolValue(b) => json!(b),
        Kind::StructValue(s) => {
            Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), json_of(v))).collect())
        }
        Kind::ListValue(l) => Value::Array(l.values.iter().map(json_of).collect()),
    }
}

fn fhir_server(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let (dir, path) = config(&plugin("fhir", FHIR_REST_MAPPER, "\"map-request\"", ""));
    // The tests name the principal in `x-principal`, as in the HTTP tests.
    let mut args =
        vec!["--plugins", path.to_str().unwrap(), "--grpc-bind", "127.0.0.1:0", "--trust-principal-header"];
    args.extend_from_slice(extra);
    let server = Server::start(&repo_root().join("policies"), &args);
    (dir, server)
}

#[test]
fn grpc_check_with_the_fhir_mapper_allows_denies_and_fails_closed_as_the_http_service_does() {
    let (_dir, server) = fhir_server(&[]);
    assert!(server.grpc_url.as_deref().unwrap().starts_with("http://127.0.0.1:"));
    let mut client = Client::connect(&server);

    // Allow: the break-glass obligations go upstream in the headers and
    // into the dynamic metadata.
    let allowed = client.check(envoy_request("GET", "/fhir/Observation/obs-1", &EMERGENCY), None).unwrap();
    assert_eq!(code(&allowed), Code::Ok as i32, "{allowed:?}");
    let Some(HttpResponse::OkResponse(ok)) = &allowed.http_response else { panic!("{allowed:?}") };
    assert_eq!(header(&ok.headers, "x-consentry-decision"), Some("allow"));
    assert_eq!(header(&ok.headers, "x-consentry-outcome"), Some("allow"));
    let allow_id = header(&ok.headers, "x-consentry-decision-id").unwrap().to_owned();
    assert_eq!(allow_id.len(), 36, "{allow_id}");
    let obligations: Value =
        serde_json::from_str(header(&ok.headers, "x-consentry-obligations").unwrap()).unwrap();
    assert_eq!(obligations[0]["id"], "notify-patient");
    assert!(ok.headers_to_remove.is_empty());
    let metadata = allowed.dynamic_metadata.as_ref().unwrap();
    assert_eq!(metadata_string(metadata, "decision"), "allow");
    assert_eq!(metadata_string(metadata, "decision_id"), allow_id);
    assert_eq!(json_of(&metadata.fields["obligations"]), obligations, "the same obligations, as structure");

    // Deny: a 403 for the end client, with the decision's headers.
    let not_his = [("x-principal", "Practitioner/dr-chen"), ("x-purpose-of-use", "TREAT")];
    let denied = client
        .check(envoy_request("GET", "/fhir/Patient/p-100/Observation?category=laboratory", &not_his), None)
        .unwrap();
    assert_eq!(code(&denied), Code::PermissionDenied as i32, "{denied:?}");
    let Some(HttpResponse::DeniedResponse(deny)) = &denied.http_response else { panic!("{denied:?}") };
    assert_eq!(deny.status.unwrap().code, 403);
    assert_eq!(header(&deny.headers, "x-consentry-decision"), Some("deny"));
    assert_eq!(header(&deny.headers, "x-consentry-outcome"), Some("not_permitted"));
    assert_eq!(header(&deny.headers, "x-consentry-obligations"), None);
    let body: Value = serde_json::from_str(&deny.body).unwrap();
    assert_eq!(body["decision"], "Deny");
    assert_eq!(body["decision_id"].as_str(), header(&deny.headers, "x-consentry-decision-id"));
    let metadata = denied.dynamic_metadata.as_ref().unwrap();
    assert_eq!(metadata_string(metadata, "outcome"), "not_permitted");
    assert!(!metadata.fields.contains_key("obligations"));

    // The mapper fails: a create that names no patient.
    let failed =
        client.check(envoy_request("POST", "/fhir/Observation?name=Anna", &EMERGENCY), None).unwrap();
    assert_eq!(code(&failed), Code::PermissionDenied as i32);
    assert_eq!(header(headers_of(&failed), "x-consentry-outcome"), Some("failed_closed"));
    let failed_id = header(headers_of(&failed), "x-consentry-decision-id").unwrap().to_owned();

    // No mapper recognises a request outside the FHIR base.
    let unmapped = client.check(envoy_request("GET", "/admin/settings", &EMERGENCY), None).unwrap();
    assert_eq!(code(&unmapped), Code::PermissionDenied as i32);
    assert_eq!(header(headers_of(&unmapped), "x-consentry-outcome"), Some("failed_closed"));

    // The HTTP service answers each of them the same.
    for (method, path, headers, outcome) in [
        ("GET", "/fhir/Observation/obs-1", &EMERGENCY[..], "allow"),
        ("GET", "/fhir/Patient/p-100/Observation?category=laboratory", &not_his[..], "not_permitted"),
        ("POST", "/fhir/Observation?name=Anna", &EMERGENCY[..], "failed_closed"),
        ("GET", "/admin/settings", &EMERGENCY[..], "failed_closed"),
    ] {
        let (_, http_headers) = envoy_check(&server, method, path, headers);
        let http_outcome =
            http_headers.iter().find(|(n, _)| n == "x-consentry-outcome").map(|(_, v)| v.as_str());
        assert_eq!(http_outcome, Some(outcome), "{method} {path}");
    }

    // Every gRPC answer is in the decision log, with what the mapper did.
    let records = wait_for_records(server.audit.as_ref().unwrap().path(), 4);
    assert_eq!(records[0]["decision_id"], allow_id.as_str());
    assert_eq!(records[0]["plugins"], json!(["fhir/map-request: ok"]));
    assert_eq!(records[0]["principal"], "Practitioner::\"dr-ali\"");
    assert_eq!(records[2]["decision_id"], failed_id.as_str());
    assert_eq!(records[2]["action"], "HTTP POST");
    assert_eq!(records[2]["resource"], "/fhir/Observation", "the query (search terms) is not recorded");
    assert_eq!(records[2]["plugins"], json!(["fhir/map-request: returned-error, denied"]));
    assert_eq!(records[3]["resource"], "/admin/settings");
}

#[test]
fn grpc_check_refuses_what_is_not_an_http_request_and_a_check_over_the_body_limit() {
    let (_dir, server) = fhir_server(&["--max-body", "4096"]);
    let mut client = Client::connect(&server);

    let refused = client.check(CheckRequest::default(), None).unwrap();
    assert_eq!(code(&refused), Code::InvalidArgument as i32, "{refused:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = &refused.http_response else { panic!("{refused:?}") };
    assert_eq!(denied.status.unwrap().code, 400);
    let body: Value = serde_json::from_str(&denied.body).unwrap();
    assert_eq!(body["field"], "attributes.request.http", "{body}");

    let mut bad_method = envoy_request("GET", "/fhir/Observation/obs-1", &EMERGENCY);
    bad_method.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap().method =
        "GET /".to_owned();
    let refused = client.check(bad_method, None).unwrap();
    assert_eq!(code(&refused), Code::InvalidArgument as i32, "{refused:?}");

    let huge = "x".repeat(8192);
    let oversized = envoy_request("GET", "/fhir/Observation/obs-1", &[("x-principal", huge.as_str())]);
    let status = client.check(oversized, None).unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // The connection and the server are fine afterwards.
    let allowed = client.check(envoy_request("GET", "/fhir/Observation/obs-1", &EMERGENCY), None).unwrap();
    assert_eq!(code(&allowed), Code::Ok as i32);
}

#[test]
fn a_mapper_whose_request_is_refused_denies_over_grpc() {
    // The rewriter maps every request to a break-glass read whose principal
    // claims a group the store does not give him: the mapper's fault.
    let (_dir, path) = config(&plugin("rewriter", FACT_REWRITER, "\"map-request\"", ""));
    let args = ["--plugins", path.to_str().unwrap(), "--grpc-bind", "127.0.0.1:0"];
    let server = Server::start(&repo_root().join("policies"), &args);
    let mut client = Client::connect(&server);
    let denied = client.check(envoy_request("GET", "/anything", &[]), None).unwrap();
    assert_eq!(code(&denied), Code::PermissionDenied as i32, "{denied:?}");
    assert_eq!(header(headers_of(&denied), "x-consentry-outcome"), Some("failed_closed"));
    // Recorded as a request that never became a valid Cedar request.
    let records = wait_for_records(server.audit.as_ref().unwrap().path(), 1);
    assert_eq!(records[0]["decision_id"].as_str(), header(headers_of(&denied), "x-consentry-decision-id"));
    assert_eq!(
        (&records[0]["action"], &records[0]["outcome"]),
        (&json!("HTTP GET"), &json!("failed_closed"))
    );
    let (status, _) = envoy_check(&server, "GET", "/anything", &[]);
    assert_eq!(status, 403, "the HTTP service refuses it too");
}

#[test]
fn grpc_check_needs_the_decision_token_in_the_call_metadata_when_decisions_do() {
    let (_dir, server) = fhir_server(&["--decisions", "token"]);
    let mut client = Client::connect(&server);
    let check = || envoy_request("GET", "/fhir/Observation/obs-1", &EMERGENCY);

    let refused = client.check(check(), None).unwrap();
    assert_eq!(code(&refused), Code::Unauthenticated as i32, "{refused:?}");
    let Some(HttpResponse::DeniedResponse(denied)) = &refused.http_response else { panic!("{refused:?}") };
    assert_eq!(denied.status.unwrap().code, 401);
    assert_eq!(serde_json::from_str::<Value>(&denied.body).unwrap()["error"], "unauthorized");
    assert_eq!(code(&client.check(check(), Some("not-a-token")).unwrap()), Code::Unauthenticated as i32);

    // The proxied request's own Authorization is the end client's, not ours.
    let mut theirs = check();
    let http = theirs.attributes.as_mut().unwrap().request.as_mut().unwrap().http.as_mut().unwrap();
    http.headers.insert("authorization".to_owned(), format!("Bearer {ADMIN_TOKEN}"));
    assert_eq!(code(&client.check(theirs, None).unwrap()), Code::Unauthenticated as i32);

    let allowed = client.check(check(), Some(ADMIN_TOKEN)).unwrap();
    assert_eq!(code(&allowed), Code::Ok as i32, "{allowed:?}");
}

#[test]
fn grpc_is_served_over_tls_with_the_listeners_certificate() {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let (_plugins, server) =
        fhir_server(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    let url = server.grpc_url.clone().unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(generated.cert.pem()))
        .domain_name("localhost");
    let mut client = Client::over(Endpoint::from_shared(url).unwrap().tls_config(tls).unwrap());
    let allowed = client.check(envoy_request("GET", "/fhir/Observation/obs-1", &EMERGENCY), None).unwrap();
    assert_eq!(code(&allowed), Code::Ok as i32, "{allowed:?}");
}

/// A server that verifies the proxied requests' own JWTs against the keys
/// a real JWKS endpoint serves, and trusts no `x-principal`.
fn oidc_server(jwks: &JwksEndpoint) -> (tempfile::TempDir, Server) {
    let (dir, path) = config(&plugin("fhir", FHIR_REST_MAPPER, "\"map-request\"", ""));
    let args = [
        "--plugins",
        path.to_str().unwrap(),
        "--grpc-bind",
        "127.0.0.1:0",
        "--oidc-issuer",
        ISSUER,
        "--oidc-audience",
        AUDIENCE,
        "--oidc-jwks-url",
        &jwks.server.url,
    ];
    let server = Server::start(&repo_root().join("policies"), &args);
    (dir, server)
}

/// A proxied request carrying `token` as its own `Authorization: Bearer`.
fn with_jwt(method: &str, path: &str, token: &str, extra: &[(&str, &str)]) -> CheckRequest {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend_from_slice(extra);
    envoy_request(method, path, &headers)
}

#[test]
fn grpc_check_decides_as_the_proxied_requests_jwt_and_denies_a_refused_one() {
    let key = TestKey::p256("ec-1");
    let jwks = JwksEndpoint::start(test_keys::jwks(&[&key]));
    let (_dir, server) = oidc_server(&jwks);
    let mut client = Client::connect(&server);

    // A SMART patient app's token: allowed as the patient, for what its scopes grant.
    let patient_app = key.sign(&claims(json!({
        "fhirUser": "Patient/p-100",
        "scope": "openid patient/Observation.rs",
        "purpose_of_use": "PATRQT",
    })));
    let own = client.check(with_jwt("GET", "/fhir/Observation/obs-1", &patient_app, &[]), None).unwrap();
    assert_eq!(code(&own), Code::Ok as i32, "{own:?}");
    assert_eq!(header(headers_of(&own), "x-consentry-decision"), Some("allow"));
    let own_id = header(headers_of(&own), "x-consentry-decision-id").unwrap().to_owned();
    let condition = client.check(with_jwt("GET", "/fhir/Condition/cond-1", &patient_app, &[]), None).unwrap();
    assert_eq!(
        code(&condition),
        Code::PermissionDenied as i32,
        "the scopes grant no Condition: {condition:?}"
    );
    assert_eq!(header(headers_of(&condition), "x-consentry-outcome"), Some("forbidden"));

    // A practitioner's token in an emergency: the justification still comes
    // from the proxied request, the principal and purpose from the token.
    let practitioner = key.sign(&claims(json!({"fhirUser": "Practitioner/dr-ali", "purpose_of_use": "BTG"})));
    let justified = [("x-justification", "unconscious on arrival")];
    let glass =
        client.check(with_jwt("GET", "/fhir/Observation/obs-1", &practitioner, &justified), None).unwrap();
    assert_eq!(code(&glass), Code::Ok as i32, "{glass:?}");
    let obligations: Value =
        serde_json::from_str(header(headers_of(&glass), "x-consentry-obligations").unwrap()).unwrap();
    assert_eq!(obligations[0]["id"], "notify-patient");
    let glass_id = header(headers_of(&glass), "x-consentry-decision-id").unwrap().to_owned();

    // A refused token is a denial naming why, not a gRPC error, and never
    // repeats the token.
    let expired = key.sign(&claims(json!({"exp": now() - 600, "fhirUser": "Patient/p-100"})));
    let impostor = TestKey::p256("ec-1").sign(&claims(json!({"fhirUser": "Patient/p-100"})));
    for (token, why) in [(&expired, "expired"), (&impostor, "signature")] {
        let refused = client.check(with_jwt("GET", "/fhir/Observation/obs-1", token, &[]), None).unwrap();
        assert_eq!(code(&refused), Code::Unauthenticated as i32, "{why}: {refused:?}");
        let Some(HttpResponse::DeniedResponse(denied)) = &refused.http_response else {
            panic!("{refused:?}")
        };
        assert_eq!(denied.status.unwrap().code, 401, "{why}");
        let body: Value = serde_json::from_str(&denied.body).unwrap();
        assert_eq!(body["error"], "unauthorized", "{why}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{why}: {body}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!format!("{refused:?}").contains(signature), "{why}: the answer repeats the token");
    }

    // The decision log names the tokens' principals.
    let records = wait_for_records(server.audit.as_ref().unwrap().path(), 3);
    let principal_of = |id: &str| {
        let record = records.iter().find(|r| r["decision_id"] == id).unwrap_or_else(|| panic!("{id}"));
        record["principal"].clone()
    };
    assert_eq!(principal_of(&own_id), "Patient::\"p-100\"");
    assert_eq!(principal_of(&glass_id), "Practitioner::\"dr-ali\"");
}

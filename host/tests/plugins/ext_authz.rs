//! `/ext_authz/*` with the FHIR REST mapper, as Envoy calls it.

use consentry_test_plugins::{FHIR_REST_MAPPER, GUARDIAN};

use super::*;

fn envoy(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(format!("/ext_authz{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

async fn mapper_app(extra_plugins: &str) -> App {
    app(&(plugin("fhir", path_of(FHIR_REST_MAPPER), &["map-request"], "") + extra_plugins)).await
}

const DR_ALI_BTG: [(&str, &str); 3] = [
    ("x-principal", "Practitioner/dr-ali"),
    ("x-purpose-of-use", "http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG"),
    ("x-justification", "unconscious on arrival"),
];

#[tokio::test]
async fn an_allowed_fhir_read_answers_200_with_the_decision_id_and_obligations() {
    let app = mapper_app("").await;
    let reply = send(&app.router, envoy(Method::GET, "/fhir/Observation/obs-1", &DR_ALI_BTG)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.headers["x-consentry-decision"], "allow");
    let id = reply.headers["x-consentry-decision-id"].to_str().unwrap();
    assert_eq!(reply.body["decision_id"], id);
    let obligations: Value =
        serde_json::from_str(reply.headers["x-consentry-obligations"].to_str().unwrap()).unwrap();
    let ids: Vec<&str> = obligations.as_array().unwrap().iter().filter_map(|o| o["id"].as_str()).collect();
    assert_eq!(ids, ["notify-patient", "audit-priority"]);
}

#[tokio::test]
async fn a_denied_fhir_request_answers_403_without_the_reason_in_the_body() {
    let app = mapper_app("").await;
    let headers = [("x-principal", "Practitioner/dr-chen"), ("x-purpose-of-use", "TREAT")];
    let reply = send(
        &app.router,
        envoy(Method::GET, "/fhir/Patient/p-100/Observation?category=laboratory", &headers),
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers["x-consentry-decision"], "deny");
    assert_eq!(reply.headers["x-consentry-outcome"], "not_permitted");
    assert_eq!(reply.body.as_object().unwrap().keys().collect::<Vec<_>>(), ["decision", "decision_id"]);
}

#[tokio::test]
async fn the_mapper_feeds_the_enrichers_and_consents() {
    // The guardian plugin applies to requests the mapper produced too.
    let app = mapper_app(&plugin("guardian", path_of(GUARDIAN), &["enrich"], examples::GUARDIAN_GRANT)).await;
    let parent = |patient: &str| {
        envoy(
            Method::GET,
            &format!("/fhir/Patient/{patient}"),
            &[("x-principal", "RelatedPerson/rp-otto"), ("x-purpose-of-use", "PWATRNY")],
        )
    };
    assert_eq!(send(&app.router, parent("p-400")).await.status, StatusCode::OK);
    assert_eq!(send(&app.router, parent("p-500")).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn requests_no_mapper_understands_or_cannot_map_are_denied() {
    let app = mapper_app("").await;
    for (request, outcome) in [
        (envoy(Method::GET, "/admin/secrets", &DR_ALI_BTG), "failed_closed"),
        (envoy(Method::GET, "/fhir/Observation/obs-1", &[("x-purpose-of-use", "TREAT")]), "failed_closed"),
        (
            envoy(Method::GET, "/fhir/Observation/obs-1", &[("x-principal", "Spaceship/enterprise")]),
            "failed_closed",
        ),
    ] {
        let reply = send(&app.router, request).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert_eq!(reply.headers["x-consentry-outcome"], outcome);
    }
}

#[tokio::test]
async fn without_a_mapper_every_request_is_denied() {
    let app = app("").await;
    let reply = send(&app.router, envoy(Method::GET, "/fhir/Observation/obs-1", &DR_ALI_BTG)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

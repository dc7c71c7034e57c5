//! The consent API over the bundled healthcare pack: storing FHIR R4 and R5
//! consents as versions, reading them back, refusing what cannot be honoured
//! with the JSON path of the problem, and decisions that obey the consent in
//! force on the very next request.

use super::*;

const CONSENT_SCOPE: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// FHIR R4: patient p-100 lets St. Mary's access her records for treatment
/// from 2026 to 2099, except records labelled PSY.
fn r4_treatment(status: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"},
        "dateTime": "2026-01-15",
        "provision": {
            "type": "permit",
            "period": {"start": "2026-01-01", "end": "2099-12-31"},
            "actor": [{
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                "reference": {"reference": "Organization/st-mary"}
            }],
            "action": [{"coding": [{"system": CONSENT_ACTION, "code": "access"}]}],
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
            "provision": [{"type": "deny", "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}]
        }
    })
}

/// The same consent with the id the URL of a `PUT` names.
fn r4_treatment_with_id(id: &str, status: &str) -> Value {
    let mut consent = r4_treatment(status);
    consent["id"] = json!(id);
    consent
}

/// FHIR R5: patient p-100 objects to every use of her records, with
/// `provisions` as the exceptions to that deny.
fn r5_opt_out(id: &str, provisions: Value) -> Value {
    json!({
        "resourceType": "Consent",
        "id": id,
        "status": "active",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "subject": {"reference": "Patient/p-100"},
        "date": "2026-02-01",
        "controller": [{"reference": "Organization/st-mary"}],
        "decision": "deny",
        "provision": provisions,
    })
}

/// An R5 exception that lets the break-glass group in for BTG.
fn break_glass_exception() -> Value {
    json!([{
        "actor": [{"reference": {"reference": "Group/break-glass"}}],
        "purpose": [{"system": ACT_REASON, "code": "BTG"}]
    }])
}

fn practitioner_request(principal: &str, action: &str, resource: &str, context: Value) -> Value {
    json!({
        "principal": uid("Practitioner", principal),
        "action": uid("Action", action),
        "resource": uid("Record", resource),
        "context": context,
    })
}

/// Dr. Weber (St. Mary's) reads `resource` for treatment.
fn weber_reads(resource: &str) -> Value {
    practitioner_request("dr-weber", "read", resource, json!({"purpose": "TREAT"}))
}

/// Dr. Ali (break-glass group) breaks the glass on `resource`.
fn ali_breaks_the_glass(resource: &str) -> Value {
    practitioner_request(
        "dr-ali",
        "read",
        resource,
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    )
}

async fn post_consent(app: &Router, body: &Value) -> Reply {
    send(app, admin(post("/v1/consents", body))).await
}

async fn put_consent(app: &Router, id: &str, body: &Value) -> Reply {
    send(app, admin(json_request(Method::PUT, &format!("/v1/consents/{id}"), body))).await
}

async fn get_consent(app: &Router, path: &str) -> Reply {
    send(app, admin(get(path))).await
}

/// `(outcome, reasons)` of a decision that must be answered.
async fn decide(app: &Router, body: &Value) -> (String, Vec<String>) {
    let answer = is_authorized(app, body).await;
    let outcome = answer["outcome"].as_str().expect("outcome is a string").to_owned();
    let reasons = answer["diagnostics"]["reason"]
        .as_array()
        .expect("reasons are an array")
        .iter()
        .map(|r| r.as_str().expect("a reason is a string").to_owned())
        .collect();
    (outcome, reasons)
}

fn not_permitted() -> (String, Vec<String>) {
    ("not_permitted".to_owned(), Vec::new())
}

fn determined(outcome: &str, reasons: &[&str]) -> (String, Vec<String>) {
    (outcome.to_owned(), reasons.iter().map(|r| (*r).to_owned()).collect())
}

fn obligation_ids(answer: &Value) -> Vec<&str> {
    answer["obligations"]
        .as_array()
        .expect("obligations are an array")
        .iter()
        .map(|o| o["id"].as_str().expect("an obligation id is a string"))
        .collect()
}

/// The consents listed for a patient, as `(id, version)`.
async fn listed(app: &Router, patient: &str) -> Vec<(String, u64)> {
    let reply = get_consent(app, &format!("/v1/patients/{patient}/consents")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["patient"], patient, "{}", reply.text);
    reply.body["consents"]
        .as_array()
        .unwrap_or_else(|| panic!("a consents array: {}", reply.text))
        .iter()
        .map(|c| (c["summary"]["id"].as_str().unwrap().to_owned(), c["summary"]["version"].as_u64().unwrap()))
        .collect()
}

/// A refused consent: its status and code, and the JSON path of the problem
/// as `field`, which the message names.
fn assert_consent_refused(reply: &Reply, status: StatusCode, code: &str, field: &str) {
    assert_eq!(reply.status, status, "{field}: {}", reply.text);
    assert_eq!(reply.body["error"], code, "{field}: {}", reply.text);
    assert_eq!(reply.body["field"], field, "{}", reply.text);
    let message = reply.body["message"].as_str().unwrap_or_else(|| panic!("a message: {}", reply.text));
    assert!(message.contains(field), "message `{message}` names `{field}`");
}

#[tokio::test]
async fn post_stores_version_1_under_a_fresh_id_and_get_returns_the_fhir_resource() {
    let app = pack_app().await;
    let posted = r4_treatment("active");
    let reply = post_consent(&app, &posted).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap_or_else(|| panic!("an id: {}", reply.text)).to_owned();
    assert!(!id.is_empty());
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["patient"], "p-100");
    assert_eq!(reply.body["status"], "active");
    assert_eq!(reply.body["fhir_version"], "R4");
    assert!(reply.body["recorded_at_unix_ms"].as_i64().is_some_and(|ms| ms > 0), "{}", reply.text);
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/v1/consents/{id}?version=1").as_str()));

    let got = get_consent(&app, &format!("/v1/consents/{id}")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    let etag = got.headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    assert_eq!(etag, Some("W/\"1\""));
    let mut expected = posted;
    expected["id"] = json!(id);
    expected["meta"] = json!({"versionId": "1"});
    assert_eq!(got.body, expected);

    // A second POST of the same body is another consent.
    let again = post_consent(&app, &r4_treatment("active")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_ne!(again.body["id"], json!(id));
    assert_eq!(listed(&app, "p-100").await.len(), 2);
}

#[tokio::test]
async fn put_supersedes_with_the_next_version_and_every_version_stays_readable() {
    let app = pack_app().await;
    let first = r4_treatment_with_id("c-1", "active");
    let reply = put_consent(&app, "c-1", &first).await;
    assert_eq!(reply.status, StatusCode::CREATED, "a new id is created: {}", reply.text);
    assert_eq!((reply.body["id"].as_str(), reply.body["version"].as_u64()), (Some("c-1"), Some(1)));
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("/v1/consents/c-1?version=1"));

    // The id in the body may be left out: the URL names the consent.
    let mut second = r4_treatment("inactive");
    second["dateTime"] = json!("2026-06-01");
    let reply = put_consent(&app, "c-1", &second).await;
    assert_eq!(reply.status, StatusCode::OK, "a further version is 200: {}", reply.text);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["status"], "inactive");
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("/v1/consents/c-1?version=2"));

    let latest = get_consent(&app, "/v1/consents/c-1").await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.text);
    assert_eq!(latest.headers.get(header::ETAG).and_then(|v| v.to_str().ok()), Some("W/\"2\""));
    assert_eq!(latest.body["status"], "inactive");
    assert_eq!(latest.body["dateTime"], "2026-06-01");
    assert_eq!(latest.body["id"], "c-1");
    assert_eq!(latest.body["meta"]["versionId"], "2");

    let old = get_consent(&app, "/v1/consents/c-1?version=1").await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text);
    assert_eq!(old.headers.get(header::ETAG).and_then(|v| v.to_str().ok()), Some("W/\"1\""));
    let mut expected = first;
    expected["meta"] = json!({"versionId": "1"});
    assert_eq!(old.body, expected);
    let explicit = get_consent(&app, "/v1/consents/c-1?version=2").await;
    assert_eq!(explicit.body, latest.body);
}

#[tokio::test]
async fn unknown_consent_and_unknown_version_are_404() {
    let app = pack_app().await;
    let reply = get_consent(&app, "/v1/consents/c-nope").await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    assert!(reply.body["message"].as_str().unwrap().contains("c-nope"), "{}", reply.text);

    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    for version in ["2", "0", "18446744073709551615"] {
        let reply = get_consent(&app, &format!("/v1/consents/c-1?version={version}")).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    }
    let reply = get_consent(&app, "/v1/consents/c-2?version=1").await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn version_that_is_not_a_number_is_400_naming_version() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    for query in ["version=abc", "version=-1", "version=1.5", "version="] {
        let reply = get_consent(&app, &format!("/v1/consents/c-1?{query}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("version"));
    }
    assert_eq!(get_consent(&app, "/v1/consents/c-1?version=1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn patient_list_has_the_latest_version_of_each_of_the_patients_consents() {
    let app = pack_app().await;
    assert_eq!(listed(&app, "p-100").await, []);
    for id in ["c-b", "c-a"] {
        let reply = put_consent(&app, id, &r4_treatment("active")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let mut other = r4_treatment("active");
    other["patient"] = json!({"reference": "Patient/p-300"});
    assert_eq!(put_consent(&app, "c-c", &other).await.status, StatusCode::CREATED);
    assert_eq!(put_consent(&app, "c-b", &r4_treatment("inactive")).await.status, StatusCode::OK);

    assert_eq!(listed(&app, "p-100").await, [("c-a".to_owned(), 1), ("c-b".to_owned(), 2)]);
    assert_eq!(listed(&app, "p-300").await, [("c-c".to_owned(), 1)]);
    assert_eq!(listed(&app, "p-999").await, []);

    let reply = get_consent(&app, "/v1/patients/p-100/consents").await;
    let entry = &reply.body["consents"][1];
    assert_eq!(entry["summary"]["status"], "inactive");
    assert_eq!(entry["summary"]["patient"], "p-100");
    assert_eq!(entry["summary"]["fhir_version"], "R4");
    assert_eq!(entry["resource"]["id"], "c-b");
    assert_eq!(entry["resource"]["status"], "inactive");
    assert_eq!(entry["resource"]["meta"]["versionId"], "2");
}

#[tokio::test]
async fn consent_routes_refuse_a_missing_or_wrong_token_with_401_and_store_nothing() {
    let app = pack_app().await;
    let writes = || {
        vec![
            post("/v1/consents", &r4_treatment("active")),
            json_request(Method::PUT, "/v1/consents/c-1", &r4_treatment_with_id("c-1", "active")),
            get("/v1/consents/c-1"),
            get("/v1/patients/p-100/consents"),
        ]
    };
    for token in [None, Some("wrong-token"), Some("")] {
        for request in writes() {
            let label = format!("{} {} with {token:?}", request.method(), request.uri());
            let request = match token {
                Some(token) => with_token(request, token),
                None => request,
            };
            let reply = send(&app, request).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{label}: {}", reply.text);
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized", None);
            let challenge = reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            assert_eq!(challenge, Some("Bearer"), "{label}");
        }
    }
    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

#[tokio::test]
async fn malformed_fhir_is_400_naming_the_json_path() {
    let app = pack_app().await;
    let mut cases = Vec::new();

    let mut consent = r4_treatment("active");
    consent["status"] = json!(3);
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent["provision"]["period"]["start"] = json!(2026);
    cases.push((consent, "provision.period.start"));

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"]["reference"] = json!(42);
    cases.push((consent, "provision.actor[0].reference.reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["securityLabel"] = json!({"code": "PSY"});
    cases.push((consent, "provision.provision[0].securityLabel"));

    let mut consent = r4_treatment("active");
    consent["provision"] = json!("permit");
    cases.push((consent, "provision"));

    let consent = r5_opt_out("c-1", json!([{"purpose": "TREAT"}]));
    cases.push((consent, "provision[0].purpose"));

    for (consent, field) in cases {
        let reply = post_consent(&app, &consent).await;
        assert_consent_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request", field);
        let reply = put_consent(&app, "c-1", &consent).await;
        assert_consent_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request", field);
    }

    // Not JSON at all, or not declared as JSON.
    let reply = send(
        &app,
        admin(request(Method::POST, "/v1/consents", Some("application/json"), "{\"resourceType\"")),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
    let body = r4_treatment("active").to_string();
    let reply = send(&app, admin(request(Method::POST, "/v1/consents", Some("text/plain"), body))).await;
    assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);

    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fhir_that_cannot_be_honoured_is_422_invalid_consent_naming_the_json_path() {
    let app = pack_app().await;
    let mut cases = Vec::new();

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"]["reference"] = json!("Device/pump-1");
    cases.push((consent, "provision.actor[0].reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"] = json!({"identifier": {"value": "st-mary"}});
    cases.push((consent, "provision.actor[0].reference"));

    let mut consent = r4_treatment("active");
    consent["status"] = json!("approved");
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent.as_object_mut().unwrap().remove("status");
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent["resourceType"] = json!("Observation");
    cases.push((consent, "resourceType"));

    let mut consent = r4_treatment("active");
    consent["patient"] = json!({"reference": "Group/ward-3"});
    cases.push((consent, "patient.reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["action"][0]["coding"][0]["code"] = json!("destroy");
    cases.push((consent, "provision.action[0].coding[0].code"));

    let mut consent = r4_treatment("active");
    consent["provision"]["period"]["start"] = json!("2026-13-01");
    cases.push((consent, "provision.period.start"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["type"] = json!("permit");
    cases.push((consent, "provision.provision[0].type"));

    let mut consent = r4_treatment("active");
    consent["provision"].as_object_mut().unwrap().remove("type");
    cases.push((consent, "provision.type"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["modifierExtension"] =
        json!([{"url": "http://example.org/fhir/StructureDefinition/only-if", "valueBoolean": true}]);
    cases.push((consent, "provision.provision[0].modifierExtension"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent.as_object_mut().unwrap().remove("decision");
    cases.push((consent, "decision"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent["provision"][0]["actor"] = json!([
        {"reference": {"reference": "Group/break-glass"}},
        {"reference": {"reference": "Location/icu"}}
    ]);
    cases.push((consent, "provision[0].actor[1].reference"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent["patient"] = json!({"reference": "Patient/p-100"});
    cases.push((consent, "patient"));

    for (consent, field) in cases {
        let reply = post_consent(&app, &consent).await;
        assert_consent_refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent", field);
        let reply = put_consent(&app, "c-1", &consent).await;
        assert_consent_refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent", field);
    }
    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

#[tokio::test]
async fn put_whose_body_id_differs_from_the_url_is_400_naming_id() {
    let app = pack_app().await;
    let reply = put_consent(&app, "c-1", &r4_treatment_with_id("c-2", "active")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("id"));
    for id in ["c-1", "c-2"] {
        assert_eq!(get_consent(&app, &format!("/v1/consents/{id}")).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    // Once stored, a later version must not name another consent either.
    assert_eq!(
        put_consent(&app, "c-1", &r4_treatment_with_id("c-1", "active")).await.status,
        StatusCode::CREATED
    );
    let reply = put_consent(&app, "c-1", &r4_treatment_with_id("c-2", "inactive")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("id"));
    let latest = get_consent(&app, "/v1/consents/c-1").await;
    assert_eq!(
        (latest.body["status"].as_str(), latest.body["meta"]["versionId"].as_str()),
        (Some("active"), Some("1"))
    );
}

#[tokio::test]
async fn caller_supplied_evaluation_time_is_400_naming_context_now() {
    let app = pack_app().await;
    // A consent that ended in 2020: a caller must not be able to move the clock back into it.
    let mut ended = r4_treatment_with_id("c-1", "active");
    ended["provision"]["period"] = json!({"start": "2019-01-01", "end": "2020-12-31"});
    assert_eq!(put_consent(&app, "c-1", &ended).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    let backdated = practitioner_request(
        "dr-weber",
        "read",
        "obs-1",
        json!({"purpose": "TREAT", "now": "2020-06-01T00:00:00Z"}),
    );
    let reply = send(&app, post("/v1/is_authorized", &backdated)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
    let escaped = practitioner_request(
        "dr-weber",
        "read",
        "obs-1",
        json!({"purpose": "TREAT", "now": {"__extn": {"fn": "datetime", "arg": "2020-06-01"}}}),
    );
    let reply = send(&app, post("/v1/is_authorized", &escaped)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));

    let batch = json!({"requests": [weber_reads("obs-1"), backdated]});
    let reply = send(&app, post("/v1/is_authorized/batch", &batch)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("requests[1].context.now"));

    let authzen = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"},
        "context": {"purpose": "TREAT", "now": "2020-06-01T00:00:00Z"},
    });
    let reply = send(&app, post("/access/v1/evaluation", &authzen)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
    let answers = evaluations(&app, &json!({"evaluations": [authzen]})).await;
    assert_eq!(decisions(&answers), [false]);
    assert_error_body(&answers[0]["context"]["error"], "invalid_request", Some("evaluations[0].context.now"));
    assert_eq!(answers[0]["context"]["error"]["status"], 400);

    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

/// The consent in force decides the very next request: a withdrawal
/// (`status: inactive`) is not left waiting in a cache.
#[tokio::test]
async fn withdrawal_denies_the_very_next_decision() {
    let app = pack_app().await;
    // Decided once without a consent, so "no consents" is what the cache holds.
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    let reply = put_consent(&app, "c-100", &r4_treatment_with_id("c-100", "active")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let allowed = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(allowed["decision"], "Allow", "{allowed}");
    assert_eq!(allowed["diagnostics"]["reason"], json!(["consent/c-100/v1/root"]));
    let summary = allowed["summary"].as_str().unwrap_or_else(|| panic!("a summary: {allowed}"));
    assert!(summary.contains("consent/c-100/v1/root"), "{summary}");

    let reply = put_consent(&app, "c-100", &r4_treatment_with_id("c-100", "inactive")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["version"], 2);
    let denied = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(denied["decision"], "Deny", "{denied}");
    assert_eq!(denied["outcome"], "not_permitted");
    assert_eq!(denied["diagnostics"]["reason"], json!([]));

    // Consenting again (version 3) allows again, naming the version in force.
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v3/root"]));
}

#[tokio::test]
async fn a_consent_moved_to_another_patient_no_longer_permits_for_the_first() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-1/v1/root"]));
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted());

    let mut moved = r4_treatment("active");
    moved["patient"] = json!({"reference": "Patient/p-300"});
    assert_eq!(put_consent(&app, "c-1", &moved).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, determined("allow", &["consent/c-1/v2/root"]));
}

#[tokio::test]
async fn a_draft_consent_is_stored_but_ignored_by_decisions() {
    let app = pack_app().await;
    let reply = put_consent(&app, "c-1", &r4_treatment("draft")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["status"], "draft");
    assert_eq!(listed(&app, "p-100").await, [("c-1".to_owned(), 1)]);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    for status in ["proposed", "rejected", "entered-in-error"] {
        assert_eq!(put_consent(&app, "c-1", &r4_treatment(status)).await.status, StatusCode::OK);
        assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted(), "{status}");
    }
    // The same consent made active does permit.
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-1/v5/root"]));
}

#[tokio::test]
async fn a_consent_permits_only_its_actor_purpose_period_and_unexcluded_labels() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));
    // PSY is excluded by the nested deny.
    let psy = is_authorized(&app, &weber_reads("psy-1")).await;
    assert_eq!(psy["outcome"], "forbidden", "{psy}");
    assert_eq!(psy["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]));
    assert!(psy["summary"].as_str().is_some_and(|s| s.contains("consent/c-100/v1/provision[0]")), "{psy}");
    // Another purpose, or someone outside St. Mary's.
    let marketing = practitioner_request("dr-weber", "read", "obs-1", json!({"purpose": "HMARKT"}));
    assert_eq!(decide(&app, &marketing).await, not_permitted());
    let research = practitioner_request("dr-chen", "read", "obs-1", json!({"purpose": "TREAT"}));
    assert_eq!(decide(&app, &research).await, not_permitted());
    // Another patient's record.
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted());
    // An action the consent does not name.
    let update = practitioner_request("dr-weber", "update", "obs-1", json!({"purpose": "TREAT"}));
    assert_eq!(decide(&app, &update).await, not_permitted());

    // A consent whose period has ended, or not yet begun, permits nothing.
    for (id, start, end) in [("c-old", "2019-01-01", "2020-12-31"), ("c-future", "2090-01-01", "2090-12-31")]
    {
        let mut consent = r4_treatment("active");
        consent["patient"] = json!({"reference": "Patient/p-300"});
        consent["provision"]["period"] = json!({"start": start, "end": end});
        assert_eq!(put_consent(&app, id, &consent).await.status, StatusCode::CREATED);
        assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted(), "{id}");
    }
}

#[tokio::test]
async fn search_of_a_record_with_an_excluded_label_is_allowed_with_a_redact_obligation() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    let search = practitioner_request("dr-weber", "search", "psy-1", json!({"purpose": "TREAT"}));
    let answer = is_authorized(&app, &search).await;
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(answer["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]/redact"]));
    assert_eq!(
        answer["obligations"],
        json!([{"id": "redact", "kind": "obligation", "policy": "consent/c-100/v1/provision[0]/redact", "values": ["PSY"]}])
    );
    // A search across the patient's records is allowed too, and the caller
    // must redact the PSY-labelled results.
    let search = json!({
        "principal": uid("Practitioner", "dr-weber"),
        "action": uid("Action", "search"),
        "resource": uid("Patient", "p-100"),
        "context": {"purpose": "TREAT"},
    });
    let (outcome, mut reasons) = decide(&app, &search).await;
    reasons.sort();
    assert_eq!(
        (outcome.as_str(), reasons),
        (
            "allow",
            vec!["consent/c-100/v1/provision[0]/redact".to_owned(), "consent/c-100/v1/root".to_owned()]
        )
    );
    let answer = is_authorized(&app, &search).await;
    let redact: Vec<&Value> =
        answer["obligations"].as_array().unwrap().iter().filter(|o| o["id"] == "redact").collect();
    assert_eq!(redact.len(), 1, "{answer}");
    assert_eq!(redact[0]["values"], json!(["PSY"]));
    // Without the consent, the same search has no legal basis.
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("inactive")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &search).await, not_permitted());
}

#[tokio::test]
async fn r5_opt_out_with_exceptions_permits_only_the_exceptions() {
    let app = pack_app().await;
    let consent = r5_opt_out(
        "c-r5",
        json!([{
            "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "action": [{"coding": [{"system": CONSENT_ACTION, "code": "access"}]}],
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}]
        }]),
    );
    let reply = put_consent(&app, "c-r5", &consent).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["fhir_version"], "R5");
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("allow", &["consent/c-r5/v1/provision[0]"])
    );
    let marketing = practitioner_request("dr-weber", "read", "obs-1", json!({"purpose": "HMARKT"}));
    assert_eq!(decide(&app, &marketing).await, determined("forbidden", &["consent/c-r5/v1/root"]));
}

#[tokio::test]
async fn a_patients_deny_beats_break_glass_unless_it_makes_an_exception_for_it() {
    let app = pack_app().await;
    let glass = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(glass["decision"], "Allow", "{glass}");
    assert_eq!(glass["diagnostics"]["reason"], json!(["break-glass"]));
    assert_eq!(obligation_ids(&glass), ["notify-patient", "audit-priority"]);

    let reply = put_consent(&app, "c-optout", &r5_opt_out("c-optout", json!([]))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let denied = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(denied["decision"], "Deny", "{denied}");
    assert_eq!(denied["outcome"], "forbidden");
    assert_eq!(denied["diagnostics"]["reason"], json!(["consent/c-optout/v1/root"]));
    assert_eq!(denied["obligations"], json!([]));

    // Version 2 lets the break-glass group in for BTG, and only them.
    let reply = put_consent(&app, "c-optout", &r5_opt_out("c-optout", break_glass_exception())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let allowed = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(allowed["decision"], "Allow", "{allowed}");
    let reasons = allowed["diagnostics"]["reason"].as_array().unwrap();
    assert!(reasons.contains(&json!("consent/c-optout/v2/provision[0]")), "{allowed}");
    assert!(obligation_ids(&allowed).contains(&"notify-patient"), "{allowed}");
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("forbidden", &["consent/c-optout/v2/root"])
    );
}

#[tokio::test]
async fn of_two_active_consents_a_matching_deny_wins() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-permit", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-permit/v1/root"]));
    let mut deny = r4_treatment("active");
    deny["provision"] = json!({
        "type": "deny",
        "actor": [{"reference": {"reference": "Practitioner/dr-weber"}}]
    });
    assert_eq!(put_consent(&app, "c-deny", &deny).await.status, StatusCode::CREATED);
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("forbidden", &["consent/c-deny/v1/root"])
    );
}

#[tokio::test]
async fn stored_consents_keep_deciding_after_the_policies_change() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));

    let original = send(&app, admin(get("/v1/policies"))).await.body["text"].as_str().unwrap().to_owned();
    let closed = format!("{original}\n@id(\"closed\") forbid(principal, action, resource);\n");
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), closed))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("forbidden", &["closed"]));

    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), original))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));
}

#[tokio::test]
async fn authzen_answers_carry_the_consent_and_a_summary() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    let body = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"},
        "context": {"purpose": "TREAT"},
    });
    let answer = evaluation(&app, &body).await;
    assert_eq!(answer["decision"], true, "{answer}");
    assert_eq!(answer["context"]["reason"]["policies"][0]["policy"], "consent/c-100/v1/root");
    let cedar_agent = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(answer["context"]["reason"]["summary"], cedar_agent["summary"]);

    let mut psy = body;
    psy["resource"]["id"] = json!("psy-1");
    let answer = evaluation(&app, &psy).await;
    assert_eq!(answer["decision"], false);
    assert_eq!(answer["context"]["reason"]["outcome"], "forbidden");
    let summary = answer["context"]["reason"]["summary"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(summary.contains("consent/c-100/v1/provision[0]"), "{summary}");
}

/// Regression: a problem with the consent as a whole (not an object, or
/// neither R4 nor R5) was blamed on a field named `.`, where every other
/// endpoint names no field for a whole-body problem (see
/// `errors::malformed_json_is_not_blamed_on_a_field_named_question_mark`).
#[tokio::test]
async fn whole_body_consent_problems_are_not_blamed_on_a_field_named_dot() {
    let app = pack_app().await;
    let cases = [
        (json!([]), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!("Consent"), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            json!({"resourceType": "Consent", "status": "active"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_consent",
        ),
    ];
    for (body, status, code) in cases {
        let reply = post_consent(&app, &body).await;
        assert_error(&reply, status, code, None);
    }
    assert_eq!(listed(&app, "p-100").await, []);
}

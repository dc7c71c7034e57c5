//! The consent API over the bundled healthcare pack: storing FHIR R4 and R5
//! consents as versions, reading them back, refusing what cannot be honoured
//! with the JSON path of the problem, and decisions that obey the consent in
//! force on the very next request. The fixtures and helpers are here; the
//! tests are split by what they are about.

use super::*;

mod deciding;
mod storing;

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

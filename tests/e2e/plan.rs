//! `POST /v1/plan` and `consentry plan` against the real binary (issue 15):
//! always, never and conditional answers over the bundled pack; consents
//! excluding labels, classes, codes and periods, with purpose limits,
//! research objections and Art. 18 restriction; a withdrawal that changes
//! the very next plan; and every record a filter admits is allowed when
//! decided.

use std::collections::BTreeSet;
use std::path::Path;

use consentry_engine::{EvaluationTime, RecordFacts, RecordFilter};
use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Server, binary, cedar_request, decide, put_consent, readme_consent, repo_root,
};

fn pack_server() -> Server {
    Server::start(&repo_root().join("policies"), &[])
}

fn plan_body(principal: &str, patient: &str, context: Value) -> Value {
    json!({"principal": principal, "action": "Action::\"read\"", "resource_type": "Record",
           "patient": {"type": "Patient", "id": patient}, "context": context})
}

fn plan(server: &Server, body: &Value) -> Value {
    let (status, answer) = server.post("/v1/plan", body);
    assert_eq!(status, 200, "{answer}");
    answer
}

fn filter_of(plan: &Value) -> RecordFilter {
    serde_json::from_value(plan["filter"].clone()).unwrap()
}

/// The records of `patient` in the bundled directory, as a filter reads them.
fn records(patient: &str) -> Vec<RecordFacts> {
    let text = std::fs::read_to_string(repo_root().join("policies/entities.json")).unwrap();
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect()
    };
    all.iter()
        .filter(|e| e["uid"]["type"] == "Record" && e["attrs"]["patient"]["id"] == patient)
        .map(|e| {
            let attrs = &e["attrs"];
            RecordFacts {
                id: e["uid"]["id"].as_str().unwrap().to_owned(),
                resource_type: attrs["resourceType"].as_str().unwrap().to_owned(),
                labels: strings(&attrs["labels"]),
                confidentiality: attrs["confidentiality"].as_str().unwrap().to_owned(),
                codes: attrs.get("codes").map(strings),
                date: attrs
                    .get("date")
                    .map(|d| EvaluationTime::parse(d.as_str().unwrap()).unwrap().unix_millis()),
            }
        })
        .collect()
}

/// Every record of `patient` the plan's filter admits is allowed when
/// decided; when the filter is exact, every other one is denied.
fn filter_agrees_with_decisions(server: &Server, body: &Value, answer: &Value) {
    let filter = filter_of(answer);
    let patient = body["patient"]["id"].as_str().unwrap();
    for record in records(patient) {
        let request = cedar_request(
            body["principal"].as_str().unwrap(),
            body["action"].as_str().unwrap(),
            &format!("Record::\"{}\"", record.id),
            body["context"].clone(),
        );
        let (decision, outcome) = decide(server, &request);
        if filter.admits(&record) {
            assert_eq!(decision, "Allow", "{} was admitted but is {outcome}: {answer}", record.id);
        } else if filter.exact {
            assert_eq!(decision, "Deny", "{} was left out but is allowed: {answer}", record.id);
        }
    }
}

const WEBER: &str = "Practitioner::\"dr-weber\"";
const TREAT: &str = "TREAT";

#[test]
fn plan_answers_always_never_and_conditional() {
    let server = pack_server();
    let own = plan_body("Patient::\"p-100\"", "p-100", json!({"purpose": "PATRQT"}));
    let answer = plan(&server, &own);
    assert_eq!(answer["kind"], "always", "{answer}");
    assert_eq!(answer["filter"], json!({"any_of": [{"all_of": []}], "exact": true}));
    assert_eq!(answer["fhir"]["queries"], json!([{"params": [], "complete": true}]));
    filter_agrees_with_decisions(&server, &own, &answer);

    let no_consent = plan_body(WEBER, "p-100", json!({"purpose": TREAT}));
    let answer = plan(&server, &no_consent);
    assert_eq!(answer["kind"], "never", "no legal basis: {answer}");
    assert_eq!(answer["fhir"]["queries"], json!([]));
    filter_agrees_with_decisions(&server, &no_consent, &answer);

    let no_purpose = plan_body(WEBER, "p-100", json!({}));
    assert_eq!(plan(&server, &no_purpose)["kind"], "never");

    let glass = plan_body(
        "Practitioner::\"dr-ali\"",
        "p-100",
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    );
    let answer = plan(&server, &glass);
    assert_eq!(answer["kind"], "conditional", "{answer}");
    assert_eq!(
        answer["filter"],
        json!({"any_of": [{"all_of": [{"attribute": "labels", "op": "contains_none", "values": ["GDIS"]}]}], "exact": true}),
        "break-glass does not open genetic data"
    );
    assert_eq!(
        answer["fhir"]["queries"],
        json!([{"params": ["_security:not=http://terminology.hl7.org/CodeSystem/v3-ActCode|GDIS"], "complete": true}])
    );
    filter_agrees_with_decisions(&server, &glass, &answer);

    // Without a patient the consents that govern each record are unknown: nothing is admitted.
    let mut anyone = no_consent.clone();
    anyone.as_object_mut().unwrap().remove("patient");
    let answer = plan(&server, &anyone);
    assert_eq!(answer["kind"], "conditional", "{answer}");
    assert_eq!(answer["filter"], json!({"any_of": [], "exact": false}));
    assert!(answer["untranslated"].to_string().contains("name the `patient`"), "{answer}");
}

/// p-100's consent: St. Mary's may access for treatment, except PSY-labelled
/// records, Conditions, records coded LOINC 2345-7 and records from before 2026.
fn exclusions() -> Value {
    let deny = |field: &str, value: Value| json!({"type": "deny", field: value});
    json!({"resourceType": "Consent", "id": "c-ex", "status": "active", "patient": {"reference": "Patient/p-100"},
           "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
                         "purpose": [{"code": TREAT}],
                         "provision": [
                             deny("securityLabel", json!([{"code": "PSY"}])),
                             deny("class", json!([{"code": "Condition"}])),
                             deny("code", json!([{"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}])),
                             deny("dataPeriod", json!({"end": "2026-01-01"}))]}})
}

#[test]
fn plan_carries_label_class_code_and_period_exclusions_with_purpose_limits_objections_and_restriction() {
    let server = pack_server();
    assert_eq!(put_consent(&server, "c-ex", &exclusions()).0, 201);
    let body = plan_body(WEBER, "p-100", json!({"purpose": TREAT}));
    let answer = plan(&server, &body);
    assert_eq!(answer["kind"], "conditional", "{answer}");
    let filter = filter_of(&answer);
    assert!(filter.exact, "{answer}");
    let alternative = &answer["filter"]["any_of"][0]["all_of"];
    for condition in [
        json!({"attribute": "resourceType", "op": "not_in", "values": ["Condition"]}),
        json!({"attribute": "codes", "op": "contains_none", "values": ["http://loinc.org|2345-7"]}),
    ] {
        assert!(alternative.as_array().unwrap().contains(&condition), "{condition} in {answer}");
    }
    assert!(
        answer["fhir"]["untranslated"][0].as_str().unwrap().starts_with("resourceType not_in [Condition]")
    );
    assert!(!answer["residuals"].as_array().unwrap().is_empty(), "{answer}");
    filter_agrees_with_decisions(&server, &body, &answer);

    // The patient-level search carries the same filter as an obligation.
    let search = cedar_request(WEBER, "Action::\"search\"", "Patient::\"p-100\"", json!({"purpose": TREAT}));
    let (_, searched) = server.post("/v1/is_authorized", &search);
    assert_eq!(searched["decision"], "Allow", "{searched}");
    let carried = searched["obligations"].as_array().unwrap().iter().find(|o| o["id"] == "filter").unwrap();
    assert_eq!(carried["filter"], answer["filter"], "{searched}");

    // Purpose limitation: marketing is granted by no consent that does not name it.
    let marketing = plan_body(WEBER, "p-100", json!({"purpose": "HMARKT"}));
    assert_eq!(plan(&server, &marketing)["kind"], "never");

    // A research objection (p-300) overrides a consent that names research.
    let research = json!({"resourceType": "Consent", "id": "c-res", "status": "active",
        "patient": {"reference": "Patient/p-300"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/euro-research"}}],
                      "purpose": [{"code": "HRESCH"}]}});
    assert_eq!(put_consent(&server, "c-res", &research).0, 201);
    let chen = plan_body("Practitioner::\"dr-chen\"", "p-300", json!({"purpose": "HRESCH"}));
    let answer = plan(&server, &chen);
    assert_eq!(answer["kind"], "never", "{answer}");
    filter_agrees_with_decisions(&server, &chen, &answer);

    // Art. 18: p-200 is restricted; only she may access her records.
    let restricted = json!({"resourceType": "Consent", "id": "c-200", "status": "active",
        "patient": {"reference": "Patient/p-200"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}]}});
    assert_eq!(put_consent(&server, "c-200", &restricted).0, 201);
    assert_eq!(plan(&server, &plan_body(WEBER, "p-200", json!({"purpose": TREAT})))["kind"], "never");
    let herself = plan_body("Patient::\"p-200\"", "p-200", json!({"purpose": "PATRQT"}));
    assert_eq!(plan(&server, &herself)["kind"], "always");
}

#[test]
fn plan_a_withdrawal_changes_the_very_next_plan() {
    let server = pack_server();
    let body = plan_body(WEBER, "p-100", json!({"purpose": TREAT}));
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    let answer = plan(&server, &body);
    assert_eq!(answer["kind"], "conditional", "{answer}");
    assert_eq!(
        answer["filter"]["any_of"][0]["all_of"],
        json!([{"attribute": "labels", "op": "contains_none", "values": ["ETH", "GDIS", "HIV", "PSY"]}])
    );
    filter_agrees_with_decisions(&server, &body, &answer);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("inactive")).0, 200);
    assert_eq!(plan(&server, &body)["kind"], "never", "the withdrawal governs the very next plan");
}

#[test]
fn plan_refuses_bad_input_naming_the_field() {
    let server = pack_server();
    let good = plan_body(WEBER, "p-100", json!({"purpose": TREAT}));
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    for (body, field) in [
        (with("resource_type", json!("Patient")), "resource_type"),
        (with("resource_type", json!("not a type")), "resource_type"),
        (with("principal", json!("dr-weber")), "principal"),
        (with("patient", json!({"type": "Practitioner", "id": "dr-weber"})), "patient"),
        (with("context", json!({"purpose": TREAT, "now": "2020-01-01T00:00:00Z"})), "context.now"),
    ] {
        let (status, answer) = server.post("/v1/plan", &body);
        assert!(status == 400 || status == 422, "{status} {answer}");
        assert!(answer["field"].as_str().unwrap_or_default().starts_with(field), "{field}: {answer}");
    }
    let (status, answer) = server.post("/v1/plan", &with("colour", json!("red")));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("colour"), "{answer}");
    let (status, answer) = server.post("/v1/plan", &json!({"principal": WEBER, "resource_type": "Record"}));
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("action"), "{answer}");
}

#[test]
fn plan_needs_a_decision_token_when_decisions_do() {
    let server = Server::start(&repo_root().join("policies"), &["--decisions", "token"]);
    let body = plan_body(WEBER, "p-100", json!({"purpose": TREAT}));
    let json_body = Some(("application/json", body.to_string()));
    assert_eq!(server.send("POST", "/v1/plan", json_body.clone(), None).0, 401);
    assert_eq!(server.send("POST", "/v1/plan", json_body, Some(ADMIN_TOKEN)).0, 200);
}

fn plan_cli(store: &Path, body: &Value) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let output = binary()
        .args(["plan", "--policies"])
        .arg(repo_root().join("policies"))
        .arg("--request")
        .arg(&file)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    let printed = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (output.status.code(), printed)
}

#[test]
fn plan_cli_exits_0_when_records_may_be_reached_2_when_none_and_3_on_invalid_input() {
    let store = tempfile::tempdir().unwrap();
    let glass = plan_body(
        "Practitioner::\"dr-ali\"",
        "p-100",
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    );
    let (code, printed) = plan_cli(store.path(), &glass);
    assert_eq!(code, Some(0), "{printed}");
    assert_eq!(printed["kind"], "conditional");
    let (code, printed) = plan_cli(store.path(), &plan_body(WEBER, "p-100", json!({"purpose": TREAT})));
    assert_eq!((code, &printed["kind"]), (Some(2), &json!("never")));
    let (code, _) = plan_cli(store.path(), &json!({"principal": WEBER}));
    assert_eq!(code, Some(3));
}

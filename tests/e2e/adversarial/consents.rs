//! Consents that granted more than they said, or could not be decided (findings 5, 6, 8, 17).

use serde_json::{Value, json};

use crate::support::{Server, cedar_request, decide, put_consent, repo_root};

fn pack_server() -> Server {
    Server::start(&repo_root().join("policies"), &[])
}

fn treatment(principal: &str, action: &str, resource: &str) -> Value {
    cedar_request(principal, &format!("Action::\"{action}\""), resource, json!({"purpose": "TREAT"}))
}

const WEBER: &str = "Practitioner::\"dr-weber\"";
const P100: &str = "Patient::\"p-100\"";

/// An R4 consent of p-100: St. Mary's may access, with `provision` nested.
fn st_mary(id: &str, nested: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active", "patient": {"reference": "Patient/p-100"},
           "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
                         "purpose": [{"code": "TREAT"}], "provision": [nested]}})
}

#[test]
fn finding_05_a_label_exclusion_is_kept_on_a_patient_level_search() {
    let server = pack_server();
    // A deny on a label and a class: HL7 LEAP's content-class fixture, in p-100's terms.
    let consent = st_mary(
        "c-5",
        json!({"type": "deny", "securityLabel": [{"code": "R"}], "class": [{"code": "Condition"}]}),
    );
    assert_eq!(put_consent(&server, "c-5", &consent).0, 201);
    let (status, answer) = server.post("/v1/is_authorized", &treatment(WEBER, "search", P100));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "Allow", "{answer}");
    let obligations = answer["obligations"].as_array().unwrap();
    let redacts_r = |o: &&Value| o["id"] == "redact" && o["values"].as_array().unwrap().contains(&json!("R"));
    assert!(obligations.iter().any(|o| redacts_r(&o)), "{answer}");
    assert_eq!(decide(&server, &treatment(WEBER, "read", "Record::\"psy-1\"")).0, "Deny");

    // A class alone cannot be redacted by label: the search carries it in its filter, never bare.
    let consent = st_mary("c-5", json!({"type": "deny", "class": [{"code": "Condition"}]}));
    assert_eq!(put_consent(&server, "c-5", &consent).0, 200);
    let (_, answer) = server.post("/v1/is_authorized", &treatment(WEBER, "search", P100));
    assert_eq!(answer["decision"], "Allow", "{answer}");
    let filter = answer["obligations"].as_array().unwrap().iter().find(|o| o["id"] == "filter").unwrap();
    let conditions = filter["filter"]["any_of"][0]["all_of"].as_array().unwrap();
    assert!(
        conditions.contains(&json!({"attribute": "resourceType", "op": "not_in", "values": ["Condition"]})),
        "{answer}"
    );
}

#[test]
fn finding_06_a_consent_without_action_grants_read_and_search_only() {
    let server = pack_server();
    // The policy-test example of docs/privacy/policy-tests.md: a permit with no `action`.
    let consent = json!({"resourceType": "Consent", "id": "c-1", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
                      "purpose": [{"code": "TREAT"}]}});
    assert_eq!(put_consent(&server, "c-1", &consent).0, 201);
    let (_, answer) = server.post("/v1/is_authorized", &treatment(WEBER, "read", "Record::\"obs-1\""));
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(
        answer["explanation"][0]["reason"],
        "consent c-1 v1 permits read and search by Organization/st-mary for TREAT",
        "{answer}"
    );
    for action in ["delete", "update", "create"] {
        assert_eq!(decide(&server, &treatment(WEBER, action, "Record::\"obs-1\"")).0, "Deny", "{action}");
    }
    let st_mary_deletes = treatment("Organization::\"st-mary\"", "delete", P100);
    assert_eq!(decide(&server, &st_mary_deletes).0, "Deny");

    let mut deleting = consent.clone();
    deleting["provision"]["action"] = json!([{"coding": [{"code": "delete"}]}]);
    let (status, body) = put_consent(&server, "c-1", &deleting);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "provision.action[0].coding[0].code", "{body}");
}

#[test]
fn finding_08_a_consent_with_a_long_list_is_decided_and_one_beyond_the_limits_is_refused() {
    let server = pack_server();
    let mut actors: Vec<Value> =
        (0..999).map(|i| json!({"reference": {"reference": format!("Practitioner/dr-{i}")}})).collect();
    actors.push(json!({"reference": {"reference": "Organization/st-mary"}}));
    let purposes: Vec<Value> =
        (0..600).map(|i| json!({"code": format!("P-{i}")})).chain([json!({"code": "TREAT"})]).collect();
    let consent = json!({"resourceType": "Consent", "id": "c-8", "status": "active",
        "subject": {"reference": "Patient/p-100"}, "decision": "deny",
        "provision": [{"actor": actors, "purpose": purposes}]});
    let (status, body) = put_consent(&server, "c-8", &consent);
    assert_eq!(status, 201, "{body}");
    assert_eq!(decide(&server, &treatment(WEBER, "read", "Record::\"obs-1\"")).0, "Allow");
    let ali = cedar_request(
        "Practitioner::\"dr-ali\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    );
    assert_eq!(decide(&server, &ali).0, "Deny", "the patient's refusal holds against break-glass");

    let mut longer = consent.clone();
    let many: Vec<Value> =
        (0..1001).map(|i| json!({"reference": {"reference": format!("Practitioner/x-{i}")}})).collect();
    longer["provision"][0]["actor"] = Value::Array(many);
    let (status, body) = put_consent(&server, "c-8", &longer);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "provision[0].actor", "{body}");
    assert!(body["message"].as_str().unwrap().contains("limit is 1000"), "{body}");
    // The process is up, and the accepted version still decides.
    assert_eq!(decide(&server, &treatment(WEBER, "read", "Record::\"obs-1\"")).0, "Allow");
}

#[test]
fn finding_17_an_actor_that_is_not_a_recipient_is_refused() {
    let server = pack_server();
    let consent = json!({"resourceType": "Consent", "id": "c-17", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "purpose": [{"code": "TREAT"}], "actor": [
            {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
             "reference": {"reference": "Practitioner/dr-roth"}},
            {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "CST"}]},
             "reference": {"reference": "Organization/st-mary"}}]}});
    let (status, body) = put_consent(&server, "c-17", &consent);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "provision.actor[1].role", "{body}");
    assert_eq!(
        decide(&server, &treatment(WEBER, "read", "Record::\"obs-1\"")).0,
        "Deny",
        "nothing was stored"
    );

    let mut recipient_only = consent.clone();
    recipient_only["provision"]["actor"].as_array_mut().unwrap().pop();
    assert_eq!(put_consent(&server, "c-17", &recipient_only).0, 201);
    let roth = treatment("Practitioner::\"dr-roth\"", "read", "Record::\"obs-1\"");
    assert_eq!(decide(&server, &roth).0, "Allow");
    assert_eq!(decide(&server, &treatment(WEBER, "read", "Record::\"obs-1\"")).0, "Deny");
}

//! Unit tests of FHIR Consent parsing: both releases, and every refusal by
//! kind (malformed or invalid) and by the JSON path it names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;
use crate::consent::ConsentErrorKind;

fn r4(provision: Value) -> Value {
    json!({
        "resourceType": "Consent",
        "id": "c-1",
        "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p-100"},
        "provision": provision,
    })
}

fn r5(provision: Value) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "subject": {"reference": "Patient/p-100"},
        "decision": "deny",
        "provision": provision,
    })
}

fn error(value: &Value) -> (ConsentErrorKind, String) {
    let error = Consent::from_json(value).expect_err("refused");
    (error.kind, error.path)
}

fn invalid(path: &str) -> (ConsentErrorKind, String) {
    (ConsentErrorKind::Invalid, path.to_owned())
}

fn malformed(path: &str) -> (ConsentErrorKind, String) {
    (ConsentErrorKind::Malformed, path.to_owned())
}

#[test]
fn reads_both_releases_into_the_same_shape() {
    let four = Consent::from_json(&r4(json!({"type": "permit"}))).unwrap();
    assert_eq!(four.fhir_version(), FhirVersion::R4);
    assert_eq!(four.id(), Some("c-1"));
    assert_eq!(four.patient(), "p-100");
    assert!(four.is_active());
    assert_eq!(four.decision, Effect::Permit);
    let five = Consent::from_json(&r5(json!([{"purpose": [{"code": "BTG"}]}]))).unwrap();
    assert_eq!(five.fhir_version(), FhirVersion::R5);
    assert_eq!(five.id(), None);
    assert_eq!(five.decision, Effect::Deny);
    assert_eq!(five.root.children.len(), 1);
    assert_eq!(five.root.children.first().map(|c| c.label.as_str()), Some("provision[0]"));
}

#[test]
fn status_of_the_wrong_type_is_malformed() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["status"] = json!(3);
    assert_eq!(error(&consent), malformed("status"));
}

#[test]
fn unknown_status_is_invalid() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["status"] = json!("approved");
    assert_eq!(error(&consent), invalid("status"));
    consent["status"] = json!("not-done");
    assert_eq!(Consent::from_json(&consent).unwrap().status(), ConsentStatus::Rejected);
}

#[test]
fn wrong_resource_type_is_invalid() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["resourceType"] = json!("Observation");
    assert_eq!(error(&consent), invalid("resourceType"));
}

#[test]
fn missing_patient_is_invalid() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["patient"] = json!({"display": "Anna"});
    assert_eq!(error(&consent), invalid("patient.reference"));
    let mut consent = r5(json!([]));
    consent.as_object_mut().unwrap().remove("subject");
    assert_eq!(error(&consent), invalid("subject.reference"));
    let mut consent = r5(json!([]));
    consent["subject"] = json!({"reference": "Group/g-1"});
    assert_eq!(error(&consent), invalid("subject.reference"));
}

#[test]
fn patient_may_be_an_absolute_url_under_this_servers_base() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["patient"] = json!({"reference": "https://fhir.example.org/r4/Patient/p-7/_history/3"});
    let base = FhirBase::parse("https://fhir.example.org/r4").unwrap();
    assert_eq!(Consent::from_json_under(&consent, Some(&base)).unwrap().patient(), "p-7");
}

#[test]
fn bad_actor_reference_type_is_invalid() {
    let consent = r4(json!({"type": "permit", "provision": [
        {"type": "deny"},
        {"type": "deny", "actor": [
            {"reference": {"reference": "Practitioner/dr-a"}},
            {"reference": {"reference": "Device/pump-1"}}
        ]}
    ]}));
    assert_eq!(error(&consent), invalid("provision.provision[1].actor[1].reference"));
    let consent = r4(json!({"type": "permit", "actor": [{"reference": {"identifier": {"value": "x"}}}]}));
    assert_eq!(error(&consent), invalid("provision.actor[0].reference"));
}

#[test]
fn unknown_action_code_is_invalid() {
    let consent = r5(json!([{"action": [{"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"},
        {"code": "destroy"}
    ]}]}]));
    assert_eq!(error(&consent), invalid("provision[0].action[0].coding[1].code"));
}

#[test]
fn bad_datetime_is_invalid_and_a_wrong_type_malformed() {
    let consent = r4(json!({"type": "permit", "period": {"start": "2026-13-01"}}));
    assert_eq!(error(&consent), invalid("provision.period.start"));
    let consent = r4(json!({"type": "permit", "period": {"start": 2026}}));
    assert_eq!(error(&consent), malformed("provision.period.start"));
    let mut consent = r5(json!([]));
    consent["period"] = json!({"end": "2026-05-17T10:00:00"});
    assert_eq!(error(&consent), invalid("period.end"));
}

#[test]
fn start_after_end_is_invalid() {
    let consent = r4(json!({"type": "permit", "provision": [
        {"type": "deny", "dataPeriod": {"start": "2026-02", "end": "2026-01-31"}}
    ]}));
    assert_eq!(error(&consent), invalid("provision.provision[0].dataPeriod"));
    let same_day = r4(json!({"type": "permit", "period": {"start": "2026-01-31", "end": "2026-01-31"}}));
    assert!(Consent::from_json(&same_day).is_ok());
}

#[test]
fn unsupported_data_meaning_is_invalid() {
    let consent = r4(json!({"type": "deny", "data": [
        {"meaning": "instance", "reference": {"reference": "Observation/o-1"}},
        {"meaning": "related", "reference": {"reference": "Observation/o-2"}}
    ]}));
    assert_eq!(error(&consent), invalid("provision.data[1].meaning"));
}

#[test]
fn expression_and_modifier_extensions_are_refused() {
    let consent = r5(json!([{"provision": [{"expression": {"expression": "true"}}]}]));
    assert_eq!(error(&consent), invalid("provision[0].provision[0].expression"));
    let consent = r4(json!({"type": "permit", "provision": [
        {"type": "deny", "modifierExtension": [{"url": "http://example.org/x", "valueBoolean": true}]}
    ]}));
    assert_eq!(error(&consent), invalid("provision.provision[0].modifierExtension"));
}

#[test]
fn nested_provision_with_its_parents_type_is_invalid() {
    let consent = r4(json!({"type": "permit", "provision": [
        {"type": "deny", "provision": [{"type": "deny"}]}
    ]}));
    assert_eq!(error(&consent), invalid("provision.provision[0].provision[0].type"));
    let consent = r5(json!([{"type": "deny"}]));
    assert_eq!(error(&consent), invalid("provision[0].type"));
}

#[test]
fn r4_root_without_type_is_invalid() {
    assert_eq!(error(&r4(json!({"purpose": [{"code": "TREAT"}]}))), invalid("provision.type"));
    let mut consent = r4(json!({}));
    consent.as_object_mut().unwrap().remove("provision");
    assert_eq!(error(&consent), invalid("provision"));
}

#[test]
fn r5_without_decision_is_invalid() {
    let mut consent = r5(json!([]));
    consent.as_object_mut().unwrap().remove("decision");
    assert_eq!(error(&consent), invalid("decision"));
}

#[test]
fn mixed_releases_are_refused() {
    let mut consent = r4(json!({"type": "permit"}));
    consent["decision"] = json!("deny");
    assert_eq!(error(&consent), invalid("decision"));
    let mut consent = r5(json!([]));
    consent["patient"] = json!({"reference": "Patient/p-100"});
    assert_eq!(error(&consent), invalid("patient"));
    let mut consent = r4(json!({"type": "permit"}));
    consent["provision"] = json!("permit");
    assert_eq!(error(&consent), malformed("provision"));
}

#[test]
fn empty_lists_are_refused() {
    assert_eq!(error(&r4(json!({"type": "permit", "actor": []}))), invalid("provision.actor"));
}

#[test]
fn unknown_elements_are_ignored() {
    let mut consent = r4(json!({"type": "permit", "extension": [{"url": "x"}], "unknownThing": 1}));
    consent["text"] = json!({"status": "generated", "div": "<div/>"});
    consent["policyRule"] = json!({"coding": [{"code": "OPTIN"}]});
    consent["meta"] = json!({"versionId": "3"});
    assert!(Consent::from_json(&consent).is_ok());
}

#[test]
fn class_must_be_a_resource_type() {
    let consent = r4(json!({"type": "permit", "class": [
        {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
        {"system": "urn:ietf:rfc:3986", "code": "http://hl7.org/fhir/StructureDefinition/lipidprofile"}
    ]}));
    assert_eq!(error(&consent), invalid("provision.class[1].code"));
}

#[test]
fn references_are_split_into_type_and_logical_id() {
    assert_eq!(split_reference("Practitioner/dr-1"), Some(("Practitioner", "dr-1")));
    assert_eq!(split_reference("http://x.org/fhir/Group/g.1"), Some(("Group", "g.1")));
    assert_eq!(split_reference("Patient/p/_history/2"), Some(("Patient", "p")));
    assert_eq!(split_reference("#contained"), None);
    assert_eq!(split_reference("urn:uuid:0b2c"), None);
    assert_eq!(split_reference("a/Patient/p"), None);
    assert_eq!(split_reference("Patient/p\"x"), None);
    assert_eq!(split_reference("patient/p"), None);
}

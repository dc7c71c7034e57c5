//! A patient-level search (the resource is the `Patient`) carries every
//! exclusion of the patient's consents: a deny on labels as a `redact`
//! obligation, any other deny on records by denying the search, never a bare
//! Allow (issue 13, finding 5). Pinned with HL7 LEAP's own fixture
//! `consent-boris-deny-restricted-content-class` in R4 and R5.

use super::*;

const LEAP_R4: &str = include_str!("../fixtures/leap/r4/consent-boris-deny-restricted-content-class.json");
const LEAP_R5: &str = include_str!("../fixtures/leap/r5/consent-boris-deny-restricted-content-class.json");

const ORG_54: &str = "Organization::\"54\"";
const BORIS: &str = "Patient::\"52\"";

fn at<'a>(principal: &'a str, action: &'a str, resource: &'a str, now: &'a str) -> Ask<'a> {
    Ask { principal, action, resource, purpose: Some("TREAT"), now }
}

/// The redact obligations of a decision, as `policy: values`.
fn redactions(compiled: &Compiled, ask: &Ask<'_>) -> Vec<(String, Vec<String>)> {
    let decision = authorize(compiled, ask);
    decision.obligations.into_iter().filter(|o| o.id == "redact").map(|o| (o.policy, o.values)).collect()
}

/// LEAP's expectation for Organization/54 querying Boris: permitted, with
/// records labelled R redacted; the MedicationStatements labelled R stay
/// unreadable; anyone else is permitted without redaction.
fn decides_as_leap(compiled: &Compiled, id: &str, now: &str) {
    let search = at(ORG_54, "search", BORIS, now);
    assert_eq!(decision(compiled, &search), Decision::Allow);
    assert_eq!(
        redactions(compiled, &search),
        [(format!("consent/{id}/v1/provision[0]/redact"), vec!["R".to_owned()])],
        "the search carries the label exclusion"
    );
    assert_eq!(decision(compiled, &at(ORG_54, "read", "Record::\"med-r\"", now)), Decision::Deny);
    assert_eq!(decision(compiled, &at(ORG_54, "read", "Record::\"med-n\"", now)), Decision::Allow);
    assert_eq!(decision(compiled, &at(ORG_54, "read", "Record::\"obs-r\"", now)), Decision::Allow);
    let other = at("Organization::\"hospital\"", "search", BORIS, now);
    assert_eq!(decision(compiled, &other), Decision::Allow);
    assert_eq!(redactions(compiled, &other), []);
    assert_eq!(
        decision(compiled, &at(ORG_54, "delete", "Record::\"med-n\"", now)),
        Decision::Deny,
        "the opt-in names no action: access only"
    );
}

#[test]
fn finding_05_leap_r5_label_and_class_exclusion_redacts_a_patient_search() {
    let c = consent(serde_json::from_str(LEAP_R5).unwrap());
    let (_, compiled) = policies(&[(&c, "leap-r5", 1)]);
    decides_as_leap(&compiled, "leap-r5", "2026-06-01T12:00:00Z");
}

#[test]
fn finding_05_leap_r4_label_and_class_exclusion_redacts_a_patient_search() {
    let mut value: Value = serde_json::from_str(LEAP_R4).unwrap();
    let refused = Consent::from_json(&value).unwrap_err();
    assert_eq!(refused.path, "provision.type", "the base decision is never guessed: {refused}");
    value["provision"]["type"] = json!("permit");
    let c = consent(value);
    let (_, compiled) = policies(&[(&c, "leap-r4", 1)]);
    decides_as_leap(&compiled, "leap-r4", "2021-06-01T12:00:00Z");
    let expired = at(ORG_54, "search", BORIS, "2022-06-01T12:00:00Z");
    assert_eq!(decision(&compiled, &expired), Decision::Deny, "the consent ended on 2022-01-01");
}

/// A permit for the hospital with one nested deny of `exclusion`.
fn permit_except(exclusion: Value) -> Value {
    let mut deny = json!({"type": "deny"});
    for (key, value) in exclusion.as_object().unwrap() {
        deny[key] = value.clone();
    }
    json!({
        "resourceType": "Consent", "id": "c-x", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"reference": "Organization/hospital"}}],
            "provision": [deny]
        }
    })
}

#[test]
fn finding_05_an_exclusion_no_obligation_can_express_denies_the_patient_search() {
    let lang = "Practitioner::\"dr-lang\"";
    let exclusions = [
        json!({"class": [{"code": "Condition"}]}),
        json!({"code": [{"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}]}),
        json!({"dataPeriod": {"end": "2026-01-01"}}),
        json!({"data": [{"meaning": "instance", "reference": {"reference": "Observation/lab-1"}}]}),
    ];
    for exclusion in exclusions {
        let c = consent(permit_except(exclusion.clone()));
        let (text, compiled) = policies(&[(&c, "c-x", 1)]);
        let search = ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"));
        assert_eq!(decision(&compiled, &search), Decision::Deny, "{exclusion}: {text}");
        assert_eq!(determining(&compiled, &search), ["consent/c-x/v1/provision[0]/search"]);
        let reason = annotation(&compiled, "consent/c-x/v1/provision[0]/search", "reason").unwrap();
        assert!(reason.contains("no obligation can take those out of a search"), "{reason}");
        let patient_search = ask("Patient::\"p-100\"", "search", "Patient::\"p-100\"", Some("TREAT"));
        assert!(
            !determining(&compiled, &patient_search).iter().any(|id| id.ends_with("/search")),
            "the patient is never locked out"
        );
        // A search of the records one at a time is still decided record by record.
        let record_search = ask(lang, "search", "Record::\"hiv-1\"", Some("TREAT"));
        assert_eq!(decision(&compiled, &record_search), Decision::Allow, "{exclusion}");
    }
}

#[test]
fn finding_05_a_deny_on_labels_that_is_no_exception_denies_the_patient_search() {
    // An R4 consent whose root denies PSY: nothing in this consent grants a search that a
    // redaction could narrow, so the search is denied whatever else grants it.
    let deny = consent(json!({
        "resourceType": "Consent", "id": "c-psy", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "deny", "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}
    }));
    let grant = consent(permit_except(json!({"purpose": [{"code": "HMARKT"}]})));
    let (_, compiled) = policies(&[(&deny, "c-psy", 1), (&grant, "c-x", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    let search = ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"));
    assert_eq!(decision(&compiled, &search), Decision::Deny);
    assert_eq!(determining(&compiled, &search), ["consent/c-psy/v1/root/search"]);
    assert_eq!(decision(&compiled, &ask(lang, "read", "Record::\"lab-1\"", Some("TREAT"))), Decision::Allow);
}

#[test]
fn finding_05_an_exception_to_the_exclusion_lifts_it_for_the_search_too() {
    // Deny Conditions to the hospital, except for treatment: a treatment search is allowed bare,
    // any other purpose is denied.
    let mut value = permit_except(json!({"class": [{"code": "Condition"}]}));
    value["provision"]["provision"][0]["provision"] =
        json!([{"type": "permit", "purpose": [{"system": ACT_REASON, "code": "TREAT"}]}]);
    let c = consent(value);
    let (text, compiled) = policies(&[(&c, "c-x", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    let treat = ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"));
    assert_eq!(decision(&compiled, &treat), Decision::Allow, "{text}");
    let operations = ask(lang, "search", "Patient::\"p-100\"", Some("HOPERAT"));
    assert_eq!(decision(&compiled, &operations), Decision::Deny, "{text}");
}

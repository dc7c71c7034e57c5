//! A patient-level search (the resource is the `Patient`) carries every
//! exclusion of the patient's consents: a deny on labels as a `redact`
//! obligation, and every exclusion (labels, class, code, data period,
//! record) in the `filter` obligation, which admits exactly the records the
//! searcher may read; never a bare Allow (issue 13, finding 5; issue 15).
//! Pinned with HL7 LEAP's own fixtures in R4 and R5: `..-content-class`
//! (label and class), `..-content-class-only` (redact by class) and
//! `..-clinical-code` (redact by code).

use consentry_engine::{FILTER_OBLIGATION, RecordFacts, RecordFilter};

use super::*;

const LEAP_R4: &str = include_str!("../fixtures/leap/r4/consent-boris-deny-restricted-content-class.json");
const LEAP_R5: &str = include_str!("../fixtures/leap/r5/consent-boris-deny-restricted-content-class.json");
const LEAP_CLASS_R4: &str =
    include_str!("../fixtures/leap/r4/consent-boris-deny-restricted-content-class-only.json");
const LEAP_CLASS_R5: &str =
    include_str!("../fixtures/leap/r5/consent-boris-deny-restricted-content-class-only.json");
const LEAP_CODE_R4: &str =
    include_str!("../fixtures/leap/r4/consent-boris-deny-restricted-clinical-code.json");
const LEAP_CODE_R5: &str =
    include_str!("../fixtures/leap/r5/consent-boris-deny-restricted-clinical-code.json");

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

/// The `filter` obligation of a decision, if it has one.
fn search_filter(compiled: &Compiled, ask: &Ask<'_>) -> Option<RecordFilter> {
    authorize(compiled, ask)
        .obligations
        .into_iter()
        .find(|o| o.id == FILTER_OBLIGATION)
        .and_then(|o| o.filter)
}

/// What a filter reads of each of a patient's records, from the test entities.
fn records_of(patient: &str) -> Vec<RecordFacts> {
    let strings = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    entities()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["uid"]["type"] == "Record" && e["attrs"]["patient"]["id"] == patient)
        .map(|e| {
            let attrs = &e["attrs"];
            RecordFacts {
                id: e["uid"]["id"].as_str().unwrap().to_owned(),
                resource_type: attrs["resourceType"].as_str().unwrap().to_owned(),
                labels: strings(&attrs["labels"]),
                confidentiality: attrs["confidentiality"].as_str().unwrap().to_owned(),
                codes: attrs.get("codes").map(strings),
                date: attrs.get("date").map(|d| {
                    EvaluationTime::parse(d["__extn"]["arg"].as_str().unwrap()).unwrap().unix_millis()
                }),
            }
        })
        .collect()
}

/// The search by `principal` is allowed and carries a filter that admits
/// exactly the records `principal` may read, which it returns.
pub(super) fn filters_as_reads(
    compiled: &Compiled,
    principal: &str,
    patient: &str,
    purpose: &str,
    now: &str,
) -> RecordFilter {
    let resource = format!("Patient::\"{patient}\"");
    let search = Ask { principal, action: "search", resource: &resource, purpose: Some(purpose), now };
    assert_eq!(decision(compiled, &search), Decision::Allow);
    let filter = search_filter(compiled, &search).expect("a filter obligation");
    assert!(filter.exact);
    for record in records_of(patient) {
        let resource = format!("Record::\"{}\"", record.id);
        let read = Ask { principal, action: "read", resource: &resource, purpose: Some(purpose), now };
        assert_eq!(
            filter.admits(&record),
            decision(compiled, &read) == Decision::Allow,
            "{record:?}: {filter:?}"
        );
    }
    filter
}

/// The filter as JSON, for comparing with what LEAP's obligation says.
fn json_of(filter: &RecordFilter) -> Value {
    serde_json::to_value(filter).unwrap()
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
    // LEAP's REDACT names R and MedicationStatement; the filter says, as FHIR's
    // provision does, that what is excluded is a MedicationStatement labelled R.
    let filter = filters_as_reads(compiled, ORG_54, "52", "TREAT", now);
    assert_eq!(filter.any_of.len(), 2, "{:?}", json_of(&filter));
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
fn finding_05_an_exclusion_by_class_code_period_or_record_is_carried_as_a_filter() {
    let lang = "Practitioner::\"dr-lang\"";
    let exclusions = [
        (
            json!({"class": [{"code": "Condition"}]}),
            json!({"attribute": "resourceType", "op": "not_in", "values": ["Condition"]}),
        ),
        (
            json!({"code": [{"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}]}),
            json!({"attribute": "codes", "op": "contains_none", "values": ["http://loinc.org|2345-7"]}),
        ),
        (
            json!({"data": [{"meaning": "instance", "reference": {"reference": "Observation/lab-1"}}]}),
            json!({"attribute": "id", "op": "not_in", "values": ["lab-1"]}),
        ),
    ];
    for (exclusion, condition) in exclusions {
        let c = consent(permit_except(exclusion.clone()));
        let (text, compiled) = policies(&[(&c, "c-x", 1)]);
        let filter = filters_as_reads(&compiled, lang, "p-100", "TREAT", NOW);
        assert_eq!(json_of(&filter), json!({"any_of": [{"all_of": [condition]}], "exact": true}), "{text}");
        assert!(!text.contains("/search"), "no search forbid is compiled any more: {text}");
        let patient_search = ask("Patient::\"p-100\"", "search", "Patient::\"p-100\"", Some("TREAT"));
        assert!(
            search_filter(&compiled, &patient_search).is_none(),
            "the patient's own search is never narrowed"
        );
    }
    // A data period: records dated before 2026 are out; one without a date is in no period, so it stays.
    let c = consent(permit_except(json!({"dataPeriod": {"end": "2026-01-01"}})));
    let (_, compiled) = policies(&[(&c, "c-x", 1)]);
    let filter = filters_as_reads(&compiled, lang, "p-100", "TREAT", NOW);
    assert_eq!(filter.any_of.len(), 2, "no date, or dated from 2026: {:?}", json_of(&filter));
}

#[test]
fn finding_05_a_deny_on_labels_that_is_no_exception_is_carried_as_a_filter() {
    // An R4 consent whose root denies PSY: no permit of its own to redact, so only the filter
    // takes those records out of another consent's search.
    let deny = consent(json!({
        "resourceType": "Consent", "id": "c-psy", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "deny", "securityLabel": [{"system": ACT_CODE, "code": "PSY"}]}
    }));
    let grant = consent(permit_except(json!({"purpose": [{"code": "HMARKT"}]})));
    let (_, compiled) = policies(&[(&deny, "c-psy", 1), (&grant, "c-x", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    let filter = filters_as_reads(&compiled, lang, "p-100", "TREAT", NOW);
    assert_eq!(
        json_of(&filter),
        json!({"any_of": [{"all_of": [{"attribute": "labels", "op": "contains_none", "values": ["PSY"]}]}], "exact": true})
    );
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
    assert!(search_filter(&compiled, &treat).is_none(), "every record may be read for treatment");
    let filter = filters_as_reads(&compiled, lang, "p-100", "HOPERAT", NOW);
    assert_eq!(
        json_of(&filter),
        json!({"any_of": [{"all_of": [{"attribute": "resourceType", "op": "not_in", "values": ["Condition"]}]}], "exact": true})
    );
}

/// LEAP answers Organization/54's query of Boris with CONSENT_PERMIT and a
/// REDACT obligation naming one resource class or one clinical code
/// (`test/lib/consent-processor-r5.test.js`); the filter excludes exactly
/// those records, and a search of Boris by anyone else is bare.
fn decides_as_leap_redact(compiled: &Compiled, now: &str, excluded: Value, excluded_record: &str) {
    let filter = filters_as_reads(compiled, ORG_54, "52", "TREAT", now);
    assert_eq!(json_of(&filter), json!({"any_of": [{"all_of": [excluded]}], "exact": true}));
    let search = at(ORG_54, "search", BORIS, now);
    assert_eq!(redactions(compiled, &search), [], "no label to redact");
    let read = format!("Record::\"{excluded_record}\"");
    assert_eq!(decision(compiled, &at(ORG_54, "read", &read, now)), Decision::Deny);
    let other = at("Organization::\"hospital\"", "search", BORIS, now);
    assert_eq!(decision(compiled, &other), Decision::Allow);
    assert!(search_filter(compiled, &other).is_none());
}

fn medication_statements() -> Value {
    json!({"attribute": "resourceType", "op": "not_in", "values": ["MedicationStatement"]})
}

#[test]
fn leap_r5_redact_by_class_is_a_filter() {
    let c = consent(serde_json::from_str(LEAP_CLASS_R5).unwrap());
    let (_, compiled) = policies(&[(&c, "leap-class-r5", 1)]);
    decides_as_leap_redact(&compiled, "2026-06-01T12:00:00Z", medication_statements(), "med-n");
}

#[test]
fn leap_r4_redact_by_class_is_a_filter() {
    let c = consent(serde_json::from_str(LEAP_CLASS_R4).unwrap());
    let (_, compiled) = policies(&[(&c, "leap-class-r4", 1)]);
    decides_as_leap_redact(&compiled, "2021-06-01T12:00:00Z", medication_statements(), "med-n");
}

/// LEAP's code fixtures write `provision.code` as one CodeableConcept where
/// FHIR (R4 and R5) has a list; Consentry refuses that with the path, and
/// the test lists it. The R4 one has no root `type` (see the fixtures' README).
fn code_fixture(text: &str, path: &str) -> Value {
    let mut value: Value = serde_json::from_str(text).unwrap();
    let refused = Consent::from_json(&value).unwrap_err();
    assert!(refused.path.starts_with(path), "{refused}");
    let provision = if value.get("decision").is_some() {
        &mut value["provision"][0]
    } else {
        value["provision"]["type"] = json!("permit");
        &mut value["provision"]["provision"][0]
    };
    let concept = provision["code"].take();
    provision["code"] = json!([concept]);
    value
}

fn substance_use_code() -> Value {
    json!({"attribute": "codes", "op": "contains_none", "values": ["http://loinc.org/|42828-4"]})
}

#[test]
fn leap_r5_redact_by_code_is_a_filter() {
    let c = consent(code_fixture(LEAP_CODE_R5, "provision[0].code"));
    let (_, compiled) = policies(&[(&c, "leap-code-r5", 1)]);
    decides_as_leap_redact(&compiled, "2026-06-01T12:00:00Z", substance_use_code(), "sub-1");
}

#[test]
fn leap_r4_redact_by_code_is_a_filter() {
    let c = consent(code_fixture(LEAP_CODE_R4, "provision"));
    let (_, compiled) = policies(&[(&c, "leap-code-r4", 1)]);
    decides_as_leap_redact(&compiled, "2021-06-01T12:00:00Z", substance_use_code(), "sub-1");
}

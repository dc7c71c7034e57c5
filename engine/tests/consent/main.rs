//! Compiled consents checked end to end: the output must parse and validate
//! strictly against the shipped schema with plain Cedar, and the engine's
//! decisions over the compiled partitions (with their activity windows)
//! must be HL7's reading of the consent in every region of its provision tree.
//! The harness is here; the tests are split into who a consent lets in
//! (actors, purposes, periods) and how its provisions nest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::BTreeMap;
use std::ops::Deref;
use std::str::FromStr;

use cedar_policy::{Decision, EntityUid, PolicySet, Schema, ValidationMode, Validator};
use consentry_engine::consent::{Consent, ConsentStatus, FhirBase, FhirVersion, compile};
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionRequest, EntityStore, EvaluationTime, PolicyBundle,
    SchemaSource, consent_subjects, decide_with_consents,
};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

mod actions;
mod actors;
mod decidable;
mod limits;
mod provisions;
mod searches;

fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA).unwrap().0
}

/// The server these consents were written on, whose absolute references bind.
const FHIR_BASE: &str = "https://fhir.example.org/r5";

fn consent(value: Value) -> Consent {
    let base = FhirBase::parse(FHIR_BASE).unwrap();
    Consent::from_json_under(&value, Some(&base)).unwrap_or_else(|e| panic!("consent refused: {e}"))
}

/// Compiled consents: their Cedar text as plain Cedar sees it, and the
/// engine's partitions, one per patient, that decisions use.
struct Compiled {
    set: PolicySet,
    bundle: PolicyBundle,
    store: EntityStore,
    partitions: BTreeMap<String, ConsentPartition>,
}

impl Deref for Compiled {
    type Target = PolicySet;

    fn deref(&self) -> &PolicySet {
        &self.set
    }
}

/// Compiles the consents, then parses and strictly validates the result,
/// and builds the engine's partitions from them.
fn policies(consents: &[(&Consent, &str, u64)]) -> (String, Compiled) {
    let text: String = consents.iter().map(|(c, id, v)| compile(c, id, *v)).collect::<Vec<_>>().join("\n");
    let set = PolicySet::from_str(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let validation = Validator::new(schema()).validate(&set, ValidationMode::Strict);
    let errors: Vec<String> = validation.validation_errors().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "{errors:#?}\n{text}");
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), "", &[]).unwrap();
    let store = EntityStore::from_json(&entities(), bundle.schema()).unwrap();
    let mut by_patient: BTreeMap<String, Vec<ConsentVersion<'_>>> = BTreeMap::new();
    for (consent, id, version) in consents {
        let version = ConsentVersion { id, version: *version, consent };
        by_patient.entry(consent.patient().to_owned()).or_default().push(version);
    }
    let partitions = by_patient
        .into_iter()
        .map(|(patient, versions)| {
            let partition = ConsentPartition::build(&bundle, &patient, &versions).unwrap();
            (patient, partition)
        })
        .collect();
    (text, Compiled { set, bundle, store, partitions })
}

fn datetime(text: &str) -> Value {
    json!({"__extn": {"fn": "datetime", "arg": text}})
}

fn uid(kind: &str, id: &str) -> Value {
    json!({"type": kind, "id": id})
}

fn record(
    id: &str,
    patient: &str,
    kind: &str,
    labels: &[&str],
    confidentiality: &str,
    extra: Value,
) -> Value {
    let mut attrs = json!({
        "patient": uid("Patient", patient),
        "resourceType": kind,
        "labels": labels,
        "confidentiality": confidentiality,
    });
    for (key, value) in extra.as_object().unwrap() {
        attrs[key] = value.clone();
    }
    json!({"uid": uid("Record", id), "attrs": attrs, "parents": [uid("Patient", patient)]})
}

fn entities() -> Value {
    let practitioner = |id: &str, parents: Value| json!({"uid": uid("Practitioner", id), "attrs": {"role": "physician"}, "parents": parents});
    let data = json!([
        {"uid": uid("Organization", "hospital"), "attrs": {"kind": "hospital", "country": "DE"}, "parents": []},
        {"uid": uid("Organization", "insurer"), "attrs": {"kind": "insurer", "country": "DE"}, "parents": []},
        {"uid": uid("CareTeam", "team-a"), "attrs": {}, "parents": [uid("Organization", "hospital")]},
        {"uid": uid("Group", "break-glass"), "attrs": {}, "parents": []},
        practitioner("dr-weber", json!([])),
        practitioner("dr-lang", json!([uid("Organization", "hospital")])),
        practitioner("dr-team", json!([uid("CareTeam", "team-a")])),
        practitioner("dr-other", json!([])),
        practitioner("er-doc", json!([uid("Group", "break-glass"), uid("Organization", "hospital")])),
        {"uid": uid("Patient", "p-100"), "attrs": {}, "parents": []},
        {"uid": uid("Patient", "p-200"), "attrs": {}, "parents": []},
        {"uid": uid("RelatedPerson", "rp-1"), "attrs": {"represents": [uid("Patient", "p-100")]}, "parents": []},
        record("lab-1", "p-100", "Observation", &[], "N", json!({
            "codes": ["http://loinc.org|2345-7", "glucose"], "date": datetime("2026-03-01T08:00:00Z")
        })),
        record("lab-old", "p-100", "Observation", &[], "N", json!({
            "codes": ["http://loinc.org|2345-7"], "date": datetime("2025-12-31T23:30:00Z")
        })),
        record("psy-1", "p-100", "Condition", &["PSY"], "N", json!({"date": datetime("2026-02-01")})),
        record("psy-2", "p-100", "Condition", &["PSY"], "N", json!({})),
        record("hiv-1", "p-100", "Observation", &["HIV"], "N", json!({})),
        record("secret-1", "p-100", "DocumentReference", &[], "R", json!({})),
        record("other-1", "p-200", "Observation", &[], "N", json!({})),
        // HL7 LEAP's Boris (Patient/52) and the organization his consent restricts (Organization/54).
        {"uid": uid("Patient", "52"), "attrs": {}, "parents": []},
        {"uid": uid("Organization", "54"), "attrs": {"kind": "clinic", "country": "US"}, "parents": []},
        record("med-r", "52", "MedicationStatement", &[], "R", json!({})),
        record("med-n", "52", "MedicationStatement", &[], "N", json!({})),
        record("obs-r", "52", "Observation", &[], "R", json!({})),
        // LEAP's code fixtures deny LOINC 42828-4 (substance use), with their system as written.
        record("sub-1", "52", "Observation", &[], "N", json!({"codes": ["http://loinc.org/|42828-4"]})),
    ]);
    data
}

/// One request for the decision tests. `resource` is `Type::"id"`.
struct Ask<'a> {
    principal: &'a str,
    action: &'a str,
    resource: &'a str,
    purpose: Option<&'a str>,
    now: &'a str,
}

const NOW: &str = "2026-06-01T12:00:00Z";

fn ask<'a>(principal: &'a str, action: &'a str, resource: &'a str, purpose: Option<&'a str>) -> Ask<'a> {
    Ask { principal, action, resource, purpose, now: NOW }
}

fn authorize(compiled: &Compiled, ask: &Ask<'_>) -> consentry_engine::Decision {
    let action = EntityUid::from_str(&format!("Action::\"{}\"", ask.action)).unwrap();
    let mut request = DecisionRequest::new(
        EntityUid::from_str(ask.principal).unwrap(),
        action,
        EntityUid::from_str(ask.resource).unwrap(),
    );
    if let Some(purpose) = ask.purpose {
        request.context = Some(json!({"purpose": purpose}));
    }
    request.now = Some(EvaluationTime::parse(ask.now).unwrap());
    let patients = consent_subjects(&compiled.store, &request);
    let partitions: Vec<&ConsentPartition> =
        patients.iter().filter_map(|p| compiled.partitions.get(p)).collect();
    let decision = decide_with_consents(&compiled.bundle, &partitions, &compiled.store, &request).unwrap();
    assert!(decision.errors.is_empty(), "evaluation errors: {:?}", decision.errors);
    decision
}

fn decision(compiled: &Compiled, ask: &Ask<'_>) -> Decision {
    if authorize(compiled, ask).is_allowed() { Decision::Allow } else { Decision::Deny }
}

/// The `@id`s of the policies that determined the decision.
fn determining(compiled: &Compiled, ask: &Ask<'_>) -> Vec<String> {
    let mut ids: Vec<String> = authorize(compiled, ask).reasons.into_iter().map(|r| r.policy).collect();
    ids.sort();
    ids
}

fn annotation(set: &PolicySet, id: &str, key: &str) -> Option<String> {
    set.policies().find(|p| p.annotation("id") == Some(id)).and_then(|p| p.annotation(key).map(str::to_owned))
}

const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";
const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

fn access() -> Value {
    json!([{"coding": [{"system": CONSENT_ACTION, "code": "access"}]}])
}

/// R4 opt-in: Dr. Weber may read and search for treatment during 2026.
fn r4_treatment() -> Value {
    json!({
        "resourceType": "Consent",
        "id": "c-1",
        "meta": {"versionId": "2", "lastUpdated": "2026-01-01T09:00:00Z"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Opt-in</div>"},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100", "display": "Anna Muster"},
        "dateTime": "2025-12-20T10:15:00+01:00",
        "performer": [{"reference": "Patient/p-100"}],
        "organization": [{"reference": "Organization/hospital"}],
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
            "actor": [{
                "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                "reference": {"reference": "Practitioner/dr-weber"}
            }],
            "action": access(),
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}]
        }
    })
}

/// R5: the hospital's staff may access for treatment; a CareTeam may also correct.
fn r5_hospital() -> Value {
    json!({
        "resourceType": "Consent",
        "id": "c-2",
        "status": "active",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}],
        "subject": {"reference": "https://fhir.example.org/r5/Patient/p-100"},
        "date": "2026-01-10",
        "grantor": [{"reference": "Patient/p-100"}],
        "grantee": [{"reference": "Organization/hospital"}],
        "controller": [{"reference": "Organization/hospital"}],
        "regulatoryBasis": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes", "code": "dch-3927"}]}],
        "decision": "deny",
        "period": {"start": "2026-01-01"},
        "provision": [
            {
                "actor": [{"reference": {"reference": "Organization/hospital"}}],
                "action": access(),
                "purpose": [{"system": ACT_REASON, "code": "TREAT"}, {"system": ACT_REASON, "code": "ETREAT"}]
            },
            {
                "actor": [{"reference": {"reference": "CareTeam/team-a"}}],
                "action": [{"coding": [{"system": CONSENT_ACTION, "code": "correct"}]}]
            }
        ]
    })
}

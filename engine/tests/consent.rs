//! Compiled consents checked end to end: the output must parse and validate
//! strictly against the shipped schema with plain Cedar, and the engine's
//! decisions over the compiled partitions (with their activity windows)
//! must be HL7's reading of the consent in every region of its provision tree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeMap;
use std::ops::Deref;
use std::str::FromStr;

use cedar_policy::{Decision, EntityUid, PolicySet, Schema, ValidationMode, Validator};
use consentry_engine::consent::{Consent, ConsentStatus, FhirVersion, compile};
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionRequest, EntityStore, EvaluationTime, PolicyBundle,
    SchemaSource, consent_subjects, decide_with_consents,
};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");

fn schema() -> Schema {
    Schema::from_cedarschema_str(SCHEMA).unwrap().0
}

fn consent(value: Value) -> Consent {
    Consent::from_json(&value).unwrap_or_else(|e| panic!("consent refused: {e}"))
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

#[test]
fn r4_period_actor_and_purpose() {
    let c = consent(r4_treatment());
    assert_eq!(
        (c.fhir_version(), c.status(), c.patient(), c.id()),
        (FhirVersion::R4, ConsentStatus::Active, "p-100", Some("c-1"))
    );
    let (text, set) = policies(&[(&c, "c-1", 2)]);
    assert_eq!(set.policies().count(), 1, "{text}");
    assert!(text.contains("principal == Practitioner::\"dr-weber\","), "actor in the scope: {text}");
    assert!(text.contains("action in [Action::\"read\", Action::\"search\"],"), "{text}");
    assert_eq!(
        annotation(&set, "consent/c-1/v2/root", "reason").as_deref(),
        Some(
            "consent c-1 v2 permits read and search by Practitioner/dr-weber for TREAT from 2026-01-01 until 2026-12-31"
        )
    );
    assert_eq!(annotation(&set, "consent/c-1/v2/root", "consent").as_deref(), Some("c-1"));
    assert_eq!(annotation(&set, "consent/c-1/v2/root", "consent_version").as_deref(), Some("2"));

    let weber = "Practitioner::\"dr-weber\"";
    let lab = "Record::\"lab-1\"";
    let at = |now| Ask { now, ..ask(weber, "read", lab, Some("TREAT")) };
    assert_eq!(decision(&set, &at(NOW)), Decision::Allow);
    assert_eq!(determining(&set, &at(NOW)), ["consent/c-1/v2/root"]);
    assert_eq!(decision(&set, &at("2026-01-01T00:00:00Z")), Decision::Allow, "start is inclusive");
    assert_eq!(decision(&set, &at("2025-12-31T23:59:59.999Z")), Decision::Deny, "before the start");
    assert_eq!(decision(&set, &at("2026-12-31T23:59:59.999Z")), Decision::Allow, "the end day is included");
    assert_eq!(decision(&set, &at("2027-01-01T00:30:00+01:00")), Decision::Allow, "23:30 UTC on the end day");
    assert_eq!(decision(&set, &at("2027-01-01T00:00:00Z")), Decision::Deny, "after the end");
    assert_eq!(decision(&set, &ask(weber, "search", "Patient::\"p-100\"", Some("TREAT"))), Decision::Allow);
    assert_eq!(decision(&set, &ask(weber, "read", lab, Some("HMARKT"))), Decision::Deny, "purpose mismatch");
    assert_eq!(decision(&set, &ask(weber, "read", lab, None)), Decision::Deny, "no purpose");
    assert_eq!(
        decision(&set, &ask(weber, "create", lab, Some("TREAT"))),
        Decision::Deny,
        "not an allowed action"
    );
    assert_eq!(decision(&set, &ask(weber, "read", "Record::\"other-1\"", Some("TREAT"))), Decision::Deny);
    let other = "Practitioner::\"dr-other\"";
    assert_eq!(decision(&set, &ask(other, "read", lab, Some("TREAT"))), Decision::Deny, "another actor");
}

#[test]
fn inactive_consents_never_count() {
    let mut draft = r4_treatment();
    draft["status"] = json!("draft");
    let c = consent(draft);
    assert!(!c.is_active());
    assert_eq!(compile(&c, "c-1", 1), "");
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-5", "status": "inactive",
        "subject": {"reference": "Patient/p-100"}, "decision": "deny", "date": "2026-01-01",
        "provision": [{"purpose": [{"code": "BTG"}]}]
    }));
    assert_eq!((c.fhir_version(), c.status()), (FhirVersion::R5, ConsentStatus::Inactive));
    assert_eq!(compile(&c, "c-5", 1), "");
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

#[test]
fn r5_actors_match_by_organization_and_care_team_membership() {
    let c = consent(r5_hospital());
    assert_eq!(c.patient(), "p-100");
    let (text, set) = policies(&[(&c, "c-2", 1)]);
    assert!(text.contains("principal in Organization::\"hospital\","), "{text}");
    assert!(text.contains("principal in CareTeam::\"team-a\","), "{text}");
    let lab = "Record::\"lab-1\"";
    let (lang, team, other) =
        ("Practitioner::\"dr-lang\"", "Practitioner::\"dr-team\"", "Practitioner::\"dr-other\"");
    assert_eq!(
        decision(&set, &ask(lang, "read", lab, Some("TREAT"))),
        Decision::Allow,
        "member of the hospital"
    );
    assert_eq!(
        decision(&set, &ask(team, "read", lab, Some("ETREAT"))),
        Decision::Allow,
        "via CareTeam → hospital"
    );
    assert_eq!(decision(&set, &ask(other, "read", lab, Some("TREAT"))), Decision::Deny);
    assert_eq!(
        determining(&set, &ask(other, "read", lab, Some("TREAT"))),
        ["consent/c-2/v1/root"],
        "forbidden"
    );
    assert_eq!(decision(&set, &ask(lang, "read", lab, Some("HRESCH"))), Decision::Deny, "purpose mismatch");
    assert_eq!(
        decision(&set, &ask(team, "update", lab, Some("TREAT"))),
        Decision::Allow,
        "the care team may correct"
    );
    assert_eq!(
        decision(&set, &ask(lang, "update", lab, Some("TREAT"))),
        Decision::Deny,
        "not in the care team"
    );
    let before = Ask { now: "2025-12-31T23:59:59Z", ..ask(lang, "read", lab, Some("TREAT")) };
    assert_eq!(decision(&set, &before), Decision::Deny, "outside the consent's period nothing is permitted");
    assert!(determining(&set, &before).is_empty(), "and the consent says nothing there");
}

#[test]
fn r4_relative_and_patient_actors_and_record_attributes() {
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-6", "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p-100"},
        "policyRule": {"coding": [{"code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "actor": [
                {"role": {"text": "representative"}, "reference": {"reference": "RelatedPerson/rp-1"}},
                {"role": {"text": "self"}, "reference": {"reference": "Patient/p-100"}}
            ],
            "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}],
            "code": [{"coding": [{"system": "http://loinc.org", "code": "2345-7"}, {"code": "glucose"}]}],
            "dataPeriod": {"start": "2026", "end": "2026-03"}
        }
    }));
    let (text, set) = policies(&[(&c, "c-6", 4)]);
    assert!(text.contains("principal,\n"), "two actors stay in the body: {text}");
    let lab = "Record::\"lab-1\"";
    for who in ["RelatedPerson::\"rp-1\"", "Patient::\"p-100\""] {
        assert_eq!(decision(&set, &ask(who, "read", lab, Some("TREAT"))), Decision::Allow, "{who}");
        assert_eq!(
            decision(&set, &ask(who, "update", lab, Some("TREAT"))),
            Decision::Allow,
            "no action: any"
        );
        assert_eq!(
            decision(&set, &ask(who, "read", "Record::\"lab-old\"", Some("TREAT"))),
            Decision::Deny,
            "data before 2026"
        );
        assert_eq!(
            decision(&set, &ask(who, "read", "Record::\"hiv-1\"", Some("TREAT"))),
            Decision::Deny,
            "no codes"
        );
        assert_eq!(
            decision(&set, &ask(who, "read", "Record::\"psy-1\"", Some("TREAT"))),
            Decision::Deny,
            "a Condition"
        );
        assert_eq!(
            decision(&set, &ask(who, "read", "Patient::\"p-100\"", Some("TREAT"))),
            Decision::Deny,
            "not a record"
        );
    }
    assert_eq!(
        decision(&set, &ask("Practitioner::\"dr-weber\"", "read", lab, Some("TREAT"))),
        Decision::Deny
    );
}

/// R4: the hospital may access everything but psychiatric and HIV records.
fn r4_sensitive() -> Value {
    json!({
        "resourceType": "Consent", "id": "c-3", "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"},
        "dateTime": "2026-01-05T14:00:00Z",
        "policyRule": {"coding": [{"code": "OPTIN"}]},
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"reference": "Organization/hospital"}}],
            "action": access(),
            "provision": [{
                "type": "deny",
                "securityLabel": [{"system": ACT_CODE, "code": "PSY"}, {"system": ACT_CODE, "code": "HIV"}]
            }]
        }
    })
}

#[test]
fn nested_deny_on_labels_blocks_reads_and_redacts_searches() {
    let c = consent(r4_sensitive());
    let (text, set) = policies(&[(&c, "c-3", 1)]);
    let redact = "consent/c-3/v1/provision[0]/redact";
    assert_eq!(annotation(&set, redact, "obligation").as_deref(), Some("redact"), "{text}");
    assert_eq!(annotation(&set, redact, "redact").as_deref(), Some("PSY, HIV"));
    assert_eq!(
        annotation(&set, "consent/c-3/v1/provision[0]", "reason").as_deref(),
        Some("consent c-3 v1 denies access to records labelled PSY or HIV")
    );
    let lang = "Practitioner::\"dr-lang\"";
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"lab-1\"", Some("TREAT"))), Decision::Allow);
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"psy-1\"", Some("TREAT"))), Decision::Deny);
    assert_eq!(
        determining(&set, &ask(lang, "read", "Record::\"psy-1\"", Some("TREAT"))),
        ["consent/c-3/v1/provision[0]"]
    );
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"hiv-1\"", Some("TREAT"))), Decision::Deny);
    let search = ask(lang, "search", "Record::\"psy-1\"", Some("TREAT"));
    assert_eq!(decision(&set, &search), Decision::Allow);
    assert_eq!(determining(&set, &search), [redact]);
    let search = ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"));
    assert_eq!(decision(&set, &search), Decision::Allow);
    assert!(
        determining(&set, &search).contains(&redact.to_owned()),
        "redaction applies to patient-wide searches"
    );
    let other = "Practitioner::\"dr-other\"";
    assert_eq!(decision(&set, &ask(other, "search", "Patient::\"p-100\"", Some("TREAT"))), Decision::Deny);
}

#[test]
fn confidentiality_codes_match_the_records_confidentiality() {
    let mut value = r4_sensitive();
    value["provision"]["provision"][0]["securityLabel"] =
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]);
    value["provision"]["provision"][0]["action"] = access();
    let (_, set) = policies(&[(&consent(value), "c-3", 2)]);
    let lang = "Practitioner::\"dr-lang\"";
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"secret-1\"", Some("TREAT"))), Decision::Deny);
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"lab-1\"", Some("TREAT"))), Decision::Allow);
    assert_eq!(decision(&set, &ask(lang, "search", "Record::\"secret-1\"", Some("TREAT"))), Decision::Allow);
}

#[test]
fn three_levels_of_nesting_decide_each_region() {
    let mut value = r4_sensitive();
    value["provision"]["provision"] = json!([{
        "type": "deny",
        "securityLabel": [{"system": ACT_CODE, "code": "PSY"}],
        "provision": [{
            "type": "permit",
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}],
            "provision": [{
                "type": "deny",
                "data": [{"meaning": "instance", "reference": {"reference": "Condition/psy-2"}}]
            }]
        }]
    }]);
    let (text, set) = policies(&[(&consent(value), "c-4", 3)]);
    let lang = "Practitioner::\"dr-lang\"";
    let read = |resource, purpose| decision(&set, &ask(lang, "read", resource, purpose));
    assert_eq!(read("Record::\"lab-1\"", Some("HOPERAT")), Decision::Allow, "root region");
    assert_eq!(read("Record::\"psy-1\"", Some("HOPERAT")), Decision::Deny, "deny region");
    assert_eq!(read("Record::\"psy-1\"", Some("TREAT")), Decision::Allow, "nested permit region: {text}");
    assert_eq!(
        determining(&set, &ask(lang, "read", "Record::\"psy-1\"", Some("TREAT"))),
        ["consent/c-4/v3/provision[0].provision[0]"]
    );
    assert_eq!(read("Record::\"psy-2\"", Some("TREAT")), Decision::Deny, "the innermost deny");
    assert_eq!(
        determining(&set, &ask(lang, "read", "Record::\"psy-2\"", Some("TREAT"))),
        ["consent/c-4/v3/provision[0].provision[0].provision[0]"]
    );
    assert_eq!(
        decision(&set, &ask("Practitioner::\"dr-other\"", "read", "Record::\"psy-1\"", Some("TREAT"))),
        Decision::Deny
    );
    // A treatment search needs no redaction: the nested permit allows PSY records then.
    let search = ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"));
    assert_eq!(decision(&set, &search), Decision::Allow);
    assert!(!determining(&set, &search).iter().any(|id| id.ends_with("/redact")));
    let search = ask(lang, "search", "Patient::\"p-100\"", Some("HOPERAT"));
    assert!(determining(&set, &search).contains(&"consent/c-4/v3/provision[0]/redact".to_owned()));
}

#[test]
fn r5_break_glass_is_the_only_exception_to_a_deny() {
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-7", "status": "active",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "subject": {"reference": "Patient/p-100"},
        "date": "2026-02-01",
        "controller": [{"reference": "Organization/hospital"}],
        "policyBasis": {"url": "https://example.org/policies/opt-out"},
        "decision": "deny",
        "provision": [{
            "actor": [{"reference": {"reference": "Group/break-glass"}}],
            "purpose": [{"system": ACT_REASON, "code": "BTG"}],
            "resourceType": [{"system": "http://hl7.org/fhir/fhir-types", "code": "Condition"}, {"code": "Observation"}],
            "documentType": [{"system": "http://loinc.org", "code": "2345-7"}, {"code": "glucose"}]
        }]
    }));
    let (text, set) = policies(&[(&c, "c-7", 1)]);
    assert!(text.contains("principal in Group::\"break-glass\","), "{text}");
    assert_eq!(
        annotation(&set, "consent/c-7/v1/provision[0]", "reason").as_deref(),
        Some(
            "consent c-7 v1 permits access to records of type Condition or Observation coded \
             http://loinc.org|2345-7 or glucose by Group/break-glass for BTG"
        )
    );
    let (er, lang) = ("Practitioner::\"er-doc\"", "Practitioner::\"dr-lang\"");
    let lab = "Record::\"lab-1\"";
    assert_eq!(decision(&set, &ask(er, "read", lab, Some("BTG"))), Decision::Allow);
    assert_eq!(
        decision(&set, &ask(er, "read", lab, Some("TREAT"))),
        Decision::Deny,
        "not breaking the glass"
    );
    assert_eq!(decision(&set, &ask(lang, "read", lab, Some("BTG"))), Decision::Deny, "not in the group");
    assert_eq!(
        decision(&set, &ask(er, "read", "Record::\"psy-1\"", Some("BTG"))),
        Decision::Deny,
        "no matching code"
    );
    // The root deny is the patient's own rule, not an exception: searches are denied, not redacted.
    assert_eq!(decision(&set, &ask(er, "search", "Patient::\"p-100\"", Some("TREAT"))), Decision::Deny);
}

#[test]
fn a_deny_in_one_consent_overrides_a_permit_in_another() {
    let permit = consent(r5_hospital());
    let deny = consent(json!({
        "resourceType": "Consent", "id": "c-8", "status": "active",
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "patient": {"reference": "Patient/p-100"},
        "provision": {
            "type": "deny",
            "period": {"start": "2026-05-01T00:00:00+02:00", "end": "2026-06-30"},
            "actor": [
                {"reference": {"reference": "Practitioner/dr-lang"}},
                {"reference": {"reference": "Organization/insurer"}}
            ],
            "securityLabel": [{"code": "HIV"}]
        }
    }));
    let (text, set) = policies(&[(&permit, "c-2", 1), (&deny, "c-8", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    assert_eq!(decision(&set, &ask(lang, "read", "Record::\"lab-1\"", Some("TREAT"))), Decision::Allow);
    assert_eq!(
        decision(&set, &ask(lang, "read", "Record::\"hiv-1\"", Some("TREAT"))),
        Decision::Deny,
        "{text}"
    );
    assert_eq!(
        determining(&set, &ask(lang, "read", "Record::\"hiv-1\"", Some("TREAT"))),
        ["consent/c-8/v1/root"]
    );
    let (_, reversed) = policies(&[(&deny, "c-8", 1), (&permit, "c-2", 1)]);
    assert_eq!(decision(&reversed, &ask(lang, "read", "Record::\"hiv-1\"", Some("TREAT"))), Decision::Deny);
    let later = Ask { now: "2026-07-01T00:00:00Z", ..ask(lang, "read", "Record::\"hiv-1\"", Some("TREAT")) };
    assert_eq!(decision(&set, &later), Decision::Allow, "the deny has expired");
    let team = "Practitioner::\"dr-team\"";
    assert_eq!(decision(&set, &ask(team, "read", "Record::\"hiv-1\"", Some("TREAT"))), Decision::Allow);
}

#[test]
fn identifiers_are_escaped() {
    let c = consent(r4_treatment());
    let id = "c\"1\\\n}; permit(principal, action, resource);";
    let (_, set) = policies(&[(&c, id, 7)]);
    assert_eq!(set.policies().count(), 1);
    let policy = set.policies().next().unwrap();
    assert_eq!(policy.annotation("consent"), Some(id));
    assert_eq!(policy.annotation("id").map(str::to_owned), Some(format!("consent/{id}/v7/root")));
}

#[test]
fn a_consent_naming_no_purpose_grants_neither_research_nor_marketing() {
    let value = json!({
        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Practitioner/dr-weber"}}]}
    });
    let (_, set) = policies(&[(&consent(value), "c-open", 1)]);
    let weber = "Practitioner::\"dr-weber\"";
    let lab = "Record::\"lab-1\"";
    assert_eq!(decision(&set, &ask(weber, "read", lab, Some("TREAT"))), Decision::Allow);
    assert_eq!(
        decision(&set, &ask(weber, "read", lab, Some("HRESCH"))),
        Decision::Deny,
        "research is not named"
    );
    assert_eq!(
        decision(&set, &ask(weber, "read", lab, Some("HMARKT"))),
        Decision::Deny,
        "marketing is not named"
    );
    assert_eq!(decision(&set, &ask(weber, "read", lab, None)), Decision::Deny, "no purpose");
}

#[test]
fn a_blanket_deny_never_locks_the_patient_out_of_their_own_records() {
    let value = json!({
        "resourceType": "Consent", "status": "active", "subject": {"reference": "Patient/p-100"},
        "decision": "deny"
    });
    let (text, set) = policies(&[(&consent(value), "c-no", 1)]);
    let forbid = authorize(&set, &ask("Patient::\"p-100\"", "read", "Record::\"lab-1\"", Some("PATRQT")));
    assert!(forbid.reasons.is_empty(), "the patient was forbidden: {text}");
    let other = ask("Practitioner::\"dr-weber\"", "read", "Record::\"lab-1\"", Some("TREAT"));
    assert_eq!(determining(&set, &other), ["consent/c-no/v1/root"]);
}

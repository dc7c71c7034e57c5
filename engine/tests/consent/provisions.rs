//! Nested provisions: labels and confidentiality excluded, deny inside
//! permit inside deny, exceptions, and several consents at once.

use super::*;

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
        Some("consent c-3 v1 denies read to records labelled PSY or HIV")
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
    // For treatment the nested permit opens PSY records again, except psy-2, which no redaction
    // by label can leave out: the patient-level search carries it in its filter, never bare.
    let filter = searches::filters_as_reads(&set, lang, "p-100", "TREAT", NOW);
    assert!(!filter.any_of.is_empty(), "{filter:?}");
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
            "consent c-7 v1 permits read and search to records of type Condition or Observation coded \
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

//! Who a consent lets in: actors by reference, organization, care team,
//! relationship or the patient, for which purposes and when.

use super::*;

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
                {"reference": {"reference": "RelatedPerson/rp-1"}},
                {"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": "Patient/p-100"}}
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
            Decision::Deny,
            "no action: access only"
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

/// A permit for `actor` with the given role, as R4.
fn with_role(role: Value) -> Value {
    json!({
        "resourceType": "Consent", "id": "c-r", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [
            {"reference": {"reference": "Practitioner/dr-weber"}},
            {"role": role, "reference": {"reference": "Organization/hospital"}}
        ]}
    })
}

#[test]
fn finding_17_only_recipient_roles_or_none_grant_the_requester() {
    let participation = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
    for code in ["IRCP", "PRCP", "TRC"] {
        let c = consent(with_role(json!({"coding": [{"system": participation, "code": code}]})));
        let (_, compiled) = policies(&[(&c, "c-r", 1)]);
        let read = ask("Practitioner::\"dr-lang\"", "read", "Record::\"lab-1\"", Some("TREAT"));
        assert_eq!(decision(&compiled, &read), Decision::Allow, "{code}");
    }
    let refused = [
        json!({"coding": [{"system": participation, "code": "CST"}]}),
        json!({"coding": [{"system": participation, "code": "AUT"}]}),
        json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "DELEGATEE"}]}),
        json!({"coding": [{"system": "http://example.org/roles", "code": "IRCP"}]}),
    ];
    for role in refused {
        let error = Consent::from_json(&with_role(role.clone())).unwrap_err();
        assert_eq!(error.path, "provision.actor[1].role", "{role}: {error}");
        assert!(error.message.contains("information recipient"), "{error}");
    }
    let error = Consent::from_json(&with_role(json!({"text": "custodian"}))).unwrap_err();
    assert_eq!(error.path, "provision.actor[1].role.coding", "text alone cannot be matched: {error}");
}

//! A consent grants only what it says: no `action` means access (read and
//! search), `collect` and `correct` grant create and update, and no consent
//! grants `delete` (issue 13, finding 6). Reasons name exactly the actions
//! granted.

use super::*;

/// The policy-test example of `docs/privacy/policy-tests.md`: a permit with no `action`.
fn without_action() -> Value {
    json!({
        "resourceType": "Consent", "id": "c-1", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/hospital"}}],
                      "purpose": [{"code": "TREAT"}]}
    })
}

#[test]
fn finding_06_a_consent_without_action_grants_read_and_search_only() {
    let (text, compiled) = policies(&[(&consent(without_action()), "c-1", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    let lab = "Record::\"lab-1\"";
    assert_eq!(decision(&compiled, &ask(lang, "read", lab, Some("TREAT"))), Decision::Allow);
    assert_eq!(
        decision(&compiled, &ask(lang, "search", "Patient::\"p-100\"", Some("TREAT"))),
        Decision::Allow
    );
    for action in ["create", "update", "delete"] {
        assert_eq!(
            decision(&compiled, &ask(lang, action, lab, Some("TREAT"))),
            Decision::Deny,
            "{action}: {text}"
        );
    }
    assert_eq!(
        decision(
            &compiled,
            &ask("Organization::\"hospital\"", "delete", "Patient::\"p-100\"", Some("TREAT"))
        ),
        Decision::Deny
    );
    assert_eq!(
        annotation(&compiled, "consent/c-1/v1/root", "reason").as_deref(),
        Some("consent c-1 v1 permits read and search by Organization/hospital for TREAT")
    );
}

#[test]
fn finding_06_create_and_update_need_the_consent_actions_that_name_them() {
    let mut value = without_action();
    value["provision"]["action"] = json!([
        {"coding": [{"system": CONSENT_ACTION, "code": "collect"}]},
        {"coding": [{"system": CONSENT_ACTION, "code": "correct"}]}
    ]);
    let (_, compiled) = policies(&[(&consent(value), "c-1", 2)]);
    let lang = "Practitioner::\"dr-lang\"";
    let lab = "Record::\"lab-1\"";
    assert_eq!(decision(&compiled, &ask(lang, "create", lab, Some("TREAT"))), Decision::Allow);
    assert_eq!(decision(&compiled, &ask(lang, "update", lab, Some("TREAT"))), Decision::Allow);
    assert_eq!(
        decision(&compiled, &ask(lang, "read", lab, Some("TREAT"))),
        Decision::Deny,
        "no access named"
    );
    assert_eq!(decision(&compiled, &ask(lang, "delete", lab, Some("TREAT"))), Decision::Deny);
    assert_eq!(
        annotation(&compiled, "consent/c-1/v2/root", "reason").as_deref(),
        Some("consent c-1 v2 permits create and update by Organization/hospital for TREAT")
    );
}

#[test]
fn finding_06_no_consent_grants_delete() {
    let mut value = without_action();
    value["provision"]["action"] = json!([{"coding": [{"system": CONSENT_ACTION, "code": "delete"}]}]);
    let refused = Consent::from_json(&value).unwrap_err();
    assert_eq!(refused.path, "provision.action[0].coding[0].code");
    assert!(refused.message.contains("no consent grants `delete`"), "{refused}");
}

#[test]
fn finding_06_a_deny_without_action_denies_every_action_and_its_exception_only_access() {
    // R5 opt-in: deny everyone except the hospital, whose exception names no action.
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-2", "status": "active",
        "subject": {"reference": "Patient/p-100"}, "decision": "deny",
        "provision": [{"actor": [{"reference": {"reference": "Organization/hospital"}}]}]
    }));
    let (text, compiled) = policies(&[(&c, "c-2", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    let lab = "Record::\"lab-1\"";
    assert_eq!(decision(&compiled, &ask(lang, "read", lab, Some("TREAT"))), Decision::Allow);
    assert_eq!(
        determining(&compiled, &ask(lang, "update", lab, Some("TREAT"))),
        ["consent/c-2/v1/root"],
        "the exception grants access only, so the root still denies update: {text}"
    );
    assert_eq!(
        annotation(&compiled, "consent/c-2/v1/root", "reason").as_deref(),
        Some("consent c-2 v1 denies every action")
    );
}

//! A patient with a stored consent that cannot be evaluated any more (finding
//! 10 of issue 13): decisions that do not depend on consents (break-glass,
//! the patient's own access) are still made, the patient's other consents
//! still deny, and every decision that needs a consent fails closed naming
//! the unreadable one, over the bundled pack.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::str::FromStr;

use cedar_policy::EntityUid;
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, Decision, DecisionOptions, DecisionRequest, EntityStore,
    EvaluationTime, Outcome, PolicyBundle, SchemaSource, UnreadableConsent, consent_subjects, decide_with,
};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../policies/transfers.cedar");
const ENTITIES: &str = include_str!("../../policies/entities.json");

fn bundle() -> PolicyBundle {
    let policies = format!("{PACK}\n{TRANSFERS}");
    PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &policies, &[]).unwrap()
}

fn store(bundle: &PolicyBundle) -> EntityStore {
    EntityStore::from_json(&serde_json::from_str(ENTITIES).unwrap(), bundle.schema()).unwrap()
}

/// St. Mary's may access p-100's records for treatment (R4).
fn treatment_consent() -> Consent {
    Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "action": [{"coding": [{"code": "access"}]}],
            "purpose": [{"code": "TREAT"}]
        }
    }))
    .unwrap()
}

/// p-100 refuses Dr. Ali everything (R4).
fn refuse_dr_ali() -> Consent {
    Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "deny", "actor": [{"reference": {"reference": "Practitioner/dr-ali"}}]}
    }))
    .unwrap()
}

/// A consent accepted before the period rule, as the store hands it back: unreadable.
fn unreadable() -> UnreadableConsent {
    let stored = json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "deny", "period": {"start": "0001-01-01T00:00:00+14:00"}}
    });
    let error = Consent::from_json(&stored).unwrap_err();
    assert_eq!(error.path, "provision.period.start");
    UnreadableConsent { id: "c-old".to_owned(), version: 1, reason: error.to_string() }
}

fn partition(bundle: &PolicyBundle, consents: &[(&str, &Consent)]) -> ConsentPartition {
    let versions: Vec<ConsentVersion<'_>> =
        consents.iter().map(|(id, consent)| ConsentVersion { id, version: 1, consent }).collect();
    ConsentPartition::build_setting_aside(bundle, "p-100", &versions, vec![unreadable()]).unwrap()
}

fn decide(
    bundle: &PolicyBundle,
    partition: &ConsentPartition,
    principal: &str,
    resource: &str,
    context: Value,
) -> Decision {
    let store = store(bundle);
    let mut request = DecisionRequest::new(
        EntityUid::from_str(principal).unwrap(),
        EntityUid::from_str(r#"Action::"read""#).unwrap(),
        EntityUid::from_str(resource).unwrap(),
    );
    request.context = Some(context);
    request.now = Some(EvaluationTime::parse("2026-06-01T12:00:00Z").unwrap());
    assert_eq!(consent_subjects(&store, &request), ["p-100"]);
    decide_with(bundle, &[partition], &store, &request, &DecisionOptions::default()).unwrap()
}

fn names_the_unreadable_consent(decision: &Decision) -> bool {
    decision.errors.iter().any(|e| e.message.contains("consent `c-old` version 1 of patient `p-100`"))
}

fn policies(decision: &Decision) -> Vec<&str> {
    decision.reasons.iter().map(|r| r.policy.as_str()).collect()
}

const DR_ALI: &str = r#"Practitioner::"dr-ali""#;
const DR_WEBER: &str = r#"Practitioner::"dr-weber""#;
const OBS_1: &str = r#"Record::"obs-1""#;

fn break_glass() -> Value {
    json!({"purpose": "BTG", "justification": "unconscious on arrival"})
}

#[test]
fn regression_finding_10_break_glass_is_allowed_beside_an_unreadable_consent() {
    let bundle = bundle();
    let decision = decide(&bundle, &partition(&bundle, &[]), DR_ALI, OBS_1, break_glass());
    assert_eq!(decision.outcome, Outcome::Allow, "{}", decision.summary());
    assert_eq!(policies(&decision), ["break-glass"]);
    assert!(decision.obligations.iter().any(|o| o.id == "audit-priority"), "{:?}", decision.obligations);
    assert!(names_the_unreadable_consent(&decision), "{:?}", decision.errors);
}

#[test]
fn the_patients_own_access_is_allowed_beside_an_unreadable_consent() {
    let bundle = bundle();
    let decision =
        decide(&bundle, &partition(&bundle, &[]), r#"Patient::"p-100""#, OBS_1, json!({"purpose": "PATRQT"}));
    assert_eq!(decision.outcome, Outcome::Allow, "{}", decision.summary());
    assert_eq!(policies(&decision), ["own-records"]);
}

#[test]
fn an_allow_on_a_consent_fails_closed_naming_the_unreadable_consent() {
    let bundle = bundle();
    let consent = treatment_consent();
    let decision = decide(
        &bundle,
        &partition(&bundle, &[("c-treat", &consent)]),
        DR_WEBER,
        OBS_1,
        json!({"purpose": "TREAT"}),
    );
    assert_eq!(decision.outcome, Outcome::FailedClosed, "{}", decision.summary());
    assert!(
        decision.summary().contains("consent `c-old` version 1 of patient `p-100`"),
        "{}",
        decision.summary()
    );
    assert!(decision.reasons.is_empty() && decision.obligations.is_empty());
}

#[test]
fn nothing_permitted_fails_closed_since_the_unreadable_consent_might_permit() {
    let bundle = bundle();
    let decision = decide(&bundle, &partition(&bundle, &[]), DR_WEBER, OBS_1, json!({"purpose": "TREAT"}));
    assert_eq!(decision.outcome, Outcome::FailedClosed, "{}", decision.summary());
    assert!(names_the_unreadable_consent(&decision));
}

#[test]
fn the_patients_readable_consents_still_deny_break_glass() {
    let bundle = bundle();
    let refusal = refuse_dr_ali();
    let decision =
        decide(&bundle, &partition(&bundle, &[("c-refuse", &refusal)]), DR_ALI, OBS_1, break_glass());
    assert_eq!(decision.outcome, Outcome::Forbidden, "{}", decision.summary());
    assert!(policies(&decision).iter().all(|p| p.starts_with("consent/c-refuse/")), "{:?}", decision.reasons);
    assert!(names_the_unreadable_consent(&decision));
}

#[test]
fn pack_forbids_still_deny_beside_an_unreadable_consent() {
    let bundle = bundle();
    let decision = decide(&bundle, &partition(&bundle, &[]), DR_ALI, OBS_1, json!({"purpose": "BTG"}));
    assert_eq!(decision.outcome, Outcome::Forbidden, "{}", decision.summary());
    assert_eq!(policies(&decision), ["break-glass-needs-justification"]);
}

#[test]
fn a_consent_that_no_longer_builds_is_set_aside_and_the_others_kept() {
    let bundle = bundle();
    let treatment = treatment_consent();
    // A consent of another patient cannot be built into p-100's partition.
    let foreign = Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/p-200"},
        "provision": {"type": "permit"}
    }))
    .unwrap();
    let versions = [
        ConsentVersion { id: "c-treat", version: 1, consent: &treatment },
        ConsentVersion { id: "c-foreign", version: 3, consent: &foreign },
    ];
    let partition = ConsentPartition::build_setting_aside(&bundle, "p-100", &versions, Vec::new()).unwrap();
    let set_aside: Vec<(&str, u64)> =
        partition.unreadable().iter().map(|u| (u.id.as_str(), u.version)).collect();
    assert_eq!(set_aside, [("c-foreign", 3)]);
    assert!(partition.policy_count() > 0, "the treatment consent is kept");
    // Without anything set aside, nothing changes.
    let clean = ConsentPartition::build_setting_aside(&bundle, "p-100", &versions[..1], Vec::new()).unwrap();
    assert!(clean.unreadable().is_empty());
}

/// `decide_with_consents` once decided as if set-aside consents did not
/// exist, which only the host's entry point settled: a Weber read under the
/// treatment consent was allowed beside a consent that might deny it.
#[test]
fn regression_every_engine_entry_point_settles_set_aside_consents() {
    let bundle = bundle();
    let consent = treatment_consent();
    let partition = partition(&bundle, &[("c-treat", &consent)]);
    let store = store(&bundle);
    let mut request = DecisionRequest::new(
        EntityUid::from_str(DR_WEBER).unwrap(),
        EntityUid::from_str(r#"Action::"read""#).unwrap(),
        EntityUid::from_str(OBS_1).unwrap(),
    );
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T12:00:00Z").unwrap());
    let decision = consentry_engine::decide_with_consents(&bundle, &[&partition], &store, &request).unwrap();
    assert_eq!(decision.outcome, Outcome::FailedClosed, "{}", decision.summary());
    assert!(names_the_unreadable_consent(&decision), "{:?}", decision.errors);
}

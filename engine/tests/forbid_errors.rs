//! An erroring forbid denies (finding 1 of issue 13), and special
//! categories open only where a permit says so (contract C3).
//!
//! The named tests pin the rule on small policy sets and on the bundled
//! pack; the property tests state it over random requests and entities
//! against the bundled pack plus generated forbids that error on some of
//! them: an erroring forbid never yields Allow, and the decision path never
//! panics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use consentry_engine::{
    Decision, DecisionOptions, DecisionRequest, EntityStore, EvaluationTime, Outcome, PolicyBundle,
    SchemaSource, SpecialCategories, decide, decide_with, parse_uid,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../policies/transfers.cedar");
const ENTITIES: &str = include_str!("../../policies/entities.json");
const SPECIAL: &str = include_str!("../../policies/special-categories.json");

fn uid(text: &str) -> cedar_policy::EntityUid {
    parse_uid(&json!(text), "uid").unwrap()
}

fn request(principal: &str, action: &str, resource: &str, context: Value) -> DecisionRequest {
    let mut request =
        DecisionRequest::new(uid(principal), uid(&format!("Action::\"{action}\"")), uid(resource));
    request.context = Some(context);
    request.now = Some(EvaluationTime::from_unix_millis(1_780_000_000_000));
    request
}

/// The bundled pack with `extra` policies, its entities and special categories.
fn pack_with(extra: &str) -> (PolicyBundle, EntityStore) {
    let bundle = PolicyBundle::load(
        Some(SchemaSource::CedarText(SCHEMA)),
        &format!("{PACK}\n{TRANSFERS}\n{extra}"),
        &[],
    )
    .unwrap()
    .with_special_categories(SpecialCategories::from_json(SPECIAL).unwrap());
    let store = EntityStore::from_json(&serde_json::from_str(ENTITIES).unwrap(), bundle.schema()).unwrap();
    (bundle, store)
}

fn pack() -> &'static (PolicyBundle, EntityStore) {
    static PACK: std::sync::LazyLock<(PolicyBundle, EntityStore)> =
        std::sync::LazyLock::new(|| pack_with(""));
    &PACK
}

const ERRORING: &str = r#"
    @id("allow-all") permit(principal, action, resource);
    @id("broken") @reason("a rule that reads a missing entity")
    forbid(principal, action, resource) when { resource.secret == true };
"#;

#[test]
fn an_erroring_forbid_denies_naming_the_policy_and_its_error() {
    let bundle = PolicyBundle::load(None, ERRORING, &[]).unwrap();
    let request = DecisionRequest::new(uid(r#"User::"a""#), uid(r#"Action::"view""#), uid(r#"Doc::"d""#));
    let decision = decide(&bundle, &EntityStore::new(), &request).unwrap();
    assert_eq!(decision.outcome, Outcome::FailedClosed);
    assert_eq!(decision.reasons.len(), 1);
    assert_eq!(decision.reasons[0].policy, "broken");
    assert_eq!(decision.reasons[0].reason.as_deref(), Some("a rule that reads a missing entity"));
    assert_eq!(decision.errors.len(), 1);
    assert_eq!(decision.errors[0].policy.as_deref(), Some("broken"));
    assert!(decision.obligations.is_empty());
    let summary = decision.summary();
    assert!(summary.contains("`broken`") && summary.contains("could not be evaluated"), "{summary}");
    assert!(summary.contains(&decision.errors[0].message), "{summary}");
}

#[test]
fn skip_keeps_cedars_semantics_and_allows() {
    let bundle = PolicyBundle::load(None, ERRORING, &[]).unwrap();
    let request = DecisionRequest::new(uid(r#"User::"a""#), uid(r#"Action::"view""#), uid(r#"Doc::"d""#));
    let decision =
        decide_with(&bundle, &[], &EntityStore::new(), &request, &DecisionOptions::cedar_exact()).unwrap();
    assert_eq!(decision.outcome, Outcome::Allow);
    assert_eq!(decision.errors.len(), 1);
}

#[test]
fn an_erroring_permit_never_grants_and_a_satisfied_forbid_still_explains_the_deny() {
    let text = r#"
        @id("broken-permit") permit(principal, action, resource) when { resource.open == true };
        @id("broken-forbid") forbid(principal, action, resource) when { resource.secret == true };
        @id("always") forbid(principal, action, resource);
    "#;
    let bundle = PolicyBundle::load(None, text, &[]).unwrap();
    let request = DecisionRequest::new(uid(r#"User::"a""#), uid(r#"Action::"view""#), uid(r#"Doc::"d""#));
    let decision = decide(&bundle, &EntityStore::new(), &request).unwrap();
    assert_eq!(decision.outcome, Outcome::Forbidden);
    assert_eq!(decision.reasons.iter().map(|r| r.policy.as_str()).collect::<Vec<_>>(), ["always"]);
    assert_eq!(decision.errors.len(), 2);

    let permit_only =
        PolicyBundle::load(None, text.split("@id(\"broken-forbid\")").next().unwrap(), &[]).unwrap();
    let decision = decide(&permit_only, &EntityStore::new(), &request).unwrap();
    assert_eq!(decision.outcome, Outcome::NotPermitted, "the erroring permit granted nothing");
    assert_eq!(decision.errors.len(), 1);
}

#[test]
fn finding_01_an_unknown_record_with_break_glass_is_denied_with_a_reason_not_an_error() {
    let (bundle, store) = pack();
    let break_glass = json!({"purpose": "BTG", "justification": "unconscious on arrival"});
    let ask = request(r#"Practitioner::"dr-ali""#, "read", r#"Record::"no-such""#, break_glass);
    for options in [DecisionOptions::default(), DecisionOptions::cedar_exact()] {
        let decision = decide_with(bundle, &[], store, &ask, &options).unwrap();
        assert_eq!(decision.outcome, Outcome::Forbidden, "{}", decision.summary());
        assert_eq!(decision.reasons[0].policy, "unknown-record");
        assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    }
}

#[test]
fn finding_01_unknown_recipients_and_organizations_are_denied_with_a_reason() {
    let (bundle, store) = pack();
    let cases = [
        (
            r#"Practitioner::"dr-ali""#,
            json!({"purpose": "BTG", "justification": "transfer", "recipient": {"type": "Organization", "id": "ghost"}}),
            "unknown-recipient",
        ),
        (r#"Organization::"ghost""#, json!({"purpose": "TREAT"}), "unknown-organization"),
    ];
    for (principal, context, rule) in cases {
        let decision =
            decide(bundle, store, &request(principal, "read", r#"Record::"obs-1""#, context)).unwrap();
        assert_eq!(decision.outcome, Outcome::Forbidden, "{}", decision.summary());
        assert_eq!(decision.reasons[0].policy, rule);
        assert!(decision.errors.is_empty(), "{:?}", decision.errors);
    }
}

#[test]
fn finding_07_a_practitioner_of_a_third_country_clinic_is_a_transfer() {
    let (bundle, store) = pack();
    let decision = decide(
        bundle,
        store,
        &request(r#"Practitioner::"dr-rao""#, "read", r#"Record::"obs-1""#, json!({"purpose": "TREAT"})),
    )
    .unwrap();
    assert_eq!(decision.outcome, Outcome::Forbidden, "{}", decision.summary());
    assert_eq!(decision.reasons[0].policy, "third-country-member");
}

#[test]
fn special_categories_open_only_where_a_permit_says_so() {
    let (bundle, store) = pack();
    let break_glass = || json!({"purpose": "BTG", "justification": "unconscious on arrival"});
    let psy = decide(
        bundle,
        store,
        &request(r#"Practitioner::"dr-ali""#, "read", r#"Record::"psy-1""#, break_glass()),
    );
    assert_eq!(psy.unwrap().outcome, Outcome::Allow, "break-glass opens PSY in the bundled pack");
    let genetic = decide(
        bundle,
        store,
        &request(r#"Practitioner::"dr-ali""#, "read", r#"Record::"gen-1""#, break_glass()),
    )
    .unwrap();
    assert_eq!(genetic.outcome, Outcome::NotPermitted);
    assert_eq!(genetic.reasons[0].policy, "special-categories");
    assert!(genetic.summary().contains("GDIS (genetic data)"), "{}", genetic.summary());
    let search = decide(
        bundle,
        store,
        &request(r#"Practitioner::"dr-ali""#, "search", r#"Patient::"p-100""#, break_glass()),
    )
    .unwrap();
    let redact: Vec<&Vec<String>> =
        search.obligations.iter().filter(|o| o.id == "redact").map(|o| &o.values).collect();
    assert_eq!(redact, [&vec!["GDIS".to_owned()]]);
    // Without the file, the pack opens every label as before.
    let plain =
        PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &format!("{PACK}\n{TRANSFERS}"), &[])
            .unwrap();
    let open = decide(
        &plain,
        store,
        &request(r#"Practitioner::"dr-ali""#, "read", r#"Record::"gen-1""#, break_glass()),
    );
    assert_eq!(open.unwrap().outcome, Outcome::Allow);
}

// --- Properties -------------------------------------------------------------

/// Forbids that pass strict validation but error on some requests: an
/// entity the directory lacks, an overflow, a recipient nobody knows.
const GENERATED_FORBIDS: [&str; 5] = [
    r#"forbid(principal is Practitioner, action, resource) when { principal.role == "nurse" };"#,
    r#"forbid(principal, action, resource is Record) when { resource.confidentiality == "V" };"#,
    r#"forbid(principal, action, resource) when { 9223372036854775807 + (if principal is Patient then 1 else 0) < 0 };"#,
    r#"forbid(principal is Organization, action, resource) when { principal.kind == "insurer" };"#,
    r#"forbid(principal, action, resource) when { context has recipient && context.recipient.kind == "lab" };"#,
];

fn generated_pack(chosen: &[bool]) -> (PolicyBundle, EntityStore, Vec<String>) {
    let mut text = String::new();
    let mut ids = Vec::new();
    for (position, (forbid, on)) in GENERATED_FORBIDS.iter().zip(chosen).enumerate() {
        if *on {
            text.push_str(&format!("@id(\"generated-{position}\")\n{forbid}\n"));
            ids.push(format!("generated-{position}"));
        }
    }
    let (bundle, store) = pack_with(&text);
    (bundle, store, ids)
}

fn packs() -> &'static Vec<(PolicyBundle, EntityStore, Vec<String>)> {
    static PACKS: std::sync::LazyLock<Vec<(PolicyBundle, EntityStore, Vec<String>)>> =
        std::sync::LazyLock::new(|| {
            (0..(1u32 << GENERATED_FORBIDS.len()))
                .step_by(3)
                .map(|mask| {
                    let chosen: Vec<bool> =
                        (0..GENERATED_FORBIDS.len()).map(|i| mask & (1 << i) != 0).collect();
                    generated_pack(&chosen)
                })
                .collect()
        });
    &PACKS
}

fn forbid_ids(bundle: &PolicyBundle) -> Vec<String> {
    bundle.policy_summaries().into_iter().filter(|p| p.effect == "forbid").map(|p| p.id).collect()
}

fn principal() -> impl Strategy<Value = String> {
    let known = prop::sample::select(vec![
        r#"Practitioner::"dr-weber""#,
        r#"Practitioner::"dr-ali""#,
        r#"Practitioner::"dr-rao""#,
        r#"Practitioner::"ghost""#,
        r#"Organization::"st-mary""#,
        r#"Organization::"overseas-insurer""#,
        r#"Organization::"ghost""#,
        r#"Patient::"p-100""#,
        r#"Patient::"p-200""#,
        r#"RelatedPerson::"rp-anna""#,
        r#"RelatedPerson::"ghost""#,
        r#"Group::"break-glass""#,
    ]);
    known.prop_map(str::to_owned)
}

fn resource() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        r#"Record::"obs-1""#,
        r#"Record::"psy-1""#,
        r#"Record::"gen-1""#,
        r#"Record::"obs-2""#,
        r#"Record::"ghost""#,
        r#"Patient::"p-100""#,
        r#"Patient::"p-200""#,
        r#"Patient::"ghost""#,
        r#"Organization::"st-mary""#,
    ])
    .prop_map(str::to_owned)
}

fn context() -> impl Strategy<Value = Value> {
    let purpose = prop::option::of(prop::sample::select(vec![
        "TREAT", "ETREAT", "BTG", "HRESCH", "PATRQT", "PWATRNY", "",
    ]));
    let justification = prop::option::of(prop::sample::select(vec!["", "unconscious on arrival"]));
    let recipient =
        prop::option::of(prop::sample::select(vec!["st-mary", "overseas-insurer", "city-lab", "ghost"]));
    let stray = prop::option::of(prop::sample::select(vec![
        json!(1),
        json!("x"),
        json!({"type": "Patient", "id": "p-100"}),
    ]));
    (purpose, justification, recipient, stray).prop_map(|(purpose, justification, recipient, stray)| {
        let mut context = serde_json::Map::new();
        if let Some(purpose) = purpose {
            context.insert("purpose".into(), json!(purpose));
        }
        if let Some(justification) = justification {
            context.insert("justification".into(), json!(justification));
        }
        if let Some(recipient) = recipient {
            context.insert("recipient".into(), json!({"type": "Organization", "id": recipient}));
        }
        if let Some(stray) = stray {
            context.insert("stray".into(), stray);
        }
        Value::Object(context)
    })
}

/// Request entities: new ones, copies of stored ones with changes, and
/// values of the wrong shape.
fn sent_entity() -> impl Strategy<Value = Value> {
    let kind =
        prop::sample::select(vec!["Practitioner", "Record", "Patient", "Organization", "Group", "Nope"]);
    let id = prop::sample::select(vec!["dr-ali", "obs-1", "p-100", "ghost", "new-1", "break-glass"]);
    let attrs = prop::sample::select(vec![
        json!({}),
        json!({"role": "nurse"}),
        json!({"country": "IN", "kind": "lab"}),
        json!({"patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation", "labels": ["GDIS"], "confidentiality": "V"}),
        json!({"restricted": "yes"}),
        json!(7),
    ]);
    let parents = prop::sample::select(vec![
        json!([]),
        json!([{"type": "Group", "id": "break-glass"}]),
        json!([{"type": "Patient", "id": "p-100"}]),
        json!("p-100"),
    ]);
    (kind, id, attrs, parents).prop_map(|(kind, id, attrs, parents)| {
        json!({"uid": {"type": kind, "id": id}, "attrs": attrs, "parents": parents})
    })
}

fn decision_request() -> impl Strategy<Value = DecisionRequest> {
    let action = prop::sample::select(vec!["read", "search", "create", "update", "delete"]);
    (principal(), action, resource(), context(), prop::collection::vec(sent_entity(), 0..3)).prop_map(
        |(principal, action, resource, context, entities)| {
            let mut ask = request(&principal, action, &resource, context);
            ask.entities = entities;
            ask
        },
    )
}

fn errored_forbid(decision: &Decision, forbids: &[String]) -> bool {
    decision.errors.iter().any(|e| e.policy.as_ref().is_some_and(|p| forbids.contains(p)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// An erroring forbid never yields Allow, whatever else is satisfied.
    #[test]
    fn an_erroring_forbid_never_yields_allow(which in 0usize..11, ask in decision_request()) {
        let packs = packs();
        let (bundle, store, _) = &packs[which % packs.len()];
        let forbids = forbid_ids(bundle);
        if let Ok(decision) = decide(bundle, store, &ask)
            && errored_forbid(&decision, &forbids)
        {
            prop_assert!(!decision.is_allowed(), "{}", decision.summary());
            prop_assert!(matches!(decision.outcome, Outcome::FailedClosed | Outcome::Forbidden));
        }
    }

    /// The decision path never panics on random requests and entities over
    /// the bundled pack, under either option, and the bundled pack's own
    /// rules never error.
    #[test]
    fn the_decision_path_never_panics_and_the_pack_never_errors(ask in decision_request()) {
        let (bundle, store) = pack();
        for options in [DecisionOptions::default(), DecisionOptions::cedar_exact()] {
            if let Ok(decision) = decide_with(bundle, &[], store, &ask, &options) {
                prop_assert!(decision.errors.is_empty(), "{:?}", decision.errors);
            }
        }
    }
}

/// The property is not vacuous: a generated forbid errors where plain Cedar
/// would then allow, and the default denies.
#[test]
fn a_generated_forbid_errors_where_cedar_would_allow() {
    let (bundle, store, _) = generated_pack(&[false, false, true, false, false]);
    let ask = request(r#"Patient::"p-100""#, "read", r#"Record::"obs-1""#, json!({"purpose": "PATRQT"}));
    let skipped = decide_with(&bundle, &[], &store, &ask, &DecisionOptions::cedar_exact()).unwrap();
    assert_eq!(skipped.outcome, Outcome::Allow);
    assert!(errored_forbid(&skipped, &forbid_ids(&bundle)));
    let denied = decide(&bundle, &store, &ask).unwrap();
    assert_eq!(denied.outcome, Outcome::FailedClosed);
    assert_eq!(denied.reasons[0].policy, "generated-2");
}

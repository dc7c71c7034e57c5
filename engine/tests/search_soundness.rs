//! Search is exact: every result is a candidate whose own decision is an
//! Allow, and every candidate whose decision is an Allow is a result.
//!
//! Two generated worlds state both directions:
//!
//! - random stores (users in a group hierarchy, documents in a folder
//!   hierarchy, owners that may not exist), random policy sets drawn from
//!   shapes that name groups, folders, users and documents in their scopes
//!   and read principal, resource and context in their conditions (erroring
//!   ones included), random contexts and entities sent with the request:
//!   a subject, resource and action search each compared with
//!   `decide_with` for every candidate (default and Cedar-exact options) and
//!   with plain Cedar's `Authorizer` over the whole policy and entity set;
//! - the bundled pack with its schema, random records and random consents
//!   of a patient, and random purposes: every search compared with
//!   `decide_with` over each candidate's own consent partitions, decision
//!   for decision (reasons, obligations and errors alike).
//!
//! `PROPTEST_CASES` raises the number of cases, as in the other properties.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::BTreeSet;
use std::str::FromStr;

use consentry_engine::cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, PolicySet, Request, Schema,
};
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionOptions, DecisionRequest, EntityStore, EvaluationTime,
    PolicyBundle, SchemaSource, SearchRequest, Searched, SpecialCategories, consent_subjects, decide_with,
    search,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

/// `PROPTEST_CASES` when set, for a longer local run, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

// ---------------------------------------------------------------------------
// A generic world, checked against plain Cedar too
// ---------------------------------------------------------------------------

const SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group] { level: Long, dept: String };
entity Folder in [Folder];
entity Doc in [Folder] { owner: User, level: Long, public: Bool };
type Ctx = { hour: Long, authenticated: Bool };
action view, edit, share appliesTo { principal: [User], resource: [Doc], context: Ctx };
action list appliesTo { principal: [User], resource: [Folder], context: Ctx };
"#;

const GROUPS: usize = 5;
const USERS: usize = 6;
const FOLDERS: usize = 4;
const DOCS: usize = 12;
const ACTIONS: [&str; 4] = ["view", "edit", "share", "list"];
const DEPTS: [&str; 3] = ["eng", "ops", "hr"];

/// One policy, from a shape with random parameters; every shape passes
/// strict validation under [`SCHEMA`].
fn policy() -> impl Strategy<Value = String> {
    let action = || prop::sample::select(&ACTIONS[..3]);
    prop_oneof![
        (0..GROUPS, action(), 0..FOLDERS).prop_map(|(g, a, f)| format!(
            r#"permit(principal in Group::"g{g}", action == Action::"{a}", resource in Folder::"f{f}");"#
        )),
        (0..USERS, 0..DOCS).prop_map(|(u, d)| format!(
            r#"permit(principal == User::"u{u}", action, resource == Doc::"d{d}");"#
        )),
        action().prop_map(|a| format!(
            r#"permit(principal, action == Action::"{a}", resource is Doc) when {{ resource.public }};"#
        )),
        Just(r#"permit(principal is User, action, resource is Doc) when { resource.owner == principal };"#.to_owned()),
        Just(r#"forbid(principal, action == Action::"edit", resource is Doc) when { resource.level > principal.level };"#.to_owned()),
        (0..GROUPS, 0..24i64).prop_map(|(g, h)| format!(
            r#"forbid(principal in Group::"g{g}", action, resource) when {{ context.hour < {h} }};"#
        )),
        (prop::sample::select(&DEPTS[..]), action()).prop_map(|(d, a)| format!(
            r#"permit(principal, action == Action::"{a}", resource) when {{ principal.dept == "{d}" && context.authenticated }};"#
        )),
        // Errors for documents whose owner is not stored.
        (0..4i64).prop_map(|n| format!(
            r#"forbid(principal, action == Action::"share", resource is Doc) when {{ resource.owner.level > {n} }};"#
        )),
        (0..4i64).prop_map(|n| format!(
            r#"permit(principal, action in [Action::"view", Action::"share"], resource is Doc) when {{ resource.owner.level >= {n} }};"#
        )),
        (0..GROUPS, 0..5i64).prop_map(|(g, n)| format!(
            r#"permit(principal in Group::"g{g}", action, resource) unless {{ resource is Doc && resource.level > {n} }};"#
        )),
        (0..FOLDERS).prop_map(|f| format!(
            r#"permit(principal is User, action == Action::"list", resource in Folder::"f{f}") when {{ context.authenticated }};"#
        )),
        // Literals that single out some documents, in the scope and in a condition.
        (0..DOCS).prop_map(|d| format!(r#"forbid(principal, action == Action::"edit", resource == Doc::"d{d}");"#)),
        (0..DOCS, 0..DOCS).prop_map(|(d, e)| format!(
            r#"permit(principal, action == Action::"share", resource is Doc) when {{ [Doc::"d{d}", Doc::"d{e}"].contains(resource) }};"#
        )),
        (0..GROUPS, 0..GROUPS).prop_map(|(g, h)| format!(
            r#"permit(principal in Group::"g{g}", action, resource is Doc) when {{ resource.owner in Group::"g{h}" }};"#
        )),
        (0..FOLDERS).prop_map(|f| format!(
            r#"permit(principal, action == Action::"view", resource is Doc) when {{ resource in Folder::"f{f}" && resource.level < principal.level }};"#
        )),
        (0..3i64).prop_map(|n| format!(
            r#"forbid(principal is User, action, resource) when {{ principal.level == {n} && context.hour > 12 }};"#
        )),
    ]
}

/// A random store: edges go only from higher to lower numbers, so there is no cycle.
fn store_json() -> impl Strategy<Value = Vec<Value>> {
    (
        prop::collection::vec(prop::collection::vec(0..GROUPS, 0..2), GROUPS),
        prop::collection::vec((prop::collection::vec(0..GROUPS, 0..3), 0..3i64, 0..DEPTS.len()), USERS),
        prop::collection::vec(prop::collection::vec(0..FOLDERS, 0..2), FOLDERS),
        prop::collection::vec((0..FOLDERS + 1, 0..USERS + 1, 0..3i64, any::<bool>()), DOCS),
    )
        .prop_map(|(groups, users, folders, docs)| {
            let mut all = Vec::new();
            for (g, parents) in groups.iter().enumerate() {
                let parents: Vec<Value> =
                    parents.iter().filter(|p| **p < g).map(|p| json!({"type": "Group", "id": format!("g{p}")})).collect();
                all.push(json!({"uid": {"type": "Group", "id": format!("g{g}")}, "attrs": {}, "parents": parents}));
            }
            for (u, (parents, level, dept)) in users.iter().enumerate() {
                let parents: Vec<Value> =
                    parents.iter().map(|p| json!({"type": "Group", "id": format!("g{p}")})).collect();
                all.push(json!({"uid": {"type": "User", "id": format!("u{u}")},
                    "attrs": {"level": level, "dept": DEPTS[*dept]}, "parents": parents}));
            }
            for (f, parents) in folders.iter().enumerate() {
                let parents: Vec<Value> =
                    parents.iter().filter(|p| **p < f).map(|p| json!({"type": "Folder", "id": format!("f{p}")})).collect();
                all.push(json!({"uid": {"type": "Folder", "id": format!("f{f}")}, "attrs": {}, "parents": parents}));
            }
            for (d, (folder, owner, level, public)) in docs.iter().enumerate() {
                // Folder `FOLDERS` means none; owner `USERS` is a user that is not stored.
                let parents: Vec<Value> = (*folder < FOLDERS)
                    .then(|| json!({"type": "Folder", "id": format!("f{folder}")}))
                    .into_iter()
                    .collect();
                all.push(json!({"uid": {"type": "Doc", "id": format!("d{d}")},
                    "attrs": {"owner": {"__entity": {"type": "User", "id": format!("u{owner}")}}, "level": level, "public": public},
                    "parents": parents}));
            }
            all
        })
}

/// A generated search: what is searched, the fixed parts, the context, and
/// whether the request sends a document of its own.
#[derive(Debug, Clone)]
struct Query {
    searched: Searched,
    principal: usize,
    action: usize,
    resource: usize,
    hour: i64,
    authenticated: bool,
    sends_doc: bool,
}

fn query() -> impl Strategy<Value = Query> {
    (
        prop::sample::select(vec![Searched::Subject, Searched::Resource, Searched::Action]),
        0..USERS + 1,
        0..ACTIONS.len(),
        0..DOCS + 1,
        0..24i64,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(searched, principal, action, resource, hour, authenticated, sends_doc)| Query {
            searched,
            principal,
            action,
            resource,
            hour,
            authenticated,
            sends_doc,
        })
}

/// The document a request may send: new, owned by `u0`, in folder `f0`.
fn sent_doc() -> Value {
    json!({"uid": {"type": "Doc", "id": "d-sent"},
        "attrs": {"owner": {"__entity": {"type": "User", "id": "u0"}}, "level": 1, "public": false},
        "parents": [{"type": "Folder", "id": "f0"}]})
}

impl Query {
    fn request(&self) -> SearchRequest {
        // Index `USERS` and `DOCS` are entities that are not stored.
        let mut request = DecisionRequest::new(
            uid(&format!(r#"User::"u{}""#, self.principal)),
            uid(&format!(r#"Action::"{}""#, ACTIONS[self.action])),
            uid(&format!(r#"Doc::"d{}""#, self.resource)),
        );
        request.context = Some(json!({"hour": self.hour, "authenticated": self.authenticated}));
        if self.sends_doc {
            request.entities.push(sent_doc());
        }
        SearchRequest::new(self.searched, request)
    }

    /// The stored entities of the searched type, one that does not exist,
    /// and the document the request sends.
    fn candidates(&self) -> Vec<EntityUid> {
        let mut all: Vec<EntityUid> = match self.searched {
            Searched::Subject => (0..=USERS).map(|u| uid(&format!(r#"User::"u{u}""#))).collect(),
            Searched::Resource => (0..=DOCS).map(|d| uid(&format!(r#"Doc::"d{d}""#))).collect(),
            Searched::Action => ACTIONS.iter().map(|a| uid(&format!(r#"Action::"{a}""#))).collect(),
        };
        if self.sends_doc && self.searched == Searched::Resource {
            all.push(uid(r#"Doc::"d-sent""#));
        }
        all
    }
}

/// Plain Cedar over every policy and every entity.
fn cedar_allows(
    policies: &PolicySet,
    entities: &[Value],
    schema: &Schema,
    request: &DecisionRequest,
) -> bool {
    let mut all = entities.to_vec();
    all.extend(request.entities.iter().cloned());
    let Ok(entities) = Entities::from_json_value(Value::Array(all), Some(schema)) else { return false };
    let Ok(context) =
        Context::from_json_value(request.context.clone().unwrap(), Some((schema, &request.action)))
    else {
        return false;
    };
    let Ok(request) = Request::new(
        request.principal.clone(),
        request.action.clone(),
        request.resource.clone(),
        context,
        Some(schema),
    ) else {
        return false;
    };
    Authorizer::new().is_authorized(&request, policies, &entities).decision() == CedarDecision::Allow
}

fn found(outcome: &consentry_engine::SearchOutcome) -> BTreeSet<String> {
    outcome.found.iter().map(|f| f.uid.to_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(96)))]

    /// Results are exactly the candidates `decide_with` allows, under both
    /// option sets, and under Cedar's own options exactly those plain
    /// Cedar's `Authorizer` allows.
    #[test]
    fn search_results_are_exactly_the_allowed_candidates(
        policies in prop::collection::vec(policy(), 1..9),
        entities in store_json(),
        queries in prop::collection::vec(query(), 1..6),
    ) {
        let text = policies.join("\n");
        let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &text, &[]).unwrap();
        let schema = bundle.schema().unwrap().clone();
        let store = EntityStore::from_json(&Value::Array(entities.clone()), Some(&schema)).unwrap();
        let plain = PolicySet::from_str(&text).unwrap();
        for query in queries {
            let searched = query.request();
            let candidates = query.candidates();
            for options in [DecisionOptions::default(), DecisionOptions::cedar_exact()] {
                let outcome = search(&bundle, &[], &store, &searched, &candidates, &options).unwrap();
                prop_assert!(outcome.unloaded.is_empty());
                let mut expected = BTreeSet::new();
                for candidate in &candidates {
                    let request = searched.candidate(candidate);
                    let decided = decide_with(&bundle, &[], &store, &request, &options);
                    if let Ok(decision) = decided.as_ref() && decision.is_allowed() {
                        expected.insert(candidate.to_string());
                        let listed = outcome.found.iter().find(|f| f.uid == *candidate);
                        prop_assert_eq!(Some(decision), listed.map(|f| f.decision.as_ref()), "{:?} {}", query, candidate);
                    }
                    if options == DecisionOptions::cedar_exact() {
                        let cedar = cedar_allows(&plain, &entities, &schema, &request);
                        prop_assert_eq!(cedar, decided.as_ref().is_ok_and(|d| d.is_allowed()), "Cedar on {:?} {}\n{}", query, candidate, text);
                    }
                }
                prop_assert_eq!(found(&outcome), expected, "{:?}\n{}", query, text);
            }
        }
    }
}

#[test]
fn a_member_of_a_group_the_policy_names_is_found_however_deep() {
    let policies = r#"permit(principal in Group::"g0", action == Action::"view", resource in Folder::"f0");"#;
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), policies, &[]).unwrap();
    let entities = json!([
        {"uid": {"type": "Group", "id": "g0"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Group", "id": "g1"}, "attrs": {}, "parents": [{"type": "Group", "id": "g0"}]},
        {"uid": {"type": "Group", "id": "g2"}, "attrs": {}, "parents": [{"type": "Group", "id": "g1"}]},
        {"uid": {"type": "User", "id": "deep"}, "attrs": {"level": 1, "dept": "eng"}, "parents": [{"type": "Group", "id": "g2"}]},
        {"uid": {"type": "User", "id": "direct"}, "attrs": {"level": 1, "dept": "eng"}, "parents": [{"type": "Group", "id": "g0"}]},
        {"uid": {"type": "User", "id": "outsider"}, "attrs": {"level": 1, "dept": "eng"}, "parents": []},
        {"uid": {"type": "Folder", "id": "f0"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Folder", "id": "f1"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f0"}]},
        {"uid": {"type": "Doc", "id": "nested"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "deep"}}, "level": 0, "public": false}, "parents": [{"type": "Folder", "id": "f1"}]},
        {"uid": {"type": "Doc", "id": "elsewhere"}, "attrs": {"owner": {"__entity": {"type": "User", "id": "deep"}}, "level": 0, "public": false}, "parents": []},
    ]);
    let store = EntityStore::from_json(&entities, bundle.schema()).unwrap();
    let mut request =
        DecisionRequest::new(uid(r#"User::"deep""#), uid(r#"Action::"view""#), uid(r#"Doc::"nested""#));
    request.context = Some(json!({"hour": 10, "authenticated": true}));
    let users: Vec<EntityUid> =
        ["deep", "direct", "outsider"].iter().map(|u| uid(&format!(r#"User::"{u}""#))).collect();
    let subjects = SearchRequest::new(Searched::Subject, request.clone());
    let outcome = search(&bundle, &[], &store, &subjects, &users, &DecisionOptions::default()).unwrap();
    assert_eq!(
        found(&outcome),
        BTreeSet::from([r#"User::"deep""#.to_owned(), r#"User::"direct""#.to_owned()])
    );
    let docs = [uid(r#"Doc::"nested""#), uid(r#"Doc::"elsewhere""#)];
    let resources = SearchRequest::new(Searched::Resource, request);
    let outcome = search(&bundle, &[], &store, &resources, &docs, &DecisionOptions::default()).unwrap();
    assert_eq!(found(&outcome), BTreeSet::from([r#"Doc::"nested""#.to_owned()]));
}

#[test]
fn a_candidate_a_bounded_store_has_not_loaded_is_not_a_result_and_is_named() {
    let policies =
        r#"permit(principal, action == Action::"view", resource is Doc) when { resource.public };"#;
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), policies, &[]).unwrap();
    let doc = |id: &str| json!({"uid": {"type": "Doc", "id": id}, "attrs": {"owner": {"__entity": {"type": "User", "id": "u0"}}, "level": 0, "public": true}, "parents": []});
    let mut cache = EntityStore::bounded(1 << 20);
    for entity in [
        doc("loaded"),
        json!({"uid": {"type": "User", "id": "u0"}, "attrs": {"level": 1, "dept": "eng"}, "parents": []}),
    ] {
        cache.admit(consentry_engine::StoredEntity::from_json(&entity, bundle.schema()).unwrap(), 100);
    }
    let mut request =
        DecisionRequest::new(uid(r#"User::"u0""#), uid(r#"Action::"view""#), uid(r#"Doc::"loaded""#));
    request.context = Some(json!({"hour": 10, "authenticated": true}));
    let resources = SearchRequest::new(Searched::Resource, request);
    let candidates = [uid(r#"Doc::"loaded""#), uid(r#"Doc::"not-loaded""#)];
    let outcome = search(&bundle, &[], &cache, &resources, &candidates, &DecisionOptions::default()).unwrap();
    assert_eq!(found(&outcome), BTreeSet::from([r#"Doc::"loaded""#.to_owned()]));
    assert_eq!(outcome.unloaded, [uid(r#"Doc::"not-loaded""#)]);
}

#[test]
fn a_context_that_does_not_fit_the_schema_is_the_callers_error() {
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), "", &[]).unwrap();
    let mut request =
        DecisionRequest::new(uid(r#"User::"u0""#), uid(r#"Action::"view""#), uid(r#"Doc::"d0""#));
    request.context = Some(json!({"hour": "ten"}));
    for searched in [Searched::Subject, Searched::Resource, Searched::Action] {
        let candidates = match searched {
            Searched::Subject => vec![uid(r#"User::"u1""#)],
            Searched::Resource => vec![uid(r#"Doc::"d1""#)],
            Searched::Action => vec![uid(r#"Action::"view""#), uid(r#"Action::"edit""#)],
        };
        let query = SearchRequest::new(searched, request.clone());
        let error =
            search(&bundle, &[], &EntityStore::new(), &query, &candidates, &DecisionOptions::default())
                .unwrap_err();
        assert_eq!(error.field, "context", "{searched:?}: {error}");
    }
}

// ---------------------------------------------------------------------------
// The bundled pack, with consents
// ---------------------------------------------------------------------------

const PACK_SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../policies/transfers.cedar");
const PACK_ENTITIES: &str = include_str!("../../policies/entities.json");
const SPECIAL: &str = include_str!("../../policies/special-categories.json");

fn pack() -> PolicyBundle {
    PolicyBundle::load(Some(SchemaSource::CedarText(PACK_SCHEMA)), &format!("{PACK}\n{TRANSFERS}"), &[])
        .unwrap()
        .with_special_categories(SpecialCategories::from_json(SPECIAL).unwrap())
}

const LABELS: [&str; 5] = ["PSY", "HIV", "GDIS", "ETH", "N"];
const TYPES: [&str; 3] = ["Observation", "Condition", "MedicationRequest"];
const PATIENTS: [&str; 3] = ["p-100", "p-200", "p-300"];

/// Extra records: patient, resource type, labels, and whether it carries a code.
fn records() -> impl Strategy<Value = Vec<(usize, usize, Vec<usize>, bool)>> {
    prop::collection::vec(
        (0..PATIENTS.len(), 0..TYPES.len(), prop::collection::vec(0..LABELS.len() - 1, 0..2), any::<bool>()),
        1..10,
    )
}

/// Consents of p-100: each a FHIR R4 consent from one of several shapes.
fn consent() -> impl Strategy<Value = Value> {
    let permit = |actor: &str, purpose: &str, nested: Value| {
        json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
            "provision": {"type": "permit", "actor": [{"reference": {"reference": actor}}],
                "purpose": [{"code": purpose}], "provision": nested}})
    };
    prop_oneof![
        Just(permit("Organization/st-mary", "TREAT", json!([]))),
        Just(permit(
            "Organization/st-mary",
            "TREAT",
            json!([{"type": "deny", "securityLabel": [{"code": "PSY"}]}])
        )),
        Just(permit(
            "Organization/st-mary",
            "TREAT",
            json!([{"type": "deny", "class": [{"code": "Condition"}]}])
        )),
        Just(permit(
            "CareTeam/cardiology",
            "TREAT",
            json!([{"type": "deny", "code": [{"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}]}])
        )),
        Just(permit("Organization/euro-research", "HRESCH", json!([]))),
        Just(permit(
            "Organization/st-mary",
            "ETREAT",
            json!([{"type": "deny", "securityLabel": [{"code": "GDIS"}]}])
        )),
        Just(
            json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
            "provision": {"type": "deny", "actor": [{"reference": {"reference": "Practitioner/dr-roth"}}]}})
        ),
        Just(
            json!({"resourceType": "Consent", "status": "inactive", "patient": {"reference": "Patient/p-100"},
            "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/city-lab"}}]}})
        ),
    ]
}

fn purpose() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"purpose": "TREAT"})),
        Just(json!({"purpose": "ETREAT", "justification": "unconscious"})),
        Just(json!({"purpose": "BTG", "justification": "unconscious"})),
        Just(json!({"purpose": "BTG"})),
        Just(json!({"purpose": "HRESCH"})),
        Just(json!({"purpose": "PATRQT"})),
        Just(json!({"purpose": "PWATRNY"})),
        Just(json!({})),
    ]
}

const PRINCIPALS: [&str; 11] = [
    r#"Practitioner::"dr-weber""#,
    r#"Practitioner::"dr-roth""#,
    r#"Practitioner::"dr-ali""#,
    r#"Practitioner::"dr-chen""#,
    r#"Practitioner::"dr-rao""#,
    r#"Practitioner::"dr-nobody""#,
    r#"Patient::"p-100""#,
    r#"Patient::"p-200""#,
    r#"RelatedPerson::"rp-anna""#,
    r#"Organization::"euro-research""#,
    r#"Organization::"overseas-insurer""#,
];

const PACK_ACTIONS: [&str; 5] = ["read", "search", "create", "update", "delete"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(48)))]

    /// Over the pack, consents, special categories and purposes, each
    /// search's results are exactly the candidates whose own decision (with
    /// its own patients' partitions) allows, and carry that very decision.
    #[test]
    fn search_over_the_pack_and_consents_is_exact(
        extra in records(),
        consents in prop::collection::vec(consent(), 0..4),
        context in purpose(),
        principal in 0..PRINCIPALS.len(),
        action in 0..PACK_ACTIONS.len(),
        resource in 0..4usize,
        searched in prop::sample::select(vec![Searched::Subject, Searched::Resource, Searched::Action]),
    ) {
        let bundle = pack();
        let mut entities: Vec<Value> = serde_json::from_str(PACK_ENTITIES).unwrap();
        for (n, (patient, kind, labels, coded)) in extra.iter().enumerate() {
            let labels: Vec<&str> = labels.iter().map(|l| LABELS[*l]).collect();
            let mut attrs = json!({"patient": {"type": "Patient", "id": PATIENTS[*patient]},
                "resourceType": TYPES[*kind], "labels": labels, "confidentiality": "N"});
            if *coded {
                attrs["codes"] = json!(["http://loinc.org|2345-7"]);
            }
            entities.push(json!({"uid": {"type": "Record", "id": format!("r{n}")}, "attrs": attrs,
                "parents": [{"type": "Patient", "id": PATIENTS[*patient]}]}));
        }
        let store = EntityStore::from_json(&Value::Array(entities.clone()), bundle.schema()).unwrap();
        let parsed: Vec<Consent> = consents.iter().map(|c| Consent::from_json(c).unwrap()).collect();
        let ids: Vec<String> = (0..parsed.len()).map(|n| format!("c-{n}")).collect();
        let versions: Vec<ConsentVersion<'_>> = parsed
            .iter()
            .zip(&ids)
            .map(|(consent, id)| ConsentVersion { id, version: 1, consent })
            .collect();
        let built: Vec<ConsentPartition> = ["p-100", "p-200", "p-300", "p-400", "p-500"]
            .iter()
            .map(|patient| {
                let own: Vec<ConsentVersion<'_>> =
                    versions.iter().filter(|v| v.consent.patient() == *patient).copied().collect();
                ConsentPartition::build(&bundle, patient, &own).unwrap()
            })
            .collect();
        let partitions: Vec<&ConsentPartition> = built.iter().collect();
        let resources = [r#"Record::"obs-1""#, r#"Record::"psy-1""#, r#"Patient::"p-100""#, r#"Record::"r0""#];
        let mut request = DecisionRequest::new(
            uid(PRINCIPALS[principal]),
            uid(&format!(r#"Action::"{}""#, PACK_ACTIONS[action])),
            uid(resources[resource]),
        );
        request.context = Some(context);
        request.now = Some(EvaluationTime::parse("2026-06-01T12:00:00Z").unwrap());
        let query = SearchRequest::new(searched, request);
        let candidates: Vec<EntityUid> = match searched {
            Searched::Subject => PRINCIPALS.iter().map(|p| uid(p)).collect(),
            Searched::Resource => entities
                .iter()
                .filter(|e| e["uid"]["type"] == "Record" || e["uid"]["type"] == "Patient")
                .map(|e| uid(&format!(r#"{}::"{}""#, e["uid"]["type"].as_str().unwrap(), e["uid"]["id"].as_str().unwrap())))
                .chain([uid(r#"Record::"not-stored""#)])
                .collect(),
            Searched::Action => PACK_ACTIONS.iter().map(|a| uid(&format!(r#"Action::"{a}""#))).collect(),
        };
        let options = DecisionOptions::default();
        let each: BTreeSet<String> = candidates.iter().flat_map(|c| query.patients(&store, c)).collect();
        prop_assert_eq!(query.patients_of_all(&store, &candidates), each.into_iter().collect::<Vec<_>>());
        let outcome = search(&bundle, &partitions, &store, &query, &candidates, &options);
        let mut expected = Vec::new();
        for candidate in &candidates {
            let request = query.candidate(candidate);
            let own: Vec<&ConsentPartition> = consent_subjects(&store, &request)
                .iter()
                .map(|patient| *partitions.iter().find(|p| p.patient() == patient).unwrap())
                .collect();
            prop_assert_eq!(query.patients(&store, candidate), consent_subjects(&store, &request));
            if let Ok(decision) = decide_with(&bundle, &own, &store, &request, &options)
                && decision.is_allowed()
            {
                expected.push((candidate.clone(), decision));
            }
        }
        match outcome {
            Ok(outcome) => {
                let got: Vec<(EntityUid, consentry_engine::Decision)> =
                    outcome.found.into_iter().map(|f| (f.uid, (*f.decision).clone())).collect();
                prop_assert_eq!(got, expected);
            }
            // Refused: then no candidate's own request could be decided either.
            Err(error) => prop_assert!(expected.is_empty(), "{error}"),
        }
    }
}

#[test]
fn a_search_of_thousands_split_across_threads_finds_what_each_decision_allows() {
    let bundle = pack();
    let mut entities: Vec<Value> = serde_json::from_str(PACK_ENTITIES).unwrap();
    let records = 3000;
    for n in 0..records {
        let labels: &[&str] = match n % 7 {
            0 => &["PSY"],
            3 => &["GDIS"],
            _ => &[],
        };
        let patient = if n % 5 == 0 { "p-200" } else { "p-100" };
        entities.push(json!({"uid": {"type": "Record", "id": format!("r{n}")},
            "attrs": {"patient": {"type": "Patient", "id": patient}, "resourceType": "Observation", "labels": labels, "confidentiality": "N"},
            "parents": [{"type": "Patient", "id": patient}]}));
    }
    let store = EntityStore::from_json(&Value::Array(entities), bundle.schema()).unwrap();
    let consent = Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "purpose": [{"code": "TREAT"}], "provision": [{"type": "deny", "securityLabel": [{"code": "PSY"}]}]}
    }))
    .unwrap();
    let p100 = ConsentPartition::build(
        &bundle,
        "p-100",
        &[ConsentVersion { id: "c-100", version: 1, consent: &consent }],
    )
    .unwrap();
    let p200 = ConsentPartition::build(&bundle, "p-200", &[]).unwrap();
    let mut request = DecisionRequest::new(
        uid(r#"Practitioner::"dr-weber""#),
        uid(r#"Action::"read""#),
        uid(r#"Record::"r1""#),
    );
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T12:00:00Z").unwrap());
    let query = SearchRequest::new(Searched::Resource, request);
    let candidates: Vec<EntityUid> = (0..records).map(|n| uid(&format!(r#"Record::"r{n}""#))).collect();
    let options = DecisionOptions::default();
    let outcome = search(&bundle, &[&p100, &p200], &store, &query, &candidates, &options).unwrap();
    let expected: Vec<EntityUid> = candidates
        .iter()
        .filter(|candidate| {
            let request = query.candidate(candidate);
            let own = if query.patients(&store, candidate) == ["p-100"] { &p100 } else { &p200 };
            decide_with(&bundle, &[own], &store, &request, &options).unwrap().is_allowed()
        })
        .cloned()
        .collect();
    assert!(expected.len() > 1000, "{}", expected.len());
    assert_eq!(outcome.found.iter().map(|f| f.uid.clone()).collect::<Vec<_>>(), expected);
}

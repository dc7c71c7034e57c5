//! Stored facts win (finding 2 of issue 13): over the bundled pack, an
//! entity or AuthZEN property sent with a request may add what the store
//! lacks, never change what it holds. The named tests replay the four
//! rewrites the hostile review found; the property tests generate requests
//! with copies and mutations of stored entities, and arbitrary JSON.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use consentry_engine::{
    AttributeOverlay, Decision, DecisionOptions, DecisionRequest, EntityStore, EvaluationTime, PolicyBundle,
    RequestEntities, RequestError, RequestErrorKind, SchemaSource, consent_subjects, decide_with, parse_uid,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../policies/transfers.cedar");
const ENTITIES: &str = include_str!("../../policies/entities.json");

struct Pack {
    bundle: PolicyBundle,
    store: EntityStore,
    stored: Vec<Value>,
}

/// Built once: loading and validating the pack is most of a case's cost.
fn pack() -> &'static Pack {
    static PACK: std::sync::LazyLock<Pack> = std::sync::LazyLock::new(load);
    &PACK
}

fn load() -> Pack {
    let bundle =
        PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &format!("{PACK}\n{TRANSFERS}"), &[])
            .unwrap();
    let stored: Value = serde_json::from_str(ENTITIES).unwrap();
    let store = EntityStore::from_json(&stored, bundle.schema()).unwrap();
    Pack { bundle, store, stored: stored.as_array().unwrap().clone() }
}

impl Pack {
    fn stored(&self, kind: &str, id: &str) -> Value {
        self.stored.iter().find(|e| e["uid"]["type"] == kind && e["uid"]["id"] == id).unwrap().clone()
    }

    fn decide(&self, request: &DecisionRequest, mode: RequestEntities) -> Result<Decision, RequestError> {
        let options = DecisionOptions { request_entities: mode, ..DecisionOptions::default() };
        decide_with(&self.bundle, &[], &self.store, request, &options)
    }
}

fn request(principal: &str, action: &str, resource: &str, context: Value) -> DecisionRequest {
    let mut request = DecisionRequest::new(
        parse_uid(&json!(principal), "principal").unwrap(),
        parse_uid(&json!(format!("Action::\"{action}\"")), "action").unwrap(),
        parse_uid(&json!(resource), "resource").unwrap(),
    );
    request.context = Some(context);
    request.now = Some(EvaluationTime::from_unix_millis(1_780_000_000_000));
    request
}

fn break_glass(principal: &str, resource: &str) -> DecisionRequest {
    request(principal, "read", resource, json!({"purpose": "BTG", "justification": "unconscious on arrival"}))
}

/// Refused with the conflict error, naming `field`. (Each test first shows
/// that `Replace`, cedar-agent's semantics, lets the rewrite allow.)
fn assert_conflict(pack: &Pack, rewritten: &DecisionRequest, field: &str) {
    let refused = pack.decide(rewritten, RequestEntities::AddOnly).unwrap_err();
    assert_eq!(refused.kind, RequestErrorKind::StoredFactConflict, "{refused}");
    assert_eq!(refused.field, field, "{refused}");
    assert!(refused.message.contains("stored"), "{refused}");
}

#[test]
fn finding_02_a_practitioner_cannot_declare_himself_a_member_of_break_glass() {
    let pack = pack();
    let mut rewritten = break_glass("Practitioner::\"dr-weber\"", "Record::\"obs-1\"");
    let mut weber = pack.stored("Practitioner", "dr-weber");
    weber["parents"].as_array_mut().unwrap().push(json!({"type": "Group", "id": "break-glass"}));
    rewritten.entities = vec![weber];
    assert!(
        pack.decide(&rewritten, RequestEntities::Replace).unwrap().is_allowed(),
        "cedar-agent's semantics"
    );
    assert_conflict(pack, &rewritten, "entities[0].parents");
    let honest = break_glass("Practitioner::\"dr-weber\"", "Record::\"obs-1\"");
    assert!(!pack.decide(&honest, RequestEntities::AddOnly).unwrap().is_allowed());
}

#[test]
fn finding_02_a_restricted_patient_cannot_be_redeclared_without_restricted() {
    let pack = pack();
    let mut rewritten = break_glass("Practitioner::\"dr-ali\"", "Record::\"obs-2\"");
    rewritten.entities = vec![
        pack.stored("Record", "obs-2"),
        json!({"uid": {"type": "Patient", "id": "p-200"}, "attrs": {}, "parents": []}),
    ];
    assert!(pack.decide(&rewritten, RequestEntities::Replace).unwrap().is_allowed());
    assert_conflict(pack, &rewritten, "entities[1].attrs.restricted");
    rewritten.entities[1]["attrs"]["restricted"] = json!(false);
    assert_conflict(pack, &rewritten, "entities[1].attrs.restricted");
}

#[test]
fn finding_02_a_record_sent_without_its_patient_still_loads_the_patients_consents() {
    let pack = pack();
    let mut detached = break_glass("Practitioner::\"dr-ali\"", "Record::\"obs-1\"");
    let mut obs = pack.stored("Record", "obs-1");
    obs["parents"] = json!([]);
    detached.entities = vec![obs];
    assert_eq!(consent_subjects(&pack.store, &detached), ["p-100"], "the stored parent counts");
    assert_conflict(pack, &detached, "entities[0].parents");
}

#[test]
fn finding_02_a_property_cannot_point_another_patients_record_at_a_patient() {
    let pack = pack();
    let mut moved = break_glass("Practitioner::\"dr-ali\"", "Record::\"obs-2\"");
    moved.overlays = vec![AttributeOverlay {
        uid: moved.resource.clone(),
        attributes: json!({"patient": {"type": "Patient", "id": "p-100"}}).as_object().unwrap().clone(),
        field: "resource.properties".to_owned(),
    }];
    assert!(pack.decide(&moved, RequestEntities::Replace).unwrap().is_allowed());
    assert_conflict(pack, &moved, "resource.properties.patient");
}

#[test]
fn a_stored_entity_sent_as_stored_or_with_attributes_it_lacks_is_accepted() {
    let pack = pack();
    let plain = break_glass("Practitioner::\"dr-ali\"", "Record::\"psy-1\"");
    let expected = pack.decide(&plain, RequestEntities::AddOnly).unwrap();
    let mut copied = plain.clone();
    let mut psy = pack.stored("Record", "psy-1");
    copied.entities = vec![pack.stored("Practitioner", "dr-ali"), psy.clone()];
    assert_eq!(pack.decide(&copied, RequestEntities::AddOnly).unwrap(), expected);
    psy["attrs"]["codes"] = json!(["http://hl7.org/fhir/sid/icd-10|F32.1"]);
    copied.entities = vec![psy];
    assert_eq!(pack.decide(&copied, RequestEntities::AddOnly).unwrap(), expected);
    // A property with the stored value, or one the store lacks, is accepted too.
    copied.entities.clear();
    copied.overlays = vec![AttributeOverlay {
        uid: copied.resource.clone(),
        attributes: json!({"labels": ["PSY"], "codes": ["F32.1"]}).as_object().unwrap().clone(),
        field: "resource.properties".to_owned(),
    }];
    assert_eq!(pack.decide(&copied, RequestEntities::AddOnly).unwrap(), expected);
}

#[test]
fn an_entity_the_store_lacks_may_be_sent() {
    let pack = pack();
    let mut new_record =
        request("Patient::\"p-100\"", "read", "Record::\"lab-9\"", json!({"purpose": "PATRQT"}));
    new_record.entities = vec![json!({"uid": {"type": "Record", "id": "lab-9"}, "attrs": {
        "patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation", "labels": [],
        "confidentiality": "N"}, "parents": [{"type": "Patient", "id": "p-100"}]})];
    assert!(pack.decide(&new_record, RequestEntities::AddOnly).unwrap().is_allowed());
    assert_eq!(consent_subjects(&pack.store, &new_record), ["p-100"]);
}

#[test]
fn a_schema_action_cannot_be_redeclared() {
    let pack = pack();
    let mut regrouped =
        request("Practitioner::\"dr-weber\"", "delete", "Record::\"obs-1\"", json!({"purpose": "TREAT"}));
    regrouped.entities = vec![
        json!({"uid": {"type": "Action", "id": "delete"}, "attrs": {}, "parents": [{"type": "Action", "id": "read"}]}),
    ];
    let refused = pack.decide(&regrouped, RequestEntities::AddOnly).unwrap_err();
    assert_eq!(refused.field, "entities[0]", "{refused}");
}

#[test]
fn without_a_schema_a_request_cannot_declare_actions_either() {
    let bundle =
        PolicyBundle::load(None, r#"permit(principal, action in Action::"read", resource);"#, &[]).unwrap();
    let store = EntityStore::from_json(&json!([]), None).unwrap();
    let mut regrouped = DecisionRequest::new(
        parse_uid(&json!("User::\"u\""), "principal").unwrap(),
        parse_uid(&json!("Action::\"delete\""), "action").unwrap(),
        parse_uid(&json!("Doc::\"d\""), "resource").unwrap(),
    );
    regrouped.entities = vec![
        json!({"uid": {"type": "Action", "id": "delete"}, "attrs": {}, "parents": [{"type": "Action", "id": "read"}]}),
    ];
    let replace =
        DecisionOptions { request_entities: RequestEntities::Replace, ..DecisionOptions::default() };
    assert!(decide_with(&bundle, &[], &store, &regrouped, &replace).unwrap().is_allowed(), "plain Cedar");
    let refused = decide_with(&bundle, &[], &store, &regrouped, &DecisionOptions::default()).unwrap_err();
    assert_eq!((refused.kind, refused.field.as_str()), (RequestErrorKind::StoredFactConflict, "entities[0]"));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

const PRINCIPALS: &[&str] = &[
    "Practitioner::\"dr-weber\"",
    "Practitioner::\"dr-ali\"",
    "Practitioner::\"dr-chen\"",
    "Practitioner::\"dr-new\"",
    "Patient::\"p-100\"",
    "RelatedPerson::\"rp-anna\"",
    "RelatedPerson::\"rp-otto\"",
    "Organization::\"overseas-insurer\"",
];
const ACTIONS: &[&str] = &["read", "search", "update"];
const RESOURCES: &[&str] = &[
    "Record::\"obs-1\"",
    "Record::\"psy-1\"",
    "Record::\"obs-2\"",
    "Record::\"obs-3\"",
    "Record::\"lab-9\"",
    "Patient::\"p-100\"",
    "Patient::\"p-200\"",
    "Patient::\"p-300\"",
    "Patient::\"p-400\"",
];
const PURPOSES: &[&str] = &["TREAT", "ETREAT", "BTG", "PATRQT", "PWATRNY", "HRESCH", ""];

/// What a generated item does to the entity it copies.
#[derive(Debug, Clone)]
enum Mutation {
    /// Sent exactly as stored.
    Copy,
    /// An optional attribute the stored entity lacks, added.
    AddAttribute,
    /// A stored attribute, given another value.
    ChangeAttribute,
    /// An optional stored attribute, left out.
    DropAttribute,
    /// A parent the schema allows, added.
    AddParent,
    /// Every stored parent, left out.
    DropParents,
}

/// An entity sent with the request, and whether it changes a stored fact.
#[derive(Debug, Clone)]
struct Item {
    entity: Value,
    conflicts: bool,
}

fn patient(id: &str) -> Value {
    json!({"type": "Patient", "id": id})
}

/// Applies `mutation` to `stored` (a stored entity's JSON) where the schema
/// lets it; `None` when it does not apply to this entity.
fn mutate(stored: &Value, mutation: &Mutation, pick: usize) -> Option<Item> {
    let kind = stored["uid"]["type"].as_str().unwrap_or_default();
    let mut entity = stored.clone();
    let attrs = entity["attrs"].as_object_mut()?;
    let optional: &[(&str, Value)] = match kind {
        "Patient" => &[
            ("restricted", json!(pick.is_multiple_of(2))),
            ("objections", json!(["research"])),
            ("birthDate", json!("2001-02-03")),
        ],
        "Record" => &[
            ("codes", json!(["http://hl7.org/fhir/sid/icd-10|F32.1"])),
            ("date", json!("2026-01-01T00:00:00Z")),
        ],
        "RelatedPerson" => &[("relationship", json!("guardian"))],
        _ => &[],
    };
    let conflicts = match mutation {
        Mutation::Copy => false,
        Mutation::AddAttribute => {
            let absent: Vec<&(&str, Value)> =
                optional.iter().filter(|(name, _)| !attrs.contains_key(*name)).collect();
            let (name, value) = absent.get(pick % absent.len().max(1))?;
            attrs.insert((*name).to_owned(), value.clone());
            false
        }
        Mutation::ChangeAttribute => {
            let names: Vec<String> = attrs.keys().cloned().collect();
            let name = names.get(pick % names.len().max(1))?.clone();
            let changed = match (name.as_str(), &attrs[&name]) {
                ("patient", _) => patient(if attrs[&name]["id"] == "p-100" { "p-200" } else { "p-100" }),
                ("represents", _) => json!([patient("p-200")]),
                ("date", _) => json!("2020-01-01T00:00:00Z"),
                (_, Value::Bool(b)) => json!(!b),
                (_, Value::String(s)) => json!(format!("{s}-x")),
                (_, Value::Array(items)) if items.iter().all(Value::is_string) => json!(["PSY", "HIV"]),
                _ => return None,
            };
            if changed == attrs[&name] {
                return None;
            }
            attrs.insert(name, changed);
            true
        }
        Mutation::DropAttribute => {
            let present: Vec<&str> =
                optional.iter().map(|(n, _)| *n).filter(|n| attrs.contains_key(*n)).collect();
            let name = *present.get(pick % present.len().max(1))?;
            attrs.remove(name);
            true
        }
        Mutation::AddParent => {
            let parent = match kind {
                "Practitioner" => [
                    json!({"type": "Group", "id": "break-glass"}),
                    json!({"type": "Organization", "id": "euro-research"}),
                ][pick % 2]
                    .clone(),
                "Record" => patient(["p-100", "p-200", "p-300"][pick % 3]),
                "CareTeam" => json!({"type": "Organization", "id": "city-lab"}),
                _ => return None,
            };
            let parents = entity["parents"].as_array_mut()?;
            if parents.contains(&parent) {
                return None;
            }
            parents.push(parent);
            true
        }
        Mutation::DropParents => {
            let parents = entity["parents"].as_array_mut()?;
            if parents.is_empty() {
                return None;
            }
            parents.clear();
            true
        }
    };
    Some(Item { entity, conflicts })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => Just(Mutation::Copy),
        2 => Just(Mutation::AddAttribute),
        2 => Just(Mutation::ChangeAttribute),
        1 => Just(Mutation::DropAttribute),
        2 => Just(Mutation::AddParent),
        1 => Just(Mutation::DropParents),
    ]
}

/// Entities the store lacks, which a caller may always send.
fn new_entities() -> Vec<Value> {
    vec![
        json!({"uid": {"type": "Practitioner", "id": "dr-new"}, "attrs": {"role": "physician"},
               "parents": [{"type": "Organization", "id": "st-mary"}]}),
        json!({"uid": {"type": "Record", "id": "lab-9"}, "attrs": {"patient": patient("p-100"),
               "resourceType": "Observation", "labels": [], "confidentiality": "N"}, "parents": [patient("p-100")]}),
    ]
}

#[derive(Debug, Clone)]
struct Generated {
    request: DecisionRequest,
    /// Per entity sent, whether it changes a stored fact.
    conflicting: Vec<bool>,
    /// Per overlay, whether it changes a stored fact.
    conflicting_overlays: Vec<bool>,
}

fn generated(stored: Vec<Value>) -> impl Strategy<Value = Generated> {
    let count = stored.len();
    (
        0..PRINCIPALS.len(),
        0..ACTIONS.len(),
        0..RESOURCES.len(),
        0..PURPOSES.len(),
        any::<bool>(),
        prop::collection::vec((0..count + 2, mutation(), 0usize..6), 0..4),
        prop::collection::vec((any::<bool>(), 0usize..4), 0..3),
    )
        .prop_map(move |(p, a, r, purpose, justified, items, overlays)| {
            let mut context = Map::new();
            if !PURPOSES[purpose].is_empty() {
                context.insert("purpose".into(), json!(PURPOSES[purpose]));
            }
            if justified {
                context.insert("justification".into(), json!("unconscious on arrival"));
            }
            let mut request = request(PRINCIPALS[p], ACTIONS[a], RESOURCES[r], Value::Object(context));
            let mut conflicting = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (index, mutation, pick) in items {
                let item = match stored.get(index) {
                    Some(entity) => mutate(entity, &mutation, pick),
                    None => Some(Item { entity: new_entities()[index - count].clone(), conflicts: false }),
                };
                if let Some(item) = item.filter(|item| seen.insert(item.entity["uid"].clone())) {
                    request.entities.push(item.entity);
                    conflicting.push(item.conflicts);
                }
            }
            let mut conflicting_overlays = Vec::new();
            for (on_resource, pick) in overlays {
                let (uid, field) = if on_resource {
                    (request.resource.clone(), "resource.properties")
                } else {
                    (request.principal.clone(), "subject.properties")
                };
                let base = stored
                    .iter()
                    .find(|e| parse_uid(&e["uid"], "uid").ok().as_ref() == Some(&uid))
                    .cloned()
                    .or_else(|| {
                        new_entities()
                            .into_iter()
                            .find(|e| parse_uid(&e["uid"], "uid").ok().as_ref() == Some(&uid))
                    });
                let Some(base) = base else { continue };
                let Some(item) = mutate(
                    &base,
                    &[
                        Mutation::Copy,
                        Mutation::AddAttribute,
                        Mutation::ChangeAttribute,
                        Mutation::ChangeAttribute,
                    ][pick],
                    pick,
                ) else {
                    continue;
                };
                let attributes = item.entity["attrs"].as_object().cloned().unwrap_or_default();
                let is_stored = stored.iter().any(|e| e["uid"] == base["uid"]);
                conflicting_overlays.push(item.conflicts && is_stored);
                request.overlays.push(AttributeOverlay { uid, attributes, field: field.to_owned() });
            }
            Generated { request, conflicting, conflicting_overlays }
        })
}

/// A request sent with a new entity whose uid is also overlaid decides
/// against the overlay on that entity; the generator only overlays stored
/// or new entities, so the first conflict in processing order is the one
/// named.
fn first_conflict_field(generated: &Generated) -> Option<String> {
    if let Some(i) = generated.conflicting.iter().position(|c| *c) {
        return Some(format!("entities[{i}]"));
    }
    let i = generated.conflicting_overlays.iter().position(|c| *c)?;
    Some(generated.request.overlays[i].field.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// With `AddOnly`, a request whose entities or properties change a
    /// stored fact is refused with the conflict error naming the first such
    /// item; any other is decided exactly as plain Cedar decides it with
    /// the sent entities replacing the stored ones (they only add to them),
    /// and as the same request with every conflicting item removed.
    #[test]
    fn request_entities_never_change_a_stored_fact(generated in generated(pack().stored.clone())) {
        let pack = pack();
        let answer = pack.decide(&generated.request, RequestEntities::AddOnly);
        match first_conflict_field(&generated) {
            Some(field) => {
                let error = answer.expect_err("a conflicting request was decided");
                prop_assert_eq!(error.kind, RequestErrorKind::StoredFactConflict, "{}", error);
                prop_assert!(error.field.starts_with(&field), "{} should name {}", error, field);
                let mut cleaned = generated.request.clone();
                let mut keep = generated.conflicting.iter();
                cleaned.entities.retain(|_| !keep.next().copied().unwrap_or(false));
                let mut keep = generated.conflicting_overlays.iter();
                cleaned.overlays.retain(|_| !keep.next().copied().unwrap_or(false));
                let cleaned_answer = pack.decide(&cleaned, RequestEntities::AddOnly).expect("the cleaned request is accepted");
                prop_assert_eq!(cleaned_answer, pack.decide(&cleaned, RequestEntities::Replace).unwrap());
            }
            None => {
                let decision = answer.expect("a request without conflicts is decided");
                prop_assert_eq!(&decision, &pack.decide(&generated.request, RequestEntities::Replace).unwrap());
            }
        }
        // The stored parents of every entity on the resource's chain always count.
        let plain = consent_subjects(&pack.store, &DecisionRequest::new(
            generated.request.principal.clone(), generated.request.action.clone(), generated.request.resource.clone()));
        let subjects = consent_subjects(&pack.store, &generated.request);
        prop_assert!(plain.iter().all(|p| subjects.contains(p)), "{:?} lost some of {:?}", subjects, plain);
    }
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just("Patient::\"p-100\"".to_owned()),
            Just("__entity".to_owned()),
            Just("__extn".to_owned()),
            Just("Record".to_owned()),
            "[a-z:\"\\\\-]{0,12}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let keys = prop_oneof![
            Just("uid".to_owned()),
            Just("attrs".to_owned()),
            Just("parents".to_owned()),
            Just("tags".to_owned()),
            Just("type".to_owned()),
            Just("id".to_owned()),
            Just("patient".to_owned()),
            Just("restricted".to_owned()),
            Just("__entity".to_owned()),
            Just("__extn".to_owned()),
            Just("fn".to_owned()),
            Just("arg".to_owned()),
            "[a-z]{1,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Whatever shape the context, entities and properties have, a decision
    /// is an answer or a precise refusal, never a panic, in either mode.
    #[test]
    fn arbitrary_request_shapes_never_panic(
        resource in 0..RESOURCES.len(),
        context in json_value(),
        entities in prop::collection::vec(json_value(), 0..4),
        properties in prop::collection::btree_map("[a-z]{1,10}", json_value(), 0..3),
        stored_index in 0usize..24,
        uid in json_value(),
    ) {
        let pack = pack();
        let mut request = break_glass("Practitioner::\"dr-ali\"", RESOURCES[resource]);
        request.context = Some(context);
        request.entities = entities;
        // Stored entities with arbitrary values in their attributes and parents.
        if let Some(stored) = pack.stored.get(stored_index) {
            let mut mangled = stored.clone();
            mangled["attrs"]["patient"] = uid.clone();
            request.entities.push(mangled);
            let mut reparented = stored.clone();
            reparented["parents"] = json!([uid]);
            request.entities.push(reparented);
        }
        request.overlays.push(AttributeOverlay {
            uid: request.resource.clone(),
            attributes: properties.into_iter().collect(),
            field: "resource.properties".to_owned(),
        });
        for mode in [RequestEntities::AddOnly, RequestEntities::Replace] {
            if let Err(error) = pack.decide(&request, mode) {
                prop_assert!(!error.field.is_empty(), "{}", error);
            }
        }
        let _ = consent_subjects(&pack.store, &request);
    }
}

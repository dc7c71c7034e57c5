//! Remembered closures must never outlive the store contents they were
//! computed from: a stale ancestor is a wrong Allow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use consentry_engine::{
    DecisionOptions, DecisionRequest, EntityPatch, EntityStore, PolicyBundle, RequestEntities,
    RequestErrorKind, decide, decide_with, parse_uid,
};
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("ward-staff") permit(principal in Group::"ward", action == Action::"read", resource);
"#;

fn bundle() -> PolicyBundle {
    PolicyBundle::load(None, POLICIES, &[]).unwrap()
}

fn store(entities: Value) -> EntityStore {
    EntityStore::from_json(&entities, None).unwrap()
}

fn request() -> DecisionRequest {
    DecisionRequest::new(
        parse_uid(&json!("User::\"ana\""), "principal").unwrap(),
        parse_uid(&json!("Action::\"read\""), "action").unwrap(),
        parse_uid(&json!("Doc::\"d1\""), "resource").unwrap(),
    )
}

fn ana_under(team_parents: Value) -> Value {
    json!([
        {"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": [{"type": "Group", "id": "team"}]},
        {"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": team_parents},
        {"uid": {"type": "Doc", "id": "d1"}, "attrs": {}, "parents": []},
    ])
}

fn allowed(bundle: &PolicyBundle, store: &EntityStore, request: &DecisionRequest) -> bool {
    decide(bundle, store, request).unwrap().is_allowed()
}

#[test]
fn moving_a_grandparent_edge_revokes_access_on_the_next_decision() {
    let bundle = bundle();
    let mut store = store(ana_under(json!([{"type": "Group", "id": "ward"}])));
    assert!(allowed(&bundle, &store, &request()));
    assert!(allowed(&bundle, &store, &request()), "the second decision reads the remembered closure");
    let patch = EntityPatch {
        upsert: vec![json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": []})],
        delete: vec![],
    };
    store.apply(patch.parse(None).unwrap());
    assert!(!allowed(&bundle, &store, &request()), "a closure from before the patch was used");
}

#[test]
fn deleting_an_intermediate_group_cuts_the_chain() {
    let bundle = bundle();
    let mut store = store(ana_under(json!([{"type": "Group", "id": "ward"}])));
    assert!(allowed(&bundle, &store, &request()));
    assert!(store.remove(&parse_uid(&json!("Group::\"team\""), "uid").unwrap()));
    assert!(!allowed(&bundle, &store, &request()));
}

#[test]
fn adding_a_missing_parent_later_extends_the_closure() {
    let bundle = bundle();
    // `team` is named as a parent but not stored: it counts, with no parents.
    let mut store = store(json!([
        {"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": [{"type": "Group", "id": "team"}]},
        {"uid": {"type": "Doc", "id": "d1"}, "attrs": {}, "parents": []},
    ]));
    assert!(!allowed(&bundle, &store, &request()));
    let team = json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": [{"type": "Group", "id": "ward"}]});
    store.apply(EntityPatch { upsert: vec![team], delete: vec![] }.parse(None).unwrap());
    assert!(allowed(&bundle, &store, &request()));
}

#[test]
fn a_changed_clone_does_not_leak_its_closures_into_the_original() {
    let bundle = bundle();
    let original = store(ana_under(json!([])));
    assert!(!allowed(&bundle, &original, &request()));
    let mut changed = original.clone();
    let team = json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": [{"type": "Group", "id": "ward"}]});
    changed.apply(EntityPatch { upsert: vec![team], delete: vec![] }.parse(None).unwrap());
    assert!(allowed(&bundle, &changed, &request()));
    assert!(!allowed(&bundle, &original, &request()), "the original read the clone's closure");
    assert!(allowed(&bundle, &changed, &request()));
}

#[test]
fn a_request_entity_shadows_a_remembered_ancestor() {
    let bundle = bundle();
    let store = store(ana_under(json!([{"type": "Group", "id": "ward"}])));
    assert!(allowed(&bundle, &store, &request()));
    let mut shadowed = request();
    shadowed.entities = vec![json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": []})];
    let replace =
        DecisionOptions { request_entities: RequestEntities::Replace, ..DecisionOptions::default() };
    let decision = decide_with(&bundle, &[], &store, &shadowed, &replace).unwrap();
    assert!(!decision.is_allowed(), "the stored closure ignored the request's entity");
    assert!(allowed(&bundle, &store, &request()), "the request's entity leaked into the store's closures");
    // By default the same entity is refused: it would cut a stored edge.
    let refused = decide(&bundle, &store, &shadowed).unwrap_err();
    assert_eq!(refused.kind, RequestErrorKind::StoredFactConflict);
    assert_eq!(refused.field, "entities[0].parents");
}

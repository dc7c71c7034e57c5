//! A bounded store holds part of a larger directory. A decision over it
//! must never treat an entity it has not loaded as absent: a missing group
//! membership or `restricted` flag is a wrong Allow. So a decision that
//! reaches an unloaded entity names it and denies, and once the host has
//! loaded what was named, the answer is the one the whole directory gives.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use consentry_engine::cedar_policy::{Entity, EntityUid};
use consentry_engine::{
    Decision, DecisionRequest, EntityStore, Outcome, PolicyBundle, Presence, RequestError, RequestErrorKind,
    StoredEntity, decide, parse_uid,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const POLICIES: &str = r#"
@id("ward-staff") permit(principal in Group::"ward", action == Action::"read", resource);
@id("restricted") forbid(principal, action, resource) when { resource has owner && resource.owner has restricted && resource.owner.restricted };
@id("blocked") forbid(principal in Group::"blocked", action, resource);
"#;

fn bundle() -> PolicyBundle {
    PolicyBundle::load(None, POLICIES, &[]).unwrap()
}

fn uid(text: &str) -> EntityUid {
    parse_uid(&json!(text), "uid").unwrap()
}

fn request(principal: &str, resource: &str) -> DecisionRequest {
    DecisionRequest::new(uid(principal), uid(r#"Action::"read""#), uid(resource))
}

/// The host's loop: decide, load what the decision named from `truth`, decide again.
fn try_loading(
    bundle: &PolicyBundle,
    cache: &mut EntityStore,
    truth: &EntityStore,
    request: &DecisionRequest,
) -> Result<(Decision, usize), RequestError> {
    for loads in 0..16 {
        let decision = decide(bundle, cache, request)?;
        if decision.unloaded.is_empty() {
            return Ok((decision, loads));
        }
        cache.make_room();
        for missing in &decision.unloaded {
            match truth.get(missing) {
                Some(stored) => cache.admit(StoredEntity::new(stored.entity().clone()), 2000),
                None => cache.admit_absent(missing.clone()),
            }
        }
    }
    panic!("the decision never found its entities loaded");
}

fn decide_loading(
    bundle: &PolicyBundle,
    cache: &mut EntityStore,
    truth: &EntityStore,
    request: &DecisionRequest,
) -> (Decision, usize) {
    try_loading(bundle, cache, truth, request).unwrap()
}

fn directory() -> EntityStore {
    EntityStore::from_json(
        &json!([
            {"uid": {"type": "User", "id": "ana"}, "attrs": {}, "parents": [{"type": "Group", "id": "team"}]},
            {"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": [{"type": "Group", "id": "ward"}, {"type": "Group", "id": "blocked"}]},
            {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"owner": {"__entity": {"type": "Owner", "id": "o1"}}}, "parents": []},
            {"uid": {"type": "Owner", "id": "o1"}, "attrs": {"restricted": false}, "parents": []},
        ]),
        None,
    )
    .unwrap()
}

#[test]
fn a_decision_that_reaches_an_unloaded_entity_denies_and_names_it() {
    let mut cache = EntityStore::bounded(1 << 20);
    let truth = directory();
    for loaded in [r#"User::"ana""#, r#"Doc::"d1""#, r#"Owner::"o1""#] {
        cache.admit(StoredEntity::new(truth.get(&uid(loaded)).unwrap().entity().clone()), 100);
    }
    // `team` (and through it `blocked`) is not loaded: deciding as if it
    // were absent would allow.
    let decision = decide(&bundle(), &cache, &request(r#"User::"ana""#, r#"Doc::"d1""#)).unwrap();
    assert_eq!(decision.outcome, Outcome::FailedClosed);
    assert!(decision.unloaded.contains(&uid(r#"Group::"team""#)), "{:?}", decision.unloaded);
    assert!(decision.summary().contains(r#"Group::"team""#), "{}", decision.summary());
}

#[test]
fn once_loaded_the_answer_is_the_whole_directorys() {
    let truth = directory();
    let mut cache = EntityStore::bounded(1 << 20);
    let request = request(r#"User::"ana""#, r#"Doc::"d1""#);
    let (decision, loads) = decide_loading(&bundle(), &mut cache, &truth, &request);
    assert_eq!(decision.outcome, decide(&bundle(), &truth, &request).unwrap().outcome);
    assert_eq!(decision.outcome, Outcome::Forbidden, "`blocked` is reached through `team`");
    assert!(loads >= 2, "the chain is found level by level");
}

#[test]
fn an_entity_known_absent_is_absent_and_an_unknown_one_is_not() {
    let mut cache = EntityStore::bounded(1 << 20);
    let ghost = uid(r#"User::"ghost""#);
    assert!(matches!(cache.presence(&ghost), Presence::Unloaded));
    cache.admit_absent(ghost.clone());
    assert!(matches!(cache.presence(&ghost), Presence::Absent));
    assert!(matches!(EntityStore::new().presence(&ghost), Presence::Absent), "a whole directory lacks it");
}

#[test]
fn a_callers_copy_of_an_unloaded_stored_entity_is_not_taken_as_new() {
    // Under add-only, a sent entity is checked against the stored one; if
    // that is not loaded, the check cannot be skipped as if it did not exist.
    let mut cache = EntityStore::bounded(1 << 20);
    let truth = directory();
    for loaded in [r#"Doc::"d1""#, r#"Owner::"o1""#, r#"Group::"ward""#, r#"Group::"blocked""#] {
        match truth.get(&uid(loaded)) {
            Some(stored) => cache.admit(StoredEntity::new(stored.entity().clone()), 100),
            None => cache.admit_absent(uid(loaded)),
        }
    }
    let mut request = request(r#"User::"ana""#, r#"Doc::"d1""#);
    request.entities = vec![
        json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": [{"type": "Group", "id": "ward"}]}),
    ];
    let decision = decide(&bundle(), &cache, &request).unwrap();
    assert_eq!(decision.outcome, Outcome::FailedClosed);
    assert!(decision.unloaded.contains(&uid(r#"Group::"team""#)));
    let refused = try_loading(&bundle(), &mut cache, &truth, &request).unwrap_err();
    assert_eq!(refused.kind, RequestErrorKind::StoredFactConflict, "the copy drops `blocked`, a stored fact");
}

#[test]
fn a_change_forgets_the_entity_and_the_next_decision_loads_it_again() {
    let mut truth = directory();
    let mut cache = EntityStore::bounded(1 << 20);
    let request = request(r#"User::"ana""#, r#"Doc::"d1""#);
    decide_loading(&bundle(), &mut cache, &truth, &request);
    let unblocked = json!({"uid": {"type": "Group", "id": "team"}, "attrs": {}, "parents": [{"type": "Group", "id": "ward"}]});
    truth.upsert(Entity::from_json_value(unblocked, None).unwrap());
    cache.forget([&uid(r#"Group::"team""#)]);
    let (decision, loads) = decide_loading(&bundle(), &mut cache, &truth, &request);
    assert!(decision.is_allowed(), "{decision:?}");
    assert_eq!(loads, 1);
}

#[test]
fn a_sweep_keeps_the_store_near_its_budget_and_spares_what_was_just_loaded() {
    let budget = 20_000;
    let mut cache = EntityStore::bounded(budget);
    for n in 0..100 {
        cache.make_room();
        let user = json!({"uid": {"type": "User", "id": format!("u{n}")}, "attrs": {}, "parents": []});
        let entity = StoredEntity::from_json(&user, None).unwrap();
        cache.admit(entity, 1000);
        assert!(cache.get(&uid(&format!("User::\"u{n}\""))).is_some(), "the entity just loaded stays");
    }
    let (_, bytes) = cache.footprint().unwrap();
    assert!(bytes <= budget + 1000, "{bytes} bytes held for a budget of {budget}");
    assert!(cache.len() < 100);
}

/// A random directory of users, groups and documents, with edges only
/// from lower to higher numbers so that it has no cycle.
fn random_directory() -> impl Strategy<Value = Value> {
    let groups = 6usize;
    (
        proptest::collection::vec(proptest::collection::vec(0..groups, 0..3), 4),
        proptest::collection::vec(proptest::collection::vec(0..groups, 0..3), groups),
        proptest::collection::vec(any::<bool>(), 3),
    )
        .prop_map(move |(users, group_parents, restricted)| {
            let group_name = |g: usize| match g {
                0 => "ward".to_owned(),
                1 => "blocked".to_owned(),
                g => format!("g{g}"),
            };
            let mut entities = Vec::new();
            for (n, parents) in users.iter().enumerate() {
                let parents: Vec<Value> =
                    parents.iter().map(|g| json!({"type": "Group", "id": group_name(*g)})).collect();
                entities.push(json!({"uid": {"type": "User", "id": format!("u{n}")}, "attrs": {}, "parents": parents}));
            }
            for (g, parents) in group_parents.iter().enumerate() {
                let parents: Vec<Value> = parents
                    .iter()
                    .filter(|p| **p < g)
                    .map(|p| json!({"type": "Group", "id": group_name(*p)}))
                    .collect();
                entities.push(json!({"uid": {"type": "Group", "id": group_name(g)}, "attrs": {}, "parents": parents}));
            }
            for (n, restricted) in restricted.iter().enumerate() {
                entities.push(json!({"uid": {"type": "Owner", "id": format!("o{n}")}, "attrs": {"restricted": restricted}, "parents": []}));
                entities.push(json!({"uid": {"type": "Doc", "id": format!("d{n}")}, "attrs": {"owner": {"__entity": {"type": "Owner", "id": format!("o{n}")}}}, "parents": []}));
            }
            Value::Array(entities)
        })
}

/// `PROPTEST_CASES` when set, for a longer local run, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    /// Whatever the budget and the order of requests, a bounded store that
    /// loads what decisions name answers exactly as the whole directory.
    #[test]
    fn a_bounded_store_answers_as_the_whole_directory(
        entities in random_directory(),
        budget in 1_000usize..20_000,
        requests in proptest::collection::vec((0..5usize, 0..4usize), 1..20),
    ) {
        let truth = EntityStore::from_json(&entities, None).unwrap();
        let bundle = bundle();
        let mut cache = EntityStore::bounded(budget);
        for (user, doc) in requests {
            let request = request(&format!("User::\"u{user}\""), &format!("Doc::\"d{doc}\""));
            let whole = decide(&bundle, &truth, &request);
            let bounded = try_loading(&bundle, &mut cache, &truth, &request).map(|(decision, _)| decision);
            match (bounded, whole) {
                (Ok(bounded), Ok(whole)) => {
                    prop_assert_eq!(bounded.outcome, whole.outcome);
                    prop_assert_eq!(bounded.reasons, whole.reasons);
                }
                (bounded, whole) => prop_assert_eq!(bounded.map_err(|e| e.kind), whole.map_err(|e| e.kind)),
            }
        }
    }
}

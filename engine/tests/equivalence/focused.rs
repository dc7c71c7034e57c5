//! Focused behaviour: incremental patches, atomic patches, obligations, deny kinds, strict validation, duplicate ids, and regressions.

use super::oracle::{describe, engine_verdict, oracle, oracle_policies};
use super::*;

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

fn request(principal: &str, action: &str, resource: &str) -> DecisionRequest {
    DecisionRequest::new(uid(principal), uid(action), uid(resource))
}

fn outcome(bundle: &PolicyBundle, store: &EntityStore, request: &DecisionRequest) -> Outcome {
    decide(bundle, store, request).unwrap().outcome
}

fn patch(value: Value) -> EntityPatch {
    serde_json::from_value(value).unwrap()
}

#[test]
fn patches_change_ancestors_for_the_next_decision() {
    let bundle = PolicyBundle::load(
        None,
        r#"permit(principal in Group::"staff", action == Action::"read", resource);"#,
        &[],
    )
    .unwrap();
    let group = |id: &str, parents: &[&str]| {
        let parents: Vec<(&str, &str)> = parents.iter().map(|p| ("Group", *p)).collect();
        entity("Group", id, json!({}), &parents)
    };
    let mut store = EntityStore::from_json(
        &json!([
            entity("User", "alice", json!({}), &[("Group", "team")]),
            group("team", &["dept"]),
            group("dept", &["staff"]),
            group("staff", &[]),
            group("other", &[]),
        ]),
        None,
    )
    .unwrap();
    let read = request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"d""#);
    assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow);

    // Removing alice from her team flips Allow to Deny.
    let done =
        store.apply(patch(json!({"upsert": [entity("User", "alice", json!({}), &[])]})).parse(None).unwrap());
    assert_eq!((done.upserted, done.deleted), (1, 0));
    assert_eq!(outcome(&bundle, &store, &read), Outcome::NotPermitted);

    // Putting her back flips it again.
    store.apply(
        patch(json!({"upsert": [entity("User", "alice", json!({}), &[("Group", "team")])]}))
            .parse(None)
            .unwrap(),
    );
    assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow);

    // Re-parenting a group two levels above alice flips it.
    store.apply(patch(json!({"upsert": [group("dept", &["other"])]})).parse(None).unwrap());
    assert_eq!(outcome(&bundle, &store, &read), Outcome::NotPermitted);
    store.apply(patch(json!({"upsert": [group("dept", &["staff"])]})).parse(None).unwrap());
    assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow);

    // Deleting the intermediate group cuts the path.
    let done = store.apply(
        patch(json!({"delete": [{"type": "Group", "id": "team"}, "Group::\"absent\""]})).parse(None).unwrap(),
    );
    assert_eq!((done.upserted, done.deleted), (0, 1));
    assert_eq!(outcome(&bundle, &store, &read), Outcome::NotPermitted);

    // The direct API behaves the same.
    store.upsert(Entity::new_no_attrs(uid(r#"Group::"team""#), HashSet::from([uid(r#"Group::"staff""#)])));
    assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow);
    assert!(store.remove(&uid(r#"Group::"team""#)));
    assert!(!store.remove(&uid(r#"Group::"team""#)));
    assert_eq!(outcome(&bundle, &store, &read), Outcome::NotPermitted);
}

#[test]
fn patch_with_one_invalid_entity_changes_nothing() {
    let schema_text = r#"
        entity Group in [Group];
        entity User in [Group] { level: Long };
        entity Doc;
        action read appliesTo { principal: [User], resource: [Doc] };
    "#;
    let bundle = PolicyBundle::load(
        Some(SchemaSource::CedarText(schema_text)),
        r#"permit(principal in Group::"staff", action == Action::"read", resource) when { principal.level > 1 };"#,
        &[],
    )
    .unwrap();
    let schema = bundle.schema();
    let initial = json!([
        entity("User", "alice", json!({"level": 2}), &[("Group", "staff")]),
        entity("Group", "staff", json!({}), &[]),
    ]);
    let mut store = EntityStore::from_json(&initial, schema).unwrap();
    let read = request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"d""#);
    assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow);

    let bad_patches = [
        // A valid upsert that would deny, a delete that would deny, and one entity of the wrong shape.
        json!({
            "upsert": [
                entity("User", "alice", json!({"level": 0}), &[]),
                entity("User", "bob", json!({"level": "high"}), &[]),
            ],
            "delete": ["Group::\"staff\""],
        }),
        // An undeclared entity type.
        json!({"upsert": [entity("Robot", "r2", json!({}), &[])], "delete": ["Group::\"staff\""]}),
        // An unparsable uid among the deletes.
        json!({"upsert": [entity("User", "alice", json!({"level": 0}), &[])], "delete": ["Group::\"staff\"", "not a uid"]}),
    ];
    for bad in bad_patches {
        // Parsing is where a patch is refused; a refused patch never reaches the store.
        let result = patch(bad.clone()).parse(schema).map(|parsed| store.apply(parsed));
        assert!(matches!(result, Err(LoadError::Entities(_))), "patch {bad} was not refused: {result:?}");
        assert_eq!(store.len(), 2, "patch {bad} changed the store");
        assert_eq!(
            store.to_json().unwrap(),
            EntityStore::from_json(&initial, schema).unwrap().to_json().unwrap()
        );
        assert_eq!(outcome(&bundle, &store, &read), Outcome::Allow, "patch {bad} changed the decision");
    }
}

const NOTED_POLICIES: &str = r#"
@id("members-read") @reason("staff may read") @obligation("a, b") @advice("c")
permit(principal in Group::"staff", action == Action::"read", resource);
@id("owner-read") @obligation("x")
permit(principal, action == Action::"read", resource) when { resource has owner && resource.owner == principal };
@id("other-action") @obligation("never")
permit(principal, action == Action::"write", resource);
@id("no-secrets") @reason("secret documents") @obligation("alert") @advice("notify-dpo, log")
forbid(principal, action, resource in Folder::"secret");
@id("unmatched-forbid") @obligation("y")
forbid(principal == User::"mallory", action, resource);
"#;

fn noted_store() -> EntityStore {
    EntityStore::from_json(
        &json!([
            entity("User", "alice", json!({}), &[("Group", "staff")]),
            entity("Doc", "open", json!({}), &[]),
            entity("Doc", "classified", json!({}), &[("Folder", "secret")]),
            entity("Doc", "mine", json!({"owner": eref("User", "alice")}), &[]),
        ]),
        None,
    )
    .unwrap()
}

#[test]
fn obligations_come_only_from_determining_policies() {
    let bundle = PolicyBundle::load(None, NOTED_POLICIES, &[]).unwrap();
    let store = noted_store();

    let allowed =
        decide(&bundle, &store, &request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"open""#)).unwrap();
    assert_eq!(allowed.outcome, Outcome::Allow);
    assert_eq!(allowed.reasons.len(), 1);
    assert_eq!(allowed.reasons[0].policy, "members-read");
    assert_eq!(allowed.reasons[0].reason.as_deref(), Some("staff may read"));
    let got: Vec<(&str, ObligationKind, &str)> =
        allowed.obligations.iter().map(|o| (o.id.as_str(), o.kind, o.policy.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("a", ObligationKind::Obligation, "members-read"),
            ("b", ObligationKind::Obligation, "members-read"),
            ("c", ObligationKind::Advice, "members-read"),
        ]
    );

    // A satisfied permit is not determining when a forbid wins: only the forbid's notes appear.
    let forbidden =
        decide(&bundle, &store, &request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"classified""#))
            .unwrap();
    assert_eq!(forbidden.outcome, Outcome::Forbidden);
    let reasons: Vec<&str> = forbidden.reasons.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(reasons, vec!["no-secrets"]);
    let got: BTreeSet<(String, bool)> = forbidden
        .obligations
        .iter()
        .map(|o| {
            assert_eq!(o.policy, "no-secrets");
            (o.id.clone(), o.kind == ObligationKind::Obligation)
        })
        .collect();
    assert_eq!(
        got,
        BTreeSet::from([("alert".into(), true), ("notify-dpo".into(), false), ("log".into(), false)])
    );

    // Two determining permits: both contribute, nothing else does.
    let both =
        decide(&bundle, &store, &request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"mine""#)).unwrap();
    assert_eq!(both.outcome, Outcome::Allow);
    let reasons: Vec<&str> = both.reasons.iter().map(|r| r.policy.as_str()).collect();
    assert_eq!(reasons, vec!["members-read", "owner-read"]);
    let ids: BTreeSet<(&str, &str)> =
        both.obligations.iter().map(|o| (o.id.as_str(), o.policy.as_str())).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            ("a", "members-read"),
            ("b", "members-read"),
            ("c", "members-read"),
            ("x", "owner-read")
        ])
    );

    // Not permitted: no reasons, no obligations.
    let denied =
        decide(&bundle, &store, &request(r#"User::"erin""#, r#"Action::"read""#, r#"Doc::"open""#)).unwrap();
    assert_eq!(denied.outcome, Outcome::NotPermitted);
    assert!(denied.reasons.is_empty() && denied.obligations.is_empty());
}

#[test]
fn forbidden_and_not_permitted_are_told_apart() {
    let bundle = PolicyBundle::load(None, NOTED_POLICIES, &[]).unwrap();
    let store = noted_store();
    let cases = [
        (r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"open""#, Outcome::Allow),
        (r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"classified""#, Outcome::Forbidden),
        // Forbidden even though no permit applies.
        (r#"User::"erin""#, r#"Action::"delete""#, r#"Doc::"classified""#, Outcome::Forbidden),
        (r#"User::"mallory""#, r#"Action::"write""#, r#"Doc::"open""#, Outcome::Forbidden),
        (r#"User::"erin""#, r#"Action::"read""#, r#"Doc::"open""#, Outcome::NotPermitted),
        (r#"User::"alice""#, r#"Action::"delete""#, r#"Doc::"open""#, Outcome::NotPermitted),
    ];
    for (principal, action, resource, expected) in cases {
        let decision = decide(&bundle, &store, &request(principal, action, resource)).unwrap();
        assert_eq!(decision.outcome, expected, "{principal} {action} {resource}: {decision:?}");
        assert_eq!(decision.is_allowed(), expected == Outcome::Allow);
        assert_eq!(decision.reasons.is_empty(), expected == Outcome::NotPermitted);
    }
}

#[test]
fn strict_validation_reports_every_error() {
    let schema = r#"
        entity User { level: Long };
        entity Doc { owner: User };
        action read appliesTo { principal: [User], resource: [Doc] };
    "#;
    let policies = r#"
        @id("fine") permit(principal, action == Action::"read", resource) when { resource.owner == principal };
        @id("bad-attribute") permit(principal, action == Action::"read", resource) when { principal.nickname == "x" };
        permit(principal, action == Action::"read", resource) when { principal.level == "high" };
    "#;
    let error = PolicyBundle::load(Some(SchemaSource::CedarText(schema)), policies, &[]).unwrap_err();
    let LoadError::Policies(problems) = &error else { panic!("expected policy problems, got {error}") };
    assert_eq!(problems.len(), 2, "{problems:?}");
    let ids: BTreeSet<Option<&str>> = problems.iter().map(|p| p.policy_id.as_deref()).collect();
    assert_eq!(ids, BTreeSet::from([Some("bad-attribute"), Some("policy2")]));
    assert_eq!(error.problems().len(), 2);
    // Without a schema the same text loads.
    assert!(PolicyBundle::load(None, policies, &[]).is_ok());
}

#[test]
fn duplicate_ids_are_refused() {
    let duplicated = r#"
        @id("same") permit(principal, action, resource);
        @id("same") forbid(principal, action, resource);
    "#;
    let error = PolicyBundle::load(None, duplicated, &[]).unwrap_err();
    let LoadError::Policies(problems) = &error else { panic!("expected policy problems, got {error}") };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("same"), "{problems:?}");

    // An @id that collides with a default id is refused too.
    let shadowing = r#"
        permit(principal, action, resource);
        @id("policy0") forbid(principal, action, resource);
    "#;
    assert!(matches!(PolicyBundle::load(None, shadowing, &[]), Err(LoadError::Policies(_))));

    // So is a link whose id is already taken.
    let template = r#"
        @id("taken") permit(principal, action, resource);
        @id("tpl") permit(principal == ?principal, action, resource);
    "#;
    let link = TemplateLink {
        template: "tpl".into(),
        id: "taken".into(),
        values: HashMap::from([("?principal".to_owned(), json!("User::\"alice\""))]),
    };
    assert!(matches!(PolicyBundle::load(None, template, &[link]), Err(LoadError::Policies(_))));
}

/// Cedar refuses an entity set with two entities of the same uid, and so
/// does the engine for request entities, rather than letting one win.
#[test]
fn duplicate_request_entities_are_refused() {
    let bundle =
        PolicyBundle::load(None, r#"permit(principal in Group::"admins", action, resource);"#, &[]).unwrap();
    let mut request = request(r#"User::"mallory""#, r#"Action::"read""#, r#"Doc::"d""#);
    request.entities = vec![
        entity("User", "mallory", json!({}), &[]),
        entity("User", "mallory", json!({}), &[("Group", "admins")]),
    ];
    let full = oracle_policies(r#"permit(principal in Group::"admins", action, resource);"#, &[]);
    let expected = oracle(&full, &[], None, &request, &mut HashMap::new());
    assert!(expected.is_err(), "Cedar refuses duplicate entities: {expected:?}");
    let actual = decide(&bundle, &EntityStore::new(), &request);
    let error = actual.expect_err("engine decided a request with duplicate entities");
    assert_eq!(error.field, "entities[1]");
}

// ---------------------------------------------------------------------------
// Regressions: divergences from plain Cedar that were found and fixed.
// ---------------------------------------------------------------------------

/// Under a schema, Cedar reads `{"type": …, "id": …}` as an entity reference
/// even with extra keys (its `TypeAndId` does not deny unknown fields); the
/// engine once took such objects as slice roots only with at most two keys,
/// so the entity was missing from the slice and `in` was false.
#[test]
fn context_entity_reference_with_extra_key_reaches_the_slice() {
    let schema = r#"
        entity Group;
        entity User in [Group];
        entity Doc;
        action read appliesTo { principal: [User], resource: [Doc], context: { delegate: User } };
    "#;
    let policies = r#"permit(principal, action, resource) when { context.delegate in Group::"admins" };"#;
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(schema)), policies, &[]).unwrap();
    let stored = vec![
        entity("User", "bob", json!({}), &[("Group", "admins")]),
        entity("Group", "admins", json!({}), &[]),
    ];
    let store = EntityStore::from_json(&Value::Array(stored.clone()), bundle.schema()).unwrap();
    let full = oracle_policies(policies, &[]);
    for context in [
        json!({"delegate": {"type": "User", "id": "bob"}}),
        json!({"delegate": {"type": "User", "id": "bob", "note": "on call"}}),
    ] {
        let mut request = request(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"d""#);
        request.context = Some(context);
        let expected = oracle(&full, &stored, bundle.schema(), &request, &mut HashMap::new()).unwrap();
        assert!(expected.allow, "Cedar allows: {}", describe(&request));
        let actual = engine_verdict(&decide(&bundle, &store, &request).unwrap()).unwrap();
        assert_eq!(actual, expected, "{}", describe(&request));
    }
}

/// The engine evaluates only a policy's body once the index has checked its
/// scope; a body that is not a boolean must still give Cedar's own error.
#[test]
fn non_boolean_bodies_error_exactly_as_cedar_does() {
    let text = r#"
        permit(principal, action, resource) when { 5 };
        forbid(principal, action, resource) unless { "no" };
        permit(principal, action, resource) when { true } unless { false };
    "#;
    let bundle = PolicyBundle::load(None, text, &[]).unwrap();
    let store = EntityStore::new();
    let request = DecisionRequest::new(uid(r#"User::"a""#), uid(r#"Action::"view""#), uid(r#"Doc::"d""#));
    let decision = decide_with(&bundle, &[], &store, &request, &DecisionOptions::cedar_exact()).unwrap();
    let cedar = Authorizer::new().is_authorized(
        &Request::new(
            request.principal.clone(),
            request.action.clone(),
            request.resource.clone(),
            Context::empty(),
            None,
        )
        .unwrap(),
        &PolicySet::from_str(text).unwrap(),
        &Entities::empty(),
    );
    let expected: BTreeSet<(String, String)> = cedar
        .diagnostics()
        .errors()
        .map(|e| match e {
            AuthorizationError::PolicyEvaluationError(e) => {
                (e.policy_id().to_string(), e.inner().to_string())
            }
        })
        .collect();
    let actual: BTreeSet<(String, String)> =
        decision.errors.iter().map(|e| (e.policy.clone().unwrap(), e.message.clone())).collect();
    assert_eq!(actual, expected);
    assert_eq!(expected.len(), 2);
    assert_eq!(decision.is_allowed(), cedar.decision() == CedarDecision::Allow);
    assert_eq!(decision.reasons.iter().map(|r| r.policy.as_str()).collect::<Vec<_>>(), ["policy2"]);
    // By default the erroring forbid denies, with the same errors.
    let strict = decide(&bundle, &store, &request).unwrap();
    assert_eq!(strict.outcome, Outcome::FailedClosed);
    assert_eq!(strict.reasons.iter().map(|r| r.policy.as_str()).collect::<Vec<_>>(), ["policy1"]);
    assert_eq!(strict.errors, decision.errors);
}

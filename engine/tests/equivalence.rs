//! The engine's indexed, sliced evaluation must be exactly plain Cedar's.
//!
//! `equivalence_*` builds one policy set with many scope shapes (equality,
//! `in`, `is`, `is … in`, unconstrained, action lists and action groups,
//! template links, erroring conditions, forbids, dereference chains and
//! policy literals), a store with multi-level hierarchies, and a generated
//! set of requests (including request-supplied entities that shadow stored
//! ones, attribute overlays, entity tags and entities named in the context).
//! For every request the engine's decision, determining policies and
//! erroring policies are compared with Cedar's `Authorizer` run on the whole
//! policy set and the whole entity set. A coverage check makes sure every
//! policy determines or errors for at least one request, so an index that
//! dropped any candidate would change some request's answer and fail.
//!
//! The remaining tests pin focused behaviour: incremental entity patches,
//! atomic patches, obligations and advice, deny kinds, strict validation and
//! duplicate ids. `divergence_*` tests are ignored until a known engine bug
//! is fixed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use consentry_engine::cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid,
    PolicyId, PolicySet, Request, Schema, SlotId,
};
use consentry_engine::{
    AttributeOverlay, Decision, DecisionRequest, EntityPatch, EntityStore, LoadError, ObligationKind,
    Outcome, PolicyBundle, SchemaSource, TemplateLink, decide, parse_uid,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The domain
// ---------------------------------------------------------------------------

const SCHEMA: &str = r#"
entity Group in [Group];
entity User in [Group] { level: Long, dept: String, manager?: User };
entity Service in [Group] { level: Long };
entity Folder in [Folder];
entity Doc in [Folder] { owner: User, level: Long, public: Bool, editors: Set<User> };
entity Photo in [Folder] { owner: User, level: Long, public: Bool };
type Ctx = { authenticated: Bool, hour: Long, delegate?: User };
action allActions;
action readActions in [allActions];
action writeActions in [allActions];
action view in [readActions] appliesTo { principal: [User, Service], resource: [Doc, Photo], context: Ctx };
action comment in [readActions] appliesTo { principal: [User, Service], resource: [Doc, Photo], context: Ctx };
action edit in [writeActions] appliesTo { principal: [User, Service], resource: [Doc, Photo], context: Ctx };
action list appliesTo { principal: [User, Service], resource: [Folder], context: Ctx };
"#;

/// Policies that pass strict validation against [`SCHEMA`]. Most have no
/// `@id`, so they are `policy0`, `policy1`, … as plain Cedar numbers them.
const COMMON_POLICIES: &str = r#"
permit(principal == User::"alice", action == Action::"edit", resource == Doc::"d1");
permit(principal in Group::"staff", action in [Action::"view", Action::"comment"], resource in Folder::"shared");
permit(principal is Service, action == Action::"view", resource is Photo);
permit(principal is User in Group::"admins", action in Action::"allActions", resource);
forbid(principal in Group::"contractors", action in Action::"writeActions", resource in Folder::"secret");
forbid(principal, action, resource is Doc) when { resource.level > principal.level + 3 };
permit(principal in Group::"eng", action in Action::"readActions", resource is Doc in Folder::"eng");
permit(principal is User, action == Action::"view", resource is Doc)
  when { resource.owner has manager && resource.owner.manager == principal };
permit(principal, action == Action::"comment", resource) when { Doc::"handbook".owner == principal };
forbid(principal is Service, action == Action::"edit", resource) unless { context.authenticated };
permit(principal in Group::"ops", action, resource is Photo) when { principal.level * 4611686018427387904 > 1 };
forbid(principal, action == Action::"view", resource is Doc)
  when { resource.level + 9223372036854775800 > 9223372036854775806 };
permit(principal, action == Action::"edit", resource is Doc) when { resource.owner.level < principal.level };
permit(principal is User, action == Action::"view", resource is Photo) when { context.hour >= 9 && context.hour < 17 };
permit(principal, action == Action::"list", resource) when { context has delegate && context.delegate in Group::"admins" };
permit(principal == Service::"bot", action == Action::"list", resource == Folder::"root");
permit(principal is User, action in [Action::"edit", Action::"comment"], resource is Doc)
  when { resource.editors.contains(principal) };
permit(principal is User, action == Action::"list", resource in Folder::"eng") when { principal.dept == "eng" };
forbid(principal in Group::"everyone", action == Action::"edit", resource == Doc::"handbook");
@id("public-read")
permit(principal, action in Action::"readActions", resource) when { resource has public && resource.public };
@id("tpl-view")
permit(principal == ?principal, action in Action::"readActions", resource in ?resource);
@id("tpl-edit")
permit(principal in ?principal, action == Action::"edit", resource is Doc) when { resource.public || context.authenticated };
@id("tpl-memo")
permit(principal is User in ?principal, action == Action::"comment", resource in ?resource)
  when { Doc::"memo".level <= principal.level };
@id("tpl-forbid")
forbid(principal, action, resource in ?resource) when { context.hour < 6 };
@id("dave-ph2")
permit(principal == User::"dave", action == Action::"edit", resource == Photo::"ph2") when { context.authenticated };
"#;

/// Policies that only make sense without a schema: strict validation would
/// refuse them, and at run time they raise errors on many requests.
const SCHEMALESS_POLICIES: &str = r#"
permit(principal, action, resource) when { resource.public };
permit(principal is User, action == Action::"view", resource) when { principal.manager == resource.owner };
forbid(principal in Group::"staff", action == Action::"comment", resource) when { context.missing == 1 };
permit(principal in Group::"staff", action in Action::"readActions", resource is Folder);
permit(principal in Group::"staff", action == Action::"comment", resource)
  when { resource.hasTag("reviewer") && resource.getTag("reviewer") in Group::"ops" };
"#;

fn links() -> Vec<TemplateLink> {
    let link = |template: &str, id: &str, values: &[(&str, Value)]| TemplateLink {
        template: template.into(),
        id: id.into(),
        values: values.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
    };
    vec![
        link(
            "tpl-view",
            "erin-eng",
            &[("?principal", json!("User::\"erin\"")), ("?resource", json!("Folder::\"eng\""))],
        ),
        link(
            "tpl-view",
            "carol-d1",
            &[("?principal", json!({"type": "User", "id": "carol"})), ("?resource", json!("Doc::\"d1\""))],
        ),
        link(
            "tpl-view",
            "crawler-root",
            &[("?principal", json!("Service::\"crawler\"")), ("?resource", json!("Folder::\"root\""))],
        ),
        link("tpl-edit", "contractors-edit", &[("?principal", json!("Group::\"contractors\""))]),
        link(
            "tpl-memo",
            "everyone-memo",
            &[("?principal", json!("Group::\"everyone\"")), ("?resource", json!("Folder::\"root\""))],
        ),
        link("tpl-forbid", "secret-night", &[("?resource", json!("Folder::\"secret\""))]),
    ]
}

fn uid_json(ty: &str, id: &str) -> Value {
    json!({"type": ty, "id": id})
}

fn eref(ty: &str, id: &str) -> Value {
    json!({"__entity": {"type": ty, "id": id}})
}

fn entity(ty: &str, id: &str, attrs: Value, parents: &[(&str, &str)]) -> Value {
    let parents: Vec<Value> = parents.iter().map(|(t, i)| uid_json(t, i)).collect();
    json!({"uid": uid_json(ty, id), "attrs": attrs, "parents": parents})
}

fn user(id: &str, level: i64, dept: &str, manager: Option<&str>, groups: &[&str]) -> Value {
    let mut attrs = json!({"level": level, "dept": dept});
    if let Some(m) = manager {
        attrs["manager"] = eref("User", m);
    }
    let parents: Vec<(&str, &str)> = groups.iter().map(|g| ("Group", *g)).collect();
    entity("User", id, attrs, &parents)
}

fn doc(id: &str, owner: &str, level: i64, public: bool, editors: &[&str], folder: Option<&str>) -> Value {
    let editors: Vec<Value> = editors.iter().map(|e| eref("User", e)).collect();
    let parents: Vec<(&str, &str)> = folder.iter().map(|f| ("Folder", *f)).collect();
    entity(
        "Doc",
        id,
        json!({"owner": eref("User", owner), "level": level, "public": public, "editors": editors}),
        &parents,
    )
}

fn photo(id: &str, owner: &str, level: i64, public: bool, folder: Option<&str>) -> Value {
    let parents: Vec<(&str, &str)> = folder.iter().map(|f| ("Folder", *f)).collect();
    entity("Photo", id, json!({"owner": eref("User", owner), "level": level, "public": public}), &parents)
}

/// The stored entities. `User::"ghost"` is referenced (as an owner) but never
/// stored. Without a schema, the action hierarchy is stored too.
fn stored_entities(with_action_entities: bool) -> Vec<Value> {
    let group = |id: &str, parents: &[&str]| {
        let parents: Vec<(&str, &str)> = parents.iter().map(|p| ("Group", *p)).collect();
        entity("Group", id, json!({}), &parents)
    };
    let folder = |id: &str, parents: &[&str]| {
        let parents: Vec<(&str, &str)> = parents.iter().map(|p| ("Folder", *p)).collect();
        entity("Folder", id, json!({}), &parents)
    };
    let mut all = vec![
        group("everyone", &[]),
        group("staff", &["everyone"]),
        group("eng", &["staff"]),
        group("eng-backend", &["eng"]),
        group("admins", &["staff"]),
        group("contractors", &["everyone"]),
        group("ops", &["eng"]),
        user("alice", 3, "eng", Some("bob"), &["eng-backend"]),
        user("bob", 5, "mgmt", None, &["admins"]),
        user("carol", 1, "sales", Some("bob"), &["contractors"]),
        user("dave", 2, "eng", Some("alice"), &["ops"]),
        user("erin", 0, "none", None, &[]),
        user("frank", 1, "eng", Some("alice"), &["ops", "contractors"]),
        entity("Service", "bot", json!({"level": 1}), &[("Group", "ops")]),
        entity("Service", "crawler", json!({"level": 0}), &[]),
        folder("root", &[]),
        folder("shared", &["root"]),
        folder("eng", &["shared"]),
        folder("eng-deep", &["eng"]),
        folder("secret", &["root"]),
        doc("d1", "alice", 2, false, &["dave"], Some("eng")),
        doc("d2", "carol", 0, true, &[], Some("shared")),
        doc("d3", "bob", 9, false, &["carol"], Some("secret")),
        doc("d4", "ghost", 1, false, &[], Some("eng-deep")),
        doc("d5", "frank", 7, false, &["frank"], None),
        doc("handbook", "bob", 0, true, &[], Some("shared")),
        doc("memo", "alice", 1, false, &[], Some("root")),
        photo("ph1", "alice", 0, true, Some("shared")),
        photo("ph2", "dave", 1, false, Some("eng")),
        photo("ph3", "ghost", 3, false, None),
    ];
    if with_action_entities {
        // Without a schema any entity may carry tags; the tag's entity is
        // reachable only through the tag.
        all[27]["tags"] = json!({"reviewer": eref("User", "frank")});
        assert_eq!(all[27]["uid"]["id"], "ph1");
        let action = |id: &str, parents: &[&str]| {
            let parents: Vec<(&str, &str)> = parents.iter().map(|p| ("Action", *p)).collect();
            entity("Action", id, json!({}), &parents)
        };
        all.extend([
            action("allActions", &[]),
            action("readActions", &["allActions"]),
            action("writeActions", &["allActions"]),
            action("view", &["readActions"]),
            action("comment", &["readActions"]),
            action("edit", &["writeActions"]),
            action("list", &[]),
        ]);
    }
    all
}

const PRINCIPALS: &[(&str, &str)] = &[
    ("User", "alice"),
    ("User", "bob"),
    ("User", "carol"),
    ("User", "dave"),
    ("User", "erin"),
    ("User", "frank"),
    ("User", "ghost"),
    ("Service", "bot"),
    ("Service", "crawler"),
    ("Group", "staff"),
];

const ACTIONS: &[&str] = &["view", "comment", "edit", "list", "readActions"];

const RESOURCES: &[(&str, &str)] = &[
    ("Doc", "d1"),
    ("Doc", "d2"),
    ("Doc", "d3"),
    ("Doc", "d4"),
    ("Doc", "d5"),
    ("Doc", "handbook"),
    ("Doc", "memo"),
    ("Doc", "nope"),
    ("Photo", "ph1"),
    ("Photo", "ph2"),
    ("Photo", "ph3"),
    ("Folder", "root"),
    ("Folder", "eng"),
    ("Folder", "secret"),
];

fn contexts() -> Vec<Value> {
    vec![
        json!({"authenticated": true, "hour": 10}),
        json!({"authenticated": false, "hour": 20, "delegate": eref("User", "bob")}),
        json!({"authenticated": true, "hour": 3, "delegate": {"type": "User", "id": "erin"}}),
    ]
}

/// A request-supplied replacement for the principal (schema-conformant).
fn shadow_principal(ty: &str, id: &str) -> Value {
    match ty {
        "User" => user(id, 7, "audit", Some("dave"), &["admins"]),
        "Service" => entity("Service", id, json!({"level": 7}), &[("Group", "ops")]),
        // Straight under the root group: anything else could close a cycle
        // (`admins in staff`), which Cedar refuses.
        _ => entity(ty, id, json!({}), &[("Group", "everyone")]),
    }
}

/// A request-supplied replacement for the resource (schema-conformant).
fn shadow_resource(ty: &str, id: &str, principal: (&str, &str)) -> Value {
    let owner = if principal.0 == "User" { principal.1 } else { "alice" };
    match ty {
        "Doc" => doc(id, owner, 0, false, &[owner], Some("secret")),
        "Photo" => photo(id, owner, 2, true, Some("eng")),
        _ => entity(ty, id, json!({}), &[]),
    }
}

/// Request-supplied entities, variant `variant` of five.
fn request_entities(variant: u64, principal: (&str, &str), resource: (&str, &str)) -> Vec<Value> {
    let groups = || {
        vec![
            // Moves contractors under admins, and cuts eng loose from staff.
            entity("Group", "contractors", json!({}), &[("Group", "admins")]),
            entity("Group", "eng", json!({}), &[]),
        ]
    };
    match variant {
        0 => Vec::new(),
        1 => vec![shadow_principal(principal.0, principal.1)],
        2 => vec![shadow_resource(resource.0, resource.1, principal)],
        3 => groups(),
        _ => {
            let mut all = vec![
                shadow_principal(principal.0, principal.1),
                shadow_resource(resource.0, resource.1, principal),
                user("zed", 1, "eng", Some("alice"), &["staff"]),
            ];
            if principal != ("Group", "contractors") && principal != ("Group", "eng") {
                all.extend(groups());
            }
            all
        }
    }
}

// ---------------------------------------------------------------------------
// The oracle: plain Cedar over everything
// ---------------------------------------------------------------------------

/// Builds the policy set the plain way: parse, re-id by `@id`, link.
fn oracle_policies(text: &str, links: &[TemplateLink]) -> PolicySet {
    let parsed = PolicySet::from_str(text).expect("oracle policies parse");
    let mut set = PolicySet::new();
    for template in parsed.templates() {
        let id = template.annotation("id").map_or_else(|| template.id().clone(), PolicyId::new);
        set.add_template(template.new_id(id)).expect("oracle template");
    }
    for policy in parsed.policies() {
        let id = policy.annotation("id").map_or_else(|| policy.id().clone(), PolicyId::new);
        set.add(policy.new_id(id)).expect("oracle policy");
    }
    for link in links {
        let values = link
            .values
            .iter()
            .map(|(slot, value)| {
                let slot = if slot == "?principal" { SlotId::principal() } else { SlotId::resource() };
                (slot, parse_uid(value, "link").expect("link uid"))
            })
            .collect();
        set.link(PolicyId::new(&link.template), PolicyId::new(&link.id), values).expect("oracle link");
    }
    set
}

/// What both sides must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    allow: bool,
    determining: BTreeSet<String>,
    /// Erroring policies, with Cedar's message.
    erroring: BTreeSet<(String, String)>,
}

fn entity_uid(value: &Value) -> EntityUid {
    parse_uid(&value["uid"], "uid").expect("entity uid")
}

/// The request's entities with its attribute overlays applied: each overlay
/// extends the attributes of the request entity, else the stored entity, else
/// an entity with no attributes and no parents.
fn effective_request_entities(stored: &[Value], request: &DecisionRequest) -> Vec<Value> {
    let mut supplied = request.entities.clone();
    for overlay in &request.overlays {
        let position = supplied.iter().position(|e| entity_uid(e) == overlay.uid);
        let mut base = position
            .map(|p| supplied[p].clone())
            .or_else(|| stored.iter().find(|e| entity_uid(e) == overlay.uid).cloned())
            .unwrap_or_else(|| {
                json!({
                    "uid": uid_json(&overlay.uid.type_name().to_string(), overlay.uid.id().unescaped()),
                    "attrs": {},
                    "parents": [],
                })
            });
        base["attrs"].as_object_mut().unwrap().extend(overlay.attributes.clone());
        match position {
            Some(p) => supplied[p] = base,
            None => supplied.push(base),
        }
    }
    supplied
}

/// Plain Cedar on the full policy set and the full entity set (stored
/// entities, with request entities replacing those with the same uid).
/// `Err` when Cedar refuses the request or its entities.
///
/// `cache` keeps the full entity set per distinct list of request entities,
/// only to save time: the sets are built the same way every time.
fn oracle(
    policies: &PolicySet,
    stored: &[Value],
    schema: Option<&Schema>,
    request: &DecisionRequest,
    cache: &mut HashMap<String, Result<Entities, String>>,
) -> Result<Verdict, String> {
    let supplied = effective_request_entities(stored, request);
    let key = Value::Array(supplied.clone()).to_string();
    let entities = cache
        .entry(key)
        .or_insert_with(|| {
            let shadowed: HashSet<EntityUid> = supplied.iter().map(entity_uid).collect();
            let mut all: Vec<Value> =
                stored.iter().filter(|e| !shadowed.contains(&entity_uid(e))).cloned().collect();
            all.extend(supplied.iter().cloned());
            Entities::from_json_value(Value::Array(all), schema).map_err(|e| format!("entities: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let context = Context::from_json_value(
        request.context.clone().unwrap_or_else(|| json!({})),
        schema.map(|s| (s, &request.action)),
    )
    .map_err(|e| format!("context: {e}"))?;
    let cedar_request = Request::new(
        request.principal.clone(),
        request.action.clone(),
        request.resource.clone(),
        context,
        schema,
    )
    .map_err(|e| format!("request: {e}"))?;
    let response = Authorizer::new().is_authorized(&cedar_request, policies, entities);
    let diagnostics = response.diagnostics();
    Ok(Verdict {
        allow: response.decision() == CedarDecision::Allow,
        determining: diagnostics.reason().map(ToString::to_string).collect(),
        erroring: diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => {
                    (e.policy_id().to_string(), e.inner().to_string())
                }
            })
            .collect(),
    })
}

/// The engine's answer reduced to a [`Verdict`], after checking that the
/// rest of the decision is consistent with it.
fn engine_verdict(decision: &Decision) -> Result<Verdict, String> {
    let determining: BTreeSet<String> = decision.reasons.iter().map(|r| r.policy.clone()).collect();
    if determining.len() != decision.reasons.len() {
        return Err(format!("duplicate reasons: {:?}", decision.reasons));
    }
    let mut erroring = BTreeSet::new();
    for error in &decision.errors {
        match &error.policy {
            Some(policy) => {
                erroring.insert((policy.clone(), error.message.clone()));
            }
            None => return Err(format!("error without a policy: {}", error.message)),
        }
    }
    let consistent = match decision.outcome {
        Outcome::Allow => !determining.is_empty(),
        Outcome::Forbidden => !determining.is_empty(),
        Outcome::NotPermitted => determining.is_empty(),
        Outcome::FailedClosed => false,
    };
    if !consistent {
        return Err(format!("outcome {:?} with reasons {determining:?}", decision.outcome));
    }
    if let Some(stray) = decision.obligations.iter().find(|o| !determining.contains(&o.policy)) {
        return Err(format!("obligation from a non-determining policy: {stray:?}"));
    }
    Ok(Verdict { allow: decision.outcome == Outcome::Allow, determining, erroring })
}

/// A tiny deterministic generator, so no `rand` crate is needed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn requests() -> Vec<DecisionRequest> {
    let mut lcg = Lcg(0x00c0_ffee);
    let contexts = contexts();
    let mut out = Vec::new();
    for &principal in PRINCIPALS {
        for action in ACTIONS {
            for &resource in RESOURCES {
                for context in &contexts {
                    let mut request = DecisionRequest::new(
                        parse_uid(&uid_json(principal.0, principal.1), "principal").unwrap(),
                        parse_uid(&uid_json("Action", action), "action").unwrap(),
                        parse_uid(&uid_json(resource.0, resource.1), "resource").unwrap(),
                    );
                    request.context = Some(context.clone());
                    request.entities = request_entities(lcg.next(5), principal, resource);
                    let overlay = |uid: &EntityUid, attributes: Value, field: &str| AttributeOverlay {
                        uid: uid.clone(),
                        attributes: attributes.as_object().cloned().unwrap(),
                        field: field.into(),
                    };
                    match lcg.next(4) {
                        1 => request.overlays.push(overlay(
                            &request.principal,
                            json!({"level": 9}),
                            "subject.properties",
                        )),
                        2 => request.overlays.push(overlay(
                            &request.resource,
                            json!({"level": 8, "public": true}),
                            "resource.properties",
                        )),
                        _ => {}
                    }
                    out.push(request);
                }
            }
        }
    }
    out
}

fn describe(request: &DecisionRequest) -> String {
    format!(
        "principal={} action={} resource={} context={} entities={} overlays={:?}",
        request.principal,
        request.action,
        request.resource,
        request.context.as_ref().map_or_else(|| "{}".to_owned(), ToString::to_string),
        Value::Array(request.entities.clone()),
        request
            .overlays
            .iter()
            .map(|o| (o.uid.to_string(), Value::Object(o.attributes.clone())))
            .collect::<Vec<_>>(),
    )
}

/// Runs every generated request through the engine and through plain Cedar
/// and panics, naming each differing request, if any answer differs. Returns
/// how many requests both sides decided.
fn assert_equivalent(schema_text: Option<&str>, policies: &str) -> usize {
    let links = links();
    let schema_source = schema_text.map(SchemaSource::CedarText);
    let bundle =
        PolicyBundle::load(schema_source, policies, &links).unwrap_or_else(|e| panic!("bundle refused: {e}"));
    let schema = bundle.schema().cloned();
    let stored = stored_entities(schema.is_none());
    let store = EntityStore::from_json(&Value::Array(stored.clone()), schema.as_ref())
        .unwrap_or_else(|e| panic!("store refused: {e}"));
    let full = oracle_policies(policies, &links);
    let all_ids: BTreeSet<String> = full.policies().map(|p| p.id().to_string()).collect();
    assert_eq!(all_ids.len(), bundle.policy_count(), "engine and oracle hold different policies");

    let mut mismatches = String::new();
    let mut mismatch_count = 0usize;
    let mut decided = 0usize;
    let mut allowed = 0usize;
    let mut exercised: BTreeSet<String> = BTreeSet::new();
    let mut cache = HashMap::new();
    for request in requests() {
        let expected = oracle(&full, &stored, schema.as_ref(), &request, &mut cache);
        let actual = decide(&bundle, &store, &request)
            .map_err(|e| format!("request error: {e}"))
            .and_then(|d| engine_verdict(&d).map_err(|e| format!("inconsistent decision {d:?}: {e}")));
        let same = match (&expected, &actual) {
            (Ok(expected), Ok(actual)) => expected == actual,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if let Ok(verdict) = &expected {
            decided += 1;
            allowed += usize::from(verdict.allow);
            exercised.extend(verdict.determining.iter().cloned());
            exercised.extend(verdict.erroring.iter().map(|(policy, _)| policy.clone()));
        }
        if !same {
            mismatch_count += 1;
            if mismatch_count <= 20 {
                let _ = writeln!(
                    mismatches,
                    "\n  request: {}\n    cedar:  {expected:?}\n    engine: {actual:?}",
                    describe(&request)
                );
            }
        }
    }
    assert!(
        mismatch_count == 0,
        "{mismatch_count} request(s) decided differently by the engine and plain Cedar \
         (schema: {}); first ones:{mismatches}",
        schema_text.is_some()
    );
    // Every policy must matter somewhere: then dropping it from a candidate
    // set changes some request's determining or erroring policies.
    let unexercised: Vec<&String> = all_ids.difference(&exercised).collect();
    assert!(unexercised.is_empty(), "policies never determining nor erroring: {unexercised:?}");
    assert!(allowed > 50 && decided - allowed > 50, "too one-sided: {allowed} allowed of {decided}");
    decided
}

#[test]
fn equivalence_without_schema() {
    let policies = format!("{COMMON_POLICIES}\n{SCHEMALESS_POLICIES}");
    let decided = assert_equivalent(None, &policies);
    assert_eq!(decided, PRINCIPALS.len() * ACTIONS.len() * RESOURCES.len() * contexts().len());
}

#[test]
fn equivalence_with_schema() {
    let decided = assert_equivalent(Some(SCHEMA), COMMON_POLICIES);
    assert!(decided > 500, "only {decided} requests were valid under the schema");
}

/// The engine and the oracle give the same ids to policies with and without `@id`.
#[test]
fn equivalence_ids_match_plain_cedar_numbering() {
    let bundle =
        PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), COMMON_POLICIES, &links()).unwrap();
    let engine_ids: BTreeSet<String> = bundle.policy_summaries().into_iter().map(|s| s.id).collect();
    let oracle = oracle_policies(COMMON_POLICIES, &links());
    let oracle_ids: BTreeSet<String> = oracle
        .policies()
        .map(|p| p.id().to_string())
        .chain(oracle.templates().map(|t| t.id().to_string()))
        .collect();
    assert_eq!(engine_ids, oracle_ids);
    assert!(
        engine_ids.contains("policy0")
            && engine_ids.contains("public-read")
            && engine_ids.contains("erin-eng")
    );
}

// ---------------------------------------------------------------------------
// Focused tests
// ---------------------------------------------------------------------------

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

//! The engine's indexed, sliced evaluation must be exactly plain Cedar's.
//!
//! `equivalence_*` builds one policy set with many scope shapes (equality,
//! `in`, `is`, `is … in`, unconstrained, action lists and action groups,
//! template links, erroring conditions, forbids, dereference chains and
//! policy literals, long set literals), a store with multi-level hierarchies, and a generated
//! set of requests (including request-supplied entities that shadow stored
//! ones, attribute overlays, entity tags and entities named in the context).
//! For every request the engine's decision, determining policies and
//! erroring policies are compared with Cedar's `Authorizer` run on the whole
//! policy set and the whole entity set. A coverage check makes sure every
//! policy determines or errors for at least one request, so an index that
//! dropped any candidate would change some request's answer and fail.
//!
//! `focused.rs` pins focused behaviour: incremental entity patches, atomic
//! patches, obligations and advice, deny kinds, strict validation, duplicate
//! ids, and regressions for divergences that were found and fixed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use consentry_engine::cedar_policy::{
    AuthorizationError, Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityUid,
    PolicyId, PolicySet, Request, Schema, SlotId,
};
use consentry_engine::{
    AttributeOverlay, Decision, DecisionOptions, DecisionRequest, EntityPatch, EntityStore, LoadError,
    ObligationKind, Outcome, PolicyBundle, SchemaSource, TemplateLink, decide, decide_with, parse_uid,
};
use serde_json::{Value, json};

mod focused;
mod oracle;

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
@id("long-lists")
permit(principal is User, action == Action::"comment", resource is Doc)
  when {
    [User::"alice", User::"bob", User::"carol", User::"dave", User::"erin", User::"frank", User::"grace", User::"mallory"]
      .contains(principal) &&
    ["eng", "ops", "hr", "legal", "sales", "support", "finance", "it"].contains(principal.dept) &&
    !resource.editors.containsAny([User::"u0", User::"u1", User::"u2", User::"u3", User::"u4", User::"u5", User::"u6", User::"u7"])
  };
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

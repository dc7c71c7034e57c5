//! Stored facts win: what an entity sent with a request, or returned by a
//! plugin, may say about an entity the store already holds.
//!
//! Cedar and cedar-agent let an entity sent with a request replace the
//! stored one. For a health PDP that hands every caller the pen: a
//! practitioner's gateway could declare him a member of
//! `Group::"break-glass"`, re-declare a restricted patient without
//! `restricted`, or send a record without the patient it is filed under, so
//! that the patient's consents never load. So a sent copy of a stored entity
//! may only *add* what the store lacks (attributes, tags); its parents and
//! every stored attribute and tag must be exactly as stored. Cedar's entity
//! JSON states an entity whole, so leaving a stored attribute out is a
//! change (a removal) too.
//!
//! A copy that adds nothing is the stored entity itself and is dropped, so
//! it does not cost the decision its remembered closures.
//!
//! [`stored_fact_changes`] says how two versions of an entity differ: the
//! decision refuses any change a caller makes, and the host checks a
//! plugin's against what `plugins.toml` grants it. Schema action entities
//! are left to Cedar, which refuses any that differs from its declaration.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid, Schema};
use cedar_policy_core::ast::{PartialValue, Value as CoreValue, ValueKind};
use ref_cast::RefCast;
use serde_json::Value;

use crate::decision::{AttributeOverlay, DecisionOptions, DecisionRequest, RequestEntities};
use crate::error::RequestError;
use crate::limits;
use crate::slice::SentEntities;
use crate::store::{EntityStore, Presence, parse_entity};

/// The part of an entity a change touches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fact {
    /// Its parents (the entities it is `in`).
    Parents,
    /// One attribute, by name.
    Attribute(String),
    /// One tag, by name.
    Tag(String),
}

impl Fact {
    /// Where it sits in Cedar's entity JSON, such as `attrs.restricted` or
    /// `parents`, for error fields.
    pub fn path(&self) -> String {
        match self {
            Fact::Parents => "parents".to_owned(),
            Fact::Attribute(name) => format!("attrs.{name}"),
            Fact::Tag(name) => format!("tags.{name}"),
        }
    }
}

/// How a stored fact was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// Members were added to a set (an attribute or tag holding a set, or
    /// the parents), and none removed.
    Added,
    /// Members were removed from a set, and none added; the set itself is still there.
    Removed,
    /// The attribute or tag is gone altogether.
    Dropped,
    /// Any other change of its value.
    Replaced,
}

impl ChangeKind {
    /// Lowercase words for messages: `adds members to`, `leaves out`, ….
    fn describe(self) -> &'static str {
        match self {
            ChangeKind::Added => "adds to",
            ChangeKind::Removed => "removes members of",
            ChangeKind::Dropped => "leaves out",
            ChangeKind::Replaced => "changes",
        }
    }
}

/// One way a version of an entity differs from what the store says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactChange {
    /// The stored fact concerned.
    pub fact: Fact,
    /// How it was changed.
    pub kind: ChangeKind,
    /// For the parents: those added, which the sender named itself (the
    /// parents it removed are not named, as they are stored facts).
    pub added_parents: Vec<EntityUid>,
}

impl fmt::Display for FactChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fact {
            Fact::Parents => {
                f.write_str(self.kind.describe())?;
                f.write_str(" its stored parents")?;
                if !self.added_parents.is_empty() {
                    let added: Vec<String> = self.added_parents.iter().map(|p| format!("`{p}`")).collect();
                    write!(f, " (adds {})", added.join(", "))?;
                }
                Ok(())
            }
            Fact::Attribute(name) => write!(f, "{} its stored attribute `{name}`", self.kind.describe()),
            Fact::Tag(name) => write!(f, "{} its stored tag `{name}`", self.kind.describe()),
        }
    }
}

/// How `sent` differs from `stored` in what the store says: its parents,
/// and each stored attribute and tag. Attributes and tags that `stored`
/// lacks are additions, not changes, and are not listed. The changes come
/// in a stable order: parents, then attributes, then tags, by name.
pub fn stored_fact_changes(stored: &Entity, sent: &Entity) -> Vec<FactChange> {
    let stored: &cedar_policy_core::ast::Entity = stored.as_ref();
    let sent: &cedar_policy_core::ast::Entity = sent.as_ref();
    let mut changes = Vec::new();
    let stored_parents: BTreeSet<_> = stored.parents().collect();
    let sent_parents: BTreeSet<_> = sent.parents().collect();
    if stored_parents != sent_parents {
        let added: Vec<EntityUid> =
            sent_parents.difference(&stored_parents).map(|p| EntityUid::ref_cast(*p).clone()).collect();
        let removed = stored_parents.difference(&sent_parents).next().is_some();
        let kind = match (added.is_empty(), removed) {
            (false, false) => ChangeKind::Added,
            (true, _) => ChangeKind::Removed,
            (false, true) => ChangeKind::Replaced,
        };
        changes.push(FactChange { fact: Fact::Parents, kind, added_parents: added });
    }
    for (name, value) in stored.attrs() {
        if let Some(kind) = value_change(value, sent.get(name)) {
            changes.push(FactChange {
                fact: Fact::Attribute(name.to_string()),
                kind,
                added_parents: Vec::new(),
            });
        }
    }
    for (name, value) in stored.tags() {
        if let Some(kind) = value_change(value, sent.get_tag(name)) {
            changes.push(FactChange { fact: Fact::Tag(name.to_string()), kind, added_parents: Vec::new() });
        }
    }
    changes
}

/// Whether `sent` adds anything to `stored`: an attribute or a tag the
/// store lacks. A copy that adds nothing and changes nothing is the stored
/// entity itself.
pub(crate) fn adds_to(stored: &Entity, sent: &Entity) -> bool {
    let stored: &cedar_policy_core::ast::Entity = stored.as_ref();
    let sent: &cedar_policy_core::ast::Entity = sent.as_ref();
    sent.keys().any(|name| stored.get(name).is_none())
        || sent.tag_keys().any(|name| stored.get_tag(name).is_none())
}

/// How a stored value was changed into `sent`, or `None` if it was not.
fn value_change(stored: &PartialValue, sent: Option<&PartialValue>) -> Option<ChangeKind> {
    let Some(sent) = sent else { return Some(ChangeKind::Dropped) };
    if stored == sent {
        return None;
    }
    let (Some(stored), Some(sent)) = (set_members(stored), set_members(sent)) else {
        return Some(ChangeKind::Replaced);
    };
    match (sent.is_superset(stored), sent.is_subset(stored)) {
        (true, _) => Some(ChangeKind::Added),
        (_, true) => Some(ChangeKind::Removed),
        _ => Some(ChangeKind::Replaced),
    }
}

/// Why the entities of a request could not be used.
pub(crate) enum SentError {
    /// The caller's entities or overlays are unusable or change a stored fact.
    Caller(RequestError),
    /// The host's enriched entities do not parse (the schema changed since
    /// the plugins ran); not the caller's fault.
    Fault(String),
    /// A bounded store has not loaded the stored entity a sent one must be
    /// checked against.
    Unloaded(EntityUid),
}

impl From<RequestError> for SentError {
    fn from(error: RequestError) -> Self {
        SentError::Caller(error)
    }
}

/// The entities a decision uses besides the stored ones: the caller's
/// entities, then its overlays, each checked against the store as `mode`
/// says, then the host's enriched entities, which replace any with their uid.
pub(crate) fn parse_request_entities(
    request: &DecisionRequest,
    store: &EntityStore,
    schema: Option<&Schema>,
    mode: RequestEntities,
) -> Result<SentEntities, SentError> {
    // The stored entity a sent one is checked against (under `AddOnly`)
    // or built on (an overlay): unknown is not the same as absent.
    let stored = |uid: &EntityUid| match store.presence(uid) {
        Presence::Stored(stored) => Ok(Some(stored)),
        Presence::Absent => Ok(None),
        Presence::Unloaded => Err(SentError::Unloaded(uid.clone())),
    };
    let guarded = |uid: &EntityUid| match mode {
        RequestEntities::AddOnly => stored(uid),
        RequestEntities::Replace => Ok(None),
    };
    let capacity = request.entities.len() + request.overlays.len() + request.enriched_entities.len();
    let mut parsed = SentEntities::with_capacity(capacity);
    let mut seen = HashSet::with_capacity(request.entities.len());
    for (position, value) in request.entities.iter().enumerate() {
        let field = format!("entities[{position}]");
        let sent = parse_entity(value, schema).map_err(|message| entity_error(value, &field, message))?;
        let uid = sent.entity.uid();
        if !seen.insert(uid.clone()) {
            let message = format!("duplicate entity `{uid}` in this request");
            return Err(RequestError::malformed(field, message).into());
        }
        if let Some(stored) = guarded(&uid)? {
            if let Some(change) = stored_fact_changes(&stored.entity, &sent.entity).into_iter().next() {
                return Err(conflict(&format!("{field}.{}", change.fact.path()), &uid, &change).into());
            }
            if !adds_to(&stored.entity, &sent.entity) {
                continue;
            }
        } else if mode == RequestEntities::AddOnly && is_action(&uid) {
            // Under a schema, Cedar has already refused any action that is
            // not exactly as declared; without one, an action the store
            // lacks would let a request put `delete` in the `read` group.
            return Err(RequestError::conflict(
                field,
                format!("`{uid}` is an action; actions and their groups come from the schema or the store, not from a request"),
            )
            .into());
        }
        parsed.insert(uid, Arc::new(sent));
    }
    for overlay in &request.overlays {
        let field = overlay.field.as_str();
        let base = match parsed.get(&overlay.uid) {
            Some(sent) => Some(sent),
            None => stored(&overlay.uid)?,
        };
        let value = overlaid_json(overlay, base.map(|b| b.entity()))
            .map_err(|message| RequestError::malformed(field, message))?;
        let sent = parse_entity(&value, schema).map_err(|message| RequestError::schema(field, message))?;
        if let Some(stored) = guarded(&overlay.uid)? {
            // The overlay lies over the stored entity (or an accepted copy),
            // so only its own attributes can differ.
            if let Some(change) = stored_fact_changes(&stored.entity, &sent.entity).into_iter().next() {
                let field = match &change.fact {
                    Fact::Attribute(name) => format!("{field}.{name}"),
                    Fact::Parents | Fact::Tag(_) => field.to_owned(),
                };
                return Err(conflict(&field, &overlay.uid, &change).into());
            }
            if !parsed.contains_key(&overlay.uid) && !adds_to(&stored.entity, &sent.entity) {
                continue;
            }
        }
        parsed.insert(overlay.uid.clone(), Arc::new(sent));
    }
    for (position, value) in request.enriched_entities.iter().enumerate() {
        let enriched = parse_entity(value, schema).map_err(|message| {
            SentError::Fault(format!("enriched entity {position} no longer fits: {message}"))
        })?;
        parsed.insert(enriched.entity.uid(), Arc::new(enriched));
    }
    Ok(parsed)
}

/// Checks the context against the [limits](crate::limits), and the
/// entities and overlays sent with `request` against the store
/// as a decision under `options` would, without deciding: for a host that
/// must refuse a caller's rewrite before anything else sees the request,
/// such as its plugins, or that must tell whose fault it is.
pub fn check_request_entities(
    store: &EntityStore,
    schema: Option<&Schema>,
    request: &DecisionRequest,
    options: &DecisionOptions,
) -> Result<(), RequestError> {
    // Cedar's conversion and evaluation of context values recurse.
    if let Some(context) = &request.context {
        limits::check_context_json(context).map_err(|e| RequestError::over_limit(&e))?;
    }
    if request.entities.is_empty() && request.overlays.is_empty() {
        return Ok(());
    }
    match parse_request_entities(request, store, schema, options.request_entities) {
        Err(SentError::Caller(error)) => Err(error),
        // An entity not loaded yet is checked by the decision itself, which
        // does not decide without it.
        Ok(_) | Err(SentError::Fault(_) | SentError::Unloaded(_)) => Ok(()),
    }
}

fn conflict(field: &str, uid: &EntityUid, change: &FactChange) -> RequestError {
    RequestError::conflict(
        field,
        format!(
            "`{uid}` is a stored entity, and this {change}; a request may add attributes the store lacks \
             but not change stored facts (`decisions.request_entities`)"
        ),
    )
}

fn entity_error(value: &Value, field: &str, message: String) -> RequestError {
    let shaped = value.get("uid").is_some();
    if shaped { RequestError::schema(field, message) } else { RequestError::malformed(field, message) }
}

/// The entity JSON for an overlay: the base entity, if any, with the overlay's attributes on top.
fn overlaid_json(overlay: &AttributeOverlay, base: Option<&Entity>) -> Result<Value, String> {
    let mut json = match base {
        Some(entity) => entity.to_json_value().map_err(|e| e.to_string())?,
        None => serde_json::json!({
            "uid": {"type": overlay.uid.type_name().to_string(), "id": overlay.uid.id().unescaped()},
            "attrs": {},
            "parents": [],
        }),
    };
    if let Some(Value::Object(attrs)) = json.get_mut("attrs") {
        attrs.extend(overlay.attributes.clone());
    }
    Ok(json)
}

/// The parents of `uid` that the store or anything sent with the request
/// gives it. Under `AddOnly` a sent copy of a stored entity has exactly the
/// stored parents (or the request is refused), so this is what the
/// decision uses; under `Replace` it may hold more, which only loads
/// consents that then do not apply.
pub(crate) fn declared_parents(
    store: &EntityStore,
    request: &DecisionRequest,
    uid: &EntityUid,
) -> Vec<EntityUid> {
    let mut parents: Vec<EntityUid> = store.get(uid).map(|s| s.parents.to_vec()).unwrap_or_default();
    for sent in request.entities.iter().chain(&request.enriched_entities) {
        let names_uid =
            sent.get("uid").and_then(|u| crate::uid::parse_uid(u, "uid").ok()).as_ref() == Some(uid);
        if let Some(declared) = sent.get("parents").and_then(Value::as_array).filter(|_| names_uid) {
            parents.extend(declared.iter().filter_map(|p| crate::uid::parse_uid(p, "parents").ok()));
        }
    }
    parents
}

fn is_action(uid: &EntityUid) -> bool {
    let core: &cedar_policy_core::ast::EntityUID = uid.as_ref();
    core.is_action()
}

fn set_members(value: &PartialValue) -> Option<&BTreeSet<CoreValue>> {
    match value {
        PartialValue::Value(CoreValue { value: ValueKind::Set(set), .. }) => Some(&set.authoritative),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(value: Value) -> Entity {
        Entity::from_json_value(value, None).unwrap()
    }

    fn kinds(stored: Value, sent: Value) -> Vec<(String, ChangeKind)> {
        stored_fact_changes(&entity(stored), &entity(sent))
            .into_iter()
            .map(|change| (change.fact.path(), change.kind))
            .collect()
    }

    fn weber(parents: Value, attrs: Value) -> Value {
        json!({"uid": {"type": "Practitioner", "id": "dr-weber"}, "attrs": attrs, "parents": parents})
    }

    #[test]
    fn an_exact_copy_or_one_with_more_attributes_changes_nothing() {
        let stored = weber(json!([{"type": "Org", "id": "st-mary"}]), json!({"role": "physician"}));
        assert!(kinds(stored.clone(), stored.clone()).is_empty());
        let more =
            weber(json!([{"type": "Org", "id": "st-mary"}]), json!({"role": "physician", "ward": "3"}));
        assert!(kinds(stored.clone(), more.clone()).is_empty());
        assert!(adds_to(&entity(stored.clone()), &entity(more)));
        assert!(!adds_to(&entity(stored.clone()), &entity(stored)));
    }

    #[test]
    fn parents_added_removed_or_swapped_are_told_apart() {
        let org = json!({"type": "Org", "id": "st-mary"});
        let group = json!({"type": "Group", "id": "break-glass"});
        let stored = weber(json!([org]), json!({}));
        assert_eq!(
            kinds(stored.clone(), weber(json!([org, group]), json!({}))),
            [("parents".to_owned(), ChangeKind::Added)]
        );
        assert_eq!(
            kinds(stored.clone(), weber(json!([]), json!({}))),
            [("parents".to_owned(), ChangeKind::Removed)]
        );
        assert_eq!(
            kinds(stored.clone(), weber(json!([group]), json!({}))),
            [("parents".to_owned(), ChangeKind::Replaced)]
        );
        let change = &stored_fact_changes(&entity(stored), &entity(weber(json!([org, group]), json!({}))))[0];
        assert_eq!(change.to_string(), "adds to its stored parents (adds `Group::\"break-glass\"`)");
    }

    #[test]
    fn attribute_changes_are_told_apart() {
        let stored = weber(json!([]), json!({"labels": ["A", "B"], "restricted": true, "role": "x"}));
        let sent = weber(json!([]), json!({"labels": ["A", "B", "C"], "role": "y"}));
        assert_eq!(
            kinds(stored.clone(), sent),
            [
                ("attrs.labels".to_owned(), ChangeKind::Added),
                ("attrs.restricted".to_owned(), ChangeKind::Dropped),
                ("attrs.role".to_owned(), ChangeKind::Replaced),
            ]
        );
        let fewer = weber(json!([]), json!({"labels": ["A"], "restricted": true, "role": "x"}));
        assert_eq!(kinds(stored.clone(), fewer), [("attrs.labels".to_owned(), ChangeKind::Removed)]);
        let swapped = weber(json!([]), json!({"labels": ["A", "C"], "restricted": false, "role": "x"}));
        assert_eq!(
            kinds(stored, swapped),
            [
                ("attrs.labels".to_owned(), ChangeKind::Replaced),
                ("attrs.restricted".to_owned(), ChangeKind::Replaced),
            ]
        );
    }

    #[test]
    fn values_compare_by_meaning_not_by_spelling() {
        let stored = weber(
            json!([]),
            json!({"when": {"__extn": {"fn": "datetime", "arg": "2026-03-02T09:30:00Z"}},
            "team": [{"__entity": {"type": "T", "id": "a"}}, {"__entity": {"type": "T", "id": "b"}}]}),
        );
        let sent = weber(
            json!([]),
            json!({"when": {"__extn": {"fn": "datetime", "arg": "2026-03-02T09:30:00.000Z"}},
            "team": [{"__entity": {"type": "T", "id": "b"}}, {"__entity": {"type": "T", "id": "a"}}]}),
        );
        assert!(kinds(stored, sent).is_empty());
    }

    #[test]
    fn tags_are_stored_facts_too() {
        let with_tag = |value: Value| json!({"uid": {"type": "Doc", "id": "d"}, "attrs": {}, "parents": [], "tags": value});
        assert_eq!(
            kinds(with_tag(json!({"owner": "a"})), with_tag(json!({"owner": "b"}))),
            [("tags.owner".to_owned(), ChangeKind::Replaced)]
        );
        assert!(kinds(with_tag(json!({"owner": "a"})), with_tag(json!({"owner": "a", "x": "y"}))).is_empty());
    }
}

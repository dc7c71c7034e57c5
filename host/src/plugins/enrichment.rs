//! What an `enrich` plugin may do to a request: plugins are callers too
//! (issue 13, finding 3).
//!
//! A plugin that could replace stored entities could add its caller to
//! `Group::"break-glass"`, lift a patient's restriction or move a record to
//! another patient, and report `ok`. So an enrichment follows the rule a
//! caller's entities follow (see the engine's stored-fact checks), with
//! room for what policy information points are for: it may add context
//! attributes the caller did not send and entities and attributes the store
//! lacks, and change a stored entity only as `[plugins.may_change]` grants
//! it, attribute by attribute (the labeler adds to `Record.labels`, the
//! guardian removes from `RelatedPerson.represents`). It never sets `now`,
//! and supplies `purpose` or `justification`, a person's declarations, only
//! when granted. Anything else is the plugin's fault, never the caller's.
//!
//! Each plugin is checked against the entity as it stands when it runs:
//! what earlier plugins were granted, or the stored entity (the caller's
//! copy, when request entities replace stored ones). So a plugin that hands
//! back what it was shown changes nothing.

use std::collections::HashSet;

use consentry_engine::cedar_policy::entities_json_errors::JsonDeserializationError;
use consentry_engine::cedar_policy::{Context, ContextJsonError, Entity, EntityUid, Request, Schema};
use consentry_engine::{
    CLOCK_ATTRIBUTE, ChangeKind, DecisionRequest, EntityStore, Fact, FactChange, Presence, RequestEntities,
    stored_fact_changes,
};
use serde_json::{Map, Value};

use super::bindings::consentry::plugin::types as wit;
use super::config::{Change, MayChange, PROTECTED_CONTEXT};
use super::fault::PluginFault;
use super::hooks::{entity_uid, json_array, json_object};

/// What an enrichment is checked against.
#[derive(Debug, Clone, Copy)]
pub struct StoredFacts<'a> {
    /// The schema the entities and the context must fit.
    pub schema: Option<&'a Schema>,
    /// The stored entities.
    pub store: &'a EntityStore,
    /// How the caller's own entities bear on stored ones: under `Replace`
    /// the caller's copy of a stored entity is what a plugin changes.
    pub request_entities: RequestEntities,
}

/// Lays an enrichment over `request`, or says why it is unusable; nothing
/// is changed unless all of it is usable.
pub fn apply_enrichment(
    request: &mut DecisionRequest,
    enrichment: &wit::Enrichment,
    grants: &MayChange,
    facts: &StoredFacts<'_>,
) -> Result<(), PluginFault> {
    let invalid = |message: String| PluginFault::InvalidOutput(message);
    let added = json_object(&enrichment.context, "context")?;
    let entities = json_array(&enrichment.entities, "entities")?;
    let mut replaced = HashSet::new();
    for (i, entity) in entities.iter().enumerate() {
        let parsed = Entity::from_json_value(entity.clone(), facts.schema)
            .map_err(|e| invalid(format!("`entities[{i}]` does not fit the schema: {e}")))?;
        if !replaced.insert(parsed.uid()) {
            return Err(invalid(format!("`entities[{i}]` repeats entity `{}`", parsed.uid())));
        }
        check_entity(request, &parsed, i, grants, facts)?;
    }
    if !added.is_empty() {
        let context = match &request.context {
            Some(Value::Object(map)) => map.clone(),
            None | Some(Value::Null) => Map::new(),
            // The caller's context is not an object: the engine reports that to the caller.
            Some(_) => return Ok(()),
        };
        check_context_keys(&added, &context, grants)?;
        let added_keys: Vec<String> = added.keys().cloned().collect();
        let mut enriched = context.clone();
        enriched.extend(added);
        if let Some(schema) = facts.schema {
            check_context(&enriched, &context, &added_keys, request, schema).map_err(invalid)?;
        }
        request.context = Some(Value::Object(enriched));
    }
    request.enriched_entities.retain(|entity| entity_uid(entity).is_none_or(|uid| !replaced.contains(&uid)));
    request.enriched_entities.extend(entities);
    Ok(())
}

/// The context keys a plugin adds: never the clock, never one the caller
/// sent, and a protected one only when granted.
fn check_context_keys(
    added: &Map<String, Value>,
    context: &Map<String, Value>,
    grants: &MayChange,
) -> Result<(), PluginFault> {
    for key in added.keys() {
        if key == CLOCK_ATTRIBUTE {
            let message = "`context.now` is the server's clock; a plugin may not set it";
            return Err(PluginFault::InvalidOutput(message.to_owned()));
        }
        if context.contains_key(key) {
            return Err(PluginFault::InvalidOutput(format!(
                "`context.{key}` was sent by the caller; a plugin may not replace it"
            )));
        }
        let grant = format!("context.{key}");
        if PROTECTED_CONTEXT.contains(&key.as_str()) && grants.get(&grant) != Some(Change::Add) {
            return Err(PluginFault::Ungranted(format!(
                "it supplies `{grant}`, which only the caller may give; `[plugins.may_change]` would need `\"{grant}\" = \"add\"`"
            )));
        }
    }
    Ok(())
}

/// Checks that `sent` (`entities[position]` of an enrichment) changes no
/// stored fact beyond the grants.
fn check_entity(
    request: &DecisionRequest,
    sent: &Entity,
    position: usize,
    grants: &MayChange,
    facts: &StoredFacts<'_>,
) -> Result<(), PluginFault> {
    let uid = sent.uid();
    let stored = match facts.store.presence(&uid) {
        Presence::Stored(stored) => stored,
        Presence::Absent => return Ok(()),
        Presence::Unloaded => return Err(PluginFault::Unloaded(uid)),
    };
    let stored = stored.entity();
    let current = current_version(request, &uid, facts);
    let entity_type = uid.type_name().to_string();
    for change in stored_fact_changes(current.as_ref().unwrap_or(stored), sent) {
        let is_stored = match &change.fact {
            Fact::Parents => true,
            Fact::Attribute(name) => stored.attr(name).is_some(),
            Fact::Tag(name) => stored.tag(name).is_some(),
        };
        let key = MayChange::key(&entity_type, &change.fact);
        let granted = key.as_deref().and_then(|key| grants.get(key)).is_some_and(|g| g.covers(change.kind));
        if is_stored && !granted {
            return Err(PluginFault::Ungranted(ungranted(position, &uid, &change, key.as_deref())));
        }
    }
    Ok(())
}

/// The entity as it stands before this plugin: as an earlier plugin
/// enriched it, else the caller's copy where that replaces the stored
/// one; `None` for the stored entity itself.
fn current_version(request: &DecisionRequest, uid: &EntityUid, facts: &StoredFacts<'_>) -> Option<Entity> {
    let names = |entity: &&Value| entity_uid(entity).as_ref() == Some(uid);
    let earlier = request.enriched_entities.iter().find(names);
    let callers = match facts.request_entities {
        RequestEntities::Replace => request.entities.iter().find(names),
        RequestEntities::AddOnly => None,
    };
    // A caller's copy that does not parse is the caller's fault, which the engine reports.
    earlier.or(callers).and_then(|value| Entity::from_json_value(value.clone(), facts.schema).ok())
}

fn ungranted(position: usize, uid: &EntityUid, change: &FactChange, key: Option<&str>) -> String {
    let needed = match (key, change.kind) {
        (None, _) => "; tags cannot be granted".to_owned(),
        (Some(key), ChangeKind::Added) => {
            format!("; `[plugins.may_change]` would need `\"{key}\" = \"add\"`")
        }
        (Some(key), ChangeKind::Removed) => {
            format!("; `[plugins.may_change]` would need `\"{key}\" = \"remove\"`")
        }
        (Some(key), ChangeKind::Dropped | ChangeKind::Replaced) => {
            format!("; `[plugins.may_change]` would need `\"{key}\" = \"replace\"`")
        }
    };
    format!("`entities[{position}]`, stored entity `{uid}`: it {change}{needed}")
}

/// Where plugin authors read how to declare the context attributes their
/// plugin adds; named in the fault, since the fix is in the schema.
const EXTENDING_THE_SCHEMA: &str = "\"Extending the schema for a plugin\" in wasm-plugins/README.md";

/// Checks the enriched context against the action's context type. When the
/// caller's own context does not fit either, the fault is the caller's and
/// the engine reports it.
///
/// Cedar's record types are closed, so an attribute the schema does not
/// declare makes every request the plugin enriches fail: that fault names
/// the attributes and the fix, which is the schema's, not the plugin's.
fn check_context(
    enriched: &Map<String, Value>,
    original: &Map<String, Value>,
    added: &[String],
    request: &DecisionRequest,
    schema: &Schema,
) -> Result<(), String> {
    let with_clock = |context: &Map<String, Value>| {
        let mut context = context.clone();
        if let Some(now) = &request.now {
            context.insert(CLOCK_ATTRIBUTE.to_owned(), now.context_value());
        }
        Value::Object(context)
    };
    let fits = |context: &Map<String, Value>| {
        let context = Context::from_json_value(with_clock(context), Some((schema, &request.action)))
            .map_err(|e| e.to_string())?;
        let (principal, action, resource) = (&request.principal, &request.action, &request.resource);
        Request::new(principal.clone(), action.clone(), resource.clone(), context, Some(schema))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    // An empty record is refused as unexpected only when the attribute is
    // undeclared: a declared one refuses it, if at all, as the wrong type
    // or for missing attributes, and it has no attributes to be unexpected.
    let undeclared = |key: &String| {
        let mut probe = original.clone();
        probe.insert(key.clone(), Value::Object(Map::new()));
        matches!(
            Context::from_json_value(with_clock(&probe), Some((schema, &request.action))),
            Err(ContextJsonError::JsonDeserialization(JsonDeserializationError::UnexpectedRecordAttr(_)))
        )
    };
    match fits(enriched) {
        Ok(()) => Ok(()),
        Err(_) if fits(original).is_err() => Ok(()),
        Err(e) => {
            let mut undeclared: Vec<String> =
                added.iter().filter(|key| undeclared(key)).map(|key| format!("`context.{key}`")).collect();
            undeclared.sort();
            if undeclared.is_empty() {
                return Err(format!("the enriched `context` does not fit the schema: {e}"));
            }
            Err(format!(
                "it adds {}, which the schema's context for `{}` does not declare; the schema's context type \
                 must declare every attribute a plugin adds (see {EXTENDING_THE_SCHEMA})",
                undeclared.join(", "),
                request.action,
            ))
        }
    }
}

#[cfg(test)]
mod tests;

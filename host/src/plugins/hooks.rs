//! What the hooks do to a decision: the requests plugins see, and the
//! checks their answers pass before anything is used.
//!
//! A plugin's output is untrusted input. An enrichment may add context
//! attributes but never replace one the caller sent, nor set `now` (the
//! server's clock); its entities must fit the schema. A mapper's request is
//! checked like a caller's. Obligations need a name. Anything else is a
//! fault of the plugin, never of the caller, so it is never answered 400.

use std::collections::HashSet;

use consentry_engine::cedar_policy::{Context, Entity, EntityUid, Request, Schema};
use consentry_engine::{
    CLOCK_ATTRIBUTE, Decision, DecisionRequest, EntityStore, Obligation, ObligationKind, Outcome, parse_uid,
    uid_from_parts,
};
use serde_json::{Map, Value};

use super::bindings::consentry::plugin::types as wit;
use super::runtime::PluginFault;

/// How many stored ancestors of the principal and resource a plugin sees.
const MAX_STORED_ENTITIES: usize = 64;

/// The request as a plugin sees it: the caller's context with the server's
/// `now`, and the caller's entities followed by the stored principal and
/// resource and their stored ancestors.
pub fn plugin_request(request: &DecisionRequest, store: &EntityStore) -> wit::DecisionRequest {
    let mut context = match &request.context {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    if let Some(now) = &request.now {
        context.insert(CLOCK_ATTRIBUTE.to_owned(), now.context_value());
    }
    // Stored entities are written from the JSON text each one remembers.
    let mut entities: Vec<String> = request.entities.iter().map(Value::to_string).collect();
    let mut seen: HashSet<EntityUid> = request.entities.iter().filter_map(entity_uid).collect();
    let limit = seen.len() + MAX_STORED_ENTITIES;
    let mut pending = vec![request.principal.clone(), request.resource.clone()];
    while let Some(uid) = pending.pop() {
        if seen.len() >= limit || !seen.insert(uid.clone()) {
            continue;
        }
        if let Some(stored) = store.get(&uid)
            && let Some(json) = stored.json_text()
        {
            pending.extend(stored.parents().iter().cloned());
            entities.push(json.to_owned());
        }
    }
    wit::DecisionRequest {
        principal: wit_uid(&request.principal),
        action: wit_uid(&request.action),
        resource: wit_uid(&request.resource),
        context: Value::Object(context).to_string(),
        entities: format!("[{}]", entities.join(",")),
    }
}

fn wit_uid(uid: &EntityUid) -> wit::EntityUid {
    wit::EntityUid { type_name: uid.type_name().to_string(), id: uid.id().unescaped().to_owned() }
}

fn entity_uid(value: &Value) -> Option<EntityUid> {
    parse_uid(value.get("uid")?, "uid").ok()
}

/// A plugin's JSON text that must be an object; `field` names it in the fault.
fn json_object(text: &str, field: &str) -> Result<Map<String, Value>, PluginFault> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PluginFault::InvalidOutput(format!("`{field}` is not a JSON object"))),
        Err(e) => Err(PluginFault::InvalidOutput(format!("`{field}` is not JSON: {e}"))),
    }
}

/// A plugin's JSON text that must be an array; `field` names it in the fault.
fn json_array(text: &str, field: &str) -> Result<Vec<Value>, PluginFault> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err(PluginFault::InvalidOutput(format!("`{field}` is not a JSON array"))),
        Err(e) => Err(PluginFault::InvalidOutput(format!("`{field}` is not JSON: {e}"))),
    }
}

/// Lays an enrichment over `request`, or says why it is unusable.
pub fn apply_enrichment(
    request: &mut DecisionRequest,
    enrichment: &wit::Enrichment,
    schema: Option<&Schema>,
) -> Result<(), PluginFault> {
    let invalid = |message: String| PluginFault::InvalidOutput(message);
    let added = json_object(&enrichment.context, "context")?;
    let entities = json_array(&enrichment.entities, "entities")?;
    let mut replaced = HashSet::new();
    for (i, entity) in entities.iter().enumerate() {
        let parsed = Entity::from_json_value(entity.clone(), schema)
            .map_err(|e| invalid(format!("`entities[{i}]` does not fit the schema: {e}")))?;
        if !replaced.insert(parsed.uid()) {
            return Err(invalid(format!("`entities[{i}]` repeats entity `{}`", parsed.uid())));
        }
    }
    if !added.is_empty() {
        let mut context = match request.context.take() {
            Some(Value::Object(map)) => map,
            None | Some(Value::Null) => Map::new(),
            Some(other) => {
                // The caller's context is not an object: the engine reports that to the caller.
                request.context = Some(other);
                return Ok(());
            }
        };
        for key in added.keys() {
            if key == CLOCK_ATTRIBUTE {
                return Err(invalid(
                    "`context.now` is the server's clock; a plugin may not set it".to_owned(),
                ));
            }
            if context.contains_key(key) {
                return Err(invalid(format!(
                    "`context.{key}` was sent by the caller; a plugin may not replace it"
                )));
            }
        }
        let original = context.clone();
        context.extend(added);
        if let Some(schema) = schema {
            check_context(&context, &original, request, schema).map_err(invalid)?;
        }
        request.context = Some(Value::Object(context));
    }
    request.entities.retain(|entity| entity_uid(entity).is_none_or(|uid| !replaced.contains(&uid)));
    request.entities.extend(entities);
    Ok(())
}

/// Checks the enriched context against the action's context type. When the
/// caller's own context does not fit either, the fault is the caller's and
/// the engine reports it.
fn check_context(
    enriched: &Map<String, Value>,
    original: &Map<String, Value>,
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
    match fits(enriched) {
        Ok(()) => Ok(()),
        Err(_) if fits(original).is_err() => Ok(()),
        Err(e) => Err(format!("the enriched `context` does not fit the schema: {e}")),
    }
}

/// The decision as an `obligations` hook sees it.
pub fn plugin_decision(decision: &Decision) -> wit::Decision {
    wit::Decision {
        outcome: match decision.outcome {
            Outcome::Allow => wit::Outcome::Allow,
            Outcome::Forbidden => wit::Outcome::Forbidden,
            Outcome::NotPermitted => wit::Outcome::NotPermitted,
            Outcome::FailedClosed => wit::Outcome::FailedClosed,
        },
        policies: decision.reasons.iter().map(|r| r.policy.clone()).collect(),
        obligations: decision
            .obligations
            .iter()
            .map(|o| wit::Obligation { id: o.id.clone(), values: o.values.clone() })
            .collect(),
    }
}

/// Longest obligation id a plugin may return.
const MAX_OBLIGATION_ID: usize = 128;

/// Checks a plugin's obligations and attributes them to it.
pub fn plugin_obligations(
    plugin: &str,
    returned: Vec<wit::Obligation>,
) -> Result<Vec<Obligation>, PluginFault> {
    returned
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let well_named = !o.id.is_empty()
                && o.id.len() <= MAX_OBLIGATION_ID
                && o.id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if !well_named {
                return Err(PluginFault::InvalidOutput(format!(
                    "obligation {i} has id `{}`; ids are 1 to {MAX_OBLIGATION_ID} ASCII letters, digits, `-`, `_`, `.` or `:`",
                    o.id.chars().take(MAX_OBLIGATION_ID).collect::<String>()
                )));
            }
            Ok(Obligation {
                id: o.id,
                kind: ObligationKind::Obligation,
                policy: format!("plugin/{plugin}"),
                values: o.values,
            })
        })
        .collect()
}

/// Turns a mapper's Cedar request into the engine's, checking the parts
/// the engine would otherwise blame on the caller.
pub fn mapped_request(mapped: wit::CedarRequest) -> Result<DecisionRequest, PluginFault> {
    let invalid = |message: String| PluginFault::InvalidOutput(message);
    let uid = |part: &wit::EntityUid, field: &str| {
        uid_from_parts(&part.type_name, &part.id, field)
            .map_err(|e| invalid(format!("`{field}`: {}", e.message)))
    };
    let mut request = DecisionRequest::new(
        uid(&mapped.principal, "principal")?,
        uid(&mapped.action, "action")?,
        uid(&mapped.resource, "resource")?,
    );
    let context = json_object(&mapped.context, "context")?;
    if context.contains_key(CLOCK_ATTRIBUTE) {
        return Err(invalid("`context.now` is the server's clock; a mapper may not set it".to_owned()));
    }
    request.context = Some(Value::Object(context));
    request.entities = json_array(&mapped.entities, "entities")?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use consentry_engine::{EvaluationTime, parse_uid};
    use serde_json::json;

    const SCHEMA: &str = r#"
        entity Record { labels: Set<String> };
        entity User;
        action read appliesTo { principal: User, resource: Record, context: { purpose?: String, site?: String, now: datetime } };
    "#;

    fn schema() -> Schema {
        Schema::from_cedarschema_str(SCHEMA).map(|(s, _)| s).unwrap()
    }

    fn request() -> DecisionRequest {
        let mut request = DecisionRequest::new(
            parse_uid(&json!("User::\"u\""), "principal").unwrap(),
            parse_uid(&json!("Action::\"read\""), "action").unwrap(),
            parse_uid(&json!("Record::\"r\""), "resource").unwrap(),
        );
        request.context = Some(json!({"purpose": "TREAT"}));
        request.now = Some(EvaluationTime::from_unix_millis(0));
        request
    }

    fn enrichment(context: &str, entities: &str) -> wit::Enrichment {
        wit::Enrichment { context: context.to_owned(), entities: entities.to_owned() }
    }

    #[test]
    fn an_enrichment_adds_attributes_and_replaces_entities_by_uid() {
        let mut request = request();
        request.entities =
            vec![json!({"uid": {"type": "Record", "id": "r"}, "attrs": {"labels": []}, "parents": []})];
        let labelled =
            r#"[{"uid": {"type": "Record", "id": "r"}, "attrs": {"labels": ["PSY"]}, "parents": []}]"#;
        apply_enrichment(&mut request, &enrichment(r#"{"site": "ward-3"}"#, labelled), Some(&schema()))
            .unwrap();
        assert_eq!(request.context, Some(json!({"purpose": "TREAT", "site": "ward-3"})));
        assert_eq!(request.entities.len(), 1);
        assert_eq!(request.entities[0]["attrs"]["labels"], json!(["PSY"]));
    }

    #[test]
    fn an_enrichment_may_not_set_the_clock_or_replace_the_callers_attributes() {
        let schema = schema();
        for (context, expected) in
            [(r#"{"now": 1}"#, "context.now"), (r#"{"purpose": "HMARKT"}"#, "context.purpose")]
        {
            let fault =
                apply_enrichment(&mut request(), &enrichment(context, "[]"), Some(&schema)).unwrap_err();
            assert!(fault.to_string().contains(expected), "{fault}");
        }
    }

    #[test]
    fn malformed_enrichments_are_the_plugins_fault() {
        let schema = schema();
        for (context, entities, expected) in [
            ("not json", "[]", "`context` is not JSON"),
            ("[1, 2]", "[]", "`context` is not a JSON object"),
            ("{}", "{}", "`entities` is not a JSON array"),
            (
                "{}",
                r#"[{"uid": {"type": "Spaceship", "id": "x"}, "attrs": {}, "parents": []}]"#,
                "`entities[0]`",
            ),
            (r#"{"site": 7}"#, "[]", "does not fit the schema"),
        ] {
            let fault = apply_enrichment(&mut request(), &enrichment(context, entities), Some(&schema))
                .expect_err(expected);
            assert!(matches!(fault, PluginFault::InvalidOutput(_)), "{fault}");
            assert!(fault.to_string().contains(expected), "{fault} should mention {expected}");
        }
    }

    #[test]
    fn the_plugin_sees_the_server_clock_and_the_stored_ancestors() {
        let store = EntityStore::from_json(
            &json!([
                {"uid": {"type": "Record", "id": "r"}, "attrs": {"labels": []}, "parents": [{"type": "Folder", "id": "f"}]},
                {"uid": {"type": "Folder", "id": "f"}, "attrs": {}, "parents": []},
                {"uid": {"type": "Record", "id": "unrelated"}, "attrs": {"labels": []}, "parents": []}
            ]),
            None,
        )
        .unwrap();
        let seen = plugin_request(&request(), &store);
        let context: Value = serde_json::from_str(&seen.context).unwrap();
        assert_eq!(context["now"]["__extn"]["fn"], "datetime");
        let entities: Vec<Value> = serde_json::from_str(&seen.entities).unwrap();
        let ids: Vec<&str> = entities.iter().filter_map(|e| e["uid"]["id"].as_str()).collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&"r") && ids.contains(&"f"), "{ids:?}");
        assert_eq!(seen.resource.type_name, "Record");
    }

    #[test]
    fn a_mapped_request_may_not_choose_the_clock() {
        let mapped = wit::CedarRequest {
            principal: wit::EntityUid { type_name: "User".into(), id: "u".into() },
            action: wit::EntityUid { type_name: "Action".into(), id: "read".into() },
            resource: wit::EntityUid { type_name: "Record".into(), id: "r".into() },
            context: r#"{"now": "2020-01-01"}"#.into(),
            entities: "[]".into(),
        };
        assert!(mapped_request(mapped).unwrap_err().to_string().contains("context.now"));
    }

    #[test]
    fn obligations_need_a_plain_id_and_name_the_plugin() {
        let ok = plugin_obligations(
            "p",
            vec![wit::Obligation { id: "redact".into(), values: vec!["PSY".into()] }],
        )
        .unwrap();
        assert_eq!(ok[0].policy, "plugin/p");
        let bad = plugin_obligations("p", vec![wit::Obligation { id: "bad id\n".into(), values: vec![] }]);
        assert!(bad.is_err());
    }
}

//! What the hooks do to a decision: the requests plugins see, and the
//! checks their answers pass before anything is used.
//!
//! A plugin's output is untrusted input. What an enrichment may do is
//! checked in [`super::enrichment`]. A mapper's request is checked like a
//! caller's, stored facts included. Obligations need a name. Anything else
//! is a fault of the plugin, never of the caller, so it is never answered 400.

use std::collections::HashSet;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{
    CLOCK_ATTRIBUTE, Decision, DecisionRequest, EntityStore, Obligation, ObligationKind, Outcome, parse_uid,
    uid_from_parts,
};
use serde_json::{Map, Value};

use super::bindings::consentry::plugin::types as wit;
use super::fault::PluginFault;

/// How many stored ancestors of the principal and resource a plugin sees.
const MAX_STORED_ENTITIES: usize = 64;

/// The request as a plugin sees it: the caller's context with the server's
/// `now`; the entities earlier plugins enriched, then the caller's, then
/// the stored principal and resource and their stored ancestors, each uid
/// once, in that order.
pub fn plugin_request(request: &DecisionRequest, store: &EntityStore) -> wit::DecisionRequest {
    let mut context = match &request.context {
        Some(Value::Object(map)) => map.clone(),
        _ => Map::new(),
    };
    if let Some(now) = &request.now {
        context.insert(CLOCK_ATTRIBUTE.to_owned(), now.context_value());
    }
    // Stored entities are written from the JSON text each one remembers.
    let mut entities = Vec::new();
    let mut seen: HashSet<EntityUid> = HashSet::new();
    for sent in request.enriched_entities.iter().chain(&request.entities) {
        if entity_uid(sent).is_none_or(|uid| seen.insert(uid)) {
            entities.push(sent.to_string());
        }
    }
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

pub(super) fn entity_uid(value: &Value) -> Option<EntityUid> {
    parse_uid(value.get("uid")?, "uid").ok()
}

/// A plugin's JSON text that must be an object; `field` names it in the fault.
pub(super) fn json_object(text: &str, field: &str) -> Result<Map<String, Value>, PluginFault> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(PluginFault::InvalidOutput(format!("`{field}` is not a JSON object"))),
        Err(e) => Err(PluginFault::InvalidOutput(format!("`{field}` is not JSON: {e}"))),
    }
}

/// A plugin's JSON text that must be an array; `field` names it in the fault.
pub(super) fn json_array(text: &str, field: &str) -> Result<Vec<Value>, PluginFault> {
    match serde_json::from_str(text) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(_) => Err(PluginFault::InvalidOutput(format!("`{field}` is not a JSON array"))),
        Err(e) => Err(PluginFault::InvalidOutput(format!("`{field}` is not JSON: {e}"))),
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
                filter: None,
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
    fn the_plugin_sees_what_earlier_plugins_enriched_before_the_callers_copy() {
        let store = EntityStore::new();
        let mut request = request();
        let record = |labels: Value| json!({"uid": {"type": "Record", "id": "r"}, "attrs": {"labels": labels}, "parents": []});
        request.entities = vec![record(json!([]))];
        request.enriched_entities = vec![record(json!(["PSY"]))];
        let seen: Vec<Value> = serde_json::from_str(&plugin_request(&request, &store).entities).unwrap();
        assert_eq!(seen, [record(json!(["PSY"]))]);
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

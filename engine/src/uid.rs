//! Entity uids as callers write them.
//!
//! cedar-agent clients send `"User::\"alice\""`; AuthZEN and Cedar's entity
//! JSON use `{"type": "User", "id": "alice"}`. Both are accepted everywhere a
//! uid is expected, so a service can switch APIs without rewriting ids.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::Value;

use crate::RequestError;

/// Parses a uid given either as Cedar text or as a `{type, id}` object.
/// `field` names the place in the request, for the error message.
pub fn parse_uid(value: &Value, field: &str) -> Result<EntityUid, RequestError> {
    match value {
        Value::String(text) => EntityUid::from_str(text).map_err(|e| {
            RequestError::malformed(field, format!("invalid entity uid `{text}`: {e}"))
        }),
        Value::Object(map) => {
            let inner = match map.get("__entity") {
                Some(Value::Object(inner)) => inner,
                _ => map,
            };
            let type_name = match inner.get("type") {
                Some(Value::String(t)) => t,
                _ => return Err(RequestError::malformed(format!("{field}.type"), "expected a string")),
            };
            let id = match inner.get("id") {
                Some(Value::String(id)) => id,
                _ => return Err(RequestError::malformed(format!("{field}.id"), "expected a string")),
            };
            uid_from_parts(type_name, id, field)
        }
        _ => Err(RequestError::malformed(
            field,
            "expected an entity uid: a string like `User::\"alice\"` or an object {\"type\", \"id\"}",
        )),
    }
}

/// Builds a uid from a type name and an id, as AuthZEN sends them.
pub fn uid_from_parts(type_name: &str, id: &str, field: &str) -> Result<EntityUid, RequestError> {
    let parsed_type = EntityTypeName::from_str(type_name).map_err(|e| {
        RequestError::malformed(format!("{field}.type"), format!("invalid entity type `{type_name}`: {e}"))
    })?;
    let entity_id = EntityId::new(id);
    Ok(EntityUid::from_type_name_and_id(parsed_type, entity_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_cedar_text_and_objects_alike() {
        let text = parse_uid(&json!("User::\"alice\""), "principal").ok();
        let object = parse_uid(&json!({"type": "User", "id": "alice"}), "principal").ok();
        let escaped = parse_uid(&json!({"__entity": {"type": "User", "id": "alice"}}), "principal").ok();
        assert!(text.is_some());
        assert_eq!(text, object);
        assert_eq!(object, escaped);
    }

    #[test]
    fn names_the_field_of_a_bad_uid() {
        let err = parse_uid(&json!("alice"), "principal").err();
        assert_eq!(err.map(|e| e.field), Some("principal".to_owned()));
        let err = parse_uid(&json!({"type": 3, "id": "x"}), "resource").err();
        assert_eq!(err.map(|e| e.field), Some("resource.type".to_owned()));
        let err = parse_uid(&json!(7), "action").err();
        assert_eq!(err.map(|e| e.field), Some("action".to_owned()));
    }
}

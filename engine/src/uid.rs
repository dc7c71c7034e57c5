//! Entity uids as callers write them.
//!
//! cedar-agent clients send `"User::\"alice\""`; AuthZEN and Cedar's entity
//! JSON use `{"type": "User", "id": "alice"}`. Both are accepted everywhere a
//! uid is expected, so a service can switch APIs without rewriting ids.
//!
//! Cedar parses uid text with its full policy grammar, at several
//! microseconds a uid, three times per decision. A request names only a
//! handful of entity types, so type names are parsed by Cedar once and kept;
//! the id of a plain `Type::"id"` (no escapes) is taken as written. Anything
//! else goes through Cedar's parser, which also words the errors.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{OnceLock, PoisonError, RwLock};

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::Value;

use crate::RequestError;

/// Type names kept at most; past this, new names are parsed every time.
const TYPE_NAMES_KEPT: usize = 1024;

fn known_type_names() -> &'static RwLock<HashMap<String, EntityTypeName>> {
    static NAMES: OnceLock<RwLock<HashMap<String, EntityTypeName>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// Parses an entity type name, remembering the names Cedar accepted.
fn type_name(text: &str) -> Result<EntityTypeName, Box<cedar_policy::ParseErrors>> {
    if let Some(known) = known_type_names().read().unwrap_or_else(PoisonError::into_inner).get(text) {
        return Ok(known.clone());
    }
    let parsed = EntityTypeName::from_str(text).map_err(Box::new)?;
    let mut names = known_type_names().write().unwrap_or_else(PoisonError::into_inner);
    if names.len() < TYPE_NAMES_KEPT {
        names.insert(text.to_owned(), parsed.clone());
    }
    Ok(parsed)
}

/// `Type::"id"` with no escapes in the id, split into its two parts.
fn plain_uid_text(text: &str) -> Option<(&str, &str)> {
    let (type_part, id) = text.strip_suffix('"')?.rsplit_once("::\"")?;
    (!id.contains(['"', '\\'])).then_some((type_part, id))
}

/// Parses a uid given either as Cedar text or as a `{type, id}` object.
/// `field` names the place in the request, for the error message.
pub fn parse_uid(value: &Value, field: &str) -> Result<EntityUid, RequestError> {
    match value {
        Value::String(text) => {
            if let Some((type_part, id)) = plain_uid_text(text)
                && let Ok(parsed_type) = type_name(type_part)
            {
                return Ok(EntityUid::from_type_name_and_id(parsed_type, EntityId::new(id)));
            }
            EntityUid::from_str(text)
                .map_err(|e| RequestError::malformed(field, format!("invalid entity uid `{text}`: {e}")))
        }
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
    let parsed_type = self::type_name(type_name).map_err(|e| {
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
    fn plain_and_escaped_uid_text_parse_as_cedar_parses_them() {
        for text in [
            r#"User::"alice""#,
            r#"App::Team::"a b c""#,
            r#"User::"""#,
            r#"User::"o\'brien""#,
            r#"User::"quote\"inside""#,
            r#"User::"x::\"y""#,
            r#"User :: "spaced""#,
        ] {
            let ours = parse_uid(&json!(text), "principal").ok();
            let cedars = EntityUid::from_str(text).ok();
            assert_eq!(ours, cedars, "{text}");
        }
        for bad in [r#"User::"unterminated"#, r#"1User::"x""#, r#"if::"x""#, r#"User::"a"b""#] {
            assert!(parse_uid(&json!(bad), "principal").is_err(), "{bad}");
            assert!(EntityUid::from_str(bad).is_err(), "cedar accepts {bad}");
        }
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

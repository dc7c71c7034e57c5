//! Entity uids and FHIR references.

use core::fmt;

use serde_json::{Value, json};

/// A Cedar entity uid, such as `Patient::"p-1"`.
///
/// `type_name` may be namespaced, as in `Ns::Type`. Its [`Display`](fmt::Display)
/// form is Cedar's text form, `Type::"id"`, with the id escaped as a Cedar
/// string literal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityUid {
    /// The entity type, such as `Patient`.
    pub type_name: String,
    /// The entity id, such as `p-1`.
    pub id: String,
}

impl EntityUid {
    /// A uid of the given type and id.
    pub fn new(type_name: impl Into<String>, id: impl Into<String>) -> Self {
        Self { type_name: type_name.into(), id: id.into() }
    }

    /// Whether this uid has the given type and id.
    pub fn is(&self, type_name: &str, id: &str) -> bool {
        self.type_name == type_name && self.id == id
    }

    /// Parses a FHIR reference such as `Practitioner/dr-weber` into
    /// `Practitioner::"dr-weber"`.
    ///
    /// An absolute reference (`https://example.org/fhir/Patient/p-1`) and a
    /// versioned one (`Patient/p-1/_history/2`) give the type and id they
    /// name. `None` when the reference is not of that shape, or when the type
    /// or id is not valid FHIR (see [`fhir::is_resource_type`](crate::fhir::is_resource_type)
    /// and [`fhir::is_id`](crate::fhir::is_id)).
    pub fn from_fhir_reference(reference: &str) -> Option<Self> {
        let mut segments: Vec<&str> = reference.split('/').collect();
        if segments.len() >= 4 && segments[segments.len() - 2] == "_history" {
            segments.truncate(segments.len() - 2);
        }
        let (&id, rest) = segments.split_last()?;
        let &type_name = rest.last()?;
        // A relative reference is exactly `Type/id`; anything longer must be an
        // absolute URL.
        if rest.len() > 1 && !reference.contains("://") {
            return None;
        }
        (crate::fhir::is_resource_type(type_name) && crate::fhir::is_id(id)).then(|| Self::new(type_name, id))
    }

    /// Reads a uid in Cedar's JSON forms: `{"type": "T", "id": "i"}` or the
    /// escaped `{"__entity": {"type": "T", "id": "i"}}` used in attribute
    /// values.
    pub fn from_json(value: &Value) -> Option<Self> {
        let value = value.get("__entity").unwrap_or(value);
        let type_name = value.get("type")?.as_str()?;
        let id = value.get("id")?.as_str()?;
        Some(Self::new(type_name, id))
    }

    /// The uid of an entity in Cedar's entity JSON format
    /// (`{"uid": ..., "attrs": ..., "parents": ...}`).
    pub fn of_entity(entity: &Value) -> Option<Self> {
        Self::from_json(entity.get("uid")?)
    }

    /// This uid as `{"type": "T", "id": "i"}`, the form of an entity's `uid`
    /// and of entity references where the schema tells their type.
    pub fn to_json(&self) -> Value {
        json!({ "type": self.type_name, "id": self.id })
    }

    /// This uid as the escaped `{"__entity": {"type": "T", "id": "i"}}`, the
    /// form of an entity reference in an attribute value or context.
    pub fn to_entity_ref(&self) -> Value {
        json!({ "__entity": self.to_json() })
    }
}

impl fmt::Display for EntityUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Rust's string escapes (`\"`, `\\`, `\n`, `\u{..}`) are Cedar's.
        write!(f, "{}::{:?}", self.type_name, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_cedar() {
        assert_eq!(EntityUid::new("Patient", "p-1").to_string(), r#"Patient::"p-1""#);
        assert_eq!(EntityUid::new("Ns::T", "a\"b\\c").to_string(), r#"Ns::T::"a\"b\\c""#);
    }

    #[test]
    fn parses_fhir_references() {
        let weber = EntityUid::new("Practitioner", "dr-weber");
        assert_eq!(EntityUid::from_fhir_reference("Practitioner/dr-weber"), Some(weber.clone()));
        assert_eq!(
            EntityUid::from_fhir_reference("https://example.org/fhir/Practitioner/dr-weber"),
            Some(weber.clone())
        );
        assert_eq!(EntityUid::from_fhir_reference("Practitioner/dr-weber/_history/3"), Some(weber));
        for bad in
            ["", "dr-weber", "Practitioner/", "/dr-weber", "practitioner/x", "a/Patient/x", "Patient/a b"]
        {
            assert_eq!(EntityUid::from_fhir_reference(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_json_forms() {
        let uid = EntityUid::new("Patient", "p-1");
        assert_eq!(EntityUid::from_json(&uid.to_json()), Some(uid.clone()));
        assert_eq!(EntityUid::from_json(&uid.to_entity_ref()), Some(uid.clone()));
        let entity = json!({ "uid": uid.to_json(), "attrs": {}, "parents": [] });
        assert_eq!(EntityUid::of_entity(&entity), Some(uid));
        assert_eq!(EntityUid::from_json(&json!("Patient::\"p-1\"")), None);
    }
}

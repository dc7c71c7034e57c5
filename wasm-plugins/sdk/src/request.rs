//! Decision requests and what an `enrich` hook adds to them.

use serde_json::{Map, Value};

use crate::EntityUid;
use crate::bindings::wit;

/// A decision request, as the engine will evaluate it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Who is asking, such as `Practitioner::"dr-weber"`.
    pub principal: EntityUid,
    /// What they want to do, such as `Action::"read"`.
    pub action: EntityUid,
    /// What they want to do it to, such as `Record::"obs-1"`.
    pub resource: EntityUid,
    /// The Cedar context. It includes `now`, the server's evaluation time;
    /// see [`Request::now`].
    pub context: Map<String, Value>,
    /// The entities known so far, in Cedar's entity JSON format: those sent
    /// with the request, then the stored principal and resource and their
    /// stored ancestors.
    pub entities: Vec<Value>,
}

impl Request {
    /// The entity with this uid among [`Request::entities`], if there is one.
    pub fn entity(&self, uid: &EntityUid) -> Option<&Value> {
        self.entities.iter().find(|entity| {
            entity.get("uid").and_then(EntityUid::from_json).is_some_and(|found| &found == uid)
        })
    }

    /// The attribute `name` of the entity with this uid, if both exist.
    pub fn entity_attr(&self, uid: &EntityUid, name: &str) -> Option<&Value> {
        self.entity(uid)?.get("attrs")?.get(name)
    }

    /// The evaluation time from the context's `now`, as the text of Cedar's
    /// `datetime` extension, for example `2026-05-01T12:00:00Z` or
    /// `2026-05-01T12:00:00.000+0200`.
    ///
    /// Read from the form `{"__extn": {"fn": "datetime", "arg": "..."}}`; a
    /// plugin needs no clock grant to know the time of the request.
    pub fn now(&self) -> Option<&str> {
        let extn = self.context.get("now")?.get("__extn")?;
        if extn.get("fn")?.as_str()? != "datetime" {
            return None;
        }
        extn.get("arg")?.as_str()
    }

    /// Converts the host's request, parsing its JSON.
    pub(crate) fn from_wit(request: wit::DecisionRequest) -> Result<Self, String> {
        let context = match serde_json::from_str(&request.context) {
            Ok(Value::Object(context)) => context,
            Ok(_) => return Err("the host sent a context that is not a JSON object".to_owned()),
            Err(error) => return Err(format!("the host sent a context that is not JSON: {error}")),
        };
        let entities = serde_json::from_str(&request.entities)
            .map_err(|error| format!("the host sent entities that are not a JSON array: {error}"))?;
        Ok(Self {
            principal: request.principal.into(),
            action: request.action.into(),
            resource: request.resource.into(),
            context,
            entities,
        })
    }
}

/// What an `enrich` hook adds to a request: context attributes and entities.
///
/// ```
/// use consentry_plugin_sdk::Enrichment;
/// use consentry_plugin_sdk::serde_json::json;
///
/// let enrichment = Enrichment::new()
///     .with_context("recipient", json!({"__entity": {"type": "Organization", "id": "lab-1"}}));
/// assert!(!enrichment.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrichment {
    /// Attributes to add to the context. The host refuses to replace an
    /// attribute the request already has, and never lets a plugin set `now`.
    pub context: Map<String, Value>,
    /// Entities to add, in Cedar's entity JSON format. For this request they
    /// replace stored entities with the same uid.
    pub entities: Vec<Value>,
}

impl Enrichment {
    /// An enrichment that adds nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this enrichment adds nothing.
    pub fn is_empty(&self) -> bool {
        self.context.is_empty() && self.entities.is_empty()
    }

    /// Adds the context attribute `key`.
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// Adds an entity, in Cedar's entity JSON format.
    #[must_use]
    pub fn with_entity(mut self, entity: Value) -> Self {
        self.entities.push(entity);
        self
    }

    /// Converts to the host's form, serialising the JSON.
    pub(crate) fn into_wit(self) -> wit::Enrichment {
        wit::Enrichment {
            context: crate::json::to_string(&Value::Object(self.context)),
            entities: crate::json::to_string(&Value::Array(self.entities)),
        }
    }
}

impl From<wit::EntityUid> for EntityUid {
    fn from(uid: wit::EntityUid) -> Self {
        Self { type_name: uid.type_name, id: uid.id }
    }
}

impl From<EntityUid> for wit::EntityUid {
    fn from(uid: EntityUid) -> Self {
        Self { type_name: uid.type_name, id: uid.id }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(context: &str, entities: &str) -> Result<Request, String> {
        Request::from_wit(wit::DecisionRequest {
            principal: wit::EntityUid { type_name: "Practitioner".into(), id: "dr-weber".into() },
            action: wit::EntityUid { type_name: "Action".into(), id: "read".into() },
            resource: wit::EntityUid { type_name: "Record".into(), id: "obs-1".into() },
            context: context.into(),
            entities: entities.into(),
        })
    }

    #[test]
    fn parses_and_reads() {
        let request = request(
            r#"{"purpose": "TREAT", "now": {"__extn": {"fn": "datetime", "arg": "2026-05-01T12:00:00Z"}}}"#,
            r#"[{"uid": {"type": "Record", "id": "obs-1"}, "attrs": {"labels": ["PSY"]}, "parents": []}]"#,
        )
        .unwrap();
        assert_eq!(request.now(), Some("2026-05-01T12:00:00Z"));
        assert_eq!(request.context["purpose"], "TREAT");
        let resource = request.resource.clone();
        assert_eq!(request.entity_attr(&resource, "labels"), Some(&json!(["PSY"])));
        assert_eq!(request.entity(&EntityUid::new("Record", "obs-2")), None);
    }

    #[test]
    fn rejects_bad_json() {
        assert!(request("[]", "[]").unwrap_err().contains("not a JSON object"));
        assert!(request("{", "[]").unwrap_err().contains("not JSON"));
        assert!(request("{}", "{}").unwrap_err().contains("not a JSON array"));
        assert_eq!(request("{}", "[]").unwrap().now(), None);
    }

    #[test]
    fn serialises_enrichments() {
        let empty = Enrichment::new().into_wit();
        assert_eq!((empty.context.as_str(), empty.entities.as_str()), ("{}", "[]"));
        let full = Enrichment::new().with_context("a", 1).with_entity(json!({"uid": {}})).into_wit();
        assert_eq!((full.context.as_str(), full.entities.as_str()), (r#"{"a":1}"#, r#"[{"uid":{}}]"#));
    }
}

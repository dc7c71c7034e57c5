//! The bodies of the AuthZEN 1.0 Search APIs (§8), and how each becomes a
//! [`SearchQuery`].
//!
//! A search body is an evaluation body whose searched part has no `id`
//! (the spec: it SHOULD be omitted and MUST be ignored), or, for an action
//! search, no `action`, plus an optional `page`. Two additions of
//! Consentry's, both optional: `entities`, Cedar entity JSON added for this
//! request as `/v1/is_authorized` takes them (those of the searched type are
//! candidates too); and `resource.properties.patient` on a resource search,
//! which limits the candidates to the records filed under that patient.

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{
    AttributeOverlay, DecisionRequest, RequestError, SearchRequest, Searched, parse_uid, uid_from_parts,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{SearchQuery, Source, token};

/// Results per page when `page.limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;

/// The most results one page may hold.
pub const MAX_LIMIT: u32 = 1000;

/// A subject or resource whose id is known.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// The searched subject or resource: its type; an `id` is ignored.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SearchedParty {
    #[serde(rename = "type")]
    kind: String,
    /// The spec lets a client send the searched party's id, and has the
    /// server ignore it (§8.4.1, §8.5.1): accepted, never read.
    #[serde(default, rename = "id", skip_serializing)]
    _ignored_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// An AuthZEN action.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// `page` of a search request (§8.3.1).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// The `next_token` of the previous page.
    #[serde(default, skip_serializing)]
    token: Option<String>,
    /// Results per page, 1 to [`MAX_LIMIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/search/subject`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectSearchBody {
    subject: SearchedParty,
    action: Action,
    resource: Party,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
    #[serde(default)]
    page: PageRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    entities: Vec<Value>,
}

/// `POST /access/v1/search/resource`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSearchBody {
    subject: Party,
    action: Action,
    resource: SearchedParty,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
    #[serde(default)]
    page: PageRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    entities: Vec<Value>,
}

/// `POST /access/v1/search/action`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSearchBody {
    subject: Party,
    resource: Party,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
    #[serde(default)]
    page: PageRequest,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    entities: Vec<Value>,
}

/// Any of the three bodies.
#[derive(Debug, Clone)]
pub enum SearchBody {
    /// A subject search.
    Subject(SubjectSearchBody),
    /// A resource search.
    Resource(ResourceSearchBody),
    /// An action search.
    Action(ActionSearchBody),
}

impl SearchBody {
    /// Parses the body of a search of `searched` from JSON, naming the bad field on error.
    pub fn parse(searched: Searched, bytes: &[u8]) -> Result<Self, RequestError> {
        fn typed<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RequestError> {
            let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let path = error.path().to_string();
                let field = if path == "." || path == "?" { "body".to_owned() } else { path };
                RequestError::malformed(field, error.into_inner().to_string())
            })
        }
        Ok(match searched {
            Searched::Subject => Self::Subject(typed(bytes)?),
            Searched::Resource => Self::Resource(typed(bytes)?),
            Searched::Action => Self::Action(typed(bytes)?),
        })
    }

    /// The query this body asks. `actions` gives the candidates of an
    /// action search from its principal and resource: the schema's actions
    /// that apply to their types, or `None` without a schema (then the
    /// stored `Action` entities are the candidates).
    pub fn into_query(
        self,
        actions: impl FnOnce(&EntityUid, &EntityUid) -> Option<Vec<EntityUid>>,
    ) -> Result<SearchQuery, RequestError> {
        // Bound to everything but the token, so that a token is refused
        // for any other query (§8.3: all else MUST stay identical).
        let binding = token::binding(&self.without_token());
        let (searched, mut request, source, page, entities, context) = match self {
            Self::Subject(body) => {
                no_properties("subject.properties", body.subject.properties.as_ref())?;
                let principal = uid_from_parts(&body.subject.kind, "", "subject")?;
                let (resource, overlay) = fixed("resource", &body.resource)?;
                let action = action_uid(&body.action)?;
                let mut request = DecisionRequest::new(principal, action, resource);
                request.overlays.extend(overlay);
                let source = Source::OfType(body.subject.kind);
                (Searched::Subject, request, source, body.page, body.entities, body.context)
            }
            Self::Resource(body) => {
                let resource = uid_from_parts(&body.resource.kind, "", "resource")?;
                let source = resource_source(&body.resource)?;
                let (principal, overlay) = fixed("subject", &body.subject)?;
                let action = action_uid(&body.action)?;
                let mut request = DecisionRequest::new(principal, action, resource);
                request.overlays.extend(overlay);
                (Searched::Resource, request, source, body.page, body.entities, body.context)
            }
            Self::Action(body) => {
                let (principal, subject_overlay) = fixed("subject", &body.subject)?;
                let (resource, resource_overlay) = fixed("resource", &body.resource)?;
                let source = match actions(&principal, &resource) {
                    Some(listed) => Source::Listed(listed),
                    None => Source::OfType("Action".to_owned()),
                };
                let placeholder = uid_from_parts("Action", "", "action")?;
                let mut request = DecisionRequest::new(principal, placeholder, resource);
                request.overlays = subject_overlay.into_iter().chain(resource_overlay).collect();
                (Searched::Action, request, source, body.page, body.entities, body.context)
            }
        };
        no_properties("page.properties", page.properties.as_ref())?;
        let limit = page.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(RequestError::malformed(
                "page.limit",
                format!("must be 1 to {MAX_LIMIT}, not {limit}"),
            ));
        }
        let after = page.token.filter(|t| !t.is_empty()).map(|t| token::open(&t, &binding)).transpose()?;
        request.context = context.filter(|c| !c.is_null());
        request.entities = entities;
        request.now = Some(crate::clock::now());
        Ok(SearchQuery {
            search: SearchRequest::new(searched, request),
            source,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            after,
            binding,
        })
    }

    /// The body with its page token taken out: what a token is bound to.
    fn without_token(&self) -> Value {
        let mut body = self.clone();
        match &mut body {
            Self::Subject(b) => b.page.token = None,
            Self::Resource(b) => b.page.token = None,
            Self::Action(b) => b.page.token = None,
        }
        let (kind, value) = match body {
            Self::Subject(b) => ("subject", serde_json::to_value(b)),
            Self::Resource(b) => ("resource", serde_json::to_value(b)),
            Self::Action(b) => ("action", serde_json::to_value(b)),
        };
        serde_json::json!({"search": kind, "body": value.unwrap_or(Value::Null)})
    }
}

/// Where a resource search's candidates come from: the records of one
/// patient (`resource.properties.patient`), else every stored entity of the type.
fn resource_source(resource: &SearchedParty) -> Result<Source, RequestError> {
    let Some(properties) = resource.properties.as_ref().filter(|p| !p.is_empty()) else {
        return Ok(Source::OfType(resource.kind.clone()));
    };
    if let Some(other) = properties.keys().find(|k| *k != "patient") {
        return Err(RequestError::malformed(
            format!("resource.properties.{other}"),
            "a resource search filters by `patient` only: the patient whose records are the candidates",
        ));
    }
    let field = "resource.properties.patient";
    let patient = match properties.get("patient") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(value @ Value::Object(_)) => {
            let uid = parse_uid(value, field)?;
            if uid.type_name().to_string() != consentry_engine::PATIENT_TYPE {
                return Err(RequestError::malformed(field, format!("`{uid}` is not a `Patient`")));
            }
            uid.id().unescaped().to_owned()
        }
        _ => {
            return Err(RequestError::malformed(
                field,
                "expected a patient id or `{\"type\": \"Patient\", \"id\": …}`",
            ));
        }
    };
    Ok(Source::Below {
        parent: (consentry_engine::PATIENT_TYPE.to_owned(), patient),
        kind: resource.kind.clone(),
    })
}

fn no_properties(field: &str, properties: Option<&Map<String, Value>>) -> Result<(), RequestError> {
    match properties {
        Some(p) if !p.is_empty() => {
            Err(RequestError::malformed(field, "not supported on this part of a search"))
        }
        _ => Ok(()),
    }
}

/// A subject or resource with a known id: its uid, and its `properties` as
/// an overlay for this request, as in an evaluation.
pub fn fixed(field: &str, party: &Party) -> Result<(EntityUid, Option<AttributeOverlay>), RequestError> {
    party_uid(field, &party.kind, &party.id, party.properties.as_ref())
}

/// The uid of `type`/`id`, and an overlay of `properties` laid over the
/// entity's attributes for this request only.
pub fn party_uid(
    field: &str,
    kind: &str,
    id: &str,
    properties: Option<&Map<String, Value>>,
) -> Result<(EntityUid, Option<AttributeOverlay>), RequestError> {
    let uid = uid_from_parts(kind, id, field)?;
    let overlay = properties.filter(|p| !p.is_empty()).map(|attributes| AttributeOverlay {
        uid: uid.clone(),
        attributes: attributes.clone(),
        field: format!("{field}.properties"),
    });
    Ok((uid, overlay))
}

/// `Action::"name"`, or the name itself when it is already a full Cedar
/// uid (`App::Action::"read"`); actions carry no attributes.
fn action_uid(action: &Action) -> Result<EntityUid, RequestError> {
    action_name_uid(&action.name, action.properties.as_ref())
}

/// The uid an AuthZEN action `{name, properties}` stands for.
pub fn action_name_uid(
    name: &str,
    properties: Option<&Map<String, Value>>,
) -> Result<EntityUid, RequestError> {
    if properties.is_some_and(|p| !p.is_empty()) {
        return Err(RequestError::malformed(
            "action.properties",
            "not supported: Cedar actions carry no attributes; send them in `context`",
        ));
    }
    if name.contains("::\"") {
        parse_uid(&Value::String(name.to_owned()), "action.name")
    } else {
        uid_from_parts("Action", name, "action")
    }
}

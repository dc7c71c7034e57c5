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
//!
//! A resource or action search, like an evaluation, may carry the caller's
//! access token in `token` instead of a `subject`; the server verifies it,
//! and [`SearchBody::into_query`] takes the subject and the context's token
//! facts from it as every decision path does. A subject search refuses one:
//! its subjects are what is searched for.
//!
//! The types derive their OpenAPI schemas here, from the serde shapes they
//! are read with, so the document cannot drift from what is accepted.
//! [`Party`] and [`Action`] are an AuthZEN evaluation's parts too, and the
//! evaluation endpoints read them with these types.

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{
    AttributeOverlay, DecisionRequest, RequestError, SearchRequest, Searched, parse_uid, uid_from_parts,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{SearchQuery, Source, token};
use crate::identity::{BearerToken, FactsError, TokenIdentity, acting_principal};

/// Results per page when `page.limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;

/// The most results one page may hold.
pub const MAX_LIMIT: u32 = 1000;

/// An AuthZEN subject or resource: the Cedar entity `type::"id"`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The entity type, such as `Practitioner`.
    #[serde(rename = "type")]
    kind: String,
    /// The entity id.
    id: String,
    /// Attributes laid over the stored entity's for this request only: they
    /// may add attributes the store lacks, never change a stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// The searched subject or resource: its type; an `id` is accepted and ignored (§8.4.1).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchedParty {
    /// The entity type searched for, such as `Practitioner`.
    #[serde(rename = "type")]
    kind: String,
    /// Ignored.
    // The spec lets a client send the searched party's id, and has the
    // server ignore it (§8.4.1, §8.5.1): accepted, and never read but to be
    // left out of what a page token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    id: Option<Value>,
    /// Attributes the results must be decided with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// An AuthZEN action: `Action::"name"`, or a full Cedar uid for namespaced schemas.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// The action's name, such as `read`, or a full uid (`App::Action::"read"`).
    name: String,
    /// Attributes of the action for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

impl Action {
    /// The uid the action stands for (see [`action_name_uid`]).
    pub fn uid(&self) -> Result<EntityUid, RequestError> {
        action_name_uid(&self.name, self.properties.as_ref())
    }
}

/// `page` of a search request (§8.3.1).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// The `next_token` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// Results per page; 50 when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Paging properties; accepted, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/search/subject` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectSearchBody {
    /// The subject type searched for.
    subject: SearchedParty,
    /// The action.
    action: Action,
    /// The resource.
    resource: Party,
    /// The context every candidate is decided with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: PageRequest,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    entities: Vec<Value>,
    /// Refused: the subjects are what a subject search looks for, so no
    /// caller's token can stand for one. Accepted by the parser only to be
    /// refused by name.
    #[serde(default, skip_serializing)]
    token: Option<BearerToken>,
}

/// `POST /access/v1/search/resource` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceSearchBody {
    /// The subject; may be left out when a `token` stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Party>,
    /// The action.
    action: Action,
    /// The resource type searched for.
    resource: SearchedParty,
    /// The context every candidate is decided with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: PageRequest,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    entities: Vec<Value>,
    /// The caller's OIDC or SMART on FHIR access token, standing for the
    /// subject (a subject sent as well must be the same one); its purpose
    /// of use, scopes and launch patient go into the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
}

/// `POST /access/v1/search/action` body.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSearchBody {
    /// The subject; may be left out when a `token` stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Party>,
    /// The resource.
    resource: Party,
    /// The context every candidate is decided with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Which page.
    #[serde(default)]
    page: PageRequest,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    entities: Vec<Value>,
    /// The caller's OIDC or SMART on FHIR access token, standing for the
    /// subject (a subject sent as well must be the same one); its purpose
    /// of use, scopes and launch patient go into the context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
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

    /// The access token of a resource or action search, taken out of the
    /// body to be verified. A subject search's stays in, to be refused by
    /// [`Self::into_query`]: its subjects are what is searched for, so no
    /// caller's token can stand for one.
    pub fn take_token(&mut self) -> Option<BearerToken> {
        match self {
            Self::Subject(_) => None,
            Self::Resource(body) => body.token.take(),
            Self::Action(body) => body.token.take(),
        }
    }

    /// The query this body asks. With `identity`, the verified token taken
    /// out of the body, the subject and the context's token facts are the
    /// token's (see [`acting_principal`]); a token still in the body was not
    /// verified and is refused. `actions` gives the candidates of an action
    /// search from its principal and resource: the schema's actions that
    /// apply to their types, or `None` without a schema (then the stored
    /// `Action` entities are the candidates).
    pub fn into_query(
        self,
        identity: Option<&TokenIdentity>,
        actions: impl FnOnce(&EntityUid, &EntityUid) -> Option<Vec<EntityUid>>,
    ) -> Result<SearchQuery, RequestError> {
        let body = self.acting(identity)?;
        // Bound to everything but the page token, and to the subject and
        // context the access token gave rather than to the access token, so
        // that a page token is refused for any other query (§8.3: all else
        // MUST stay identical) but not for the same caller's refreshed token.
        let binding = token::binding(&body.bound());
        let (searched, mut request, source, page, entities, context) = match body {
            Self::Subject(body) => {
                no_properties("subject.properties", body.subject.properties.as_ref())?;
                let principal = uid_from_parts(&body.subject.kind, "", "subject")?;
                let (resource, overlay) = fixed("resource", &body.resource)?;
                let mut request = DecisionRequest::new(principal, body.action.uid()?, resource);
                request.overlays.extend(overlay);
                let source = Source::OfType(body.subject.kind);
                (Searched::Subject, request, source, body.page, body.entities, body.context)
            }
            Self::Resource(body) => {
                let resource = uid_from_parts(&body.resource.kind, "", "resource")?;
                let source = resource_source(&body.resource)?;
                let (principal, overlay) = acting_subject(body.subject.as_ref())?;
                let mut request = DecisionRequest::new(principal, body.action.uid()?, resource);
                request.overlays.extend(overlay);
                (Searched::Resource, request, source, body.page, body.entities, body.context)
            }
            Self::Action(body) => {
                let (principal, subject_overlay) = acting_subject(body.subject.as_ref())?;
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

    /// The body as its caller acts: with a verified token, the token's
    /// subject (filled in when left out) and its facts in the context.
    fn acting(mut self, identity: Option<&TokenIdentity>) -> Result<Self, RequestError> {
        let (subject, context, token) = match &mut self {
            Self::Subject(body) => {
                if body.token.is_some() || identity.is_some() {
                    return Err(RequestError::malformed(
                        "token",
                        "not accepted on a subject search: the subjects are what is searched for, so no \
                         caller's token can stand for one; send `subject.type` alone",
                    ));
                }
                return Ok(self);
            }
            Self::Resource(body) => (&mut body.subject, &mut body.context, &body.token),
            Self::Action(body) => (&mut body.subject, &mut body.context, &body.token),
        };
        if token.is_some() {
            return Err(FactsError::Unverified.into());
        }
        let given = subject.as_ref().map(|s| uid_from_parts(&s.kind, &s.id, "subject")).transpose()?;
        let principal = acting_principal(identity, given, "subject", context)?;
        if subject.is_none() {
            *subject = Some(Party {
                kind: principal.type_name().to_string(),
                id: principal.id().unescaped().to_owned(),
                properties: None,
            });
        }
        Ok(self)
    }

    /// What a page token is bound to: the body without the page token, and
    /// without the searched party's `id`, which is ignored.
    fn bound(&self) -> Value {
        let mut body = self.clone();
        match &mut body {
            Self::Subject(b) => {
                b.page.token = None;
                b.subject.id = None;
            }
            Self::Resource(b) => {
                b.page.token = None;
                b.resource.id = None;
            }
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

/// The subject of a resource or action search once the body acts as its
/// caller (see [`SearchBody::acting`]), which leaves none missing.
fn acting_subject(subject: Option<&Party>) -> Result<(EntityUid, Option<AttributeOverlay>), RequestError> {
    let subject = subject.ok_or_else(|| FactsError::Missing { field: "subject".to_owned() })?;
    fixed("subject", subject)
}

/// The uid an AuthZEN action `{name, properties}` stands for:
/// `Action::"name"`, or the name itself when it is already a full Cedar
/// uid (`App::Action::"read"`); actions carry no attributes.
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

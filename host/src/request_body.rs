//! The cedar-agent request body, shared by `/v1/is_authorized` and `consentry check`.

use consentry_engine::{DecisionRequest, RequestError, parse_uid};
use serde::Deserialize;
use serde_json::Value;

use crate::identity::{BearerToken, FactsError, TokenIdentity, acting_principal};

/// `{principal, action, resource, context?, entities?}`; uids as Cedar text
/// or `{type, id}`. A `token` (the caller's OIDC or SMART access token) may
/// stand for the principal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedBody {
    /// Who asks; may be left out when a `token` stands for the principal.
    #[serde(default)]
    #[schema(schema_with = crate::http::openapi::wire::entity_uid, required = false)]
    principal: Option<Value>,
    /// What is asked, such as `Action::"read"`.
    #[schema(schema_with = crate::http::openapi::wire::entity_uid)]
    action: Value,
    /// What it is asked about.
    #[schema(schema_with = crate::http::openapi::wire::entity_uid)]
    resource: Value,
    /// The request's context, checked against the schema's context for the action.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// Request-scoped entities in Cedar's entity JSON format.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    entities: Option<Vec<Value>>,
    /// cedar-agent's name for request-scoped entities.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    additional_entities: Option<Vec<Value>>,
    /// The caller's OIDC or SMART on FHIR access token, standing for the
    /// principal; its purpose of use, scopes and launch patient go into the context.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
}

impl IsAuthorizedBody {
    /// The access token, taken out of the body to be verified.
    pub fn take_token(&mut self) -> Option<BearerToken> {
        self.token.take()
    }

    /// Parses the uids and assembles the engine's request, evaluated now by
    /// the server's clock. With `identity`, the verified token taken out of
    /// the body, the principal and the context's token facts are the
    /// token's (see [`acting_principal`]); a token still in
    /// the body was not verified and is refused.
    pub fn into_request(self, identity: Option<&TokenIdentity>) -> Result<DecisionRequest, RequestError> {
        if self.token.is_some() {
            return Err(FactsError::Unverified.into());
        }
        let given = self
            .principal
            .as_ref()
            .filter(|p| !p.is_null())
            .map(|p| parse_uid(p, "principal"))
            .transpose()?;
        let mut context = self.context.filter(|c| !c.is_null());
        let principal = acting_principal(identity, given, "principal", &mut context)?;
        let mut request = DecisionRequest::new(
            principal,
            parse_uid(&self.action, "action")?,
            parse_uid(&self.resource, "resource")?,
        );
        request.context = context;
        request.entities = self.entities.into_iter().chain(self.additional_entities).flatten().collect();
        request.now = Some(crate::clock::now());
        Ok(request)
    }
}

/// Parses a request file for `consentry check`, naming the bad field on error.
pub fn parse(bytes: &[u8]) -> Result<DecisionRequest, RequestError> {
    from_json::<IsAuthorizedBody>(bytes)?.into_request(None)
}

/// Reads JSON as `T`, a request file's or a body's; an error names the
/// path of the first bad field.
pub fn from_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RequestError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer)
        .map_err(|e| RequestError::malformed(e.path().to_string(), e.inner().to_string()))
}

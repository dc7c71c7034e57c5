//! The cedar-agent request body, shared by `/v1/is_authorized` and `consentry check`.

use consentry_engine::{DecisionRequest, RequestError, parse_uid};
use serde::Deserialize;
use serde_json::Value;

/// `{principal, action, resource, context?, entities?}`; uids as Cedar text or `{type, id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsAuthorizedBody {
    principal: Value,
    action: Value,
    resource: Value,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    entities: Option<Vec<Value>>,
    /// cedar-agent's name for request-scoped entities.
    #[serde(default)]
    additional_entities: Option<Vec<Value>>,
}

impl IsAuthorizedBody {
    /// Parses the uids and assembles the engine's request, evaluated now by the server's clock.
    pub fn into_request(self) -> Result<DecisionRequest, RequestError> {
        let mut request = DecisionRequest::new(
            parse_uid(&self.principal, "principal")?,
            parse_uid(&self.action, "action")?,
            parse_uid(&self.resource, "resource")?,
        );
        request.context = self.context.filter(|c| !c.is_null());
        request.entities = self.entities.into_iter().chain(self.additional_entities).flatten().collect();
        request.now = Some(crate::clock::now());
        Ok(request)
    }
}

/// Parses a request file for `consentry check`, naming the bad field on error.
pub fn parse(bytes: &[u8]) -> Result<DecisionRequest, String> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let body: IsAuthorizedBody =
        serde_path_to_error::deserialize(deserializer).map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    body.into_request().map_err(|e| e.to_string())
}

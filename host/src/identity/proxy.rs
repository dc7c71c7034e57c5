//! Identity for `ext_authz`: the proxied request's own bearer token, and
//! the principal header only when the operator trusts it.
//!
//! Mappers read the principal and purpose from headers
//! (`x-principal`, `x-purpose-of-use`). Whoever reaches the proxy can write
//! those, so unless `identity.trust_principal_header` is on, the principal
//! header is removed before any mapper sees it. A verified token's facts
//! are written into those headers for the mappers, and laid over whatever
//! request a mapper returns, so a mapper reading other headers still
//! cannot decide for another principal or purpose than the token's.

use consentry_engine::DecisionRequest;

use super::{FactsError, PRINCIPAL_HEADER, PURPOSE_HEADER, TokenIdentity};

/// The JWT in an `Authorization: Bearer …` value; `None` for other schemes
/// and for bearer tokens that are not JWTs (an API key the upstream
/// service checks itself).
pub fn bearer_jwt(authorization: &str) -> Option<&str> {
    let token =
        authorization.strip_prefix("Bearer ").or_else(|| authorization.strip_prefix("bearer "))?.trim();
    (token.bytes().filter(|b| *b == b'.').count() == 2).then_some(token)
}

/// Rewrites the identity headers of a proxied request (lowercase names)
/// for the mappers: the principal header goes unless it is trusted and no
/// token speaks; a token's principal and purpose replace what the client
/// sent.
pub fn rewrite_headers(
    headers: &mut Vec<(String, String)>,
    identity: Option<&TokenIdentity>,
    trust_header: bool,
) {
    if identity.is_some() || !trust_header {
        headers.retain(|(name, _)| name != PRINCIPAL_HEADER);
    }
    let Some(identity) = identity else { return };
    if let Some(principal) = &identity.principal {
        let reference = format!("{}/{}", principal.type_name(), principal.id().unescaped());
        headers.push((PRINCIPAL_HEADER.to_owned(), reference));
    }
    if let Some(purpose) = &identity.purpose {
        headers.retain(|(name, _)| name != PURPOSE_HEADER);
        headers.push((PURPOSE_HEADER.to_owned(), purpose.clone()));
    }
}

/// Lays a verified token's principal and context facts over the request a
/// mapper returned.
pub fn apply_to_mapped(identity: &TokenIdentity, request: &mut DecisionRequest) -> Result<(), FactsError> {
    request.principal = identity.principal.clone().ok_or(FactsError::NoPrincipal)?;
    identity.apply_to_context(&mut request.context)
}

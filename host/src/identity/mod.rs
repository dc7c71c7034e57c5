//! Who is asking, from a verified token rather than the caller's word.
//!
//! Health IT authenticates with OpenID Connect: admin tools hold IdP tokens
//! with roles, and SMART on FHIR apps hold access tokens that name the user
//! (`fhirUser`), the launch patient, the granted scopes and, under IHE IUA,
//! the purpose of use. Without this module a caller simply states its
//! principal and purpose; with it, both come from a token the IdP signed.
//!
//! The logic lives here, not in the HTTP handlers, so that every decision
//! path (`/v1/is_authorized`, AuthZEN, `ext_authz` over HTTP or gRPC) takes
//! the same facts from a token the same way.

mod claims;
mod config;
mod jwks;
mod proxy;
mod verify;

use cedar_policy::EntityUid;
use serde_json::{Map, Value};

pub use claims::{ClaimError, PrincipalTemplate, SmartScope, TokenIdentity, smart_scope};
pub use config::{IdentityConfig, IdentityConfigError, JwksSource, OidcSettings};
pub use jwks::{JwksError, KeySet};
pub use proxy::{apply_to_mapped, bearer_jwt, rewrite_headers};
pub use verify::{TokenError, Verifier};

/// The header `ext_authz` mappers read the principal from, when the
/// operator trusts it (`identity.trust_principal_header`).
pub const PRINCIPAL_HEADER: &str = "x-principal";

/// The header `ext_authz` mappers read the purpose of use from.
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";

/// A caller's token as a request body carries it: shown by `Debug` without
/// its value, so no log of a request can leak it.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Written as `<redacted>`, as `Debug` shows it, so that no body serialized
/// for a hash or a log can carry the token; bodies take a token out to be
/// verified before they are serialized.
impl serde::Serialize for BearerToken {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// Why a decision request's token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactsError {
    /// The request carries a token, but no identity provider is configured.
    #[error("no identity provider is configured to verify it (`identity.issuer`)")]
    NotConfigured,
    /// The request names neither a principal nor a token.
    #[error("missing: give a {field} or a `token`")]
    Missing {
        /// The request's field, e.g. `principal` or `subject`.
        field: String,
    },
    /// A token is still in a request being assembled: it was not taken out
    /// and verified, which only the server does (`consentry check`, `plan`
    /// and `search` read files and verify nothing).
    #[error("not accepted here: only the server verifies tokens")]
    Unverified,
    /// The token is valid but names no principal.
    #[error(
        "the token names no principal: it has no `fhirUser` (nor a `sub` with `identity.patient_principal`)"
    )]
    NoPrincipal,
    /// The caller named another principal than the token.
    #[error("`{given}` conflicts with the token's principal `{token}`; leave it out or send the same")]
    Conflict {
        /// The request's field, e.g. `principal` or `subject`.
        field: String,
        /// What the caller sent.
        given: String,
        /// What the token says.
        token: String,
    },
    /// The context is not an object, so the token's facts cannot join it.
    #[error("must be an object to take the token's facts")]
    Context,
}

impl FactsError {
    /// The request field the error is about.
    pub fn field(&self) -> &str {
        match self {
            FactsError::NoPrincipal | FactsError::NotConfigured | FactsError::Unverified => "token",
            FactsError::Conflict { field, .. } | FactsError::Missing { field } => field,
            FactsError::Context => "context",
        }
    }
}

impl From<FactsError> for consentry_engine::RequestError {
    fn from(error: FactsError) -> Self {
        Self::malformed(error.field().to_owned(), error.to_string())
    }
}

/// The principal a request acts as, and the context it is decided with.
///
/// Without a verified token, the principal is the one the caller named in
/// `field` (`principal`, or AuthZEN's `subject`). With one (`identity`), it
/// is the token's, and one the caller also named must be the same; the
/// token's purpose, scopes and launch patient are laid over `context` (see
/// [`TokenIdentity::apply_to_context`]). Every request body that takes a
/// `token` comes through here, so a decision, a batch item, an evaluation,
/// a plan and a search take the same facts from the same token.
pub fn acting_principal(
    identity: Option<&TokenIdentity>,
    given: Option<EntityUid>,
    field: &str,
    context: &mut Option<Value>,
) -> Result<EntityUid, FactsError> {
    let Some(identity) = identity else {
        return given.ok_or_else(|| FactsError::Missing { field: field.to_owned() });
    };
    let principal = identity.principal_for(given, field)?;
    identity.apply_to_context(context)?;
    Ok(principal)
}

impl TokenIdentity {
    /// The principal of a request carrying this token: the token's. One
    /// the caller also sent in `field` must be the same; a request cannot
    /// act for someone else than its token says.
    pub fn principal_for(&self, given: Option<EntityUid>, field: &str) -> Result<EntityUid, FactsError> {
        let principal = self.principal.clone().ok_or(FactsError::NoPrincipal)?;
        match given {
            Some(given) if given != principal => Err(FactsError::Conflict {
                field: field.to_owned(),
                given: given.to_string(),
                token: principal.to_string(),
            }),
            _ => Ok(principal),
        }
    }

    /// Lays the token's facts over the caller's context: its purpose (when
    /// it has one), scopes and launch patient win over what the caller
    /// sent, and a caller's `scopes` or `launch_patient` are dropped even
    /// when the token has none, as only a token may state them.
    pub fn apply_to_context(&self, context: &mut Option<Value>) -> Result<(), FactsError> {
        let map = match context.get_or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(map) => map,
            Value::Null => {
                *context = Some(Value::Object(Map::new()));
                match context {
                    Some(Value::Object(map)) => map,
                    _ => return Err(FactsError::Context),
                }
            }
            _ => return Err(FactsError::Context),
        };
        map.remove("scopes");
        map.remove("launch_patient");
        for (key, value) in self.context_facts() {
            map.insert(key.to_owned(), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod test_jwks;
#[cfg(test)]
mod test_keys;
#[cfg(test)]
mod tests;

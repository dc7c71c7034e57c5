//! Who may call which route: bearer tokens and their roles.
//!
//! Changing policies or consents changes who can read health records, and
//! the access log and AuditEvent export reveal who looked at whom, so these
//! routes are closed unless a token is configured: with none, every such
//! request is refused. Tokens are kept only as SHA-256 digests and compared
//! in constant time; every configured digest is compared on every request,
//! so the time taken does not reveal which token came close.
//!
//! `CONSENTRY_ADMIN_TOKEN` adds one token holding every operator role, for
//! development and tests; production deployments list their tokens with
//! their roles in the configuration file's `[auth]` section, or accept
//! their identity provider's JWTs (`[identity]`, see [`crate::identity`]),
//! whose role claim maps to the same roles.

mod config;
mod role;

use std::sync::Arc;

use cedar_policy::EntityUid;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use config::{AuthConfig, DecisionAccess, TokenConfig};
pub use role::Role;

use crate::identity::{TokenError, TokenIdentity, Verifier};

/// The environment variable that sets the development token.
pub const ADMIN_TOKEN_ENV: &str = "CONSENTRY_ADMIN_TOKEN";

/// The prefix of tokens `consentry token new` makes, so secret scanners
/// can spot a leaked one.
pub const TOKEN_PREFIX: &str = "cst_";

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name from the configuration, for logs.
    pub name: String,
    /// What the token may do, sorted.
    pub roles: Vec<Role>,
    /// The patient or representative a `patient` token stands for.
    pub principal: Option<EntityUid>,
}

impl Caller {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl Caller {
    /// The caller a verified JWT stands for. A `patient` role needs a
    /// patient or representative as the token's principal, as a static
    /// token's does; without one the role is not granted.
    fn from_token(identity: TokenIdentity) -> Self {
        let acts_for_patient = identity
            .principal
            .as_ref()
            .is_some_and(|uid| matches!(uid.type_name().to_string().as_str(), "Patient" | "RelatedPerson"));
        let mut roles = identity.roles;
        if !acts_for_patient {
            roles.retain(|role| *role != Role::Patient);
        }
        let principal = if roles.contains(&Role::Patient) { identity.principal } else { None };
        let name = format!("oidc:{}", identity.subject.as_deref().unwrap_or("-"));
        Self { name, roles, principal }
    }
}

/// An accepted token: its digest and who presents it.
#[derive(Debug, Clone)]
struct Token {
    digest: [u8; 32],
    caller: Caller,
}

/// The accepted tokens and the decision endpoints' access rule.
#[derive(Clone)]
pub struct Auth {
    tokens: Vec<Token>,
    decisions: DecisionAccess,
    oidc: Option<Arc<Verifier>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.tokens.iter().map(|t| t.caller.name.as_str()).collect();
        f.debug_struct("Auth")
            .field("tokens", &names)
            .field("decisions", &self.decisions)
            .field("oidc", &self.oidc)
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No token is configured, so the route is closed to everyone.
    NotConfigured,
    /// The request carried no bearer token.
    Missing,
    /// The bearer token is not one of the configured tokens.
    Invalid,
    /// The bearer token is a JWT the identity provider's keys and the
    /// configured claims refuse.
    Token(TokenError),
    /// The token is valid but holds none of the roles the route needs.
    Forbidden {
        /// The roles that would do.
        needs: Vec<Role>,
    },
}

/// A configuration the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {message}")]
pub struct AuthError {
    /// The configuration key, e.g. `auth.tokens[2].sha256`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl AuthError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

impl Auth {
    /// The tokens of `config`, plus `admin_token` (from
    /// `CONSENTRY_ADMIN_TOKEN`) holding every operator role.
    pub fn new(config: &AuthConfig, admin_token: Option<&str>) -> Result<Self, AuthError> {
        let mut tokens = config.accept()?;
        if let Some(token) = admin_token.filter(|t| !t.is_empty()) {
            let digest = digest(token);
            if tokens.iter().any(|t| t.digest == digest) {
                return Err(AuthError::invalid(
                    ADMIN_TOKEN_ENV,
                    "the token is also configured in `auth.tokens`; give it one set of roles",
                ));
            }
            let caller =
                Caller { name: ADMIN_TOKEN_ENV.to_owned(), roles: Role::OPERATOR.to_vec(), principal: None };
            tokens.push(Token { digest, caller });
        }
        Ok(Self { tokens, decisions: config.decisions.unwrap_or(DecisionAccess::Open), oidc: None })
    }

    /// Only `admin_token` with every operator role, decisions open; `None`
    /// closes every protected route.
    pub fn with_admin_token(admin_token: Option<&str>) -> Self {
        Self::new(&AuthConfig::default(), admin_token).unwrap_or(Self {
            tokens: Vec::new(),
            decisions: DecisionAccess::Open,
            oidc: None,
        })
    }

    /// The same tokens, and JWTs `verifier` accepts.
    #[must_use]
    pub fn with_oidc(self, verifier: Arc<Verifier>) -> Self {
        Self { oidc: Some(verifier), ..self }
    }

    /// The identity provider's verifier, when one is configured.
    pub fn verifier(&self) -> Option<&Arc<Verifier>> {
        self.oidc.as_ref()
    }

    /// Whether any token is configured, or an identity provider.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// Whether the decision endpoints need a token with the `decision` role.
    pub fn decisions_need_token(&self) -> bool {
        self.decisions == DecisionAccess::Token
    }

    /// The caller an `Authorization` header value identifies: a
    /// configured token, or else a JWT of the identity provider.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Caller, AuthFailure> {
        if !self.is_configured() {
            return Err(AuthFailure::NotConfigured);
        }
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthFailure::Missing)?;
        let digest = digest(presented);
        let mut found = None;
        for token in &self.tokens {
            if bool::from(token.digest.ct_eq(&digest)) {
                found = Some(&token.caller);
            }
        }
        match (found, &self.oidc) {
            (Some(caller), _) => Ok(caller.clone()),
            // Static tokens have no dots; anything else with two is a JWT.
            (None, Some(verifier)) if presented.bytes().filter(|b| *b == b'.').count() == 2 => {
                let identity = verifier.verify(presented).await.map_err(AuthFailure::Token)?;
                Ok(Caller::from_token(identity))
            }
            (None, _) => Err(AuthFailure::Invalid),
        }
    }

    /// The caller, if their token holds one of `roles`.
    pub async fn authorize(
        &self,
        authorization: Option<&str>,
        roles: &[Role],
    ) -> Result<Caller, AuthFailure> {
        let caller = self.authenticate(authorization).await?;
        if roles.iter().any(|role| caller.has(*role)) {
            Ok(caller)
        } else {
            Err(AuthFailure::Forbidden { needs: roles.to_vec() })
        }
    }
}

/// A new random token (256 bits, hex) and its digest for the configuration.
pub fn new_token() -> Result<(String, String), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("{TOKEN_PREFIX}{}", hex(&bytes));
    let digest = digest_hex(&token);
    Ok((token, digest))
}

/// The lowercase hex SHA-256 digest the configuration stores for `token`.
pub fn digest_hex(token: &str) -> String {
    hex(&digest(token))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

//! Admin authentication.
//!
//! Changing policies or entities changes who can read health records, so the
//! admin API is closed unless a token is configured: with none, every admin
//! request is refused. Only a SHA-256 digest of the token is kept, and it is
//! compared in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable that sets the admin token.
pub const ADMIN_TOKEN_ENV: &str = "CONSENTRY_ADMIN_TOKEN";

/// Who may use the admin API.
#[derive(Clone)]
pub struct AdminAuth {
    token_digest: Option<[u8; 32]>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth").field("configured", &self.token_digest.is_some()).finish()
    }
}

/// Why an admin request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No admin token is configured, so the admin API is closed.
    NotConfigured,
    /// The request carried no bearer token.
    Missing,
    /// The bearer token is wrong.
    Invalid,
}

impl AdminAuth {
    /// Accepts requests bearing `token`; `None` closes the admin API.
    pub fn new(token: Option<&str>) -> Self {
        Self { token_digest: token.filter(|t| !t.is_empty()).map(digest) }
    }

    /// Checks an `Authorization` header value.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), AuthFailure> {
        let expected = self.token_digest.ok_or(AuthFailure::NotConfigured)?;
        let presented = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .ok_or(AuthFailure::Missing)?;
        if bool::from(digest(presented.trim()).ct_eq(&expected)) { Ok(()) } else { Err(AuthFailure::Invalid) }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configured_token_refuses_everyone() {
        let auth = AdminAuth::new(None);
        assert_eq!(auth.check(Some("Bearer anything")), Err(AuthFailure::NotConfigured));
        assert_eq!(AdminAuth::new(Some("")).check(Some("Bearer ")), Err(AuthFailure::NotConfigured));
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let auth = AdminAuth::new(Some("s3cret"));
        assert_eq!(auth.check(Some("Bearer s3cret")), Ok(()));
        assert_eq!(auth.check(Some("Bearer s3cre")), Err(AuthFailure::Invalid));
        assert_eq!(auth.check(Some("s3cret")), Err(AuthFailure::Missing));
        assert_eq!(auth.check(None), Err(AuthFailure::Missing));
    }
}

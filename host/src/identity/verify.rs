//! Verifying a bearer JWT: signature, `iss`, `aud`, `exp` and `nbf`.
//!
//! The cryptography and the standard claim checks are jsonwebtoken's; this
//! module picks the key and the one algorithm it allows, refreshes the key
//! set when a token names an unknown key, and says why a token was refused
//! without ever repeating the token.
//!
//! A client sends the same access token with every request until it
//! expires, and checking an RS256 signature costs more CPU than the
//! decision it is for. So a token that verified is remembered, by its
//! SHA-256, with the claims it carried and the key set that verified it: it
//! is taken again while that key set is the one in force (a rotation or
//! refresh forgets it), its `exp` has not passed, and for at most
//! [`VERIFIED_TTL`]. Only tokens that verified are kept, so a caller cannot
//! fill the cache with garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header, get_current_timestamp};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::claims::{ClaimError, TokenIdentity};
use super::config::OidcSettings;
use super::jwks::{JwksError, KeySet, VerifyKey};
use crate::metrics::Cache;

/// The longest token looked at; IdP tokens are a few KiB at most.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verified tokens remembered; at a few KiB of claims each, some MiB.
const VERIFIED_TOKENS: u64 = 10_000;

/// How long a verified token is taken without checking its signature again.
const VERIFIED_TTL: Duration = Duration::from_secs(60);

/// A token that verified: its claims, the key set that verified it, and
/// its `exp`.
struct Verified {
    claims: Map<String, Value>,
    keys: Arc<Option<KeySet>>,
    expires: u64,
}

/// Why a token was refused. No variant holds the token or its claims'
/// values, so a message can be logged and answered as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header.
    #[error("the bearer token is not a JWT")]
    Malformed,
    /// Longer than any IdP token.
    #[error("the bearer token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// `alg` is not one Consentry accepts (`none`, HMAC, …).
    #[error("the token's header is invalid or its `alg` is not accepted: only RS256, ES256 and EdDSA are")]
    Algorithm,
    /// No key of the set has the token's `kid`, even after a refresh.
    #[error("the token's `kid` names no key of the identity provider")]
    UnknownKey,
    /// The key named verifies another algorithm than the header says.
    #[error("the token's `alg` does not match its key's")]
    KeyAlgorithm,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` has passed.
    #[error("the token has expired (`exp`)")]
    Expired,
    /// `nbf` is still to come.
    #[error("the token is not valid yet (`nbf`)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token's issuer (`iss`) is not the configured one")]
    Issuer,
    /// `aud` names none of the configured audiences.
    #[error("the token's audience (`aud`) is not this server")]
    Audience,
    /// A claim that must be present is not.
    #[error("the token lacks the claim `{0}`")]
    MissingClaim(String),
    /// A claim is present but unusable.
    #[error("the token's {0}")]
    Claim(#[from] ClaimError),
    /// No key set has been loaded yet.
    #[error("the identity provider's keys are not loaded yet")]
    NoKeys,
}

/// Checks tokens against the identity provider's keys.
pub struct Verifier {
    settings: OidcSettings,
    keys: ArcSwap<Option<KeySet>>,
    /// When a token's unknown `kid` last caused a fetch.
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    /// Tokens that verified, by their SHA-256.
    verified: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.settings.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier with no keys yet; see [`Verifier::refresh`].
    pub fn new(settings: OidcSettings) -> Self {
        Self {
            settings,
            keys: ArcSwap::from_pointee(None),
            last_unknown_kid_fetch: Mutex::new(None),
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_TOKENS)
                .time_to_live(VERIFIED_TTL)
                .build(),
        }
    }

    /// The settings it checks with.
    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Loads the key set again; on failure the keys held so far stay.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let holds_none = self.keys.load().is_none();
        let set = KeySet::load(&self.settings.source, holds_none).await?;
        let count = set.keys.len();
        self.keys.store(Arc::new(Some(set)));
        Ok(count)
    }

    /// Refreshes the key set every `refresh_interval` until the task is
    /// aborted; failures are logged and the keys held so far stay.
    pub fn spawn_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let verifier = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(verifier.settings.refresh_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match verifier.refresh().await {
                    Ok(keys) => tracing::debug!(keys, "identity provider keys refreshed"),
                    Err(error) => tracing::warn!(%error, "cannot refresh the identity provider keys"),
                }
            }
        })
    }

    /// The identity a valid token carries.
    pub async fn verify(&self, token: &str) -> Result<TokenIdentity, TokenError> {
        let claims = self.verified_claims(token).await?;
        Ok(TokenIdentity::from_claims(&claims, &self.settings)?)
    }

    async fn verified_claims(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header = decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::InvalidAlgorithmName | ErrorKind::Json(_) => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(TokenError::Algorithm);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut set = self.keys.load_full();
        if let Some(verified) = self.verified.get(&digest) {
            let leeway = self.settings.clock_skew.as_secs();
            if Arc::ptr_eq(&verified.keys, &set)
                && get_current_timestamp() < verified.expires.saturating_add(leeway)
            {
                crate::metrics::cache_lookups(Cache::Tokens, 1, 0);
                return Ok(verified.claims.clone());
            }
            self.verified.invalidate(&digest);
        }
        crate::metrics::cache_lookups(Cache::Tokens, 0, 1);
        let kid = header.kid.as_deref();
        let mut keys = candidates(&set, kid);
        if keys.is_empty() && kid.is_some() && self.fetch_for_unknown_kid().await {
            set = self.keys.load_full();
            keys = candidates(&set, kid);
        }
        if set.is_none() {
            return Err(TokenError::NoKeys);
        }
        let mut refusal = TokenError::UnknownKey;
        for key in keys.iter().filter(|key| key.algorithm == header.alg) {
            match decode::<Map<String, Value>>(token, &key.key, &self.validation(key.algorithm)) {
                Ok(data) => {
                    // `exp` is required, so a verified token has one.
                    let expires = data.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
                    let verified = Verified { claims: data.claims.clone(), keys: Arc::clone(&set), expires };
                    self.verified.insert(digest, Arc::new(verified));
                    return Ok(data.claims);
                }
                Err(error) => refusal = refused(error.kind()),
            }
        }
        if matches!(refusal, TokenError::UnknownKey) && !keys.is_empty() {
            refusal = TokenError::KeyAlgorithm;
        }
        Err(refusal)
    }

    /// Fetches the key set for a token naming an unknown key, unless one
    /// such fetch happened within `unknown_kid_cooldown`. Concurrent
    /// callers wait for the one fetch under way rather than start their own.
    async fn fetch_for_unknown_kid(&self) -> bool {
        let mut last = self.last_unknown_kid_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.settings.unknown_kid_cooldown) {
            return true;
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(keys) => {
                tracing::info!(keys, "identity provider keys fetched for a token with an unknown kid");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch the identity provider keys");
                false
            }
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&self.settings.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.clock_skew.as_secs();
        validation
    }
}

/// The keys of `set` a token naming `kid` may be signed with.
fn candidates(set: &Option<KeySet>, kid: Option<&str>) -> Vec<VerifyKey> {
    set.as_ref().map(|set| set.candidates(kid).cloned().collect()).unwrap_or_default()
}

fn refused(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::Signature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::Issuer,
        ErrorKind::InvalidAudience => TokenError::Audience,
        ErrorKind::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim.clone()),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::KeyAlgorithm,
        _ => TokenError::Malformed,
    }
}

//! The identity provider's signing keys: read from a file or fetched from a
//! URL, kept in memory, and refreshed in the background and when a token
//! names a key the set lacks (the IdP rotated its keys).
//!
//! Each key is bound to the one algorithm its type allows (RSA to RS256,
//! P-256 to ES256, Ed25519 to EdDSA), and a token is checked only with the
//! algorithm of the key it names, never the one its header asks for; so a
//! token signed with HMAC over a public key (the "algorithm confusion"
//! attack) or with `alg: none` finds no key. Symmetric (`oct`) keys and
//! encryption keys in the set are ignored.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::config::JwksSource;

/// The largest key set read or fetched.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;
/// How long a fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One usable key.
#[derive(Clone)]
pub struct VerifyKey {
    /// Its `kid`, if the set gives one.
    pub kid: Option<String>,
    /// The one algorithm it verifies.
    pub algorithm: Algorithm,
    /// The key.
    pub key: DecodingKey,
}

/// The usable keys of a set.
#[derive(Clone, Default)]
pub struct KeySet {
    /// The keys, in the set's order.
    pub keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (k.kid.as_deref(), k.algorithm)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

/// Why the key set could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read the JWKS file `{path}`: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The URL cannot be fetched.
    #[error("cannot fetch the JWKS from `{url}`: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The document is not a JWKS.
    #[error("the JWKS from {origin} is invalid: {message}")]
    Invalid {
        /// The file or URL, for the message.
        origin: String,
        /// Why.
        message: String,
    },
    /// The document holds no key Consentry can verify with.
    #[error("the JWKS from {origin} holds no RS256, ES256 (P-256) or EdDSA (Ed25519) signing key")]
    Empty {
        /// The file or URL.
        origin: String,
    },
}

impl KeySet {
    /// Loads the set from its source: the URL if there is one, else the
    /// file; with `fall_back`, the file when the URL fails.
    pub async fn load(source: &JwksSource, fall_back: bool) -> Result<Self, JwksError> {
        match (&source.url, &source.file) {
            (Some(url), file) => {
                let fetched = async { Self::parse(&fetch(url.clone()).await?, &format!("`{url}`")) }.await;
                match (fetched, file) {
                    (Err(error), Some(path)) if fall_back => {
                        tracing::warn!(%error, "using the JWKS file until the JWKS URL can be fetched");
                        Self::load_file(path).await
                    }
                    (fetched, _) => fetched,
                }
            }
            (None, Some(path)) => Self::load_file(path).await,
            (None, None) => Err(JwksError::Empty { origin: "no `jwks_url` or `jwks_file`".to_owned() }),
        }
    }

    async fn load_file(path: &std::path::Path) -> Result<Self, JwksError> {
        Self::parse(&read_file(path).await?, &format!("`{}`", path.display()))
    }

    /// Parses a JWKS document; `source` names it in errors.
    pub fn parse(bytes: &[u8], source: &str) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(bytes)
            .map_err(|e| JwksError::Invalid { origin: source.to_owned(), message: e.to_string() })?;
        let keys: Vec<VerifyKey> = set.keys.iter().filter_map(usable).collect();
        if keys.is_empty() {
            return Err(JwksError::Empty { origin: source.to_owned() });
        }
        Ok(Self { keys })
    }

    /// The keys a token with `kid` may be verified with: the one with that
    /// kid, or without a kid, every key.
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> + 'a {
        self.keys.iter().filter(move |key| kid.is_none() || key.kid.as_deref() == kid)
    }
}

/// The key and its algorithm, if it is a signing key of a supported type
/// whose declared `alg`, if any, agrees with that type.
fn usable(jwk: &Jwk) -> Option<VerifyKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let (algorithm, declared) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, KeyAlgorithm::EdDSA)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.as_ref().is_some_and(|alg| *alg != declared) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { kid: jwk.common.key_id.clone(), algorithm, key })
}

async fn read_file(path: &std::path::Path) -> Result<Vec<u8>, JwksError> {
    let error = |message: String| JwksError::Read { path: path.display().to_string(), message };
    let length = tokio::fs::metadata(path).await.map_err(|e| error(e.to_string()))?.len();
    if length > MAX_JWKS_BYTES {
        return Err(error(format!("larger than {MAX_JWKS_BYTES} bytes")));
    }
    tokio::fs::read(path).await.map_err(|e| error(e.to_string()))
}

/// Fetches the URL on a blocking thread (ureq is synchronous), with a time
/// and a size limit so a slow or hostile endpoint cannot hold a worker.
async fn fetch(url: String) -> Result<Vec<u8>, JwksError> {
    let for_error = url.clone();
    let error = move |message: String| JwksError::Fetch { url: for_error.clone(), message };
    let fetched = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(FETCH_TIMEOUT)).max_redirects(0).build().into();
        let mut response =
            agent.get(&url).header("accept", "application/json").call().map_err(|e| e.to_string())?;
        response.body_mut().with_config().limit(MAX_JWKS_BYTES).read_to_vec().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| error(e.to_string()))?;
    fetched.map_err(error)
}

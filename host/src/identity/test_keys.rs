//! Real signing keys and tokens for the identity tests: the library's own
//! and, included by path, the end-to-end tests', so both sign with one
//! definition. It needs only `jsonwebtoken`, `rsa`, `rcgen`, `base64` and
//! `serde_json`, which both have.

#![allow(dead_code)] // each includer uses its own part

use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rsa::pkcs1::EncodeRsaPrivateKey;
use serde_json::{Value, json};

/// A private key and its public JWK.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub private: Arc<EncodingKey>,
    pub jwk: Jwk,
}

/// One RSA key per test binary: generating one takes a while.
fn rsa_der() -> &'static Vec<u8> {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = <rsa::PrivateKey as rsa::Generate>::generate();
        key.to_pkcs1_der().unwrap().as_bytes().to_vec()
    })
}

impl TestKey {
    pub fn rsa(kid: &str) -> Self {
        Self::new(kid, Algorithm::RS256, EncodingKey::from_rsa_der(rsa_der()))
    }

    pub fn p256(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Self::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&pair.serialize_der()))
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Self::new(kid, Algorithm::EdDSA, EncodingKey::from_ed_der(&ed25519_pkcs8_v1(&pair.serialize_der())))
    }

    fn new(kid: &str, algorithm: Algorithm, private: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&private, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        Self { kid: kid.to_owned(), algorithm, private: Arc::new(private), jwk }
    }

    /// A token over `claims`, signed by this key, naming its kid.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.private).unwrap()
    }

    /// A token signed by this key but naming `kid`.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        encode(&header, claims, &self.private).unwrap()
    }
}

/// ring writes an Ed25519 key as PKCS#8 v2 (with the public key), which
/// ed25519-dalek refuses; v1 holds the same 32-byte seed after a fixed prefix.
pub fn ed25519_pkcs8_v1(v2: &[u8]) -> Vec<u8> {
    const V2_PREFIX: [u8; 16] =
        [0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    const V1_PREFIX: [u8; 16] =
        [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    assert_eq!(v2[..16], V2_PREFIX, "not ring's PKCS#8 v2 Ed25519 key");
    [&V1_PREFIX[..], &v2[16..48]].concat()
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!(JwkSet { keys: keys.iter().map(|k| k.jwk.clone()).collect() })
}

pub fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

pub const ISSUER: &str = "https://idp.example/realms/hospital";
pub const AUDIENCE: &str = "consentry";

/// Valid standard claims plus `extra`.
pub fn claims(extra: Value) -> Value {
    let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "exp": now() + 300, "iat": now()});
    if let (Some(map), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        map.extend(extra);
    }
    claims
}

/// `header.payload.` with no signature, from raw JSON parts.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.", part(header), part(claims))
}

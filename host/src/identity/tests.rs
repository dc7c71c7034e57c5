//! The verifier against real RSA, P-256 and Ed25519 keys, with the key set
//! in a file and on a real HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::test_jwks::JwksServer;
use super::test_keys::{AUDIENCE, ISSUER, TestKey, claims, jwks, now, unsigned};
use super::*;
use crate::auth::Role;

fn config(source: JwksSource) -> IdentityConfig {
    let JwksSource { url: jwks_url, file: jwks_file } = source;
    IdentityConfig {
        issuer: Some(ISSUER.to_owned()),
        audience: vec![AUDIENCE.to_owned()],
        jwks_file,
        jwks_url,
        clock_skew: Duration::from_secs(5),
        role_mapping: BTreeMap::from([("hospital-auditor".to_owned(), vec![Role::Auditor])]),
        patient_principal: Some("Patient/{sub}".to_owned()),
        ..IdentityConfig::default()
    }
}

/// A verifier over a JWKS file holding `keys`.
async fn verifier(keys: &[&TestKey]) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys).to_string()).unwrap();
    let verifier = Verifier::new(config(JwksSource { url: None, file: Some(path) }).oidc().unwrap().unwrap());
    verifier.refresh().await.unwrap();
    (verifier, dir)
}

#[tokio::test]
async fn each_algorithm_is_accepted() {
    let keys = [TestKey::rsa("rsa-1"), TestKey::p256("ec-1"), TestKey::ed25519("ed-1")];
    let (verifier, _dir) = verifier(&keys.iter().collect::<Vec<_>>()).await;
    for key in &keys {
        let token = key.sign(&claims(json!({"fhirUser": "Practitioner/dr-weber"})));
        let identity = verifier.verify(&token).await.unwrap_or_else(|e| panic!("{:?}: {e}", key.algorithm));
        assert_eq!(identity.principal.unwrap().to_string(), r#"Practitioner::"dr-weber""#);
        assert_eq!(identity.subject.as_deref(), Some("u-1"));
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_naming_why() {
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::p256("ec-1");
    let (verifier, _dir) = verifier(&[&rsa, &ec]).await;
    let other_ec = TestKey::p256("ec-1");
    let cases: Vec<(&str, String, TokenError)> = vec![
        ("wrong iss", rsa.sign(&claims(json!({"iss": "https://evil.example"}))), TokenError::Issuer),
        ("wrong aud", rsa.sign(&claims(json!({"aud": "someone-else"}))), TokenError::Audience),
        (
            "no aud",
            rsa.sign(&json!({"iss": ISSUER, "exp": now() + 60})),
            TokenError::MissingClaim("aud".into()),
        ),
        ("expired", rsa.sign(&claims(json!({"exp": now() - 60}))), TokenError::Expired),
        ("not yet valid", rsa.sign(&claims(json!({"nbf": now() + 120}))), TokenError::NotYetValid),
        ("bad signature", other_ec.sign(&claims(json!({}))), TokenError::Signature),
        ("unknown kid", rsa.sign_as("rotated-away", &claims(json!({}))), TokenError::UnknownKey),
        ("not a JWT", "a.b".to_owned(), TokenError::Malformed),
        ("too long", format!("{}.b.c", "a".repeat(20_000)), TokenError::TooLong),
        (
            "alg none",
            unsigned(&json!({"alg": "none", "kid": "rsa-1"}), &claims(json!({}))),
            TokenError::Algorithm,
        ),
        // ES256 claimed over the RSA key: the key's own algorithm decides.
        ("alg of another key type", ec.sign_as("rsa-1", &claims(json!({}))), TokenError::KeyAlgorithm),
        (
            "bad fhirUser",
            rsa.sign(&claims(json!({"fhirUser": "Spaceship/1"}))),
            TokenError::Claim(ClaimError {
                claim: "fhirUser",
                message:
                    "names a `Spaceship`; expected one of Practitioner, Patient, RelatedPerson, Organization"
                        .into(),
            }),
        ),
    ];
    for (label, token, expected) in cases {
        let refused = verifier.verify(&token).await.unwrap_err();
        assert_eq!(refused, expected, "{label}");
        assert!(!refused.to_string().contains(&token), "{label}: the message repeats the token");
    }
}

#[tokio::test]
async fn hmac_signed_with_the_public_key_is_refused() {
    // The algorithm confusion attack: HS256 with the RSA public key (as the
    // JWKS publishes it) as the shared secret.
    let rsa = TestKey::rsa("rsa-1");
    let (verifier, _dir) = verifier(&[&rsa]).await;
    let public = serde_json::to_vec(&rsa.jwk).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let token = encode(&header, &claims(json!({})), &EncodingKey::from_secret(&public).unwrap()).unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::Algorithm);
}

#[tokio::test]
async fn the_clock_skew_is_allowed() {
    let key = TestKey::ed25519("ed-1");
    let (verifier, _dir) = verifier(&[&key]).await;
    let token = key.sign(&claims(json!({"exp": now() - 2, "nbf": now() + 2})));
    assert!(verifier.verify(&token).await.is_ok());
}

#[tokio::test]
async fn claims_become_principal_roles_and_facts() {
    let key = TestKey::p256("ec-1");
    let (verifier, _dir) = verifier(&[&key]).await;
    let token = key.sign(&claims(json!({
        "fhirUser": "https://fhir.example/r4/Practitioner/dr-weber",
        "roles": ["hospital-auditor", "decision", "unknown"],
        "patient": "p-100",
        "scope": "openid fhirUser launch/patient patient/Observation.read user/Condition.rs patient/*.c system/Encounter.rs?category=x",
        "extensions": {"ihe_iua": {"purpose_of_use": {"system": "urn:oid:2.16.840.1.113883.5.8", "code": "TREAT"}}},
    })));
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.principal.unwrap().to_string(), r#"Practitioner::"dr-weber""#);
    assert_eq!(identity.roles, vec![Role::Decision, Role::Auditor]);
    assert_eq!(identity.purpose.as_deref(), Some("TREAT"));
    assert_eq!(identity.launch_patient.as_deref(), Some("p-100"));
    let scopes: Vec<(String, &str)> =
        identity.scopes.unwrap().into_iter().map(|s| (s.resource_type, s.interaction)).collect();
    assert_eq!(
        scopes,
        [
            ("*", "create"),
            ("Condition", "read"),
            ("Condition", "search"),
            ("Observation", "read"),
            ("Observation", "search")
        ]
        .map(|(t, i)| (t.to_owned(), i))
    );
}

#[tokio::test]
async fn without_fhir_user_the_template_makes_the_principal() {
    let key = TestKey::rsa("rsa-1");
    let (verifier, _dir) = verifier(&[&key]).await;
    let token = key.sign(&claims(json!({"sub": "p-100", "roles": "patient", "purpose_of_use": "PATRQT"})));
    let identity = verifier.verify(&token).await.unwrap();
    assert_eq!(identity.principal.unwrap().to_string(), r#"Patient::"p-100""#);
    assert_eq!(identity.roles, vec![Role::Patient]);
    assert_eq!(identity.purpose.as_deref(), Some("PATRQT"));
    assert_eq!(identity.scopes, None);
    let bad = key.sign(&claims(json!({"sub": "not/an id"})));
    assert!(matches!(verifier.verify(&bad).await, Err(TokenError::Claim(ClaimError { claim: "sub", .. }))));
}

#[test]
fn smart_scopes_v1_and_v2() {
    let parsed = |text: &str| -> Vec<String> {
        smart_scope(text).into_iter().map(|s| format!("{}.{}", s.resource_type, s.interaction)).collect()
    };
    assert_eq!(parsed("patient/Observation.read"), ["Observation.read", "Observation.search"]);
    assert_eq!(parsed("patient/Observation.rs"), ["Observation.read", "Observation.search"]);
    assert_eq!(
        parsed("user/Observation.write"),
        ["Observation.create", "Observation.update", "Observation.delete"]
    );
    assert_eq!(parsed("system/*.cruds").len(), 5);
    assert_eq!(parsed("patient/*.*").len(), 5);
    assert_eq!(parsed("user/Patient.u"), ["Patient.update"]);
    for nothing in [
        "openid",
        "launch/patient",
        "patient/Observation.sr",
        "patient/Observation.rr",
        "patient/observation.r",
        "patient/Observation.rs?category=laboratory",
        "practitioner/Observation.r",
        "patient/Observation",
    ] {
        assert!(parsed(nothing).is_empty(), "{nothing}");
    }
}

#[test]
fn token_facts_override_the_callers_context() {
    let identity = TokenIdentity {
        principal: Some(r#"Patient::"p-100""#.parse().unwrap()),
        purpose: Some("TREAT".to_owned()),
        scopes: Some([SmartScope { resource_type: "Observation".into(), interaction: "read" }].into()),
        ..TokenIdentity::default()
    };
    let mut context = Some(
        json!({"purpose": "ETREAT", "justification": "x", "scopes": [{"resource_type": "*", "interaction": "read"}], "launch_patient": "p-2"}),
    );
    identity.apply_to_context(&mut context).unwrap();
    let empty: [&str; 0] = [];
    assert_eq!(
        context.unwrap(),
        json!({"purpose": "TREAT", "justification": "x", "scopes": {
            "read": ["Observation"], "search": empty, "create": empty, "update": empty, "delete": empty}})
    );
    let mut none = None;
    identity.apply_to_context(&mut none).unwrap();
    assert_eq!(none.unwrap()["purpose"], "TREAT");
    assert_eq!(identity.apply_to_context(&mut Some(json!([1]))), Err(FactsError::Context));
    let other = identity.principal_for(Some(r#"Patient::"p-2""#.parse().unwrap()), "principal").unwrap_err();
    assert_eq!(other.field(), "principal");
    let same = identity.principal_for(Some(r#"Patient::"p-100""#.parse().unwrap()), "principal").unwrap();
    assert_eq!(same.to_string(), r#"Patient::"p-100""#);
    assert_eq!(TokenIdentity::default().principal_for(None, "subject"), Err(FactsError::NoPrincipal));
}

#[tokio::test]
async fn keys_are_fetched_from_a_url_and_again_for_an_unknown_kid() {
    let old = TestKey::rsa("2026-11");
    let server = JwksServer::start(jwks(&[&old])).await;
    let verifier = Verifier::new(
        config(JwksSource { url: Some(server.url.clone()), file: None }).oidc().unwrap().unwrap(),
    );
    verifier.refresh().await.unwrap();
    assert!(verifier.verify(&old.sign(&claims(json!({})))).await.is_ok());
    assert_eq!(server.fetches(), 1);
    // The IdP rotates to a new key: the first token naming it fetches the set.
    let new = TestKey::ed25519("2026-12");
    server.serve(jwks(&[&new]));
    assert!(verifier.verify(&new.sign(&claims(json!({})))).await.is_ok());
    assert_eq!(server.fetches(), 2);
    // Within the cooldown, made-up kids fetch nothing more.
    for n in 0..20 {
        let refused = verifier.verify(&new.sign_as(&format!("made-up-{n}"), &claims(json!({})))).await;
        assert_eq!(refused.unwrap_err(), TokenError::UnknownKey);
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_fetch() {
    let key = TestKey::p256("k");
    let server = JwksServer::start(jwks(&[&key])).await;
    let verifier = std::sync::Arc::new(Verifier::new(
        config(JwksSource { url: Some(server.url.clone()), file: None }).oidc().unwrap().unwrap(),
    ));
    verifier.refresh().await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|n| {
            let verifier = std::sync::Arc::clone(&verifier);
            let token = key.sign_as(&format!("flood-{n}"), &claims(json!({})));
            tokio::spawn(async move { verifier.verify(&token).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap_err(), TokenError::UnknownKey);
    }
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn the_background_refresh_picks_up_new_keys() {
    let first = TestKey::rsa("a");
    let server = JwksServer::start(jwks(&[&first])).await;
    let mut config = config(JwksSource { url: Some(server.url.clone()), file: None });
    config.refresh_interval = Duration::from_secs(1);
    // No fetch for unknown kids: only the background refresh can find `b`.
    config.unknown_kid_cooldown = Duration::from_secs(3600);
    let verifier = std::sync::Arc::new(Verifier::new(config.oidc().unwrap().unwrap()));
    verifier.refresh().await.unwrap();
    let second = TestKey::p256("b");
    let token = second.sign(&claims(json!({})));
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::UnknownKey);
    server.serve(jwks(&[&first, &second]));
    let refresh = verifier.spawn_refresh();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while verifier.verify(&token).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the background refresh never fetched the new key");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refresh.abort();
}

#[tokio::test]
async fn the_file_stands_in_while_the_url_cannot_be_fetched() {
    let key = TestKey::ed25519("e");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks(&[&key]).to_string()).unwrap();
    // Nothing listens on port 9 of loopback.
    let source = JwksSource { url: Some("http://127.0.0.1:9/jwks".to_owned()), file: Some(file) };
    let verifier = Verifier::new(config(source).oidc().unwrap().unwrap());
    verifier.refresh().await.unwrap();
    assert!(verifier.verify(&key.sign(&claims(json!({})))).await.is_ok());
    // Once keys are held, a failed fetch keeps them rather than re-reading the file.
    assert!(matches!(verifier.refresh().await, Err(JwksError::Fetch { .. })));
    assert!(verifier.verify(&key.sign(&claims(json!({})))).await.is_ok());
    // Without the file, no keys: every token is refused, saying why.
    let source = JwksSource { url: Some("http://127.0.0.1:9/jwks".to_owned()), file: None };
    let verifier = Verifier::new(config(source).oidc().unwrap().unwrap());
    assert!(verifier.refresh().await.is_err());
    assert_eq!(verifier.verify(&key.sign(&claims(json!({})))).await.unwrap_err(), TokenError::NoKeys);
}

#[test]
fn key_sets_keep_only_signing_keys_of_supported_types() {
    let rsa = TestKey::rsa("r");
    let mut encryption = serde_json::to_value(&rsa.jwk).unwrap();
    encryption["use"] = json!("enc");
    encryption["kid"] = json!("enc");
    let mut mislabelled = serde_json::to_value(&rsa.jwk).unwrap();
    mislabelled["alg"] = json!("RS512");
    mislabelled["kid"] = json!("rs512");
    let document = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        encryption,
        mislabelled,
        {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"},
        rsa.jwk,
    ]});
    let set = KeySet::parse(document.to_string().as_bytes(), "test").unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| (k.kid.clone().unwrap(), k.algorithm)).collect();
    assert_eq!(kids, [("r".to_owned(), Algorithm::RS256)]);
    assert!(matches!(
        KeySet::parse(br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#, "t"),
        Err(JwksError::Empty { .. })
    ));
    assert!(matches!(KeySet::parse(b"[]", "t"), Err(JwksError::Invalid { .. })));
}

#[test]
fn bad_settings_are_refused_naming_the_key() {
    let good = config(JwksSource { url: Some("https://idp.example/jwks".to_owned()), file: None });
    assert!(good.oidc().unwrap().is_some());
    assert!(IdentityConfig::default().oidc().unwrap().is_none());
    let cases: Vec<(IdentityConfig, &str)> = vec![
        (IdentityConfig { issuer: None, ..good.clone() }, "identity.audience"),
        (IdentityConfig { audience: vec![], ..good.clone() }, "identity.audience"),
        (IdentityConfig { jwks_url: None, ..good.clone() }, "identity.jwks_url"),
        (
            IdentityConfig { jwks_url: Some("http://idp.example/jwks".into()), ..good.clone() },
            "identity.jwks_url",
        ),
        (
            IdentityConfig { jwks_url: Some("http://localhost.evil/jwks".into()), ..good.clone() },
            "identity.jwks_url",
        ),
        (
            IdentityConfig { patient_principal: Some("Patient/fixed".into()), ..good.clone() },
            "identity.patient_principal",
        ),
        (
            IdentityConfig { patient_principal: Some("Robot/{sub}".into()), ..good.clone() },
            "identity.patient_principal",
        ),
        (IdentityConfig { role_claim: "realm_access..roles".into(), ..good.clone() }, "identity.role_claim"),
        (IdentityConfig { refresh_interval: Duration::ZERO, ..good.clone() }, "identity.refresh_interval"),
    ];
    for (config, key) in cases {
        assert_eq!(config.oidc().unwrap_err().key, key);
    }
    let local = IdentityConfig { jwks_url: Some("http://127.0.0.1:9/jwks".into()), ..good };
    assert!(local.oidc().is_ok());
}

#[test]
fn the_identity_section_reads_from_toml() {
    let text = r#"
        trust_principal_header = true
        issuer = "https://idp.example"
        audience = "consentry"
        jwks_url = "https://idp.example/jwks"
        refresh_interval = "10m"
        clock_skew = "1m"
        role_claim = "realm_access.roles"
        patient_principal = "Patient/{sub}"
        [role_mapping]
        "hospital-auditor" = ["auditor", "consent-writer"]
    "#;
    let parsed: IdentityConfig = toml::from_str(text).unwrap();
    assert!(parsed.trust_principal_header);
    assert_eq!(parsed.audience, ["consentry"]);
    let settings = parsed.oidc().unwrap().unwrap();
    assert_eq!(settings.role_claim, ["realm_access", "roles"]);
    assert_eq!(settings.refresh_interval, Duration::from_secs(600));
    assert!(toml::from_str::<IdentityConfig>("issuer = 1").is_err());
    assert!(toml::from_str::<IdentityConfig>("isuer = \"x\"").is_err());
}

#[test]
fn the_proxied_principal_header_is_trusted_only_when_told_and_a_token_replaces_it() {
    let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
    let sent = vec![
        pair("x-principal", "Practitioner/dr-ali"),
        pair("x-purpose-of-use", "BTG"),
        pair("accept", "x"),
    ];
    let mut untrusted = sent.clone();
    rewrite_headers(&mut untrusted, None, false);
    assert_eq!(untrusted, [pair("x-purpose-of-use", "BTG"), pair("accept", "x")]);
    let mut trusted = sent.clone();
    rewrite_headers(&mut trusted, None, true);
    assert_eq!(trusted, sent);
    let identity = TokenIdentity {
        principal: Some(r#"Patient::"p-100""#.parse().unwrap()),
        purpose: Some("PATRQT".to_owned()),
        ..TokenIdentity::default()
    };
    let mut with_token = sent.clone();
    rewrite_headers(&mut with_token, Some(&identity), true);
    assert_eq!(
        with_token,
        [pair("accept", "x"), pair("x-principal", "Patient/p-100"), pair("x-purpose-of-use", "PATRQT")]
    );
    assert_eq!(bearer_jwt("Bearer a.b.c"), Some("a.b.c"));
    assert_eq!(bearer_jwt("Bearer cst_0123"), None, "a static token is not a JWT");
    assert_eq!(bearer_jwt("Basic a.b.c"), None);
}

/// A verified token is remembered, but never past its `exp`.
#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let rsa = TestKey::rsa("rsa-1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&rsa]).to_string()).unwrap();
    let mut settings = config(JwksSource { url: None, file: Some(path) });
    settings.clock_skew = Duration::ZERO;
    let verifier = Verifier::new(settings.oidc().unwrap().unwrap());
    verifier.refresh().await.unwrap();
    let token = rsa.sign(&claims(json!({"exp": now() + 1})));
    verifier.verify(&token).await.unwrap();
    verifier.verify(&token).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::Expired);
}

/// A verified token is remembered with the key set that verified it: once
/// the provider rotates that key away, the token is checked again, and
/// refused.
#[tokio::test]
async fn a_remembered_token_is_checked_again_after_its_key_is_rotated_away() {
    let old = TestKey::p256("2026-11");
    let new = TestKey::ed25519("2026-12");
    let (verifier, dir) = verifier(&[&old]).await;
    let token = old.sign(&claims(json!({"fhirUser": "Practitioner/dr-weber"})));
    verifier.verify(&token).await.unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&new]).to_string()).unwrap();
    verifier.refresh().await.unwrap();
    assert_eq!(verifier.verify(&token).await.unwrap_err(), TokenError::UnknownKey);
    let renewed = new.sign(&claims(json!({"fhirUser": "Practitioner/dr-weber"})));
    assert!(verifier.verify(&renewed).await.is_ok());
}

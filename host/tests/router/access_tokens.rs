//! Access tokens in plans and searches: `/v1/plan` and the AuthZEN Search
//! APIs take a caller's OIDC or SMART on FHIR token as the decision
//! endpoints do. Over the bundled pack, with a verifier over a JWKS file
//! holding a real key made here: a token plans and searches as its
//! principal, with its SMART scopes and purpose; a principal or subject
//! sent beside it must be the same; a refused token is 401 naming why and
//! never echoing it; a subject search refuses a token, since its subjects
//! are what is searched for; and a server without an identity provider
//! refuses a token as the decision endpoints do.

use std::collections::BTreeSet;

use consentry::identity::{IdentityConfig, Verifier};
use consentry::search::body::SearchBody;
use consentry_engine::{RecordFacts, RecordFilter, Searched};

use super::*;

#[path = "../../src/identity/test_keys.rs"]
mod test_keys;
use test_keys::{AUDIENCE, ISSUER, TestKey, claims, now};

/// The pack's router, trusting tokens signed by the key it returns. The
/// JWKS file lives in the returned directory.
async fn pack_app_trusting_a_key() -> (App, TestKey, TempDir) {
    let key = TestKey::p256("ec-1");
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, test_keys::jwks(&[&key]).to_string()).unwrap();
    let config = IdentityConfig {
        issuer: Some(ISSUER.to_owned()),
        audience: vec![AUDIENCE.to_owned()],
        jwks_file: Some(jwks),
        ..IdentityConfig::default()
    };
    let verifier = Verifier::new(config.oidc().unwrap().unwrap());
    verifier.refresh().await.unwrap();
    let auth = Auth::with_admin_token(Some(TOKEN)).with_oidc(Arc::new(verifier));
    (pack_app_with(auth).await, key, dir)
}

/// A SMART patient app's token for p-100: Observations only, for the
/// patient's own request (IUA `PATRQT`). `jti` tells tokens with the same
/// claims apart, as a refreshed token is.
fn patient_app_token(key: &TestKey, jti: &str) -> String {
    key.sign(&claims(json!({
        "fhirUser": "Patient/p-100",
        "patient": "p-100",
        "scope": "openid fhirUser launch/patient patient/Observation.rs",
        "purpose_of_use": "PATRQT",
        "jti": jti,
    })))
}

/// A record of p-100 as a plan's filter reads it.
fn record(id: &str, resource_type: &str) -> RecordFacts {
    RecordFacts {
        id: id.to_owned(),
        resource_type: resource_type.to_owned(),
        labels: BTreeSet::new(),
        confidentiality: "N".to_owned(),
        codes: None,
        date: None,
    }
}

fn read_plan(extra: Value) -> Value {
    let mut body =
        json!({"action": "Action::\"read\"", "resource_type": "Record", "patient": "Patient::\"p-100\""});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    body
}

fn result_ids(answer: &Value) -> Vec<&str> {
    answer["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect()
}

fn action_names(answer: &Value) -> Vec<&str> {
    answer["results"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_token_plans_as_its_principal_with_its_scopes() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let token = patient_app_token(&key, "a");

    // Without a token, the patient's own plan admits her Condition too.
    let stated = read_plan(json!({"principal": "Patient::\"p-100\"", "context": {"purpose": "PATRQT"}}));
    let reply = send(&app, post("/v1/plan", &stated)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let filter: RecordFilter = serde_json::from_value(reply.body["filter"].clone()).unwrap();
    assert!(filter.admits(&record("cond-1", "Condition")), "{}", reply.text);

    // With her app's token, the plan is hers and its scopes admit Observations only.
    for body in [
        read_plan(json!({"token": token})),
        read_plan(json!({"token": token, "principal": {"type": "Patient", "id": "p-100"}})),
    ] {
        let reply = send(&app, post("/v1/plan", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.body["kind"], "conditional", "{}", reply.text);
        let filter: RecordFilter = serde_json::from_value(reply.body["filter"].clone()).unwrap();
        assert!(filter.admits(&record("obs-1", "Observation")), "{}", reply.text);
        assert!(
            !filter.admits(&record("cond-1", "Condition")),
            "the scopes grant no Condition: {}",
            reply.text
        );
        assert_eq!(
            reply.body["fhir"]["queries"][0]["params"],
            json!(["_type=Observation"]),
            "{}",
            reply.text
        );
    }

    // Someone else beside the token is refused, naming the field.
    let other = read_plan(json!({"token": token, "principal": "Practitioner::\"dr-weber\""}));
    let reply = send(&app, post("/v1/plan", &other)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("principal"));
    assert!(!reply.text.contains(&token));
    let nobody = read_plan(json!({"context": {"purpose": "PATRQT"}}));
    let reply = send(&app, post("/v1/plan", &nobody)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("principal"));
}

#[tokio::test]
async fn a_plan_without_a_patient_is_for_the_tokens_launch_patient() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let token = patient_app_token(&key, "launch");
    let without_patient = |extra: Value| {
        let mut body = read_plan(extra);
        body.as_object_mut().unwrap().remove("patient");
        body
    };
    // Which patient a plan is for matters: without one, the consents are unknown.
    let stated = json!({"principal": "Patient::\"p-100\"", "context": {"purpose": "PATRQT"}});
    let named = send(&app, post("/v1/plan", &read_plan(stated.clone()))).await;
    let unnamed = send(&app, post("/v1/plan", &without_patient(stated))).await;
    assert_eq!((named.status, unnamed.status), (StatusCode::OK, StatusCode::OK), "{}", unnamed.text);
    assert_ne!(named.body["filter"], unnamed.body["filter"], "{}", unnamed.text);

    // The token's launch patient stands in for a patient left out.
    let named = send(&app, post("/v1/plan", &read_plan(json!({"token": token})))).await;
    let launched = send(&app, post("/v1/plan", &without_patient(json!({"token": token})))).await;
    assert_eq!(launched.status, StatusCode::OK, "{}", launched.text);
    assert_eq!(launched.body["kind"], named.body["kind"], "{}", launched.text);
    assert_eq!(launched.body["filter"], named.body["filter"], "{}", launched.text);
}

#[tokio::test]
async fn a_token_searches_as_its_subject_with_its_scopes() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let token = patient_app_token(&key, "a");
    let her_records = json!({"type": "Record", "properties": {"patient": "p-100"}});

    // Stated without a token, her own records include the Conditions.
    let stated = json!({"subject": {"type": "Patient", "id": "p-100"}, "action": {"name": "read"},
                        "resource": her_records, "context": {"purpose": "PATRQT"}});
    let reply = send(&app, post("/access/v1/search/resource", &stated)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(result_ids(&reply.body).contains(&"cond-1"), "{}", reply.text);

    // With the token, only what its scopes grant, with or without the same subject.
    for subject in [None, Some(json!({"type": "Patient", "id": "p-100"}))] {
        let mut body = json!({"token": token, "action": {"name": "read"}, "resource": her_records});
        if let Some(subject) = subject {
            body["subject"] = subject;
        }
        let reply = send(&app, post("/access/v1/search/resource", &body)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        // Her Observations; no Condition, which the scopes do not grant.
        assert_eq!(result_ids(&reply.body), ["gen-1", "obs-1"], "{}", reply.text);
        assert!(!reply.text.contains(&token));
    }
    let actions = json!({"token": token, "resource": {"type": "Record", "id": "obs-1"}});
    let reply = send(&app, post("/access/v1/search/action", &actions)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let names = action_names(&reply.body);
    assert!(names.contains(&"read") && names.contains(&"search"), "{}", reply.text);
    assert!(!names.contains(&"update"), "`rs` grants no update: {}", reply.text);
    let on_condition = json!({"token": token, "resource": {"type": "Record", "id": "cond-1"}});
    let reply = send(&app, post("/access/v1/search/action", &on_condition)).await;
    assert_eq!(action_names(&reply.body), Vec::<&str>::new(), "{}", reply.text);

    // Someone else beside the token is refused, naming the field.
    for path in ["/access/v1/search/resource", "/access/v1/search/action"] {
        let body = json!({"token": token, "subject": {"type": "Patient", "id": "p-200"}, "action": {"name": "read"},
                          "resource": {"type": "Record", "id": "obs-1"}});
        let mut body = body;
        if path.ends_with("resource") {
            body["resource"] = her_records.clone();
        } else {
            body.as_object_mut().unwrap().remove("action");
        }
        let reply = send(&app, post(path, &body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("subject"));
        assert!(!reply.text.contains(&token), "{path}");
    }
}

#[tokio::test]
async fn a_page_token_outlives_the_access_token_it_was_found_with_but_not_its_principal() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let page = |token: &str, page: Value| {
        json!({"token": token, "action": {"name": "read"},
               "resource": {"type": "Record", "properties": {"patient": "p-100"}}, "page": page})
    };
    let first = send(
        &app,
        post("/access/v1/search/resource", &page(&patient_app_token(&key, "a"), json!({"limit": 1}))),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let next = first.body["page"]["next_token"].as_str().unwrap().to_owned();
    assert!(!next.is_empty(), "{}", first.text);

    // The app's refreshed token, for the same patient and scopes, continues the query.
    let refreshed = patient_app_token(&key, "b");
    let second =
        send(&app, post("/access/v1/search/resource", &page(&refreshed, json!({"limit": 1, "token": next}))))
            .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_ne!(result_ids(&second.body), result_ids(&first.body), "{}", second.text);

    // Another principal's token is another query.
    let representative =
        key.sign(&claims(json!({"fhirUser": "RelatedPerson/rp-anna", "purpose_of_use": "PWATRNY"})));
    let other = send(
        &app,
        post("/access/v1/search/resource", &page(&representative, json!({"limit": 1, "token": next}))),
    )
    .await;
    assert_error(&other, StatusCode::BAD_REQUEST, "invalid_request", Some("page.token"));
}

#[tokio::test]
async fn a_subject_search_refuses_a_token_naming_it() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let token = patient_app_token(&key, "a");
    let body = json!({"token": token, "subject": {"type": "Practitioner"}, "action": {"name": "read"},
                      "resource": {"type": "Record", "id": "obs-1"}});
    for app in [&app, &pack_app().await] {
        let reply = send(app, post("/access/v1/search/subject", &body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("token"));
        assert!(reply.body["message"].as_str().unwrap().contains("subject search"), "{}", reply.text);
        assert!(!reply.text.contains(&token));
    }
}

#[tokio::test]
async fn a_refused_token_is_401_naming_why_and_never_echoed() {
    let (app, key, _jwks) = pack_app_trusting_a_key().await;
    let patient = json!({"fhirUser": "Patient/p-100", "purpose_of_use": "PATRQT"});
    let expired = key.sign(&claims(json!({"exp": now() - 600, "fhirUser": "Patient/p-100"})));
    let impostor = TestKey::p256("ec-1").sign(&claims(patient));
    for (token, why) in [(expired, "expired"), (impostor, "signature")] {
        for (path, body) in [
            ("/v1/plan", read_plan(json!({"token": token}))),
            (
                "/access/v1/search/resource",
                json!({"token": token, "action": {"name": "read"}, "resource": {"type": "Record"}}),
            ),
            (
                "/access/v1/search/action",
                json!({"token": token, "resource": {"type": "Record", "id": "obs-1"}}),
            ),
        ] {
            let reply = send(&app, post(path, &body)).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}: {}", reply.text);
            assert_eq!(
                (&reply.body["error"], &reply.body["field"]),
                (&json!("unauthorized"), &json!("token"))
            );
            assert!(reply.body["message"].as_str().unwrap().contains(why), "{path}: {}", reply.text);
            assert!(!reply.text.contains(&token), "{path}: the answer repeats the token");
        }
    }
}

#[tokio::test]
async fn without_an_identity_provider_a_plan_or_search_token_is_refused_naming_it() {
    let app = pack_app().await;
    let token = patient_app_token(&TestKey::p256("ec-1"), "a");
    for (path, body) in [
        ("/v1/plan", read_plan(json!({"token": token}))),
        (
            "/access/v1/search/resource",
            json!({"token": token, "action": {"name": "read"}, "resource": {"type": "Record"}}),
        ),
        ("/access/v1/search/action", json!({"token": token, "resource": {"type": "Record", "id": "obs-1"}})),
    ] {
        let reply = send(&app, post(path, &body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("token"));
        assert!(
            reply.body["message"].as_str().unwrap().contains("identity.issuer"),
            "{path}: {}",
            reply.text
        );
        assert!(!reply.text.contains(&token));
    }
}

#[test]
fn a_request_file_with_a_token_is_refused_since_nothing_verified_it() {
    // `consentry check`, `plan` and `search` read files and verify no token.
    let check = br#"{"token": "eyJ.x.y", "action": "Action::\"read\"", "resource": "Record::\"obs-1\""}"#;
    let refused = consentry::request_body::parse(check).unwrap_err();
    assert_eq!(refused.field, "token");
    assert!(refused.to_string().starts_with("token: not accepted here"), "{refused}");
    let plan = br#"{"token": "eyJ.x.y", "action": "Action::\"read\"", "resource_type": "Record"}"#;
    let refused = consentry::planning::parse(plan).unwrap_err();
    assert_eq!(refused.field, "token");
    assert!(refused.to_string().starts_with("token: not accepted here"), "{refused}");
    let search = br#"{"token": "eyJ.x.y", "action": {"name": "read"}, "resource": {"type": "Record"}}"#;
    let body = SearchBody::parse(Searched::Resource, search).unwrap();
    assert_eq!(body.into_query(None, |_, _| None).unwrap_err().field, "token");
}

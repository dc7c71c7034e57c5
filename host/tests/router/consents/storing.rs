//! Storing consents as versions, reading them back, and refusing what is
//! malformed or cannot be honoured, naming the field.

use super::*;

#[tokio::test]
async fn post_stores_version_1_under_a_fresh_id_and_get_returns_the_fhir_resource() {
    let app = pack_app().await;
    let posted = r4_treatment("active");
    let reply = post_consent(&app, &posted).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap_or_else(|| panic!("an id: {}", reply.text)).to_owned();
    assert!(!id.is_empty());
    assert_eq!(reply.body["version"], 1);
    assert_eq!(reply.body["patient"], "p-100");
    assert_eq!(reply.body["status"], "active");
    assert_eq!(reply.body["fhir_version"], "R4");
    assert!(reply.body["recorded_at_unix_ms"].as_i64().is_some_and(|ms| ms > 0), "{}", reply.text);
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some(format!("/v1/consents/{id}?version=1").as_str()));

    let got = get_consent(&app, &format!("/v1/consents/{id}")).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    let etag = got.headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    assert_eq!(etag, Some("W/\"1\""));
    let mut expected = posted;
    expected["id"] = json!(id);
    expected["meta"] = json!({"versionId": "1"});
    assert_eq!(got.body, expected);

    // A second POST of the same body is another consent.
    let again = post_consent(&app, &r4_treatment("active")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_ne!(again.body["id"], json!(id));
    assert_eq!(listed(&app, "p-100").await.len(), 2);
}

#[tokio::test]
async fn put_supersedes_with_the_next_version_and_every_version_stays_readable() {
    let app = pack_app().await;
    let first = r4_treatment_with_id("c-1", "active");
    let reply = put_consent(&app, "c-1", &first).await;
    assert_eq!(reply.status, StatusCode::CREATED, "a new id is created: {}", reply.text);
    assert_eq!((reply.body["id"].as_str(), reply.body["version"].as_u64()), (Some("c-1"), Some(1)));
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("/v1/consents/c-1?version=1"));

    // The id in the body may be left out: the URL names the consent.
    let mut second = r4_treatment("inactive");
    second["dateTime"] = json!("2026-06-01");
    let reply = put_consent(&app, "c-1", &second).await;
    assert_eq!(reply.status, StatusCode::OK, "a further version is 200: {}", reply.text);
    assert_eq!(reply.body["version"], 2);
    assert_eq!(reply.body["status"], "inactive");
    let location = reply.headers.get(header::LOCATION).and_then(|v| v.to_str().ok());
    assert_eq!(location, Some("/v1/consents/c-1?version=2"));

    let latest = get_consent(&app, "/v1/consents/c-1").await;
    assert_eq!(latest.status, StatusCode::OK, "{}", latest.text);
    assert_eq!(latest.headers.get(header::ETAG).and_then(|v| v.to_str().ok()), Some("W/\"2\""));
    assert_eq!(latest.body["status"], "inactive");
    assert_eq!(latest.body["dateTime"], "2026-06-01");
    assert_eq!(latest.body["id"], "c-1");
    assert_eq!(latest.body["meta"]["versionId"], "2");

    let old = get_consent(&app, "/v1/consents/c-1?version=1").await;
    assert_eq!(old.status, StatusCode::OK, "{}", old.text);
    assert_eq!(old.headers.get(header::ETAG).and_then(|v| v.to_str().ok()), Some("W/\"1\""));
    let mut expected = first;
    expected["meta"] = json!({"versionId": "1"});
    assert_eq!(old.body, expected);
    let explicit = get_consent(&app, "/v1/consents/c-1?version=2").await;
    assert_eq!(explicit.body, latest.body);
}

#[tokio::test]
async fn unknown_consent_and_unknown_version_are_404() {
    let app = pack_app().await;
    let reply = get_consent(&app, "/v1/consents/c-nope").await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    assert!(reply.body["message"].as_str().unwrap().contains("c-nope"), "{}", reply.text);

    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    for version in ["2", "0", "18446744073709551615"] {
        let reply = get_consent(&app, &format!("/v1/consents/c-1?version={version}")).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
    }
    let reply = get_consent(&app, "/v1/consents/c-2?version=1").await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found", None);
}

#[tokio::test]
async fn version_that_is_not_a_number_is_400_naming_version() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    for query in ["version=abc", "version=-1", "version=1.5", "version="] {
        let reply = get_consent(&app, &format!("/v1/consents/c-1?{query}")).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("version"));
    }
    assert_eq!(get_consent(&app, "/v1/consents/c-1?version=1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn patient_list_has_the_latest_version_of_each_of_the_patients_consents() {
    let app = pack_app().await;
    assert_eq!(listed(&app, "p-100").await, []);
    for id in ["c-b", "c-a"] {
        let reply = put_consent(&app, id, &r4_treatment("active")).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let mut other = r4_treatment("active");
    other["patient"] = json!({"reference": "Patient/p-300"});
    assert_eq!(put_consent(&app, "c-c", &other).await.status, StatusCode::CREATED);
    assert_eq!(put_consent(&app, "c-b", &r4_treatment("inactive")).await.status, StatusCode::OK);

    assert_eq!(listed(&app, "p-100").await, [("c-a".to_owned(), 1), ("c-b".to_owned(), 2)]);
    assert_eq!(listed(&app, "p-300").await, [("c-c".to_owned(), 1)]);
    assert_eq!(listed(&app, "p-999").await, []);

    let reply = get_consent(&app, "/v1/patients/p-100/consents").await;
    let entry = &reply.body["consents"][1];
    assert_eq!(entry["summary"]["status"], "inactive");
    assert_eq!(entry["summary"]["patient"], "p-100");
    assert_eq!(entry["summary"]["fhir_version"], "R4");
    assert_eq!(entry["resource"]["id"], "c-b");
    assert_eq!(entry["resource"]["status"], "inactive");
    assert_eq!(entry["resource"]["meta"]["versionId"], "2");
}

#[tokio::test]
async fn consent_routes_refuse_a_missing_or_wrong_token_with_401_and_store_nothing() {
    let app = pack_app().await;
    let writes = || {
        vec![
            post("/v1/consents", &r4_treatment("active")),
            json_request(Method::PUT, "/v1/consents/c-1", &r4_treatment_with_id("c-1", "active")),
            get("/v1/consents/c-1"),
            get("/v1/patients/p-100/consents"),
        ]
    };
    for token in [None, Some("wrong-token"), Some("")] {
        for request in writes() {
            let label = format!("{} {} with {token:?}", request.method(), request.uri());
            let request = match token {
                Some(token) => with_token(request, token),
                None => request,
            };
            let reply = send(&app, request).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{label}: {}", reply.text);
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized", None);
            let challenge = reply.headers.get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
            assert_eq!(challenge, Some("Bearer"), "{label}");
        }
    }
    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

#[tokio::test]
async fn malformed_fhir_is_400_naming_the_json_path() {
    let app = pack_app().await;
    let mut cases = Vec::new();

    let mut consent = r4_treatment("active");
    consent["status"] = json!(3);
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent["provision"]["period"]["start"] = json!(2026);
    cases.push((consent, "provision.period.start"));

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"]["reference"] = json!(42);
    cases.push((consent, "provision.actor[0].reference.reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["securityLabel"] = json!({"code": "PSY"});
    cases.push((consent, "provision.provision[0].securityLabel"));

    let mut consent = r4_treatment("active");
    consent["provision"] = json!("permit");
    cases.push((consent, "provision"));

    let consent = r5_opt_out("c-1", json!([{"purpose": "TREAT"}]));
    cases.push((consent, "provision[0].purpose"));

    for (consent, field) in cases {
        let reply = post_consent(&app, &consent).await;
        assert_consent_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request", field);
        let reply = put_consent(&app, "c-1", &consent).await;
        assert_consent_refused(&reply, StatusCode::BAD_REQUEST, "invalid_request", field);
    }

    // Not JSON at all, or not declared as JSON.
    let reply = send(
        &app,
        admin(request(Method::POST, "/v1/consents", Some("application/json"), "{\"resourceType\"")),
    )
    .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", None);
    let body = r4_treatment("active").to_string();
    let reply = send(&app, admin(request(Method::POST, "/v1/consents", Some("text/plain"), body))).await;
    assert_error(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None);

    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn fhir_that_cannot_be_honoured_is_422_invalid_consent_naming_the_json_path() {
    let app = pack_app().await;
    let mut cases = Vec::new();

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"]["reference"] = json!("Device/pump-1");
    cases.push((consent, "provision.actor[0].reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["actor"][0]["reference"] = json!({"identifier": {"value": "st-mary"}});
    cases.push((consent, "provision.actor[0].reference"));

    let mut consent = r4_treatment("active");
    consent["status"] = json!("approved");
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent.as_object_mut().unwrap().remove("status");
    cases.push((consent, "status"));

    let mut consent = r4_treatment("active");
    consent["resourceType"] = json!("Observation");
    cases.push((consent, "resourceType"));

    let mut consent = r4_treatment("active");
    consent["patient"] = json!({"reference": "Group/ward-3"});
    cases.push((consent, "patient.reference"));

    let mut consent = r4_treatment("active");
    consent["provision"]["action"][0]["coding"][0]["code"] = json!("destroy");
    cases.push((consent, "provision.action[0].coding[0].code"));

    let mut consent = r4_treatment("active");
    consent["provision"]["period"]["start"] = json!("2026-13-01");
    cases.push((consent, "provision.period.start"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["type"] = json!("permit");
    cases.push((consent, "provision.provision[0].type"));

    let mut consent = r4_treatment("active");
    consent["provision"].as_object_mut().unwrap().remove("type");
    cases.push((consent, "provision.type"));

    let mut consent = r4_treatment("active");
    consent["provision"]["provision"][0]["modifierExtension"] =
        json!([{"url": "http://example.org/fhir/StructureDefinition/only-if", "valueBoolean": true}]);
    cases.push((consent, "provision.provision[0].modifierExtension"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent.as_object_mut().unwrap().remove("decision");
    cases.push((consent, "decision"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent["provision"][0]["actor"] = json!([
        {"reference": {"reference": "Group/break-glass"}},
        {"reference": {"reference": "Location/icu"}}
    ]);
    cases.push((consent, "provision[0].actor[1].reference"));

    let mut consent = r5_opt_out("c-1", break_glass_exception());
    consent["patient"] = json!({"reference": "Patient/p-100"});
    cases.push((consent, "patient"));

    for (consent, field) in cases {
        let reply = post_consent(&app, &consent).await;
        assert_consent_refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent", field);
        let reply = put_consent(&app, "c-1", &consent).await;
        assert_consent_refused(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_consent", field);
    }
    assert_eq!(listed(&app, "p-100").await, []);
    assert_eq!(get_consent(&app, "/v1/consents/c-1").await.status, StatusCode::NOT_FOUND);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

#[tokio::test]
async fn put_whose_body_id_differs_from_the_url_is_400_naming_id() {
    let app = pack_app().await;
    let reply = put_consent(&app, "c-1", &r4_treatment_with_id("c-2", "active")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("id"));
    for id in ["c-1", "c-2"] {
        assert_eq!(get_consent(&app, &format!("/v1/consents/{id}")).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    // Once stored, a later version must not name another consent either.
    assert_eq!(
        put_consent(&app, "c-1", &r4_treatment_with_id("c-1", "active")).await.status,
        StatusCode::CREATED
    );
    let reply = put_consent(&app, "c-1", &r4_treatment_with_id("c-2", "inactive")).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("id"));
    let latest = get_consent(&app, "/v1/consents/c-1").await;
    assert_eq!(
        (latest.body["status"].as_str(), latest.body["meta"]["versionId"].as_str()),
        (Some("active"), Some("1"))
    );
}

#[tokio::test]
async fn caller_supplied_evaluation_time_is_400_naming_context_now() {
    let app = pack_app().await;
    // A consent that ended in 2020: a caller must not be able to move the clock back into it.
    let mut ended = r4_treatment_with_id("c-1", "active");
    ended["provision"]["period"] = json!({"start": "2019-01-01", "end": "2020-12-31"});
    assert_eq!(put_consent(&app, "c-1", &ended).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    let backdated = practitioner_request(
        "dr-weber",
        "read",
        "obs-1",
        json!({"purpose": "TREAT", "now": "2020-06-01T00:00:00Z"}),
    );
    let reply = send(&app, post("/v1/is_authorized", &backdated)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
    let escaped = practitioner_request(
        "dr-weber",
        "read",
        "obs-1",
        json!({"purpose": "TREAT", "now": {"__extn": {"fn": "datetime", "arg": "2020-06-01"}}}),
    );
    let reply = send(&app, post("/v1/is_authorized", &escaped)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));

    let batch = json!({"requests": [weber_reads("obs-1"), backdated]});
    let reply = send(&app, post("/v1/is_authorized/batch", &batch)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("requests[1].context.now"));

    let authzen = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"},
        "context": {"purpose": "TREAT", "now": "2020-06-01T00:00:00Z"},
    });
    let reply = send(&app, post("/access/v1/evaluation", &authzen)).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some("context.now"));
    let answers = evaluations(&app, &json!({"evaluations": [authzen]})).await;
    assert_eq!(decisions(&answers), [false]);
    assert_error_body(&answers[0]["context"]["error"], "invalid_request", Some("evaluations[0].context.now"));
    assert_eq!(answers[0]["context"]["error"]["status"], 400);

    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
}

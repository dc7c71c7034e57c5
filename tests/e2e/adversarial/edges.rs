//! Inputs at a consent's edges (findings 10, 13, 14): periods outside years
//! 0001 to 9999, consent ids and absolute references, and a consent stored
//! under older rules that can no longer be evaluated.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, README_CONSENT, Server, ali_breaks_the_glass, cedar_request, decide, put_consent, repo_root,
    run_to_exit, weber_reads,
};

fn policies() -> std::path::PathBuf {
    repo_root().join("policies")
}

/// The README's consent (St. Mary's may access p-100's records for treatment)
/// as JSON, without its `id`, so that it may be stored under any id.
fn readme_consent() -> Value {
    let mut consent: Value = serde_json::from_str(README_CONSENT).unwrap();
    consent.as_object_mut().unwrap().remove("id");
    consent
}

/// GETs `path` with the admin token.
fn admin_get(server: &Server, path: &str) -> (u16, Value) {
    server.send("GET", path, None, Some(ADMIN_TOKEN))
}

/// Asserts an error answer with `status` naming `field`.
fn assert_refused(answer: &(u16, Value), status: u16, field: &str) {
    let (code, body) = answer;
    assert_eq!(*code, status, "{body}");
    assert_eq!(body["field"], field, "{body}");
}

/// Sends `body` with the admin token; returns status, `Location` and the JSON answer.
fn send_consent(server: &Server, method: &str, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.url))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .unwrap();
    let response = agent.run(request).unwrap();
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
    let text = response.into_body().read_to_string().unwrap();
    (status, location, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Writes a consent version straight into a stopped server's SQLite store,
/// as a version stored before today's rules would sit there.
fn store_directly(store: &Path, id: &str, version: i64, body: &Value) {
    use sqlx::Connection;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", store.join("consents.sqlite3").display());
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO consent_versions (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) \
             VALUES (?1, ?2, 'p-100', 'active', 'R4', ?3, 0)",
        )
        .bind(id)
        .bind(version)
        .bind(body.to_string())
        .execute(&mut db)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO consent_heads (id, version, patient) VALUES (?1, ?2, 'p-100') \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        )
        .bind(id)
        .bind(version)
        .execute(&mut db)
        .await
        .unwrap();
        db.close().await.unwrap();
    });
}

/// A server over `store`, a directory that outlives it.
fn server_over(store: &Path, extra: &[&str]) -> Server {
    Server::start_with(&policies(), store.to_str().unwrap(), ADMIN_TOKEN, extra)
}

#[test]
fn finding_10_a_period_outside_years_0001_to_9999_in_utc_is_refused_naming_the_field() {
    let server = Server::start(&policies(), &[]);
    let mut early = readme_consent();
    early["provision"]["period"] = json!({"start": "0001-01-01T00:00:00+14:00"});
    assert_refused(&put_consent(&server, "c-early", &early), 422, "provision.period.start");
    let mut late = readme_consent();
    late["provision"]["period"] = json!({"start": "2026-01-01", "end": "9999-12-31T23:00:00-01:00"});
    assert_refused(&put_consent(&server, "c-late", &late), 422, "provision.period.end");
    // Nothing was stored, so the patient is decided as before.
    assert_eq!(decide(&server, &ali_breaks_the_glass("obs-1")), ("Allow".to_owned(), "allow".to_owned()));
    assert_eq!(decide(&server, &weber_reads("obs-1")).1, "not_permitted");
}

#[test]
fn finding_10_a_stored_consent_that_cannot_be_evaluated_does_not_block_break_glass() {
    let store = tempfile::tempdir().unwrap();
    let server = server_over(store.path(), &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent()).0, 201);
    assert_eq!(decide(&server, &weber_reads("obs-1")), ("Allow".to_owned(), "allow".to_owned()));
    server.terminate();
    // Accepted before the time bounds: a deny whose period starts in year 0000 in UTC.
    let mut old = readme_consent();
    old["id"] = json!("c-old");
    old["provision"] = json!({"type": "deny", "period": {"start": "0001-01-01T00:00:00+14:00"}});
    store_directly(store.path(), "c-old", 1, &old);

    let server = server_over(store.path(), &[]);
    let (status, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["decision"].as_str(), answer["outcome"].as_str()),
        (Some("Allow"), Some("allow")),
        "{answer}"
    );
    assert_eq!(answer["diagnostics"]["reason"], json!(["break-glass"]), "{answer}");
    let errors = answer["diagnostics"]["errors"].to_string();
    assert!(errors.contains("consent `c-old` version 1 of patient `p-100` cannot be evaluated"), "{answer}");
    // The patient's own access does not depend on consents either.
    let own = cedar_request(
        "Patient::\"p-100\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "PATRQT"}),
    );
    assert_eq!(decide(&server, &own).0, "Allow");
    // Dr. Weber's access rests on a consent: the one that cannot be evaluated might deny it.
    let (status, answer) = server.post("/v1/is_authorized", &weber_reads("obs-1"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["decision"].as_str(), answer["outcome"].as_str()),
        (Some("Deny"), Some("failed_closed")),
        "{answer}"
    );
    assert!(answer["summary"].as_str().unwrap().contains("consent `c-old` version 1"), "{answer}");
    // Withdrawing it restores consent-based decisions.
    let mut withdrawn = old.clone();
    withdrawn["status"] = json!("inactive");
    withdrawn["provision"] = readme_consent()["provision"].clone();
    assert_eq!(put_consent(&server, "c-old", &withdrawn).0, 200);
    assert_eq!(decide(&server, &weber_reads("obs-1")), ("Allow".to_owned(), "allow".to_owned()));
}

#[test]
fn finding_13_consent_ids_outside_fhirs_id_rule_are_refused_naming_id() {
    let server = Server::start(&policies(), &[]);
    let long = "x".repeat(8000);
    for id in ["c%00x", "c%0D%0ALocation:%20evil", "..%2F..%2Fetc%2Fpasswd", "c%201", "c_1", long.as_str()] {
        let (status, location, answer) =
            send_consent(&server, "PUT", &format!("/v1/consents/{id}"), &readme_consent());
        assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "{id}: {answer}");
        assert_eq!(location, None);
        let (status, answer) = admin_get(&server, &format!("/v1/consents/{id}"));
        assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "GET {id}: {answer}");
    }
    for id in ["../../etc/passwd", "c\r\nx", "c\u{0}x"] {
        let mut body = readme_consent();
        body["id"] = json!(id);
        let (status, _, answer) = send_consent(&server, "POST", "/v1/consents", &body);
        assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "POST {id:?}: {answer}");
        let (status, _, answer) = send_consent(&server, "PUT", "/v1/consents/c-1", &body);
        assert_eq!((status, answer["field"].as_str()), (400, Some("id")), "PUT body {id:?}: {answer}");
    }
    let (status, answer) = admin_get(&server, "/v1/patients/p-100/consents");
    assert_eq!(
        (status, answer["consents"].as_array().map(Vec::len)),
        (200, Some(0)),
        "nothing stored: {answer}"
    );
}

#[test]
fn finding_13_location_is_always_present_and_well_formed() {
    let store = tempfile::tempdir().unwrap();
    let server = server_over(store.path(), &[]);
    let (status, location, answer) = send_consent(&server, "PUT", "/v1/consents/C-1.a", &readme_consent());
    assert_eq!((status, location.as_deref()), (201, Some("/v1/consents/C-1.a?version=1")), "{answer}");
    let (status, location, answer) = send_consent(&server, "POST", "/v1/consents", &readme_consent());
    let id = answer["id"].as_str().unwrap();
    assert_eq!((status, location), (201, Some(format!("/v1/consents/{id}?version=1"))), "{answer}");
    server.terminate();
    // An id stored before the rule still names its consent: it can be read and withdrawn,
    // and its `Location` is percent-encoded.
    let mut legacy = readme_consent();
    legacy["id"] = json!("old id/1");
    store_directly(store.path(), "old id/1", 1, &legacy);
    let server = server_over(store.path(), &[]);
    let (status, answer) = admin_get(&server, "/v1/consents/old%20id%2F1");
    assert_eq!((status, answer["id"].as_str()), (200, Some("old id/1")), "{answer}");
    legacy["status"] = json!("inactive");
    let (status, location, answer) = send_consent(&server, "PUT", "/v1/consents/old%20id%2F1", &legacy);
    assert_eq!((status, location.as_deref()), (200, Some("/v1/consents/old%20id%2F1?version=2")), "{answer}");
}

#[test]
fn finding_14_absolute_references_bind_only_under_this_servers_fhir_base() {
    let elsewhere = |consent: &mut Value| consent["patient"] = json!({"reference": "http://x/Patient/p-100"});
    // Without a configured base, only relative references bind.
    let server = Server::start(&policies(), &[]);
    let mut consent = readme_consent();
    elsewhere(&mut consent);
    assert_refused(&put_consent(&server, "c-x", &consent), 422, "patient.reference");
    drop(server);

    let base = "https://fhir.example/r4";
    let server = Server::start(&policies(), &["--fhir-base", base]);
    assert_refused(&put_consent(&server, "c-x", &consent), 422, "patient.reference");
    let mut actor = readme_consent();
    actor["provision"]["actor"][0]["reference"]["reference"] = json!("http://x/Organization/st-mary");
    assert_refused(&put_consent(&server, "c-x", &actor), 422, "provision.actor[0].reference");
    assert_eq!(decide(&server, &weber_reads("obs-1")).1, "not_permitted", "nothing was stored");
    // Under this server's base, the references are this server's entities.
    let mut ours = readme_consent();
    ours["patient"] = json!({"reference": format!("{base}/Patient/p-100")});
    ours["provision"]["actor"][0]["reference"]["reference"] = json!(format!("{base}/Organization/st-mary"));
    assert_eq!(put_consent(&server, "c-ours", &ours).0, 201);
    assert_eq!(decide(&server, &weber_reads("obs-1")), ("Allow".to_owned(), "allow".to_owned()));
    drop(server);
    // A base that is no URL is refused at start-up, like any other bad setting.
    let policies = policies();
    let args = [
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--policies",
        policies.to_str().unwrap(),
        "--fhir-base",
        "fhir.example/r4",
    ];
    let (code, stderr) = run_to_exit(&args, &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("is not a FHIR base URL"), "{stderr}");
}

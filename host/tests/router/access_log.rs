//! The patient's access log and the AuditEvent export, over a real decision
//! log in a temporary directory: filtering by patient and time, and who may
//! read which patient's log.

use std::time::{Duration, Instant};

use consentry::audit::writer::{Backpressure, Durability};
use consentry::audit::{Anchor, AuditOptions, AuditTarget};
use consentry::auth::{AuthConfig, DecisionAccess, Role, TokenConfig, digest_hex};

use super::*;

/// Tokens: an auditor, a consent writer, patient p-100, and rp-anna, who
/// represents p-100 in the bundled entities.
fn auth() -> Auth {
    let token = |name: &str, role: Role, principal: Option<&str>| TokenConfig {
        name: name.to_owned(),
        sha256: digest_hex(&format!("t-{name}")),
        roles: vec![role],
        principal: principal.map(str::to_owned),
    };
    let tokens = vec![
        token("auditor", Role::Auditor, None),
        token("writer", Role::ConsentWriter, None),
        token("p-100", Role::Patient, Some(r#"Patient::"p-100""#)),
        token("rp-anna", Role::Patient, Some(r#"RelatedPerson::"rp-anna""#)),
    ];
    Auth::new(&AuthConfig { decisions: Some(DecisionAccess::Open), tokens }, None).unwrap()
}

struct Logged {
    app: App,
    audit: TempDir,
}

/// The bundled pack with a decision log, after three decisions: two about
/// p-100 (one allowed, one denied) and one about p-200.
async fn logged_app() -> Logged {
    let loaded = consentry::policy_dir::load(&bundled_policies()).unwrap();
    let (consents, store_dir) = consents_in_tempdir().await;
    let state = AppState::new(
        loaded.bundle,
        loaded.store,
        Settings { max_batch: 10, public_url: None, ..Settings::default() },
        auth(),
        consents,
        Plugins::none(),
    );
    let audit = tempfile::tempdir().unwrap();
    let options = AuditOptions {
        rotate_bytes: 1 << 20,
        retention: consentry::audit::Retention::default(),
        low_water_bytes: 0,
        queue: 100,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    };
    let (log, store) =
        consentry::audit::open(&AuditTarget::Dir(audit.path().to_owned()), &options).await.unwrap().unwrap();
    state.pipeline.start_audit(log, store);
    let app = App { router: router(state, DEFAULT_MAX_BODY), _store: store_dir };
    let ask = |principal: &str, resource: &str, purpose: &str| {
        json!({"principal": principal, "action": "Action::\"read\"", "resource": resource,
               "context": {"purpose": purpose, "justification": "unconscious on arrival"}})
    };
    for body in [
        ask(r#"Practitioner::"dr-ali""#, r#"Record::"obs-1""#, "BTG"),
        ask(r#"Practitioner::"dr-chen""#, r#"Record::"obs-1""#, "TREAT"),
        ask(r#"Practitioner::"dr-ali""#, r#"Record::"obs-2""#, "BTG"),
    ] {
        assert_eq!(send(&app, post("/v1/is_authorized", &body)).await.status, StatusCode::OK);
    }
    // The writer batches, so the last decision may land a batch later.
    wait_until_logged(&app, "p-100", 2).await;
    wait_until_logged(&app, "p-200", 1).await;
    Logged { app, audit }
}

fn as_caller(request: Request<Body>, name: &str) -> Request<Body> {
    with_token(request, &format!("t-{name}"))
}

/// Waits for the writer (which batches for a few milliseconds) to have
/// written `count` records about `patient`.
async fn wait_until_logged(app: &Router, patient: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = send(app, as_caller(get(&format!("/v1/patients/{patient}/access-log")), "auditor")).await;
        if reply.body["entries"].as_array().is_some_and(|e| e.len() >= count) {
            return;
        }
        assert!(Instant::now() < deadline, "the log never held {count} records: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_access_log_lists_only_that_patients_decisions() {
    let logged = logged_app().await;
    let reply = send(&logged.app, as_caller(get("/v1/patients/p-100/access-log"), "auditor")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let entries = reply.body["entries"].as_array().unwrap();
    let who: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (e["who"].as_str().unwrap(), e["purpose"].as_str().unwrap(), e["decision"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        who,
        [(r#"Practitioner::"dr-ali""#, "BTG", "Allow"), (r#"Practitioner::"dr-chen""#, "TREAT", "Deny")]
    );
    assert_eq!(reply.body["more"], false);
    let other = send(&logged.app, as_caller(get("/v1/patients/p-200/access-log"), "auditor")).await;
    let entries = other.body["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["resource"], r#"Record::"obs-2""#);
}

#[tokio::test]
async fn the_access_log_filters_by_time_and_limits_its_size() {
    let logged = logged_app().await;
    let read = |query: &str| as_caller(get(&format!("/v1/patients/p-100/access-log?{query}")), "auditor");
    let future = send(&logged.app, read("from=2999")).await;
    assert_eq!(future.body["entries"], json!([]), "{}", future.text);
    let past = send(&logged.app, read("from=2000-01&to=2999-12-31T00:00:00Z")).await;
    assert_eq!(past.body["entries"].as_array().unwrap().len(), 2, "{}", past.text);
    let first = send(&logged.app, read("limit=1")).await;
    assert_eq!(first.body["entries"].as_array().unwrap().len(), 1);
    assert_eq!(first.body["more"], true);
    for (query, field) in
        [("from=yesterday", "from"), ("to=2026-13", "to"), ("limit=0", "limit"), ("limit=5000", "limit")]
    {
        let reply = send(&logged.app, read(query)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    let unknown = send(&logged.app, read("patient=p-200")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    assert!(unknown.text.contains("patient"), "{}", unknown.text);
}

#[tokio::test]
async fn a_patient_reads_only_their_own_access_log() {
    let logged = logged_app().await;
    let own = send(&logged.app, as_caller(get("/v1/patients/p-100/access-log"), "p-100")).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.text);
    assert!(own.body["entries"].as_array().unwrap().len() >= 2);
    let other = send(&logged.app, as_caller(get("/v1/patients/p-200/access-log"), "p-100")).await;
    assert_error(&other, StatusCode::FORBIDDEN, "forbidden", None);
    // Reading the log is itself a read of the patient's data, and is logged.
    wait_until_logged(&logged.app, "p-100", 3).await;
    let log = send(&logged.app, as_caller(get("/v1/patients/p-100/access-log"), "auditor")).await;
    let readers: Vec<&str> =
        log.body["entries"].as_array().unwrap().iter().map(|e| e["who"].as_str().unwrap()).collect();
    assert!(readers.contains(&r#"Patient::"p-100""#), "{readers:?}");
}

#[tokio::test]
async fn a_representative_reads_the_access_log_of_whom_they_represent() {
    let logged = logged_app().await;
    let represented = send(&logged.app, as_caller(get("/v1/patients/p-100/access-log"), "rp-anna")).await;
    assert_eq!(represented.status, StatusCode::OK, "{}", represented.text);
    let stranger = send(&logged.app, as_caller(get("/v1/patients/p-200/access-log"), "rp-anna")).await;
    assert_error(&stranger, StatusCode::FORBIDDEN, "forbidden", None);
}

#[tokio::test]
async fn other_roles_and_no_token_cannot_read_an_access_log() {
    let logged = logged_app().await;
    let writer = send(&logged.app, as_caller(get("/v1/patients/p-100/access-log"), "writer")).await;
    assert_error(&writer, StatusCode::FORBIDDEN, "forbidden", None);
    let nobody = send(&logged.app, get("/v1/patients/p-100/access-log")).await;
    assert_error(&nobody, StatusCode::UNAUTHORIZED, "unauthorized", None);
    let patient_export = send(&logged.app, as_caller(get("/v1/audit/events?patient=p-100"), "p-100")).await;
    assert_error(&patient_export, StatusCode::FORBIDDEN, "forbidden", None);
}

#[tokio::test]
async fn the_audit_event_export_is_a_fhir_bundle_of_that_patients_events() {
    let logged = logged_app().await;
    let reply = send(&logged.app, as_caller(get("/v1/audit/events?patient=Patient/p-100"), "auditor")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["resourceType"], "Bundle");
    assert_eq!(reply.body["type"], "searchset");
    assert_eq!(reply.body["total"], 2);
    let event = &reply.body["entry"][0]["resource"];
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(event["type"]["code"], "110113");
    assert_eq!(event["subtype"][0]["code"], "AuthZ-Consent");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["agent"][0]["who"]["reference"], "Practitioner/dr-ali");
    assert_eq!(event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"], "BTG");
    assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p-100");
    assert_eq!(reply.body["entry"][1]["resource"]["outcome"], "8");
    let missing = send(&logged.app, as_caller(get("/v1/audit/events"), "auditor")).await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "invalid_request", Some("patient"));
}

#[tokio::test]
async fn the_head_is_the_newest_record_and_its_anchor_verifies_the_log() {
    let logged = logged_app().await;
    let reply = send(&logged.app, as_caller(get("/v1/audit/head"), "auditor")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["records"], 3);
    let anchor: Anchor = reply.body["anchor"].as_str().unwrap().parse().unwrap();
    assert_eq!(anchor.seq, 2);
    let target = AuditTarget::Dir(logged.audit.path().to_owned());
    let verified = consentry::audit::verify(&target, vec![anchor.clone()]).await.unwrap();
    assert_eq!(verified.head, Some(anchor));

    let patient = send(&logged.app, as_caller(get("/v1/audit/head"), "p-100")).await;
    assert_error(&patient, StatusCode::FORBIDDEN, "forbidden", None);
}

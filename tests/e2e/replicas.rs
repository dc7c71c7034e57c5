//! Two sidecar replicas sharing one PostgreSQL consent store: a consent
//! written through one governs the other's decisions, and a withdrawal
//! through the other reaches the first. Runs when
//! `CONSENTRY_TEST_POSTGRES_URL` names a database, each run in a fresh
//! schema that is dropped afterwards; otherwise it says it was skipped.

use std::time::Duration;

use crate::postgres_schema::TestSchema;
use crate::support::{
    ADMIN_TOKEN, Server, ali_breaks_the_glass, decide, poll_until, put_consent, readme_consent, repo_root,
    weber_reads,
};

/// How long a change may take to reach the other replica. Generous: only a
/// change that never arrives fails the test, never a slow one.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn a_consent_written_on_one_replica_governs_the_other_and_so_does_its_withdrawal() {
    let Some(schema) = TestSchema::create(
        "replicas::a_consent_written_on_one_replica_governs_the_other_and_so_does_its_withdrawal",
    ) else {
        return;
    };
    let policies = repo_root().join("policies");
    let store = schema.url();
    // Declared after the schema, so both servers are gone before it is dropped.
    let a = Server::start_with(&policies, &store, ADMIN_TOKEN, &[]);
    let b = Server::start_with(&policies, &store, ADMIN_TOKEN, &[]);
    let request = weber_reads("obs-1");
    let not_permitted = ("Deny".to_owned(), "not_permitted".to_owned());
    // Both replicas have decided (and cached) "no consent" before the write.
    assert_eq!(decide(&a, &request), not_permitted);
    assert_eq!(decide(&b, &request), not_permitted);

    let (status, stored) = put_consent(&a, "c-100", &readme_consent("active"));
    assert_eq!(status, 201, "{stored}");
    let allowed = poll_until(&b, &request, "Allow", PROPAGATION_TIMEOUT);
    assert_eq!(allowed["diagnostics"]["reason"], serde_json::json!(["consent/c-100/v1/root"]));
    let (status, seen) = b.send("GET", "/v1/consents/c-100", None, Some(ADMIN_TOKEN));
    assert_eq!((status, seen["meta"]["versionId"].as_str()), (200, Some("1")), "{seen}");

    let (status, stored) = put_consent(&b, "c-100", &readme_consent("inactive"));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], 2);
    // The replica that took the withdrawal obeys it at once.
    assert_eq!(decide(&b, &request), not_permitted);
    let denied = poll_until(&a, &request, "Deny", PROPAGATION_TIMEOUT);
    assert_eq!(denied["outcome"], "not_permitted", "{denied}");
    let (status, seen) = a.send("GET", "/v1/consents/c-100", None, Some(ADMIN_TOKEN));
    assert_eq!((status, seen["status"].as_str()), (200, Some("inactive")), "{seen}");
}

#[test]
fn a_store_that_fails_denies_instead_of_guessing() {
    let Some(schema) = TestSchema::create("replicas::a_store_that_fails_denies_instead_of_guessing") else {
        return;
    };
    let policies = repo_root().join("policies");
    let server = Server::start_with(&policies, &schema.url(), ADMIN_TOKEN, &[]);
    let emergency = ali_breaks_the_glass("obs-3");
    assert_eq!(decide(&server, &emergency), ("Allow".to_owned(), "allow".to_owned()));
    // The consent tables vanish under the running sidecar (an operator's
    // mistake, a broken failover); p-100's consents were never loaded.
    let tables = format!("DROP TABLE {0}.consent_heads, {0}.consent_versions CASCADE", schema.name());
    schema.run(&tables).unwrap_or_else(|e| panic!("{tables}: {e}"));

    let (status, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["decision"].as_str(), answer["outcome"].as_str()),
        (Some("Deny"), Some("failed_closed"))
    );
    let summary = answer["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("consent store"), "the Deny says why: {answer}");

    let (status, refused) = put_consent(&server, "c-100", &readme_consent("active"));
    assert_eq!((status, refused["error"].as_str()), (503, Some("store_unavailable")), "{refused}");
    // The answer names what failed by a code; the database's own words,
    // which describe its tables, stay in the server's log.
    assert_eq!(refused["cause"], "store_statement_failed", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(!message.contains("consent_") && !message.contains("relation"), "{refused}");

    // A search that would need those consents lists nothing, and says why by code.
    let search = serde_json::json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record"},
        "context": {"purpose": "TREAT"}
    });
    let (status, refused) = server.post("/access/v1/search/resource", &search);
    assert_eq!((status, refused["error"].as_str()), (503, Some("search_unavailable")), "{refused}");
    assert_eq!(refused["cause"], "store_statement_failed", "{refused}");
    assert!(!refused["message"].as_str().unwrap_or_default().contains("relation"), "{refused}");
}

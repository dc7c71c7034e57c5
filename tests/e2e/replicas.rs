//! Two sidecar replicas sharing one PostgreSQL consent store: a consent
//! written through one governs the other's decisions, and a withdrawal
//! through the other reaches the first. Runs when
//! `CONSENTRY_TEST_POSTGRES_URL` names a database, each run in a fresh
//! schema that is dropped afterwards; otherwise it says it was skipped.

use std::io::Write;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use crate::support::{
    ADMIN_TOKEN, Server, ali_breaks_the_glass, decide, poll_until, put_consent, readme_consent, repo_root,
    weber_reads,
};

/// The variable naming the PostgreSQL database the tests may use.
const POSTGRES_URL_VAR: &str = "CONSENTRY_TEST_POSTGRES_URL";

/// How long a change may take to reach the other replica. Generous: only a
/// change that never arrives fails the test, never a slow one.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A schema of its own in the test database, dropped with everything in it
/// when the test ends, whether it passed or not.
struct Schema {
    base: String,
    name: String,
}

impl Schema {
    /// Creates a schema with a name no other run uses, or `None` (after
    /// saying so) when no database is configured.
    fn create(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            eprintln!("SKIPPED: {test} needs PostgreSQL; set {POSTGRES_URL_VAR}");
            #[expect(
                clippy::explicit_write,
                reason = "the harness captures `eprintln!` of a passing test, and a skip must be seen"
            )]
            writeln!(std::io::stderr(), "SKIPPED: {test} needs PostgreSQL; set {POSTGRES_URL_VAR}").unwrap();
            return None;
        };
        let name = format!("consentry_e2e_{}", uuid::Uuid::now_v7().simple());
        run(&base, &format!("CREATE SCHEMA {name}")).unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        Some(Self { base, name })
    }

    /// The store location that keeps a replica's tables in this schema.
    fn store_url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.base, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Err(error) = run(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)) {
            eprintln!("could not drop test schema {}: {error}", self.name);
        }
    }
}

/// Runs one statement on a connection of its own.
fn run(url: &str, sql: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut connection = PgConnection::connect(url).await?;
        connection.execute(sql).await?;
        connection.close().await
    })?;
    Ok(())
}

#[test]
fn a_consent_written_on_one_replica_governs_the_other_and_so_does_its_withdrawal() {
    let Some(schema) = Schema::create(
        "replicas::a_consent_written_on_one_replica_governs_the_other_and_so_does_its_withdrawal",
    ) else {
        return;
    };
    let policies = repo_root().join("policies");
    let store = schema.store_url();
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
fn a_consent_store_that_fails_denies_instead_of_guessing() {
    let Some(schema) = Schema::create("replicas::a_consent_store_that_fails_denies_instead_of_guessing")
    else {
        return;
    };
    let policies = repo_root().join("policies");
    let server = Server::start_with(&policies, &schema.store_url(), ADMIN_TOKEN, &[]);
    let emergency = ali_breaks_the_glass("obs-3");
    assert_eq!(decide(&server, &emergency), ("Allow".to_owned(), "allow".to_owned()));
    // The consent tables vanish under the running sidecar (an operator's
    // mistake, a broken failover); p-100's consents were never loaded.
    let tables = format!("DROP TABLE {0}.consent_heads, {0}.consent_versions CASCADE", schema.name);
    run(&schema.base, &tables).unwrap_or_else(|e| panic!("{tables}: {e}"));

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
}

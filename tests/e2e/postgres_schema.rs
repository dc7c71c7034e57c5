//! A PostgreSQL schema of its own for one test, in the database that
//! `CONSENTRY_TEST_POSTGRES_URL` names, so that tests run in parallel
//! without seeing each other's tables. Shared by the end-to-end tests and
//! the host's integration tests (included by path), so every suite skips
//! the same way and cleans up the same way.

use std::io::Write;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

/// The variable naming the PostgreSQL database the tests may use.
pub const POSTGRES_URL_VAR: &str = "CONSENTRY_TEST_POSTGRES_URL";

/// A schema dropped with everything in it when the test ends, whether it
/// passed or not.
pub struct TestSchema {
    base: String,
    name: String,
}

impl TestSchema {
    /// Creates a schema with a name no other run uses, or returns `None`
    /// after saying on stderr that `test` was skipped, when no database is
    /// configured.
    pub fn create(test: &str) -> Option<Self> {
        let Ok(base) = std::env::var(POSTGRES_URL_VAR) else {
            #[expect(
                clippy::explicit_write,
                reason = "the harness captures `eprintln!` of a passing test, and a skip must be seen"
            )]
            writeln!(std::io::stderr(), "SKIPPED: {test} needs PostgreSQL; set {POSTGRES_URL_VAR}").unwrap();
            return None;
        };
        let name = format!("consentry_test_{}", uuid::Uuid::now_v7().simple());
        execute(&base, &format!("CREATE SCHEMA {name}"))
            .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        Some(Self { base, name })
    }

    /// The schema's name: unique, lowercase, a valid identifier.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database URL with `search_path` set to this schema, and the
    /// schema's name as the application name, so that a test can find its
    /// own connections in `pg_stat_activity`.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{1}&application_name={1}", self.base, self.name)
    }

    /// Runs one statement in this schema; returns the rows it affected.
    pub fn run(&self, sql: &str) -> Result<u64, String> {
        execute(&self.url(), sql)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if let Err(error) = execute(&self.base, &format!("DROP SCHEMA {} CASCADE", self.name)) {
            eprintln!("could not drop test schema {}: {error}", self.name);
        }
    }
}

/// Runs one statement on a connection of its own, on a runtime and a
/// thread of their own: async tests may call it, and so may `drop` while a
/// panic unwinds the test's runtime.
fn execute(url: &str, sql: &str) -> Result<u64, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut connection = PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            let done = connection.execute(sql.as_str()).await.map_err(|e| e.to_string())?;
            connection.close().await.map_err(|e| e.to_string())?;
            Ok(done.rows_affected())
        })
    })
    .join()
    .unwrap_or_else(|_| Err("the statement's thread panicked".to_owned()))
}

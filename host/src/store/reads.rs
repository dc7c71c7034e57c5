//! Reading consents back, the same on SQLite and PostgreSQL.
//!
//! The backends differ in how they write (SQLite serialises writers in the
//! process, PostgreSQL notifies other replicas), but a read is the same SQL
//! on both: sqlx accepts PostgreSQL's `$N` parameters for SQLite too. So the
//! reads are written once, over any sqlx database that can decode a [`Row`],
//! and a query changed for one backend cannot drift from the other's.

use sqlx::{Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::{ConsentRecord, StoreError};

/// A `SELECT` of the columns of [`Row`] from `consent_versions v`, followed
/// by the rest of the query.
macro_rules! select_rows {
    ($($rest:literal),+) => {
        concat!(
            "SELECT v.id, v.version, v.patient, v.status, v.fhir_version, v.body, v.recorded_at_unix_ms ",
            $($rest),+
        )
    };
}

/// A consent version row: `id, version, patient, status, fhir_version,
/// body, recorded_at_unix_ms`.
type Row = (String, i64, String, String, String, String, i64);

/// The read queries over one backend's pool.
pub(super) struct Reads<'a, DB: Database>(pub(super) &'a Pool<DB>);

impl<DB> Reads<'_, DB>
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> Row: FromRow<'r, DB::Row>,
{
    /// Version `version` of consent `id`, or its newest version.
    pub(super) async fn get(
        &self,
        id: &str,
        version: Option<i64>,
    ) -> Result<Option<ConsentRecord>, StoreError> {
        let row: Option<Row> =
            match version {
                None => sqlx::query_as(select_rows!(
                    "FROM consent_heads h JOIN consent_versions v ON v.id = h.id AND v.version = h.version ",
                    "WHERE h.id = $1"
                ))
                .bind(id)
                .fetch_optional(self.0)
                .await?,
                Some(version) => {
                    sqlx::query_as(select_rows!("FROM consent_versions v WHERE v.id = $1 AND v.version = $2"))
                        .bind(id)
                        .bind(version)
                        .fetch_optional(self.0)
                        .await?
                }
            };
        row.map(record).transpose()
    }

    /// The newest version of each consent whose newest version belongs to
    /// `patient`, ordered by id.
    pub(super) async fn latest_for_patient(&self, patient: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(select_rows!(
            "FROM consent_heads h JOIN consent_versions v ON v.id = h.id AND v.version = h.version ",
            "WHERE h.patient = $1 ORDER BY h.id"
        ))
        .bind(patient)
        .fetch_all(self.0)
        .await?;
        records(rows)
    }

    /// Every version of consent `id`, oldest first.
    pub(super) async fn history(&self, id: &str) -> Result<Vec<ConsentRecord>, StoreError> {
        let rows: Vec<Row> =
            sqlx::query_as(select_rows!("FROM consent_versions v WHERE v.id = $1 ORDER BY v.version"))
                .bind(id)
                .fetch_all(self.0)
                .await?;
        records(rows)
    }

    /// Whether the database answers.
    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.0).await?;
        Ok(())
    }
}

/// Reads a stored row back as a record.
fn record(row: Row) -> Result<ConsentRecord, StoreError> {
    let (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) = row;
    let Ok(version_number) = u64::try_from(version) else {
        return Err(StoreError::Corrupt { id, reason: format!("version {version} is not positive") });
    };
    let body = match serde_json::from_str(&body) {
        Ok(body) => body,
        Err(error) => {
            return Err(StoreError::Corrupt {
                id,
                reason: format!("the body of version {version} is not JSON: {error}"),
            });
        }
    };
    Ok(ConsentRecord {
        id,
        version: version_number,
        patient,
        status,
        fhir_version,
        body,
        recorded_at_unix_ms,
    })
}

/// Reads stored rows back as records.
fn records(rows: Vec<Row>) -> Result<Vec<ConsentRecord>, StoreError> {
    rows.into_iter().map(record).collect()
}

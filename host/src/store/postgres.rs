//! The PostgreSQL backend: one database shared by several sidecar replicas.
//!
//! Replicas write concurrently, so the next version of a consent is claimed
//! by one upsert of its head row: PostgreSQL's row lock makes a concurrent
//! writer of the same consent wait and then take the version after, and the
//! `(id, version)` primary key refuses a duplicate whatever happens. Policy
//! versions and entity revisions are claimed the same way, from one row of
//! `store_counters` each.
//!
//! Each write also calls `pg_notify` inside its transaction (with the
//! patient, the policy version or the entity revision), so the notification
//! goes out exactly when the write commits. A dedicated connection `LISTEN`s and forwards every
//! notification to this store's subscribers. Notifications sent while that
//! connection is down are lost for good, so after reconnecting the store
//! tells its subscribers that everything may have changed.

use std::collections::HashSet;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::{
    ConsentRecord, INSERT_CHUNK, NewVersion, StoreChange, StoreError, migrator, new_record, now_unix_ms,
};

/// The PostgreSQL migrations, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "consents", include_str!("../../migrations/postgres/0001_consents.sql")),
    (2, "policies and entities", include_str!("../../migrations/postgres/0002_policies_and_entities.sql")),
    (3, "entity parents", include_str!("../../migrations/postgres/0003_entity_parents.sql")),
];

/// The notification channel of consents; its payload is a patient id.
const CHANNEL: &str = "consentry_consents";

/// The notification channel of policies; its payload is the new version.
pub(super) const POLICIES_CHANNEL: &str = "consentry_policies";

/// The notification channel of entities; its payload is the new revision.
pub(super) const ENTITIES_CHANNEL: &str = "consentry_entities";

/// Connections per replica for reads and writes.
const MAX_CONNECTIONS: u32 = 8;

/// How long a query waits for a free connection before the store reports
/// itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The first wait before reconnecting the change feed; it doubles on each
/// failure up to [`MAX_RECONNECT_DELAY`].
const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Parses a `postgres://` URL, without echoing it (it may hold a password).
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse().map_err(|error| StoreError::Location(format!("invalid PostgreSQL URL: {error}")))
}

/// The PostgreSQL consent store.
#[derive(Debug)]
pub(super) struct PgStore {
    pub(super) pool: PgPool,
    description: String,
    /// Stops the change feed when the store is dropped.
    _feed: FeedTask,
}

impl PgStore {
    /// Connects, migrates, and starts forwarding notifications to `changes`.
    pub(super) async fn open(url: &str, changes: broadcast::Sender<StoreChange>) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let description = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default(),
        );
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        migrator(MIGRATIONS).await?.run(&pool).await?;
        // Two connections: one may still be closing after a failure while
        // the next one connects. They never time out, being idle by design.
        let feed_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_lazy_with(options);
        // Listening before `open` returns: no write acknowledged after it
        // can be missed.
        let listener = listen(&feed_pool).await?;
        let feed = FeedTask(tokio::spawn(forward(feed_pool, listener, changes)));
        Ok(Self { pool, description, _feed: feed })
    }

    /// `postgres://USER@HOST:PORT/DB`, without the password.
    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    pub(super) async fn create(&self, id: &str, new: NewVersion) -> Result<ConsentRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO consent_heads (id, version, patient) VALUES ($1, 1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&new.patient)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Conflict { id: id.to_owned() });
        }
        let (record, body) = new_record(id, 1, new, now_unix_ms());
        insert_version(&mut tx, 1, &record, &body).await?;
        notify(&mut tx, &[record.patient.as_str()]).await?;
        tx.commit().await?;
        Ok(record)
    }

    pub(super) async fn supersede(
        &self,
        id: &str,
        new: NewVersion,
    ) -> Result<(ConsentRecord, Option<String>), StoreError> {
        let mut tx = self.pool.begin().await?;
        // One statement claims the next version and locks the head row
        // until commit; a concurrent writer of the same id (on any replica)
        // waits here, then sees this version and takes the next one.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO consent_heads (id, version, patient) VALUES ($1, 1, $2) \
             ON CONFLICT (id) DO UPDATE SET version = consent_heads.version + 1, patient = EXCLUDED.patient \
             RETURNING version",
        )
        .bind(id)
        .bind(&new.patient)
        .fetch_one(&mut *tx)
        .await?;
        let previous = if version > 1 {
            let patient: Option<String> =
                sqlx::query_scalar("SELECT patient FROM consent_versions WHERE id = $1 AND version = $2")
                    .bind(id)
                    .bind(version - 1)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(patient) = patient else {
                return Err(StoreError::Corrupt {
                    id: id.to_owned(),
                    reason: format!("version {} is missing", version - 1),
                });
            };
            Some(patient)
        } else {
            None
        };
        let (record, body) = new_record(id, version, new, now_unix_ms());
        insert_version(&mut tx, version, &record, &body).await?;
        let patients: Vec<&str> =
            std::iter::once(record.patient.as_str()).chain(previous.as_deref()).collect();
        notify(&mut tx, &patients).await?;
        tx.commit().await?;
        Ok((record, previous))
    }

    pub(super) async fn create_many(
        &self,
        items: Vec<(String, NewVersion)>,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let recorded_at = now_unix_ms();
        let stored: Vec<(ConsentRecord, String)> =
            items.into_iter().map(|(id, new)| new_record(&id, 1, new, recorded_at)).collect();
        let mut tx = self.pool.begin().await?;
        for chunk in stored.chunks(INSERT_CHUNK) {
            let mut heads =
                QueryBuilder::<Postgres>::new("INSERT INTO consent_heads (id, version, patient) ");
            heads.push_values(chunk, |mut row, (record, _)| {
                row.push_bind(&record.id).push_bind(1_i64).push_bind(&record.patient);
            });
            heads.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            let inserted: HashSet<String> =
                heads.build_query_scalar::<String>().fetch_all(&mut *tx).await?.into_iter().collect();
            if let Some((existing, _)) = chunk.iter().find(|(record, _)| !inserted.contains(&record.id)) {
                return Err(StoreError::Conflict { id: existing.id.clone() });
            }
            let mut versions = QueryBuilder::<Postgres>::new(
                "INSERT INTO consent_versions \
                 (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) ",
            );
            versions.push_values(chunk, |mut row, (record, body)| {
                row.push_bind(&record.id)
                    .push_bind(1_i64)
                    .push_bind(&record.patient)
                    .push_bind(&record.status)
                    .push_bind(&record.fhir_version)
                    .push_bind(body)
                    .push_bind(record.recorded_at_unix_ms);
            });
            versions.build().execute(&mut *tx).await?;
        }
        let mut seen = HashSet::new();
        let patients: Vec<&str> =
            stored.iter().map(|(record, _)| record.patient.as_str()).filter(|p| seen.insert(*p)).collect();
        notify(&mut tx, &patients).await?;
        tx.commit().await?;
        Ok(stored.into_iter().map(|(record, _)| record).collect())
    }
}

/// Adds version `version` of `record`.
async fn insert_version(
    connection: &mut PgConnection,
    version: i64,
    record: &ConsentRecord,
    body: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO consent_versions (id, version, patient, status, fhir_version, body, recorded_at_unix_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&record.id)
    .bind(version)
    .bind(&record.patient)
    .bind(&record.status)
    .bind(&record.fhir_version)
    .bind(body)
    .bind(record.recorded_at_unix_ms)
    .execute(connection)
    .await?;
    Ok(())
}

/// Queues one notification per patient, sent by PostgreSQL at commit.
async fn notify(connection: &mut PgConnection, patients: &[&str]) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, patient) FROM UNNEST($2::text[]) AS patient")
        .bind(CHANNEL)
        .bind(patients)
        .execute(connection)
        .await?;
    Ok(())
}

/// Queues a notification on `channel` whose payload is `number`, sent by
/// PostgreSQL at commit.
pub(super) async fn notify_number(
    connection: &mut PgConnection,
    channel: &str,
    number: u64,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(number.to_string())
        .execute(connection)
        .await?;
    Ok(())
}

/// A connection of `pool` listening on the three channels. A lost connection ends
/// it (rather than reconnecting inside `try_recv`), so that [`forward`]
/// knows when notifications may have been missed.
async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.listen_all([CHANNEL, POLICIES_CHANNEL, ENTITIES_CHANNEL]).await?;
    Ok(listener)
}

/// What a notification says changed. A number that does not parse (sent by
/// something else than a store) may hide any change.
fn change_of(notification: &PgNotification) -> StoreChange {
    let payload = notification.payload();
    match (notification.channel(), payload.parse::<u64>()) {
        (POLICIES_CHANNEL, Ok(version)) => StoreChange::Policies { version },
        (ENTITIES_CHANNEL, Ok(revision)) => StoreChange::Entities { revision },
        (POLICIES_CHANNEL | ENTITIES_CHANNEL, Err(_)) => {
            tracing::warn!(channel = notification.channel(), payload, "unreadable store notification");
            StoreChange::Everything
        }
        _ => StoreChange::Patient(payload.to_owned()),
    }
}

/// The change feed task, aborted with its store.
#[derive(Debug)]
struct FeedTask(JoinHandle<()>);

impl Drop for FeedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Forwards notifications to `changes` until aborted. When the connection
/// fails it reconnects, backing off, and then sends
/// [`StoreChange::Everything`].
async fn forward(pool: PgPool, mut listener: PgListener, changes: broadcast::Sender<StoreChange>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                // Having no subscriber is not an error.
                let _ = changes.send(change_of(&notification));
                continue;
            }
            Ok(None) => tracing::warn!("consent change feed lost its database connection; reconnecting"),
            Err(error) => tracing::warn!(%error, "consent change feed failed; reconnecting"),
        }
        drop(listener);
        let _ = changes.send(StoreChange::FeedLost);
        let mut delay = MIN_RECONNECT_DELAY;
        listener = loop {
            tokio::time::sleep(delay).await;
            match listen(&pool).await {
                Ok(listener) => break listener,
                Err(error) => {
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                    tracing::warn!(
                        %error,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "consent change feed cannot reconnect"
                    );
                }
            }
        };
        tracing::warn!("consent change feed reconnected; changes made meanwhile may have been missed");
        let _ = changes.send(StoreChange::Everything);
    }
}

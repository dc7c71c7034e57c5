//! Patients' consents as decisions need them: stored durably, compiled into
//! per-patient partitions, cached, and dropped the moment they change.
//!
//! Decisions must not wait for the database, so each patient's compiled
//! partition is cached, including "this patient has no consents". A write
//! drops the patient's entry before it is acknowledged, so a withdrawal
//! governs the very next decision on this replica; other replicas drop
//! theirs when the store's change feed (PostgreSQL `NOTIFY`) tells them.
//!
//! A load that raced with a write must not put stale consents back into the
//! cache: every invalidation moves an epoch forward, and a load only caches
//! its result if the epoch did not move while it read the database.
//!
//! A stored consent that today's rules refuse (it was accepted before they
//! tightened) is set aside rather than failing its patient's partition; see
//! [`consentry_engine::decide_with`] for what decisions then do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use consentry_engine::consent::{Consent, ConsentError, ConsentStatus, FhirBase};
use consentry_engine::{
    ConsentPartition, ConsentVersion, LoadError, PolicyBundle, UnreadableConsent, check_consent,
};
use serde_json::Value;
use thiserror::Error;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::metrics::Cache;
use crate::store::{ConsentRecord, DurableStore, NewVersion, StoreChange, StoreError, StoreLocation};

/// Patients whose partitions stay cached; beyond this the least used are dropped.
const CACHED_PATIENTS: u64 = 100_000;

/// A patient's partition, or why it cannot be used (then decisions about the
/// patient are denied).
pub type PartitionResult = Result<Arc<ConsentPartition>, PartitionError>;

/// Why a patient's consents cannot be used. Cloned into every decision
/// that needs them, and cached with them when they cannot be compiled.
/// A decision's reason carries the store's failure by its code only, since
/// the reason reaches the caller.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartitionError {
    /// The store could not be read; its own words are in the log.
    #[error("the consent store cannot be read (`{}`)", .0.code())]
    Store(Arc<StoreError>),
    /// The consents do not compile under the policies in force.
    #[error("the consents of patient `{patient}` cannot be compiled: {error}")]
    Compile {
        /// The patient.
        patient: String,
        /// What the engine refused.
        error: Arc<LoadError>,
    },
}

impl PartitionError {
    /// A stable code for what failed.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(error) => error.code(),
            Self::Compile { .. } => "consents_uncompilable",
        }
    }
}

/// What the cache keeps per patient: the parsed consents, so that a new
/// policy bundle can recompile them without the database, those that could
/// not be parsed, and the partition.
#[derive(Debug)]
struct Cached {
    consents: Vec<(String, u64, Consent)>,
    unparsed: Vec<UnreadableConsent>,
    partition: PartitionResult,
}

/// The consent store with its partition cache.
#[derive(Debug)]
pub struct Consents {
    store: Arc<DurableStore>,
    /// This server's FHIR base: absolute references bind only under it.
    fhir_base: Option<FhirBase>,
    cache: moka::sync::Cache<String, Arc<Cached>>,
    /// Moves on every invalidation; held while checking it and inserting.
    epoch: Mutex<u64>,
}

/// Why a consent write was refused.
#[derive(Debug, Error)]
pub enum ConsentWriteError {
    /// The body is not a FHIR Consent we can honour.
    #[error(transparent)]
    Fhir(#[from] ConsentError),
    /// The consent compiles into policies the schema refuses.
    #[error("the consent does not fit the policy schema: {0}")]
    Policies(#[from] LoadError),
    /// `id` in the body differs from the id in the URL.
    #[error("`id` in the body is `{body}` but the URL names `{url}`")]
    IdMismatch {
        /// The id in the body.
        body: String,
        /// The id in the URL.
        url: String,
    },
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Consents {
    /// Opens the store (running migrations) and starts following its
    /// changes. Only relative references in consents bind.
    pub async fn open(location: &StoreLocation) -> Result<Arc<Self>, StoreError> {
        Self::open_under(location, None).await
    }

    /// [`Consents::open`] for a server whose FHIR base is `fhir_base`:
    /// absolute references under it bind too.
    pub async fn open_under(
        location: &StoreLocation,
        fhir_base: Option<FhirBase>,
    ) -> Result<Arc<Self>, StoreError> {
        Ok(Self::over(DurableStore::open(location).await?, fhir_base))
    }

    /// [`Consents::open_under`] for a command that only reads the store:
    /// see [`DurableStore::open_for_reading`].
    pub async fn open_for_reading(
        location: &StoreLocation,
        fhir_base: Option<FhirBase>,
    ) -> Result<Arc<Self>, StoreError> {
        Ok(Self::over(DurableStore::open_for_reading(location).await?, fhir_base))
    }

    /// The consents of `store`, following its changes.
    fn over(store: DurableStore, fhir_base: Option<FhirBase>) -> Arc<Self> {
        let store = Arc::new(store);
        let cache = moka::sync::Cache::new(CACHED_PATIENTS);
        let consents = Arc::new(Self { store, fhir_base, cache, epoch: Mutex::new(0) });
        tokio::spawn(follow_changes(Arc::downgrade(&consents), consents.store.subscribe()));
        consents
    }

    /// The underlying store.
    /// The store, shared: the policies and entities live there too.
    pub fn durable(&self) -> Arc<DurableStore> {
        Arc::clone(&self.store)
    }

    /// The store.
    pub fn store(&self) -> &DurableStore {
        &self.store
    }

    /// The partitions of these patients, compiled for `bundle`. A patient
    /// whose consents cannot be read or compiled gets an error, which denies.
    pub async fn partitions(
        &self,
        bundle: &PolicyBundle,
        patients: impl IntoIterator<Item = String>,
    ) -> HashMap<String, PartitionResult> {
        let mut out = HashMap::new();
        for patient in patients {
            if out.contains_key(&patient) {
                continue;
            }
            let partition = self.partition(bundle, &patient).await;
            out.insert(patient, partition);
        }
        out
    }

    async fn partition(&self, bundle: &PolicyBundle, patient: &str) -> PartitionResult {
        let epoch = self.current_epoch();
        let (cached, from_cache) = match self.cache.get(patient) {
            Some(cached) => (cached, true),
            None => {
                let records = match self.store.latest_for_patient(patient).await {
                    Ok(records) => records,
                    Err(error) => {
                        tracing::error!(%error, cause = error.code(), "a patient's consents could not be read");
                        return Err(PartitionError::Store(Arc::new(error)));
                    }
                };
                let (consents, unparsed) = parse_records(records, self.fhir_base.as_ref());
                let partition = compile(bundle, patient, &consents, &unparsed);
                let cached = Arc::new(Cached { consents, unparsed, partition });
                self.insert_unless_changed(patient, epoch, &cached);
                (cached, false)
            }
        };
        let hit = usize::from(from_cache);
        crate::metrics::cache_lookups(Cache::Consents, hit, 1 - hit);
        match &cached.partition {
            Ok(partition) if !partition.compiled_for(bundle) => {
                crate::metrics::cache_lookups(Cache::Partitions, 0, 1);
                let recompiled = Arc::new(Cached {
                    consents: cached.consents.clone(),
                    unparsed: cached.unparsed.clone(),
                    partition: compile(bundle, patient, &cached.consents, &cached.unparsed),
                });
                self.insert_unless_changed(patient, epoch, &recompiled);
                recompiled.partition.clone()
            }
            other => {
                // Compiled just now on a miss, or reused as compiled.
                crate::metrics::cache_lookups(Cache::Partitions, hit, 1 - hit);
                other.clone()
            }
        }
    }

    fn current_epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_unless_changed(&self, patient: &str, epoch: u64, cached: &Arc<Cached>) {
        let guard = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        if *guard == epoch {
            self.cache.insert(patient.to_owned(), Arc::clone(cached));
        }
    }

    /// Drops one patient's partition.
    pub fn invalidate(&self, patient: &str) {
        let mut guard = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        *guard += 1;
        self.cache.invalidate(patient);
    }

    /// Drops every partition, when changes may have been missed. (A new
    /// policy bundle needs no invalidation: each partition is recompiled on
    /// its next use, see [`ConsentPartition::compiled_for`].)
    pub fn invalidate_all(&self) {
        let mut guard = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        *guard += 1;
        self.cache.invalidate_all();
    }

    /// Stores a new consent under a fresh id, after checking it compiles.
    /// An `id` in the body is replaced, but must still be a FHIR id.
    pub async fn create(
        &self,
        bundle: &PolicyBundle,
        body: Value,
    ) -> Result<ConsentRecord, ConsentWriteError> {
        if let Some(body_id) = body.get("id").and_then(Value::as_str) {
            Consent::check_id(body_id)?;
        }
        let id = Uuid::now_v7().to_string();
        let version = prepare(bundle, self.fhir_base.as_ref(), &id, body)?;
        let patient = version.patient.clone();
        let stored = self.store.create(&id, version).await?;
        self.invalidate(&patient);
        Ok(stored)
    }

    /// Stores the next version of consent `id` (the first, if it is new).
    pub async fn supersede(
        &self,
        bundle: &PolicyBundle,
        id: &str,
        body: Value,
    ) -> Result<ConsentRecord, ConsentWriteError> {
        self.check_id(id).await?;
        if let Some(body_id) = body.get("id").and_then(Value::as_str)
            && body_id != id
        {
            return Err(ConsentWriteError::IdMismatch { body: body_id.to_owned(), url: id.to_owned() });
        }
        let version = prepare(bundle, self.fhir_base.as_ref(), id, body)?;
        let patient = version.patient.clone();
        let (stored, previous) = self.store.supersede(id, version).await?;
        self.invalidate(&patient);
        if let Some(previous) = previous {
            self.invalidate(&previous);
        }
        Ok(stored)
    }

    /// A consent id must be a FHIR id; one stored before that rule still
    /// names its consent, so that it can be read and withdrawn.
    pub async fn check_id(&self, id: &str) -> Result<(), ConsentWriteError> {
        match Consent::check_id(id) {
            Ok(()) => Ok(()),
            Err(refused) => match self.store.get(id, None).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) | Err(_) => Err(refused.into()),
            },
        }
    }
}

/// Parses and checks a consent body, and gives it its id.
fn prepare(
    bundle: &PolicyBundle,
    fhir_base: Option<&FhirBase>,
    id: &str,
    mut body: Value,
) -> Result<NewVersion, ConsentWriteError> {
    let consent = Consent::from_json_under(&body, fhir_base)?;
    check_consent(bundle, id, 1, &consent)?;
    if let Some(object) = body.as_object_mut() {
        object.insert("id".to_owned(), Value::String(id.to_owned()));
    }
    Ok(NewVersion {
        patient: consent.patient().to_owned(),
        status: consent.status().code().to_owned(),
        fhir_version: consent.fhir_version().name().to_owned(),
        body,
    })
}

/// Parses stored consents. One that today's rules refuse is set aside when
/// it is active; one that is not active never counts, so it is dropped.
fn parse_records(
    records: Vec<ConsentRecord>,
    fhir_base: Option<&FhirBase>,
) -> (Vec<(String, u64, Consent)>, Vec<UnreadableConsent>) {
    let mut parsed = Vec::with_capacity(records.len());
    let mut unparsed = Vec::new();
    for record in records {
        match Consent::from_json_under(&record.body, fhir_base) {
            Ok(consent) => parsed.push((record.id, record.version, consent)),
            Err(_) if record.status != ConsentStatus::Active.code() => {}
            Err(error) => unparsed.push(UnreadableConsent {
                id: record.id,
                version: record.version,
                reason: format!("it cannot be read: {error}"),
            }),
        }
    }
    (parsed, unparsed)
}

fn compile(
    bundle: &PolicyBundle,
    patient: &str,
    consents: &[(String, u64, Consent)],
    unparsed: &[UnreadableConsent],
) -> PartitionResult {
    let versions: Vec<ConsentVersion<'_>> = consents
        .iter()
        .map(|(id, version, consent)| ConsentVersion { id, version: *version, consent })
        .collect();
    ConsentPartition::build_setting_aside(bundle, patient, &versions, unparsed.to_vec())
        .map(Arc::new)
        .map_err(|error| PartitionError::Compile { patient: patient.to_owned(), error: Arc::new(error) })
}

/// Drops cached partitions as the store reports changes, including changes
/// made by other replicas. Stops when the service is dropped.
async fn follow_changes(
    consents: std::sync::Weak<Consents>,
    mut changes: tokio::sync::broadcast::Receiver<StoreChange>,
) {
    loop {
        let change = changes.recv().await;
        let Some(consents) = consents.upgrade() else { return };
        match change {
            Ok(StoreChange::Patient(patient)) => consents.invalidate(&patient),
            Ok(StoreChange::FeedLost | StoreChange::Everything) | Err(RecvError::Lagged(_)) => {
                consents.invalidate_all()
            }
            Ok(StoreChange::Policies { .. } | StoreChange::Entities { .. }) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

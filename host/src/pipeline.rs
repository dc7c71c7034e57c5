//! The decision pipeline: a request's plugins, its consents, the engine
//! and the decision log, in that order, over the policies and entities in
//! force.
//!
//! The server, `consentry check` and `consentry test` all decide through
//! it, so a decision made by a policy test is made exactly as the server
//! would make it. What only the server has (tokens, batch limits, its
//! public URL) stays in [`crate::state::AppState`].

mod search;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLockReadGuard};

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{
    ConsentPartition, Decision, DecisionOptions, DecisionRequest, PolicyBundle, RequestError,
    check_request_entities, consent_subjects, decide_with,
};
use tracing::Instrument;
use uuid::Uuid;

use crate::audit::ChangeEntry;
use crate::audit::NotDurable;
use crate::audit::disk::DiskSpace;
use crate::audit::query::AuditStore;
use crate::audit::record::DecisionEntry;
use crate::audit::writer::{AuditLog, AuditStatus, Recording};
use crate::consents::{Consents, PartitionResult};
use crate::directory::{Directory, Snapshot};
use crate::plugins::bindings::consentry::plugin::types::Enrichment;
use crate::plugins::config::MayChange;
use crate::plugins::enrichment::{self, StoredFacts};
use crate::plugins::fault::PluginFault;
use crate::plugins::{PluginTrace, Plugins, hooks};

pub use search::{SearchError, SearchRecord, Unavailable};

/// The obligation that marks a break-glass decision, whose record must be
/// durable before it is answered.
const AUDIT_PRIORITY: &str = "audit-priority";

/// The policies, consents, plugins and decision log a decision goes through.
#[derive(Debug)]
pub struct Pipeline {
    /// The policies and entities in force, and every change to them.
    pub directory: Arc<Directory>,
    /// Patients' consents.
    pub consents: Arc<Consents>,
    /// The plugins in force.
    pub plugins: Arc<Plugins>,
    /// How decisions treat erroring forbids and request entities.
    pub decisions: DecisionOptions,
    /// The decision log, once started; without it decisions are not recorded.
    audit: OnceLock<Audit>,
}

/// The decision log: its writer and its read side.
#[derive(Debug)]
struct Audit {
    log: AuditLog,
    store: AuditStore,
}

/// How often a decision is tried with the entities the last try found
/// missing loaded: a request names a few, its slice reaches the rest
/// within two or three loads.
const LOAD_ATTEMPTS: usize = 4;

/// A decision and the id it is answered and recorded under.
#[derive(Debug)]
pub struct Decided {
    /// The decision id: a UUIDv7, so ids sort by time.
    pub id: Uuid,
    /// The decision.
    pub decision: Decision,
    /// What each plugin that ran did, in order, as the decision log records
    /// it (`labeler/enrich: ok`, `guardian/enrich: timeout, denied`); empty
    /// when no plugin ran.
    pub plugins: Vec<String>,
}

/// A decision whose record is queued, before it may be answered.
#[derive(Debug)]
struct Recorded {
    decided: Decided,
    /// The queued record; `None` when the log is off or refused it.
    recording: Option<Recording>,
}

impl Recorded {
    /// The answer, once it may be given. A break-glass decision (one with
    /// the `audit-priority` obligation), or any decision under
    /// `--audit-durability sync`, waits until its record is durable, so that
    /// emergency access stays provable if the process dies right after
    /// answering; if the record cannot be written, it is a Deny that says why.
    async fn answer(self) -> Decided {
        let Self { mut decided, recording } = self;
        if let Some(recording) = recording
            && let Err(not_durable) =
                recording.durable().instrument(tracing::info_span!("audit", step = "durable")).await
        {
            decided.decision = Decision::fail_closed(not_durable.to_string());
        }
        crate::metrics::decision(decided.decision.outcome.name());
        decided
    }
}

/// A decision before it is recorded.
#[derive(Debug)]
struct Evaluated {
    decision: Decision,
    /// The patients whose consents the request concerned.
    patients: Vec<String>,
    /// What the plugins did.
    plugins: PluginTrace,
    /// The policy bundle that decided.
    bundle: Arc<PolicyBundle>,
}

/// A request after its `enrich` plugins: ready for the engine, denied by a
/// plugin, or refused as the caller's fault before any plugin ran.
type Prepared = Result<Result<DecisionRequest, Decision>, RequestError>;

/// The consent partitions loaded for some requests, under one bundle.
#[derive(Debug)]
struct LoadedPartitions {
    bundle: Arc<PolicyBundle>,
    by_patient: HashMap<String, PartitionResult>,
}

impl Pipeline {
    /// A pipeline deciding against `bundle` and `store` as they are given,
    /// over `consents`, without a decision log: what `consentry check` and
    /// `consentry test` hold.
    pub fn one_off(
        bundle: impl Into<Arc<PolicyBundle>>,
        store: consentry_engine::EntityStore,
        consents: Arc<Consents>,
        plugins: Plugins,
        decisions: DecisionOptions,
    ) -> Self {
        let directory = Arc::new(Directory::new(bundle, store, consents.durable(), None));
        Self::new(directory, consents, Arc::new(plugins), decisions)
    }

    /// A pipeline over these parts, with no decision log yet.
    pub fn new(
        directory: Arc<Directory>,
        consents: Arc<Consents>,
        plugins: Arc<Plugins>,
        decisions: DecisionOptions,
    ) -> Self {
        Self { directory, consents, plugins, decisions, audit: OnceLock::new() }
    }

    /// Read access to the bundle and store decisions use.
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.directory.read()
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Arc<PolicyBundle> {
        Arc::clone(&self.read().bundle)
    }

    /// Decides one request.
    pub async fn decide(&self, request: &DecisionRequest) -> Result<Decided, RequestError> {
        self.decide_all(std::slice::from_ref(request)).await.pop().unwrap_or_else(|| {
            Ok(Decided {
                id: Uuid::now_v7(),
                decision: Decision::fail_closed("no decision was made for the request"),
                plugins: Vec::new(),
            })
        })
    }

    /// Records every decision from now on in `log`, which `store` reads
    /// back. Only the first log given is used: the chain must not fork.
    pub fn start_audit(&self, log: AuditLog, store: AuditStore) {
        let _ = self.audit.set(Audit { log, store });
    }

    /// Records a change to the rules in the decision log and waits until
    /// the record is durable; without a log there is nothing to record.
    pub async fn record_change(&self, change: ChangeEntry) -> Result<(), NotDurable> {
        let Some(audit) = self.audit.get() else { return Ok(()) };
        audit.log.record_change(change)?.durable().await
    }

    /// How the decision log is doing, once it is started.
    pub fn audit_status(&self) -> Option<AuditStatus> {
        self.audit.get().map(|audit| audit.log.status())
    }

    /// Reads the free space of the decision log's disk, which sets its
    /// gauges; `None` without a directory log.
    pub fn audit_disk(&self) -> Option<DiskSpace> {
        self.audit.get().and_then(|audit| audit.log.disk())
    }

    /// The read side of the decision log, once it is started.
    pub fn audit_store(&self) -> Option<&AuditStore> {
        self.audit.get().map(|audit| &audit.store)
    }

    /// Decides several requests and records each decision in the audit
    /// log; a decision whose record the log refuses becomes a Deny that
    /// says so.
    pub async fn decide_all(&self, requests: &[DecisionRequest]) -> Vec<Result<Decided, RequestError>> {
        self.decide_all_traced(requests).instrument(decision_span(requests.len())).await
    }

    async fn decide_all_traced(&self, requests: &[DecisionRequest]) -> Vec<Result<Decided, RequestError>> {
        let evaluated = self.decide_unrecorded(requests).await;
        // Every record is queued before any is waited on, so that the
        // decisions that wait for durability share one batch and one fsync.
        let recorded: Vec<Result<Recorded, RequestError>> = requests
            .iter()
            .zip(evaluated)
            .map(|(request, evaluated)| Ok(self.record(request, evaluated?)))
            .collect();
        let mut answers = Vec::with_capacity(recorded.len());
        for recorded in recorded {
            answers.push(match recorded {
                Ok(recorded) => Ok(recorded.answer().await),
                Err(error) => Err(error),
            });
        }
        answers
    }

    /// Decides a request an `ext_authz` mapper made; its record shows the
    /// mapping (`mapping`) before the other plugins.
    pub async fn decide_mapped(
        &self,
        request: &DecisionRequest,
        mapping: PluginTrace,
    ) -> Result<Decided, RequestError> {
        async {
            let mut evaluated = self
                .decide_unrecorded(std::slice::from_ref(request))
                .await
                .pop()
                .unwrap_or_else(|| Ok(self.failed("no decision was made for the request")))?;
            evaluated.plugins = mapping.followed_by(evaluated.plugins);
            Ok(self.record(request, evaluated).answer().await)
        }
        .instrument(decision_span(1))
        .await
    }

    /// Records a Deny for a request that never became a Cedar request: an
    /// `ext_authz` call no mapper recognised, or whose mapper failed. The
    /// record names the HTTP method and path (never the query, which may
    /// hold search terms) in place of the action and resource.
    pub async fn record_unmapped(
        &self,
        method: &str,
        path: &str,
        reason: String,
        plugins: PluginTrace,
    ) -> Decided {
        let span = decision_span(1);
        span.in_scope(|| {
            self.recorded(Decision::fail_closed(reason), plugins, |id, decision, plugins| {
                DecisionEntry::unmapped(id, method, path, decision, plugins, self.bundle().hash())
            })
        })
        .answer()
        .instrument(span)
        .await
    }

    /// Gives `evaluated` its id and submits its record.
    fn record(&self, request: &DecisionRequest, evaluated: Evaluated) -> Recorded {
        let Evaluated { decision, patients, plugins, bundle } = evaluated;
        self.recorded(decision, plugins, |id, decision, plugins| {
            DecisionEntry::of(id, request, decision, patients, plugins, bundle.hash())
        })
    }

    /// Gives `decision` its id and, when the log is on, queues the record
    /// `entry` makes of it. A log that refuses the record turns the decision
    /// into a Deny that says why.
    fn recorded(
        &self,
        decision: Decision,
        plugins: PluginTrace,
        entry: impl FnOnce(Uuid, &Decision, Vec<String>) -> DecisionEntry,
    ) -> Recorded {
        let id = Uuid::now_v7();
        let plugins = plugins.into_outcomes();
        let Some(audit) = self.audit.get() else {
            return Recorded { decided: Decided { id, decision, plugins }, recording: None };
        };
        let priority = decision.obligations.iter().any(|o| o.id == AUDIT_PRIORITY);
        let queued = tracing::info_span!("audit", step = "queue")
            .in_scope(|| audit.log.record(entry(id, &decision, plugins.clone()), priority));
        match queued {
            Ok(recording) => {
                Recorded { decided: Decided { id, decision, plugins }, recording: Some(recording) }
            }
            Err(refused) => Recorded {
                decided: Decided { id, decision: Decision::fail_closed(refused.to_string()), plugins },
                recording: None,
            },
        }
    }

    /// Decides several requests with the entities they need loaded into
    /// the directory's cache: first those the requests name, then whatever
    /// a decision or an `enrich` plugin's check still found missing, up to
    /// [`LOAD_ATTEMPTS`] times. A decision that still misses entities is
    /// the engine's Deny that names them; one whose entities cannot be read
    /// from the store is a Deny that says so.
    async fn decide_unrecorded(&self, requests: &[DecisionRequest]) -> Vec<Result<Evaluated, RequestError>> {
        let mut wanted: Vec<EntityUid> = requests.iter().flat_map(DecisionRequest::named_uids).collect();
        let mut attempt = 1;
        loop {
            if let Err(error) = self.directory.load_entities(wanted).await {
                let reason = format!("the entity directory could not be read: {error}");
                return requests.iter().map(|_| Ok(self.failed(&reason))).collect();
            }
            let missed_by_plugins = Mutex::new(Vec::new());
            let decided = self.decide_once(requests, &missed_by_plugins).await;
            wanted = missed_by_plugins.into_inner().unwrap_or_else(PoisonError::into_inner);
            wanted.extend(decided.iter().flatten().flat_map(|e| e.decision.unloaded.iter().cloned()));
            if wanted.is_empty() || attempt == LOAD_ATTEMPTS {
                return decided;
            }
            attempt += 1;
        }
    }

    /// A Deny for a fault before any decision was made.
    fn failed(&self, reason: &str) -> Evaluated {
        Evaluated {
            decision: Decision::fail_closed(reason),
            patients: Vec::new(),
            plugins: PluginTrace::default(),
            bundle: self.bundle(),
        }
    }

    /// Decides several requests against the same snapshot, with the
    /// plugins in force: `enrich` before evaluation, `obligations` after.
    /// The entities an enrichment could not be checked against, because
    /// the cache has not loaded them, are added to `missed_by_plugins`.
    async fn decide_once(
        &self,
        requests: &[DecisionRequest],
        missed_by_plugins: &Mutex<Vec<EntityUid>>,
    ) -> Vec<Result<Evaluated, RequestError>> {
        let plugins = self.plugins.current();
        if !plugins.decides() {
            return self.decide_evaluated(requests).await;
        }
        let view = |request: &DecisionRequest| hooks::plugin_request(request, &self.read().store);
        let options = &self.decisions;
        let apply = |request: &mut DecisionRequest, enrichment: &Enrichment, grants: &MayChange| {
            let snapshot = self.read();
            let (schema, store) = (snapshot.bundle.schema(), &snapshot.store);
            let facts = StoredFacts { schema, store, request_entities: options.request_entities };
            let applied = enrichment::apply_enrichment(request, enrichment, grants, &facts);
            if let Err(PluginFault::Unloaded(uid)) = &applied {
                missed_by_plugins.lock().unwrap_or_else(PoisonError::into_inner).push(uid.clone());
            }
            applied
        };
        let bundle = self.bundle();
        // A caller's rewrite of a stored fact is refused before any plugin sees the request.
        let enriched: Vec<(Prepared, PluginTrace)> = requests
            .iter()
            .map(|request| {
                let mut trace = PluginTrace::default();
                let checked = {
                    let snapshot = self.read();
                    check_request_entities(&snapshot.store, snapshot.bundle.schema(), request, options)
                };
                let enriched = checked.map(|()| {
                    let mut request = request.clone();
                    plugins.enrich(&mut request, view, apply, &mut trace).map(|()| request)
                });
                (enriched, trace)
            })
            .collect();
        let evaluable: Vec<DecisionRequest> =
            enriched.iter().filter_map(|(r, _)| r.as_ref().ok()?.as_ref().ok()).cloned().collect();
        let mut decisions = self.decide_evaluated(&evaluable).await.into_iter().zip(evaluable);
        enriched
            .into_iter()
            .zip(requests)
            .map(|((prepared, mut trace), original)| match prepared {
                Err(refused) => Err(refused),
                Ok(Err(denied)) => {
                    let patients = consent_subjects(&self.read().store, original);
                    Ok(Evaluated { decision: denied, patients, plugins: trace, bundle: Arc::clone(&bundle) })
                }
                Ok(Ok(_)) => match decisions.next() {
                    Some((Ok(mut evaluated), request)) => {
                        plugins.add_obligations(&request, &mut evaluated.decision, view, &mut trace);
                        evaluated.plugins = trace;
                        Ok(evaluated)
                    }
                    Some((Err(error), _)) => Err(error),
                    None => Ok(Evaluated {
                        plugins: trace,
                        bundle: Arc::clone(&bundle),
                        ..self.failed("no decision was made for the request")
                    }),
                },
            })
            .collect()
    }

    /// Decides requests that are ready for the engine, with their consents.
    async fn decide_evaluated(&self, requests: &[DecisionRequest]) -> Vec<Result<Evaluated, RequestError>> {
        let mut partitions = self.load_partitions(requests).await;
        if !Arc::ptr_eq(&self.read().bundle, &partitions.bundle) {
            // The bundle was swapped while the consents loaded; load them for the new one.
            partitions = self.load_partitions(requests).await;
        }
        let snapshot = self.read();
        requests.iter().map(|r| self.decide_loaded(&snapshot, &partitions, r)).collect()
    }

    /// Loads the consent partitions the requests need: from the cache, or
    /// from the consent store without holding the snapshot lock.
    async fn load_partitions(&self, requests: &[DecisionRequest]) -> LoadedPartitions {
        let (bundle, patients) = {
            let snapshot = self.read();
            let patients: Vec<String> =
                requests.iter().flat_map(|r| consent_subjects(&snapshot.store, r)).collect();
            (Arc::clone(&snapshot.bundle), patients)
        };
        let by_patient = self.consents.partitions(&bundle, patients).await;
        LoadedPartitions { bundle, by_patient }
    }

    /// Decides one request with partitions loaded beforehand.
    fn decide_loaded(
        &self,
        snapshot: &Snapshot,
        loaded: &LoadedPartitions,
        request: &DecisionRequest,
    ) -> Result<Evaluated, RequestError> {
        let patients = consent_subjects(&snapshot.store, request);
        let decision = match self.directory.out_of_touch() {
            Some(reason) => Decision::fail_closed(reason),
            None => Self::decide_with_partitions(snapshot, loaded, &patients, request, &self.decisions)?,
        };
        Ok(Evaluated {
            decision,
            patients,
            plugins: PluginTrace::default(),
            bundle: Arc::clone(&snapshot.bundle),
        })
    }

    /// Decides with the loaded partitions of `patients`. A patient whose
    /// consents could not be loaded, or who was not loaded because the
    /// entities changed meanwhile, gets a Deny that says so. A partition
    /// that set aside a consent it cannot evaluate still decides, by the
    /// rule of [`decide_with`].
    fn decide_with_partitions(
        snapshot: &Snapshot,
        loaded: &LoadedPartitions,
        patients: &[String],
        request: &DecisionRequest,
        options: &DecisionOptions,
    ) -> Result<Decision, RequestError> {
        if !Arc::ptr_eq(&snapshot.bundle, &loaded.bundle) {
            return Ok(Decision::fail_closed("the policy bundle changed while the decision was being made"));
        }
        let mut partitions: Vec<&ConsentPartition> = Vec::new();
        for patient in patients {
            match loaded.by_patient.get(patient) {
                Some(Ok(partition)) => partitions.push(partition),
                Some(Err(reason)) => return Ok(Decision::fail_closed(reason.to_string())),
                None => {
                    return Ok(Decision::fail_closed(format!(
                        "the consents of patient `{patient}` were not loaded: the entities changed meanwhile"
                    )));
                }
            }
        }
        decide_with(&snapshot.bundle, &partitions, &snapshot.store, request, options)
    }
}

/// The span of one decision, or of one batch of `requests` decided together;
/// the store, plugin and audit work it does are its children.
pub(crate) fn decision_span(requests: usize) -> tracing::Span {
    let api = crate::metrics::current_api().map_or("none", crate::metrics::Api::name);
    tracing::info_span!("decision", api, requests)
}

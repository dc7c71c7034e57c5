//! Searches through the pipeline: the candidates' entities loaded as a
//! decision's are, their patients' consents, the engine's search, and one
//! record in the decision log for the whole search.
//!
//! A search answers "which of these may…", so it must see exactly what a
//! decision about each candidate would see. Candidates' entities are loaded
//! into the bounded cache before the engine runs, and what the engine still
//! finds missing is loaded and the search run again, as decisions do; a
//! candidate whose entities stay missing is not a result. With plugins that
//! take part in decisions, each candidate goes through the whole decision
//! path instead (plugins included), which is slower but the same answer.
//! A fault that keeps the search from being made at all (the store or the
//! consents cannot be read, the replica lost its change feed) is an error,
//! not an empty list: "nobody may read your records" must never stand in
//! for "the answer is unknown".

use std::collections::HashMap;
use std::sync::Arc;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{
    ConsentPartition, Decision, Found, Obligation, Outcome, Reason, RequestError, SearchOutcome,
    SearchRequest, Searched, search,
};
use thiserror::Error;
use uuid::Uuid;

use super::{LOAD_ATTEMPTS, Pipeline};
use crate::audit::record::DecisionEntry;
use crate::consents::{PartitionError, PartitionResult};
use crate::directory::ChangeError;
use crate::plugins::PluginTrace;
use crate::store::StoreError;

/// Why a search could not be answered.
#[derive(Debug, Error)]
pub enum SearchError {
    /// The caller's request is unusable.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The search could not be made: nothing may be listed.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// Why a search could not be made, each with a stable [code](Self::code).
/// The texts name no store's own words: those go to the log.
#[derive(Debug, Error)]
pub enum Unavailable {
    /// The stored entities could not be listed.
    #[error("the entity directory could not be read (`{}`)", .0.code())]
    Listing(#[source] StoreError),
    /// The candidates' entities could not be loaded.
    #[error("the entity directory could not be read (`{}`)", entities_code(.0))]
    Loading(#[source] ChangeError),
    /// A stored uid does not parse.
    #[error("the stored uid `{uid}` does not parse")]
    StoredUid {
        /// The uid as stored.
        uid: String,
    },
    /// A candidate's patient's consents could not be loaded.
    #[error("the consents of patient `{patient}` could not be loaded: {error}")]
    Consents {
        /// The patient.
        patient: String,
        /// Why.
        error: PartitionError,
    },
    /// This replica lost the store's change feed.
    #[error("{0}")]
    OutOfTouch(&'static str),
    /// The policies changed while the search was made.
    #[error("the policy bundle changed while the search was being made; ask again")]
    BundleChanged,
    /// The search's task stopped.
    #[error("the search stopped: {0}")]
    Stopped(tokio::task::JoinError),
    /// The search's record could not be made, so it is not answered.
    #[error("{summary}")]
    NotRecorded {
        /// The failed-closed decision's summary.
        summary: String,
    },
}

impl Unavailable {
    /// A stable code for what failed, for the answer's `cause`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Listing(error) => error.code(),
            Self::Loading(error) => entities_code(error),
            Self::StoredUid { .. } => "store_corrupt",
            Self::Consents { error, .. } => error.code(),
            Self::OutOfTouch(_) => "replica_out_of_touch",
            Self::BundleChanged => "policies_changed",
            Self::Stopped(_) => "search_stopped",
            Self::NotRecorded { .. } => "audit_unavailable",
        }
    }
}

fn entities_code(error: &ChangeError) -> &'static str {
    match error {
        ChangeError::Store(error) => error.code(),
        _ => "store_corrupt",
    }
}

/// One search, as the decision log records it.
#[derive(Debug)]
pub struct SearchRecord<'a> {
    /// The search.
    pub query: &'a SearchRequest,
    /// What the searched part stands for, such as `Record::*` or `Action::*`.
    pub searched: String,
    /// The results of this page, with their decisions.
    pub found: &'a [Found],
    /// The patients the search concerned.
    pub patients: Vec<String>,
}

impl Pipeline {
    /// Decides `candidates` of `query` and returns those allowed, each with
    /// its decision, as a decision of each would: entities loaded, consents
    /// of each candidate's patients, plugins when they decide.
    pub async fn search_candidates(
        &self,
        query: &SearchRequest,
        candidates: &[EntityUid],
    ) -> Result<SearchOutcome, SearchError> {
        if candidates.is_empty() {
            return Ok(SearchOutcome::default());
        }
        if self.plugins.current().decides() {
            return self.search_one_by_one(query, candidates).await;
        }
        let mut wanted: Vec<EntityUid> = query.request.named_uids();
        wanted.extend(candidates.iter().cloned());
        let mut attempt = 1;
        loop {
            self.directory.load_entities(wanted).await.map_err(Unavailable::Loading)?;
            let (bundle, patients) = {
                let snapshot = self.read();
                let patients = query.patients_of_all(&snapshot.store, candidates);
                (Arc::clone(&snapshot.bundle), patients)
            };
            let partitions = self.consents.partitions(&bundle, patients).await;
            if let Some((patient, Err(error))) = partitions.iter().find(|(_, p)| p.is_err()) {
                return Err(Unavailable::Consents { patient: patient.clone(), error: error.clone() }.into());
            }
            let outcome = self.search_loaded(bundle, partitions, query, candidates).await?;
            if outcome.unloaded.is_empty() || attempt == LOAD_ATTEMPTS {
                return Ok(outcome);
            }
            wanted = outcome.unloaded;
            attempt += 1;
        }
    }

    /// The engine's search over the snapshot, off the async threads: a
    /// search of thousands of candidates takes milliseconds of CPU.
    async fn search_loaded(
        &self,
        bundle: Arc<consentry_engine::PolicyBundle>,
        partitions: HashMap<String, PartitionResult>,
        query: &SearchRequest,
        candidates: &[EntityUid],
    ) -> Result<SearchOutcome, SearchError> {
        let directory = Arc::clone(&self.directory);
        let options = self.decisions;
        let (query, candidates) = (query.clone(), candidates.to_vec());
        let searched = tokio::task::spawn_blocking(move || {
            let snapshot = directory.read();
            if let Some(reason) = directory.out_of_touch() {
                return Err(Unavailable::OutOfTouch(reason).into());
            }
            if !Arc::ptr_eq(&snapshot.bundle, &bundle) {
                return Err(Unavailable::BundleChanged.into());
            }
            let loaded: Vec<&ConsentPartition> =
                partitions.values().filter_map(|p| p.as_ref().ok()).map(AsRef::as_ref).collect();
            Ok(search(&snapshot.bundle, &loaded, &snapshot.store, &query, &candidates, &options)?)
        })
        .await;
        searched.unwrap_or_else(|error| Err(Unavailable::Stopped(error).into()))
    }

    /// Each candidate through the whole decision path, plugins included.
    async fn search_one_by_one(
        &self,
        query: &SearchRequest,
        candidates: &[EntityUid],
    ) -> Result<SearchOutcome, SearchError> {
        let requests: Vec<_> = candidates.iter().map(|c| query.candidate(c)).collect();
        let mut outcome = SearchOutcome::default();
        let mut first_error = None;
        let mut decided_any = false;
        for (candidate, evaluated) in candidates.iter().zip(self.decide_unrecorded(&requests).await) {
            match evaluated {
                Ok(evaluated) => {
                    decided_any = true;
                    let decision = evaluated.decision;
                    outcome.unloaded.extend(decision.unloaded.iter().cloned());
                    if decision.is_allowed() {
                        outcome.found.push(Found { uid: candidate.clone(), decision: Arc::new(decision) });
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !decided_any => Err(error.into()),
            _ => Ok(outcome),
        }
    }

    /// Records one search in the decision log and returns its id, once the
    /// record may be answered: durable first when a result is a break-glass
    /// one (`audit-priority`), or under `--audit-durability sync`. A search
    /// whose record cannot be made is not answered.
    pub async fn record_search(&self, record: SearchRecord<'_>) -> Result<Uuid, SearchError> {
        let summary = summary_decision(record.found);
        let listed = summary.outcome;
        let bundle = self.bundle();
        let recorded = self.recorded(summary, PluginTrace::default(), |id, decision, _| {
            search_entry(id, &record, decision, bundle.hash())
        });
        let decided = recorded.answer().await;
        if decided.decision.outcome == Outcome::FailedClosed && listed != Outcome::FailedClosed {
            return Err(Unavailable::NotRecorded { summary: decided.decision.summary() }.into());
        }
        Ok(decided.id)
    }
}

/// The whole search as one decision: an Allow when anything was found, by
/// every policy that determined a result, with each distinct obligation once.
fn summary_decision(found: &[Found]) -> Decision {
    let mut reasons: Vec<Reason> = Vec::new();
    let mut obligations: Vec<Obligation> = Vec::new();
    for decision in found.iter().map(|f| &f.decision) {
        for reason in &decision.reasons {
            if !reasons.iter().any(|r| r.policy == reason.policy) {
                reasons.push(reason.clone());
            }
        }
        for obligation in &decision.obligations {
            if !obligations.iter().any(|o| o.id == obligation.id && o.policy == obligation.policy) {
                obligations.push(obligation.clone());
            }
        }
    }
    reasons.sort_by(|a, b| a.policy.cmp(&b.policy));
    let outcome = if found.is_empty() { Outcome::NotPermitted } else { Outcome::Allow };
    Decision { outcome, reasons, errors: Vec::new(), obligations, unloaded: Vec::new() }
}

/// The log entry of a search: the fixed parts as a decision's, the searched
/// part as `Type::*` (or `Action::*`), identifiers only.
fn search_entry(
    id: Uuid,
    record: &SearchRecord<'_>,
    decision: &Decision,
    policy_hash: &str,
) -> DecisionEntry {
    let request = &record.query.request;
    let text = |uid: &EntityUid, searched: Searched| {
        if record.query.searched == searched { record.searched.clone() } else { uid.to_string() }
    };
    let at = request.now.clone().unwrap_or_else(crate::clock::now);
    let mut obligations: Vec<String> = decision.obligations.iter().map(|o| o.id.clone()).collect();
    obligations.dedup();
    DecisionEntry {
        decision_id: id,
        at: at.cedar_literal().to_owned(),
        principal: text(&request.principal, Searched::Subject),
        action: text(&request.action, Searched::Action),
        resource: text(&request.resource, Searched::Resource),
        patients: record.patients.clone(),
        purpose: request
            .context
            .as_ref()
            .and_then(|context| context.get("purpose"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        decision: decision.verdict().to_owned(),
        outcome: decision.outcome.name().to_owned(),
        reasons: decision.reasons.iter().map(|reason| reason.policy.clone()).collect(),
        obligations,
        plugins: Vec::new(),
        policy_hash: policy_hash.to_owned(),
    }
}

//! Search: which of many candidates a request allows, answered exactly.
//!
//! A caller asks "which of this patient's records may Dr. Weber read for
//! treatment?" (resource search), "who may read this record?" (subject
//! search) or "what may this user do to this record?" (action search). The
//! answer must be exactly the candidates that a decision of the full
//! request, [`crate::decide_with`], allows: a record that is listed but then
//! denied leaks its existence, and one that is allowed but missing hides
//! data a clinician needs. So a search is no approximation: every candidate
//! is decided by the same rule as a single decision, and one whose decision
//! errors or cannot be made is simply not a result (fail closed).
//!
//! What it saves is everything that is the same for every candidate: the
//! context is parsed once and the request's entities checked once; one slice
//! is built for a whole batch of candidates (see [`batch`]); and every policy
//! whose condition does not mention the searched variable is evaluated once
//! per batch rather than once per candidate. A policy that is false for one
//! candidate is then false for all, and is dropped from every candidate's
//! evaluation, which removes most of the pack's rules (purpose, break-glass,
//! transfers) from a resource search. And candidates that no policy can
//! tell apart share one decision (see [`share`]), so ten thousand records
//! of one patient take a handful of evaluations. Anything off this path (a candidate
//! the schema does not admit, a batch whose slice cannot be built) is
//! decided by `decide_with` itself, so the fast path only ever has to be
//! exact where it applies.
//!
//! Typed partial evaluation (Cedar's experimental `tpe`) could leave
//! residuals over the resource instead; this module enumerates, because the
//! host's candidates are stored entities it must load and check anyway, and
//! enumeration keeps every special rule of the engine (erroring forbids,
//! special categories, unreadable consents) without a second implementation.

mod batch;
mod share;

use std::sync::Arc;

use cedar_policy::EntityUid;

use crate::bundle::PolicyBundle;
use crate::decision::{
    Decision, DecisionOptions, DecisionRequest, decide_with, parse_context, request_validation_error,
};
use crate::error::RequestError;
use crate::facts::{SentError, declared_parents, parse_request_entities};
use crate::partition::{ConsentPartition, consent_subjects_from, consent_subjects_of, is_patient};
use crate::store::EntityStore;

/// Which part of a request a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Searched {
    /// The principal: who may do this?
    Subject,
    /// The resource: what may they do it to?
    Resource,
    /// The action: what may they do?
    Action,
}

/// A search: a request whose [`Searched`] part each candidate replaces in turn.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The part that varies.
    pub searched: Searched,
    /// Everything else; its searched part is ignored.
    pub request: DecisionRequest,
}

/// A candidate the request allows, and the decision that allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The candidate.
    pub uid: EntityUid,
    /// Its decision: an Allow, with the determining consents or rules and
    /// their obligations; candidates that share one decision share it here.
    pub decision: Arc<Decision>,
}

/// What a search found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchOutcome {
    /// The allowed candidates, in the order they were given.
    pub found: Vec<Found>,
    /// Entities a bounded store had not loaded and some candidate's
    /// decision needed: those candidates are not in `found`. A host that
    /// loads them and searches again gets the real answer.
    pub unloaded: Vec<EntityUid>,
}

impl SearchRequest {
    /// A search for `searched`, with `request` giving the other parts.
    pub fn new(searched: Searched, request: DecisionRequest) -> Self {
        Self { searched, request }
    }

    /// The request a candidate is decided as: this one, with `candidate` in the searched part.
    pub fn candidate(&self, candidate: &EntityUid) -> DecisionRequest {
        let mut request = self.request.clone();
        *self.slot(&mut request) = candidate.clone();
        request
    }

    /// The patients whose consents bear on `candidate` (see [`crate::consent_subjects`]).
    pub fn patients(&self, store: &EntityStore, candidate: &EntityUid) -> Vec<String> {
        let resource = match self.searched {
            Searched::Resource => candidate,
            Searched::Subject | Searched::Action => &self.request.resource,
        };
        consent_subjects_of(store, &self.request, resource)
    }

    /// The patients whose consents bear on any of `candidates`, sorted:
    /// the partitions a search of them needs. Candidates with the same
    /// parents share the walk, as in the search itself.
    pub fn patients_of_all(&self, store: &EntityStore, candidates: &[EntityUid]) -> Vec<String> {
        let mut all = std::collections::BTreeSet::new();
        if self.searched != Searched::Resource {
            all.extend(self.patients(store, &self.request.resource));
            return all.into_iter().collect();
        }
        let mut walked: foldhash::HashSet<&[EntityUid]> = foldhash::HashSet::default();
        let sent = !self.request.entities.is_empty() || !self.request.enriched_entities.is_empty();
        for candidate in candidates {
            match store.get(candidate).filter(|_| !sent) {
                Some(stored) => {
                    if is_patient(candidate) {
                        all.insert(candidate.id().unescaped().to_owned());
                    }
                    if walked.insert(stored.parents()) {
                        all.extend(consent_subjects_from(store, &self.request, stored.parents().to_vec()));
                    }
                }
                None => all.extend(self.patients(store, candidate)),
            }
        }
        all.into_iter().collect()
    }

    fn slot<'r>(&self, request: &'r mut DecisionRequest) -> &'r mut EntityUid {
        match self.searched {
            Searched::Subject => &mut request.principal,
            Searched::Resource => &mut request.resource,
            Searched::Action => &mut request.action,
        }
    }

    /// Principal, action and resource with `candidate` in the searched part.
    fn parts<'a>(&'a self, candidate: &'a EntityUid) -> [&'a EntityUid; 3] {
        let request = &self.request;
        match self.searched {
            Searched::Subject => [candidate, &request.action, &request.resource],
            Searched::Resource => [&request.principal, &request.action, candidate],
            Searched::Action => [&request.principal, candidate, &request.resource],
        }
    }
}

/// Decides every candidate of `search` and returns those allowed: exactly
/// the candidates for which [`decide_with`] over the partitions of the
/// candidate's own patients ([`SearchRequest::patients`]) is an Allow.
///
/// `partitions` holds the partitions of every patient any candidate
/// concerns; a candidate one of whose patients has none given is not a
/// result. A [`RequestError`] means the part of the request that every
/// candidate shares is unusable (a context that does not fit the schema,
/// an undeclared action, a request entity that changes a stored fact); in an
/// action search, where the action is what varies, only when no action
/// could be decided at all.
pub fn search(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    search: &SearchRequest,
    candidates: &[EntityUid],
    options: &DecisionOptions,
) -> Result<SearchOutcome, RequestError> {
    if search.searched == Searched::Action {
        // A handful of actions, each with its own context type: decided one by one.
        return search_one_by_one(bundle, partitions, store, search, candidates, options);
    }
    let request = &search.request;
    if bundle.schema().is_some() && !bundle.declares(&request.action) {
        return Err(RequestError::schema(
            "action",
            format!("action `{}` is not declared in the schema", request.action),
        ));
    }
    let (context, conforms) = parse_context(bundle, request)?;
    // Checked once here rather than by Cedar for every candidate: a context
    // that does not fit is the caller's error, whatever the candidate.
    let conforms = match bundle.schema() {
        Some(schema) if !conforms => {
            context.validate(schema, &request.action).map_err(request_validation_error)?;
            true
        }
        _ => conforms,
    };
    let sent = match parse_request_entities(request, store, bundle.schema(), options.request_entities) {
        Ok(sent) => sent,
        Err(SentError::Caller(error)) => return Err(error),
        // Every candidate's decision would be this same Deny.
        Err(SentError::Fault(_)) => return Ok(SearchOutcome::default()),
        Err(SentError::Unloaded(uid)) => return Ok(SearchOutcome { found: Vec::new(), unloaded: vec![uid] }),
    };
    let shared = batch::Shared { bundle, store, search, options, context, conforms, sent };
    let mut found = Vec::new();
    let mut unloaded = Vec::new();
    for (group, members) in by_partitions(store, search, partitions, candidates) {
        let Some(group) = group else { continue };
        let chosen: Vec<&ConsentPartition> =
            group.iter().filter_map(|&i| partitions.get(i).copied()).collect();
        let (mut more, mut missed) = decide_group(&shared, &chosen, &members);
        found.append(&mut more);
        unloaded.append(&mut missed);
    }
    // Groups were visited one after another; the caller gets its own order back.
    found.sort_by_key(|(position, _)| *position);
    unloaded.sort_by_cached_key(ToString::to_string);
    unloaded.dedup();
    Ok(SearchOutcome { found: found.into_iter().map(|(_, found)| found).collect(), unloaded })
}

/// Candidates below which a search stays on the caller's thread: a thread
/// costs tens of microseconds, a candidate a few.
const PARALLEL_FROM: usize = 2048;

/// At most this many threads share one search.
const MAX_THREADS: usize = 4;

/// A candidate and its position in the caller's list.
type Numbered<'c> = (usize, &'c EntityUid);

/// The partitions (indexes) a candidate's decision uses; `None` when one is missing.
type Group = Option<Vec<usize>>;

/// What a set of parents gives its candidates: the patients above them,
/// their group, and the group's place in the list once it has one.
type Filed = (Vec<String>, Group, Option<usize>);

/// What a part of a search found: allowed candidates with their positions, and what was not loaded.
type Part = (Vec<(usize, Found)>, Vec<EntityUid>);

/// Decides the members of one group in batches, on several threads when
/// there are many: each candidate's decision is its own, so the split
/// changes nothing but the time.
fn decide_group(
    shared: &batch::Shared<'_>,
    partitions: &[&ConsentPartition],
    members: &[Numbered<'_>],
) -> Part {
    let run = |part: &[Numbered<'_>]| {
        let (mut found, mut unloaded) = (Vec::new(), Vec::new());
        for chunk in part.chunks(batch::BATCH) {
            shared.decide(partitions, chunk, &mut found, &mut unloaded);
        }
        (found, unloaded)
    };
    let threads = std::thread::available_parallelism().map_or(1, usize::from).min(MAX_THREADS);
    if members.len() < PARALLEL_FROM || threads < 2 {
        return run(members);
    }
    let size = members.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = members.chunks(size).map(|part| scope.spawn(move || run(part))).collect();
        let (mut found, mut unloaded) = (Vec::new(), Vec::new());
        for handle in handles {
            // A part whose thread failed finds nothing: fail closed.
            if let Ok((mut more, mut missed)) = handle.join() {
                found.append(&mut more);
                unloaded.append(&mut missed);
            }
        }
        (found, unloaded)
    })
}

/// The candidates grouped by the partitions their decisions use (indexes
/// into `partitions`), in first-seen order; `None` for those one of whose
/// patients has no partition given.
fn by_partitions<'c>(
    store: &EntityStore,
    search: &SearchRequest,
    partitions: &[&ConsentPartition],
    candidates: &'c [EntityUid],
) -> Vec<(Group, Vec<Numbered<'c>>)> {
    let chosen = |patients: &[String]| -> Group {
        patients.iter().map(|patient| partitions.iter().position(|p| p.patient() == patient)).collect()
    };
    if search.searched != Searched::Resource {
        // The resource is fixed, so are its patients.
        let patients = search.patients(store, &search.request.resource);
        return vec![(chosen(&patients), candidates.iter().enumerate().collect())];
    }
    let mut groups: Vec<(Group, Vec<Numbered<'c>>)> = Vec::new();
    let mut by_group: foldhash::HashMap<Group, usize> = foldhash::HashMap::default();
    // The group's place in `groups`, added when new.
    let mut place = |groups: &mut Vec<(Group, Vec<Numbered<'c>>)>, group: &Group| -> usize {
        *by_group.entry(group.clone()).or_insert_with(|| {
            groups.push((group.clone(), Vec::new()));
            groups.len() - 1
        })
    };
    // Records of one patient share their parents, and so their patients
    // and their group, which is looked up once per set of parents.
    let mut by_parents: foldhash::HashMap<std::borrow::Cow<'_, [EntityUid]>, Filed> =
        foldhash::HashMap::default();
    // Without entities sent with the request, a candidate's parents are
    // its stored ones, read in place.
    let sent = !search.request.entities.is_empty() || !search.request.enriched_entities.is_empty();
    for numbered @ (_, candidate) in candidates.iter().enumerate() {
        let stored = store.get(candidate).filter(|_| !sent);
        let parents = match stored {
            Some(stored) => std::borrow::Cow::Borrowed(stored.parents()),
            None if sent => std::borrow::Cow::Owned(declared_parents(store, &search.request, candidate)),
            None => std::borrow::Cow::Borrowed(&[][..]),
        };
        let (above, shared, at) = by_parents.entry(parents).or_insert_with_key(|parents| {
            let above = consent_subjects_from(store, &search.request, parents.to_vec());
            let group = chosen(&above);
            (above, group, None)
        });
        let at = if is_patient(candidate) {
            // A patient's own consents bear on a search of the patient.
            let mut patients = above.clone();
            patients.push(candidate.id().unescaped().to_owned());
            patients.sort();
            patients.dedup();
            place(&mut groups, &chosen(&patients))
        } else {
            *at.get_or_insert_with(|| place(&mut groups, shared))
        };
        if let Some((_, members)) = groups.get_mut(at) {
            members.push(numbered);
        }
    }
    groups
}

/// Each candidate decided by [`decide_with`] itself.
fn search_one_by_one(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    search: &SearchRequest,
    candidates: &[EntityUid],
    options: &DecisionOptions,
) -> Result<SearchOutcome, RequestError> {
    let mut outcome = SearchOutcome::default();
    let mut first_error = None;
    let mut decided_any = false;
    for candidate in candidates {
        let patients = search.patients(store, candidate);
        let chosen: Option<Vec<&ConsentPartition>> = patients
            .iter()
            .map(|patient| partitions.iter().find(|p| p.patient() == patient).copied())
            .collect();
        let Some(chosen) = chosen else { continue };
        match decide_with(bundle, &chosen, store, &search.candidate(candidate), options) {
            Ok(decision) => {
                decided_any = true;
                outcome.record(candidate, decision);
            }
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if !decided_any => Err(error),
        _ => Ok(outcome),
    }
}

impl SearchOutcome {
    /// Keeps an allowed candidate, and notes what a denied one missed.
    fn record(&mut self, candidate: &EntityUid, decision: Decision) {
        self.unloaded.extend(decision.unloaded.iter().cloned());
        if decision.is_allowed() {
            self.found.push(Found { uid: candidate.clone(), decision: Arc::new(decision) });
        }
    }
}

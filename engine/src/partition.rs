//! A patient's consents, compiled into a rule set of their own.
//!
//! Each active consent becomes Cedar permits and forbids (see
//! [`crate::consent::compile`]). Keeping one patient's policies apart from
//! the pack, and from every other patient's, means a decision evaluates the
//! pack plus one small partition, so its cost does not grow with the number
//! of patients; and the host can load, cache and drop partitions one patient
//! at a time. Partitions are validated against the bundle's schema like the
//! pack, so a consent can never smuggle in an ill-typed policy.

use std::collections::HashSet;

use cedar_policy::{EntityUid, Policy, PolicySet};

use crate::bundle::{PolicyBundle, build_policy_set};
use crate::consent::{Consent, compile};
use crate::decision::DecisionRequest;
use crate::error::{LoadError, Problem};
use crate::facts::declared_parents;
use crate::rules::RuleSet;
use crate::store::EntityStore;
use crate::unreadable::UnreadableConsent;

/// The entity type whose consents govern access to it and to the records filed under it.
pub const PATIENT_TYPE: &str = "Patient";

/// One stored version of a consent, as the partition needs it.
#[derive(Debug, Clone, Copy)]
pub struct ConsentVersion<'a> {
    /// The store's id for the consent.
    pub id: &'a str,
    /// The version, counting from 1.
    pub version: u64,
    /// The parsed consent.
    pub consent: &'a Consent,
}

/// The compiled, validated, indexed policies of one patient's active consents.
#[derive(Debug)]
pub struct ConsentPartition {
    patient: String,
    bundle_hash: String,
    pub(crate) rules: RuleSet,
    /// The compiled policies as written, for typed partial evaluation
    /// ([`crate::plan`]); `rules` holds the copies decisions evaluate.
    pub(crate) policies: PolicySet,
    /// Active consents left out because they cannot be evaluated.
    unreadable: Vec<UnreadableConsent>,
}

impl ConsentPartition {
    /// Compiles the patient's consents under the bundle's schema. Consents
    /// that are not active contribute nothing; a consent of another patient
    /// is refused.
    pub fn build(
        bundle: &PolicyBundle,
        patient: &str,
        consents: &[ConsentVersion<'_>],
    ) -> Result<Self, LoadError> {
        let set = compile_checked(bundle, patient, consents)?;
        let policies: Vec<Policy> = set.policies().cloned().collect();
        Ok(Self {
            patient: patient.to_owned(),
            bundle_hash: bundle.hash().to_owned(),
            rules: RuleSet::new(policies)?,
            policies: set,
            unreadable: Vec::new(),
        })
    }

    /// Like [`ConsentPartition::build`], but a consent that cannot be
    /// compiled, validated or loaded is set aside rather than failing the
    /// whole partition; `unreadable` are those the caller could not even
    /// parse. Decisions then apply the patient's other consents and settle
    /// by the rule of [`crate::decide_with`], so that one consent
    /// stored under older rules cannot lock the patient out of emergency care.
    pub fn build_setting_aside(
        bundle: &PolicyBundle,
        patient: &str,
        consents: &[ConsentVersion<'_>],
        mut unreadable: Vec<UnreadableConsent>,
    ) -> Result<Self, LoadError> {
        let mut partition = match Self::build(bundle, patient, consents) {
            Ok(partition) => partition,
            // Only on failure is each consent built alone, to find the culprits.
            Err(_) => {
                let mut readable = Vec::with_capacity(consents.len());
                for version in consents {
                    match Self::build(bundle, patient, std::slice::from_ref(version)) {
                        Ok(_) => readable.push(*version),
                        Err(error) => unreadable.push(UnreadableConsent {
                            id: version.id.to_owned(),
                            version: version.version,
                            reason: error.to_string(),
                        }),
                    }
                }
                Self::build(bundle, patient, &readable)?
            }
        };
        partition.unreadable = unreadable;
        Ok(partition)
    }

    /// The patient's active consents that could not be evaluated and are not in the partition.
    pub fn unreadable(&self) -> &[UnreadableConsent] {
        &self.unreadable
    }

    /// The patient's id.
    pub fn patient(&self) -> &str {
        &self.patient
    }

    /// Number of compiled policies.
    pub fn policy_count(&self) -> usize {
        self.rules.len()
    }

    /// Whether it was compiled under this bundle; a partition from another
    /// bundle may not fit its schema and must be rebuilt.
    pub fn compiled_for(&self, bundle: &PolicyBundle) -> bool {
        self.bundle_hash == bundle.hash()
    }
}

/// Checks, before a consent is stored, that it builds into everything a
/// decision will build from it: policies that parse, fit the bundle's schema
/// and are indexed as a partition. A consent that is accepted can then be
/// decided; before this check built the whole partition, a consent with a
/// long list was accepted and then crashed every decision about its
/// patient (issue 13, finding 8).
pub fn check_consent(
    bundle: &PolicyBundle,
    id: &str,
    version: u64,
    consent: &Consent,
) -> Result<(), LoadError> {
    ConsentPartition::build(bundle, consent.patient(), &[ConsentVersion { id, version, consent }]).map(|_| ())
}

/// Compiles the patient's active consents, then parses and validates the
/// policies: everything a partition needs except its index.
fn compile_checked(
    bundle: &PolicyBundle,
    patient: &str,
    consents: &[ConsentVersion<'_>],
) -> Result<PolicySet, LoadError> {
    let mut text = String::new();
    for version in consents {
        if version.consent.patient() != patient {
            return Err(LoadError::Policies(vec![Problem::message(format!(
                "consent `{}` belongs to patient `{}`, not `{patient}`",
                version.id,
                version.consent.patient()
            ))]));
        }
        if version.consent.is_active() {
            text.push_str(&compile(version.consent, version.id, version.version));
            text.push('\n');
        }
    }
    let (set, _) = build_policy_set(&text, &[])?;
    if let Some(validator) = &bundle.validator {
        validator.validate(&set)?;
    }
    Ok(set)
}

/// The patients whose consents bear on a request: the resource itself when
/// it is a patient, and every patient among its ancestors (a `Record in
/// [Patient]`). A stored entity's stored parents always count, whatever a
/// copy sent with the request says, so leaving a record's patient out of
/// its copy cannot keep that patient's consents from loading; parents that
/// sent entities add count too.
pub fn consent_subjects(store: &EntityStore, request: &DecisionRequest) -> Vec<String> {
    consent_subjects_of(store, request, &request.resource)
}

/// [`consent_subjects`] of `request` with `resource` in place of its own:
/// a search asks it for many candidates without making a request for each.
pub(crate) fn consent_subjects_of(
    store: &EntityStore,
    request: &DecisionRequest,
    resource: &EntityUid,
) -> Vec<String> {
    consent_subjects_from(store, request, vec![resource.clone()])
}

/// The patients among `starts` and their ancestors, sorted. Starting from
/// an entity's parents gives its patients but for itself, so candidates
/// with the same parents share the walk.
pub(crate) fn consent_subjects_from(
    store: &EntityStore,
    request: &DecisionRequest,
    mut stack: Vec<EntityUid>,
) -> Vec<String> {
    let mut patients = Vec::new();
    let mut seen = HashSet::new();
    while let Some(uid) = stack.pop() {
        if !seen.insert(uid.clone()) {
            continue;
        }
        if is_patient(&uid) {
            patients.push(uid.id().unescaped().to_owned());
        }
        stack.extend(declared_parents(store, request, &uid));
    }
    patients.sort();
    patients.dedup();
    patients
}

/// Whether `uid` is a patient, whose consents govern it.
pub(crate) fn is_patient(uid: &EntityUid) -> bool {
    uid.type_name().basename() == PATIENT_TYPE && uid.type_name().namespace().is_empty()
}

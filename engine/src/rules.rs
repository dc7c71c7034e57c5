//! A set of evaluable policies, ready for decisions: scope-indexed, with
//! their annotations read and the entities their conditions name.
//!
//! The policy pack and every patient's consent partition are rule sets of
//! their own, so a decision can gather candidates from several of them and
//! still evaluate them under one Cedar authorization rule.

use std::collections::HashSet;

use cedar_policy::{EntityUid, Policy};

use crate::bundle::collect_escaped_uids;
use crate::index::{ScopeIndex, Subject};
use crate::obligation::PolicyNotes;

/// Indexed policies with their notes, in one order.
#[derive(Debug)]
pub(crate) struct RuleSet {
    index: ScopeIndex,
    notes: Vec<PolicyNotes>,
    /// Entities named literally inside conditions, such as
    /// `Document::"handbook".owner`: Cedar must be able to dereference them,
    /// so every slice includes them.
    pub(crate) literal_uids: Vec<EntityUid>,
}

impl RuleSet {
    pub(crate) fn new(policies: Vec<Policy>) -> Self {
        let notes = policies.iter().map(PolicyNotes::of).collect();
        let literal_uids = literal_uids(&policies);
        Self { index: ScopeIndex::new(policies), notes, literal_uids }
    }

    /// Number of policies.
    pub(crate) fn len(&self) -> usize {
        self.notes.len()
    }

    /// The policies whose scope holds for this request, with their notes.
    pub(crate) fn applicable<'s>(
        &'s self,
        principal: &'s Subject<'_>,
        action: &'s Subject<'_>,
        resource: &'s Subject<'_>,
    ) -> impl Iterator<Item = (&'s Policy, &'s PolicyNotes)> {
        self.index
            .applicable(principal, action, resource)
            .filter_map(|(position, policy)| Some((policy, self.notes.get(position)?)))
    }
}

fn literal_uids(policies: &[Policy]) -> Vec<EntityUid> {
    let mut found = HashSet::new();
    for policy in policies {
        if let Some(conditions) = policy.to_json().ok().as_ref().and_then(|j| j.get("conditions")) {
            collect_escaped_uids(conditions, &mut found);
        }
    }
    found.into_iter().collect()
}

//! The scope index: which policies could possibly apply to a request.
//!
//! Cedar evaluates every policy it is given, at roughly a microsecond each
//! even when the scope rules the policy out. The index looks only at scopes
//! (`principal in G`, `action == A`, `resource is T`) and hands Cedar the
//! candidates. It may over-approximate (Cedar re-checks every scope), but it
//! must never leave out a policy whose scope could match: a policy outside
//! the candidates is one whose scope is false, which Cedar would neither
//! satisfy nor report an error for, so decisions, reasons and errors stay
//! exactly Cedar's.

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};
use fixedbitset::FixedBitSet;

/// What one scope clause accepts, reduced to what the index can look up.
enum ScopeKey {
    Any,
    /// `== uid`, `in uid` and `is T in uid`: the request's entity or one of its ancestors must be `uid`.
    Uid(EntityUid),
    /// `is T`: the request's entity must have type `T`.
    Type(EntityTypeName),
}

/// For one of principal, action or resource: which policies each key admits.
#[derive(Debug)]
struct Dimension {
    unconstrained: FixedBitSet,
    by_uid: foldhash::HashMap<EntityUid, FixedBitSet>,
    by_type: foldhash::HashMap<EntityTypeName, FixedBitSet>,
}

impl Dimension {
    fn new(len: usize) -> Self {
        Self {
            unconstrained: FixedBitSet::with_capacity(len),
            by_uid: foldhash::HashMap::default(),
            by_type: foldhash::HashMap::default(),
        }
    }

    fn insert(&mut self, key: ScopeKey, policy: usize, len: usize) {
        let bits = match key {
            ScopeKey::Any => &mut self.unconstrained,
            ScopeKey::Uid(uid) => self.by_uid.entry(uid).or_insert_with(|| FixedBitSet::with_capacity(len)),
            ScopeKey::Type(t) => self.by_type.entry(t).or_insert_with(|| FixedBitSet::with_capacity(len)),
        };
        bits.insert(policy);
    }

    /// Policies whose clause in this dimension can accept `uid`, given its ancestors.
    fn admitting<'a>(
        &self,
        uid: &'a EntityUid,
        ancestors: impl Iterator<Item = &'a EntityUid>,
    ) -> FixedBitSet {
        let mut bits = self.unconstrained.clone();
        if let Some(typed) = self.by_type.get(uid.type_name()) {
            bits.union_with(typed);
        }
        for candidate in std::iter::once(uid).chain(ancestors) {
            if let Some(named) = self.by_uid.get(candidate) {
                bits.union_with(named);
            }
        }
        bits
    }
}

/// Candidate selection over a fixed list of evaluable (static and linked) policies.
pub(crate) struct ScopeIndex {
    policies: Vec<Policy>,
    principal: Dimension,
    action: Dimension,
    resource: Dimension,
}

impl std::fmt::Debug for ScopeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopeIndex").field("policies", &self.policies.len()).finish_non_exhaustive()
    }
}

impl ScopeIndex {
    pub(crate) fn new(policies: Vec<Policy>) -> Self {
        let len = policies.len();
        let mut principal = Dimension::new(len);
        let mut action = Dimension::new(len);
        let mut resource = Dimension::new(len);
        for (position, policy) in policies.iter().enumerate() {
            principal.insert(principal_key(policy.principal_constraint()), position, len);
            resource.insert(resource_key(policy.resource_constraint()), position, len);
            match policy.action_constraint() {
                ActionConstraint::Any => action.insert(ScopeKey::Any, position, len),
                ActionConstraint::Eq(uid) => action.insert(ScopeKey::Uid(uid), position, len),
                ActionConstraint::In(uids) => {
                    for uid in uids {
                        action.insert(ScopeKey::Uid(uid), position, len);
                    }
                }
            }
        }
        Self { policies, principal, action, resource }
    }

    /// The policies whose scope could match this request, in index order.
    pub(crate) fn candidates<'a>(
        &self,
        principal: (&'a EntityUid, impl Iterator<Item = &'a EntityUid>),
        action: (&'a EntityUid, impl Iterator<Item = &'a EntityUid>),
        resource: (&'a EntityUid, impl Iterator<Item = &'a EntityUid>),
    ) -> impl Iterator<Item = &Policy> {
        let mut bits = self.principal.admitting(principal.0, principal.1);
        bits.intersect_with(&self.action.admitting(action.0, action.1));
        bits.intersect_with(&self.resource.admitting(resource.0, resource.1));
        bits.into_ones().filter_map(|i| self.policies.get(i))
    }
}

fn principal_key(constraint: PrincipalConstraint) -> ScopeKey {
    match constraint {
        PrincipalConstraint::Any => ScopeKey::Any,
        PrincipalConstraint::In(uid) | PrincipalConstraint::Eq(uid) => ScopeKey::Uid(uid),
        PrincipalConstraint::IsIn(_, uid) => ScopeKey::Uid(uid),
        PrincipalConstraint::Is(t) => ScopeKey::Type(t),
    }
}

fn resource_key(constraint: ResourceConstraint) -> ScopeKey {
    match constraint {
        ResourceConstraint::Any => ScopeKey::Any,
        ResourceConstraint::In(uid) | ResourceConstraint::Eq(uid) => ScopeKey::Uid(uid),
        ResourceConstraint::IsIn(_, uid) => ScopeKey::Uid(uid),
        ResourceConstraint::Is(t) => ScopeKey::Type(t),
    }
}

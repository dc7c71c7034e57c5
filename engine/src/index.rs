//! The scope index: which policies apply to a request.
//!
//! Cedar evaluates every policy it is given, at roughly a microsecond each
//! even when the scope rules the policy out, and rebuilds each policy's
//! condition (scope and body) on every evaluation. The index looks only at
//! scopes (`principal in G`, `action == A`, `resource is T`): bitsets narrow
//! the policies to those whose scope could match, then each survivor's scope
//! is checked exactly, as Cedar would check it. Cedar then only evaluates the
//! bodies (`when`/`unless`) of policies whose scope holds. A scope cannot
//! raise an error, and Cedar evaluates a body only when the scope holds, so
//! decisions, reasons and errors stay exactly Cedar's.

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};
use cedar_policy_core::ast::Entity as CoreEntity;
use fixedbitset::FixedBitSet;
use ref_cast::RefCast;

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

    /// Policies whose clause in this dimension can accept the subject.
    fn admitting(&self, subject: &Subject<'_>) -> FixedBitSet {
        let mut bits = self.unconstrained.clone();
        if let Some(typed) = self.by_type.get(subject.uid.type_name()) {
            bits.union_with(typed);
        }
        for candidate in std::iter::once(subject.uid).chain(subject.ancestors()) {
            if let Some(named) = self.by_uid.get(candidate) {
                bits.union_with(named);
            }
        }
        bits
    }
}

/// A principal or resource scope clause, with slots already filled.
#[derive(Debug)]
enum EntityClause {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid),
}

impl EntityClause {
    fn holds(&self, subject: &Subject<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(uid) => subject.uid == uid,
            Self::In(uid) => subject.is_in(uid),
            Self::Is(t) => subject.uid.type_name() == t,
            Self::IsIn(t, uid) => subject.uid.type_name() == t && subject.is_in(uid),
        }
    }

    fn key(&self) -> ScopeKey {
        match self {
            Self::Any => ScopeKey::Any,
            Self::Eq(uid) | Self::In(uid) | Self::IsIn(_, uid) => ScopeKey::Uid(uid.clone()),
            Self::Is(t) => ScopeKey::Type(t.clone()),
        }
    }
}

impl From<PrincipalConstraint> for EntityClause {
    fn from(constraint: PrincipalConstraint) -> Self {
        match constraint {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(uid) => Self::Eq(uid),
            PrincipalConstraint::In(uid) => Self::In(uid),
            PrincipalConstraint::Is(t) => Self::Is(t),
            PrincipalConstraint::IsIn(t, uid) => Self::IsIn(t, uid),
        }
    }
}

impl From<ResourceConstraint> for EntityClause {
    fn from(constraint: ResourceConstraint) -> Self {
        match constraint {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(uid) => Self::Eq(uid),
            ResourceConstraint::In(uid) => Self::In(uid),
            ResourceConstraint::Is(t) => Self::Is(t),
            ResourceConstraint::IsIn(t, uid) => Self::IsIn(t, uid),
        }
    }
}

/// A policy's whole scope.
#[derive(Debug)]
struct Scope {
    principal: EntityClause,
    action: ActionConstraint,
    resource: EntityClause,
}

impl Scope {
    fn holds(&self, principal: &Subject<'_>, action: &Subject<'_>, resource: &Subject<'_>) -> bool {
        self.action_holds(action) && self.principal.holds(principal) && self.resource.holds(resource)
    }

    fn action_holds(&self, action: &Subject<'_>) -> bool {
        match &self.action {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => action.uid == uid,
            ActionConstraint::In(uids) => uids.iter().any(|uid| action.is_in(uid)),
        }
    }
}

/// The part of a request a search varies, as the index sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Varying {
    Principal,
    Action,
    Resource,
}

/// The principal, action or resource of a request, with its entity in the
/// slice (whose ancestors the slice has already closed), if it is stored.
pub(crate) struct Subject<'a> {
    uid: &'a EntityUid,
    entity: Option<&'a CoreEntity>,
}

impl<'a> Subject<'a> {
    /// `uid`, looked up in the decision's entities.
    pub(crate) fn new(uid: &'a EntityUid, entities: &'a Entities) -> Self {
        Self { uid, entity: entities.get(uid).map(AsRef::as_ref) }
    }

    fn ancestors(&self) -> impl Iterator<Item = &'a EntityUid> {
        self.entity.into_iter().flat_map(|e| e.ancestors().map(EntityUid::ref_cast))
    }

    /// Cedar's `in`: the entity itself or one of its ancestors. An entity
    /// that does not exist is `in` only itself, as in Cedar.
    fn is_in(&self, uid: &EntityUid) -> bool {
        self.uid == uid || self.entity.is_some_and(|e| e.is_descendant_of(uid.as_ref()))
    }
}

/// Candidate selection over a fixed list of evaluable (static and linked) policies.
pub(crate) struct ScopeIndex {
    policies: Vec<Policy>,
    scopes: Vec<Scope>,
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
        let mut scopes = Vec::with_capacity(len);
        for (position, policy) in policies.iter().enumerate() {
            let scope = Scope {
                principal: policy.principal_constraint().into(),
                action: policy.action_constraint(),
                resource: policy.resource_constraint().into(),
            };
            principal.insert(scope.principal.key(), position, len);
            resource.insert(scope.resource.key(), position, len);
            match &scope.action {
                ActionConstraint::Any => action.insert(ScopeKey::Any, position, len),
                ActionConstraint::Eq(uid) => action.insert(ScopeKey::Uid(uid.clone()), position, len),
                ActionConstraint::In(uids) => {
                    for uid in uids {
                        action.insert(ScopeKey::Uid(uid.clone()), position, len);
                    }
                }
            }
            scopes.push(scope);
        }
        Self { policies, scopes, principal, action, resource }
    }

    /// For a search, where `varying` is the part each candidate replaces:
    /// the positions, in index order, of the policies whose scope clauses
    /// for the two other parts hold. Those clauses are the same for every
    /// candidate, so a search checks them once, and per candidate only
    /// [`ScopeIndex::varying_holds`].
    pub(crate) fn fixed_part(
        &self,
        varying: Varying,
        principal: &Subject<'_>,
        action: &Subject<'_>,
        resource: &Subject<'_>,
    ) -> Vec<usize> {
        let (mut bits, other) = match varying {
            Varying::Principal => (self.action.admitting(action), self.resource.admitting(resource)),
            Varying::Action => (self.principal.admitting(principal), self.resource.admitting(resource)),
            Varying::Resource => (self.principal.admitting(principal), self.action.admitting(action)),
        };
        bits.intersect_with(&other);
        bits.into_ones()
            .filter(|&i| {
                self.scopes.get(i).is_some_and(|scope| {
                    let action_holds = || varying == Varying::Action || scope.action_holds(action);
                    let principal_holds =
                        || varying == Varying::Principal || scope.principal.holds(principal);
                    let resource_holds = || varying == Varying::Resource || scope.resource.holds(resource);
                    action_holds() && principal_holds() && resource_holds()
                })
            })
            .collect()
    }

    /// Whether the scope clause of the policy at `position` for the
    /// `varying` part holds for `subject`.
    pub(crate) fn varying_holds(&self, position: usize, varying: Varying, subject: &Subject<'_>) -> bool {
        self.scopes.get(position).is_some_and(|scope| match varying {
            Varying::Principal => scope.principal.holds(subject),
            Varying::Action => scope.action_holds(subject),
            Varying::Resource => scope.resource.holds(subject),
        })
    }

    /// The policy at `position`.
    pub(crate) fn policy(&self, position: usize) -> Option<&Policy> {
        self.policies.get(position)
    }

    /// The policies whose scope holds for this request, with their positions, in index order.
    pub(crate) fn applicable<'s>(
        &'s self,
        principal: &'s Subject<'_>,
        action: &'s Subject<'_>,
        resource: &'s Subject<'_>,
    ) -> impl Iterator<Item = (usize, &'s Policy)> {
        let mut bits = self.principal.admitting(principal);
        bits.intersect_with(&self.action.admitting(action));
        bits.intersect_with(&self.resource.admitting(resource));
        bits.into_ones().filter_map(move |i| {
            let scope = self.scopes.get(i)?;
            scope.holds(principal, action, resource).then(|| self.policies.get(i).map(|p| (i, p))).flatten()
        })
    }
}

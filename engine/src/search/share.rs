//! Candidates no policy can tell apart share one decision.
//!
//! A decision reads a candidate only through what Cedar lets a policy ask
//! of an entity: its type (`is`), its ancestors (`in`, and the scope), the
//! attributes a policy names (`.name`, `has name`), its tags (`getTag`,
//! `hasTag`), and its identity, in comparisons with other entities. Two
//! candidates whose type, ancestors, named attributes (with `labels`,
//! which the special categories read) and, when any policy reads tags,
//! tags are equal, and which nothing else in the decision names (no
//! literal of a policy in force, no value or ancestor of another entity in
//! the slice, nothing in the context, not the fixed parts of the request),
//! are indistinguishable: every comparison that meets one meets the other
//! in the same place, and an evaluation that reads one reads the other's
//! equal values. So the decision of the first is the decision of the second
//! — unless it carries errors, whose messages name the entity; those
//! candidates are decided on their own.
//!
//! Records of one patient differ in ids and dates, but under the bundled
//! pack and a consent that excludes labels they differ in nothing a policy
//! names: a search over ten thousand of them makes a handful of decisions.

use cedar_policy::{ActionConstraint, EntityUid, Policy, PrincipalConstraint, ResourceConstraint};
use cedar_policy_core::ast::{BinaryOp, EntityType, EntityUID, ExprKind, Literal, PartialValue, Value};
use cedar_policy_core::entities::{Dereference, Entities as CoreEntities};

use crate::store::StoredEntity;

/// Attributes every key holds: the special categories read them.
const ALWAYS_READ: &str = "labels";

/// What a candidate's decision can depend on, as a comparable value,
/// borrowed from the batch's entities ([`Sharing::key`]) or from the store
/// ([`Sharing::stored_key`]). Keys of the two kinds are never compared.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key<'e> {
    kind: &'e EntityType,
    exists: bool,
    /// Its ancestors in a slice; its direct parents in the store.
    ancestors: Vec<&'e EntityUID>,
    /// The named attributes it has, by name; one it lacks is left out,
    /// which no list of present ones can equal.
    attributes: Vec<(&'e str, &'e Value)>,
    tags: Vec<(&'e str, &'e Value)>,
}

/// Which attributes the policies in force name, and which uids anything but
/// the candidate itself names.
pub(super) struct Sharing {
    names: foldhash::HashSet<String>,
    tags: bool,
    named: foldhash::HashSet<EntityUID>,
}

impl Sharing {
    /// Reads `policies` (those a candidate may still evaluate); `named` are
    /// the uids something else names: the candidates an entity of the slice
    /// points at, the fixed parts of the request, the context's entities,
    /// the rule sets' constants' members.
    pub(super) fn new<'p>(
        policies: impl Iterator<Item = &'p Policy>,
        named: impl Iterator<Item = EntityUid>,
    ) -> Self {
        let mut names: foldhash::HashSet<String> = foldhash::HashSet::default();
        names.insert(ALWAYS_READ.to_owned());
        let mut tags = false;
        let mut named: foldhash::HashSet<EntityUID> = named.map(|uid| uid.as_ref().clone()).collect();
        for policy in policies {
            scope_uids(policy, &mut named);
            let core: &cedar_policy_core::ast::Policy = policy.as_ref();
            let Some(body) = core.non_scope_constraints() else { continue };
            for expr in body.subexpressions() {
                match expr.expr_kind() {
                    ExprKind::GetAttr { attr, .. } | ExprKind::HasAttr { attr, .. } => {
                        names.insert(attr.to_string());
                    }
                    ExprKind::ExtHasAttr { attrs, .. } => names.extend(attrs.iter().map(ToString::to_string)),
                    ExprKind::BinaryApp { op: BinaryOp::GetTag | BinaryOp::HasTag, .. } => tags = true,
                    ExprKind::Lit(Literal::EntityUID(uid)) => {
                        named.insert(uid.as_ref().clone());
                    }
                    _ => {}
                }
            }
        }
        Self { names, tags, named }
    }

    /// The key of `candidate`, or `None` when it must be decided on its own.
    pub(super) fn key<'e>(
        &self,
        candidate: &'e EntityUid,
        entities: &'e cedar_policy::Entities,
    ) -> Option<Key<'e>> {
        let uid: &EntityUID = candidate.as_ref();
        if self.named.contains(uid) {
            return None;
        }
        let core: &CoreEntities = entities.as_ref();
        let kind = uid.entity_type();
        let entity = match core.entity(uid) {
            Dereference::Data(entity) => entity,
            Dereference::NoSuchEntity => {
                return Some(Key {
                    kind,
                    exists: false,
                    ancestors: Vec::new(),
                    attributes: Vec::new(),
                    tags: Vec::new(),
                });
            }
            Dereference::Residual(_) => return None,
        };
        let mut ancestors: Vec<&EntityUID> = entity.ancestors().collect();
        ancestors.sort_unstable();
        Some(Key {
            kind,
            exists: true,
            ancestors,
            attributes: concrete(entity.attrs().filter(|(name, _)| self.names.contains(name.as_str())))?,
            tags: if self.tags { concrete(entity.tags())? } else { Vec::new() },
        })
    }
}

impl Sharing {
    /// The key of `candidate` as the store holds it (`None` when the
    /// directory does not hold it), with its direct parents in place of
    /// its ancestors; `None` when it must be decided on its own.
    ///
    /// A slice computes an entity's ancestors from its parents alone, so
    /// two candidates with equal stored keys have equal [`Sharing::key`]s
    /// in any slice: a search decides one of them and gives the others
    /// its decision without slicing them at all.
    pub(super) fn stored_key<'e>(
        &self,
        candidate: &'e EntityUid,
        stored: Option<&'e StoredEntity>,
    ) -> Option<Key<'e>> {
        let uid: &EntityUID = candidate.as_ref();
        if self.named.contains(uid) {
            return None;
        }
        let kind = uid.entity_type();
        let Some(stored) = stored else {
            return Some(Key {
                kind,
                exists: false,
                ancestors: Vec::new(),
                attributes: Vec::new(),
                tags: Vec::new(),
            });
        };
        let entity: &cedar_policy_core::ast::Entity = stored.entity().as_ref();
        let mut parents: Vec<&EntityUID> = stored.parents().iter().map(AsRef::as_ref).collect();
        parents.sort_unstable();
        parents.dedup();
        Some(Key {
            kind,
            exists: true,
            ancestors: parents,
            attributes: concrete(entity.attrs().filter(|(name, _)| self.names.contains(name.as_str())))?,
            tags: if self.tags { concrete(entity.tags())? } else { Vec::new() },
        })
    }

    /// Adds uids that something in the decision names: they are decided on their own.
    pub(super) fn name(&mut self, named: impl IntoIterator<Item = EntityUid>) {
        self.named.extend(named.into_iter().map(|uid| uid.as_ref().clone()));
    }

    /// Whether something besides the candidate itself names `uid`.
    pub(super) fn is_named(&self, uid: &EntityUid) -> bool {
        self.named.contains(uid.as_ref())
    }
}

/// Attributes or tags as part of a key, by name; `None` (do not share) when
/// one is not a concrete value.
fn concrete<'e, N: AsRef<str> + 'e>(
    items: impl Iterator<Item = (&'e N, &'e PartialValue)>,
) -> Option<Vec<(&'e str, &'e Value)>> {
    let mut all = items
        .map(|(name, value)| match value {
            PartialValue::Value(value) => Some((name.as_ref(), value)),
            PartialValue::Residual(_) => None,
        })
        .collect::<Option<Vec<_>>>()?;
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Some(all)
}

/// The uids a policy's scope names.
fn scope_uids(policy: &Policy, named: &mut foldhash::HashSet<EntityUID>) {
    let mut add = |uid: &EntityUid| {
        named.insert(uid.as_ref().clone());
    };
    match policy.principal_constraint() {
        PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => {
            add(&uid)
        }
        PrincipalConstraint::Any | PrincipalConstraint::Is(_) => {}
    }
    match policy.resource_constraint() {
        ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => {
            add(&uid)
        }
        ResourceConstraint::Any | ResourceConstraint::Is(_) => {}
    }
    match policy.action_constraint() {
        ActionConstraint::Eq(uid) => add(&uid),
        ActionConstraint::In(uids) => uids.iter().for_each(add),
        ActionConstraint::Any => {}
    }
}

//! A set of evaluable policies, ready for decisions: scope-indexed, with
//! their annotations read and the entities their conditions name.
//!
//! The policy pack and every patient's consent partition are rule sets of
//! their own, so a decision can gather candidates from several of them and
//! still evaluate them under one Cedar authorization rule.

use std::collections::HashSet;

use cedar_policy::{EntityUid, Policy};
use serde_json::Value;

use crate::bundle::collect_escaped_uids;
use crate::condition::Condition;
use crate::constants::Constants;
use crate::error::LoadError;
use crate::index::{ScopeIndex, Subject};
use crate::obligation::PolicyNotes;

/// Indexed policies with their notes, in one order.
#[derive(Debug)]
pub(crate) struct RuleSet {
    index: ScopeIndex,
    notes: Vec<PolicyNotes>,
    /// Each policy's condition, compiled; `None` for a policy without one.
    conditions: Vec<Option<Condition>>,
    /// Entities named literally inside conditions, such as
    /// `Document::"handbook".owner`: Cedar must be able to dereference them,
    /// so every slice includes them.
    pub(crate) literal_uids: Vec<EntityUid>,
    /// Long set literals of the evaluated policies, built once (see [`crate::constants`]).
    pub(crate) constants: Constants,
}

impl RuleSet {
    pub(crate) fn new(policies: Vec<Policy>) -> Result<Self, LoadError> {
        // Each policy's JSON form is made once (for a parsed policy Cedar
        // parses its text again to make it) and serves every use.
        let mut literal_uids = HashSet::new();
        let mut constants = Constants::default();
        let policies: Vec<Policy> = policies
            .into_iter()
            .map(|policy| {
                let mut json = policy.to_json().ok();
                if let Some(json) = &mut json {
                    collect_literal_uids(json, &mut literal_uids);
                    if policy.is_static() {
                        constants.hoist(json);
                    }
                }
                without_source_locations(policy, json)
            })
            .collect();
        let notes = policies.iter().map(PolicyNotes::of).collect::<Result<_, _>>()?;
        let conditions = policies
            .iter()
            .map(|policy| {
                let core: &cedar_policy_core::ast::Policy = policy.as_ref();
                core.non_scope_constraints_arc().map(Condition::compile)
            })
            .collect();
        Ok(Self {
            index: ScopeIndex::new(policies),
            notes,
            conditions,
            literal_uids: literal_uids.into_iter().collect(),
            constants,
        })
    }

    /// Number of policies.
    pub(crate) fn len(&self) -> usize {
        self.notes.len()
    }

    /// The policy at `position` (in index order), as a candidate.
    pub(crate) fn at(&self, position: usize) -> Option<Candidate<'_>> {
        Some(Candidate {
            policy: self.index.policy(position)?,
            notes: self.notes.get(position)?,
            condition: self.conditions.get(position)?.as_ref(),
        })
    }

    /// The index, for a search that checks scopes part by part.
    pub(crate) fn index(&self) -> &ScopeIndex {
        &self.index
    }

    /// The notes of the policy with this id.
    pub(crate) fn notes_of(&self, id: &str) -> Option<&PolicyNotes> {
        self.notes.iter().find(|notes| notes.id == id)
    }

    /// The policies whose scope holds for this request, with their notes.
    pub(crate) fn applicable<'s>(
        &'s self,
        principal: &'s Subject<'_>,
        action: &'s Subject<'_>,
        resource: &'s Subject<'_>,
    ) -> impl Iterator<Item = Candidate<'s>> {
        self.index.applicable(principal, action, resource).filter_map(|(position, policy)| {
            Some(Candidate {
                policy,
                notes: self.notes.get(position)?,
                condition: self.conditions.get(position)?.as_ref(),
            })
        })
    }
}

/// A policy whose scope holds for a request: what the authorization rule evaluates.
#[derive(Clone, Copy)]
pub(crate) struct Candidate<'s> {
    pub(crate) policy: &'s Policy,
    pub(crate) notes: &'s PolicyNotes,
    /// The compiled condition; `None` when the policy has none (it always holds).
    pub(crate) condition: Option<&'s Condition>,
}

/// The same static policy, rebuilt from its JSON form, which carries no
/// source locations. Cedar's evaluator copies an expression's location into
/// every value it makes, and for a parsed policy that is a reference-counted
/// copy of the whole source text: about an eighth of a decision went into
/// those counts. Errors and explanations name policies by id, never by
/// position, so nothing is lost. A linked policy, or one the round trip
/// cannot carry, is kept as parsed.
fn without_source_locations(policy: Policy, json: Option<Value>) -> Policy {
    match json {
        Some(json) if policy.is_static() => {
            Policy::from_json(Some(policy.id().clone()), json).unwrap_or(policy)
        }
        _ => policy,
    }
}

/// Adds the entity literals that evaluating the conditions of a policy (in
/// its JSON form) may look up.
fn collect_literal_uids(policy: &Value, found: &mut HashSet<EntityUid>) {
    let conditions = policy.get("conditions").and_then(Value::as_array);
    for condition in conditions.into_iter().flatten() {
        if let Some(body) = condition.get("body") {
            collect_dereferenced(body, false, found);
        }
    }
}

/// Collects the entity literals of a condition (Cedar's JSON policy form)
/// that evaluation may look up: the left of `in`, anything whose attributes
/// or tags are read, and anything in an operation not known to leave its
/// operands alone. A literal that is only compared (`principal ==
/// User::"u"`, `principal in Group::"g"`, `[Doc::"d"].contains(resource)`)
/// needs no entity, and consents compile to exactly such conditions, so
/// their actors and organizations stay out of every slice.
fn collect_dereferenced(expr: &Value, dereferenced: bool, found: &mut HashSet<EntityUid>) {
    let Some(node) = expr.as_object() else { return };
    for (op, operands) in node {
        match op.as_str() {
            "Value" => {
                if dereferenced {
                    collect_escaped_uids(operands, found);
                }
            }
            "Var" | "Slot" | "unknown" => {}
            "in" | "getTag" | "hasTag" => {
                collect_dereferenced(&operands["left"], true, found);
                collect_dereferenced(&operands["right"], false, found);
            }
            "." | "has" => collect_dereferenced(&operands["left"], true, found),
            "is" => {
                let within = operands.get("in");
                collect_dereferenced(&operands["left"], within.is_some(), found);
                if let Some(within) = within {
                    collect_dereferenced(within, false, found);
                }
            }
            "if-then-else" => {
                collect_dereferenced(&operands["if"], false, found);
                collect_dereferenced(&operands["then"], dereferenced, found);
                collect_dereferenced(&operands["else"], dereferenced, found);
            }
            "Set" | "Record" => each_operand(operands, dereferenced, found),
            "==" | "!=" | "<" | "<=" | ">" | ">=" | "&&" | "||" | "!" | "neg" | "+" | "-" | "*"
            | "contains" | "containsAll" | "containsAny" | "isEmpty" | "like" => {
                each_operand(operands, false, found)
            }
            // Extension calls and anything newer: assume the worst.
            _ => each_operand(operands, true, found),
        }
    }
}

fn each_operand(operands: &Value, dereferenced: bool, found: &mut HashSet<EntityUid>) {
    match operands {
        Value::Array(items) => items.iter().for_each(|i| collect_dereferenced(i, dereferenced, found)),
        Value::Object(fields) => fields.values().for_each(|f| collect_dereferenced(f, dereferenced, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn literals(text: &str) -> Vec<String> {
        let mut uids = HashSet::new();
        if let Ok(policy) = Policy::from_str(text) {
            collect_literal_uids(&policy.to_json().unwrap(), &mut uids);
        }
        let mut found: Vec<String> = uids.iter().map(ToString::to_string).collect();
        found.sort();
        found
    }

    #[test]
    fn only_literals_that_evaluation_may_look_up_join_the_slice() {
        let found = literals(
            r#"permit(principal in Group::"scope", action, resource) when {
                principal in Group::"a" && principal == User::"u" && [Doc::"z"].contains(resource) &&
                Group::"b" in principal && Doc::"x".owner == principal && Doc::"y" has owner &&
                (if principal has flag then Doc::"w" else Doc::"v").owner == principal &&
                Doc::"t".hasTag("k") && User::"i" is User in Group::"c" && User::"j" is User
            };"#,
        );
        let expected = [
            r#"Doc::"t""#,
            r#"Doc::"v""#,
            r#"Doc::"w""#,
            r#"Doc::"x""#,
            r#"Doc::"y""#,
            r#"Group::"b""#,
            r#"User::"i""#,
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn literals_inside_unknown_operations_are_kept() {
        assert_eq!(
            literals(r#"permit(principal, action, resource) when { ip("10.0.0.1").isLoopback() };"#),
            Vec::<String>::new()
        );
        let found =
            literals(r#"permit(principal, action, resource) when { {a: Doc::"r"}.a.owner == principal };"#);
        assert_eq!(found, [r#"Doc::"r""#]);
    }

    #[test]
    fn policies_are_evaluated_without_source_locations_but_keep_their_id_and_annotations() {
        let text = r#"@id("p") @reason("why") permit (principal, action, resource) when { context.purpose == "TREAT" };"#;
        let parsed = Policy::from_str(text).unwrap();
        let location = |policy: &Policy| {
            let core: &cedar_policy_core::ast::Policy = policy.as_ref();
            core.condition().source_loc().cloned()
        };
        assert!(location(&parsed).is_some(), "a parsed policy carries its source");
        let stripped = without_source_locations(parsed.clone(), parsed.to_json().ok());
        assert_eq!(location(&stripped), None);
        assert_eq!(stripped.id(), parsed.id());
        assert_eq!(stripped.annotation("reason"), Some("why"));
        assert_eq!(stripped.to_json().unwrap(), parsed.to_json().unwrap());
    }
}

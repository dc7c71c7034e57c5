//! Long set literals, built once per rule set instead of once per decision.
//!
//! Cedar evaluates a set literal such as the 45 countries of the transfer
//! rules by building the set anew every time the condition runs: about
//! 200 ns per element, so nine microseconds of every practitioner's
//! decision went into one list that never changes. A set stored as an
//! entity attribute is built once, when the entity is made, and reading it
//! costs a reference count.
//!
//! So a rule set rewrites each set literal of plain values into an
//! attribute of an engine-owned entity, `Consentry::Constant::"<sha-256>"`,
//! named by the hash of its contents, so that equal lists in the pack and in
//! any consent are the same entity and different lists can never share a
//! name. The slice puts a rule set's constants into every decision before
//! anything a request or the store holds, so neither can stand in for one.
//! The policy text, its validation and everything shown to people keep the
//! literal; only the evaluated copy reads the attribute.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{Entity, EntityUid};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::store::{SCHEMA_GENERATION, StoredEntity};

/// The entity type of constants; no stored or sent entity is read under it.
pub(crate) const CONSTANT_TYPE: &str = "Consentry::Constant";

/// The attribute of a constant entity that holds the set.
const VALUES: &str = "values";

/// Shorter literals cost less to build than the slice entry that replaces them.
const SHORTEST_HOISTED: usize = 8;

/// The constants of one rule set, by uid.
#[derive(Debug, Default)]
pub(crate) struct Constants(HashMap<EntityUid, Arc<StoredEntity>>);

impl Constants {
    /// Rewrites, in a policy's JSON form, every set literal of at least
    /// [`SHORTEST_HOISTED`] plain values into a read of a constant, which
    /// it adds. A literal that cannot be made into an entity stays as it is.
    pub(crate) fn hoist(&mut self, expr: &mut Value) {
        match expr {
            Value::Object(node) => {
                if let Some(Value::Array(items)) = node.get("Set")
                    && let Some(read) = self.constant_for(items)
                {
                    *expr = read;
                    return;
                }
                node.values_mut().for_each(|operand| self.hoist(operand));
            }
            Value::Array(items) => items.iter_mut().for_each(|item| self.hoist(item)),
            _ => {}
        }
    }

    /// The constants, each already closed: they have no parents.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&EntityUid, &StoredEntity)> {
        self.0.iter().map(|(uid, stored)| (uid, stored.as_ref()))
    }

    /// The attribute read that stands for `items`, when every item is a plain value.
    fn constant_for(&mut self, items: &[Value]) -> Option<Value> {
        if items.len() < SHORTEST_HOISTED {
            return None;
        }
        let values: Vec<&Value> = items.iter().map(plain_value).collect::<Option<_>>()?;
        let id = content_hash(&values);
        let uid_json = json!({ "type": CONSTANT_TYPE, "id": id });
        let entity = Entity::from_json_value(
            json!({ "uid": uid_json, "attrs": { VALUES: values }, "parents": [] }),
            None,
        )
        .ok()?;
        let uid = entity.uid();
        self.0.entry(uid).or_insert_with(|| {
            let stored = StoredEntity::new(entity.clone());
            let closed: &cedar_policy_core::ast::Entity = entity.as_ref();
            stored.remember_closed(SCHEMA_GENERATION, Arc::new(closed.clone()));
            Arc::new(stored)
        });
        Some(json!({ ".": { "left": { "Value": { "__entity": uid_json } }, "attr": VALUES } }))
    }
}

/// The value of a literal element (`{"Value": …}`) that means the same in an
/// entity's attributes: a string, a number, a boolean or an entity reference.
fn plain_value(item: &Value) -> Option<&Value> {
    let value = item.as_object().filter(|node| node.len() == 1)?.get("Value")?;
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(value),
        Value::Object(escape) if escape.len() == 1 && escape.contains_key("__entity") => Some(value),
        _ => None,
    }
}

fn content_hash(values: &[&Value]) -> String {
    let mut hasher = Sha256::new();
    for value in values {
        let text = value.to_string();
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Context, Entities, PolicySet, Request};

    fn hoisted(text: &str) -> (Value, Constants) {
        let mut constants = Constants::default();
        let mut json = cedar_policy::Policy::from_str(text).unwrap().to_json().unwrap();
        constants.hoist(&mut json);
        (json, constants)
    }

    #[test]
    fn a_long_list_of_plain_values_is_read_from_one_constant() {
        let countries = r#"["AT","BE","BG","HR","CY","CZ","DK","EE","FI"]"#;
        let text = format!(
            "permit(principal, action, resource) when {{ {countries}.contains(context.country) && {countries}.containsAny(context.seen) }};"
        );
        let (json, constants) = hoisted(&text);
        assert_eq!(constants.iter().count(), 1, "equal lists share a constant");
        assert!(!json.to_string().contains("\"BG\""), "{json}");
        let policy = cedar_policy::Policy::from_json(None, json).unwrap();
        let policies = PolicySet::from_policies([policy]).unwrap();
        let entities =
            Entities::from_entities(constants.iter().map(|(_, stored)| stored.entity().clone()), None)
                .unwrap();
        let decide = |country: &str| {
            let context =
                Context::from_json_value(json!({ "country": country, "seen": ["US", country] }), None)
                    .unwrap();
            let uid = EntityUid::from_str(r#"User::"u""#).unwrap();
            let request = Request::new(uid.clone(), uid.clone(), uid, context, None).unwrap();
            Authorizer::new().is_authorized(&request, &policies, &entities).decision()
        };
        assert_eq!(decide("FI"), cedar_policy::Decision::Allow);
        assert_eq!(decide("US"), cedar_policy::Decision::Deny);
    }

    #[test]
    fn short_lists_and_lists_with_expressions_stay_literal() {
        let (_, constants) =
            hoisted(r#"permit(principal, action, resource) when { ["a","b"].contains(context.x) };"#);
        assert_eq!(constants.iter().count(), 0);
        let (_, constants) = hoisted(
            r#"permit(principal, action, resource) when { [1,2,3,4,5,6,7,context.y].contains(context.x) };"#,
        );
        assert_eq!(constants.iter().count(), 0);
    }

    #[test]
    fn entity_lists_become_constants_that_name_but_do_not_need_their_members() {
        let members: Vec<String> = (0..10).map(|i| format!(r#"User::"u{i}""#)).collect();
        let text = format!(
            "forbid(principal, action, resource) unless {{ [{}].contains(principal) }};",
            members.join(",")
        );
        let (_, constants) = hoisted(&text);
        let (uid, _) = constants.iter().next().unwrap();
        assert_eq!(uid.type_name().to_string(), CONSTANT_TYPE);
    }
}

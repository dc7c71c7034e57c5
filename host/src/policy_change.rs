//! What a new policy set changes: every set put in force is logged with
//! the ids of the policies it adds, removes and changes, so an operator can
//! tell what a reload or an API change did without diffing files.

use std::collections::BTreeMap;

use consentry_engine::PolicyBundle;

/// The ids of the policies (templates and links included) one set adds,
/// removes and changes relative to another.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PolicyChange {
    /// In the new set only.
    pub added: Vec<String>,
    /// In the old set only.
    pub removed: Vec<String>,
    /// In both, with another text.
    pub changed: Vec<String>,
}

impl PolicyChange {
    /// What changes from `before` to `after`, each list sorted.
    pub fn between(before: &PolicyBundle, after: &PolicyBundle) -> Self {
        let texts = |bundle: &PolicyBundle| -> BTreeMap<String, String> {
            bundle.policy_summaries().into_iter().map(|p| (p.id, p.text)).collect()
        };
        let (before, after) = (texts(before), texts(after));
        let mut change = Self::default();
        for (id, text) in &after {
            match before.get(id) {
                None => change.added.push(id.clone()),
                Some(old) if old != text => change.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        change.removed = before.keys().filter(|id| !after.contains_key(*id)).cloned().collect();
        change
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn bundle(text: &str) -> PolicyBundle {
        PolicyBundle::load(None, text, &[]).unwrap()
    }

    #[test]
    fn a_change_names_the_ids_added_removed_and_changed() {
        let before = bundle(
            "@id(\"keep\") permit(principal, action, resource);\n\
             @id(\"edit\") permit(principal, action, resource);\n\
             @id(\"drop\") forbid(principal, action, resource);",
        );
        let after = bundle(
            "@id(\"keep\") permit(principal, action, resource);\n\
             @id(\"edit\") forbid(principal, action, resource);\n\
             @id(\"new\") permit(principal, action, resource);",
        );
        let change = PolicyChange::between(&before, &after);
        assert_eq!(
            change,
            PolicyChange {
                added: vec!["new".into()],
                removed: vec!["drop".into()],
                changed: vec!["edit".into()]
            }
        );
        assert_eq!(PolicyChange::between(&after, &after), PolicyChange::default());
    }
}

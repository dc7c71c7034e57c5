//! Consent → Cedar policy text.
//!
//! HL7's reading of a consent is a tree: the root sets the base decision and
//! every nested provision is an exception that flips its parent. Cedar has no
//! such nesting, only "any matching forbid denies, else any matching permit
//! allows". The two agree when every node becomes one policy with its own
//! effect over the region it decides: its whole path of conditions, minus the
//! conditions of its children (which decide their part themselves). Regions
//! of a node and its descendants are then disjoint, so no policy of a consent
//! overrides another of the same consent, and across consents a matching deny
//! wins.
//!
//! A consent grants only what it says: a permit with no `action` on its path
//! covers access (read and search), `create` and `update` need the consent
//! actions that name them, and nothing ever permits `delete`. A deny with no
//! `action` denies every action, which is the safe reading of a refusal.
//!
//! A patient-level search (the resource is the `Patient`) meets none of a
//! deny's conditions on records. A deny on labels that is an exception to a
//! permit also writes a `redact` obligation on those labels, as HL7 LEAP
//! does; every other exclusion reaches such a search through the `filter`
//! obligation the engine attaches to it (see [`crate::plan`]), which lists
//! the records the searcher may read, or the search is denied.
//!
//! Scopes are filled wherever the conditions allow, because the engine
//! indexes scopes and evaluates only the policies whose scope can match.

mod conditions;
mod describe;

use std::collections::BTreeSet;

use super::{Action, Attr, Consent, Effect, Node, Window};
use crate::time::Bound;
use conditions::{action_test, actor_test, condition, is_about_records, one_of, quote};
use describe::describe;

/// Compiles a consent into Cedar policies. `id` and `version` are the store's identity for it.
/// A consent that is not active compiles to an empty string (it never counts).
///
/// Every policy is scoped to the consent's patient and carries `@id`
/// (`consent/<id>/v<version>/<node>`), `@consent`, `@consent_version` and a
/// readable `@reason`; every permit carries `@opens_labels`, the security
/// labels its provision path names. A deny nested in a permit that is about
/// security labels does not deny searches; instead an extra permit allows
/// them with `@obligation("redact")` and `@redact("<labels>")`, as HL7 LEAP
/// does. The periods along a policy's path become its activity window,
/// `@active_from`/`@active_until`, which the engine checks natively: Cedar
/// would parse every `datetime("…")` literal again on every evaluation.
pub fn compile(consent: &Consent, id: &str, version: u64) -> String {
    if !consent.is_active() {
        return String::new();
    }
    let mut compiler = Compiler { patient: &consent.patient, id, version, out: String::new() };
    compiler.visit(&consent.root, consent.decision, None, &mut Vec::new());
    compiler.out
}

/// Read and search: what a consent grants when it names no action.
fn access() -> BTreeSet<Action> {
    BTreeSet::from([Action::Read, Action::Search])
}

/// The actions a node itself allows: its `action`, or for a permit without
/// one, access only. `None` (a deny without `action`) limits nothing.
fn own_actions(node: &Node, effect: Effect) -> Option<BTreeSet<Action>> {
    match (&node.actions, effect) {
        (Some(actions), _) => Some(actions.clone()),
        (None, Effect::Permit) => Some(access()),
        (None, Effect::Deny) => None,
    }
}

/// The actions both limits allow; `None` when neither limits them.
fn within(outer: Option<&BTreeSet<Action>>, own: Option<BTreeSet<Action>>) -> Option<BTreeSet<Action>> {
    match (outer, own) {
        (None, own) => own,
        (Some(outer), None) => Some(outer.clone()),
        (Some(outer), Some(own)) => Some(outer.intersection(&own).copied().collect()),
    }
}

struct Compiler<'a> {
    patient: &'a str,
    id: &'a str,
    version: u64,
    out: String,
}

/// Which policy of a node to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The node's own region, with its own effect.
    Region,
    /// The search permit of a deny on labels: the labels become a `redact` obligation.
    Redact,
}

/// One policy to write: the region of `path`'s last node, or one of its companions.
struct Emit<'p, 'n> {
    path: &'p [&'n Node],
    /// The effect of `path`'s last node.
    effect: Effect,
    kind: Kind,
    /// The actions in the scope; `None` for any action.
    actions: Option<BTreeSet<Action>>,
}

impl<'n> Compiler<'_> {
    fn visit(
        &mut self,
        node: &'n Node,
        effect: Effect,
        outer: Option<&BTreeSet<Action>>,
        path: &mut Vec<&'n Node>,
    ) {
        path.push(node);
        let actions = within(outer, own_actions(node, effect));
        // With no action left on this path, neither this node nor anything below it can match.
        if actions.as_ref().is_none_or(|a| !a.is_empty()) {
            self.node(path, effect, actions.as_ref());
            for child in &node.children {
                self.visit(child, effect.flipped(), actions.as_ref(), path);
            }
        }
        path.pop();
    }

    fn node(&mut self, path: &[&'n Node], effect: Effect, actions: Option<&BTreeSet<Action>>) {
        let Some(node) = path.last() else { return };
        let emit = |kind, actions| Emit { path, effect, kind, actions };
        let searches = actions.is_none_or(|a| a.contains(&Action::Search));
        if effect == Effect::Permit || !searches {
            self.emit(emit(Kind::Region, actions.cloned()));
            return;
        }
        let (ancestors, _) = path.split_at(path.len().saturating_sub(1));
        // A deny below the root always lies within a permit, which limits its actions.
        match actions {
            Some(actions) if !ancestors.is_empty() && labels(node).next().is_some() => {
                // A deny on sensitive labels inside a permit blocks reading such records, but a
                // search still runs and the caller redacts them from its results.
                let rest: BTreeSet<Action> =
                    actions.iter().copied().filter(|a| *a != Action::Search).collect();
                if !rest.is_empty() {
                    self.emit(emit(Kind::Region, Some(rest)));
                }
                self.emit(emit(Kind::Redact, Some(BTreeSet::from([Action::Search]))));
            }
            _ => self.emit(emit(Kind::Region, actions.cloned())),
        }
    }

    fn emit(&mut self, policy: Emit<'_, 'n>) {
        let Some(node) = policy.path.last() else { return };
        let Some(mut unless) =
            carve_outs(node.children.iter(), policy.effect.flipped(), policy.actions.as_ref())
        else {
            // A child covers everything this policy would decide.
            return;
        };
        let effect = if policy.kind == Kind::Redact { Effect::Permit } else { policy.effect };
        if effect == Effect::Deny {
            // A consent governs who else may see the patient's data; it never
            // takes away the patient's own right of access (GDPR Art. 15).
            unless.push(format!("principal == Patient::{}", quote(self.patient)));
        }
        let attrs = || policy.path.iter().flat_map(|n| n.attrs.iter().map(move |attr| (*n, attr)));
        // The first single actor on the path goes into the scope; the rest are conditions.
        let (scoped, principal) = attrs()
            .find_map(|(_, attr)| match attr {
                Attr::Actors(actors) if actors.len() == 1 => Some((attr, actors.first().map(actor_test))),
                _ => None,
            })
            .unzip();
        let principal = principal.flatten();
        let mut when = Vec::new();
        // The redact permit's own record conditions: it must also hold for the patient itself.
        let mut own_record_terms = Vec::new();
        for (n, attr) in attrs() {
            // The path's periods become the policy's activity window, which the
            // engine checks against the evaluation time before evaluating anything.
            if scoped.is_some_and(|s| std::ptr::eq(s, attr)) || matches!(attr, Attr::Period(_)) {
                continue;
            }
            match policy.kind {
                Kind::Redact if std::ptr::eq(n, *node) && is_about_records(attr) => {
                    if !matches!(attr, Attr::Labels(_)) {
                        own_record_terms.push(condition(attr));
                    }
                }
                _ => when.push(condition(attr)),
            }
        }
        if !own_record_terms.is_empty() {
            when.push(format!("(resource is Patient || ({}))", own_record_terms.join(" && ")));
        }
        let names_purpose = attrs().any(|(_, a)| matches!(a, Attr::Purposes(_)));
        if effect == Effect::Permit && !names_purpose {
            // Purpose limitation: research and marketing are secondary uses that
            // need a consent naming them (GDPR Art. 9(2)(a)), never a blanket one.
            let secondary = one_of("context.purpose", &SECONDARY_PURPOSES.map(String::from));
            when.push(format!("context has purpose && !{secondary}"));
        }
        let windows = attrs().filter_map(|(_, attr)| match attr {
            Attr::Period(window) => Some(window),
            _ => None,
        });
        let (active_from, active_until) = intersect(windows);

        let (label, reason) = match policy.kind {
            Kind::Region => {
                (node.label.clone(), describe(effect, policy.actions.as_ref(), node.attrs.iter()))
            }
            Kind::Redact => {
                let own = node.attrs.iter().filter(|a| !matches!(a, Attr::Labels(_)));
                let codes: Vec<&str> = labels(node).collect();
                let what = describe(Effect::Permit, policy.actions.as_ref(), own);
                (
                    format!("{}/redact", node.label),
                    format!("{what} with records labelled {} redacted", codes.join(" or ")),
                )
            }
        };
        let mut lines = vec![
            format!("@id({})", quote(&format!("consent/{}/v{}/{label}", self.id, self.version))),
            format!("@consent({})", quote(self.id)),
            format!("@consent_version(\"{}\")", self.version),
            format!("@reason({})", quote(&format!("consent {} v{} {reason}", self.id, self.version))),
        ];
        if effect == Effect::Permit {
            let redacted = || labels(node).filter(|_| policy.kind == Kind::Redact);
            lines.push(opens_labels(policy.path, &redacted().collect::<Vec<_>>()));
        }
        if let Some(from) = active_from {
            lines.push(format!("@active_from(\"{}\")", Bound::utc(from).literal()));
        }
        if let Some(until) = active_until {
            lines.push(format!("@active_until(\"{}\")", Bound::utc(until).literal()));
        }
        if policy.kind == Kind::Redact {
            lines.push("@obligation(\"redact\")".to_owned());
            lines.push(format!("@redact({})", quote(&labels(node).collect::<Vec<_>>().join(", "))));
        }
        let keyword = match effect {
            Effect::Permit => "permit",
            Effect::Deny => "forbid",
        };
        let principal = principal.unwrap_or_else(|| "principal".to_owned());
        let action = policy.actions.as_ref().map_or_else(|| "action".to_owned(), action_test);
        let resource = format!("resource in Patient::{}", quote(self.patient));
        lines.push(format!("{keyword} (\n  {principal},\n  {action},\n  {resource}\n)"));
        if !when.is_empty() {
            lines.push(format!("when {{ {} }}", when.join(" && ")));
        }
        lines.extend(unless.iter().map(|term| format!("unless {{ {term} }}")));
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out.push_str(&lines.join("\n"));
        self.out.push_str(";\n");
    }
}

/// Research and marketing: uses beyond care that a consent must name explicitly.
const SECONDARY_PURPOSES: [&str; 2] = ["HMARKT", "HRESCH"];

/// `@opens_labels("PSY, HIV")`: the security labels a permit's provision path
/// names (empty when none), less those it redacts. The engine lets a permit
/// open a record of a special category only when it names the category's label.
fn opens_labels(path: &[&Node], redacted: &[&str]) -> String {
    let mut named: Vec<&str> = Vec::new();
    for label in path.iter().flat_map(|n| labels(n)) {
        if !redacted.contains(&label) && !named.contains(&label) {
            named.push(label);
        }
    }
    format!("@opens_labels({})", quote(&named.join(", ")))
}

/// The conditions of the children (of effect `effect`), each of which is
/// taken out of the parent's region. `None` when one child takes all of it.
/// Action limits are stated relative to `actions`, the parent's scope: a
/// child outside it takes nothing, one that covers it needs no action test.
fn carve_outs<'c>(
    children: impl Iterator<Item = &'c Node>,
    effect: Effect,
    actions: Option<&BTreeSet<Action>>,
) -> Option<Vec<String>> {
    let mut unless = Vec::new();
    for child in children {
        let mut terms = Vec::new();
        if let Some(own) = own_actions(child, effect) {
            match actions {
                None => terms.push(action_test(&own)),
                Some(scope) => {
                    let overlap: BTreeSet<Action> = own.intersection(scope).copied().collect();
                    if overlap.is_empty() {
                        continue;
                    }
                    if overlap.len() < scope.len() {
                        terms.push(action_test(&overlap));
                    }
                }
            }
        }
        terms.extend(child.attrs.iter().map(condition));
        if terms.is_empty() {
            return None;
        }
        unless.push(terms.join(" && "));
    }
    Some(unless)
}

fn labels(node: &Node) -> impl Iterator<Item = &str> {
    node.attrs
        .iter()
        .filter_map(|attr| match attr {
            Attr::Labels(codes) => Some(codes.iter().map(String::as_str)),
            _ => None,
        })
        .flatten()
}

/// The instants (Unix milliseconds) from which and until which (exclusive)
/// every one of these periods holds.
fn intersect<'w>(windows: impl Iterator<Item = &'w Window>) -> (Option<i64>, Option<i64>) {
    let (mut from, mut until): (Option<i64>, Option<i64>) = (None, None);
    for window in windows {
        if let Some(start) = &window.start {
            let start = start.start().utc_ms();
            from = Some(from.map_or(start, |f| f.max(start)));
        }
        if let Some(end) = window.end.as_ref().and_then(|e| e.end()) {
            let end = end.utc_ms();
            until = Some(until.map_or(end, |u| u.min(end)));
        }
    }
    (from, until)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::str::FromStr;

    use cedar_policy::{Policy, PolicySet};
    use serde_json::json;

    use super::describe::and;
    use super::*;

    #[test]
    fn quoted_strings_survive_cedar_parsing() {
        for text in ["plain", "with \"quotes\"", "back\\slash", "new\nline\r\t", "nul\0bell\u{7}", "ümlaut ✓"]
        {
            let policy =
                Policy::from_str(&format!("@reason({}) permit(principal, action, resource);", quote(text)))
                    .expect("parses");
            assert_eq!(policy.annotation("reason"), Some(text));
        }
    }

    #[test]
    fn action_lists_read_naturally() {
        assert_eq!(and(&["read".into()]), "read");
        assert_eq!(and(&["read".into(), "search".into()]), "read and search");
        assert_eq!(and(&["read".into(), "search".into(), "create".into()]), "read, search and create");
    }

    #[test]
    fn inactive_consents_compile_to_nothing() {
        let consent = Consent::from_json(&json!({
            "resourceType": "Consent", "status": "draft",
            "patient": {"reference": "Patient/p-1"}, "provision": {"type": "permit"}
        }))
        .unwrap();
        assert_eq!(compile(&consent, "c", 1), "");
    }

    #[test]
    fn a_child_without_conditions_empties_its_parent() {
        let consent = Consent::from_json(&json!({
            "resourceType": "Consent", "status": "active",
            "patient": {"reference": "Patient/p-1"},
            "provision": {"type": "permit", "provision": [{"type": "deny"}]}
        }))
        .unwrap();
        let text = compile(&consent, "c", 1);
        let set = PolicySet::from_str(&text).unwrap();
        let ids: Vec<_> = set.policies().filter_map(|p| p.annotation("id")).collect();
        assert_eq!(ids, ["consent/c/v1/provision[0]"]);
    }

    #[test]
    fn actions_outside_the_parents_are_dropped() {
        let consent = Consent::from_json(&json!({
            "resourceType": "Consent", "status": "active",
            "subject": {"reference": "Patient/p-1"}, "decision": "permit",
            "provision": [{
                "action": [{"coding": [{"code": "access"}]}],
                "provision": [
                    {"action": [{"coding": [{"code": "correct"}]}]},
                    {"action": [{"coding": [{"code": "access"}, {"code": "collect"}]}], "purpose": [{"code": "HMARKT"}]}
                ]
            }]
        }))
        .unwrap();
        let text = compile(&consent, "c", 1);
        let set = PolicySet::from_str(&text).unwrap();
        let ids: Vec<_> = set.policies().filter_map(|p| p.annotation("id")).collect();
        // The root permit names no action, so it grants access only, and provision[0] denies all
        // of that: the root decides nothing. provision[0].provision[0] (correct) cannot happen under
        // access; the other needs no action test.
        assert_eq!(ids, ["consent/c/v1/provision[0]", "consent/c/v1/provision[0].provision[1]"]);
        assert!(text.contains("forbid (\n  principal,\n  action in [Action::\"read\", Action::\"search\"],"));
        assert!(text.contains("unless { context has purpose && context.purpose == \"HMARKT\" }\n"));
        assert!(text.contains("unless { principal == Patient::\"p-1\" };"), "the patient is exempt: {text}");
    }

    #[test]
    fn lists_of_values_compile_to_comparisons_not_set_literals() {
        let consent = Consent::from_json(&json!({
            "resourceType": "Consent", "status": "active",
            "patient": {"reference": "Patient/p-1"},
            "provision": {"type": "permit",
                "purpose": [{"code": "TREAT"}, {"code": "ETREAT"}],
                "provision": [
                    {"type": "deny", "securityLabel": [{"code": "PSY"}, {"code": "HIV"}]},
                    {"type": "deny", "code": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "F32.1"}]}]}
                ]}
        }))
        .unwrap();
        let text = compile(&consent, "c", 1);
        PolicySet::from_str(&text).unwrap();
        assert!(text.contains("(context.purpose == \"TREAT\" || context.purpose == \"ETREAT\")"), "{text}");
        assert!(
            text.contains("(resource.labels.contains(\"PSY\") || resource.labels.contains(\"HIV\"))"),
            "{text}"
        );
        assert!(text.contains("resource.codes.contains("), "{text}");
        assert!(!text.contains("containsAny") && !text.contains("].contains("), "no set literal: {text}");

        let blanket = Consent::from_json(&json!({
            "resourceType": "Consent", "status": "active",
            "patient": {"reference": "Patient/p-1"}, "provision": {"type": "permit"}
        }))
        .unwrap();
        let text = compile(&blanket, "c", 1);
        assert!(
            text.contains("!(context.purpose == \"HMARKT\" || context.purpose == \"HRESCH\")"),
            "a blanket consent still excludes the secondary purposes: {text}"
        );
    }
}

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
//! Scopes are filled wherever the conditions allow, because the engine
//! indexes scopes and evaluates only the policies whose scope can match.

use std::collections::BTreeSet;

use super::{Action, Actor, Attr, Consent, Effect, Node, Window};
use crate::time::Bound;

/// v3 Confidentiality codes: a record holds these in `confidentiality`, not in `labels`.
const CONFIDENTIALITY: [&str; 6] = ["U", "L", "M", "N", "R", "V"];

/// Compiles a consent into Cedar policies. `id` and `version` are the store's identity for it.
/// A consent that is not active compiles to an empty string (it never counts).
///
/// Every policy is scoped to the consent's patient and carries `@id`
/// (`consent/<id>/v<version>/<node>`), `@consent`, `@consent_version` and a
/// readable `@reason`. A deny nested in a permit that is about security labels
/// does not deny searches; instead an extra permit allows them with
/// `@obligation("redact")` and `@redact("<labels>")`, as HL7 LEAP does.
/// The periods along a policy's path become its activity window,
/// `@active_from`/`@active_until`, which the engine checks natively: Cedar
/// would parse every `datetime("…")` literal again on every evaluation.
pub fn compile(consent: &Consent, id: &str, version: u64) -> String {
    if !consent.is_active() {
        return String::new();
    }
    let mut compiler = Compiler { patient: &consent.patient, id, version, out: String::new() };
    compiler.visit(&consent.root, consent.decision, &mut Vec::new());
    compiler.out
}

struct Compiler<'a> {
    patient: &'a str,
    id: &'a str,
    version: u64,
    out: String,
}

/// One policy to write: the region of `path`'s last node, or its redacted-search permit.
struct Emit<'p, 'n> {
    path: &'p [&'n Node],
    effect: Effect,
    /// The actions in the scope; `None` for any action.
    actions: Option<BTreeSet<Action>>,
    /// Exempts searches from this policy, when its scope cannot.
    except_search: bool,
    /// This is the search permit of a sensitive deny: its labels become a redaction obligation.
    redact: bool,
}

impl<'n> Compiler<'_> {
    fn visit(&mut self, node: &'n Node, effect: Effect, path: &mut Vec<&'n Node>) {
        path.push(node);
        let actions = path_actions(path);
        // With no action left on this path, neither this node nor anything below it can match.
        if actions.as_ref().is_none_or(|a| !a.is_empty()) {
            self.node(path, effect, actions);
            for child in &node.children {
                self.visit(child, effect.flipped(), path);
            }
        }
        path.pop();
    }

    fn node(&mut self, path: &[&'n Node], effect: Effect, actions: Option<BTreeSet<Action>>) {
        let Some(node) = path.last() else { return };
        let sensitive = effect == Effect::Deny && path.len() > 1 && labels(node).next().is_some();
        if !sensitive {
            self.emit(Emit { path, effect, actions, except_search: false, redact: false });
            return;
        }
        // A deny on sensitive labels inside a permit blocks reading such records, but a
        // search still runs and the caller redacts them from its results.
        let searches = actions.as_ref().is_none_or(|a| a.contains(&Action::Search));
        match actions {
            None => self.emit(Emit { path, effect, actions: None, except_search: true, redact: false }),
            Some(actions) => {
                let rest: BTreeSet<Action> = actions.into_iter().filter(|a| *a != Action::Search).collect();
                if !rest.is_empty() {
                    self.emit(Emit {
                        path,
                        effect,
                        actions: Some(rest),
                        except_search: false,
                        redact: false,
                    });
                }
            }
        }
        if searches {
            let search = Some(BTreeSet::from([Action::Search]));
            self.emit(Emit {
                path,
                effect: Effect::Permit,
                actions: search,
                except_search: false,
                redact: true,
            });
        }
    }

    fn emit(&mut self, policy: Emit<'_, 'n>) {
        let Some(node) = policy.path.last() else { return };
        let Some(mut unless) = carve_outs(&node.children, policy.actions.as_ref()) else {
            // A child covers everything this node would decide.
            return;
        };
        if policy.except_search {
            unless.push(action_test(&BTreeSet::from([Action::Search])));
        }
        if policy.effect == Effect::Deny {
            // A consent governs who else may see the patient's data; it never
            // takes away the patient's own right of access (GDPR Art. 15).
            unless.push(format!("principal == Patient::{}", quote(self.patient)));
        }
        // The first single actor on the path goes into the scope; the rest are conditions.
        let (scoped, principal) = policy
            .path
            .iter()
            .flat_map(|n| &n.attrs)
            .find_map(|attr| match attr {
                Attr::Actors(actors) if actors.len() == 1 => Some((attr, actors.first().map(actor_test))),
                _ => None,
            })
            .unzip();
        let principal = principal.flatten();
        let dropped_labels = |n: &Node, attr: &Attr| {
            policy.redact && std::ptr::eq(n, *node) && matches!(attr, Attr::Labels(_))
        };
        // The path's periods become the policy's activity window, which the
        // engine checks against the evaluation time before evaluating anything.
        let in_window = |attr: &Attr| matches!(attr, Attr::Period(_));
        let when: Vec<String> = policy
            .path
            .iter()
            .flat_map(|n| n.attrs.iter().map(move |attr| (*n, attr)))
            .filter(|(n, attr)| {
                !scoped.is_some_and(|s| std::ptr::eq(s, *attr))
                    && !dropped_labels(n, attr)
                    && !in_window(attr)
            })
            .map(|(_, attr)| condition(attr))
            .collect();
        let mut when = when;
        let names_purpose = policy.path.iter().flat_map(|n| &n.attrs).any(|a| matches!(a, Attr::Purposes(_)));
        if policy.effect == Effect::Permit && !names_purpose {
            // Purpose limitation: research and marketing are secondary uses that
            // need a consent naming them (GDPR Art. 9(2)(a)), never a blanket one.
            let secondary = one_of("context.purpose", &SECONDARY_PURPOSES.map(String::from));
            when.push(format!("context has purpose && !{secondary}"));
        }
        let windows = policy.path.iter().flat_map(|n| &n.attrs).filter_map(|attr| match attr {
            Attr::Period(window) => Some(window),
            _ => None,
        });
        let (active_from, active_until) = intersect(windows);

        let label = if policy.redact { format!("{}/redact", node.label) } else { node.label.clone() };
        let reason = if policy.redact {
            let own = node.attrs.iter().filter(|a| !matches!(a, Attr::Labels(_)));
            let codes: Vec<&str> = labels(node).collect();
            let what = describe(Effect::Permit, Some(&BTreeSet::from([Action::Search])), own);
            format!("{what} with records labelled {} redacted", codes.join(" or "))
        } else {
            describe(policy.effect, node.actions.as_ref(), node.attrs.iter())
        };
        let mut lines = vec![
            format!("@id({})", quote(&format!("consent/{}/v{}/{label}", self.id, self.version))),
            format!("@consent({})", quote(self.id)),
            format!("@consent_version(\"{}\")", self.version),
            format!("@reason({})", quote(&format!("consent {} v{} {reason}", self.id, self.version))),
        ];
        if let Some(from) = active_from {
            lines.push(format!("@active_from(\"{}\")", Bound::utc(from).literal()));
        }
        if let Some(until) = active_until {
            lines.push(format!("@active_until(\"{}\")", Bound::utc(until).literal()));
        }
        if policy.redact {
            lines.push("@obligation(\"redact\")".to_owned());
            lines.push(format!("@redact({})", quote(&labels(node).collect::<Vec<_>>().join(", "))));
        }
        if policy.effect == Effect::Permit {
            lines.push(format!("@opens_labels({})", quote(&opened_labels(policy.path, policy.redact))));
        }
        let keyword = match policy.effect {
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

/// The actions every node on the path allows: `None` when no node limits them.
fn path_actions(path: &[&Node]) -> Option<BTreeSet<Action>> {
    path.iter().filter_map(|n| n.actions.as_ref()).fold(None, |acc, own| match acc {
        None => Some(own.clone()),
        Some(acc) => Some(acc.intersection(own).copied().collect()),
    })
}

/// The conditions of the children, each of which is taken out of the parent's region.
/// `None` when one child takes all of it. Action limits are stated relative to
/// `actions`, the parent's scope: a child outside it takes nothing, one that covers
/// it needs no action test.
fn carve_outs(children: &[Node], actions: Option<&BTreeSet<Action>>) -> Option<Vec<String>> {
    let mut unless = Vec::new();
    for child in children {
        let mut terms = Vec::new();
        if let Some(own) = &child.actions {
            match actions {
                None => terms.push(action_test(own)),
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

/// The security labels a permit's provision path names, for
/// `@opens_labels`: the special categories it opens (see
/// `crate::special`). A redacted-search permit opens none of the labels
/// it redacts.
fn opened_labels(path: &[&Node], redact: bool) -> String {
    let named = if redact { path.split_last().map_or(path, |(_, above)| above) } else { path };
    let codes: BTreeSet<&str> = named.iter().flat_map(|node| labels(node)).collect();
    codes.into_iter().collect::<Vec<_>>().join(", ")
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

/// One attribute as a Cedar condition that holds when any of its values matches.
fn condition(attr: &Attr) -> String {
    match attr {
        Attr::Period(window) => bounds("context.now", window),
        Attr::Actors(actors) => any(actors.iter().map(actor_test).collect()),
        Attr::Purposes(codes) => format!("context has purpose && {}", one_of("context.purpose", codes)),
        Attr::ResourceTypes(types) => {
            format!("resource is Record && {}", one_of("resource.resourceType", types))
        }
        Attr::Codes(codes) => {
            format!("resource is Record && resource has codes && {}", contains_any("resource.codes", codes))
        }
        Attr::Labels(codes) => {
            let labelled = contains_any("resource.labels", codes);
            let levels: Vec<String> =
                codes.iter().filter(|c| CONFIDENTIALITY.contains(&c.as_str())).cloned().collect();
            if levels.is_empty() {
                format!("resource is Record && {labelled}")
            } else {
                format!(
                    "resource is Record && ({labelled} || {})",
                    one_of("resource.confidentiality", &levels)
                )
            }
        }
        Attr::DataPeriod(window) => {
            format!("resource is Record && resource has date && {}", bounds("resource.date", window))
        }
        Attr::Records(records) => {
            any(records.iter().map(|r| format!("resource == Record::{}", quote(&r.id))).collect())
        }
    }
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

fn bounds(subject: &str, window: &Window) -> String {
    let from =
        window.start.as_ref().map(|s| format!("{subject} >= datetime({})", quote(&s.start().literal())));
    let until = window
        .end
        .as_ref()
        .and_then(|e| e.end())
        .map(|e| format!("{subject} < datetime({})", quote(&e.literal())));
    from.into_iter().chain(until).collect::<Vec<_>>().join(" && ")
}

fn any(terms: Vec<String>) -> String {
    if terms.len() == 1 { terms.join("") } else { format!("({})", terms.join(" || ")) }
}

/// `subject` equals one of `values`. Spelled as comparisons rather than
/// `[…].contains(subject)`: Cedar builds a set literal anew on every
/// evaluation, which costs more than the comparisons.
fn one_of(subject: &str, values: &[String]) -> String {
    any(values.iter().map(|value| format!("{subject} == {}", quote(value))).collect())
}

/// The set `subject` holds one of `values`: `subject.contains(…)` for
/// each, rather than `subject.containsAny([…])`, for the same reason.
fn contains_any(subject: &str, values: &[String]) -> String {
    any(values.iter().map(|value| format!("{subject}.contains({})", quote(value))).collect())
}

fn actor_test(actor: &Actor) -> String {
    let op = if actor.kind.is_collective() { "in" } else { "==" };
    format!("principal {op} {}::{}", actor.kind.type_name(), quote(&actor.id))
}

fn action_test(actions: &BTreeSet<Action>) -> String {
    let uids: Vec<String> = actions.iter().map(|a| format!("Action::\"{}\"", a.name())).collect();
    match uids.as_slice() {
        [one] => format!("action == {one}"),
        _ => format!("action in [{}]", uids.join(", ")),
    }
}

/// A readable account of one provision, e.g. `permits read and search by
/// Practitioner/dr-1 for TREAT from 2026-01-01 until 2026-12-31`. Only
/// identifiers and codes appear, never clinical content.
fn describe<'a>(
    effect: Effect,
    actions: Option<&BTreeSet<Action>>,
    attrs: impl Iterator<Item = &'a Attr>,
) -> String {
    let verb = match effect {
        Effect::Permit => "permits",
        Effect::Deny => "denies",
    };
    let what = match actions {
        Some(actions) => and(&actions.iter().map(|a| a.name().to_owned()).collect::<Vec<_>>()),
        None => "access".to_owned(),
    };
    let (mut records, mut record_kinds, mut by, mut purposes, mut period) =
        (Vec::new(), String::new(), Vec::new(), Vec::new(), Vec::new());
    for attr in attrs {
        match attr {
            Attr::Records(refs) => records.extend(refs.iter().map(|r| r.reference.clone())),
            Attr::ResourceTypes(types) => record_kinds.push_str(&format!(" of type {}", types.join(" or "))),
            Attr::Labels(codes) => record_kinds.push_str(&format!(" labelled {}", codes.join(" or "))),
            Attr::Codes(codes) => record_kinds.push_str(&format!(" coded {}", codes.join(" or "))),
            Attr::DataPeriod(window) => record_kinds.push_str(&format!(" dated {}", span(window))),
            Attr::Actors(actors) => {
                by.push(actors.iter().map(|a| format!("{}/{}", a.kind.type_name(), a.id)).collect::<Vec<_>>())
            }
            Attr::Purposes(codes) => purposes.push(codes.join(" or ")),
            Attr::Period(window) => period.push(span(window)),
        }
    }
    let mut text = format!("{verb} {what}");
    if !records.is_empty() {
        text.push_str(&format!(" to {}{record_kinds}", records.join(" or ")));
    } else if !record_kinds.is_empty() {
        text.push_str(&format!(" to records{record_kinds}"));
    }
    for actors in by {
        text.push_str(&format!(" by {}", actors.join(" or ")));
    }
    for purpose in purposes {
        text.push_str(&format!(" for {purpose}"));
    }
    for span in period {
        text.push_str(&format!(" {span}"));
    }
    text
}

fn span(window: &Window) -> String {
    let from = window.start.as_ref().map(|s| format!("from {}", s.text()));
    let until = window.end.as_ref().map(|e| format!("until {}", e.text()));
    from.into_iter().chain(until).collect::<Vec<_>>().join(" ")
}

fn and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// A Cedar string literal: quotes, backslashes and control characters escaped
/// so that ids and codes from the consent can never end the string early.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::str::FromStr;

    use cedar_policy::{Policy, PolicySet};
    use serde_json::json;

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
        // provision[0].provision[0] (correct) cannot happen under access; the other needs no action test.
        assert_eq!(
            ids,
            ["consent/c/v1/root", "consent/c/v1/provision[0]", "consent/c/v1/provision[0].provision[1]"]
        );
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

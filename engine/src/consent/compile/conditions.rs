//! One provision attribute as Cedar condition text.
//!
//! Short lists of values become chains of comparisons, as fast as Cedar
//! evaluates anything; long ones become one set literal, because Cedar's
//! parser, its JSON form and its evaluator all recurse once per `||`, and a
//! consent naming a few hundred actors overflowed the stack (issue 13,
//! finding 8). A set literal is one level deep whatever its length, so the
//! depth of a compiled condition no longer depends on what a consent lists.

use std::collections::BTreeSet;

use crate::consent::{Action, Actor, ActorKind, Attr, Window};

/// Lists up to this long are written as comparisons joined by `||`. Cedar
/// builds a set literal anew on every evaluation, which costs more than a
/// few comparisons, so the decision benchmark's short lists stay as they were.
const COMPARISONS_UP_TO: usize = 8;

/// v3 Confidentiality codes: a record holds these in `confidentiality`, not in `labels`.
const CONFIDENTIALITY: [&str; 6] = ["U", "L", "M", "N", "R", "V"];

/// Whether the attribute is about the record, so that it never holds for a
/// `Patient` resource (a patient-level search).
pub(super) fn is_about_records(attr: &Attr) -> bool {
    matches!(
        attr,
        Attr::ResourceTypes(_) | Attr::Codes(_) | Attr::Labels(_) | Attr::DataPeriod(_) | Attr::Records(_)
    )
}

/// One attribute as a Cedar condition that holds when any of its values matches.
pub(super) fn condition(attr: &Attr) -> String {
    match attr {
        Attr::Period(window) => bounds("context.now", window),
        Attr::Actors(actors) => actors_test(actors),
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
            let uids: Vec<String> = records.iter().map(|r| format!("Record::{}", quote(&r.id))).collect();
            if uids.len() <= COMPARISONS_UP_TO {
                any(uids.iter().map(|uid| format!("resource == {uid}")).collect())
            } else {
                format!("resource is Record && [{}].contains(resource)", uids.join(", "))
            }
        }
    }
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

/// The terms joined by `||`, parenthesised when there are several.
fn any(terms: Vec<String>) -> String {
    if terms.len() == 1 { terms.join("") } else { format!("({})", terms.join(" || ")) }
}

/// `subject` equals one of `values`: comparisons for a short list, a set literal for a long one.
pub(super) fn one_of(subject: &str, values: &[String]) -> String {
    if values.len() <= COMPARISONS_UP_TO {
        any(values.iter().map(|value| format!("{subject} == {}", quote(value))).collect())
    } else {
        format!("[{}].contains({subject})", quoted_list(values))
    }
}

/// The set `subject` holds one of `values`: `subject.contains(…)` for each
/// value of a short list, `subject.containsAny([…])` for a long one.
fn contains_any(subject: &str, values: &[String]) -> String {
    if values.len() <= COMPARISONS_UP_TO {
        any(values.iter().map(|value| format!("{subject}.contains({})", quote(value))).collect())
    } else {
        format!("{subject}.containsAny([{}])", quoted_list(values))
    }
}

fn quoted_list(values: &[String]) -> String {
    values.iter().map(|value| quote(value)).collect::<Vec<_>>().join(", ")
}

/// The principal is one of the actors. A long list is grouped by entity
/// type, since Cedar's validator wants the elements of a set to share one.
fn actors_test(actors: &[Actor]) -> String {
    if actors.len() <= COMPARISONS_UP_TO {
        return any(actors.iter().map(actor_test).collect());
    }
    let mut kinds: Vec<ActorKind> = Vec::new();
    for actor in actors {
        if !kinds.contains(&actor.kind) {
            kinds.push(actor.kind);
        }
    }
    let groups = kinds.into_iter().map(|kind| {
        let uids: Vec<String> = actors
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| format!("{}::{}", kind.type_name(), quote(&a.id)))
            .collect();
        match uids.as_slice() {
            [one] if kind.is_collective() => format!("principal in {one}"),
            [one] => format!("principal == {one}"),
            _ if kind.is_collective() => format!("principal in [{}]", uids.join(", ")),
            _ => format!("(principal is {} && [{}].contains(principal))", kind.type_name(), uids.join(", ")),
        }
    });
    any(groups.collect())
}

/// Collective actors match their members (`principal in …`), the others only themselves.
pub(super) fn actor_test(actor: &Actor) -> String {
    let op = if actor.kind.is_collective() { "in" } else { "==" };
    format!("principal {op} {}::{}", actor.kind.type_name(), quote(&actor.id))
}

pub(super) fn action_test(actions: &BTreeSet<Action>) -> String {
    let uids: Vec<String> = actions.iter().map(|a| format!("Action::\"{}\"", a.name())).collect();
    match uids.as_slice() {
        [one] => format!("action == {one}"),
        _ => format!("action in [{}]", uids.join(", ")),
    }
}

/// A Cedar string literal: quotes, backslashes and control characters escaped
/// so that ids and codes from the consent can never end the string early.
pub(crate) fn quote(text: &str) -> String {
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

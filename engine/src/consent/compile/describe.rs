//! The readable `@reason` of a compiled consent policy: what it permits or
//! denies, to whom, for what. Only identifiers and codes appear, never
//! clinical content. A reason names exactly the actions its policy covers,
//! so that an Allow never reads broader than what was granted.

use std::collections::BTreeSet;

use crate::consent::{Action, Attr, Effect, Window};

/// A readable account of one provision, e.g. `permits read and search by
/// Practitioner/dr-1 for TREAT from 2026-01-01 until 2026-12-31`.
/// `actions` are the policy's own; `None` (a deny's) is every action.
pub(super) fn describe<'a>(
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
        None => "every action".to_owned(),
    };
    let mut text = format!("{verb} {what}");
    text.push_str(&qualifiers(attrs));
    text
}

/// The records, actors, purposes and periods of a provision, as they follow
/// its verb: ` to records labelled PSY by Organization/54 for TREAT`.
fn qualifiers<'a>(attrs: impl Iterator<Item = &'a Attr>) -> String {
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
    let mut text = String::new();
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

/// `read`, `read and search`, `read, search and create`.
pub(super) fn and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

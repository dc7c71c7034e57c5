//! The attributes of one provision: period, actors, actions, purposes,
//! resource types, codes, security labels, data period and data.
//!
//! Each attribute narrows the provision it sits on, so each is read strictly:
//! a value we cannot map onto the schema (an unknown action code, a coding
//! without a code, an actor that is no entity) is refused rather than dropped,
//! because dropping it would widen a permit or weaken a deny. Nested provisions
//! are normalised here too, as exceptions that flip their parent's effect.
//!
//! An actor is read as the requester, so only an actor with a recipient role
//! (or with no role) is accepted: a custodian, author or delegatee named in a
//! provision is not the one who asks, and granting it access would give it
//! what the consent never gave (issue 13, finding 17).

use std::collections::BTreeSet;

use super::limits::Budget;
use super::raw::{RawActor, RawCodeableConcept, RawCoding, RawData, RawPeriod, RawProvision};
use super::reference::{is_resource_type, split_reference};
use super::{NEVER_IGNORED, parse_effect};
use crate::consent::{Action, Actor, ActorKind, Attr, ConsentError, Effect, Node, RecordRef, Window};
use crate::time::DateTime;

/// Where a provision sits: its JSON path, its label in policy ids, its
/// nesting level (the R4 root provision is level 0, its children level 1),
/// and how many values the provisions above it list.
pub(super) struct Place<'a> {
    pub(super) path: &'a str,
    pub(super) label: &'a str,
    pub(super) level: usize,
    pub(super) inherited: usize,
}

/// Normalises one provision. `parent` is the parent's effect, `None` for the R4
/// root (whose `type` the caller has read); `outer` is a condition from the
/// consent itself that the root carries. `budget` counts it and its lists
/// against the consent's size limits.
pub(super) fn provision(
    raw: &RawProvision,
    place: &Place<'_>,
    effect: Effect,
    parent: Option<Effect>,
    outer: Option<Attr>,
    budget: &mut Budget,
) -> Result<Node, ConsentError> {
    let Place { path, label, level, inherited } = *place;
    budget.provision(level, path)?;
    if raw.expression.is_some() {
        return Err(ConsentError::invalid(
            format!("{path}.expression"),
            format!("unsupported `expression`, {NEVER_IGNORED}"),
        ));
    }
    if let (Some(parent), Some(code)) = (parent, raw.kind.as_deref()) {
        let at = format!("{path}.type");
        if parse_effect(code, &at)? != effect {
            return Err(ConsentError::invalid(
                at,
                format!(
                    "a nested provision is an exception that flips its parent, so its type must be `{}` \
                     where the parent's is `{}`",
                    effect.code(),
                    parent.code()
                ),
            ));
        }
    }
    let mut attrs: Vec<Attr> = outer.into_iter().collect();
    attrs.extend(window(raw.period.as_ref(), &format!("{path}.period"))?.map(Attr::Period));
    if let Some(actors) = &raw.actor {
        let at = format!("{path}.actor");
        let actors = non_empty(actors, &at)?;
        budget.values(actors.len(), &at)?;
        let actors = actors.iter().enumerate().map(|(i, a)| actor(a, &format!("{at}[{i}]")));
        attrs.push(Attr::Actors(actors.collect::<Result<_, _>>()?));
    }
    let actions = match &raw.action {
        Some(concepts) => Some(actions(non_empty(concepts, &format!("{path}.action"))?, path)?),
        None => None,
    };
    if let Some(purposes) = &raw.purpose {
        let at = format!("{path}.purpose");
        attrs.push(Attr::Purposes(budget.counted(codes(purposes, &at)?, &at)?));
    }
    for (element, types) in [("class", &raw.class), ("resourceType", &raw.resource_type)] {
        if let Some(types) = types {
            let at = format!("{path}.{element}");
            attrs.push(Attr::ResourceTypes(budget.counted(resource_types(types, &at)?, &at)?));
        }
    }
    if let Some(documents) = &raw.document_type {
        let at = format!("{path}.documentType");
        let keys =
            non_empty(documents, &at)?.iter().enumerate().map(|(i, c)| coding_key(c, &format!("{at}[{i}]")));
        attrs.push(Attr::Codes(budget.counted(keys.collect::<Result<_, _>>()?, &at)?));
    }
    if let Some(concepts) = &raw.code {
        let at = format!("{path}.code");
        attrs.push(Attr::Codes(budget.counted(concept_keys(concepts, &at)?, &at)?));
    }
    if let Some(labels) = &raw.security_label {
        let at = format!("{path}.securityLabel");
        attrs.push(Attr::Labels(budget.counted(codes(labels, &at)?, &at)?));
    }
    attrs.extend(window(raw.data_period.as_ref(), &format!("{path}.dataPeriod"))?.map(Attr::DataPeriod));
    if let Some(data) = &raw.data {
        let at = format!("{path}.data");
        let records = non_empty(data, &at)?.iter().enumerate().map(|(i, d)| record(d, &format!("{at}[{i}]")));
        attrs.push(Attr::Records(budget.counted(records.collect::<Result<_, _>>()?, &at)?));
    }
    let own: usize = attrs.iter().map(Attr::values).sum();
    let mut children = Vec::new();
    for (i, child) in raw.provision.iter().flatten().enumerate() {
        let child_label =
            if label == "root" { format!("provision[{i}]") } else { format!("{label}.provision[{i}]") };
        let child_path = format!("{path}.provision[{i}]");
        let place =
            Place { path: &child_path, label: &child_label, level: level + 1, inherited: inherited + own };
        children.push(provision(child, &place, effect.flipped(), Some(effect), None, budget)?);
    }
    // This provision's policy repeats the lists above it and those of its exceptions.
    let exceptions: usize = children.iter().flat_map(|c: &Node| &c.attrs).map(Attr::values).sum();
    budget.compiled(inherited + own + exceptions, path)?;
    Ok(Node { label: label.to_owned(), actions, attrs, children })
}

/// FHIR forbids empty arrays; an empty restriction list is ambiguous (nothing, or
/// no restriction?), so it is refused rather than guessed.
fn non_empty<'a, T>(items: &'a [T], path: &str) -> Result<&'a [T], ConsentError> {
    if items.is_empty() {
        return Err(ConsentError::invalid(
            path,
            "an empty list is not allowed in FHIR; omit the element instead",
        ));
    }
    Ok(items)
}

/// A period with at least one bound that still constrains something, or `None`.
pub(super) fn window(raw: Option<&RawPeriod>, path: &str) -> Result<Option<Window>, ConsentError> {
    let Some(raw) = raw else { return Ok(None) };
    let parse = |text: Option<&String>, bound: &str| {
        text.map(|t| {
            DateTime::parse(t).map_err(|message| ConsentError::invalid(format!("{path}.{bound}"), message))
        })
        .transpose()
    };
    let start = parse(raw.start.as_ref(), "start")?;
    let end = parse(raw.end.as_ref(), "end")?;
    if let (Some(start), Some(end)) = (&start, &end)
        && end.end().is_some_and(|until| start.start().utc_ms() >= until.utc_ms())
    {
        return Err(ConsentError::invalid(
            path,
            format!("the start `{}` is after the end `{}`", start.text(), end.text()),
        ));
    }
    // An end past year 9999 bounds nothing Cedar can represent.
    let end = end.filter(|end| end.end().is_some());
    Ok((start.is_some() || end.is_some()).then_some(Window { start, end }))
}

/// v3 ParticipationType, the code system of `provision.actor.role`.
const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";

/// The roles that make an actor the one who receives the data, that is the
/// requester: information recipient (IRCP) and its kinds primary recipient
/// (PRCP) and tracker (TRC).
const RECIPIENT_ROLES: [&str; 3] = ["IRCP", "PRCP", "TRC"];

fn actor(raw: &RawActor, path: &str) -> Result<Actor, ConsentError> {
    if let Some(role) = &raw.role {
        recipient_role(role, &format!("{path}.role"))?;
    }
    let at = format!("{path}.reference");
    let Some(text) = raw.reference.as_ref().and_then(|r| r.reference.as_deref()) else {
        return Err(ConsentError::invalid(
            at,
            format!(
                "an actor needs a literal `reference`; identifier-only actors cannot be matched, {NEVER_IGNORED}"
            ),
        ));
    };
    let resolved = split_reference(text).and_then(|(kind, id)| Some((ActorKind::from_type(kind)?, id)));
    match resolved {
        Some((kind, id)) => Ok(Actor { kind, id: id.to_owned() }),
        None => Err(ConsentError::invalid(
            at,
            format!(
                "`{text}` cannot be an actor: expected a reference to a Practitioner, Organization, \
                 RelatedPerson, CareTeam, Group or Patient"
            ),
        )),
    }
}

/// Accepts a role that makes the actor the requester; refuses any other,
/// since the actor would otherwise be granted what the consent gave someone else.
fn recipient_role(role: &RawCodeableConcept, path: &str) -> Result<(), ConsentError> {
    let codings = codings(role, path)?;
    let recipient = codings.iter().any(|coding| {
        let known_system = coding.system.as_deref().is_none_or(|s| s == PARTICIPATION_TYPE);
        known_system && coding.code.as_deref().is_some_and(|code| RECIPIENT_ROLES.contains(&code))
    });
    if recipient {
        return Ok(());
    }
    let named: Vec<String> =
        codings.iter().filter_map(|c| c.code.as_deref()).map(|c| format!("`{c}`")).collect();
    Err(ConsentError::invalid(
        path,
        format!(
            "an actor is read as the requester, so its role must be an information recipient \
             (v3 ParticipationType IRCP, PRCP or TRC) or absent; {} is not, {NEVER_IGNORED}",
            if named.is_empty() { "a role without a code".to_owned() } else { named.join(", ") }
        ),
    ))
}

/// Consent action codes (http://terminology.hl7.org/CodeSystem/consentaction), matched on code alone.
fn actions(concepts: &[RawCodeableConcept], path: &str) -> Result<BTreeSet<Action>, ConsentError> {
    let mut actions = BTreeSet::new();
    for (i, concept) in concepts.iter().enumerate() {
        let at = format!("{path}.action[{i}]");
        for (j, coding) in codings(concept, &at)?.iter().enumerate() {
            let at = format!("{at}.coding[{j}]");
            let code = code(coding, &at)?;
            let mapped: &[Action] = match code {
                "access" | "use" | "disclose" => &[Action::Read, Action::Search],
                "collect" => &[Action::Create],
                "correct" => &[Action::Update],
                "delete" => {
                    return Err(ConsentError::invalid(
                        format!("{at}.code"),
                        "no consent grants `delete`: records are deleted under the record keeper's rules, \
                         never by a patient's consent",
                    ));
                }
                other => {
                    return Err(ConsentError::invalid(
                        format!("{at}.code"),
                        format!(
                            "unknown consent action `{other}`: expected access, use, disclose, collect or correct"
                        ),
                    ));
                }
            };
            actions.extend(mapped);
        }
    }
    Ok(actions)
}

fn codings<'a>(concept: &'a RawCodeableConcept, path: &str) -> Result<&'a [RawCoding], ConsentError> {
    match concept.coding.as_deref() {
        Some(codings) if !codings.is_empty() => Ok(codings),
        _ => Err(ConsentError::invalid(
            format!("{path}.coding"),
            format!("a coding is required: text alone cannot be matched, {NEVER_IGNORED}"),
        )),
    }
}

fn code<'a>(coding: &'a RawCoding, path: &str) -> Result<&'a str, ConsentError> {
    match coding.code.as_deref() {
        Some(code) if !code.is_empty() => Ok(code),
        _ => Err(ConsentError::invalid(
            format!("{path}.code"),
            format!("a `code` is required, {NEVER_IGNORED}"),
        )),
    }
}

/// The codes of a list of codings, whatever their system.
fn codes(codings: &[RawCoding], path: &str) -> Result<Vec<String>, ConsentError> {
    let codings = non_empty(codings, path)?;
    codings.iter().enumerate().map(|(i, c)| code(c, &format!("{path}[{i}]")).map(str::to_owned)).collect()
}

fn resource_types(codings: &[RawCoding], path: &str) -> Result<Vec<String>, ConsentError> {
    let types = codes(codings, path)?;
    for (i, name) in types.iter().enumerate() {
        if !is_resource_type(name) {
            return Err(ConsentError::invalid(
                format!("{path}[{i}].code"),
                format!(
                    "`{name}` is not a FHIR resource type; profiles and document classes are not supported"
                ),
            ));
        }
    }
    Ok(types)
}

/// A coding as `Record.codes` holds it: `system|code`, or the bare code without a system.
fn coding_key(coding: &RawCoding, path: &str) -> Result<String, ConsentError> {
    let code = code(coding, path)?;
    Ok(match coding.system.as_deref() {
        Some(system) if !system.is_empty() => format!("{system}|{code}"),
        _ => code.to_owned(),
    })
}

/// Every coding of every concept: codings of one concept are alternatives too.
fn concept_keys(concepts: &[RawCodeableConcept], path: &str) -> Result<Vec<String>, ConsentError> {
    let mut keys = Vec::new();
    for (i, concept) in non_empty(concepts, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        for (j, coding) in codings(concept, &at)?.iter().enumerate() {
            keys.push(coding_key(coding, &format!("{at}.coding[{j}]"))?);
        }
    }
    Ok(keys)
}

fn record(raw: &RawData, path: &str) -> Result<RecordRef, ConsentError> {
    match raw.meaning.as_deref() {
        Some("instance") => {}
        Some(other) => {
            return Err(ConsentError::invalid(
                format!("{path}.meaning"),
                format!("unsupported data meaning `{other}` (only `instance` is), {NEVER_IGNORED}"),
            ));
        }
        None => return Err(ConsentError::invalid(format!("{path}.meaning"), "`meaning` is required")),
    }
    let at = format!("{path}.reference.reference");
    let Some(text) = raw.reference.as_ref().and_then(|r| r.reference.as_deref()) else {
        return Err(ConsentError::invalid(
            at,
            format!("a literal `Type/id` reference is required, {NEVER_IGNORED}"),
        ));
    };
    match split_reference(text) {
        Some((kind, id)) => Ok(RecordRef { id: id.to_owned(), reference: format!("{kind}/{id}") }),
        None => Err(ConsentError::invalid(at, format!("`{text}` is not a literal `Type/id` reference"))),
    }
}

//! The FHIR JSON of a Consent, and its normalisation into the model that
//! [`super::compile`] works from.
//!
//! R4 and R5 differ in shape (one root provision with a `type` versus a root
//! `decision` and a list of provisions) but not in meaning, so both end up as
//! the same tree of [`Node`]s: a root with the base decision whose children
//! flip it. Every field is optional in the serde model so that a missing
//! element is reported by name as FHIR content we cannot honour (422), and
//! only a wrongly typed value is reported as malformed JSON (400).

use std::collections::BTreeSet;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::{
    Action, Actor, ActorKind, Attr, Consent, ConsentError, ConsentStatus, Effect, FhirVersion, Node,
    RecordRef, Window,
};
use crate::time::DateTime;

/// Refusal wording for elements that would narrow a provision in a way we cannot enforce.
const NEVER_IGNORED: &str = "refused so that a restriction is never ignored";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConsent<P> {
    id: Option<String>,
    status: Option<String>,
    patient: Option<RawReference>,
    subject: Option<RawReference>,
    decision: Option<String>,
    period: Option<RawPeriod>,
    provision: Option<P>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProvision {
    #[serde(rename = "type")]
    kind: Option<String>,
    period: Option<RawPeriod>,
    actor: Option<Vec<RawActor>>,
    action: Option<Vec<RawCodeableConcept>>,
    security_label: Option<Vec<RawCoding>>,
    purpose: Option<Vec<RawCoding>>,
    class: Option<Vec<RawCoding>>,
    resource_type: Option<Vec<RawCoding>>,
    document_type: Option<Vec<RawCoding>>,
    code: Option<Vec<RawCodeableConcept>>,
    data_period: Option<RawPeriod>,
    data: Option<Vec<RawData>>,
    expression: Option<IgnoredAny>,
    provision: Option<Vec<RawProvision>>,
}

#[derive(Deserialize)]
struct RawReference {
    reference: Option<String>,
}

#[derive(Deserialize)]
struct RawPeriod {
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
struct RawCoding {
    system: Option<String>,
    code: Option<String>,
}

#[derive(Deserialize)]
struct RawCodeableConcept {
    coding: Option<Vec<RawCoding>>,
}

#[derive(Deserialize)]
struct RawActor {
    reference: Option<RawReference>,
}

#[derive(Deserialize)]
struct RawData {
    meaning: Option<String>,
    reference: Option<RawReference>,
}

/// Parses and validates a Consent resource.
pub(super) fn parse(value: &Value) -> Result<Consent, ConsentError> {
    let Value::Object(root) = value else {
        return Err(ConsentError::malformed(".", "a consent must be a JSON object"));
    };
    match root.get("resourceType") {
        Some(Value::String(kind)) if kind == "Consent" => {}
        Some(Value::String(kind)) => {
            return Err(ConsentError::invalid("resourceType", format!("expected `Consent`, found `{kind}`")));
        }
        Some(_) => return Err(ConsentError::malformed("resourceType", "expected a string")),
        None => return Err(ConsentError::invalid("resourceType", "`resourceType` must be `Consent`")),
    }
    refuse_modifier_extensions(value, &mut String::new())?;
    match detect_version(root)? {
        FhirVersion::R4 => r4(deserialize(value)?),
        FhirVersion::R5 => r5(deserialize(value)?),
    }
}

/// R5 lists its provisions, R4 has one root provision; without provisions the
/// root elements tell. Elements of the other release that decide whose consent
/// it is or what it decides are refused rather than ignored.
fn detect_version(root: &Map<String, Value>) -> Result<FhirVersion, ConsentError> {
    let has = |key: &str| root.get(key).is_some_and(|v| !v.is_null());
    let version = match root.get("provision") {
        Some(Value::Array(_)) => FhirVersion::R5,
        Some(Value::Object(_)) => FhirVersion::R4,
        Some(Value::Null) | None if has("decision") || has("subject") => FhirVersion::R5,
        Some(Value::Null) | None if has("patient") => FhirVersion::R4,
        Some(Value::Null) | None => {
            return Err(ConsentError::invalid(
                ".",
                "cannot tell FHIR R4 from R5: expected `patient` (R4) or `subject` and `decision` (R5)",
            ));
        }
        Some(_) => {
            return Err(ConsentError::malformed(
                "provision",
                "expected an object (FHIR R4) or an array (FHIR R5)",
            ));
        }
    };
    let (foreign, release, other): (&[&str], _, _) = match version {
        FhirVersion::R4 => (&["decision", "subject"], "R4", "R5"),
        FhirVersion::R5 => (&["patient"], "R5", "R4"),
    };
    match foreign.iter().find(|key| has(key)) {
        Some(key) => Err(ConsentError::invalid(
            *key,
            format!(
                "`{key}` is a FHIR {other} element in a FHIR {release} consent; mixed releases are refused"
            ),
        )),
        None => Ok(version),
    }
}

fn r4(raw: RawConsent<RawProvision>) -> Result<Consent, ConsentError> {
    let status = status(raw.status.as_deref())?;
    let patient = patient(raw.patient.as_ref(), "patient")?;
    let root = raw.provision.as_ref().ok_or_else(|| {
        ConsentError::invalid(
            "provision",
            "an R4 consent needs a root `provision` whose `type` is its decision",
        )
    })?;
    let decision = match root.kind.as_deref() {
        Some(code) => parse_effect(code, "provision.type")?,
        None => {
            return Err(ConsentError::invalid(
                "provision.type",
                "the root provision needs a `type` (permit or deny): the base decision is never guessed",
            ));
        }
    };
    // R4 has no consent-level period; one sent anyway still narrows the consent.
    let outer = window(raw.period.as_ref(), "period")?.map(Attr::Period);
    let root = provision(root, "provision", "root", decision, None, outer)?;
    Ok(Consent { id: raw.id, status, version: FhirVersion::R4, patient, decision, root })
}

fn r5(raw: RawConsent<Vec<RawProvision>>) -> Result<Consent, ConsentError> {
    let status = status(raw.status.as_deref())?;
    let patient = patient(raw.subject.as_ref(), "subject")?;
    let decision = match raw.decision.as_deref() {
        Some(code) => parse_effect(code, "decision")?,
        None => {
            return Err(ConsentError::invalid(
                "decision",
                "`decision` (permit or deny) is required: the base decision is never guessed",
            ));
        }
    };
    let attrs = window(raw.period.as_ref(), "period")?.map(Attr::Period).into_iter().collect();
    let children = raw
        .provision
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, child)| {
            let at = format!("provision[{i}]");
            provision(child, &at, &at, decision.flipped(), Some(decision), None)
        })
        .collect::<Result<_, _>>()?;
    let root = Node { label: "root".to_owned(), actions: None, attrs, children };
    Ok(Consent { id: raw.id, status, version: FhirVersion::R5, patient, decision, root })
}

fn deserialize<'a, T: Deserialize<'a>>(value: &'a Value) -> Result<T, ConsentError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        ConsentError::malformed(path, error.into_inner().to_string())
    })
}

/// A `modifierExtension` may change the meaning of whatever holds it, so one we
/// do not understand (which is all of them) makes the consent unusable.
fn refuse_modifier_extensions(value: &Value, path: &mut String) -> Result<(), ConsentError> {
    let len = path.len();
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                if key == "modifierExtension" {
                    return Err(ConsentError::invalid(
                        path.clone(),
                        format!("unsupported `modifierExtension`, {NEVER_IGNORED}"),
                    ));
                }
                refuse_modifier_extensions(inner, path)?;
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                refuse_modifier_extensions(inner, path)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

fn status(code: Option<&str>) -> Result<ConsentStatus, ConsentError> {
    Ok(match code {
        Some("draft") => ConsentStatus::Draft,
        Some("proposed") => ConsentStatus::Proposed,
        Some("active") => ConsentStatus::Active,
        // R5 renamed `rejected` to `not-done`.
        Some("rejected" | "not-done") => ConsentStatus::Rejected,
        Some("inactive") => ConsentStatus::Inactive,
        Some("entered-in-error") => ConsentStatus::EnteredInError,
        Some(other) => {
            return Err(ConsentError::invalid(
                "status",
                format!(
                    "unknown status `{other}`: expected draft, proposed, active, rejected, not-done, \
                     inactive or entered-in-error"
                ),
            ));
        }
        None => return Err(ConsentError::invalid("status", "`status` is required")),
    })
}

fn parse_effect(code: &str, path: &str) -> Result<Effect, ConsentError> {
    match code {
        "permit" => Ok(Effect::Permit),
        "deny" => Ok(Effect::Deny),
        other => {
            Err(ConsentError::invalid(path, format!("unknown decision `{other}`: expected permit or deny")))
        }
    }
}

fn patient(reference: Option<&RawReference>, element: &str) -> Result<String, ConsentError> {
    let path = format!("{element}.reference");
    let Some(text) = reference.and_then(|r| r.reference.as_deref()) else {
        return Err(ConsentError::invalid(path, "the patient is required, as a `Patient/<id>` reference"));
    };
    match split_reference(text) {
        Some(("Patient", id)) => Ok(id.to_owned()),
        _ => Err(ConsentError::invalid(path, format!("`{text}` is not a `Patient/<id>` reference"))),
    }
}

/// `Type/id`, or an absolute URL ending in `/Type/id`, optionally with `/_history/<version>`.
/// Contained (`#x`) and `urn:` references name no logical id and are not accepted.
fn split_reference(text: &str) -> Option<(&str, &str)> {
    let current = match text.split_once("/_history/") {
        Some((head, version)) if !version.is_empty() && !version.contains('/') => head,
        Some(_) => return None,
        None => text,
    };
    let (base, id) = current.rsplit_once('/')?;
    let kind = match base.rsplit_once('/') {
        Some((server, kind)) if server.contains("://") => kind,
        Some(_) => return None,
        None => base,
    };
    let is_type = kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && kind.chars().all(|c| c.is_ascii_alphanumeric());
    (is_type && is_fhir_id(id)).then_some((kind, id))
}

/// FHIR's `id` datatype: 1 to 64 letters, digits, `-` and `.`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A FHIR resource type name such as `Observation`.
fn is_resource_type(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphabetic())
}

/// Normalises one provision. `parent` is the parent's effect, `None` for the R4
/// root (whose `type` the caller has read); `outer` is a condition from the
/// consent itself that the root carries.
fn provision(
    raw: &RawProvision,
    path: &str,
    label: &str,
    effect: Effect,
    parent: Option<Effect>,
    outer: Option<Attr>,
) -> Result<Node, ConsentError> {
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
        let actors = actors.iter().enumerate().map(|(i, a)| actor(a, &format!("{at}[{i}]")));
        attrs.push(Attr::Actors(actors.collect::<Result<_, _>>()?));
    }
    let actions = match &raw.action {
        Some(concepts) => Some(actions(non_empty(concepts, &format!("{path}.action"))?, path)?),
        None => None,
    };
    if let Some(purposes) = &raw.purpose {
        attrs.push(Attr::Purposes(codes(purposes, &format!("{path}.purpose"))?));
    }
    for (element, types) in [("class", &raw.class), ("resourceType", &raw.resource_type)] {
        if let Some(types) = types {
            attrs.push(Attr::ResourceTypes(resource_types(types, &format!("{path}.{element}"))?));
        }
    }
    if let Some(documents) = &raw.document_type {
        let at = format!("{path}.documentType");
        let keys =
            non_empty(documents, &at)?.iter().enumerate().map(|(i, c)| coding_key(c, &format!("{at}[{i}]")));
        attrs.push(Attr::Codes(keys.collect::<Result<_, _>>()?));
    }
    if let Some(concepts) = &raw.code {
        attrs.push(Attr::Codes(concept_keys(concepts, &format!("{path}.code"))?));
    }
    if let Some(labels) = &raw.security_label {
        attrs.push(Attr::Labels(codes(labels, &format!("{path}.securityLabel"))?));
    }
    attrs.extend(window(raw.data_period.as_ref(), &format!("{path}.dataPeriod"))?.map(Attr::DataPeriod));
    if let Some(data) = &raw.data {
        let at = format!("{path}.data");
        let records = non_empty(data, &at)?.iter().enumerate().map(|(i, d)| record(d, &format!("{at}[{i}]")));
        attrs.push(Attr::Records(records.collect::<Result<_, _>>()?));
    }
    let children = raw
        .provision
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, child)| {
            let child_label =
                if label == "root" { format!("provision[{i}]") } else { format!("{label}.provision[{i}]") };
            provision(
                child,
                &format!("{path}.provision[{i}]"),
                &child_label,
                effect.flipped(),
                Some(effect),
                None,
            )
        })
        .collect::<Result<_, _>>()?;
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
fn window(raw: Option<&RawPeriod>, path: &str) -> Result<Option<Window>, ConsentError> {
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

fn actor(raw: &RawActor, path: &str) -> Result<Actor, ConsentError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use serde_json::json;

    use super::*;
    use crate::consent::ConsentErrorKind;

    fn r4(provision: Value) -> Value {
        json!({
            "resourceType": "Consent",
            "id": "c-1",
            "status": "active",
            "scope": {"coding": [{"code": "patient-privacy"}]},
            "patient": {"reference": "Patient/p-100"},
            "provision": provision,
        })
    }

    fn r5(provision: Value) -> Value {
        json!({
            "resourceType": "Consent",
            "status": "active",
            "subject": {"reference": "Patient/p-100"},
            "decision": "deny",
            "provision": provision,
        })
    }

    fn error(value: &Value) -> (ConsentErrorKind, String) {
        let error = Consent::from_json(value).expect_err("refused");
        (error.kind, error.path)
    }

    fn invalid(path: &str) -> (ConsentErrorKind, String) {
        (ConsentErrorKind::Invalid, path.to_owned())
    }

    fn malformed(path: &str) -> (ConsentErrorKind, String) {
        (ConsentErrorKind::Malformed, path.to_owned())
    }

    #[test]
    fn reads_both_releases_into_the_same_shape() {
        let four = Consent::from_json(&r4(json!({"type": "permit"}))).unwrap();
        assert_eq!(four.fhir_version(), FhirVersion::R4);
        assert_eq!(four.id(), Some("c-1"));
        assert_eq!(four.patient(), "p-100");
        assert!(four.is_active());
        assert_eq!(four.decision, Effect::Permit);
        let five = Consent::from_json(&r5(json!([{"purpose": [{"code": "BTG"}]}]))).unwrap();
        assert_eq!(five.fhir_version(), FhirVersion::R5);
        assert_eq!(five.id(), None);
        assert_eq!(five.decision, Effect::Deny);
        assert_eq!(five.root.children.len(), 1);
        assert_eq!(five.root.children.first().map(|c| c.label.as_str()), Some("provision[0]"));
    }

    #[test]
    fn status_of_the_wrong_type_is_malformed() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["status"] = json!(3);
        assert_eq!(error(&consent), malformed("status"));
    }

    #[test]
    fn unknown_status_is_invalid() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["status"] = json!("approved");
        assert_eq!(error(&consent), invalid("status"));
        consent["status"] = json!("not-done");
        assert_eq!(Consent::from_json(&consent).unwrap().status(), ConsentStatus::Rejected);
    }

    #[test]
    fn wrong_resource_type_is_invalid() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["resourceType"] = json!("Observation");
        assert_eq!(error(&consent), invalid("resourceType"));
    }

    #[test]
    fn missing_patient_is_invalid() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["patient"] = json!({"display": "Anna"});
        assert_eq!(error(&consent), invalid("patient.reference"));
        let mut consent = r5(json!([]));
        consent.as_object_mut().unwrap().remove("subject");
        assert_eq!(error(&consent), invalid("subject.reference"));
        let mut consent = r5(json!([]));
        consent["subject"] = json!({"reference": "Group/g-1"});
        assert_eq!(error(&consent), invalid("subject.reference"));
    }

    #[test]
    fn patient_may_be_an_absolute_url() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["patient"] = json!({"reference": "https://fhir.example.org/r4/Patient/p-7/_history/3"});
        assert_eq!(Consent::from_json(&consent).unwrap().patient(), "p-7");
    }

    #[test]
    fn bad_actor_reference_type_is_invalid() {
        let consent = r4(json!({"type": "permit", "provision": [
            {"type": "deny"},
            {"type": "deny", "actor": [
                {"reference": {"reference": "Practitioner/dr-a"}},
                {"reference": {"reference": "Device/pump-1"}}
            ]}
        ]}));
        assert_eq!(error(&consent), invalid("provision.provision[1].actor[1].reference"));
        let consent = r4(json!({"type": "permit", "actor": [{"reference": {"identifier": {"value": "x"}}}]}));
        assert_eq!(error(&consent), invalid("provision.actor[0].reference"));
    }

    #[test]
    fn unknown_action_code_is_invalid() {
        let consent = r5(json!([{"action": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"},
            {"code": "destroy"}
        ]}]}]));
        assert_eq!(error(&consent), invalid("provision[0].action[0].coding[1].code"));
    }

    #[test]
    fn bad_datetime_is_invalid_and_a_wrong_type_malformed() {
        let consent = r4(json!({"type": "permit", "period": {"start": "2026-13-01"}}));
        assert_eq!(error(&consent), invalid("provision.period.start"));
        let consent = r4(json!({"type": "permit", "period": {"start": 2026}}));
        assert_eq!(error(&consent), malformed("provision.period.start"));
        let mut consent = r5(json!([]));
        consent["period"] = json!({"end": "2026-05-17T10:00:00"});
        assert_eq!(error(&consent), invalid("period.end"));
    }

    #[test]
    fn start_after_end_is_invalid() {
        let consent = r4(json!({"type": "permit", "provision": [
            {"type": "deny", "dataPeriod": {"start": "2026-02", "end": "2026-01-31"}}
        ]}));
        assert_eq!(error(&consent), invalid("provision.provision[0].dataPeriod"));
        let same_day = r4(json!({"type": "permit", "period": {"start": "2026-01-31", "end": "2026-01-31"}}));
        assert!(Consent::from_json(&same_day).is_ok());
    }

    #[test]
    fn unsupported_data_meaning_is_invalid() {
        let consent = r4(json!({"type": "deny", "data": [
            {"meaning": "instance", "reference": {"reference": "Observation/o-1"}},
            {"meaning": "related", "reference": {"reference": "Observation/o-2"}}
        ]}));
        assert_eq!(error(&consent), invalid("provision.data[1].meaning"));
    }

    #[test]
    fn expression_and_modifier_extensions_are_refused() {
        let consent = r5(json!([{"provision": [{"expression": {"expression": "true"}}]}]));
        assert_eq!(error(&consent), invalid("provision[0].provision[0].expression"));
        let consent = r4(json!({"type": "permit", "provision": [
            {"type": "deny", "modifierExtension": [{"url": "http://example.org/x", "valueBoolean": true}]}
        ]}));
        assert_eq!(error(&consent), invalid("provision.provision[0].modifierExtension"));
    }

    #[test]
    fn nested_provision_with_its_parents_type_is_invalid() {
        let consent = r4(json!({"type": "permit", "provision": [
            {"type": "deny", "provision": [{"type": "deny"}]}
        ]}));
        assert_eq!(error(&consent), invalid("provision.provision[0].provision[0].type"));
        let consent = r5(json!([{"type": "deny"}]));
        assert_eq!(error(&consent), invalid("provision[0].type"));
    }

    #[test]
    fn r4_root_without_type_is_invalid() {
        assert_eq!(error(&r4(json!({"purpose": [{"code": "TREAT"}]}))), invalid("provision.type"));
        let mut consent = r4(json!({}));
        consent.as_object_mut().unwrap().remove("provision");
        assert_eq!(error(&consent), invalid("provision"));
    }

    #[test]
    fn r5_without_decision_is_invalid() {
        let mut consent = r5(json!([]));
        consent.as_object_mut().unwrap().remove("decision");
        assert_eq!(error(&consent), invalid("decision"));
    }

    #[test]
    fn mixed_releases_are_refused() {
        let mut consent = r4(json!({"type": "permit"}));
        consent["decision"] = json!("deny");
        assert_eq!(error(&consent), invalid("decision"));
        let mut consent = r5(json!([]));
        consent["patient"] = json!({"reference": "Patient/p-100"});
        assert_eq!(error(&consent), invalid("patient"));
        let mut consent = r4(json!({"type": "permit"}));
        consent["provision"] = json!("permit");
        assert_eq!(error(&consent), malformed("provision"));
    }

    #[test]
    fn empty_lists_are_refused() {
        assert_eq!(error(&r4(json!({"type": "permit", "actor": []}))), invalid("provision.actor"));
    }

    #[test]
    fn unknown_elements_are_ignored() {
        let mut consent = r4(json!({"type": "permit", "extension": [{"url": "x"}], "unknownThing": 1}));
        consent["text"] = json!({"status": "generated", "div": "<div/>"});
        consent["policyRule"] = json!({"coding": [{"code": "OPTIN"}]});
        consent["meta"] = json!({"versionId": "3"});
        assert!(Consent::from_json(&consent).is_ok());
    }

    #[test]
    fn class_must_be_a_resource_type() {
        let consent = r4(json!({"type": "permit", "class": [
            {"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
            {"system": "urn:ietf:rfc:3986", "code": "http://hl7.org/fhir/StructureDefinition/lipidprofile"}
        ]}));
        assert_eq!(error(&consent), invalid("provision.class[1].code"));
    }

    #[test]
    fn references_are_split_into_type_and_logical_id() {
        assert_eq!(split_reference("Practitioner/dr-1"), Some(("Practitioner", "dr-1")));
        assert_eq!(split_reference("http://x.org/fhir/Group/g.1"), Some(("Group", "g.1")));
        assert_eq!(split_reference("Patient/p/_history/2"), Some(("Patient", "p")));
        assert_eq!(split_reference("#contained"), None);
        assert_eq!(split_reference("urn:uuid:0b2c"), None);
        assert_eq!(split_reference("a/Patient/p"), None);
        assert_eq!(split_reference("Patient/p\"x"), None);
        assert_eq!(split_reference("patient/p"), None);
    }
}

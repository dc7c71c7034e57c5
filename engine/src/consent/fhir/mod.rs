//! The FHIR JSON of a Consent, and its normalisation into the model that
//! [`super::compile`] works from.
//!
//! R4 and R5 differ in shape (one root provision with a `type` versus a root
//! `decision` and a list of provisions) but not in meaning, so both end up as
//! the same tree of [`Node`]s: a root with the base decision whose children
//! flip it. Every field is optional in the serde model so that a missing
//! element is reported by name as FHIR content we cannot honour (422), and
//! only a wrongly typed value is reported as malformed JSON (400).

mod bases;
#[cfg(test)]
mod edge_tests;
pub(super) mod limits;
mod provision;
mod raw;
mod reference;
#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde_json::{Map, Value};

use bases::check_absolute_references;
use limits::Budget;
use provision::{Place, provision, window};
use raw::{RawConsent, RawProvision, RawReference};
use reference::{is_fhir_id, split_reference};

pub use reference::FhirBase;

use super::{Attr, Consent, ConsentError, ConsentStatus, Effect, FhirVersion, Node};

/// Refusal wording for elements that would narrow a provision in a way we cannot enforce.
const NEVER_IGNORED: &str = "refused so that a restriction is never ignored";

/// Parses and validates a Consent resource; absolute references bind only under `base`.
pub(super) fn parse(value: &Value, base: Option<&FhirBase>) -> Result<Consent, ConsentError> {
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
    let version = detect_version(root)?;
    check_absolute_references(root, version, base)?;
    match version {
        FhirVersion::R4 => r4(deserialize(value)?),
        FhirVersion::R5 => r5(deserialize(value)?),
    }
}

/// Checks a consent id against FHIR's `id` datatype (`[A-Za-z0-9\-.]{1,64}`).
/// Ids become URL paths, `Location` headers and policy ids, so nothing else
/// is stored under a new id (400, naming `id`).
pub(super) fn check_id(id: &str) -> Result<(), ConsentError> {
    if is_fhir_id(id) {
        return Ok(());
    }
    let shown: String = id.chars().take(64).flat_map(char::escape_debug).collect();
    let more = if id.chars().count() > 64 { "…" } else { "" };
    Err(ConsentError::malformed(
        "id",
        format!("`{shown}{more}` is not a FHIR id: 1 to 64 characters, each a letter, a digit, `-` or `.`"),
    ))
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
    let place = Place { path: "provision", label: "root", level: 0, inherited: 0 };
    let root = provision(root, &place, decision, None, outer, &mut Budget::default())?;
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
    let mut budget = Budget::default();
    let mut children = Vec::new();
    for (i, child) in raw.provision.iter().flatten().enumerate() {
        let at = format!("provision[{i}]");
        let place = Place { path: &at, label: &at, level: 1, inherited: 0 };
        children.push(provision(child, &place, decision.flipped(), Some(decision), None, &mut budget)?);
    }
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

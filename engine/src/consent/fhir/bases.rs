//! Absolute references bind only under this server's FHIR base.
//!
//! The check runs over the JSON before it is read, on exactly the references
//! a consent binds to entities: the patient (`patient` or `subject`), each
//! provision's actors and data, at every depth. References in elements the
//! consent model ignores (`performer`, `grantor`, `sourceReference`, …) name
//! nothing a decision uses, so they may point anywhere. A value of the wrong
//! shape is left for deserialisation to report.

use serde_json::{Map, Value};

use super::reference::{FhirBase, absolute_base};
use crate::consent::{ConsentError, FhirVersion};

/// Refuses, naming its path, the first bound reference whose server is not `base`.
pub(super) fn check_absolute_references(
    root: &Map<String, Value>,
    version: FhirVersion,
    base: Option<&FhirBase>,
) -> Result<(), ConsentError> {
    for element in ["patient", "subject"] {
        check(root.get(element).and_then(|r| r.get("reference")), &format!("{element}.reference"), base)?;
    }
    match (version, root.get("provision")) {
        (FhirVersion::R4, Some(root)) => provision(root, "provision", base),
        (FhirVersion::R5, Some(Value::Array(provisions))) => provisions
            .iter()
            .enumerate()
            .try_for_each(|(i, child)| provision(child, &format!("provision[{i}]"), base)),
        _ => Ok(()),
    }
}

fn provision(value: &Value, path: &str, base: Option<&FhirBase>) -> Result<(), ConsentError> {
    let list = |element: &str| value.get(element).and_then(Value::as_array).into_iter().flatten().enumerate();
    for (i, actor) in list("actor") {
        let reference = actor.get("reference").and_then(|r| r.get("reference"));
        check(reference, &format!("{path}.actor[{i}].reference"), base)?;
    }
    for (i, data) in list("data") {
        let reference = data.get("reference").and_then(|r| r.get("reference"));
        check(reference, &format!("{path}.data[{i}].reference.reference"), base)?;
    }
    list("provision").try_for_each(|(i, child)| provision(child, &format!("{path}.provision[{i}]"), base))
}

fn check(reference: Option<&Value>, path: &str, base: Option<&FhirBase>) -> Result<(), ConsentError> {
    let Some(text) = reference.and_then(Value::as_str) else { return Ok(()) };
    let Some(server) = absolute_base(text) else { return Ok(()) };
    match base {
        Some(base) if base.as_str() == server => Ok(()),
        Some(base) => Err(ConsentError::invalid(
            path,
            format!(
                "`{text}` refers to a resource on `{server}`, not on this server (`{base}`): \
                 only references under this server's FHIR base, or relative `Type/id` ones, bind"
            ),
        )),
        None => Err(ConsentError::invalid(
            path,
            format!(
                "`{text}` is an absolute reference and no FHIR base is configured (`fhir_base`): \
                 only relative `Type/id` references bind"
            ),
        )),
    }
}

//! Literal FHIR references and the names inside them.
//!
//! The patient, actors and data of a consent are all named by reference, and a
//! reference we cannot reduce to a resource type and logical id cannot be
//! matched against a request, so the rules for reading one live in one place.

/// `Type/id`, or an absolute URL ending in `/Type/id`, optionally with `/_history/<version>`.
/// Contained (`#x`) and `urn:` references name no logical id and are not accepted.
pub(super) fn split_reference(text: &str) -> Option<(&str, &str)> {
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
pub(super) fn is_resource_type(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphabetic())
}

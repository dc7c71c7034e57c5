//! Literal FHIR references and the names inside them.
//!
//! The patient, actors and data of a consent are all named by reference, and a
//! reference we cannot reduce to a resource type and logical id cannot be
//! matched against a request, so the rules for reading one live in one place.
//!
//! An absolute reference names a resource on some server, and only this
//! server's resources are the entities a decision knows: `http://x/Patient/p-100`
//! is not our `p-100` unless `http://x` is our FHIR base. So an absolute
//! reference binds only under the configured [`FhirBase`] (see [`super::bases`]),
//! and without one only relative references bind.

use std::fmt;

use serde::Deserialize;

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

/// The server part of an absolute reference (`http://x/fhir` of
/// `http://x/fhir/Patient/p/_history/2`); `None` for a relative reference
/// or for one [`split_reference`] refuses anyway.
pub(super) fn absolute_base(text: &str) -> Option<&str> {
    split_reference(text)?;
    let current = text.split_once("/_history/").map_or(text, |(head, _)| head);
    let (base, _id) = current.rsplit_once('/')?;
    let (server, _kind) = base.rsplit_once('/')?;
    server.contains("://").then_some(server)
}

/// FHIR's `id` datatype: 1 to 64 letters, digits, `-` and `.`.
pub(super) fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

/// A FHIR resource type name such as `Observation`.
pub(super) fn is_resource_type(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphabetic())
}

/// This server's FHIR base URL (`fhir_base`), such as `https://fhir.example/r4`:
/// an absolute reference in a consent binds only when its server part is
/// exactly this base.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FhirBase(String);

impl FhirBase {
    /// Checks an `http://` or `https://` URL with a host and no query or
    /// fragment; a trailing `/` is dropped, as references never carry it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim_end_matches('/');
        let host = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
        let problem = match host {
            None => Some("it must start with `http://` or `https://`"),
            Some(rest) if rest.is_empty() || rest.starts_with('/') => Some("it names no host"),
            Some(_) if trimmed.contains(['?', '#']) => Some("a base has no query or fragment"),
            Some(_) if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("it contains whitespace or control characters")
            }
            Some(_) => None,
        };
        match problem {
            Some(problem) => Err(format!("`{text}` is not a FHIR base URL: {problem}")),
            None => Ok(Self(trimmed.to_owned())),
        }
    }

    /// The base without a trailing `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FhirBase {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl fmt::Display for FhirBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

//! What a verified token's claims mean to Consentry.
//!
//! SMART on FHIR names the user in `fhirUser` (a FHIR reference), the
//! launch patient in `patient` and the granted access in `scope`; IHE IUA
//! adds `purpose_of_use`. Each becomes a Cedar fact here, checked as
//! strictly as the same fact sent in a request body, so that a token the
//! IdP signed but that says something malformed is refused, not guessed at.

use std::collections::BTreeSet;

use cedar_policy::EntityUid;
use serde_json::{Map, Value, json};

use super::config::OidcSettings;
use crate::auth::Role;

/// The entity types a token's principal may have: those the pack's
/// actions accept as principals.
const PRINCIPAL_TYPES: [&str; 4] = ["Practitioner", "Patient", "RelatedPerson", "Organization"];

/// The interactions a SMART scope can grant: the pack's actions.
const INTERACTIONS: [&str; 5] = ["read", "search", "create", "update", "delete"];

/// A claim that is present but unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim `{claim}` {message}")]
pub struct ClaimError {
    /// The claim, e.g. `fhirUser`.
    pub claim: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(claim: &'static str, message: impl Into<String>) -> ClaimError {
    ClaimError { claim, message: message.into() }
}

/// `Patient/{sub}`: a FHIR reference with the token's subject in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalTemplate {
    kind: String,
    before: String,
    after: String,
}

impl PrincipalTemplate {
    /// Parses `Type/…{sub}…`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (kind, id) = text.split_once('/').ok_or_else(|| format!("`{text}` is not `Type/{{sub}}`"))?;
        if !PRINCIPAL_TYPES.contains(&kind) {
            return Err(format!("`{kind}` is not one of {}", PRINCIPAL_TYPES.join(", ")));
        }
        let (before, after) =
            id.split_once("{sub}").ok_or_else(|| format!("`{text}` does not contain `{{sub}}`"))?;
        if after.contains("{sub}") || [before, after].iter().any(|part| !part.bytes().all(is_id_byte)) {
            return Err(format!("`{text}` would not make a FHIR reference"));
        }
        Ok(Self { kind: kind.to_owned(), before: before.to_owned(), after: after.to_owned() })
    }

    fn principal(&self, sub: &str) -> Result<EntityUid, ClaimError> {
        let id = format!("{}{sub}{}", self.before, self.after);
        if !is_fhir_id(&id) {
            return Err(bad("sub", "does not make a FHIR id with `identity.patient_principal`"));
        }
        uid(&self.kind, &id).ok_or_else(|| bad("sub", "does not make a Cedar uid"))
    }
}

/// One permission a SMART scope grants: a resource type (or `*`) and a
/// Cedar action name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SmartScope {
    /// `Observation`, or `*` for every type.
    pub resource_type: String,
    /// `read`, `search`, `create`, `update` or `delete`.
    pub interaction: &'static str,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenIdentity {
    /// `sub`, for logs.
    pub subject: Option<String>,
    /// The Consentry roles its role claim maps to, sorted.
    pub roles: Vec<Role>,
    /// From `fhirUser`, or `sub` through `identity.patient_principal`.
    pub principal: Option<EntityUid>,
    /// IUA's `purpose_of_use`, as a bare code (`TREAT`).
    pub purpose: Option<String>,
    /// The SMART resource scopes; `None` when the token has no `scope` claim.
    pub scopes: Option<BTreeSet<SmartScope>>,
    /// SMART's launch `patient`, a FHIR id.
    pub launch_patient: Option<String>,
}

impl TokenIdentity {
    /// Reads the claims of a token whose signature and standard claims were
    /// verified.
    pub fn from_claims(claims: &Map<String, Value>, settings: &OidcSettings) -> Result<Self, ClaimError> {
        let subject = match claims.get("sub") {
            None => None,
            Some(Value::String(sub)) => Some(sub.clone()),
            Some(_) => return Err(bad("sub", "is not a string")),
        };
        let principal = match (claims.get("fhirUser"), &settings.patient_principal, &subject) {
            (Some(reference), _, _) => Some(fhir_user(reference)?),
            (None, Some(template), Some(sub)) => Some(template.principal(sub)?),
            _ => None,
        };
        Ok(Self {
            roles: roles(claims, settings)?,
            principal,
            purpose: purpose(claims)?,
            scopes: scopes(claims)?,
            launch_patient: launch_patient(claims)?,
            subject,
        })
    }

    /// The context facts a decision takes from the token: `scopes` as the
    /// resource types each action is granted on, `{"read": ["Observation"],
    /// "search": [...], ...}`, the form the pack's rules can test (and a
    /// search's filter can carry) with set membership.
    pub fn context_facts(&self) -> Vec<(&'static str, Value)> {
        let mut facts = Vec::new();
        if let Some(purpose) = &self.purpose {
            facts.push(("purpose", json!(purpose)));
        }
        if let Some(scopes) = &self.scopes {
            let granted: Map<String, Value> = INTERACTIONS
                .iter()
                .map(|interaction| {
                    let types: Vec<&str> = scopes
                        .iter()
                        .filter(|s| s.interaction == *interaction)
                        .map(|s| s.resource_type.as_str())
                        .collect();
                    ((*interaction).to_owned(), json!(types))
                })
                .collect();
            facts.push(("scopes", Value::Object(granted)));
        }
        if let Some(patient) = &self.launch_patient {
            facts.push(("launch_patient", json!(patient)));
        }
        facts
    }

    /// The launch patient as a Cedar uid (`Patient::"p-100"`), as `fhirUser`
    /// names a patient principal.
    pub fn launch_patient_uid(&self) -> Option<EntityUid> {
        self.launch_patient.as_deref().and_then(|id| uid("Patient", id))
    }
}

/// The value at a dotted path.
fn at<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter().try_fold(claims.get(first)?, |value, key| value.as_object()?.get(key))
}

fn roles(claims: &Map<String, Value>, settings: &OidcSettings) -> Result<Vec<Role>, ClaimError> {
    let names: Vec<&str> = match at(claims, &settings.role_claim) {
        None => Vec::new(),
        Some(Value::String(names)) => names.split_whitespace().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or_else(|| bad("roles", "is not a list of strings"))?,
        Some(_) => return Err(bad("roles", "is neither a string nor a list of strings")),
    };
    let mut roles = Vec::new();
    for name in names {
        if let Some(mapped) = settings.role_mapping.get(name) {
            roles.extend(mapped.iter().copied());
        }
        if let Ok(role) = <Role as clap::ValueEnum>::from_str(name, false) {
            roles.push(role);
        }
    }
    roles.sort();
    roles.dedup();
    Ok(roles)
}

/// `Patient/p-100`, or an absolute URL ending so.
fn fhir_user(reference: &Value) -> Result<EntityUid, ClaimError> {
    let text = reference.as_str().ok_or_else(|| bad("fhirUser", "is not a string"))?;
    let mut segments = text.trim_end_matches('/').rsplit('/');
    let (id, kind) = match (segments.next(), segments.next()) {
        (Some(id), Some(kind)) => (id, kind),
        _ => return Err(bad("fhirUser", "is not a FHIR reference such as `Practitioner/123`")),
    };
    if !PRINCIPAL_TYPES.contains(&kind) {
        return Err(bad(
            "fhirUser",
            format!("names a `{kind}`; expected one of {}", PRINCIPAL_TYPES.join(", ")),
        ));
    }
    if !is_fhir_id(id) {
        return Err(bad("fhirUser", "does not end in a FHIR id"));
    }
    uid(kind, id).ok_or_else(|| bad("fhirUser", "does not make a Cedar uid"))
}

/// IUA puts it under `extensions.ihe_iua`; some issuers at the top level.
/// A code, `system|code`, a Coding, or a list holding one of these.
fn purpose(claims: &Map<String, Value>) -> Result<Option<String>, ClaimError> {
    const CLAIM: &str = "purpose_of_use";
    let nested = ["extensions", "ihe_iua", CLAIM].map(str::to_owned);
    let Some(value) = claims.get(CLAIM).or_else(|| at(claims, &nested)) else { return Ok(None) };
    let value = match value {
        Value::Array(items) => match items.as_slice() {
            [one] => one,
            _ => return Err(bad(CLAIM, "must hold exactly one purpose")),
        },
        other => other,
    };
    let code = match value {
        Value::String(text) => text.rsplit_once('|').map_or(text.as_str(), |(_, code)| code),
        Value::Object(coding) => coding.get("code").and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    };
    let valid = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid { Ok(Some(code.to_owned())) } else { Err(bad(CLAIM, "is not a purpose of use code or Coding")) }
}

/// `scope` (space-separated) or `scp` (a list). Scopes that are not SMART
/// resource scopes (`openid`, `launch/patient`) grant no resource access
/// and are left out, so a token with only those reaches no resource.
fn scopes(claims: &Map<String, Value>) -> Result<Option<BTreeSet<SmartScope>>, ClaimError> {
    let texts: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
        (None, None) => return Ok(None),
        (Some(Value::String(text)), _) | (None, Some(Value::String(text))) => {
            text.split_whitespace().collect()
        }
        (None, Some(Value::Array(items))) => items
            .iter()
            .map(Value::as_str)
            .collect::<Option<_>>()
            .ok_or_else(|| bad("scp", "is not a list of strings"))?,
        (Some(_), _) => return Err(bad("scope", "is not a string")),
        (None, Some(_)) => return Err(bad("scp", "is neither a string nor a list of strings")),
    };
    Ok(Some(texts.into_iter().flat_map(smart_scope).collect()))
}

/// The permissions of `patient/Observation.read` (v1) or
/// `patient/Observation.rs` (v2); nothing for other scopes. A v2 scope
/// with a query (`?category=…`) grants only resources matching it, which a
/// decision about a resource by its type cannot check: it grants nothing
/// here, so the query is never widened to the whole type.
pub fn smart_scope(text: &str) -> Vec<SmartScope> {
    let Some((context, rest)) = text.split_once('/') else { return Vec::new() };
    if !matches!(context, "patient" | "user" | "system") || rest.contains('?') {
        return Vec::new();
    }
    let Some((kind, permissions)) = rest.split_once('.') else { return Vec::new() };
    if kind != "*"
        && !(kind.bytes().all(|b| b.is_ascii_alphabetic())
            && kind.starts_with(|c: char| c.is_ascii_uppercase()))
    {
        return Vec::new();
    }
    let interactions: &[&'static str] = match permissions {
        "read" => &["read", "search"],
        "write" => &["create", "update", "delete"],
        "*" => &INTERACTIONS,
        letters => return v2_interactions(letters).into_iter().map(|i| scope(kind, i)).collect(),
    };
    interactions.iter().map(|interaction| scope(kind, interaction)).collect()
}

/// `cruds` letters, each at most once and in that order, as SMART v2 asks.
fn v2_interactions(letters: &str) -> Vec<&'static str> {
    const ORDER: [(u8, &str); 5] =
        [(b'c', "create"), (b'r', "read"), (b'u', "update"), (b'd', "delete"), (b's', "search")];
    let mut found = Vec::new();
    let mut next = 0;
    for byte in letters.bytes() {
        let Some(position) = ORDER.iter().skip(next).position(|(letter, _)| *letter == byte) else {
            return Vec::new();
        };
        let index = next + position;
        if let Some((_, name)) = ORDER.get(index) {
            found.push(*name);
        }
        next = index + 1;
    }
    found
}

fn scope(kind: &str, interaction: &'static str) -> SmartScope {
    SmartScope { resource_type: kind.to_owned(), interaction }
}

fn launch_patient(claims: &Map<String, Value>) -> Result<Option<String>, ClaimError> {
    match claims.get("patient") {
        None => Ok(None),
        Some(Value::String(id)) if is_fhir_id(id) => Ok(Some(id.clone())),
        Some(_) => Err(bad("patient", "is not a FHIR id")),
    }
}

fn uid(kind: &str, id: &str) -> Option<EntityUid> {
    let name = kind.parse().ok()?;
    Some(EntityUid::from_type_name_and_id(name, cedar_policy::EntityId::new(id)))
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// A FHIR id: 1 to 64 letters, digits, `-` and `.`; `.` and `..` are not.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(is_id_byte) && id != "." && id != ".."
}

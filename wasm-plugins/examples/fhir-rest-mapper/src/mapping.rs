//! The mapping from FHIR REST requests to Cedar requests.

use consentry_plugin_sdk::{CedarRequest, EntityUid, HttpRequest, fhir};

/// The default of config `base_path`.
pub const DEFAULT_BASE_PATH: &str = "/fhir";
/// The default of config `principal_header`.
pub const DEFAULT_PRINCIPAL_HEADER: &str = "x-principal";
/// The default of config `purpose_header`.
pub const DEFAULT_PURPOSE_HEADER: &str = "x-purpose-of-use";
/// The default of config `justification_header`.
pub const DEFAULT_JUSTIFICATION_HEADER: &str = "x-justification";
/// The default of config `searched_type_context`: empty, so no context
/// attribute is added that a schema may lack.
pub const DEFAULT_SEARCHED_TYPE_CONTEXT: &str = "";
/// The header naming the patient of a `POST` without a patient parameter.
const PATIENT_ID_HEADER: &str = "x-patient-id";
/// The entity types a principal may have.
const PRINCIPAL_TYPES: [&str; 4] = ["Practitioner", "Patient", "RelatedPerson", "Organization"];

/// The mapper's configuration.
pub struct Settings {
    /// Where the FHIR API is mounted, such as `/fhir`.
    pub base_path: String,
    /// The header holding the principal's FHIR reference.
    pub principal_header: String,
    /// The header holding the purpose of use.
    pub purpose_header: String,
    /// The header holding a break-the-glass justification.
    pub justification_header: String,
    /// The context attribute that receives the FHIR type searched or
    /// created under a patient (`resource_type` for the bundled pack's
    /// SMART scope rules); empty for none.
    pub searched_type_context: String,
}

/// The Cedar request for `request`; `None` when its path is outside the base
/// path.
pub fn map(request: &HttpRequest, settings: &Settings) -> Result<Option<CedarRequest>, String> {
    let base = settings.base_path.trim_end_matches('/');
    let Some(rest) = request.path.strip_prefix(base) else { return Ok(None) };
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        None if rest.is_empty() => rest,
        // `/fhirx` is not under `/fhir`.
        None => return Ok(None),
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let (action, resource, searched) = route(request, &segments)?;
    let principal = principal(request, &settings.principal_header)?;
    let mut mapped = CedarRequest::new(principal, EntityUid::new("Action", action), resource);
    if let (Some(kind), false) = (searched, settings.searched_type_context.is_empty()) {
        mapped = mapped.with_context(&settings.searched_type_context, kind);
    }
    if let Some(purpose) = non_empty_header(request, &settings.purpose_header) {
        mapped = mapped.with_context("purpose", purpose_code(purpose, &settings.purpose_header)?);
    }
    if let Some(justification) = non_empty_header(request, &settings.justification_header) {
        mapped = mapped.with_context("justification", justification);
    }
    Ok(Some(mapped))
}

/// The action and resource for the path segments after the base path, and
/// the type searched or created under a patient.
fn route<'a>(
    request: &HttpRequest,
    segments: &[&'a str],
) -> Result<(&'static str, EntityUid, Option<&'a str>), String> {
    let method = request.method.as_str();
    let unsupported = || format!("unsupported FHIR request: {method} {}", request.path);
    match (method, segments) {
        ("GET", [kind, id]) => Ok(("read", instance(kind, id)?, None)),
        ("GET", ["Patient", id, kind]) => {
            resource_type(kind)?;
            Ok(("search", EntityUid::new("Patient", fhir_id(id)?), Some(*kind)))
        }
        ("GET", [kind]) => {
            resource_type(kind)?;
            let patient = query_patient(request)?.ok_or("missing query parameter `patient` or `subject`")?;
            Ok(("search", patient, Some(*kind)))
        }
        ("POST", [kind]) => {
            resource_type(kind)?;
            let patient = match query_patient(request)? {
                Some(patient) => patient,
                None => {
                    let id = request
                        .header(PATIENT_ID_HEADER)
                        .ok_or("missing query parameter `patient` or `subject` and header `x-patient-id`")?;
                    EntityUid::new("Patient", fhir_id(id)?)
                }
            };
            Ok(("create", patient, Some(*kind)))
        }
        ("PUT", [kind, id]) => Ok(("update", instance(kind, id)?, None)),
        ("DELETE", [kind, id]) => Ok(("delete", instance(kind, id)?, None)),
        _ => Err(unsupported()),
    }
}

/// The entity for the resource instance `{kind}/{id}`: a Patient, or else a
/// Record.
fn instance(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = resource_type(kind)?;
    let id = fhir_id(id)?;
    Ok(EntityUid::new(if kind == "Patient" { "Patient" } else { "Record" }, id))
}

fn resource_type(kind: &str) -> Result<&str, String> {
    if fhir::is_resource_type(kind) {
        Ok(kind)
    } else {
        Err(format!("`{}` is not a FHIR resource type", kind.escape_debug()))
    }
}

/// `id` if it is a FHIR id; `.` and `..`, which the FHIR pattern allows, are
/// refused as path segments.
fn fhir_id(id: &str) -> Result<&str, String> {
    if fhir::is_id(id) && id != "." && id != ".." {
        Ok(id)
    } else {
        Err(format!("`{}` is not a FHIR id", id.escape_debug()))
    }
}

/// The patient named by the `patient` (`p` or `Patient/p`) or `subject`
/// (`Patient/p`) query parameters; both may be given if they agree.
fn query_patient(request: &HttpRequest) -> Result<Option<EntityUid>, String> {
    let mut found: Option<EntityUid> = None;
    for (name, value) in request.query_params() {
        let patient = match name.as_str() {
            "patient" => match value.strip_prefix("Patient/") {
                Some(id) => fhir_id(id)?,
                None => fhir_id(&value)?,
            },
            "subject" => {
                let id = value
                    .strip_prefix("Patient/")
                    .ok_or("query parameter `subject` must be `Patient/<id>`")?;
                fhir_id(id)?
            }
            _ => continue,
        };
        match &found {
            Some(earlier) if earlier.id != patient => {
                return Err("the query names more than one patient".to_owned());
            }
            Some(_) => {}
            None => found = Some(EntityUid::new("Patient", patient)),
        }
    }
    Ok(found)
}

fn principal(request: &HttpRequest, header: &str) -> Result<EntityUid, String> {
    let reference = request.header(header).ok_or_else(|| format!("missing header `{header}`"))?;
    EntityUid::from_fhir_reference(reference)
        .filter(|uid| PRINCIPAL_TYPES.contains(&uid.type_name.as_str()))
        .ok_or_else(|| {
            format!("header `{header}` must be a reference to a Practitioner, Patient, RelatedPerson or Organization")
        })
}

fn non_empty_header<'a>(request: &'a HttpRequest, header: &str) -> Option<&'a str> {
    request.header(header).map(str::trim).filter(|value| !value.is_empty())
}

/// The purpose code of `TREAT` or `system|TREAT`.
fn purpose_code<'a>(value: &'a str, header: &str) -> Result<&'a str, String> {
    let code = value.rsplit_once('|').map_or(value, |(_, code)| code);
    if !code.is_empty()
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(code)
    } else {
        Err(format!("header `{header}` is not a purpose of use code"))
    }
}

#[cfg(test)]
mod tests {
    use consentry_plugin_sdk::serde_json::{Map, Value, json};

    use super::*;

    fn settings() -> Settings {
        Settings {
            base_path: DEFAULT_BASE_PATH.to_owned(),
            principal_header: DEFAULT_PRINCIPAL_HEADER.to_owned(),
            purpose_header: DEFAULT_PURPOSE_HEADER.to_owned(),
            justification_header: DEFAULT_JUSTIFICATION_HEADER.to_owned(),
            searched_type_context: DEFAULT_SEARCHED_TYPE_CONTEXT.to_owned(),
        }
    }

    fn http(method: &str, target: &str, headers: &[(&str, &str)]) -> HttpRequest {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut all = vec![("x-principal".to_owned(), "Practitioner/dr-weber".to_owned())];
        all.extend(headers.iter().map(|&(name, value)| (name.to_owned(), value.to_owned())));
        HttpRequest { method: method.into(), path: path.into(), query: query.into(), headers: all }
    }

    /// The action and resource of a mapped request, as Cedar text.
    fn mapped(method: &str, target: &str) -> Result<Option<(String, String)>, String> {
        let request = map(&http(method, target, &[("x-patient-id", "p-9")]), &settings())?;
        Ok(request.map(|request| (request.action.to_string(), request.resource.to_string())))
    }

    fn ok(action: &str, resource: &str) -> Result<Option<(String, String)>, String> {
        Ok(Some((format!("Action::{action:?}"), resource.to_owned())))
    }

    #[test]
    fn maps_the_routes() {
        assert_eq!(mapped("GET", "/fhir/Patient/p-1"), ok("read", r#"Patient::"p-1""#));
        assert_eq!(mapped("GET", "/fhir/Observation/obs-1"), ok("read", r#"Record::"obs-1""#));
        assert_eq!(mapped("GET", "/fhir/Patient/p-1/Observation?code=x"), ok("search", r#"Patient::"p-1""#));
        assert_eq!(mapped("GET", "/fhir/Observation?patient=123"), ok("search", r#"Patient::"123""#));
        assert_eq!(mapped("GET", "/fhir/Observation?patient=Patient/123"), ok("search", r#"Patient::"123""#));
        assert_eq!(
            mapped("GET", "/fhir/Observation?subject=Patient%2F123"),
            ok("search", r#"Patient::"123""#)
        );
        assert_eq!(
            mapped("GET", "/fhir/Observation?subject=Patient/123&patient=123"),
            ok("search", r#"Patient::"123""#)
        );
        assert_eq!(
            mapped("POST", "/fhir/Observation?subject=Patient/123"),
            ok("create", r#"Patient::"123""#)
        );
        assert_eq!(mapped("POST", "/fhir/Observation"), ok("create", r#"Patient::"p-9""#));
        assert_eq!(mapped("PUT", "/fhir/Observation/obs-1"), ok("update", r#"Record::"obs-1""#));
        assert_eq!(mapped("DELETE", "/fhir/Observation/obs-1"), ok("delete", r#"Record::"obs-1""#));
        assert_eq!(mapped("PUT", "/fhir/Patient/p-1"), ok("update", r#"Patient::"p-1""#));
    }

    #[test]
    fn ignores_other_paths() {
        for path in ["/", "/api/Patient/p-1", "/fhirx/Patient/p-1", "/FHIR/Patient/p-1"] {
            assert_eq!(mapped("GET", path), Ok(None), "{path}");
        }
        let custom = Settings { base_path: "/r4/".to_owned(), ..settings() };
        let request = map(&http("GET", "/r4/Patient/p-1", &[]), &custom).unwrap().unwrap();
        assert_eq!(request.resource, EntityUid::new("Patient", "p-1"));
        assert_eq!(map(&http("GET", "/fhir/Patient/p-1", &[]), &custom), Ok(None));
    }

    #[test]
    fn refuses_what_it_cannot_map() {
        let error = |method, target| mapped(method, target).unwrap_err();
        assert_eq!(error("GET", "/fhir/Observation"), "missing query parameter `patient` or `subject`");
        assert!(error("GET", "/fhir/Observation?subject=Group/g").contains("`subject`"));
        assert!(error("GET", "/fhir/Observation?patient=1&patient=2").contains("more than one patient"));
        assert!(error("GET", "/fhir/Observation?patient=1,2").contains("not a FHIR id"));
        assert!(error("GET", "/fhir/Observation/obs%201").contains("not a FHIR id"));
        assert!(error("GET", "/fhir/Observation/..").contains("not a FHIR id"));
        assert!(error("GET", "/fhir/Observation/a_b").contains("not a FHIR id"));
        assert!(error("GET", "/fhir/observation/obs-1").contains("not a FHIR resource type"));
        assert!(error("GET", "/fhir/Patient/p-1/").contains("not a FHIR resource type"));
        assert!(error("GET", "/fhir/Observation/obs-1/_history/2").starts_with("unsupported"));
        assert!(error("GET", "/fhir").contains("not a FHIR resource type"));
        assert!(error("GET", "/fhir/").contains("not a FHIR resource type"));
        assert!(error("PATCH", "/fhir/Observation/obs-1").starts_with("unsupported"));
        assert!(error("DELETE", "/fhir/Observation").starts_with("unsupported"));
        let no_patient = map(&http("POST", "/fhir/Observation", &[]), &settings()).unwrap_err();
        assert!(no_patient.contains("x-patient-id"), "{no_patient}");
    }

    #[test]
    fn reads_the_principal() {
        let mut request = http("GET", "/fhir/Patient/p-1", &[]);
        request.headers.clear();
        assert_eq!(map(&request, &settings()).unwrap_err(), "missing header `x-principal`");
        for bad in ["Device/d-1", "dr-weber", "Practitioner/dr weber"] {
            request.headers = vec![("x-principal".to_owned(), bad.to_owned())];
            assert!(map(&request, &settings()).unwrap_err().contains("must be a reference"), "{bad}");
        }
        request.headers = vec![("x-principal".to_owned(), "RelatedPerson/mum".to_owned())];
        let mapped = map(&request, &settings()).unwrap().unwrap();
        assert_eq!(mapped.principal, EntityUid::new("RelatedPerson", "mum"));
    }

    #[test]
    fn fills_the_context() {
        let context = |headers: &[(&str, &str)]| -> Result<Map<String, Value>, String> {
            Ok(map(&http("GET", "/fhir/Patient/p-1", headers), &settings())?.unwrap().context)
        };
        assert_eq!(context(&[]), Ok(Map::new()));
        let full = context(&[("x-purpose-of-use", "BTG"), ("x-justification", "cardiac arrest")]).unwrap();
        assert_eq!(Value::Object(full), json!({"purpose": "BTG", "justification": "cardiac arrest"}));
        let coded =
            context(&[("x-purpose-of-use", "http://terminology.hl7.org/CodeSystem/v3-ActReason|TREAT")]);
        assert_eq!(Value::Object(coded.unwrap()), json!({"purpose": "TREAT"}));
        assert!(context(&[("x-purpose-of-use", "TREAT now")]).is_err());
        assert!(context(&[("x-purpose-of-use", "")]).unwrap().is_empty());
    }

    #[test]
    fn names_the_searched_type_only_when_configured() {
        let search = http("GET", "/fhir/Patient/p-1/Observation", &[]);
        assert!(map(&search, &settings()).unwrap().unwrap().context.is_empty());
        let named = Settings { searched_type_context: "resource_type".to_owned(), ..settings() };
        let context = map(&search, &named).unwrap().unwrap().context;
        assert_eq!(Value::Object(context), json!({"resource_type": "Observation"}));
        let create = map(&http("POST", "/fhir/Condition?patient=p-1", &[]), &named).unwrap().unwrap();
        assert_eq!(Value::Object(create.context), json!({"resource_type": "Condition"}));
        let read = map(&http("GET", "/fhir/Observation/obs-1", &[]), &named).unwrap().unwrap();
        assert!(read.context.is_empty());
    }
}

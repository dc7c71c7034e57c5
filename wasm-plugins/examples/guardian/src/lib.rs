//! An `enrich` hook that acts as a policy information point for the age of
//! majority: a parent no longer represents a child who has come of age.
//!
//! When the principal is a `RelatedPerson` whose `relationship` is one of
//! config `lapsing_relationships` (comma-separated, default `parent`), and
//! the patient concerned — the resource if it is a Patient, else the
//! Record's `patient` — has a `birthDate` and has reached config
//! `age_of_majority` (default `18`) at the request's `now`, the hook returns
//! the principal's entity with that patient removed from `represents`.
//! Otherwise it adds nothing.
//!
//! The time is the request's `now`, set by the server: the plugin needs no
//! clock grant. The birth date is a FHIR date (`YYYY-MM-DD`; a partial date,
//! `YYYY` or `YYYY-MM`, is taken at its latest possible day, so
//! representation lapses only once majority is certain). Someone born on
//! 29 February comes of age on 1 March in common years.

use consentry_plugin_sdk::serde_json::Value;
use consentry_plugin_sdk::{Enrich, Enrichment, EntityUid, Request, config, export_plugin};

mod age;

struct Guardian;

impl Enrich for Guardian {
    fn enrich(request: Request) -> Result<Enrichment, String> {
        let lapsing = config("lapsing_relationships").unwrap_or_else(|| "parent".to_owned());
        let majority = match config("age_of_majority") {
            Some(age) => {
                age.trim().parse().map_err(|_| format!("config `age_of_majority` is not an age: `{age}`"))?
            }
            None => 18,
        };
        let principal = lapse(&request, &lapsing, majority)?;
        Ok(principal.map_or_else(Enrichment::new, |principal| Enrichment::new().with_entity(principal)))
    }
}

export_plugin!(Guardian: enrich);

/// The principal's entity without the patient concerned in `represents`, if
/// the principal's relationship is in `lapsing` (comma-separated) and the
/// patient has reached `majority`.
fn lapse(request: &Request, lapsing: &str, majority: u32) -> Result<Option<Value>, String> {
    if request.principal.type_name != "RelatedPerson" {
        return Ok(None);
    }
    let Some(principal) = request.entity(&request.principal) else { return Ok(None) };
    let relationship =
        principal.get("attrs").and_then(|attrs| attrs.get("relationship")).and_then(Value::as_str);
    let Some(relationship) = relationship else { return Ok(None) };
    if !lapsing.split(',').any(|lapsing| lapsing.trim().eq_ignore_ascii_case(relationship.trim())) {
        return Ok(None);
    }
    let patient = match request.resource.type_name.as_str() {
        "Patient" => request.resource.clone(),
        "Record" => match request.entity_attr(&request.resource, "patient").and_then(EntityUid::from_json) {
            Some(patient) => patient,
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let Some(birth_date) = request.entity_attr(&patient, "birthDate") else { return Ok(None) };
    let birth_date =
        birth_date.as_str().ok_or_else(|| format!("the birthDate of {patient} is not a string"))?;
    let now = request.now().ok_or("the request has no `now`")?;
    if !age::has_reached(birth_date, now, majority)? {
        return Ok(None);
    }
    let mut principal = principal.clone();
    let Some(represents) = principal.pointer_mut("/attrs/represents").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let before = represents.len();
    represents.retain(|represented| EntityUid::from_json(represented).as_ref() != Some(&patient));
    Ok((represents.len() < before).then_some(principal))
}

#[cfg(test)]
mod tests {
    use consentry_plugin_sdk::serde_json::{Map, json};

    use super::*;

    fn request(principal: (&str, &str), resource: (&str, &str), birth_date: Option<&str>) -> Request {
        let mut patient_attrs = Map::new();
        if let Some(date) = birth_date {
            patient_attrs.insert("birthDate".to_owned(), json!(date));
        }
        Request {
            principal: EntityUid::new(principal.0, principal.1),
            action: EntityUid::new("Action", "read"),
            resource: EntityUid::new(resource.0, resource.1),
            context: json!({"purpose": "PWATRNY", "now": {"__extn": {"fn": "datetime", "arg": "2026-05-01T09:30:00Z"}}})
                .as_object()
                .unwrap()
                .clone(),
            entities: vec![
                json!({"uid": {"type": "RelatedPerson", "id": "mum"}, "attrs": {
                    "relationship": "parent",
                    "represents": [{"__entity": {"type": "Patient", "id": "kid"}}, {"type": "Patient", "id": "baby"}],
                }, "parents": []}),
                json!({"uid": {"type": "RelatedPerson", "id": "lawyer"}, "attrs": {
                    "relationship": "guardian", "represents": [{"type": "Patient", "id": "kid"}],
                }, "parents": []}),
                json!({"uid": {"type": "Patient", "id": "kid"}, "attrs": patient_attrs, "parents": []}),
                json!({"uid": {"type": "Record", "id": "obs-1"}, "attrs": {
                    "patient": {"type": "Patient", "id": "kid"}, "resourceType": "Observation",
                    "labels": [], "confidentiality": "N",
                }, "parents": [{"type": "Patient", "id": "kid"}]}),
            ],
        }
    }

    fn represents(principal: Option<Value>) -> Option<Value> {
        principal.map(|principal| principal["attrs"]["represents"].clone())
    }

    #[test]
    fn a_parent_stops_representing_an_adult() {
        for resource in [("Patient", "kid"), ("Record", "obs-1")] {
            let request = request(("RelatedPerson", "mum"), resource, Some("2008-05-01"));
            let lapsed = lapse(&request, "parent", 18).unwrap();
            assert_eq!(represents(lapsed), Some(json!([{"type": "Patient", "id": "baby"}])), "{resource:?}");
        }
    }

    #[test]
    fn a_minor_stays_represented() {
        let request = request(("RelatedPerson", "mum"), ("Patient", "kid"), Some("2008-05-02"));
        assert_eq!(lapse(&request, "parent", 18), Ok(None));
        assert!(lapse(&request, "parent", 17).unwrap().is_some());
    }

    #[test]
    fn only_lapsing_relationships() {
        let lawyer = request(("RelatedPerson", "lawyer"), ("Patient", "kid"), Some("2000-01-01"));
        assert_eq!(lapse(&lawyer, "parent", 18), Ok(None));
        assert!(lapse(&lawyer, "parent, Guardian", 18).unwrap().is_some());
    }

    #[test]
    fn nothing_without_the_facts() {
        let no_birth_date = request(("RelatedPerson", "mum"), ("Patient", "kid"), None);
        assert_eq!(lapse(&no_birth_date, "parent", 18), Ok(None));
        let not_related = request(("Practitioner", "mum"), ("Patient", "kid"), Some("2000-01-01"));
        assert_eq!(lapse(&not_related, "parent", 18), Ok(None));
        let unknown_principal = request(("RelatedPerson", "dad"), ("Patient", "kid"), Some("2000-01-01"));
        assert_eq!(lapse(&unknown_principal, "parent", 18), Ok(None));
        let other_patient = request(("RelatedPerson", "mum"), ("Patient", "nobody"), Some("2000-01-01"));
        assert_eq!(lapse(&other_patient, "parent", 18), Ok(None));
        let mut no_now = request(("RelatedPerson", "mum"), ("Patient", "kid"), Some("2000-01-01"));
        no_now.context.remove("now");
        assert!(lapse(&no_now, "parent", 18).is_err());
    }
}

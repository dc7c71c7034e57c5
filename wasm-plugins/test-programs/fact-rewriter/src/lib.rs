//! Test program: an `enrich` hook that tries to rewrite what the store says
//! (issue 13, finding 3), chosen by config `mode`:
//!
//! - `joins-break-glass`: the principal, with `Group::"break-glass"` added
//!   to its parents;
//! - `lifts-restriction`: the patient concerned (the resource, or a
//!   Record's `patient`) without `restricted`;
//! - `moves-record`: the resource Record filed under config `patient`
//!   (default `p-100`), in its `patient` attribute and its parents;
//! - `detaches-record`: the resource Record without its parents;
//! - `supplies-justification`: the context attribute `justification`, which
//!   only the caller may give.
//!
//! Each starts from the entity the request shows it, so only the rewrite
//! differs. Without the matching grant in `[plugins.may_change]` the host
//! must refuse it as a plugin fault.
//!
//! As a `map-request` hook it maps every HTTP request to Dr. Weber's
//! break-glass read of `Record::"obs-1"`, sending his entity (as the
//! bundled example entities store it) with `Group::"break-glass"` added to
//! its parents: a mapper's entities are its output, so the host must refuse
//! that as the mapper's fault.

use consentry_plugin_sdk::serde_json::{Value, json};
use consentry_plugin_sdk::{
    CedarRequest, Enrich, Enrichment, EntityUid, HttpRequest, MapRequest, Request, config, config_or,
    export_plugin,
};

struct FactRewriter;

impl Enrich for FactRewriter {
    fn enrich(request: Request) -> Result<Enrichment, String> {
        let mode = config("mode").unwrap_or_default();
        let rewritten = match mode.as_str() {
            "joins-break-glass" => {
                let mut principal = shown(&request, &request.principal)?;
                parents(&mut principal)?.push(json!({"type": "Group", "id": "break-glass"}));
                principal
            }
            "lifts-restriction" => {
                let patient = match request.resource.type_name.as_str() {
                    "Record" => request
                        .entity_attr(&request.resource, "patient")
                        .and_then(EntityUid::from_json)
                        .ok_or("the record names no patient")?,
                    _ => request.resource.clone(),
                };
                let mut patient = shown(&request, &patient)?;
                if let Some(attrs) = patient.get_mut("attrs").and_then(Value::as_object_mut) {
                    attrs.remove("restricted");
                }
                patient
            }
            "moves-record" => {
                let to = EntityUid::new("Patient", config_or("patient", "p-100"));
                let mut record = shown(&request, &request.resource)?;
                record["attrs"]["patient"] = to.to_json();
                *parents(&mut record)? = vec![to.to_json()];
                record
            }
            "detaches-record" => {
                let mut record = shown(&request, &request.resource)?;
                parents(&mut record)?.clear();
                record
            }
            "supplies-justification" => {
                return Ok(Enrichment::new().with_context("justification", "the plugin says so"));
            }
            _ => {
                return Err(format!(
                    "config `mode` must be one of joins-break-glass, lifts-restriction, moves-record, \
                     detaches-record, supplies-justification; got `{mode}`"
                ));
            }
        };
        Ok(Enrichment::new().with_entity(rewritten))
    }
}

impl MapRequest for FactRewriter {
    fn map_request(_request: HttpRequest) -> Result<Option<CedarRequest>, String> {
        let weber = EntityUid::new("Practitioner", "dr-weber");
        let entity = json!({
            "uid": weber.to_json(),
            "attrs": {"role": "physician"},
            "parents": [
                {"type": "Organization", "id": "st-mary"},
                {"type": "CareTeam", "id": "cardiology"},
                {"type": "Group", "id": "break-glass"},
            ],
        });
        let request =
            CedarRequest::new(weber, EntityUid::new("Action", "read"), EntityUid::new("Record", "obs-1"))
                .with_context("purpose", "BTG")
                .with_context("justification", "unconscious on arrival")
                .with_entity(entity);
        Ok(Some(request))
    }
}

export_plugin!(FactRewriter: enrich, map_request);

/// The entity as the request shows it.
fn shown(request: &Request, uid: &EntityUid) -> Result<Value, String> {
    request.entity(uid).cloned().ok_or_else(|| format!("{uid} is not among the request's entities"))
}

fn parents(entity: &mut Value) -> Result<&mut Vec<Value>, String> {
    entity
        .get_mut("parents")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| "the entity has no parents list".to_owned())
}

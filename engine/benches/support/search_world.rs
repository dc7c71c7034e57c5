//! The world the search benchmarks run in, shared by `benches/search.rs`
//! and `examples/search_instructions.rs` so that the instruction counts and
//! the criterion figures measure the same searches: the bundled pack, its
//! special categories, one patient's treatment consent (St. Mary's, except
//! psychiatric records), and generated records and practitioners.

use std::str::FromStr;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionRequest, EntityStore, EvaluationTime, PolicyBundle,
    SchemaSource, SpecialCategories,
};
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../../policies/transfers.cedar");
const ENTITIES: &str = include_str!("../../../policies/entities.json");
const SPECIAL: &str = include_str!("../../../policies/special-categories.json");

pub fn bundle() -> PolicyBundle {
    PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &format!("{PACK}\n{TRANSFERS}"), &[])
        .unwrap()
        .with_special_categories(SpecialCategories::from_json(SPECIAL).unwrap())
}

pub fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

pub fn record(n: usize) -> Value {
    let labels: Vec<&str> = match n % 20 {
        0 | 10 => vec!["PSY"],
        5 => vec!["GDIS"],
        _ => vec![],
    };
    json!({"uid": {"type": "Record", "id": format!("r-{n:06}")},
        "attrs": {"patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation",
                  "labels": labels, "confidentiality": "N"},
        "parents": [{"type": "Patient", "id": "p-100"}]})
}

pub fn practitioner(n: usize) -> Value {
    let org = if n.is_multiple_of(2) { "st-mary" } else { "city-lab" };
    json!({"uid": {"type": "Practitioner", "id": format!("pr-{n:06}")},
        "attrs": {"role": "physician", "organization": {"type": "Organization", "id": org}},
        "parents": [{"type": "Organization", "id": org}]})
}

/// The pack's directory plus `extra`.
pub fn store(bundle: &PolicyBundle, extra: impl Iterator<Item = Value>) -> EntityStore {
    let mut all: Vec<Value> = serde_json::from_str(ENTITIES).unwrap();
    all.extend(extra);
    EntityStore::from_json(&Value::Array(all), bundle.schema()).unwrap()
}

pub fn partition(bundle: &PolicyBundle) -> ConsentPartition {
    let consent = Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "purpose": [{"code": "TREAT"}],
            "provision": [{"type": "deny", "securityLabel": [{"code": "PSY"}]}]}
    }))
    .unwrap();
    ConsentPartition::build(bundle, "p-100", &[ConsentVersion { id: "c-100", version: 1, consent: &consent }])
        .unwrap()
}

pub fn request(principal: &str, resource: &str) -> DecisionRequest {
    let mut request = DecisionRequest::new(uid(principal), uid(r#"Action::"read""#), uid(resource));
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T12:00:00Z").unwrap());
    request
}

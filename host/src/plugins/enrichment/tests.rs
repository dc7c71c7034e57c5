use consentry_engine::{EvaluationTime, parse_uid};
use proptest::prelude::*;
use serde_json::json;

use super::*;

const SCHEMA: &str = r#"
    entity Group;
    entity Patient { restricted?: Bool, birthDate?: String };
    entity Practitioner in [Group] { role: String };
    entity RelatedPerson { represents: Set<Patient>, relationship?: String };
    entity Record in [Patient] { patient: Patient, labels: Set<String>, codes?: Set<String> };
    action read appliesTo {
        principal: [Practitioner, RelatedPerson],
        resource: [Record, Patient],
        context: { purpose?: String, justification?: String, site?: String, now: datetime }
    };
"#;

/// Parsed once: the property test would spend most of its time here.
fn schema() -> Schema {
    static SCHEMA_PARSED: std::sync::LazyLock<Schema> =
        std::sync::LazyLock::new(|| Schema::from_cedarschema_str(SCHEMA).map(|(s, _)| s).unwrap());
    SCHEMA_PARSED.clone()
}

fn stored_entities() -> Value {
    json!([
        {"uid": {"type": "Group", "id": "break-glass"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Practitioner", "id": "dr-weber"}, "attrs": {"role": "physician"}, "parents": []},
        {"uid": {"type": "Patient", "id": "p-100"}, "attrs": {}, "parents": []},
        {"uid": {"type": "Patient", "id": "p-200"}, "attrs": {"restricted": true}, "parents": []},
        {"uid": {"type": "RelatedPerson", "id": "rp-otto"}, "attrs": {"relationship": "parent",
            "represents": [{"type": "Patient", "id": "p-100"}, {"type": "Patient", "id": "p-200"}]}, "parents": []},
        {"uid": {"type": "Record", "id": "r"}, "attrs": {"patient": {"type": "Patient", "id": "p-100"},
            "labels": ["N"], "codes": ["F32.1"]}, "parents": [{"type": "Patient", "id": "p-100"}]},
    ])
}

fn store() -> EntityStore {
    static STORE: std::sync::LazyLock<EntityStore> =
        std::sync::LazyLock::new(|| EntityStore::from_json(&stored_entities(), Some(&schema())).unwrap());
    STORE.clone()
}

fn stored(kind: &str, id: &str) -> Value {
    stored_entities()
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["uid"]["type"] == kind && e["uid"]["id"] == id)
        .unwrap()
        .clone()
}

fn request() -> DecisionRequest {
    let mut request = DecisionRequest::new(
        parse_uid(&json!("Practitioner::\"dr-weber\""), "principal").unwrap(),
        parse_uid(&json!("Action::\"read\""), "action").unwrap(),
        parse_uid(&json!("Record::\"r\""), "resource").unwrap(),
    );
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::from_unix_millis(0));
    request
}

fn enrichment(context: &str, entities: &Value) -> wit::Enrichment {
    wit::Enrichment { context: context.to_owned(), entities: entities.to_string() }
}

fn grants(toml_table: &str) -> MayChange {
    toml::from_str(toml_table).unwrap()
}

/// Applies an enrichment under `grants` and add-only request entities.
fn apply(
    request: &mut DecisionRequest,
    context: &str,
    entities: Value,
    grants: &MayChange,
) -> Result<(), PluginFault> {
    let (schema, store) = (schema(), store());
    let facts =
        StoredFacts { schema: Some(&schema), store: &store, request_entities: RequestEntities::AddOnly };
    apply_enrichment(request, &enrichment(context, &entities), grants, &facts)
}

fn ungranted(result: Result<(), PluginFault>) -> String {
    match result {
        Err(PluginFault::Ungranted(message)) => message,
        other => panic!("expected an ungranted change, got {other:?}"),
    }
}

#[test]
fn an_enrichment_adds_context_entities_and_attributes_the_store_lacks() {
    let mut request = request();
    let new_patient =
        json!({"uid": {"type": "Patient", "id": "p-9"}, "attrs": {"restricted": false}, "parents": []});
    let mut p100 = stored("Patient", "p-100");
    p100["attrs"]["birthDate"] = json!("2001-01-01");
    apply(&mut request, r#"{"site": "ward-3"}"#, json!([new_patient, p100]), &MayChange::default()).unwrap();
    assert_eq!(request.context, Some(json!({"purpose": "TREAT", "site": "ward-3"})));
    assert_eq!(request.enriched_entities.len(), 2);
    assert!(request.entities.is_empty(), "the caller's entities are left as sent");
}

#[test]
fn finding_03_an_enrichment_may_not_add_the_caller_to_break_glass_without_a_grant() {
    let mut weber = stored("Practitioner", "dr-weber");
    weber["parents"] = json!([{"type": "Group", "id": "break-glass"}]);
    let message = ungranted(apply(&mut request(), "{}", json!([weber.clone()]), &MayChange::default()));
    assert!(message.contains("`entities[0]`, stored entity `Practitioner::\"dr-weber\"`"), "{message}");
    assert!(message.contains("adds `Group::\"break-glass\"`"), "{message}");
    assert!(message.contains("\"Practitioner in\" = \"add\""), "{message}");
    let mut request = request();
    apply(&mut request, "{}", json!([weber]), &grants("\"Practitioner in\" = \"add\"")).unwrap();
    assert_eq!(request.enriched_entities.len(), 1);
}

#[test]
fn finding_03_an_enrichment_may_not_lift_a_restriction_move_or_detach_a_record() {
    let mut lifted = stored("Patient", "p-200");
    lifted["attrs"] = json!({});
    let message = ungranted(apply(&mut request(), "{}", json!([lifted.clone()]), &MayChange::default()));
    assert!(message.contains("leaves out its stored attribute `restricted`"), "{message}");
    assert!(message.contains("\"Patient.restricted\" = \"replace\""), "{message}");
    apply(&mut request(), "{}", json!([lifted]), &grants("\"Patient.restricted\" = \"replace\"")).unwrap();

    let mut moved = stored("Record", "r");
    moved["attrs"]["patient"] = json!({"type": "Patient", "id": "p-200"});
    moved["parents"] = json!([{"type": "Patient", "id": "p-200"}]);
    let message = ungranted(apply(&mut request(), "{}", json!([moved.clone()]), &MayChange::default()));
    assert!(message.contains("changes its stored parents"), "{message}");
    let only_parents = grants("\"Record in\" = \"replace\"");
    let message = ungranted(apply(&mut request(), "{}", json!([moved.clone()]), &only_parents));
    assert!(message.contains("changes its stored attribute `patient`"), "{message}");
    apply(
        &mut request(),
        "{}",
        json!([moved]),
        &grants("\"Record in\" = \"replace\"\n\"Record.patient\" = \"replace\""),
    )
    .unwrap();

    let mut detached = stored("Record", "r");
    detached["parents"] = json!([]);
    let message =
        ungranted(apply(&mut request(), "{}", json!([detached.clone()]), &grants("\"Record in\" = \"add\"")));
    assert!(message.contains("\"Record in\" = \"remove\""), "{message}");
    apply(&mut request(), "{}", json!([detached]), &grants("\"Record in\" = \"remove\"")).unwrap();
}

#[test]
fn finding_03_an_enrichment_may_not_supply_justification_or_purpose_without_a_grant() {
    let mut request = request();
    request.context = Some(json!({}));
    for key in ["justification", "purpose"] {
        let context = format!(r#"{{"{key}": "made up"}}"#);
        let message = ungranted(apply(&mut request, &context, json!([]), &MayChange::default()));
        assert!(message.contains(&format!("`context.{key}`")), "{message}");
    }
    assert_eq!(request.context, Some(json!({})), "a refused enrichment changes nothing");
    apply(
        &mut request,
        r#"{"justification": "unconscious"}"#,
        json!([]),
        &grants("\"context.justification\" = \"add\""),
    )
    .unwrap();
    assert_eq!(request.context, Some(json!({"justification": "unconscious"})));
}

#[test]
fn set_grants_cover_additions_or_removals_only() {
    let labels = grants("\"Record.labels\" = \"add\"");
    let mut labelled = stored("Record", "r");
    labelled["attrs"]["labels"] = json!(["N", "PSY"]);
    apply(&mut request(), "{}", json!([labelled]), &labels).unwrap();
    let mut relabelled = stored("Record", "r");
    relabelled["attrs"]["labels"] = json!(["PSY"]);
    let message = ungranted(apply(&mut request(), "{}", json!([relabelled]), &labels));
    assert!(message.contains("\"Record.labels\" = \"replace\""), "{message}");

    let represents = grants("\"RelatedPerson.represents\" = \"remove\"");
    let mut lapsed = stored("RelatedPerson", "rp-otto");
    lapsed["attrs"]["represents"] = json!([{"type": "Patient", "id": "p-100"}]);
    apply(&mut request(), "{}", json!([lapsed]), &represents).unwrap();
    let mut grown = stored("RelatedPerson", "rp-otto");
    grown["attrs"]["represents"].as_array_mut().unwrap().push(json!({"type": "Patient", "id": "p-9"}));
    let message = ungranted(apply(&mut request(), "{}", json!([grown]), &represents));
    assert!(message.contains("adds to its stored attribute `represents`"), "{message}");
}

#[test]
fn a_plugin_that_hands_back_what_an_earlier_one_was_granted_changes_nothing() {
    let mut request = request();
    let mut labelled = stored("Record", "r");
    labelled["attrs"]["labels"] = json!(["N", "PSY"]);
    apply(&mut request, "{}", json!([labelled.clone()]), &grants("\"Record.labels\" = \"add\"")).unwrap();
    // The next plugin was shown the labelled record and returns it with a new attribute.
    labelled["attrs"]["codes"] = json!(["F32.1"]);
    apply(&mut request, "{}", json!([labelled.clone()]), &MayChange::default()).unwrap();
    assert_eq!(request.enriched_entities, [labelled]);
}

#[test]
fn with_replace_the_callers_copy_is_what_a_plugin_changes() {
    let (schema, store) = (schema(), store());
    let facts =
        StoredFacts { schema: Some(&schema), store: &store, request_entities: RequestEntities::Replace };
    let mut request = request();
    let mut callers = stored("Record", "r");
    callers["attrs"]["labels"] = json!([]);
    request.entities = vec![callers.clone()];
    callers["attrs"]["labels"] = json!(["PSY"]);
    let labels = grants("\"Record.labels\" = \"add\"");
    apply_enrichment(&mut request, &enrichment("{}", &json!([callers])), &labels, &facts).unwrap();
}

#[test]
fn an_enrichment_may_not_set_the_clock_or_replace_the_callers_attributes() {
    for (context, expected) in
        [(r#"{"now": 1}"#, "context.now"), (r#"{"purpose": "HMARKT"}"#, "context.purpose")]
    {
        let fault =
            apply(&mut request(), context, json!([]), &grants("\"context.purpose\" = \"add\"")).unwrap_err();
        assert!(matches!(fault, PluginFault::InvalidOutput(_)), "{fault}");
        assert!(fault.to_string().contains(expected), "{fault}");
    }
}

#[test]
fn malformed_enrichments_are_the_plugins_fault() {
    let (schema, store) = (schema(), store());
    let facts =
        StoredFacts { schema: Some(&schema), store: &store, request_entities: RequestEntities::AddOnly };
    for (context, entities, expected) in [
        ("not json", "[]", "`context` is not JSON"),
        ("[1, 2]", "[]", "`context` is not a JSON object"),
        ("{}", "{}", "`entities` is not a JSON array"),
        ("{}", r#"[{"uid": {"type": "Spaceship", "id": "x"}, "attrs": {}, "parents": []}]"#, "`entities[0]`"),
        (r#"{"site": 7}"#, "[]", "does not fit the schema"),
    ] {
        let enrichment = wit::Enrichment { context: context.to_owned(), entities: entities.to_owned() };
        let fault =
            apply_enrichment(&mut request(), &enrichment, &MayChange::default(), &facts).expect_err(expected);
        assert!(matches!(fault, PluginFault::InvalidOutput(_)), "{fault}");
        assert!(fault.to_string().contains(expected), "{fault} should mention {expected}");
    }
}

#[test]
fn an_undeclared_context_attribute_is_named_with_the_schema_as_the_fix() {
    let (schema, store) = (schema(), store());
    let facts =
        StoredFacts { schema: Some(&schema), store: &store, request_entities: RequestEntities::AddOnly };
    let enrichment = wit::Enrichment {
        context: r#"{"ward": "icu", "site": "x", "bed": {"n": 1}}"#.to_owned(),
        entities: "[]".to_owned(),
    };
    let fault = apply_enrichment(&mut request(), &enrichment, &MayChange::default(), &facts).unwrap_err();
    assert!(matches!(fault, PluginFault::InvalidOutput(_)), "{fault}");
    let message = fault.to_string();
    assert!(message.contains("it adds `context.bed`, `context.ward`, which the schema's context for `Action::\"read\"` does not declare"), "{message}");
    assert!(message.contains("\"Extending the schema for a plugin\" in wasm-plugins/README.md"), "{message}");
    assert!(!message.contains("`context.site`"), "`site` is declared: {message}");

    // A declared attribute of the wrong type is not called undeclared.
    let enrichment = wit::Enrichment { context: r#"{"site": {}}"#.to_owned(), entities: "[]".to_owned() };
    let fault = apply_enrichment(&mut request(), &enrichment, &MayChange::default(), &facts).unwrap_err();
    assert!(fault.to_string().contains("does not fit the schema"), "{fault}");
    assert!(!fault.to_string().contains("does not declare"), "{fault}");
}

// ---------------------------------------------------------------------------
// Property: generated enrichments never change a stored fact beyond the grants.
// ---------------------------------------------------------------------------

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// A plugin's version of a stored entity: each stored set attribute or the
/// parents grown, shrunk or replaced, scalars changed, attributes dropped.
fn mutated(entity: Value, edits: Vec<(usize, u8)>) -> Value {
    let mut entity = entity;
    let candidates = [
        json!({"type": "Patient", "id": "p-100"}),
        json!({"type": "Patient", "id": "p-200"}),
        json!({"type": "Group", "id": "break-glass"}),
    ];
    for (pick, edit) in edits {
        let kind = entity["uid"]["type"].as_str().unwrap_or_default().to_owned();
        let names: Vec<String> =
            entity["attrs"].as_object().map(|a| a.keys().cloned().collect()).unwrap_or_default();
        match (edit % 4, names.get(pick % names.len().max(1))) {
            (0, _) => {
                let parent = match kind.as_str() {
                    "Practitioner" => candidates[2].clone(),
                    "Record" => candidates[pick % 2].clone(),
                    _ => continue,
                };
                let parents = entity["parents"].as_array_mut().unwrap();
                if pick % 3 == 0 {
                    parents.clear()
                } else if !parents.contains(&parent) {
                    parents.push(parent)
                }
            }
            (1, Some(name)) => {
                let value = &mut entity["attrs"][name.as_str()];
                match value {
                    Value::Array(items) if pick % 2 == 0 => {
                        items.pop();
                    }
                    Value::Array(items) if name == "represents" || name == "patient" => {
                        items.push(candidates[pick % 2].clone())
                    }
                    Value::Array(items) => items.push(json!(format!("L{pick}"))),
                    Value::Bool(b) => *b = !*b,
                    Value::String(s) => s.push('x'),
                    Value::Object(_) => *value = candidates[pick % 2].clone(),
                    _ => {}
                }
            }
            (2, Some(name))
                if matches!(name.as_str(), "restricted" | "codes" | "relationship" | "birthDate") =>
            {
                entity["attrs"].as_object_mut().unwrap().remove(name.as_str());
            }
            _ => {}
        }
    }
    entity
}

fn granted() -> impl Strategy<Value = MayChange> {
    let keys = prop::sample::subsequence(
        vec![
            "Record.labels",
            "Record.codes",
            "Record.patient",
            "Record in",
            "Patient.restricted",
            "Practitioner in",
            "RelatedPerson.represents",
        ],
        0..4,
    );
    (keys, prop::collection::vec(0u8..3, 4)).prop_map(|(keys, modes)| {
        let table: String = keys
            .iter()
            .zip(modes)
            .map(|(key, mode)| {
                format!("\"{key}\" = \"{}\"\n", ["add", "remove", "replace"][usize::from(mode)])
            })
            .collect();
        grants(&table)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// An enrichment is applied exactly when every stored fact it changes is
    /// granted; when it is, the entity a decision then sees differs from
    /// the stored one only as granted.
    #[test]
    fn enrichments_never_change_a_stored_fact_beyond_the_grants(
        which in 0usize..6,
        edits in prop::collection::vec((0usize..8, 0u8..4), 0..4),
        grants in granted(),
    ) {
        let (schema, store) = (schema(), store());
        let base = stored_entities()[which].clone();
        let sent = mutated(base.clone(), edits);
        let Ok(parsed) = Entity::from_json_value(sent.clone(), Some(&schema)) else { return Ok(()) };
        let stored = Entity::from_json_value(base, Some(&schema)).unwrap();
        let kind = parsed.uid().type_name().to_string();
        let covered = |change: &FactChange| {
            MayChange::key(&kind, &change.fact).and_then(|key| grants.get(&key)).is_some_and(|g| g.covers(change.kind))
        };
        let all_granted = stored_fact_changes(&stored, &parsed).iter().all(covered);
        let mut request = request();
        let facts = StoredFacts { schema: Some(&schema), store: &store, request_entities: RequestEntities::AddOnly };
        let result = apply_enrichment(&mut request, &enrichment("{}", &json!([sent])), &grants, &facts);
        prop_assert_eq!(result.is_ok(), all_granted, "{:?}", result);
        match result {
            Ok(()) => {
                let seen = Entity::from_json_value(request.enriched_entities[0].clone(), Some(&schema)).unwrap();
                prop_assert!(stored_fact_changes(&stored, &seen).iter().all(covered));
            }
            Err(fault) => {
                prop_assert!(matches!(fault, PluginFault::Ungranted(_)), "{}", fault);
                prop_assert!(request.enriched_entities.is_empty(), "a refused enrichment changed the request");
            }
        }
    }
}

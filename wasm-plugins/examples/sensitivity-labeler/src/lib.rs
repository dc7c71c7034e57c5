//! An `enrich` hook that derives HL7 sensitivity labels of a `Record` from
//! its ICD-10 codes, so that policies and consents about labels (`PSY`,
//! `HIV`, `ETH`, ...) cover records nobody labelled by hand.
//!
//! The table comes from the plugin's config. Each key is `icd10:<pattern>`
//! and its value one or more labels, comma-separated:
//!
//! ```toml
//! [plugins.config]
//! "icd10:F" = "PSY"               # a prefix: every code in chapter F
//! "icd10:F10-F19" = "ETH"         # an inclusive range of 3-character categories
//! "icd10:B20-B24" = "HIV"
//! "icd10:Z71.41" = "ETH, SUD"     # a code (and any code beneath it)
//! ```
//!
//! Codes and patterns are compared without their dots and case, so `F32.1`,
//! `F321` and `f32.1` are one code. Only codes of the systems
//! `http://hl7.org/fhir/sid/icd-10` and `http://hl7.org/fhir/sid/icd-10-cm`,
//! and bare codes, are considered. A code may match several rules: the
//! labels are their union. The hook returns the Record entity, copied from
//! the request's entities, with `labels` = its labels ∪ the derived ones, but
//! only if that adds a label; otherwise nothing.

use std::collections::BTreeSet;

use consentry_plugin_sdk::serde_json::Value;
use consentry_plugin_sdk::{Enrich, Enrichment, Request, config_entries, export_plugin};

mod table;

use table::LabelTable;

struct SensitivityLabeler;

impl Enrich for SensitivityLabeler {
    fn enrich(request: Request) -> Result<Enrichment, String> {
        if request.resource.type_name != "Record" {
            return Ok(Enrichment::new());
        }
        let Some(record) = request.entity(&request.resource) else {
            return Ok(Enrichment::new());
        };
        let table = LabelTable::from_config(&config_entries())?;
        Ok(relabel(record, &table)
            .map_or_else(Enrichment::new, |record| Enrichment::new().with_entity(record)))
    }
}

export_plugin!(SensitivityLabeler: enrich);

/// The record with the labels its codes call for added, or `None` when that
/// adds nothing.
fn relabel(record: &Value, table: &LabelTable) -> Option<Value> {
    let attrs = record.get("attrs");
    let strings = |name: &str| -> Vec<&str> {
        let values = attrs.and_then(|attrs| attrs.get(name)).and_then(Value::as_array);
        values.into_iter().flatten().filter_map(Value::as_str).collect()
    };
    let existing: BTreeSet<&str> = strings("labels").into_iter().collect();
    let derived = table.labels_for(strings("codes"));
    let added: Vec<&str> =
        derived.iter().map(String::as_str).filter(|label| !existing.contains(label)).collect();
    if added.is_empty() {
        return None;
    }
    let labels: BTreeSet<&str> = existing.into_iter().chain(added).collect();
    let mut record = record.clone();
    let attrs = record.as_object_mut()?.entry("attrs").or_insert_with(|| Value::Object(Default::default()));
    attrs.as_object_mut()?.insert("labels".to_owned(), labels.into_iter().collect());
    Some(record)
}

#[cfg(test)]
mod tests {
    use consentry_plugin_sdk::serde_json::json;

    use super::*;

    fn table() -> LabelTable {
        let entries = [("icd10:F", "PSY"), ("icd10:F10-F19", "ETH"), ("icd10:B20-B24", "HIV")];
        LabelTable::from_config(&entries.map(|(k, v)| (k.to_owned(), v.to_owned()))).unwrap()
    }

    fn record(labels: Value, codes: Value) -> Value {
        json!({
            "uid": {"type": "Record", "id": "obs-1"},
            "attrs": {"patient": {"type": "Patient", "id": "p-1"}, "labels": labels, "codes": codes},
            "parents": [{"type": "Patient", "id": "p-1"}],
        })
    }

    #[test]
    fn adds_derived_labels_to_existing_ones() {
        let relabelled =
            relabel(&record(json!(["R"]), json!(["http://hl7.org/fhir/sid/icd-10|F10.2"])), &table());
        let expected = record(json!(["ETH", "PSY", "R"]), json!(["http://hl7.org/fhir/sid/icd-10|F10.2"]));
        assert_eq!(relabelled, Some(expected));
    }

    #[test]
    fn nothing_when_no_label_is_new() {
        assert_eq!(relabel(&record(json!(["PSY"]), json!(["F32.1"])), &table()), None);
        assert_eq!(relabel(&record(json!([]), json!(["I10"])), &table()), None);
        assert_eq!(relabel(&record(json!([]), json!(["http://loinc.org|F10"])), &table()), None);
        assert_eq!(relabel(&json!({"uid": {"type": "Record", "id": "x"}}), &table()), None);
    }

    #[test]
    fn labels_a_record_without_labels() {
        let bare = json!({"uid": {"type": "Record", "id": "x"}, "attrs": {"codes": ["B21"]}});
        let relabelled = relabel(&bare, &table()).unwrap();
        assert_eq!(relabelled["attrs"]["labels"], json!(["HIV"]));
        assert_eq!(relabelled["attrs"]["codes"], json!(["B21"]));
    }
}

//! A filter as FHIR search parameters, so a FHIR server can run it in its
//! own query.
//!
//! FHIR search joins parameters with AND and the values of one parameter
//! with OR, and has no OR across parameters, so each alternative of the
//! filter becomes one query and the records allowed are the union of their
//! results. Labels and confidentiality are both `meta.security` in FHIR, so
//! they are told apart by code system. What FHIR search cannot say (it has
//! no `_type:not`) is listed, and a query that leaves a condition out is
//! marked incomplete: it returns more than the filter admits, and the
//! caller must apply the filter (or decide) on its results.

use serde::Serialize;

use super::filter::{Attribute, Condition, Op, RecordFilter};

/// The code system of the sensitivity labels records carry in `labels`.
pub const LABEL_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// The code system of `confidentiality`.
pub const CONFIDENTIALITY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

/// A filter as FHIR searches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FhirSearch {
    /// One query per alternative of the filter; the records allowed are the
    /// union of their results. None when the filter admits nothing.
    pub queries: Vec<FhirQuery>,
    /// The conditions no FHIR search parameter expresses.
    pub untranslated: Vec<String>,
}

/// One FHIR search: its parameters, each `name=value`, to be joined with
/// `&` (values not yet percent-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FhirQuery {
    /// The parameters.
    pub params: Vec<String>,
    /// Whether the query says all of its alternative; if not, its results
    /// include records the filter does not admit.
    pub complete: bool,
}

impl FhirSearch {
    /// The searches that run `filter`.
    pub fn of(filter: &RecordFilter) -> Self {
        let mut untranslated = Vec::new();
        let queries = filter
            .any_of
            .iter()
            .map(|alternative| {
                let mut params = Vec::new();
                let mut complete = true;
                for condition in &alternative.all_of {
                    match parameters(condition) {
                        Some(found) => params.extend(found),
                        None => {
                            complete = false;
                            let text = describe(condition);
                            if !untranslated.contains(&text) {
                                untranslated.push(text);
                            }
                        }
                    }
                }
                FhirQuery { params, complete }
            })
            .collect();
        Self { queries, untranslated }
    }
}

/// The parameters that say one condition, or `None` when FHIR search cannot.
fn parameters(condition: &Condition) -> Option<Vec<String>> {
    let values = &condition.values;
    let each = |name: &str, system: Option<&str>| -> Vec<String> {
        values.iter().map(|v| format!("{name}={}", coded(system, v))).collect()
    };
    let any = |name: &str, system: Option<&str>| -> Vec<String> {
        let joined: Vec<String> = values.iter().map(|v| coded(system, v)).collect();
        vec![format!("{name}={}", joined.join(","))]
    };
    let missing = |name: &str, absent: bool| vec![format!("{name}:missing={absent}")];
    let date = |prefix: &str| values.first().map(|v| vec![format!("date={prefix}{v}")]);
    Some(match (condition.attribute, condition.op) {
        (Attribute::Labels, Op::ContainsAny) => any("_security", Some(LABEL_SYSTEM)),
        (Attribute::Labels, Op::ContainsAll) => each("_security", Some(LABEL_SYSTEM)),
        (Attribute::Labels, Op::ContainsNone) => each("_security:not", Some(LABEL_SYSTEM)),
        (Attribute::Confidentiality, Op::In) => any("_security", Some(CONFIDENTIALITY_SYSTEM)),
        (Attribute::Confidentiality, Op::NotIn) => each("_security:not", Some(CONFIDENTIALITY_SYSTEM)),
        (Attribute::ResourceType, Op::In) => any("_type", None),
        (Attribute::Id, Op::In) => any("_id", None),
        (Attribute::Id, Op::NotIn) => each("_id:not", None),
        (Attribute::Codes, Op::ContainsAny) => any("code", None),
        (Attribute::Codes, Op::ContainsAll) => each("code", None),
        (Attribute::Codes, Op::ContainsNone) => each("code:not", None),
        (Attribute::Codes, Op::Present) => missing("code", false),
        (Attribute::Codes, Op::Absent) => missing("code", true),
        (Attribute::Date, Op::Present) => missing("date", false),
        (Attribute::Date, Op::Absent) => missing("date", true),
        (Attribute::Date, Op::Ge) => date("ge")?,
        (Attribute::Date, Op::Lt) => date("lt")?,
        _ => return None,
    })
}

fn coded(system: Option<&str>, code: &str) -> String {
    match system {
        Some(system) => format!("{system}|{code}"),
        None => code.to_owned(),
    }
}

fn describe(condition: &Condition) -> String {
    let op = serde_json::to_value(condition.op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let attribute = serde_json::to_value(condition.attribute)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let why = match (condition.attribute, condition.op) {
        (Attribute::ResourceType, Op::NotIn) => {
            ": FHIR search cannot exclude resource types (`_type` has no `:not`)"
        }
        _ => ": no FHIR search parameter expresses it",
    };
    format!("{attribute} {op} [{}]{why}", condition.values.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::filter::Alternative;

    fn condition(attribute: Attribute, op: Op, values: &[&str]) -> Condition {
        Condition { attribute, op, values: values.iter().map(|v| (*v).to_owned()).collect() }
    }

    #[test]
    fn each_alternative_is_one_query_and_what_fhir_cannot_say_is_named() {
        let filter = RecordFilter {
            any_of: vec![
                Alternative {
                    all_of: vec![
                        condition(Attribute::Labels, Op::ContainsNone, &["PSY", "HIV"]),
                        condition(Attribute::Date, Op::Ge, &["2026-01-01T00:00:00Z"]),
                    ],
                },
                Alternative {
                    all_of: vec![condition(Attribute::ResourceType, Op::NotIn, &["MedicationStatement"])],
                },
            ],
            exact: true,
        };
        let search = FhirSearch::of(&filter);
        assert_eq!(
            search.queries,
            [
                FhirQuery {
                    params: vec![
                        format!("_security:not={LABEL_SYSTEM}|PSY"),
                        format!("_security:not={LABEL_SYSTEM}|HIV"),
                        "date=ge2026-01-01T00:00:00Z".to_owned()
                    ],
                    complete: true
                },
                FhirQuery { params: vec![], complete: false }
            ]
        );
        assert_eq!(search.untranslated.len(), 1);
        assert!(
            search.untranslated[0].starts_with("resourceType not_in [MedicationStatement]"),
            "{search:?}"
        );
    }
}

//! The filter: which of a patient's records a plan admits, written as data.
//!
//! A caller that holds the records (a FHIR server, an EHR's database) runs
//! the filter in its own query instead of asking for a decision per row, so
//! it is plain JSON over the record attributes of the vocabulary
//! (`policies/schema.cedarschema`), not Cedar: a disjunction (`any_of`) of
//! conjunctions (`all_of`) of conditions, each one attribute, one operator
//! and its values:
//!
//! ```json
//! {"any_of": [{"all_of": [
//!    {"attribute": "labels", "op": "contains_none", "values": ["ETH", "GDIS", "HIV", "PSY"]},
//!    {"attribute": "resourceType", "op": "not_in", "values": ["MedicationStatement"]},
//!    {"attribute": "date", "op": "ge", "values": ["2026-01-01T00:00:00Z"]}]}],
//!  "exact": true}
//! ```
//!
//! | attribute | operators | a record without it |
//! |---|---|---|
//! | `id`, `resourceType`, `confidentiality` | `in`, `not_in` | (always present) |
//! | `labels` | `contains_any`, `contains_all`, `contains_none` | (always present) |
//! | `codes` | `contains_any`, `contains_all`, `contains_none`, `present`, `absent` | has no codes: only `contains_none` and `absent` hold |
//! | `date` | `ge`, `lt` (one RFC 3339 instant), `present`, `absent` | satisfies neither `ge` nor `lt` |
//!
//! `any_of: []` admits nothing; one alternative with `all_of: []` admits
//! everything. A filter is never wider than the decisions: every record it
//! admits is allowed. When `exact` is true it is also never narrower; when
//! false, parts of the policies could not be written as conditions and the
//! filter leaves out every record they might concern (see the plan's
//! `untranslated`), which the caller may decide one by one.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::formula::{Atom, Conjunction, Values};
use crate::clock::EvaluationTime;

/// Which records a plan admits: those that satisfy any one alternative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordFilter {
    /// The alternatives; a record satisfying any of them is admitted.
    pub any_of: Vec<Alternative>,
    /// Whether the filter admits every record that is allowed, too (not
    /// only records that are).
    pub exact: bool,
}

/// One alternative: a record must satisfy every condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// The conditions.
    pub all_of: Vec<Condition>,
}

/// One test of one record attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The attribute tested.
    pub attribute: Attribute,
    /// How.
    pub op: Op,
    /// The values: codes, types or ids; one instant for `ge` and `lt`; none for `present` and `absent`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The record attributes a filter can test: those of the vocabulary's `Record`, and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Attribute {
    /// The record's entity id (a consent's `data` reference names one).
    #[serde(rename = "id")]
    Id,
    /// The FHIR resource type.
    #[serde(rename = "resourceType")]
    ResourceType,
    /// The confidentiality code (N, R, V, ...).
    #[serde(rename = "confidentiality")]
    Confidentiality,
    /// The security labels.
    #[serde(rename = "labels")]
    Labels,
    /// The clinical codes (`system|code` or bare codes).
    #[serde(rename = "codes")]
    Codes,
    /// When the data was recorded.
    #[serde(rename = "date")]
    Date,
}

/// A condition's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// The value is one of the values.
    In,
    /// The value is none of the values.
    NotIn,
    /// The set holds at least one of the values.
    ContainsAny,
    /// The set holds every one of the values.
    ContainsAll,
    /// The set holds none of the values.
    ContainsNone,
    /// The attribute is present.
    Present,
    /// The attribute is absent.
    Absent,
    /// The instant is present and at or after the value.
    Ge,
    /// The instant is present and before the value.
    Lt,
}

/// What a filter reads of one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordFacts {
    /// The entity id.
    pub id: String,
    /// `resourceType`.
    pub resource_type: String,
    /// `labels`.
    pub labels: BTreeSet<String>,
    /// `confidentiality`.
    pub confidentiality: String,
    /// `codes`, when present.
    pub codes: Option<BTreeSet<String>>,
    /// `date` in Unix milliseconds, when present.
    pub date: Option<i64>,
}

impl RecordFilter {
    /// Admits nothing; `exact` says whether that is the whole answer.
    pub fn nothing(exact: bool) -> Self {
        Self { any_of: Vec::new(), exact }
    }

    /// Admits every record.
    pub fn everything() -> Self {
        Self { any_of: vec![Alternative { all_of: Vec::new() }], exact: true }
    }

    /// Whether the filter admits the record.
    pub fn admits(&self, record: &RecordFacts) -> bool {
        self.any_of.iter().any(|alternative| alternative.all_of.iter().all(|c| c.holds(record)))
    }

    /// The filter of the normal form's alternatives, each written as conditions.
    pub(crate) fn of(alternatives: &[Conjunction], exact: bool) -> Self {
        let mut shapes: Vec<Shape> = alternatives.iter().map(Shape::of).collect();
        merge(&mut shapes);
        Self { any_of: shapes.iter().map(Shape::conditions).collect(), exact }
    }
}

impl Condition {
    fn holds(&self, record: &RecordFacts) -> bool {
        let scalar = match self.attribute {
            Attribute::Id => Some(&record.id),
            Attribute::ResourceType => Some(&record.resource_type),
            Attribute::Confidentiality => Some(&record.confidentiality),
            _ => None,
        };
        let set = match self.attribute {
            Attribute::Labels => Some(&record.labels),
            Attribute::Codes => record.codes.as_ref(),
            _ => None,
        };
        let date = || {
            let at = self.values.first().and_then(|v| EvaluationTime::parse(v).ok());
            record.date.zip(at.map(|at| at.unix_millis()))
        };
        let present = match self.attribute {
            Attribute::Codes => record.codes.is_some(),
            Attribute::Date => record.date.is_some(),
            _ => true,
        };
        match self.op {
            Op::In => scalar.is_some_and(|v| self.values.contains(v)),
            Op::NotIn => scalar.is_some_and(|v| !self.values.contains(v)),
            Op::ContainsAny => set.is_some_and(|s| self.values.iter().any(|v| s.contains(v))),
            Op::ContainsAll => set.is_some_and(|s| self.values.iter().all(|v| s.contains(v))),
            Op::ContainsNone => {
                scalar.is_none() && set.is_none_or(|s| !self.values.iter().any(|v| s.contains(v)))
            }
            Op::Present => present,
            Op::Absent => !present,
            // An instant the filter cannot read admits nothing.
            Op::Ge => self.attribute == Attribute::Date && date().is_some_and(|(d, at)| d >= at),
            Op::Lt => self.attribute == Attribute::Date && date().is_some_and(|(d, at)| d < at),
        }
    }
}

/// One alternative, gathered by attribute, so that alternatives that differ
/// in one value can be merged into one `in`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Shape {
    id: Scalar,
    kind: Scalar,
    confidentiality: Scalar,
    labels: Set,
    codes: Set,
    codes_present: Option<bool>,
    date_present: Option<bool>,
    date_from: Option<i64>,
    date_until: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Scalar {
    one_of: Option<Values>,
    none_of: Values,
}

/// A set attribute: each `any` must meet it, `none` must miss it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Set {
    any: Vec<Values>,
    none: Values,
}

fn listed(values: &Values) -> Vec<String> {
    values.iter().cloned().collect()
}

impl Scalar {
    fn add(&mut self, values: &Values, positive: bool) {
        if positive {
            self.one_of = Some(values.clone());
        } else {
            self.none_of.extend(values.iter().cloned());
        }
    }

    fn conditions(&self, attribute: Attribute, out: &mut Vec<Condition>) {
        if let Some(values) = &self.one_of {
            out.push(Condition { attribute, op: Op::In, values: listed(values) });
        }
        if !self.none_of.is_empty() {
            out.push(Condition { attribute, op: Op::NotIn, values: listed(&self.none_of) });
        }
    }
}

impl Set {
    fn add(&mut self, values: &Values, positive: bool) {
        if positive {
            self.any.push(values.clone());
        } else {
            self.none.extend(values.iter().cloned());
        }
    }

    /// Single values it must hold become one `contains_all`.
    fn conditions(&self, attribute: Attribute, out: &mut Vec<Condition>) {
        let (single, several): (Vec<&Values>, Vec<&Values>) = self.any.iter().partition(|v| v.len() == 1);
        let all: Values = single.into_iter().flatten().cloned().collect();
        if !all.is_empty() {
            out.push(Condition { attribute, op: Op::ContainsAll, values: listed(&all) });
        }
        for values in several {
            out.push(Condition { attribute, op: Op::ContainsAny, values: listed(values) });
        }
        if !self.none.is_empty() {
            out.push(Condition { attribute, op: Op::ContainsNone, values: listed(&self.none) });
        }
    }
}

impl Shape {
    fn of(conjunction: &Conjunction) -> Self {
        let mut shape = Shape::default();
        for (atom, positive) in conjunction {
            let positive = *positive;
            match atom {
                Atom::Id(v) => shape.id.add(v, positive),
                Atom::Type(v) => shape.kind.add(v, positive),
                Atom::Confidentiality(v) => shape.confidentiality.add(v, positive),
                Atom::Labels(v) => shape.labels.add(v, positive),
                Atom::Codes(v) => shape.codes.add(v, positive),
                Atom::HasCodes => shape.codes_present = Some(positive),
                Atom::HasDate => shape.date_present = Some(positive),
                Atom::DateGe(at) => shape.date_from = Some(*at),
                Atom::DateLt(at) => shape.date_until = Some(*at),
                // Conjunctions with opaque parts never reach a filter.
                Atom::Opaque(_) => {}
            }
        }
        shape
    }

    fn conditions(&self) -> Alternative {
        let mut out = Vec::new();
        self.id.conditions(Attribute::Id, &mut out);
        self.kind.conditions(Attribute::ResourceType, &mut out);
        self.confidentiality.conditions(Attribute::Confidentiality, &mut out);
        self.labels.conditions(Attribute::Labels, &mut out);
        self.codes.conditions(Attribute::Codes, &mut out);
        let presence = |attribute, present: Option<bool>| {
            present.map(|p| Condition {
                attribute,
                op: if p { Op::Present } else { Op::Absent },
                values: vec![],
            })
        };
        out.extend(presence(Attribute::Codes, self.codes_present));
        out.extend(presence(Attribute::Date, self.date_present));
        let instant = |op, at: Option<i64>| {
            at.map(|at| Condition {
                attribute: Attribute::Date,
                op,
                values: vec![EvaluationTime::from_unix_millis(at).cedar_literal().to_owned()],
            })
        };
        out.extend(instant(Op::Ge, self.date_from));
        out.extend(instant(Op::Lt, self.date_until));
        Alternative { all_of: out }
    }

    /// The scalar attribute `which` (0: resource type, 1: confidentiality, 2: id).
    fn scalar(&mut self, which: usize) -> &mut Scalar {
        match which {
            0 => &mut self.kind,
            1 => &mut self.confidentiality,
            _ => &mut self.id,
        }
    }
}

/// Merges alternatives that differ only in the value an `in` allows
/// (`resourceType in [A]` or `resourceType in [B]` is `in [A, B]`).
fn merge(shapes: &mut Vec<Shape>) {
    'again: loop {
        for i in 0..shapes.len() {
            for j in (i + 1)..shapes.len() {
                for which in 0..3 {
                    let (Some(a), Some(b)) = (shapes.get(i), shapes.get(j)) else { continue };
                    let (mut a, mut b) = (a.clone(), b.clone());
                    let (a_values, b_values) = (a.scalar(which).one_of.take(), b.scalar(which).one_of.take());
                    if let (Some(mut values), Some(more)) = (a_values, b_values)
                        && a == b
                    {
                        values.extend(more);
                        a.scalar(which).one_of = Some(values);
                        if let Some(slot) = shapes.get_mut(i) {
                            *slot = a;
                        }
                        shapes.remove(j);
                        continue 'again;
                    }
                }
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conjunction(literals: &[(Atom, bool)]) -> Conjunction {
        literals.iter().cloned().collect()
    }

    #[test]
    fn alternatives_that_differ_in_one_type_merge() {
        let filter = RecordFilter::of(
            &[
                conjunction(&[
                    (Atom::one(Atom::Type, "Observation".into()), true),
                    (Atom::one(Atom::Labels, "PSY".into()), false),
                ]),
                conjunction(&[
                    (Atom::one(Atom::Type, "Condition".into()), true),
                    (Atom::one(Atom::Labels, "PSY".into()), false),
                ]),
            ],
            true,
        );
        let json = serde_json::to_value(&filter).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"any_of": [{"all_of": [
                {"attribute": "resourceType", "op": "in", "values": ["Condition", "Observation"]},
                {"attribute": "labels", "op": "contains_none", "values": ["PSY"]}]}], "exact": true})
        );
    }

    #[test]
    fn conditions_read_records_as_documented() {
        let record = RecordFacts {
            id: "obs-1".into(),
            resource_type: "Observation".into(),
            labels: BTreeSet::from(["PSY".to_owned()]),
            confidentiality: "N".into(),
            codes: None,
            date: Some(1_000),
        };
        let holds = |attribute, op, values: &[&str]| {
            Condition { attribute, op, values: values.iter().map(|v| (*v).to_owned()).collect() }
                .holds(&record)
        };
        assert!(holds(Attribute::Codes, Op::ContainsNone, &["x"]), "no codes hold none");
        assert!(!holds(Attribute::Codes, Op::ContainsAll, &["x"]));
        assert!(holds(Attribute::Codes, Op::Absent, &[]));
        assert!(!holds(Attribute::Labels, Op::ContainsNone, &["PSY", "HIV"]));
        assert!(holds(Attribute::Date, Op::Ge, &["1970-01-01T00:00:01Z"]));
        assert!(!holds(Attribute::Date, Op::Lt, &["1970-01-01T00:00:01Z"]));
        assert!(!holds(Attribute::Date, Op::Lt, &["not a date"]), "an unreadable instant admits nothing");
        assert!(holds(Attribute::ResourceType, Op::NotIn, &["Condition"]));
        assert!(
            !holds(Attribute::ResourceType, Op::ContainsNone, &["Condition"]),
            "not an operator of scalars"
        );
        assert!(RecordFilter::everything().admits(&record));
        assert!(!RecordFilter::nothing(true).admits(&record));
    }
}

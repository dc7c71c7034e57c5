//! Special categories: security labels that only a consent naming them, or
//! the patient, opens (GDPR Art. 9 data such as genetic data, psychiatry,
//! HIV or substance use).
//!
//! A pack forbid cannot express this: it would also override the consent
//! that names the label, and without one a general treatment consent opens
//! the record. So each permit says which labels it opens, in
//! `@opens_labels`: a list of codes, `*` (everything: the patient, a
//! representative) or `break-glass` (the labels whose `break_glass` is true).
//! Consents get the annotation from their compiler, listing the labels
//! their provision path names. A satisfied permit counts for a record that
//! carries special labels only if it opens every one of them; a permit
//! without the annotation opens none.
//!
//! Which labels are special is configuration of the pack
//! (`special-categories.json` in the policy directory), read once at load.

use std::collections::BTreeSet;

use cedar_policy::{Entities, EntityUid, Policy};
use cedar_policy_core::ast::{Literal, PartialValue, ValueKind};
use cedar_policy_core::entities::{Dereference, Entities as CoreEntities};
use serde::{Deserialize, Serialize};

use crate::error::{LoadError, Problem};
use crate::obligation::{Obligation, ObligationKind};
use crate::partition::PATIENT_TYPE;

/// The annotation in which a permit lists the special labels it opens.
pub const OPENS_LABELS: &str = "opens_labels";

/// The name under which decisions report what special categories did.
pub const SPECIAL_CATEGORIES: &str = "special-categories";

/// One label that needs explicit consent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialLabel {
    /// The security label code, as records carry it in `labels`, such as `PSY`.
    pub code: String,
    /// Whether the break-glass permits (`@opens_labels("break-glass")`) open it.
    pub break_glass: bool,
    /// What it is, for people: `psychiatry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<String>,
}

impl SpecialLabel {
    fn shown(&self) -> String {
        match &self.display {
            Some(display) => format!("{} ({display})", self.code),
            None => self.code.clone(),
        }
    }
}

/// The pack's special categories; empty when the pack has none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecialCategories {
    labels: Vec<SpecialLabel>,
}

impl SpecialCategories {
    /// Reads `{"labels": [{"code", "break_glass", "display"?}, ...]}`. A
    /// file that does not have that shape, or names a label twice, is refused
    /// like a bad policy, so a typo never silently opens a category.
    pub fn from_json(text: &str) -> Result<Self, LoadError> {
        let refused = |message: String| {
            LoadError::Policies(vec![Problem::message(format!("special categories: {message}"))])
        };
        let mut special: Self = serde_json::from_str(text).map_err(|e| refused(e.to_string()))?;
        let mut seen = BTreeSet::new();
        for label in &special.labels {
            if label.code.trim().is_empty() || label.code.contains(',') {
                return Err(refused(format!("label code `{}` is empty or holds a comma", label.code)));
            }
            if !seen.insert(label.code.as_str()) {
                return Err(refused(format!("label `{}` is listed twice", label.code)));
            }
        }
        special.labels.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(special)
    }

    /// The labels, by code.
    pub fn labels(&self) -> &[SpecialLabel] {
        &self.labels
    }

    /// Whether the pack has none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The special labels `resource` carries in its `labels` attribute, as
    /// the decision's entities hold it (enrichments included).
    pub(crate) fn carried_by(&self, resource: &EntityUid, entities: &Entities) -> Vec<&SpecialLabel> {
        if self.is_empty() {
            return Vec::new();
        }
        // Read the core entity in place: converting the attribute to an
        // `EvalResult` copied every label on every decision.
        let core: &CoreEntities = entities.as_ref();
        let Dereference::Data(entity) = core.entity(resource.as_ref()) else {
            return Vec::new();
        };
        let Some(PartialValue::Value(labels)) = entity.get("labels") else {
            return Vec::new();
        };
        let ValueKind::Set(labels) = labels.value_kind() else {
            return Vec::new();
        };
        let codes: BTreeSet<&str> = labels
            .iter()
            .filter_map(|label| match label.value_kind() {
                ValueKind::Lit(Literal::String(code)) => Some(code.as_str()),
                _ => None,
            })
            .collect();
        self.labels.iter().filter(|label| codes.contains(label.code.as_str())).collect()
    }
}

/// What one permit opens, from its `@opens_labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Opens {
    every: bool,
    break_glass: bool,
    codes: BTreeSet<String>,
}

impl Opens {
    /// Reads `@opens_labels`. A permit whose own `redact` obligation removes
    /// a label covers it too: what it grants never includes such records.
    pub(crate) fn of(policy: &Policy) -> Self {
        let mut opens = Self::default();
        let list = |name| policy.annotation(name).into_iter().flat_map(|v| v.split(',')).map(str::trim);
        let redacts = list("obligation").any(|id| id == "redact");
        let redacted =
            list("redact").filter(|_| redacts).filter(|code| !matches!(*code, "*" | "break-glass"));
        for item in list(OPENS_LABELS).chain(redacted).filter(|i| !i.is_empty()) {
            match item {
                "*" => opens.every = true,
                "break-glass" => opens.break_glass = true,
                code => {
                    opens.codes.insert(code.to_owned());
                }
            }
        }
        opens
    }

    fn opens(&self, label: &SpecialLabel) -> bool {
        self.every || (self.break_glass && label.break_glass) || self.codes.contains(&label.code)
    }

    /// Whether this permit may grant access to something that carries `labels`.
    pub(crate) fn opens_all(&self, labels: &[&SpecialLabel]) -> bool {
        labels.iter().all(|label| self.opens(label))
    }
}

/// Why satisfied permits did not count: the record carries special labels
/// they do not open. `withheld` names those permits.
pub(crate) fn withheld_reason(carried: &[&SpecialLabel], withheld: &[&str]) -> String {
    let shown: Vec<String> = carried.iter().map(|label| label.shown()).collect();
    let permits: Vec<String> = withheld.iter().map(|id| format!("`{id}`")).collect();
    format!(
        "the record carries the special category {}, which only a consent that names it or the patient \
         opens (break-glass only where the pack says so); {} do(es) not open it",
        shown.join(" and "),
        permits.join(", ")
    )
}

/// Whether a request is a search of a whole patient, whose results may hold
/// records of any label.
pub(crate) fn is_patient_search(action: &EntityUid, resource: &EntityUid) -> bool {
    resource.type_name().basename() == PATIENT_TYPE
        && action.type_name().basename() == "Action"
        && action.id().unescaped() == "search"
}

/// For an allowed search of a patient: the obligation to redact the
/// special labels that none of the determining permits opens.
pub(crate) fn search_redaction<'o>(
    special: &SpecialCategories,
    determining: impl Iterator<Item = &'o Opens>,
) -> Option<Obligation> {
    let opened: Vec<&Opens> = determining.collect();
    let redacted: Vec<String> = special
        .labels
        .iter()
        .filter(|label| !opened.iter().any(|opens| opens.opens(label)))
        .map(|label| label.code.clone())
        .collect();
    (!redacted.is_empty()).then(|| Obligation {
        id: "redact".to_owned(),
        kind: ObligationKind::Obligation,
        policy: SPECIAL_CATEGORIES.to_owned(),
        values: redacted,
        filter: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn special() -> SpecialCategories {
        SpecialCategories::from_json(
            r#"{"labels": [{"code": "PSY", "break_glass": true, "display": "psychiatry"},
                           {"code": "GDIS", "break_glass": false}]}"#,
        )
        .unwrap()
    }

    fn opens(annotation: Option<&str>) -> Opens {
        let text = match annotation {
            Some(value) => format!("@opens_labels(\"{value}\") permit(principal, action, resource);"),
            None => "permit(principal, action, resource);".to_owned(),
        };
        Opens::of(&Policy::from_str(&text).unwrap())
    }

    #[test]
    fn a_permit_opens_what_its_annotation_names() {
        let special = special();
        let labels: Vec<&SpecialLabel> = special.labels().iter().collect();
        let (gdis, psy) = (&labels[..1], &labels[1..]);
        assert!(opens(Some("*")).opens_all(&labels));
        assert!(opens(Some("break-glass")).opens_all(psy));
        assert!(!opens(Some("break-glass")).opens_all(gdis));
        assert!(opens(Some("PSY, HIV")).opens_all(psy));
        assert!(!opens(Some("PSY, HIV")).opens_all(&labels));
        assert!(!opens(Some("")).opens_all(psy));
        assert!(!opens(None).opens_all(psy), "no annotation opens no special label");
        assert!(opens(None).opens_all(&[]), "a record without special labels needs nothing opened");
        let redacting = Policy::from_str(
            r#"@obligation("redact") @redact("PSY") @opens_labels("") permit(principal, action, resource);"#,
        );
        assert!(Opens::of(&redacting.unwrap()).opens_all(psy), "a permit that redacts a label covers it");
    }

    #[test]
    fn a_search_redacts_what_no_determining_permit_opens() {
        let special = special();
        let redaction = |permits: &[Opens]| search_redaction(&special, permits.iter()).map(|o| o.values);
        assert_eq!(redaction(&[opens(Some("break-glass"))]), Some(vec!["GDIS".to_owned()]));
        assert_eq!(redaction(&[opens(Some("break-glass")), opens(Some("GDIS"))]), None);
        assert_eq!(redaction(&[opens(None)]), Some(vec!["GDIS".to_owned(), "PSY".to_owned()]));
        assert_eq!(redaction(&[opens(Some("*"))]), None);
    }

    #[test]
    fn a_bad_file_is_refused() {
        for text in [
            "[]",
            r#"{"labels": [{"code": "PSY"}]}"#,
            r#"{"labels": [{"code": "PSY", "break_glass": true, "colour": "red"}]}"#,
            r#"{"labels": [{"code": "PSY", "break_glass": true}, {"code": "PSY", "break_glass": false}]}"#,
            r#"{"labels": [{"code": "PSY, HIV", "break_glass": true}]}"#,
        ] {
            assert!(SpecialCategories::from_json(text).is_err(), "{text}");
        }
    }
}

//! The serde model of a Consent's FHIR JSON, shared by both releases.
//!
//! Every field is optional so that deserialising only fails on a wrongly typed
//! value (400); a missing element is left for the normalisation in the parent
//! module to report by name as FHIR content we cannot honour (422). Elements we
//! do not model are ignored, as FHIR intends.

use serde::Deserialize;
use serde::de::IgnoredAny;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawConsent<P> {
    pub(super) id: Option<String>,
    pub(super) status: Option<String>,
    pub(super) patient: Option<RawReference>,
    pub(super) subject: Option<RawReference>,
    pub(super) decision: Option<String>,
    pub(super) period: Option<RawPeriod>,
    pub(super) provision: Option<P>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawProvision {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) period: Option<RawPeriod>,
    pub(super) actor: Option<Vec<RawActor>>,
    pub(super) action: Option<Vec<RawCodeableConcept>>,
    pub(super) security_label: Option<Vec<RawCoding>>,
    pub(super) purpose: Option<Vec<RawCoding>>,
    pub(super) class: Option<Vec<RawCoding>>,
    pub(super) resource_type: Option<Vec<RawCoding>>,
    pub(super) document_type: Option<Vec<RawCoding>>,
    pub(super) code: Option<Vec<RawCodeableConcept>>,
    pub(super) data_period: Option<RawPeriod>,
    pub(super) data: Option<Vec<RawData>>,
    pub(super) expression: Option<IgnoredAny>,
    pub(super) provision: Option<Vec<RawProvision>>,
}

#[derive(Deserialize)]
pub(super) struct RawReference {
    pub(super) reference: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawPeriod {
    pub(super) start: Option<String>,
    pub(super) end: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawCoding {
    pub(super) system: Option<String>,
    pub(super) code: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RawCodeableConcept {
    pub(super) coding: Option<Vec<RawCoding>>,
}

#[derive(Deserialize)]
pub(super) struct RawActor {
    pub(super) role: Option<RawCodeableConcept>,
    pub(super) reference: Option<RawReference>,
}

#[derive(Deserialize)]
pub(super) struct RawData {
    pub(super) meaning: Option<String>,
    pub(super) reference: Option<RawReference>,
}

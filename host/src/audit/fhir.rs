//! Decision records as FHIR R4 `AuditEvent`s, in IHE BALP's AuthZ-Consent
//! pattern, and as the plain entries of a patient's access log.
//!
//! Hospitals collect audit trails in an audit record repository that speaks
//! FHIR, and IHE's Basic Audit Log Patterns say what an authorization
//! decision looks like there: a DICOM "Security Alert" (110113) with the
//! subtype `AuthZ-Consent`, the requesting agent with its purpose of use,
//! and the patient and consents as entities. Following the pattern lets
//! such a repository, and the patient portals reading it, show our
//! decisions without knowing Consentry.
//!
//! Both views are built from the record alone: they hold identifiers, as
//! the record does, and never the health data decided upon.

use std::str::FromStr;

use cedar_policy::EntityUid;
use serde::Serialize;
use serde_json::{Value, json};

use super::chain::ChainedRecord;

/// FHIR resource types a Cedar entity type of the same name stands for, so
/// a principal `Practitioner::"dr-weber"` becomes `Practitioner/dr-weber`.
const FHIR_AGENT_TYPES: &[&str] = &["Practitioner", "Patient", "RelatedPerson", "Organization", "CareTeam"];

/// Identifies Cedar entity uids that are not FHIR references.
const CEDAR_UID_SYSTEM: &str = "urn:consentry:cedar-uid";

/// One line of a patient's access log: who accessed, or tried to access,
/// which of the patient's records, when, why and with what outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessLogEntry {
    /// When, by the server clock.
    pub at: String,
    /// The decision's id, for a complaint or an auditor's question.
    pub decision_id: String,
    /// Who asked, as Cedar uid text (empty when unknown).
    pub who: String,
    /// What they asked to do.
    pub action: String,
    /// To what.
    pub resource: String,
    /// The purpose of use they declared.
    pub purpose: Option<String>,
    /// `Allow` or `Deny`.
    pub decision: String,
    /// `allow`, `forbidden`, `not_permitted` or `failed_closed`.
    pub outcome: String,
    /// The consents that decided it, as `id/vN`.
    pub consents: Vec<String>,
}

impl AccessLogEntry {
    /// The access-log line of `record`.
    pub fn of(record: &ChainedRecord) -> Self {
        let entry = &record.entry;
        Self {
            at: entry.at.clone(),
            decision_id: entry.decision_id.to_string(),
            who: entry.principal.clone(),
            action: entry.action.clone(),
            resource: entry.resource.clone(),
            purpose: entry.purpose.clone(),
            decision: entry.decision.clone(),
            outcome: entry.outcome.clone(),
            consents: consent_versions(&entry.reasons)
                .map(|(id, version)| format!("{id}/v{version}"))
                .collect(),
        }
    }
}

/// The consents among a record's reasons, as (id, version), each once.
/// Consent rules are named `consent/<id>/v<version>/<node>`.
fn consent_versions(reasons: &[String]) -> impl Iterator<Item = (&str, &str)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for reason in reasons {
        let mut parts = reason.splitn(4, '/');
        if let (Some("consent"), Some(id), Some(version)) = (parts.next(), parts.next(), parts.next())
            && let Some(version) = version.strip_prefix('v')
            && !seen.contains(&(id, version))
        {
            seen.push((id, version));
        }
    }
    seen.into_iter()
}

/// `record` as a FHIR R4 AuditEvent, its id the decision id.
pub fn audit_event(record: &ChainedRecord) -> Value {
    let entry = &record.entry;
    let mut requestor = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP",
            "display": "information recipient",
        }]},
        "who": reference(&entry.principal),
        "requestor": true,
    });
    if let (Some(purpose), Some(fields)) = (&entry.purpose, requestor.as_object_mut()) {
        fields.insert(
            "purposeOfUse".to_owned(),
            json!([{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": purpose,
            }]}]),
        );
    }
    let authorization_server = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": "authserver",
            "display": "authorization server",
        }]},
        "who": {"display": "consentry"},
        "requestor": false,
    });
    let mut entities: Vec<Value> = entry
        .patients
        .iter()
        .map(|patient| {
            json!({
                "what": {"reference": format!("Patient/{patient}")},
                "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
                "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
            })
        })
        .collect();
    entities.extend(consent_versions(&entry.reasons).map(|(id, version)| {
        json!({
            "what": {"reference": format!("Consent/{id}/_history/{version}")},
            "type": coding("http://hl7.org/fhir/resource-types", "Consent", "Consent"),
        })
    }));
    entities.push(json!({
        "what": reference(&entry.resource),
        "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "4", "Domain Resource"),
        "detail": [
            {"type": "action", "valueString": entry.action},
            {"type": "policy-hash", "valueString": entry.policy_hash},
            {"type": "determining-policies", "valueString": entry.reasons.join(" ")},
            {"type": "obligations", "valueString": entry.obligations.join(" ")},
            {"type": "plugins", "valueString": entry.plugins.join("; ")},
            {"type": "chain", "valueString": format!("seq {} hash {}", record.seq, record.hash)},
        ],
    }));
    let (outcome, description) = outcome(&entry.outcome, &entry.reasons);
    json!({
        "resourceType": "AuditEvent",
        "id": entry.decision_id.to_string(),
        "meta": {"profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.AuthZconsent"]},
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110113",
            "display": "Security Alert",
        },
        "subtype": [{
            "system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType",
            "code": "AuthZ-Consent",
            "display": "Authorization Decision using Roles and Consent",
        }],
        "action": "E",
        "recorded": entry.at,
        "outcome": outcome,
        "outcomeDesc": description,
        "agent": [requestor, authorization_server],
        "source": {
            "observer": {"display": "consentry"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "6",
                "display": "Security Server",
            }],
        },
        "entity": entities,
    })
}

/// The AuditEvent outcome code and description: `0` success for an
/// Allow, `8` serious failure for a Deny by policy or consent, `12` major
/// failure when the decision could not be made and failed closed.
fn outcome(outcome: &str, reasons: &[String]) -> (&'static str, String) {
    let code = match outcome {
        "allow" => "0",
        "failed_closed" => "12",
        _ => "8",
    };
    let description =
        if reasons.is_empty() { outcome.to_owned() } else { format!("{outcome}: {}", reasons.join(", ")) };
    (code, description)
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"system": system, "code": code, "display": display})
}

/// A FHIR reference for a Cedar uid whose type is a FHIR resource type,
/// otherwise an identifier carrying the uid text.
fn reference(uid_text: &str) -> Value {
    match EntityUid::from_str(uid_text) {
        Ok(uid) if FHIR_AGENT_TYPES.contains(&uid.type_name().to_string().as_str()) => {
            json!({"reference": format!("{}/{}", uid.type_name(), uid.id().unescaped())})
        }
        _ if uid_text.is_empty() => json!({"display": "unknown (the request could not be mapped)"}),
        _ => json!({"identifier": {"system": CEDAR_UID_SYSTEM, "value": uid_text}}),
    }
}

/// A FHIR R4 searchset Bundle of `records` as AuditEvents. When more
/// matched than were returned, an OperationOutcome entry says so.
pub fn bundle(records: &[ChainedRecord], truncated: bool) -> Value {
    let mut entries: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "fullUrl": format!("urn:uuid:{}", record.entry.decision_id),
                "resource": audit_event(record),
                "search": {"mode": "match"},
            })
        })
        .collect();
    if truncated {
        entries.push(json!({
            "resource": {
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "warning",
                    "code": "too-costly",
                    "diagnostics": "more events matched than were returned; narrow `date` or raise `_count`",
                }],
            },
            "search": {"mode": "outcome"},
        }));
    }
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
    if let (false, Some(fields)) = (truncated, bundle.as_object_mut()) {
        fields.insert("total".to_owned(), json!(records.len()));
    }
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::{ChainHead, ChainLine, chain};
    use crate::audit::record::DecisionEntry;

    fn record(outcome: &str, reasons: &[&str], purpose: Option<&str>) -> ChainedRecord {
        let entry = DecisionEntry {
            decision_id: uuid::Uuid::nil(),
            at: "2026-12-01T08:00:00.000Z".to_owned(),
            principal: r#"Practitioner::"dr-weber""#.to_owned(),
            action: r#"Action::"read""#.to_owned(),
            resource: r#"Record::"obs-1""#.to_owned(),
            patients: vec!["p-100".to_owned()],
            purpose: purpose.map(str::to_owned),
            decision: if outcome == "allow" { "Allow" } else { "Deny" }.to_owned(),
            outcome: outcome.to_owned(),
            reasons: reasons.iter().map(|r| (*r).to_owned()).collect(),
            obligations: Vec::new(),
            plugins: Vec::new(),
            policy_hash: "abc".to_owned(),
        };
        match chain(entry.into(), &mut ChainHead::genesis()).0 {
            ChainLine::Decision(record) => record,
            other => panic!("a decision was chained as {other:?}"),
        }
    }

    #[test]
    fn a_consent_deny_follows_the_balp_authz_consent_pattern() {
        let event = audit_event(&record(
            "forbidden",
            &["consent/c-100/v2/root", "consent/c-100/v2/provision[0]", "purpose-required"],
            Some("TREAT"),
        ));
        assert_eq!(event["type"]["code"], "110113");
        assert_eq!(event["subtype"][0]["code"], "AuthZ-Consent");
        assert_eq!(event["outcome"], "8");
        assert_eq!(event["agent"][0]["who"]["reference"], "Practitioner/dr-weber");
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["agent"][0]["purposeOfUse"][0]["coding"][0]["code"], "TREAT");
        assert_eq!(event["entity"][0]["what"]["reference"], "Patient/p-100");
        assert_eq!(event["entity"][0]["role"]["code"], "1");
        assert_eq!(event["entity"][1]["what"]["reference"], "Consent/c-100/_history/2");
        assert_eq!(event["entity"].as_array().unwrap().len(), 3, "one entity per consent, not per rule");
        assert_eq!(event["entity"][2]["what"]["identifier"]["value"], r#"Record::"obs-1""#);
    }

    #[test]
    fn outcomes_map_to_audit_event_codes() {
        assert_eq!(audit_event(&record("allow", &["treatment"], None))["outcome"], "0");
        assert_eq!(audit_event(&record("not_permitted", &[], None))["outcome"], "8");
        assert_eq!(audit_event(&record("failed_closed", &[], None))["outcome"], "12");
        assert!(audit_event(&record("allow", &[], None))["agent"][0].get("purposeOfUse").is_none());
    }

    #[test]
    fn the_access_log_names_consents_once_with_their_version() {
        let line = AccessLogEntry::of(&record(
            "forbidden",
            &["consent/c-1/v3/root", "consent/c-1/v3/provision[0]", "consent/c-2/v1/root"],
            Some("TREAT"),
        ));
        assert_eq!(line.consents, ["c-1/v3", "c-2/v1"]);
        assert_eq!(line.who, r#"Practitioner::"dr-weber""#);
    }

    #[test]
    fn a_truncated_bundle_says_so_and_has_no_total() {
        let records = [record("allow", &[], None)];
        let whole = bundle(&records, false);
        assert_eq!(whole["total"], 1);
        let cut = bundle(&records, true);
        assert!(cut.get("total").is_none());
        assert_eq!(cut["entry"][1]["resource"]["resourceType"], "OperationOutcome");
    }
}

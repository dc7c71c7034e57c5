//! The consent the consent-store benchmarks write: one realistic FHIR R4
//! privacy consent, so ingest and startup figures describe the same data.

use serde_json::{Value, json};

/// A realistic FHIR R4 privacy consent: St. Mary's and its cardiology team
/// may access the patient's records for treatment from 2026, except
/// records labelled psychiatric (a nested deny provision).
pub fn consent(patient: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": "2026-01-15",
        "provision": {
            "type": "permit",
            "period": {"start": "2026-01-01"},
            "actor": [
                {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                      "code": "PRCP"}]},
                 "reference": {"reference": "Organization/st-mary"}},
                {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                      "code": "PRCP"}]},
                 "reference": {"reference": "CareTeam/cardiology"}}
            ],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                    "code": "access"}]}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
            "provision": [{
                "type": "deny",
                "securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "PSY"}]
            }]
        }
    })
}

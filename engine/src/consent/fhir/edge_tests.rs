//! Unit tests of the inputs at a consent's edges (issue 13): ids, absolute
//! references and instants outside years 0001 to 9999, each refused naming
//! its field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use serde_json::json;

use super::*;
use crate::consent::ConsentErrorKind;

const BASE: &str = "https://fhir.example.org/r4";

fn base() -> FhirBase {
    FhirBase::parse(BASE).unwrap()
}

/// An R4 permit for Dr. Weber on one record, with `patient`, actor and data references as given.
fn r4(patient: &str, actor: &str, data: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "patient": {"reference": patient},
        "provision": {
            "type": "permit",
            "actor": [{"reference": {"reference": actor}}],
            "data": [{"meaning": "instance", "reference": {"reference": data}}]
        }
    })
}

fn refused(value: &Value, base: Option<&FhirBase>) -> (ConsentErrorKind, String) {
    let error = Consent::from_json_under(value, base).expect_err("refused");
    (error.kind, error.path)
}

fn invalid(path: &str) -> (ConsentErrorKind, String) {
    (ConsentErrorKind::Invalid, path.to_owned())
}

#[test]
fn relative_references_bind_with_or_without_a_base() {
    let consent = r4("Patient/p-1", "Practitioner/dr-weber", "Observation/obs-1");
    assert!(Consent::from_json(&consent).is_ok());
    assert!(Consent::from_json_under(&consent, Some(&base())).is_ok());
}

/// Finding 14 (issue 13): `http://x/Patient/p-100` bound to the local p-100, whatever the server.
#[test]
fn regression_finding_14_absolute_references_to_another_server_are_refused() {
    let elsewhere = "http://x/Patient/p-100";
    let consent = r4(elsewhere, "Practitioner/dr-weber", "Observation/obs-1");
    assert_eq!(refused(&consent, None), invalid("patient.reference"));
    assert_eq!(refused(&consent, Some(&base())), invalid("patient.reference"));
    let message = Consent::from_json_under(&consent, Some(&base())).unwrap_err().message;
    assert!(message.contains("`http://x`") && message.contains(BASE), "{message}");

    let actor = r4("Patient/p-1", "http://x/Practitioner/dr-weber", "Observation/obs-1");
    assert_eq!(refused(&actor, Some(&base())), invalid("provision.actor[0].reference"));
    let data = r4("Patient/p-1", "Practitioner/dr-weber", "http://x/Observation/obs-1");
    assert_eq!(refused(&data, Some(&base())), invalid("provision.data[0].reference.reference"));
    // Same host, other scheme or path: another base.
    for other in ["http://fhir.example.org/r4", "https://fhir.example.org/r5", "https://fhir.example.org"] {
        let consent = r4(&format!("{other}/Patient/p-1"), "Practitioner/dr-weber", "Observation/obs-1");
        assert_eq!(refused(&consent, Some(&base())), invalid("patient.reference"), "{other}");
    }
}

#[test]
fn absolute_references_under_this_servers_base_bind_like_relative_ones() {
    let consent = r4(
        &format!("{BASE}/Patient/p-1/_history/2"),
        &format!("{BASE}/Practitioner/dr-weber"),
        &format!("{BASE}/Observation/obs-1"),
    );
    let parsed = Consent::from_json_under(&consent, Some(&base())).unwrap();
    let relative =
        Consent::from_json(&r4("Patient/p-1", "Practitioner/dr-weber", "Observation/obs-1")).unwrap();
    assert_eq!(parsed, relative);
    let trailing = FhirBase::parse(&format!("{BASE}/")).unwrap();
    assert!(Consent::from_json_under(&consent, Some(&trailing)).is_ok());
}

#[test]
fn nested_r5_provisions_are_checked_at_every_depth() {
    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "subject": {"reference": "Patient/p-1"},
        "decision": "deny",
        "provision": [{
            "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "provision": [
                {"purpose": [{"code": "TREAT"}]},
                {"data": [{"meaning": "instance", "reference": {"reference": "http://x/Observation/o"}}]}
            ]
        }]
    });
    assert_eq!(
        refused(&consent, Some(&base())),
        invalid("provision[0].provision[1].data[0].reference.reference")
    );
}

#[test]
fn references_in_elements_that_bind_nothing_may_point_anywhere() {
    let mut consent = r4("Patient/p-1", "Practitioner/dr-weber", "Observation/obs-1");
    consent["performer"] = json!([{"reference": "http://x/Organization/o"}]);
    consent["sourceReference"] = json!({"reference": "http://x/DocumentReference/d"});
    assert!(Consent::from_json(&consent).is_ok());
}

#[test]
fn a_fhir_base_is_an_http_url_without_query_or_fragment() {
    assert_eq!(FhirBase::parse("https://fhir.example.org/r4/").unwrap().as_str(), BASE);
    for bad in [
        "",
        "fhir.example.org",
        "ftp://x",
        "https://",
        "https:///r4",
        "https://x/r4?a=1",
        "https://x#f",
        "https://x/r 4",
    ] {
        assert!(FhirBase::parse(bad).is_err(), "accepted `{bad}`");
    }
}

/// Finding 13 (issue 13): NUL, CR/LF, `../../etc/passwd` and 8,000-character ids were stored.
#[test]
fn regression_finding_13_consent_ids_follow_fhirs_id_rule() {
    for good in ["c-1", "C.2", "0", &"a".repeat(64), "0190a7b2-1c3d-7e4f-8a9b-0c1d2e3f4a5b"] {
        assert!(Consent::check_id(good).is_ok(), "refused `{good}`");
    }
    let long = "x".repeat(8000);
    for bad in [
        "",
        "c\u{0}1",
        "c\r\nSet-Cookie: a=b",
        "../../etc/passwd",
        "c 1",
        "c_1",
        "c/1",
        "ü",
        &long,
        &"a".repeat(65),
    ] {
        let error = Consent::check_id(bad).expect_err(bad);
        assert_eq!((error.kind, error.path.as_str()), (ConsentErrorKind::Malformed, "id"), "{bad}");
        assert!(
            !error.message.contains(['\r', '\n', '\0']),
            "control characters are escaped: {}",
            error.message
        );
        assert!(error.message.len() < 400, "a long id is shortened: {}", error.message.len());
    }
}

/// Finding 10 (issue 13): a period whose UTC instant lies in year 0000 or 10000 was stored,
/// and every decision about the patient then failed closed.
#[test]
fn regression_finding_10_periods_outside_years_0001_to_9999_are_refused_naming_the_field() {
    let r4 = |period: Value| {
        json!({
            "resourceType": "Consent", "status": "active",
            "patient": {"reference": "Patient/p-1"},
            "provision": {"type": "permit", "period": period, "provision": [{"type": "deny", "dataPeriod": period}]}
        })
    };
    let early = json!({"start": "0001-01-01T00:00:00+14:00"});
    assert_eq!(refused(&r4(early), None), invalid("provision.period.start"));
    let late = json!({"end": "9999-12-31T23:00:00-01:00"});
    assert_eq!(refused(&r4(late), None), invalid("provision.period.end"));
    let r5 = json!({
        "resourceType": "Consent", "status": "active",
        "subject": {"reference": "Patient/p-1"}, "decision": "permit",
        "period": {"start": "2026-01-01", "end": "9999-12-31T23:59:59-14:00"}
    });
    assert_eq!(refused(&r5, None), invalid("period.end"));
    let data = json!({
        "resourceType": "Consent", "status": "active",
        "patient": {"reference": "Patient/p-1"},
        "provision": {"type": "permit", "provision": [{"type": "deny", "dataPeriod": {"start": "0001-01-01T00:30:00+01:00"}}]}
    });
    assert_eq!(refused(&data, None), invalid("provision.provision[0].dataPeriod.start"));
    // The extremes that are still years 0001 and 9999 in UTC are accepted.
    assert!(
        Consent::from_json(&r4(json!({"start": "0001-01-01T00:00:00Z", "end": "9999-12-31T23:59:59Z"})))
            .is_ok()
    );
}

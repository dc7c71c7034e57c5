//! Forbids that errored and rules that missed a transfer (findings 1, 7),
//! and the special categories only a consent naming them opens.

use serde_json::{Value, json};

use crate::support::{
    Server, ali_breaks_the_glass, binary, cedar_request, decide, put_consent, repo_root, run_to_exit,
};

fn pack_server(extra: &[&str]) -> Server {
    Server::start(&repo_root().join("policies"), extra)
}

fn consent(id: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"}, "dateTime": "2026-01-15", "provision": provision})
}

fn store(server: &Server, id: &str, provision: Value) {
    let (status, body) = put_consent(server, id, &consent(id, provision));
    assert_eq!(status, 201, "{body}");
}

fn access(actor: &str) -> Value {
    json!({"type": "permit", "actor": [{"reference": {"reference": actor}}],
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]})
}

/// The answer, which must be a Deny determined by `rule`.
fn assert_denied_by(server: &Server, request: &Value, outcome: &str, rule: &str) -> Value {
    let (status, answer) = server.post("/v1/is_authorized", request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "Deny", "{answer}");
    assert_eq!(answer["outcome"], outcome, "{answer}");
    let reasons = answer["diagnostics"]["reason"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r == rule), "{answer}");
    answer
}

#[test]
fn finding_01_a_consent_denying_everyone_but_500_actors_still_denies_break_glass() {
    let server = pack_server(&[]);
    let staff: Vec<Value> =
        (0..500).map(|i| json!({"reference": {"reference": format!("Practitioner/staff-{i}")}})).collect();
    let mut exceptions = access("Practitioner/staff-0");
    exceptions["actor"] = Value::Array(staff);
    store(&server, "only-500", json!({"type": "deny", "provision": [exceptions]}));
    // Whether the consent's forbid is evaluated (forbidden) or cannot be
    // (failed_closed), the patient's refusal holds against break-glass.
    let (status, answer) = server.post("/v1/is_authorized", &ali_breaks_the_glass("obs-1"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "Deny", "{answer}");
    assert!(answer["outcome"] == "forbidden" || answer["outcome"] == "failed_closed", "{answer}");
}

#[test]
fn finding_01_break_glass_naming_a_recipient_the_store_does_not_know_is_denied() {
    let server = pack_server(&[]);
    let request = cedar_request(
        "Practitioner::\"dr-ali\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "BTG", "justification": "transfer", "recipient": {"type": "Organization", "id": "ghost"}}),
    );
    let answer = assert_denied_by(&server, &request, "forbidden", "unknown-recipient");
    assert_eq!(answer["diagnostics"]["errors"], json!([]), "{answer}");
}

#[test]
fn finding_01_an_organization_named_in_a_consent_but_not_in_the_store_is_denied() {
    let server = pack_server(&[]);
    store(&server, "c-ghost", access("Organization/ghost-hospital"));
    let request = cedar_request(
        "Organization::\"ghost-hospital\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "TREAT"}),
    );
    let answer = assert_denied_by(&server, &request, "forbidden", "unknown-organization");
    assert_eq!(answer["diagnostics"]["errors"], json!([]), "{answer}");
}

#[test]
fn finding_01_an_unknown_record_with_break_glass_is_denied() {
    let server = pack_server(&[]);
    let answer =
        assert_denied_by(&server, &ali_breaks_the_glass("no-such-record"), "forbidden", "unknown-record");
    assert_eq!(answer["diagnostics"]["errors"], json!([]), "{answer}");
    assert!(answer["summary"].as_str().unwrap().contains("not in the directory"), "{answer}");
}

/// A policy directory whose forbid errors on every request, next to a permit.
fn erroring_forbid_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.cedar"),
        r#"@id("everyone") permit(principal, action, resource);
           @id("secrets") @reason("secret documents stay closed")
           forbid(principal, action, resource) when { resource.secret == true };"#,
    )
    .unwrap();
    dir
}

#[test]
fn finding_01_an_erroring_forbid_denies_unless_skip_is_chosen() {
    let dir = erroring_forbid_dir();
    let request = cedar_request("User::\"alice\"", "Action::\"view\"", "Doc::\"unknown\"", json!({}));
    let server = Server::start(dir.path(), &[]);
    let answer = assert_denied_by(&server, &request, "failed_closed", "secrets");
    assert!(answer["diagnostics"]["errors"][0].as_str().unwrap().contains("`secrets`"), "{answer}");
    assert!(answer["summary"].as_str().unwrap().contains("`secrets`"), "{answer}");
    drop(server);

    let cedar = Server::start(dir.path(), &["--forbid-errors", "skip"]);
    assert_eq!(decide(&cedar, &request), ("Allow".to_owned(), "allow".to_owned()));
    drop(cedar);

    // `consentry check` decides as the server does, and takes the same option.
    let file = dir.path().join("request.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let store = tempfile::tempdir().unwrap();
    let check = |extra: &[&str]| {
        let mut command = binary();
        command.arg("check").arg("--policies").arg(dir.path()).arg("--request").arg(&file);
        command.arg("--store").arg(store.path()).args(extra);
        command.output().unwrap().status.code()
    };
    assert_eq!(check(&[]), Some(2), "a Deny");
    assert_eq!(check(&["--forbid-errors", "skip"]), Some(0), "an Allow");
}

#[test]
fn finding_07_a_practitioner_of_a_third_country_clinic_is_a_transfer() {
    let server = pack_server(&[]);
    let mut clinics = access("Organization/mumbai-clinic");
    clinics["actor"]
        .as_array_mut()
        .unwrap()
        .push(json!({"reference": {"reference": "Organization/st-mary"}}));
    store(&server, "c-clinics", clinics);
    let reads = |who: &str| {
        cedar_request(
            &format!("Practitioner::\"{who}\""),
            "Action::\"read\"",
            "Record::\"obs-1\"",
            json!({"purpose": "TREAT"}),
        )
    };
    assert_denied_by(&server, &reads("dr-rao"), "forbidden", "third-country-member");
    assert_eq!(decide(&server, &reads("dr-weber")), ("Allow".to_owned(), "allow".to_owned()));
}

fn weber(action: &str, resource: &str) -> Value {
    cedar_request(
        "Practitioner::\"dr-weber\"",
        &format!("Action::\"{action}\""),
        resource,
        json!({"purpose": "TREAT"}),
    )
}

fn redactions(answer: &Value) -> Vec<Value> {
    answer["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["id"] == "redact")
        .map(|o| o["values"].clone())
        .collect()
}

#[test]
fn special_categories_a_general_treatment_consent_does_not_open_a_psy_record() {
    let server = pack_server(&[]);
    store(&server, "c-general", access("Practitioner/dr-weber"));
    assert_eq!(decide(&server, &weber("read", "Record::\"obs-1\"")).0, "Allow");
    assert_denied_by(&server, &weber("read", "Record::\"psy-1\""), "not_permitted", "special-categories");
    let (_, search) = server.post("/v1/is_authorized", &weber("search", "Patient::\"p-100\""));
    assert_eq!(search["decision"], "Allow", "{search}");
    assert_eq!(redactions(&search), [json!(["ETH", "GDIS", "HIV", "PSY"])], "{search}");
}

#[test]
fn special_categories_a_consent_naming_psy_opens_it() {
    let server = pack_server(&[]);
    let mut psychiatry = access("Practitioner/dr-weber");
    psychiatry["securityLabel"] =
        json!([{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]);
    store(&server, "c-psy", psychiatry);
    assert_eq!(
        decide(&server, &weber("read", "Record::\"psy-1\"")),
        ("Allow".to_owned(), "allow".to_owned())
    );
    assert_eq!(decide(&server, &weber("read", "Record::\"gen-1\"")).0, "Deny");
}

#[test]
fn special_categories_break_glass_opens_only_the_labels_the_pack_lets_it() {
    let server = pack_server(&[]);
    assert_eq!(decide(&server, &ali_breaks_the_glass("psy-1")).0, "Allow");
    assert_denied_by(&server, &ali_breaks_the_glass("gen-1"), "not_permitted", "special-categories");
    let mut search = ali_breaks_the_glass("x");
    search["action"] = json!("Action::\"search\"");
    search["resource"] = json!("Patient::\"p-100\"");
    let (_, answer) = server.post("/v1/is_authorized", &search);
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(redactions(&answer), [json!(["GDIS"])], "{answer}");
}

#[test]
fn special_categories_a_bad_file_is_refused_like_a_bad_policy() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["pack.cedar", "transfers.cedar", "schema.cedarschema", "entities.json"] {
        std::fs::copy(repo_root().join("policies").join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("special-categories.json"), r#"{"labels": [{"code": "PSY"}]}"#).unwrap();
    let policies = dir.path().to_str().unwrap();
    let (code, stderr) = run_to_exit(&["validate", "--policies", policies], &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("special categories"), "{stderr}");
}

//! Callers and plugins rewriting stored facts (findings 2, 3), and open
//! decisions on a public address.

use consentry_test_plugins::FACT_REWRITER;
use serde_json::{Value, json};

use crate::support::{
    Server, ali_breaks_the_glass, cedar_request, decide, put_consent, repo_root, run_to_exit,
};

fn pack_server(extra: &[&str]) -> Server {
    Server::start(&repo_root().join("policies"), extra)
}

/// A stored entity of the bundled example entities, as stored.
fn stored(kind: &str, id: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join("policies/entities.json")).unwrap();
    let entities: Vec<Value> = serde_json::from_str(&text).unwrap();
    entities.into_iter().find(|e| e["uid"]["type"] == kind && e["uid"]["id"] == id).unwrap()
}

/// Asserts the 422 `stored_fact_conflict` naming `field`.
fn assert_conflict(answer: (u16, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "stored_fact_conflict", "{body}");
    assert_eq!(body["field"], field, "{body}");
}

/// p-100 refuses every use of their records by anyone else.
fn p100_opts_out(server: &Server) {
    let consent = json!({"resourceType": "Consent", "id": "opt-out", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"}, "dateTime": "2026-01-15",
        "provision": {"type": "deny"}});
    let (status, body) = put_consent(server, "opt-out", &consent);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn finding_02_a_practitioner_can_no_longer_declare_himself_a_member_of_break_glass() {
    let weber_breaks_the_glass = || {
        cedar_request(
            "Practitioner::\"dr-weber\"",
            "Action::\"read\"",
            "Record::\"obs-1\"",
            json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
        )
    };
    let mut weber = stored("Practitioner", "dr-weber");
    weber["parents"].as_array_mut().unwrap().push(json!({"type": "Group", "id": "break-glass"}));
    let mut rewritten = weber_breaks_the_glass();
    rewritten["entities"] = json!([weber]);

    let server = pack_server(&[]);
    assert_eq!(decide(&server, &weber_breaks_the_glass()).0, "Deny");
    assert_conflict(server.post("/v1/is_authorized", &rewritten), "entities[0].parents");
    // As stored, the same entity is accepted, and changes nothing.
    let mut honest = weber_breaks_the_glass();
    honest["entities"] = json!([stored("Practitioner", "dr-weber")]);
    assert_eq!(decide(&server, &honest), ("Deny".to_owned(), "forbidden".to_owned()));
    drop(server);

    // cedar-agent's semantics remain, chosen explicitly.
    let replacing = pack_server(&["--request-entities", "replace"]);
    assert_eq!(decide(&replacing, &rewritten).0, "Allow");
}

#[test]
fn finding_02_a_restricted_patient_can_no_longer_be_redeclared_without_restricted() {
    let server = pack_server(&[]);
    let mut rewritten = ali_breaks_the_glass("obs-2");
    assert_eq!(decide(&server, &rewritten), ("Deny".to_owned(), "forbidden".to_owned()));
    rewritten["entities"] = json!([{"uid": {"type": "Patient", "id": "p-200"}, "attrs": {}, "parents": []}]);
    assert_conflict(server.post("/v1/is_authorized", &rewritten), "entities[0].attrs.restricted");
}

#[test]
fn finding_02_a_record_sent_without_its_patient_still_falls_under_the_patients_consents() {
    let server = pack_server(&[]);
    p100_opts_out(&server);
    assert_eq!(decide(&server, &ali_breaks_the_glass("obs-1")), ("Deny".to_owned(), "forbidden".to_owned()));
    let mut detached = ali_breaks_the_glass("obs-1");
    let mut obs = stored("Record", "obs-1");
    obs["parents"] = json!([]);
    detached["entities"] = json!([obs]);
    assert_conflict(server.post("/v1/is_authorized", &detached), "entities[0].parents");
}

#[test]
fn finding_02_a_property_can_no_longer_point_another_patients_record_at_a_patient() {
    let server = pack_server(&[]);
    let evaluation = |properties: Value| {
        json!({"subject": {"type": "Practitioner", "id": "dr-ali"}, "action": {"name": "read"},
               "resource": {"type": "Record", "id": "obs-2", "properties": properties},
               "context": {"purpose": "BTG", "justification": "unconscious on arrival"}})
    };
    let (status, answer) = server.post("/access/v1/evaluation", &evaluation(json!({})));
    assert_eq!((status, &answer["decision"]), (200, &json!(false)), "{answer}");
    let moved = evaluation(json!({"patient": {"type": "Patient", "id": "p-100"}}));
    assert_conflict(server.post("/access/v1/evaluation", &moved), "resource.properties.patient");
}

/// Starts the pack with the fact rewriter in `mode` as its only plugin,
/// granted nothing, with the longest timeout, so that a busy machine
/// cannot turn the refusal into a timeout.
fn with_rewriter(mode: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("plugins.toml");
    let toml = format!(
        "[[plugins]]\nname = \"rewriter\"\npath = \"{FACT_REWRITER}\"\nhooks = [\"enrich\"]\n\
         [plugins.limits]\ntimeout_ms = 10000\n[plugins.config]\nmode = \"{mode}\"\n"
    );
    std::fs::write(&config, toml).unwrap();
    (pack_server(&["--plugins", config.to_str().unwrap()]), dir)
}

/// `request` is denied with `failed_closed`, naming the plugin and what it tried.
fn assert_refused_plugin(server: &Server, request: &Value, tried: &str) {
    let (status, answer) = server.post("/v1/is_authorized", request);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "Deny", "{answer}");
    assert_eq!(answer["outcome"], "failed_closed", "{answer}");
    let summary = answer["summary"].as_str().unwrap();
    assert!(summary.contains("plugin `rewriter` (enrich) tried a change it was not granted"), "{summary}");
    assert!(summary.contains(tried), "{summary}");
    assert_eq!(answer["plugins"], json!(["rewriter/enrich: ungranted-change, denied"]), "{answer}");
}

#[test]
fn finding_03_a_plugin_can_no_longer_add_the_caller_to_break_glass() {
    let (server, _dir) = with_rewriter("joins-break-glass");
    let weber = cedar_request(
        "Practitioner::\"dr-weber\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "BTG", "justification": "unconscious on arrival"}),
    );
    assert_refused_plugin(&server, &weber, "adds `Group::\"break-glass\"`");
}

#[test]
fn finding_03_a_plugin_can_no_longer_lift_a_restriction() {
    let (server, _dir) = with_rewriter("lifts-restriction");
    assert_refused_plugin(&server, &ali_breaks_the_glass("obs-2"), "its stored attribute `restricted`");
}

#[test]
fn finding_03_a_plugin_can_no_longer_move_a_record_to_another_patient() {
    let (server, _dir) = with_rewriter("moves-record");
    assert_refused_plugin(&server, &ali_breaks_the_glass("obs-2"), "stored entity `Record::\"obs-2\"`");
}

#[test]
fn finding_03_a_plugin_can_no_longer_detach_a_record_from_an_opted_out_patient() {
    let (server, _dir) = with_rewriter("detaches-record");
    p100_opts_out(&server);
    assert_refused_plugin(&server, &ali_breaks_the_glass("obs-1"), "its stored parents");
}

#[test]
fn finding_03_a_plugin_can_no_longer_supply_the_break_glass_justification() {
    let (server, _dir) = with_rewriter("supplies-justification");
    let unjustified = cedar_request(
        "Practitioner::\"dr-ali\"",
        "Action::\"read\"",
        "Record::\"obs-1\"",
        json!({"purpose": "BTG"}),
    );
    assert_refused_plugin(&server, &unjustified, "`context.justification`");
}

#[test]
fn open_decisions_on_a_public_address_must_be_chosen_with_decisions_open() {
    let store = tempfile::tempdir().unwrap();
    let policies = repo_root().join("policies");
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> = ["serve", "--bind", "0.0.0.0:0", "--audit", "off", "--policies"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.push(policies.to_str().unwrap().to_owned());
        args.extend(["--store".to_owned(), store.path().to_str().unwrap().to_owned()]);
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let refused = args(&[]);
    let (code, stderr) = run_to_exit(&refused.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("`0.0.0.0:0`") && stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--decisions open") && stderr.contains("--decisions token"), "{stderr}");

    let chosen = args(&["--decisions", "open"]);
    let server = Server::start_args(&chosen.iter().map(String::as_str).collect::<Vec<_>>(), &[], false);
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let local = format!("http://127.0.0.1:{port}");
    let (status, _) = server.send_to(&local, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
    let (status, _) = server.send_to(
        &local,
        "POST",
        "/v1/is_authorized",
        Some(("application/json", ali_breaks_the_glass("obs-1").to_string())),
        None,
    );
    assert_eq!(status, 200, "decisions are open, as chosen");
    drop(server);
    // The environment variable chooses it too.
    let from_env = Server::start_args(
        &refused.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("CONSENTRY_DECISIONS", "open")],
        false,
    );
    assert!(from_env.url.contains(':'));
}

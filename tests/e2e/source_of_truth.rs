//! The store as the one source of truth for policies, schema, links and
//! entities: a server without `--policies` starts empty, every change is a
//! version or revision that survives restarts, `If-Match` and rollback
//! work, a policy directory refuses API writes, the decision log's
//! `policy_hash` resolves to its version, and replicas on one PostgreSQL
//! converge. The PostgreSQL tests run when `CONSENTRY_TEST_POSTGRES_URL`
//! names a database; otherwise they say they were skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::postgres_schema::TestSchema;
use crate::support::{
    ADMIN_TOKEN, Server, ali_breaks_the_glass, ali_leaves_break_glass, audit_verify, binary, decide,
    import_policies, patch_entities, poll_until, put_consent, readme_consent, repo_root,
};

/// How long a change may take to reach another replica. Generous: only a
/// change that never arrives fails, never a slow one.
const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(10);

fn admin(server: &Server, method: &str, path: &str, body: Option<(&str, String)>) -> (u16, Value) {
    server.send(method, path, body, Some(ADMIN_TOKEN))
}

/// `(kind, subject, actor)` of each change record in a `/v1/audit/changes` answer.
fn kinds_subjects_actors(listed: &Value) -> Vec<(&str, &str, &str)> {
    listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["kind"].as_str().unwrap(), c["subject"].as_str().unwrap(), c["actor"].as_str().unwrap()))
        .collect()
}

fn pack_text() -> String {
    let dir = repo_root().join("policies");
    ["pack.cedar", "transfers.cedar"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_server_without_policies_starts_empty_and_denies_until_a_policy_set_is_put() {
    let store = tempfile::tempdir().unwrap();
    let server = Server::start_managed(store.path().to_str().unwrap(), &[]);
    let (status, ready) = server.get("/readyz");
    assert_eq!((status, &ready["reason"]), (503, &json!("no-policy-set")), "{ready}");
    let request = ali_breaks_the_glass("obs-1");
    assert_eq!(decide(&server, &request), ("Deny".to_owned(), "not_permitted".to_owned()));

    let schema = std::fs::read_to_string(repo_root().join("policies/schema.cedarschema")).unwrap();
    let (status, answer) = admin(&server, "PUT", "/v1/schema", Some(("text/plain", schema)));
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = admin(&server, "PUT", "/v1/policies", Some(("text/plain", pack_text())));
    assert_eq!((status, &answer["version"]), (200, &json!(2)), "{answer}");
    assert_eq!(server.get("/readyz").0, 200);
    let entities = std::fs::read_to_string(repo_root().join("policies/entities.json")).unwrap();
    let (status, answer) = admin(&server, "PUT", "/v1/entities", Some(("application/json", entities)));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(decide(&server, &request).0, "Allow");
}

/// Import the pack, change policies and entities through the API,
/// restart: the same decisions come back and the versions are listed.
fn restart_keeps_everything(store: &str) {
    import_policies(&repo_root().join("policies"), store);
    let request = ali_breaks_the_glass("obs-1");
    let added = {
        let server = Server::start_managed(store, &[]);
        assert_eq!(decide(&server, &request).0, "Allow");
        let (status, answer) = patch_entities(&server, &ali_leaves_break_glass());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(decide(&server, &request).0, "Deny");
        let text = format!(
            "{}\n@id(\"audit-reads\") forbid (principal, action, resource) when {{ context has audit_only && context.audit_only }};",
            pack_text()
        );
        let (status, answer) = admin(&server, "PUT", "/v1/policies", Some(("text/plain", text)));
        assert_eq!(status, 200, "{answer}");
        answer["hash"].clone()
    };
    let server = Server::start_managed(store, &[]);
    assert_eq!(decide(&server, &request), ("Deny".to_owned(), "forbidden".to_owned()));
    let (_, policies) = admin(&server, "GET", "/v1/policies", None);
    assert_eq!(policies["hash"], added);
    let (status, versions) = admin(&server, "GET", "/v1/policies/versions", None);
    assert_eq!(status, 200, "{versions}");
    let listed: Vec<(&Value, &Value)> =
        versions["versions"].as_array().unwrap().iter().map(|v| (&v["version"], &v["origin"])).collect();
    assert_eq!(listed, [(&json!(2), &json!("api")), (&json!(1), &json!("directory"))], "{versions}");
    let (status, ali) = admin(&server, "GET", "/v1/entities/Practitioner/dr-ali", None);
    assert_eq!(status, 200, "{ali}");
    assert_eq!(ali["parents"].as_array().map(Vec::len), Some(1), "{ali}");
}

#[test]
fn policies_and_entities_survive_a_restart_on_sqlite() {
    let store = tempfile::tempdir().unwrap();
    restart_keeps_everything(store.path().to_str().unwrap());
}

#[test]
fn policies_and_entities_survive_a_restart_on_postgres() {
    let Some(schema) =
        TestSchema::create("source_of_truth::policies_and_entities_survive_a_restart_on_postgres")
    else {
        return;
    };
    restart_keeps_everything(&schema.url());
}

#[test]
fn if_match_guards_changes_and_rollback_puts_an_earlier_version_in_force_again() {
    let store = tempfile::tempdir().unwrap();
    let store = store.path().to_str().unwrap().to_owned();
    import_policies(&repo_root().join("policies"), &store);
    let server = Server::start_managed(&store, &[]);
    let (_, first) = admin(&server, "GET", "/v1/policies", None);
    let first_hash = first["hash"].as_str().unwrap().to_owned();
    let put = |text: String, tag: &str| {
        let request = ureq::http::Request::builder()
            .method("PUT")
            .uri(format!("{}/v1/policies", server.url))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "text/plain")
            .header("if-match", tag)
            .header("x-change-reason", "ticket PRIV-42")
            .body(text)
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let response = agent.run(request).unwrap();
        let etag = response.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        let body: Value = serde_json::from_str(&response.into_body().read_to_string().unwrap()).unwrap();
        (status, etag, body)
    };
    let changed = format!("{}\n// reviewed\n", pack_text());
    let (status, _, answer) = put(changed.clone(), "\"not-the-hash\"");
    assert_eq!((status, answer["error"].as_str()), (412, Some("precondition_failed")), "{answer}");
    let (status, etag, answer) = put(changed.clone(), &format!("\"{first_hash}\""));
    assert_eq!(status, 200, "{answer}");
    let second_hash = answer["hash"].as_str().unwrap().to_owned();
    assert_eq!(etag, Some(format!("\"{second_hash}\"")));
    // The first hash is stale now.
    let (status, _, _) = put(changed, &format!("\"{first_hash}\""));
    assert_eq!(status, 412);
    let (_, versions) = admin(&server, "GET", "/v1/policies/versions", None);
    assert_eq!(versions["versions"][0]["comment"], "ticket PRIV-42", "{versions}");

    let (status, answer) = admin(
        &server,
        "POST",
        "/v1/policies/rollback",
        Some(("application/json", json!({"version": 1}).to_string())),
    );
    assert_eq!(
        (status, &answer["version"], &answer["hash"]),
        (200, &json!(3), &json!(first_hash)),
        "{answer}"
    );
    let (_, old) = admin(&server, "GET", "/v1/policies?version=2", None);
    assert_eq!(old["hash"], json!(second_hash));
    let (status, answer) = admin(
        &server,
        "POST",
        "/v1/policies/rollback",
        Some(("application/json", json!({"version": 99}).to_string())),
    );
    assert_eq!(status, 404, "{answer}");
}

#[test]
fn a_policy_directory_refuses_api_writes_to_policies_but_not_to_entities() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let (status, answer) = admin(&server, "PUT", "/v1/policies", Some(("text/plain", pack_text())));
    assert_eq!((status, answer["error"].as_str()), (409, Some("managed_in_directory")), "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("policies"), "{answer}");
    let (status, _) = admin(&server, "PUT", "/v1/schema", Some(("text/plain", "entity A;".to_owned())));
    assert_eq!(status, 409);
    let (status, answer) = patch_entities(&server, &ali_leaves_break_glass());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(decide(&server, &ali_breaks_the_glass("obs-1")).0, "Deny");
}

#[test]
fn the_decision_logs_policy_hash_resolves_to_its_version() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    assert_eq!(decide(&server, &ali_breaks_the_glass("obs-1")).0, "Allow");
    let logged = logged_policy_hashes(server.audit.as_ref().unwrap().path());
    let hash = logged.last().expect("the break-glass decision is logged, durably, before it is answered");
    let (status, version) = admin(&server, "GET", &format!("/v1/policies?hash={hash}"), None);
    assert_eq!(status, 200, "{version}");
    assert_eq!((&version["hash"], &version["origin"]), (&json!(hash), &json!("directory")), "{version}");
    assert!(version["text"].as_str().unwrap().contains("break-glass"));
}

fn logged_policy_hashes(dir: &Path) -> Vec<String> {
    let mut hashes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(hash) = serde_json::from_str::<Value>(line)
                .ok()
                .and_then(|r| r["policy_hash"].as_str().map(str::to_owned))
            {
                hashes.push(hash);
            }
        }
    }
    hashes
}

#[test]
fn a_revocation_on_one_replica_reaches_the_other_and_so_does_a_policy_set() {
    let Some(schema) = TestSchema::create(
        "source_of_truth::a_revocation_on_one_replica_reaches_the_other_and_so_does_a_policy_set",
    ) else {
        return;
    };
    let store = schema.url();
    import_policies(&repo_root().join("policies"), &store);
    let a = Server::start_managed(&store, &[]);
    let b = Server::start_managed(&store, &[]);
    let request = ali_breaks_the_glass("obs-1");
    assert_eq!(decide(&b, &request).0, "Allow");
    let (status, answer) = patch_entities(&a, &ali_leaves_break_glass());
    assert_eq!(status, 200, "{answer}");
    let denied = poll_until(&b, &request, "Deny", PROPAGATION_TIMEOUT);
    assert_eq!(denied["diagnostics"]["reason"], json!(["break-glass-needs-authorisation"]), "{denied}");

    let own_read = json!({"principal": "Patient::\"p-100\"", "action": "Action::\"read\"",
        "resource": "Record::\"obs-1\"", "context": {"purpose": "PATRQT"}});
    assert_eq!(decide(&a, &own_read).0, "Allow");
    let text =
        format!("{}\n@id(\"no-portal\") forbid (principal is Patient, action, resource);", pack_text());
    let (status, answer) = admin(&b, "PUT", "/v1/policies", Some(("text/plain", text)));
    assert_eq!(status, 200, "{answer}");
    let denied = poll_until(&a, &own_read, "Deny", PROPAGATION_TIMEOUT);
    assert_eq!(denied["diagnostics"]["reason"], json!(["no-portal"]), "{denied}");
}

#[test]
fn every_change_to_the_rules_is_a_record_in_the_decision_log_that_verifies() {
    let server = Server::start_managed_pack(&[]);
    let request = ureq::http::Request::builder()
        .method("PUT")
        .uri(format!("{}/v1/policies", server.url))
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "text/plain")
        .header("x-change-reason", "ticket PRIV-7: reviewed by the DPO")
        .body(format!("{}\n// reviewed\n", pack_text()))
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    assert_eq!(agent.run(request).unwrap().status().as_u16(), 200);
    let (status, answer) = patch_entities(&server, &ali_leaves_break_glass());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);

    let (status, listed) = admin(&server, "GET", "/v1/audit/changes", None);
    assert_eq!(status, 200, "{listed}");
    let changes = kinds_subjects_actors(&listed);
    let actor = changes[0].2;
    assert_eq!(
        changes,
        [("policies", "v2", actor), ("entities", "r2", actor), ("consent", "c-100/v1", actor)]
    );
    assert_eq!(listed["changes"][0]["reason"], "ticket PRIV-7: reviewed by the DPO");
    assert_eq!(listed["changes"][1]["counts"], json!(["upserted=1", "deleted=0"]));
    let (code, report) = audit_verify(server.audit.as_ref().unwrap().path(), &[]);
    assert_eq!(code, Some(0), "{report}");
}

#[test]
fn a_policy_directory_loaded_into_a_fresh_store_is_a_recorded_change() {
    let store = tempfile::tempdir().unwrap();
    let server =
        Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), ADMIN_TOKEN, &[]);
    let (status, listed) = admin(&server, "GET", "/v1/audit/changes", None);
    assert_eq!(status, 200, "{listed}");
    let changes = kinds_subjects_actors(&listed);
    assert_eq!(changes, [("policies", "v1", "directory"), ("entities", "r1", "directory")], "{listed}");
    drop(server);
    // The same directory again changes nothing, and records nothing.
    let server =
        Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), ADMIN_TOKEN, &[]);
    let (_, listed) = admin(&server, "GET", "/v1/audit/changes", None);
    assert_eq!(listed["changes"], json!([]), "{listed}");
    let (_, versions) = admin(&server, "GET", "/v1/policies/versions", None);
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(1), "{versions}");
}

fn import_entities(file: &Path, store: &str) -> (Option<i32>, String) {
    let output = binary()
        .args(["entities", "import"])
        .arg(file)
        .args(["--store", store, "--reason", "CHG-7 nightly directory sync"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code(), text)
}

fn practitioner(i: usize, group: &str) -> String {
    json!({"uid": {"type": "Practitioner", "id": format!("dr-{i}")},
           "attrs": {"role": "physician", "organization": {"type": "Organization", "id": "st-mary"}},
           "parents": [{"type": "Organization", "id": "st-mary"}, {"type": "Group", "id": group}]})
    .to_string()
}

#[test]
fn a_json_lines_directory_is_imported_in_one_revision_and_a_bad_line_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").to_str().unwrap().to_owned();
    import_policies(&repo_root().join("policies"), &store);
    let lines: Vec<String> =
        (0..2000).map(|i| practitioner(i, if i == 1234 { "break-glass" } else { "staff" })).collect();
    let file = dir.path().join("directory.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n\n").unwrap();
    let (code, text) = import_entities(&file, &store);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("revision 2, 2000 entities written"), "{text}");

    // A line that does not fit the schema: exit 3, naming it, and nothing is written.
    let mut bad = lines.clone();
    bad[7] = json!({"uid": {"type": "Practitioner", "id": "dr-x"}, "attrs": {"role": 7}, "parents": []})
        .to_string();
    bad[0] = practitioner(0, "break-glass");
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(&bad_file, bad.join("\n")).unwrap();
    let (code, text) = import_entities(&bad_file, &store);
    assert_eq!(code, Some(3), "{text}");
    assert!(text.contains("line 8"), "{text}");

    // The server writes the decision log an import by the CLI writes by default.
    let audit = Path::new(&store).join("audit");
    let server = Server::start_managed(&store, &["--audit", audit.to_str().unwrap()]);
    let glass = |id: &str| {
        let mut request = ali_breaks_the_glass("obs-1");
        request["principal"] = json!(format!("Practitioner::\"{id}\""));
        decide(&server, &request).0
    };
    assert_eq!(glass("dr-1234"), "Allow");
    assert_eq!(glass("dr-0"), "Deny", "the refused import changed nothing");
    let (_, page) = admin(&server, "GET", "/v1/entities?type=Practitioner&limit=1000", None);
    assert_eq!(page["entities"].as_array().map(Vec::len), Some(1000), "{page}");
    let after = page["next_after"].as_str().unwrap();
    let (_, rest) = admin(
        &server,
        "GET",
        &format!("/v1/entities?type=Practitioner&limit=1000&after={}", urlencode(after)),
        None,
    );
    assert!(rest["entities"].as_array().unwrap().len() > 1000 - 1, "{rest}");
    let (status, revisions) = admin(&server, "GET", "/v1/entities/revisions?limit=1", None);
    assert_eq!(status, 200, "{revisions}");
    let newest = &revisions["revisions"][0];
    assert_eq!(
        (newest["revision"].as_u64(), newest["actor"].as_str()),
        (Some(2), Some("import")),
        "{revisions}"
    );
    assert_eq!(newest["upserted"], 2000, "the import's counts are on record: {revisions}");
    assert_eq!(revisions["next_before"], 2, "{revisions}");

    // The import is a change record in the log the server uses; the refused one is not.
    let (status, listed) = admin(&server, "GET", "/v1/audit/changes?kind=entities", None);
    assert_eq!(status, 200, "{listed}");
    let changes = listed["changes"].as_array().unwrap();
    let subjects: Vec<&Value> =
        changes.iter().filter(|c| c["actor"] == "import").map(|c| &c["subject"]).collect();
    assert_eq!(subjects, [&json!("r1"), &json!("r2")], "the pack's entities.json, then the file: {listed}");
    assert_eq!(changes[1]["reason"], "CHG-7 nightly directory sync", "{listed}");
    assert_eq!(changes[1]["counts"], json!(["upserted=2000", "deleted=0"]), "{listed}");
    let (_, listed) = admin(&server, "GET", "/v1/audit/changes?kind=policies", None);
    assert_eq!(listed["changes"][0]["subject"], "v1", "`policies import` is recorded too: {listed}");
    drop(server);
    let (code, text) = audit_verify(&audit, &[]);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn an_import_that_cannot_be_recorded_is_not_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").to_str().unwrap().to_owned();
    import_policies(&repo_root().join("policies"), &store);
    let file = dir.path().join("one.jsonl");
    std::fs::write(&file, practitioner(1, "break-glass") + "\n").unwrap();
    // A running server holds the store's JSON Lines decision log.
    let audit = Path::new(&store).join("audit");
    let server = Server::start_managed(&store, &["--audit", audit.to_str().unwrap()]);
    let (code, text) = import_entities(&file, &store);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("nothing was imported"), "{text}");
    let mut request = ali_breaks_the_glass("obs-1");
    request["principal"] = json!("Practitioner::\"dr-1\"");
    assert_eq!(decide(&server, &request).0, "Deny", "dr-1 was not imported");
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

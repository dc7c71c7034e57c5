//! An acknowledged consent write survives `kill -9`: the server is killed
//! without any chance to shut down, restarted on the same SQLite store, and
//! must still hold and obey every version it acknowledged.

use serde_json::json;

use crate::support::{ADMIN_TOKEN, Server, decide, put_consent, readme_consent, repo_root, weber_reads};

fn start_on(store: &tempfile::TempDir) -> Server {
    Server::start_with(&repo_root().join("policies"), store.path().to_str().unwrap(), ADMIN_TOKEN, &[])
}

fn allow() -> (String, String) {
    ("Allow".to_owned(), "allow".to_owned())
}

fn not_permitted() -> (String, String) {
    ("Deny".to_owned(), "not_permitted".to_owned())
}

#[test]
fn acknowledged_consents_survive_kill_9_and_keep_deciding() {
    let store = tempfile::tempdir().unwrap();
    let server = start_on(&store);
    assert_eq!(decide(&server, &weber_reads("obs-1")), not_permitted());
    let (status, stored) = put_consent(&server, "c-100", &readme_consent("active"));
    assert_eq!(status, 201, "{stored}");
    server.kill_9();

    let server = start_on(&store);
    let (status, consent) = server.send("GET", "/v1/consents/c-100", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{consent}");
    let mut expected = readme_consent("active");
    expected["meta"] = json!({"versionId": "1"});
    assert_eq!(consent, expected);
    assert_eq!(decide(&server, &weber_reads("obs-1")), allow());
    let (_, answer) = server.post("/v1/is_authorized", &weber_reads("obs-1"));
    assert_eq!(answer["diagnostics"]["reason"], json!(["consent/c-100/v1/root"]));

    // A withdrawal acknowledged just before the kill is what decides after it.
    let (status, stored) = put_consent(&server, "c-100", &readme_consent("inactive"));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], 2);
    server.kill_9();

    let server = start_on(&store);
    assert_eq!(decide(&server, &weber_reads("obs-1")), not_permitted());
    let (status, latest) = server.send("GET", "/v1/consents/c-100", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{latest}");
    assert_eq!(
        (latest["status"].as_str(), latest["meta"]["versionId"].as_str()),
        (Some("inactive"), Some("2"))
    );
    let (status, first) = server.send("GET", "/v1/consents/c-100?version=1", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "active");
}

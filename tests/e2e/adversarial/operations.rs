//! Operations: a decision that must be provable is in the log before it is
//! answered, even if the process is killed the moment after (finding 12);
//! what `/readyz` and the AuthZEN metadata tell a caller without a token
//! (finding 15).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::records;
use crate::support::{ADMIN_TOKEN, Server, ali_breaks_the_glass, repo_root, weber_reads};

/// Decisions sent in one burst, from several connections at once, so that
/// some share a batch of the log's writer.
const BURST: usize = 48;
const CONNECTIONS: usize = 4;

/// Sends `request` `BURST` times over `CONNECTIONS` threads; returns the
/// decision ids of the answers, each checked with `expect`.
fn burst(server: &Server, request: &Value, expect: &str) -> Vec<String> {
    std::thread::scope(|scope| {
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                scope.spawn(|| {
                    (0..BURST / CONNECTIONS)
                        .map(|_| {
                            let (status, answer) = server.post("/v1/is_authorized", request);
                            assert_eq!(status, 200, "{answer}");
                            assert_eq!(answer["decision"], expect, "{answer}");
                            answer["decision_id"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        senders.into_iter().flat_map(|sender| sender.join().unwrap()).collect()
    })
}

/// Kills `server` with `kill -9` and returns the decision ids in its log.
fn ids_in_the_log_after_kill_9(mut server: Server) -> HashSet<String> {
    let log = server.audit.take().unwrap();
    server.kill_9();
    records(log.path()).iter().map(|record| record["decision_id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn finding_12_every_answered_break_glass_allow_is_in_the_log_after_kill_9() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let answered = burst(&server, &ali_breaks_the_glass("obs-1"), "Allow");
    let logged = ids_in_the_log_after_kill_9(server);
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "answered break-glass Allows missing from the log: {missing:?}");
}

#[test]
fn with_audit_durability_sync_every_answered_decision_is_in_the_log_after_kill_9() {
    let server = Server::start(&repo_root().join("policies"), &["--audit-durability", "sync"]);
    let answered = burst(&server, &weber_reads("obs-1"), "Deny");
    let logged = ids_in_the_log_after_kill_9(server);
    let missing: Vec<&String> = answered.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(missing.is_empty(), "answered decisions missing from the log: {missing:?}");
}

/// The status line and body of `GET path` sent with `host` as `Host`.
fn get_with_host(server: &Server, path: &str, host: &str) -> (u16, String) {
    let address = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

#[test]
fn finding_15_readyz_without_a_token_shows_no_store_path_and_metadata_refuses_a_forged_host() {
    let store = tempfile::tempdir().unwrap();
    let location = store.path().to_str().unwrap();
    // No low-water mark, so that a nearly full disk's warning cannot add a word.
    let no_mark = ["--audit-low-water-bytes", "0"];
    let server = Server::start_with(&repo_root().join("policies"), location, ADMIN_TOKEN, &no_mark);
    let (status, ready) = server.get("/readyz");
    assert_eq!((status, &ready), (200, &json!({"status": "ready"})));
    let (status, detailed) = server.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    assert_eq!(status, 200, "{detailed}");
    assert!(detailed["store"]["store"].as_str().unwrap().contains(location), "{detailed}");

    let (status, body) = get_with_host(&server, "/.well-known/authzen-configuration", "evil.example/phish?");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"field\":\"Host\""), "{body}");
    let (status, body) = get_with_host(&server, "/.well-known/authzen-configuration", "pdp.clinic.test:8180");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"http://pdp.clinic.test:8180/access/v1/evaluation\""), "{body}");

    let server =
        Server::start(&repo_root().join("policies"), &["--public-url", "https://pdp.clinic.example"]);
    let (status, body) = get_with_host(&server, "/.well-known/authzen-configuration", "evil.example");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"https://pdp.clinic.example/access/v1/evaluation\""), "{body}");
    assert!(!body.contains("evil.example"), "{body}");
}

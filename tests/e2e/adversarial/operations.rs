//! Operations: a decision that must be provable is in the log before it is
//! answered, even if the process is killed the moment after (finding 12).

use std::collections::HashSet;

use serde_json::Value;

use crate::audit::records;
use crate::support::{Server, ali_breaks_the_glass, repo_root, weber_reads};

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

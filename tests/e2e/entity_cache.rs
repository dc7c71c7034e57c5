//! A replica holds a bounded cache of the entity directory and loads what a
//! decision needs from the store. However small the cache, the answers must
//! be those of a replica that holds everything: an entity the cache has not
//! loaded is never taken for one that does not exist.

use serde_json::Value;

use crate::support::*;

/// A few requests over every kind of entity in the pack, as the
/// documentation's scenarios ask them: treatment, a restricted patient, break-glass,
/// special categories, a third country, an unknown practitioner.
fn requests() -> Vec<Value> {
    let mut requests = Vec::new();
    for record in ["obs-1", "obs-2", "psy-1", "gen-1", "cond-1", "obs-3", "nowhere"] {
        requests.push(weber_reads(record));
        requests.push(ali_breaks_the_glass(record));
        for who in ["dr-roth", "dr-rao", "dr-chen", "dr-nobody"] {
            let request = cedar_request(
                &format!("Practitioner::\"{who}\""),
                "Action::\"read\"",
                &format!("Record::\"{record}\""),
                serde_json::json!({"purpose": "TREAT"}),
            );
            requests.push(request);
        }
    }
    requests
}

#[test]
fn a_cache_smaller_than_one_decision_answers_as_a_replica_that_holds_everything() {
    // 8 KiB holds two or three entities: every decision loads most of its
    // slice again, and evicts what the one before it loaded.
    let small = Server::start_managed_pack(&["--cache-bytes", "8192"]);
    let large = Server::start_managed_pack(&[]);
    for server in [&small, &large] {
        let (status, answer) = put_consent(server, "c-100", &readme_consent("active"));
        assert_eq!(status, 201, "{answer}");
    }
    let mut allowed = 0;
    for round in 0..3 {
        for request in requests() {
            let expected = decide(&large, &request);
            assert_eq!(decide(&small, &request), expected, "round {round}: {request}");
            allowed += usize::from(expected.0 == "Allow");
        }
    }
    assert!(allowed > 0, "the requests include Allows, or the comparison proves little");
    let (_, ready) = small.send("GET", "/readyz", None, Some(ADMIN_TOKEN));
    let cache = &ready["entity_cache"];
    assert_eq!(cache["budget_bytes"], 8192, "{ready}");
    assert!(cache["entities"].as_u64().unwrap() < 25, "the cache holds less than the directory: {cache}");
}

#[test]
fn a_change_reaches_an_entity_the_cache_holds() {
    let server = Server::start_managed_pack(&["--cache-bytes", "65536"]);
    let btg = ali_breaks_the_glass("obs-1");
    assert_eq!(decide(&server, &btg).0, "Allow", "dr-ali is in the break-glass group, and now cached");
    let (status, answer) = patch_entities(&server, &ali_leaves_break_glass());
    assert_eq!(status, 200, "{answer}");
    assert_eq!(decide(&server, &btg).0, "Deny", "the acknowledged change is in force on the next decision");
}

//! The conformance corpus (`tests/corpus/*`), run through the HTTP API of the
//! real binary: each case directory is served as a policy directory, and
//! every request's decision, determining policies and erroring policies must
//! match the expectation written by hand. The servers run with plain
//! Cedar's semantics where Consentry's defaults differ on purpose.

use std::fs;

use serde_json::Value;

use crate::support::{Server, repo_root};

fn sorted_strings(value: &Value) -> Vec<String> {
    let mut items: Vec<String> =
        value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    items.sort();
    items
}

/// `error while evaluating policy `id`: …` → `id`.
fn erroring_policy(message: &str) -> String {
    message.split('`').nth(1).unwrap_or(message).to_owned()
}

#[test]
fn conformance_corpus_through_http() {
    let root = repo_root().join("tests").join("corpus");
    let mut cases: Vec<_> =
        fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    cases.sort();
    assert!(cases.len() >= 12, "the corpus has only {} cases", cases.len());
    let mut checked = 0;
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let requests: Value =
            serde_json::from_str(&fs::read_to_string(case.join("requests.json")).unwrap()).unwrap();
        // The corpus pins plain Cedar, where request entities replace stored
        // ones and a forbid that errors is skipped.
        let server = Server::start(&case, &["--request-entities", "replace", "--forbid-errors", "skip"]);
        for expected in requests.as_array().unwrap() {
            let description = expected["description"].as_str().unwrap_or("");
            let (status, answer) = server.post("/v1/is_authorized", &expected["request"]);
            assert_eq!(status, 200, "{name}: {description}: {answer}");
            assert_eq!(answer["decision"], expected["decision"], "{name}: {description}: {answer}");
            assert_eq!(
                sorted_strings(&answer["diagnostics"]["reason"]),
                sorted_strings(&expected["reasons"]),
                "{name}: {description}: reasons"
            );
            let mut errors: Vec<String> = answer["diagnostics"]["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| erroring_policy(e.as_str().unwrap()))
                .collect();
            errors.sort();
            assert_eq!(errors, sorted_strings(&expected["errors"]), "{name}: {description}: errors");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} corpus requests were checked");
}

//! The AuthZEN Search APIs and the access overview against the real
//! binary, over the bundled pack: pages of 1, 2 and 50 that add up to the
//! whole result, a withdrawal that the very next search sees, Art. 18
//! restriction, purpose limits, break-glass staff in the access overview,
//! and bodies refused naming the field.

use serde_json::{Value, json};

use crate::support::{
    ADMIN_TOKEN, Server, ali_leaves_break_glass, patch_entities, put_consent, readme_consent, repo_root,
};

/// Records of p-100 added to the pack's: `n` of them, every fifth labelled PSY.
fn many_records(n: usize) -> Value {
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let labels: Vec<&str> = if i % 5 == 0 { vec!["PSY"] } else { vec![] };
            json!({"uid": {"type": "Record", "id": format!("lab-{i:03}")},
                "attrs": {"patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation",
                          "labels": labels, "confidentiality": "N"},
                "parents": [{"type": "Patient", "id": "p-100"}]})
        })
        .collect();
    json!({"upsert": records})
}

/// Dr. Weber's search of p-100's records for treatment.
fn weber_searches(limit: Option<u64>, token: Option<&str>) -> Value {
    let mut body = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "properties": {"patient": "p-100"}},
        "context": {"purpose": "TREAT"},
    });
    if let Some(limit) = limit {
        body["page"]["limit"] = json!(limit);
    }
    if let Some(token) = token {
        body["page"]["token"] = json!(token);
    }
    body
}

fn ids(answer: &Value) -> Vec<String> {
    answer["results"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

/// Every page of a search, following the tokens; the pages' ids in order.
fn all_pages(server: &Server, path: &str, body: impl Fn(Option<&str>) -> Value) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let (status, answer) = server.post(path, &body(token.as_deref()));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["page"]["count"], json!(answer["results"].as_array().unwrap().len()));
        pages.push(ids(&answer));
        match answer["page"]["next_token"].as_str().unwrap() {
            "" => return pages,
            next => token = Some(next.to_owned()),
        }
        assert!(pages.len() < 500, "the pages never end");
    }
}

#[test]
fn pages_of_1_2_and_50_add_up_to_the_whole_result_in_uid_order() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    assert_eq!(patch_entities(&server, &many_records(60)).0, 200);
    let whole = all_pages(&server, "/access/v1/search/resource", |token| weber_searches(Some(1000), token));
    assert_eq!(whole.len(), 1, "one page holds everything");
    let whole = whole.concat();
    // 48 of the 60 new records (no PSY) and cond-1 and obs-1.
    assert_eq!(whole.len(), 50, "{whole:?}");
    let mut sorted = whole.clone();
    sorted.sort_by(|a, b| format!("Record::\"{a}\"").cmp(&format!("Record::\"{b}\"")));
    assert_eq!(whole, sorted, "uid order");
    for limit in [1, 2, 50] {
        let pages =
            all_pages(&server, "/access/v1/search/resource", |token| weber_searches(Some(limit), token));
        assert!(pages.iter().all(|page| page.len() <= usize::try_from(limit).unwrap()), "limit {limit}");
        assert!(pages.iter().rev().skip(1).all(|page| page.len() == usize::try_from(limit).unwrap()));
        assert_eq!(pages.concat(), whole, "limit {limit}: the pages add up to the whole, nothing twice");
        assert_eq!(pages.len(), whole.len().div_ceil(usize::try_from(limit).unwrap()), "limit {limit}");
    }
    // The default limit is 50: exactly the result, on one page.
    let (_, answer) = server.post("/access/v1/search/resource", &weber_searches(None, None));
    assert_eq!(ids(&answer), whole);
    assert_eq!(answer["page"]["next_token"], "");
    // A token of one query is refused for another, naming it.
    let (_, first) = server.post("/access/v1/search/resource", &weber_searches(Some(1), None));
    let token = first["page"]["next_token"].as_str().unwrap();
    let (status, refused) = server.post("/access/v1/search/resource", &weber_searches(Some(2), Some(token)));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["field"], "page.token");
}

#[test]
fn the_very_next_search_after_a_withdrawal_finds_nothing() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    let (_, before) = server.post("/access/v1/search/resource", &weber_searches(None, None));
    assert_eq!(ids(&before), ["cond-1", "obs-1"], "{before}");
    assert_eq!(
        before["context"]["decisions"][0]["policies"][0]["policy"], "consent/c-100/v1/root",
        "each result names the consent version that allows it"
    );
    assert_eq!(put_consent(&server, "c-100", &readme_consent("inactive")).0, 200);
    let (_, after) = server.post("/access/v1/search/resource", &weber_searches(None, None));
    assert_eq!(ids(&after), Vec::<String>::new(), "{after}");
    let subjects = json!({"subject": {"type": "Practitioner"}, "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "TREAT"}});
    let (_, nobody) = server.post("/access/v1/search/subject", &subjects);
    assert_eq!(ids(&nobody), Vec::<String>::new(), "{nobody}");
    // One record per search, not per candidate, in the patient's access log.
    let searches = crate::support::wait_for_log(&server, "p-100", 3, |entry| {
        entry["resource"] == "Record::*" || entry["who"] == "Practitioner::*"
    });
    let ids: Vec<&Value> = [&before, &after, &nobody].iter().map(|a| &a["context"]["decision_id"]).collect();
    let logged: Vec<&Value> = searches.iter().map(|e| &e["decision_id"]).collect();
    assert_eq!(logged, ids, "{searches:?}");
    assert_eq!(searches[0]["consents"], json!(["c-100/v1"]));
    assert_eq!(
        (searches[0]["decision"].as_str(), searches[1]["decision"].as_str()),
        (Some("Allow"), Some("Deny"))
    );
}

#[test]
fn a_restricted_patients_records_are_found_by_the_patient_alone() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let mut consent = readme_consent("active");
    consent["id"] = json!("c-200");
    consent["patient"]["reference"] = json!("Patient/p-200");
    assert_eq!(put_consent(&server, "c-200", &consent).0, 201);
    let search = |principal: Value, purpose: &str| {
        json!({"subject": principal, "action": {"name": "read"},
            "resource": {"type": "Record", "properties": {"patient": {"type": "Patient", "id": "p-200"}}},
            "context": {"purpose": purpose}})
    };
    let weber = json!({"type": "Practitioner", "id": "dr-weber"});
    let (status, answer) = server.post("/access/v1/search/resource", &search(weber, "TREAT"));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(ids(&answer), Vec::<String>::new(), "Art. 18: a consent does not lift the restriction");
    let herself = json!({"type": "Patient", "id": "p-200"});
    let (_, answer) = server.post("/access/v1/search/resource", &search(herself, "PATRQT"));
    assert_eq!(ids(&answer), ["obs-2"], "{answer}");
    let subjects = json!({"subject": {"type": "Practitioner"}, "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-2"}, "context": {"purpose": "BTG", "justification": "unconscious"}});
    let (_, answer) = server.post("/access/v1/search/subject", &subjects);
    assert_eq!(ids(&answer), Vec::<String>::new(), "not even break-glass: {answer}");
}

#[test]
fn a_search_finds_only_what_its_purpose_allows() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    let weber = |purpose: &str| {
        let mut body = weber_searches(None, None);
        body["context"]["purpose"] = json!(purpose);
        body
    };
    let (_, research) = server.post("/access/v1/search/resource", &weber("HRESCH"));
    assert_eq!(ids(&research), Vec::<String>::new(), "a treatment consent is no basis for research");
    let (status, none) = server.post("/access/v1/search/resource", &{
        let mut body = weber_searches(None, None);
        body.as_object_mut().unwrap().remove("context");
        body
    });
    assert_eq!((status, ids(&none)), (200, vec![]), "no purpose, nothing (Art. 5(1)(b))");
    // A research consent to Euro Research: Dr. Chen finds the records, unless the patient objected.
    let research_consent = |id: &str, patient: &str| {
        json!({"resourceType": "Consent", "id": id, "status": "active",
            "patient": {"reference": format!("Patient/{patient}")},
            "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/euro-research"}}],
                "purpose": [{"code": "HRESCH"}]}})
    };
    assert_eq!(put_consent(&server, "c-r100", &research_consent("c-r100", "p-100")).0, 201);
    assert_eq!(put_consent(&server, "c-r300", &research_consent("c-r300", "p-300")).0, 201);
    let chen = |patient: &str| {
        json!({"subject": {"type": "Practitioner", "id": "dr-chen"}, "action": {"name": "read"},
            "resource": {"type": "Record", "properties": {"patient": patient}}, "context": {"purpose": "HRESCH"}})
    };
    let (_, found) = server.post("/access/v1/search/resource", &chen("p-100"));
    // psy-1 and gen-1 carry special categories the consent does not name.
    assert_eq!(ids(&found), ["cond-1", "obs-1"], "{found}");
    let (_, objected) = server.post("/access/v1/search/resource", &chen("p-300"));
    assert_eq!(ids(&objected), Vec::<String>::new(), "Art. 21 objection: {objected}");
    let actions = json!({"subject": {"type": "Practitioner", "id": "dr-chen"},
        "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "HRESCH"}});
    let (_, allowed) = server.post("/access/v1/search/action", &actions);
    assert_eq!(allowed["results"], json!([{"name": "read"}, {"name": "search"}]), "{allowed}");
}

#[test]
fn the_access_overview_lists_break_glass_staff_with_the_conditions() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    assert_eq!(put_consent(&server, "c-100", &readme_consent("active")).0, 201);
    let overview = || {
        let (status, overview) =
            server.send("GET", "/v1/patients/p-100/access-overview", None, Some(ADMIN_TOKEN));
        assert_eq!(status, 200, "{overview}");
        overview
    };
    let first = overview();
    let listed = |section: &str, overview: &Value| -> Vec<String> {
        overview[section]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["principal"]["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("break_glass", &first), ["dr-ali"], "{first}");
    let ali = &first["break_glass"][0];
    assert_eq!(ali["conditions"], json!({"purpose": "BTG", "justification": "required"}));
    assert_eq!(ali["basis"][0]["policy"], "break-glass");
    assert_eq!(ali["obligations"], json!(["notify-patient", "audit-priority"]));
    let access = listed("access", &first);
    for who in ["st-mary", "dr-weber", "p-100", "rp-anna"] {
        assert!(access.contains(&who.to_owned()), "{who} in {access:?}");
    }
    let weber =
        first["access"].as_array().unwrap().iter().find(|g| g["principal"]["id"] == "dr-weber").unwrap();
    assert_eq!(weber["purposes"][0]["purpose"], "TREAT");
    assert_eq!(weber["purposes"][0]["basis"][0]["consent"], "c-100");
    assert_eq!(weber["purposes"][0]["basis"][0]["version"], 1);
    assert!(!access.contains(&"dr-rao".to_owned()), "a third-country practitioner: {access:?}");
    // Dr. Ali leaves the break-glass group: the very next overview says so.
    assert_eq!(patch_entities(&server, &ali_leaves_break_glass()).0, 200);
    assert_eq!(listed("break_glass", &overview()), Vec::<String>::new());
    // Withdrawn, the consent grants no one any more.
    assert_eq!(put_consent(&server, "c-100", &readme_consent("inactive")).0, 200);
    let withdrawn = listed("access", &overview());
    assert!(!withdrawn.contains(&"dr-weber".to_owned()), "{withdrawn:?}");
    let (status, refused) = server.get("/v1/patients/p-100/access-overview");
    assert_eq!(status, 401, "{refused}");
}

#[test]
fn a_search_body_that_is_not_one_is_refused_naming_the_field() {
    let server = Server::start(&repo_root().join("policies"), &[]);
    let cases = [
        (weber_searches(Some(0), None), "page.limit"),
        (weber_searches(None, Some("forged")), "page.token"),
        (
            {
                let mut body = weber_searches(None, None);
                body["resource"]["properties"] = json!({"patient": 7});
                body
            },
            "resource.properties.patient",
        ),
        (
            {
                let mut body = weber_searches(None, None);
                body["context"] = json!({"purpose": 7});
                body
            },
            "context",
        ),
    ];
    for (body, field) in cases {
        let (status, refused) = server.post("/access/v1/search/resource", &body);
        assert!((400..500).contains(&status), "{body}: {status} {refused}");
        assert!(refused["field"].as_str().is_some_and(|f| f.starts_with(field)), "{body}: {refused}");
    }
}

/// `consentry search KIND --request FILE` over the bundled directory and a fresh store.
fn search_cli(kind: &str, body: &Value) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("search.json");
    std::fs::write(&file, body.to_string()).unwrap();
    crate::support::clean(crate::support::binary())
        .args(["search", kind, "--policies"])
        .arg(repo_root().join("policies"))
        .arg("--request")
        .arg(&file)
        .arg("--store")
        .arg(dir.path().join("store"))
        .output()
        .unwrap()
}

#[test]
fn search_cli_exits_0_when_found_2_when_not_and_3_on_a_bad_body() {
    let break_glass = json!({"subject": {"type": "Practitioner"}, "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"}, "context": {"purpose": "BTG", "justification": "unconscious"}});
    let found = search_cli("subject", &break_glass);
    assert_eq!(found.status.code(), Some(0), "{}", String::from_utf8_lossy(&found.stderr));
    let page: Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(page["results"], json!([{"type": "Practitioner", "id": "dr-ali"}]), "{page}");
    assert_eq!(page["context"]["decisions"][0]["obligations"][1]["id"], "audit-priority");
    let nothing = search_cli("resource", &weber_searches(None, None));
    assert_eq!(
        nothing.status.code(),
        Some(2),
        "no consent yet: {}",
        String::from_utf8_lossy(&nothing.stdout)
    );
    let bad = search_cli("resource", &weber_searches(Some(0), None));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("page.limit"), "{stderr}");
    let actions = search_cli(
        "action",
        &json!({"subject": {"type": "Patient", "id": "p-100"}, "resource": {"type": "Record", "id": "psy-1"},
            "context": {"purpose": "PATRQT"}}),
    );
    let page: Value = serde_json::from_slice(&actions.stdout).unwrap();
    assert_eq!(page["results"], json!([{"name": "read"}, {"name": "search"}]), "{page}");
}

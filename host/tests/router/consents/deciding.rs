//! Decisions obey the consent in force on the very next request: its actor,
//! purpose, period, labels and exceptions, and a withdrawal at once.

use super::*;

/// The consent in force decides the very next request: a withdrawal
/// (`status: inactive`) is not left waiting in a cache.
#[tokio::test]
async fn withdrawal_denies_the_very_next_decision() {
    let app = pack_app().await;
    // Decided once without a consent, so "no consents" is what the cache holds.
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    let reply = put_consent(&app, "c-100", &r4_treatment_with_id("c-100", "active")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let allowed = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(allowed["decision"], "Allow", "{allowed}");
    assert_eq!(allowed["diagnostics"]["reason"], json!(["consent/c-100/v1/root"]));
    let summary = allowed["summary"].as_str().unwrap_or_else(|| panic!("a summary: {allowed}"));
    assert!(summary.contains("consent/c-100/v1/root"), "{summary}");

    let reply = put_consent(&app, "c-100", &r4_treatment_with_id("c-100", "inactive")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["version"], 2);
    let denied = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(denied["decision"], "Deny", "{denied}");
    assert_eq!(denied["outcome"], "not_permitted");
    assert_eq!(denied["diagnostics"]["reason"], json!([]));

    // Consenting again (version 3) allows again, naming the version in force.
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v3/root"]));
}

#[tokio::test]
async fn a_consent_moved_to_another_patient_no_longer_permits_for_the_first() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-1/v1/root"]));
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted());

    let mut moved = r4_treatment("active");
    moved["patient"] = json!({"reference": "Patient/p-300"});
    assert_eq!(put_consent(&app, "c-1", &moved).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, determined("allow", &["consent/c-1/v2/root"]));
}

#[tokio::test]
async fn a_draft_consent_is_stored_but_ignored_by_decisions() {
    let app = pack_app().await;
    let reply = put_consent(&app, "c-1", &r4_treatment("draft")).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["status"], "draft");
    assert_eq!(listed(&app, "p-100").await, [("c-1".to_owned(), 1)]);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted());

    for status in ["proposed", "rejected", "entered-in-error"] {
        assert_eq!(put_consent(&app, "c-1", &r4_treatment(status)).await.status, StatusCode::OK);
        assert_eq!(decide(&app, &weber_reads("obs-1")).await, not_permitted(), "{status}");
    }
    // The same consent made active does permit.
    assert_eq!(put_consent(&app, "c-1", &r4_treatment("active")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-1/v5/root"]));
}

#[tokio::test]
async fn a_consent_permits_only_its_actor_purpose_period_and_unexcluded_labels() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));
    // PSY is excluded by the nested deny.
    let psy = is_authorized(&app, &weber_reads("psy-1")).await;
    assert_eq!(psy["outcome"], "forbidden", "{psy}");
    assert_eq!(psy["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]));
    assert!(psy["summary"].as_str().is_some_and(|s| s.contains("consent/c-100/v1/provision[0]")), "{psy}");
    // Another purpose, or someone outside St. Mary's.
    let marketing = practitioner_request("dr-weber", "read", "obs-1", json!({"purpose": "HMARKT"}));
    assert_eq!(decide(&app, &marketing).await, not_permitted());
    let research = practitioner_request("dr-chen", "read", "obs-1", json!({"purpose": "TREAT"}));
    assert_eq!(decide(&app, &research).await, not_permitted());
    // Another patient's record.
    assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted());
    // An action the consent does not name.
    let update = practitioner_request("dr-weber", "update", "obs-1", json!({"purpose": "TREAT"}));
    assert_eq!(decide(&app, &update).await, not_permitted());

    // A consent whose period has ended, or not yet begun, permits nothing.
    for (id, start, end) in [("c-old", "2019-01-01", "2020-12-31"), ("c-future", "2090-01-01", "2090-12-31")]
    {
        let mut consent = r4_treatment("active");
        consent["patient"] = json!({"reference": "Patient/p-300"});
        consent["provision"]["period"] = json!({"start": start, "end": end});
        assert_eq!(put_consent(&app, id, &consent).await.status, StatusCode::CREATED);
        assert_eq!(decide(&app, &weber_reads("obs-3")).await, not_permitted(), "{id}");
    }
}

#[tokio::test]
async fn search_of_a_record_with_an_excluded_label_is_allowed_with_a_redact_obligation() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    let search = practitioner_request("dr-weber", "search", "psy-1", json!({"purpose": "TREAT"}));
    let answer = is_authorized(&app, &search).await;
    assert_eq!(answer["decision"], "Allow", "{answer}");
    assert_eq!(answer["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]/redact"]));
    assert_eq!(
        answer["obligations"],
        json!([{"id": "redact", "kind": "obligation", "policy": "consent/c-100/v1/provision[0]/redact", "values": ["PSY"]}])
    );
    // A search across the patient's records is allowed too, and the caller
    // must redact the PSY-labelled results.
    let search = json!({
        "principal": uid("Practitioner", "dr-weber"),
        "action": uid("Action", "search"),
        "resource": uid("Patient", "p-100"),
        "context": {"purpose": "TREAT"},
    });
    let (outcome, mut reasons) = decide(&app, &search).await;
    reasons.sort();
    assert_eq!(
        (outcome.as_str(), reasons),
        (
            "allow",
            vec!["consent/c-100/v1/provision[0]/redact".to_owned(), "consent/c-100/v1/root".to_owned()]
        )
    );
    let answer = is_authorized(&app, &search).await;
    let redact: Vec<&Value> =
        answer["obligations"].as_array().unwrap().iter().filter(|o| o["id"] == "redact").collect();
    assert_eq!(redact.len(), 2, "{answer}");
    assert_eq!(redact[0]["values"], json!(["PSY"]));
    // The special categories the consent does not name are redacted too.
    assert_eq!(redact[1]["policy"], "special-categories", "{answer}");
    assert_eq!(redact[1]["values"], json!(["ETH", "GDIS", "HIV"]));
    // Without the consent, the same search has no legal basis.
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("inactive")).await.status, StatusCode::OK);
    assert_eq!(decide(&app, &search).await, not_permitted());
}

#[tokio::test]
async fn r5_opt_out_with_exceptions_permits_only_the_exceptions() {
    let app = pack_app().await;
    let consent = r5_opt_out(
        "c-r5",
        json!([{
            "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "action": [{"coding": [{"system": CONSENT_ACTION, "code": "access"}]}],
            "purpose": [{"system": ACT_REASON, "code": "TREAT"}]
        }]),
    );
    let reply = put_consent(&app, "c-r5", &consent).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["fhir_version"], "R5");
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("allow", &["consent/c-r5/v1/provision[0]"])
    );
    let marketing = practitioner_request("dr-weber", "read", "obs-1", json!({"purpose": "HMARKT"}));
    assert_eq!(decide(&app, &marketing).await, determined("forbidden", &["consent/c-r5/v1/root"]));
}

#[tokio::test]
async fn a_patients_deny_beats_break_glass_unless_it_makes_an_exception_for_it() {
    let app = pack_app().await;
    let glass = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(glass["decision"], "Allow", "{glass}");
    assert_eq!(glass["diagnostics"]["reason"], json!(["break-glass"]));
    assert_eq!(obligation_ids(&glass), ["notify-patient", "audit-priority"]);

    let reply = put_consent(&app, "c-optout", &r5_opt_out("c-optout", json!([]))).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let denied = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(denied["decision"], "Deny", "{denied}");
    assert_eq!(denied["outcome"], "forbidden");
    assert_eq!(denied["diagnostics"]["reason"], json!(["consent/c-optout/v1/root"]));
    assert_eq!(denied["obligations"], json!([]));

    // Version 2 lets the break-glass group in for BTG, and only them.
    let reply = put_consent(&app, "c-optout", &r5_opt_out("c-optout", break_glass_exception())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let allowed = is_authorized(&app, &ali_breaks_the_glass("obs-1")).await;
    assert_eq!(allowed["decision"], "Allow", "{allowed}");
    let reasons = allowed["diagnostics"]["reason"].as_array().unwrap();
    assert!(reasons.contains(&json!("consent/c-optout/v2/provision[0]")), "{allowed}");
    assert!(obligation_ids(&allowed).contains(&"notify-patient"), "{allowed}");
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("forbidden", &["consent/c-optout/v2/root"])
    );
}

#[tokio::test]
async fn of_two_active_consents_a_matching_deny_wins() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-permit", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-permit/v1/root"]));
    let mut deny = r4_treatment("active");
    deny["provision"] = json!({
        "type": "deny",
        "actor": [{"reference": {"reference": "Practitioner/dr-weber"}}]
    });
    assert_eq!(put_consent(&app, "c-deny", &deny).await.status, StatusCode::CREATED);
    assert_eq!(
        decide(&app, &weber_reads("obs-1")).await,
        determined("forbidden", &["consent/c-deny/v1/root"])
    );
}

#[tokio::test]
async fn stored_consents_keep_deciding_after_the_policies_change() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));

    let original = send(&app, admin(get("/v1/policies"))).await.body["text"].as_str().unwrap().to_owned();
    let closed = format!("{original}\n@id(\"closed\") forbid(principal, action, resource);\n");
    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), closed))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("forbidden", &["closed"]));

    let reply = send(&app, admin(request(Method::PUT, "/v1/policies", Some("text/plain"), original))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(decide(&app, &weber_reads("obs-1")).await, determined("allow", &["consent/c-100/v1/root"]));
}

#[tokio::test]
async fn authzen_answers_carry_the_consent_and_a_summary() {
    let app = pack_app().await;
    assert_eq!(put_consent(&app, "c-100", &r4_treatment("active")).await.status, StatusCode::CREATED);
    let body = json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Record", "id": "obs-1"},
        "context": {"purpose": "TREAT"},
    });
    let answer = evaluation(&app, &body).await;
    assert_eq!(answer["decision"], true, "{answer}");
    assert_eq!(answer["context"]["reason"]["policies"][0]["policy"], "consent/c-100/v1/root");
    let cedar_agent = is_authorized(&app, &weber_reads("obs-1")).await;
    assert_eq!(answer["context"]["reason"]["summary"], cedar_agent["summary"]);

    let mut psy = body;
    psy["resource"]["id"] = json!("psy-1");
    let answer = evaluation(&app, &psy).await;
    assert_eq!(answer["decision"], false);
    assert_eq!(answer["context"]["reason"]["outcome"], "forbidden");
    let summary = answer["context"]["reason"]["summary"].as_str().unwrap_or_else(|| panic!("{answer}"));
    assert!(summary.contains("consent/c-100/v1/provision[0]"), "{summary}");
}

/// Regression: a problem with the consent as a whole (not an object, or
/// neither R4 nor R5) was blamed on a field named `.`, where every other
/// endpoint names no field for a whole-body problem (see
/// `errors::malformed_json_is_not_blamed_on_a_field_named_question_mark`).
#[tokio::test]
async fn whole_body_consent_problems_are_not_blamed_on_a_field_named_dot() {
    let app = pack_app().await;
    let cases = [
        (json!([]), StatusCode::BAD_REQUEST, "invalid_request"),
        (json!("Consent"), StatusCode::BAD_REQUEST, "invalid_request"),
        (
            json!({"resourceType": "Consent", "status": "active"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_consent",
        ),
    ];
    for (body, status, code) in cases {
        let reply = post_consent(&app, &body).await;
        assert_error(&reply, status, code, None);
    }
    assert_eq!(listed(&app, "p-100").await, []);
}

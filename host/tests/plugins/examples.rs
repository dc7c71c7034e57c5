//! The example plugins change decisions as documented.

use consentry_test_plugins::{GUARDIAN, OBLIGATION_ADDER, SENSITIVITY_LABELER, TRIVIAL_ENRICHER};

use super::*;

const LABELS: &str = "[plugins.may_change]\n\"Record.labels\" = \"add\"\n[plugins.config]\n\"icd10:F\" = \"PSY\"\n\"icd10:B20-B24\" = \"HIV\"\n\"icd10:F10-F19\" = \"ETH\"\n";

/// What the guardian is granted: removing patients from `represents`.
pub(super) const GUARDIAN_GRANT: &str = "[plugins.may_change]\n\"RelatedPerson.represents\" = \"remove\"\n";

/// Stores consent c-100 (no PSY records), then asks whether Dr. Weber may
/// read cond-1, which carries ICD-10 F32.1 (depression) but no PSY label.
async fn weber_reads_cond1_under_c100(router: &Router) -> Value {
    let put = admin(json_request(Method::PUT, "/v1/consents/c-100", &consent_c100()));
    assert_eq!(send(router, put).await.status, StatusCode::CREATED);
    decide(router, "Practitioner::\"dr-weber\"", "read", "Record::\"cond-1\"", json!({"purpose": "TREAT"}))
        .await
}

#[tokio::test]
async fn the_labeler_makes_a_consent_exclusion_cover_an_unlabelled_psychiatric_record() {
    let labeler = plugin("sensitivity-labeler", path_of(SENSITIVITY_LABELER), &["enrich"], LABELS);
    for (plugins, expected) in [("", "Allow"), (labeler.as_str(), "Deny")] {
        let app = app(plugins).await;
        let answer = weber_reads_cond1_under_c100(&app.router).await;
        assert_eq!(answer["decision"], expected, "with plugins `{plugins}`: {answer}");
        if expected == "Deny" {
            assert_eq!(answer["diagnostics"]["reason"], json!(["consent/c-100/v1/provision[0]"]), "{answer}");
            assert_eq!(answer["plugins"], json!(["sensitivity-labeler/enrich: ok"]), "{answer}");
        } else {
            assert!(answer.get("plugins").is_none(), "no plugin ran: {answer}");
        }
        // A record without psychiatric codes stays readable either way.
        let lab = decide(
            &app.router,
            "Practitioner::\"dr-weber\"",
            "read",
            "Record::\"obs-1\"",
            json!({"purpose": "TREAT"}),
        )
        .await;
        assert_allowed(&lab);
    }
}

#[tokio::test]
async fn the_guardian_ends_a_parents_representation_at_majority() {
    let guardian = plugin("guardian", path_of(GUARDIAN), &["enrich"], GUARDIAN_GRANT);
    let context = json!({"purpose": "PWATRNY"});
    let without = app("").await;
    let with = app(&guardian).await;
    // p-500 was born in 2006 and is an adult; p-400, born in 2014, is not.
    let adult =
        decide(&without.router, "RelatedPerson::\"rp-otto\"", "read", "Patient::\"p-500\"", context.clone())
            .await;
    assert_allowed(&adult);
    let adult =
        decide(&with.router, "RelatedPerson::\"rp-otto\"", "read", "Patient::\"p-500\"", context.clone())
            .await;
    assert_eq!(adult["outcome"], "not_permitted", "{adult}");
    let minor =
        decide(&with.router, "RelatedPerson::\"rp-otto\"", "read", "Patient::\"p-400\"", context.clone())
            .await;
    assert_allowed(&minor);
    // A representative who is not a parent keeps representing.
    let anna =
        decide(&with.router, "RelatedPerson::\"rp-anna\"", "read", "Patient::\"p-100\"", context).await;
    assert_allowed(&anna);
}

#[tokio::test]
async fn an_obligations_plugin_adds_its_obligation_to_allows_only() {
    let adder = plugin(
        "obligation-adder",
        path_of(OBLIGATION_ADDER),
        &["obligations"],
        "[plugins.config]\nid = \"log-access\"\nvalues = \"siem,ward-3\"\n",
    );
    let app = app(&adder).await;
    let answer = break_glass(&app.router).await;
    assert_allowed(&answer);
    let added: Vec<&Value> = answer["obligations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["policy"] == "plugin/obligation-adder")
        .collect();
    assert_eq!(
        added,
        vec![
            &json!({"id": "log-access", "kind": "obligation", "policy": "plugin/obligation-adder", "values": ["siem", "ward-3"]})
        ]
    );
    // The pack's own obligations are still there.
    assert!(
        answer["obligations"].as_array().unwrap().iter().any(|o| o["id"] == "notify-patient"),
        "{answer}"
    );
    let denied = decide(
        &app.router,
        "Practitioner::\"dr-chen\"",
        "read",
        "Record::\"obs-1\"",
        json!({"purpose": "TREAT"}),
    )
    .await;
    assert_eq!(denied["decision"], "Deny");
    assert_eq!(denied["obligations"], json!([]), "{denied}");
}

#[tokio::test]
async fn applies_to_limits_which_requests_a_plugin_sees() {
    // The trap plugin would deny every request it sees; it only sees Patients.
    let trap = plugin(
        "trap",
        path_of(consentry_test_plugins::TRAP),
        &["enrich"],
        "[plugins.applies_to]\nresource_types = [\"Patient\"]\n",
    );
    let app = app(&trap).await;
    assert_allowed(&break_glass(&app.router).await);
    let patient = decide(
        &app.router,
        "RelatedPerson::\"rp-anna\"",
        "read",
        "Patient::\"p-100\"",
        json!({"purpose": "PWATRNY"}),
    )
    .await;
    assert_failed_closed(&patient, &["plugin `trap` (enrich) trapped"]);
}

#[tokio::test]
async fn a_trivial_enricher_leaves_decisions_unchanged_in_batches_too() {
    let app = app(&plugin("trivial", path_of(TRIVIAL_ENRICHER), &["enrich"], "")).await;
    let item = |resource: &str| {
        json!({"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": resource,
               "context": {"purpose": "BTG", "justification": "unconscious on arrival"}})
    };
    let body = json!({"requests": [item("Record::\"obs-1\""), item("Record::\"psy-1\""), item("Patient::\"p-200\"")]});
    let reply = send(&app.router, json_request(Method::POST, "/v1/is_authorized/batch", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let decisions: Vec<&Value> =
        reply.body["responses"].as_array().unwrap().iter().map(|r| &r["decision"]).collect();
    assert_eq!(decisions, [&json!("Allow"), &json!("Allow"), &json!("Deny")], "{}", reply.body);
}

#[tokio::test]
async fn the_bundled_example_configuration_loads_and_labels() {
    let app = app(&bundled_plugins_toml().unwrap()).await;
    let answer = weber_reads_cond1_under_c100(&app.router).await;
    assert_eq!(answer["outcome"], "forbidden", "{answer}");
}

#[tokio::test]
async fn authzen_answers_say_what_the_plugins_did() {
    let labeler = plugin("sensitivity-labeler", path_of(SENSITIVITY_LABELER), &["enrich"], LABELS);
    let app = app(&labeler).await;
    let body = json!({"subject": {"type": "Practitioner", "id": "dr-weber"}, "action": {"name": "read"},
                      "resource": {"type": "Record", "id": "cond-1"}, "context": {"purpose": "TREAT"}});
    let reply = send(&app.router, json_request(Method::POST, "/access/v1/evaluation", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        reply.body["context"]["reason"]["plugins"],
        json!(["sensitivity-labeler/enrich: ok"]),
        "{}",
        reply.body
    );
}

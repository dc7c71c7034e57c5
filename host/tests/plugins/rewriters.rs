//! Plugins are callers too (issue 13, finding 3): an `enrich` plugin that
//! rewrites a stored fact, or supplies a justification only a person may
//! give, makes the decision `failed_closed` naming it, unless
//! `[plugins.may_change]` grants exactly that change; a `map-request`
//! plugin whose entities rewrite a stored fact is refused the same way.

use consentry_engine::RequestEntities;
use consentry_test_plugins::FACT_REWRITER;

use super::*;

/// The fact rewriter in `mode`, with `grants` (TOML lines) under
/// `[plugins.may_change]`. Its timeout is generous: these tests are about
/// what it returns, not how fast, and must not fail on a busy machine.
fn rewriter(mode: &str, grants: &str) -> String {
    let may_change =
        if grants.is_empty() { String::new() } else { format!("[plugins.may_change]\n{grants}\n") };
    let rest = format!("{may_change}{GENEROUS}[plugins.config]\nmode = \"{mode}\"\n");
    plugin("rewriter", path_of(FACT_REWRITER), &["enrich"], &rest)
}

/// The longest timeout a plugin may have.
const GENEROUS: &str = "[plugins.limits]\ntimeout_ms = 10000\n";

fn btg(justification: Option<&str>) -> Value {
    match justification {
        Some(text) => json!({"purpose": "BTG", "justification": text}),
        None => json!({"purpose": "BTG"}),
    }
}

/// What a case asks: `principal`'s break-glass read of `resource`, after
/// storing `consent` if there is one.
struct Case<'a> {
    principal: &'a str,
    resource: &'a str,
    context: Value,
    consent: Option<Value>,
}

impl Case<'_> {
    async fn ask(&self, plugins: &str) -> Value {
        let app = app(plugins).await;
        if let Some(consent) = &self.consent {
            let put = admin(json_request(Method::PUT, "/v1/consents/opt-out", consent));
            let reply = send(&app.router, put).await;
            assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        }
        decide(&app.router, self.principal, "read", self.resource, self.context.clone()).await
    }
}

/// Asks `case` without the plugin (a Deny with `outcome`), with the plugin
/// in `mode` but no grant (failed closed, naming the plugin and `tried`),
/// and with `grant` (an Allow).
async fn refused_unless_granted(mode: &str, grant: &str, case: Case<'_>, (outcome, tried): (&str, &str)) {
    let answer = case.ask("").await;
    assert_eq!(answer["outcome"], outcome, "without the plugin: {answer}");
    let answer = case.ask(&rewriter(mode, "")).await;
    assert_failed_closed(&answer, &["plugin `rewriter` (enrich) tried a change it was not granted", tried]);
    assert_eq!(answer["plugins"], json!(["rewriter/enrich: ungranted-change, denied"]), "{answer}");
    let answer = case.ask(&rewriter(mode, grant)).await;
    assert_allowed(&answer);
    assert_eq!(answer["plugins"], json!(["rewriter/enrich: ok"]), "{answer}");
}

fn case<'a>(principal: &'a str, resource: &'a str, context: Value) -> Case<'a> {
    Case { principal, resource, context, consent: None }
}

/// p-100 refuses every use of their records by anyone else.
fn p100_opts_out() -> Value {
    json!({"resourceType": "Consent", "id": "opt-out", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p-100"}, "dateTime": "2026-01-15",
        "provision": {"type": "deny"}})
}

#[tokio::test]
async fn finding_03_a_plugin_cannot_add_the_caller_to_break_glass_without_a_grant() {
    refused_unless_granted(
        "joins-break-glass",
        "\"Practitioner in\" = \"add\"",
        case("Practitioner::\"dr-weber\"", "Record::\"obs-1\"", btg(Some("unconscious on arrival"))),
        ("forbidden", "adds `Group::\"break-glass\"`"),
    )
    .await;
}

#[tokio::test]
async fn finding_03_a_plugin_cannot_lift_a_restriction_without_a_grant() {
    refused_unless_granted(
        "lifts-restriction",
        "\"Patient.restricted\" = \"replace\"",
        case("Practitioner::\"dr-ali\"", "Record::\"obs-2\"", btg(Some("unconscious on arrival"))),
        ("forbidden", "leaves out its stored attribute `restricted`"),
    )
    .await;
}

#[tokio::test]
async fn finding_03_a_plugin_cannot_move_a_record_to_another_patient_without_a_grant() {
    refused_unless_granted(
        "moves-record",
        "\"Record in\" = \"replace\"\n\"Record.patient\" = \"replace\"",
        case("Practitioner::\"dr-ali\"", "Record::\"obs-2\"", btg(Some("unconscious on arrival"))),
        ("forbidden", "stored entity `Record::\"obs-2\"`"),
    )
    .await;
}

#[tokio::test]
async fn finding_03_a_plugin_cannot_detach_a_record_from_an_opted_out_patient_without_a_grant() {
    refused_unless_granted(
        "detaches-record",
        "\"Record in\" = \"remove\"",
        Case {
            consent: Some(p100_opts_out()),
            ..case("Practitioner::\"dr-ali\"", "Record::\"obs-1\"", btg(Some("unconscious on arrival")))
        },
        ("forbidden", "removes members of its stored parents"),
    )
    .await;
}

#[tokio::test]
async fn finding_03_a_plugin_cannot_supply_the_justification_without_a_grant() {
    refused_unless_granted(
        "supplies-justification",
        "\"context.justification\" = \"add\"",
        case("Practitioner::\"dr-ali\"", "Record::\"obs-1\"", btg(None)),
        ("forbidden", "it supplies `context.justification`"),
    )
    .await;
}

#[tokio::test]
async fn finding_03_a_mappers_entities_may_not_rewrite_a_stored_fact() {
    let mapper = plugin("rewriter", path_of(FACT_REWRITER), &["map-request"], GENEROUS);
    let envoy = || Request::builder().uri("/ext_authz/anything").body(Body::empty()).unwrap();
    let add_only = app(&mapper).await;
    let reply = send(&add_only.router, envoy()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.headers["x-consentry-outcome"], "failed_closed");
    // With cedar-agent's semantics, chosen explicitly, the same entity would have let him in.
    let replace =
        DecisionOptions { request_entities: RequestEntities::Replace, ..DecisionOptions::default() };
    let replacing = app_with(&mapper, replace).await;
    assert_eq!(send(&replacing.router, envoy()).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_plugin_list_shows_what_each_plugin_may_change() {
    let app = app(&rewriter("joins-break-glass", "\"Practitioner in\" = \"add\"")).await;
    let reply = send(&app.router, admin(Request::get("/v1/plugins").body(Body::empty()).unwrap())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["plugins"][0]["may_change"], json!({"Practitioner in": "add"}));
}

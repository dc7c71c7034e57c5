//! `GET /v1/audit/changes` over a real decision log in a temporary
//! directory that already holds change records: oldest first, filtered by
//! `since` and `kind`, paged by `after`, bad parameters named, and only for
//! auditors.

use consentry::audit::jsonl::JsonlSink;
use consentry::audit::writer::{Backpressure, Durability};
use consentry::audit::{AuditOptions, AuditTarget, ChangeEntry, ChangeKind};
use consentry::auth::{AuthConfig, DecisionAccess, Role, TokenConfig, digest_hex};

use super::*;

fn auth() -> Auth {
    let token = |name: &str, role: Role| TokenConfig {
        name: name.to_owned(),
        sha256: digest_hex(&format!("t-{name}")),
        roles: vec![role],
        principal: None,
    };
    let tokens = vec![token("auditor", Role::Auditor), token("admin", Role::PolicyAdmin)];
    Auth::new(&AuthConfig { decisions: Some(DecisionAccess::Open), tokens }, None).unwrap()
}

/// The bundled pack over a log holding, at seq 0–3: policies `v1`
/// (January), consent `c-1/v2` (February), plugins (March), policies `v2`
/// (April).
async fn app_with_changes() -> (App, TempDir) {
    let audit = tempfile::tempdir().unwrap();
    let change = |kind: ChangeKind, subject: &str, at: &str| {
        let mut change = ChangeEntry::now(kind, "admin", subject).with_count("upserted", 3);
        change.at = at.to_owned();
        change.with_reason(Some("CHG-42")).unwrap()
    };
    JsonlSink::open(audit.path(), u64::MAX)
        .unwrap()
        .append(vec![
            change(ChangeKind::Policies, "v1", "2026-01-15T08:00:00.000Z"),
            change(ChangeKind::Consent, "c-1/v2", "2026-02-15T08:00:00.000Z"),
            change(ChangeKind::Plugins, "sha256:77", "2026-03-15T08:00:00.000Z"),
            change(ChangeKind::Policies, "v2", "2026-04-15T08:00:00.000Z"),
        ])
        .unwrap();
    let loaded = consentry::policy_dir::load(&bundled_policies()).unwrap();
    let (consents, store_dir) = consents_in_tempdir().await;
    let state = AppState::new(loaded.bundle, loaded.store, settings(), auth(), consents, Plugins::none());
    let options = AuditOptions {
        rotate_bytes: 1 << 20,
        retention: consentry::audit::Retention::default(),
        low_water_bytes: 0,
        queue: 100,
        backpressure: Backpressure::FailClosed,
        durability: Durability::BreakGlass,
    };
    let (log, store) =
        consentry::audit::open(&AuditTarget::Dir(audit.path().to_owned()), &options).await.unwrap().unwrap();
    state.pipeline.start_audit(log, store);
    (App { router: router(state, DEFAULT_MAX_BODY), _store: store_dir }, audit)
}

fn changes(query: &str) -> Request<Body> {
    with_token(get(&format!("/v1/audit/changes{query}")), "t-auditor")
}

fn subjects(reply: &Reply) -> Vec<&str> {
    reply.body["changes"].as_array().unwrap().iter().map(|c| c["subject"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn changes_are_listed_oldest_first_by_since_and_kind() {
    let (app, _audit) = app_with_changes().await;
    let all = send(&app, changes("")).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(subjects(&all), ["v1", "c-1/v2", "sha256:77", "v2"]);
    assert_eq!(all.body["more"], false);
    let first = &all.body["changes"][0];
    assert_eq!(first["seq"], 0);
    assert_eq!(first["kind"], "policies");
    assert_eq!(first["actor"], "admin");
    assert_eq!(first["at"], "2026-01-15T08:00:00.000Z");
    assert_eq!(first["counts"], json!(["upserted=3"]));
    assert_eq!(first["reason"], "CHG-42");
    assert_eq!(first["content_hash"], "");
    assert!(first["change_id"].as_str().is_some_and(|id| id.len() == 36), "{first}");

    let since = send(&app, changes("?since=2026-02-15T08:00:00Z")).await;
    assert_eq!(subjects(&since), ["c-1/v2", "sha256:77", "v2"]);
    let policies = send(&app, changes("?kind=policies&since=2026-02")).await;
    assert_eq!(subjects(&policies), ["v2"]);
    assert_eq!(policies.body["kind"], "policies");
}

#[tokio::test]
async fn changes_page_by_limit_and_after() {
    let (app, _audit) = app_with_changes().await;
    let page = send(&app, changes("?limit=3")).await;
    assert_eq!((subjects(&page), &page.body["more"]), (vec!["v1", "c-1/v2", "sha256:77"], &json!(true)));
    let next = send(&app, changes("?limit=3&after=2")).await;
    assert_eq!((subjects(&next), &next.body["more"]), (vec!["v2"], &json!(false)));
}

#[tokio::test]
async fn bad_parameters_are_named_and_only_auditors_may_ask() {
    let (app, _audit) = app_with_changes().await;
    for (query, field) in [
        ("?since=yesterday", "since"),
        ("?kind=decisions", "kind"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?after=-1", "after"),
        ("?patient=p-1", "patient"),
    ] {
        let reply = send(&app, changes(query)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "invalid_request", Some(field));
    }
    let unknown = send(&app, changes("?kind=decisions")).await;
    assert!(
        unknown.text.contains("known: policies, schema, links, entities, consent, plugins"),
        "{}",
        unknown.text
    );
    let admin = send(&app, with_token(get("/v1/audit/changes"), "t-admin")).await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN, "{}", admin.text);
    let anonymous = send(&app, get("/v1/audit/changes")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.text);
}

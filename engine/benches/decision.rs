//! Decision latency of the engine.
//!
//! - `decide/stored_entities/{10,10000,1000000}`: one request against a small
//!   healthcare policy set, with the store holding 10, 10 000 and 1 000 000
//!   entities. The entity slice keeps the cost independent of the store size.
//! - `decide/policies/{1,20,200}`: the same request with 1, 20 and 200
//!   policies, all but one scoped to other principals or resources. The scope
//!   index keeps the cost flat as non-matching policies are added.
//!
//! - `decide/bundled_pack`: the README's first request against `policies/`;
//!   `decide/bundled_pack_from_cache`: the same over a bounded store (a
//!   server's cache of the directory) that has its slice loaded.
//!
//! Entities are built with `Entity::new` and `EntityStore::from_entities`
//! rather than parsed from JSON, so the million-entity store builds in seconds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use consentry_engine::cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use consentry_engine::{
    DecisionRequest, EntityStore, EvaluationTime, PolicyBundle, SchemaSource, StoredEntity, decide,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// The allocator the `consentry` binary uses, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::json;

const SCHEMA: &str = r#"
entity Organization in [Organization];
entity CareTeam in [CareTeam, Organization];
entity Practitioner in [CareTeam, Organization] { role: String, licensed: Bool, clearance: Long };
entity Patient in [Organization] { careTeam: CareTeam, vip: Bool, consentResearch: Bool };
entity Record in [Patient] { patient: Patient, sensitivity: Long, category: String };
type Ctx = { emergency: Bool, hour: Long, network: String };
action clinical;
action read in [clinical] appliesTo { principal: [Practitioner], resource: [Record, Patient], context: Ctx };
action write in [clinical] appliesTo { principal: [Practitioner], resource: [Record, Patient], context: Ctx };
action share appliesTo { principal: [Practitioner], resource: [Record, Patient], context: Ctx };
action delete appliesTo { principal: [Practitioner], resource: [Record, Patient], context: Ctx };
"#;

/// Twelve policies: permits and forbids over groups, attributes and context.
const POLICIES: &str = r#"
@id("care-team-clinical") @obligation("log-access")
permit(principal is Practitioner, action in Action::"clinical", resource is Record)
  when { principal in resource.patient.careTeam && principal.licensed };
@id("hospital-admins")
permit(principal in Organization::"hospital-admins", action, resource in Organization::"hospital");
@id("break-glass") @obligation("notify-patient, audit-priority")
permit(principal is Practitioner in Organization::"hospital", action == Action::"read", resource is Record)
  when { context.emergency };
@id("research-read")
permit(principal in CareTeam::"research", action == Action::"read", resource is Record)
  when { resource.patient.consentResearch && resource.category != "psych" };
@id("cardiology-share")
permit(principal in CareTeam::"cardiology", action == Action::"share", resource in Organization::"clinic-0");
@id("auditors-read")
permit(principal in Organization::"audit", action == Action::"read", resource)
  when { context.network == "internal" };
@id("vip-clearance")
forbid(principal, action, resource is Record) when { resource.patient.vip && principal.clearance < 3 };
@id("sensitivity")
forbid(principal, action, resource is Record) when { resource.sensitivity > principal.clearance }
  unless { context.emergency };
@id("off-hours-write")
forbid(principal, action == Action::"write", resource) when { context.hour < 6 || context.hour > 22 };
@id("untrusted-network")
forbid(principal, action in [Action::"write", Action::"share"], resource) unless { context.network == "internal" };
@id("suspended")
forbid(principal in CareTeam::"suspended", action, resource);
@id("records-officer-delete")
forbid(principal, action == Action::"delete", resource) unless { principal.role == "records-officer" };
"#;

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(type_name).unwrap(), EntityId::new(id))
}

fn plain(type_name: &str, id: &str, parents: &[EntityUid]) -> Entity {
    Entity::new_no_attrs(uid(type_name, id), parents.iter().cloned().collect())
}

fn practitioner(id: &str, parents: &[EntityUid], clearance: i64) -> Entity {
    let attrs = HashMap::from([
        ("role".to_owned(), RestrictedExpression::new_string("physician".to_owned())),
        ("licensed".to_owned(), RestrictedExpression::new_bool(true)),
        ("clearance".to_owned(), RestrictedExpression::new_long(clearance)),
    ]);
    Entity::new(uid("Practitioner", id), attrs, parents.iter().cloned().collect()).unwrap()
}

fn patient(id: &str, clinic: &EntityUid, team: &EntityUid, vip: bool) -> Entity {
    let attrs = HashMap::from([
        ("careTeam".to_owned(), RestrictedExpression::new_entity_uid(team.clone())),
        ("vip".to_owned(), RestrictedExpression::new_bool(vip)),
        ("consentResearch".to_owned(), RestrictedExpression::new_bool(true)),
    ]);
    Entity::new(uid("Patient", id), attrs, HashSet::from([clinic.clone()])).unwrap()
}

fn record(id: &str, patient: &EntityUid, sensitivity: i64) -> Entity {
    let attrs = HashMap::from([
        ("patient".to_owned(), RestrictedExpression::new_entity_uid(patient.clone())),
        ("sensitivity".to_owned(), RestrictedExpression::new_long(sensitivity)),
        ("category".to_owned(), RestrictedExpression::new_string("cardiology".to_owned())),
    ]);
    Entity::new(uid("Record", id), attrs, HashSet::from([patient.clone()])).unwrap()
}

/// Exactly `total` entities (at least 10): a fixed core holding the request's
/// principal and resource, then filler practitioners, patients and records
/// spread over clinics and care teams.
fn entities(total: usize) -> Vec<Entity> {
    let hospital = uid("Organization", "hospital");
    let clinic0 = uid("Organization", "clinic-0");
    let cardiology = uid("CareTeam", "cardiology");
    let research = uid("CareTeam", "research");
    let patient0 = uid("Patient", "p-0");
    let mut all = vec![
        plain("Organization", "hospital", &[]),
        plain("Organization", "clinic-0", std::slice::from_ref(&hospital)),
        plain("Organization", "audit", std::slice::from_ref(&hospital)),
        plain("CareTeam", "cardiology", std::slice::from_ref(&clinic0)),
        plain("CareTeam", "research", std::slice::from_ref(&hospital)),
        plain("CareTeam", "suspended", std::slice::from_ref(&hospital)),
        practitioner("dr-ada", &[cardiology.clone(), research], 4),
        patient("p-0", &clinic0, &cardiology, false),
        record("r-0", &patient0, 2),
        record("r-1", &patient0, 5),
    ];
    let clinics = 10usize;
    let teams = (total / 200).max(1);
    let clinic = |n: usize| uid("Organization", &format!("clinic-{}", n % clinics));
    let team = |n: usize| uid("CareTeam", &format!("team-{}", n % teams));
    all.extend(
        (1..clinics).map(|c| plain("Organization", &format!("clinic-{c}"), std::slice::from_ref(&hospital))),
    );
    all.extend((0..teams).map(|t| plain("CareTeam", &format!("team-{t}"), &[clinic(t)])));
    all.truncate(total);
    let mut i = 0usize;
    while all.len() < total {
        let n = i / 4;
        let entity = match i % 4 {
            0 => practitioner(&format!("pr-{n}"), &[team(n), clinic(n)], (n % 5) as i64),
            1 => patient(&format!("pt-{n}"), &clinic(n), &team(n), n.is_multiple_of(17)),
            _ => record(&format!("rec-{i}"), &uid("Patient", &format!("pt-{n}")), (i % 6) as i64),
        };
        all.push(entity);
        i += 1;
    }
    all
}

fn request() -> DecisionRequest {
    let mut request =
        DecisionRequest::new(uid("Practitioner", "dr-ada"), uid("Action", "read"), uid("Record", "r-0"));
    request.context = Some(json!({"emergency": false, "hour": 10, "network": "internal"}));
    request
}

fn bundle(policies: &str) -> PolicyBundle {
    PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), policies, &[])
        .unwrap_or_else(|e| panic!("bench bundle refused: {e}"))
}

fn stored_entities(c: &mut Criterion) {
    let bundle = bundle(POLICIES);
    let request = request();
    let mut group = c.benchmark_group("decide/stored_entities");
    for total in [10usize, 10_000, 1_000_000] {
        let store = EntityStore::from_entities(entities(total));
        assert_eq!(store.len(), total);
        let decision = decide(&bundle, &store, &request).unwrap();
        assert!(decision.is_allowed() && decision.errors.is_empty(), "unexpected decision: {decision:?}");
        group.bench_with_input(BenchmarkId::from_parameter(total), &store, |b, store| {
            b.iter(|| decide(black_box(&bundle), black_box(store), black_box(&request)));
        });
    }
    group.finish();
}

/// The care-team permit plus `count - 1` policies that never match the
/// request: scoped to other records, patients, teams and practitioners.
fn padded_policies(count: usize) -> String {
    let mut text = String::from(
        r#"@id("care-team-clinical")
        permit(principal is Practitioner, action in Action::"clinical", resource is Record)
          when { principal in resource.patient.careTeam && principal.licensed };
        "#,
    );
    for i in 1..count {
        let policy = match i % 4 {
            0 => format!(
                "permit(principal, action == Action::\"read\", resource == Record::\"other-{i}\") when {{ context.hour > {i} }};\n"
            ),
            1 => format!(
                "forbid(principal, action, resource in Patient::\"other-{i}\") when {{ context.emergency }};\n"
            ),
            2 => format!(
                "permit(principal in CareTeam::\"other-{i}\", action in Action::\"clinical\", resource) when {{ principal.licensed }};\n"
            ),
            _ => format!("forbid(principal == Practitioner::\"other-{i}\", action, resource);\n"),
        };
        text.push_str(&policy);
    }
    text
}

fn policies(c: &mut Criterion) {
    let store = EntityStore::from_entities(entities(10_000));
    let request = request();
    let mut group = c.benchmark_group("decide/policies");
    for count in [1usize, 20, 200] {
        let bundle = bundle(&padded_policies(count));
        assert_eq!(bundle.policy_count(), count);
        let decision = decide(&bundle, &store, &request).unwrap();
        assert!(decision.is_allowed() && decision.reasons.len() == 1, "unexpected decision: {decision:?}");
        group.bench_with_input(BenchmarkId::from_parameter(count), &bundle, |b, bundle| {
            b.iter(|| decide(black_box(bundle), black_box(&store), black_box(&request)));
        });
    }
    group.finish();
}

/// The README's first request (break-glass access by an authorised
/// practitioner) against the bundled policy pack and its example entities.
fn bundled_pack(c: &mut Criterion) {
    let schema = include_str!("../../policies/schema.cedarschema");
    let pack = [include_str!("../../policies/pack.cedar"), include_str!("../../policies/transfers.cedar")]
        .join("\n");
    let entities: serde_json::Value =
        serde_json::from_str(include_str!("../../policies/entities.json")).unwrap();
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(schema)), &pack, &[]).unwrap();
    let store = EntityStore::from_json(&entities, bundle.schema()).unwrap();
    let mut request =
        DecisionRequest::new(uid("Practitioner", "dr-ali"), uid("Action", "read"), uid("Record", "obs-1"));
    request.context = Some(json!({"purpose": "BTG", "justification": "unconscious on arrival"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T10:00:00Z").unwrap());
    assert!(decide(&bundle, &store, &request).unwrap().is_allowed());
    c.bench_function("decide/bundled_pack", |b| {
        b.iter(|| decide(black_box(&bundle), black_box(&store), black_box(&request)));
    });
    // The same decision over a bounded store, as a server holds the
    // directory, once its slice is loaded.
    let mut cache = EntityStore::bounded(64 << 20);
    loop {
        let decision = decide(&bundle, &cache, &request).unwrap();
        if decision.unloaded.is_empty() {
            assert!(decision.is_allowed());
            break;
        }
        for missing in decision.unloaded {
            match store.get(&missing) {
                Some(stored) => cache.admit(StoredEntity::new(stored.entity().clone()), 1000),
                None => cache.admit_absent(missing),
            }
        }
    }
    c.bench_function("decide/bundled_pack_from_cache", |b| {
        b.iter(|| decide(black_box(&bundle), black_box(&cache), black_box(&request)));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = stored_entities, policies, bundled_pack
}
criterion_main!(benches);

//! Decision latency with patients' consents.
//!
//! `decide/consents/{1000,1000000}`: a practitioner reads a record of a
//! patient who has 20 active consents, against the bundled policy pack, with
//! 1 000 and 1 000 000 patients (each with one record) in the store. Only the
//! patient's own partition is evaluated and only the request's entities are
//! sliced, so the time does not depend on the number of patients.
//!
//! Entities are built with `Entity::new` rather than parsed from JSON, so the
//! two-million-entity store builds in seconds.

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
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionRequest, EntityStore, EvaluationTime, PolicyBundle,
    SchemaSource, decide_with_consents,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// The allocator the `consentry` binary uses, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn uid(type_name: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(type_name).unwrap(), EntityId::new(id))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn entity(
    type_name: &str,
    id: &str,
    attrs: Vec<(&str, RestrictedExpression)>,
    parents: &[EntityUid],
) -> Entity {
    let attrs: HashMap<String, RestrictedExpression> =
        attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Entity::new(uid(type_name, id), attrs, parents.iter().cloned().collect::<HashSet<_>>()).unwrap()
}

/// Ten organizations with a care team each, one practitioner, and `patients`
/// patients with one record each.
fn entities(patients: usize) -> Vec<Entity> {
    let mut all = Vec::with_capacity(2 * patients + 30);
    for o in 0..10 {
        let org = format!("org-{o}");
        all.push(entity(
            "Organization",
            &org,
            vec![("kind", string("hospital")), ("country", string("DE"))],
            &[],
        ));
        all.push(entity("CareTeam", &format!("team-{o}"), vec![], &[uid("Organization", &org)]));
    }
    all.push(entity(
        "Practitioner",
        "dr-ada",
        vec![("role", string("physician"))],
        &[uid("Organization", "org-0"), uid("CareTeam", "team-0")],
    ));
    for p in 0..patients {
        let patient = format!("p-{p}");
        all.push(entity("Patient", &patient, vec![], &[]));
        let labels = if p % 7 == 0 { vec![string("PSY")] } else { vec![] };
        all.push(entity(
            "Record",
            &format!("r-{p}"),
            vec![
                ("patient", RestrictedExpression::new_entity_uid(uid("Patient", &patient))),
                ("resourceType", string("Observation")),
                ("labels", RestrictedExpression::new_set(labels)),
                ("confidentiality", string("N")),
            ],
            &[uid("Patient", &patient)],
        ));
    }
    all
}

/// Twenty active consents of patient `p-1`, as a patient collects them:
/// fourteen R4 grants to one organization, care team or practitioner each
/// (every third excluding psychiatry and HIV records), three R4 refusals, and
/// three R5 consents that permit everything but marketing and one organization.
/// Two grants concern the request (`dr-ada` is in `org-0` and `team-0`).
fn consents() -> Vec<Value> {
    let purposes = ["TREAT", "HPAYMT", "HOPERAT", "PUBHLTH", "HRESCH"];
    let grants = (0..14).map(|i| {
        let actor = match i % 3 {
            0 => format!("Organization/org-{}", i % 10),
            1 => format!("CareTeam/team-{}", (i + 9) % 10),
            _ => format!("Practitioner/dr-{i}"),
        };
        let mut provision = json!({
            "type": "permit",
            "period": {"start": format!("{}-01-01", 2020 + i % 6), "end": "2030-12-31"},
            "actor": [{"reference": {"reference": actor}}],
            "action": [{"coding": [{"code": "access"}]}],
            "purpose": [{"code": purposes[i % purposes.len()]}, {"code": "TREAT"}]
        });
        if i % 3 == 0 {
            provision["provision"] =
                json!([{"type": "deny", "securityLabel": [{"code": "PSY"}, {"code": "HIV"}]}]);
        }
        json!({"resourceType": "Consent", "id": format!("c-{i}"), "status": "active",
               "patient": {"reference": "Patient/p-1"}, "provision": provision})
    });
    let refusals = [
        json!({"type": "deny", "purpose": [{"code": "HMARKT"}]}),
        json!({"type": "deny", "actor": [{"reference": {"reference": "Organization/org-9"}}]}),
        json!({"type": "deny", "purpose": [{"code": "HRESCH"}], "class": [{"code": "MolecularSequence"}]}),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, provision)| {
        json!({"resourceType": "Consent", "id": format!("c-{}", 14 + i), "status": "active",
               "patient": {"reference": "Patient/p-1"}, "provision": provision})
    });
    let r5 = (17..20).map(|i| {
        json!({
            "resourceType": "Consent", "id": format!("c-{i}"), "status": "active",
            "subject": {"reference": "Patient/p-1"}, "decision": "permit",
            "period": {"start": "2024-01-01", "end": "2029-12-31"},
            "provision": [
                {"purpose": [{"code": "HMARKT"}]},
                {"actor": [{"reference": {"reference": format!("Organization/org-{}", i - 9)}}]}
            ]
        })
    });
    grants.chain(refusals).chain(r5).collect()
}

fn consents_bench(c: &mut Criterion) {
    let schema = include_str!("../../policies/schema.cedarschema");
    let pack = [include_str!("../../policies/pack.cedar"), include_str!("../../policies/transfers.cedar")]
        .join("\n");
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(schema)), &pack, &[]).unwrap();
    let parsed: Vec<Consent> = consents().iter().map(|c| Consent::from_json(c).unwrap()).collect();
    let versions: Vec<ConsentVersion<'_>> = parsed
        .iter()
        .enumerate()
        .map(|(i, consent)| ConsentVersion {
            id: ["c-", &i.to_string()].concat().leak(),
            version: 1,
            consent,
        })
        .collect();
    // The cold path: the first decision about a patient builds their partition.
    c.bench_function("partition/build_20_consents", |b| {
        b.iter(|| ConsentPartition::build(black_box(&bundle), "p-1", black_box(&versions)).unwrap());
    });
    let partition = ConsentPartition::build(&bundle, "p-1", &versions).unwrap();
    let mut request =
        DecisionRequest::new(uid("Practitioner", "dr-ada"), uid("Action", "read"), uid("Record", "r-1"));
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T10:00:00Z").unwrap());
    let mut group = c.benchmark_group("decide/consents");
    for patients in [1_000usize, 1_000_000] {
        let store = EntityStore::from_entities(entities(patients));
        let decision = decide_with_consents(&bundle, &[&partition], &store, &request).unwrap();
        assert!(decision.is_allowed() && decision.errors.is_empty(), "unexpected decision: {decision:?}");
        assert_eq!(
            partition.policy_count(),
            36,
            "every provision compiles to a policy, plus a redact permit per label exclusion (a \
             patient-level search carries the other exclusions in its filter obligation)"
        );
        group.bench_with_input(BenchmarkId::from_parameter(patients), &store, |b, store| {
            b.iter(|| decide_with_consents(black_box(&bundle), &[black_box(&partition)], store, &request));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = consents_bench
}
criterion_main!(benches);

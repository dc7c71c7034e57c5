//! Plans (issue 15) against the decisions they stand for.
//!
//! - `plan/{conditional,always,never}`: Dr. Weber's reads of p-100's records
//!   under consents excluding a label, a class, a code and a period; p-100
//!   reading her own; Dr. Rao (an Indian clinic) whom the transfer rules
//!   stop. The bundled pack, its special categories and `entities.json`.
//! - `decide/read_admitted`: a read of a record the conditional plan's
//!   filter admits, the decision as it always was; `decide/patient_search`:
//!   the search of the whole patient, which now plans its `filter`.
//! - `records/{decisions,plan_and_filter}/N`: the same N records of p-100
//!   answered by N decisions, or by one plan and the filter run over them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::BTreeSet;
use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use consentry_engine::cedar_policy::{EntityTypeName, EntityUid};
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionOptions, DecisionRequest, EntityStore, EvaluationTime,
    PlanKind, PlanRequest, PolicyBundle, RecordFacts, SchemaSource, SpecialCategories, decide_with, plan,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// The allocator the `consentry` binary uses, so the figures match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: &str = "2026-06-01T10:00:00Z";

fn bundle() -> PolicyBundle {
    let schema = include_str!("../../policies/schema.cedarschema");
    let pack = [include_str!("../../policies/pack.cedar"), include_str!("../../policies/transfers.cedar")]
        .join("\n");
    let special =
        SpecialCategories::from_json(include_str!("../../policies/special-categories.json")).unwrap();
    PolicyBundle::load(Some(SchemaSource::CedarText(schema)), &pack, &[])
        .unwrap()
        .with_special_categories(special)
}

/// p-100's records beyond the bundled ones: every fifth a Condition, some
/// labelled, some coded, dated across 2025 and 2026.
fn record(n: usize) -> (Value, RecordFacts) {
    let kind = ["Observation", "Condition", "MedicationStatement", "DocumentReference", "Observation"][n % 5];
    let mut labels = BTreeSet::new();
    for (every, label) in [(7, "PSY"), (11, "HIV"), (13, "GDIS")] {
        if n.is_multiple_of(every) {
            labels.insert(label.to_owned());
        }
    }
    let codes: Option<BTreeSet<String>> = (!n.is_multiple_of(3))
        .then(|| BTreeSet::from([["http://loinc.org|2345-7", "glucose"][n % 2].to_owned()]));
    let date = (!n.is_multiple_of(4)).then(|| 1_735_689_600_000 + (n as i64 % 500) * 86_400_000);
    let id = format!("r-{n}");
    let mut attrs = json!({"patient": {"type": "Patient", "id": "p-100"}, "resourceType": kind,
                           "labels": labels, "confidentiality": "N"});
    if let Some(codes) = &codes {
        attrs["codes"] = json!(codes);
    }
    if let Some(date) = date {
        attrs["date"] = json!(EvaluationTime::from_unix_millis(date).cedar_literal());
    }
    let entity = json!({"uid": {"type": "Record", "id": id}, "attrs": attrs, "parents": [{"type": "Patient", "id": "p-100"}]});
    let facts = RecordFacts {
        id,
        resource_type: kind.to_owned(),
        labels,
        confidentiality: "N".to_owned(),
        codes,
        date,
    };
    (entity, facts)
}

/// St. Mary's may access p-100's records for treatment, except PSY, Conditions, LOINC 2345-7 and early 2025.
fn consent() -> Consent {
    let deny = |field: &str, value: Value| json!({"type": "deny", field: value});
    Consent::from_json(&json!({
        "resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/st-mary"}}],
            "purpose": [{"code": "TREAT"}],
            "provision": [
                deny("securityLabel", json!([{"code": "PSY"}])),
                deny("class", json!([{"code": "Condition"}])),
                deny("code", json!([{"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}])),
                deny("dataPeriod", json!({"start": "2025-01-01", "end": "2025-06-01"}))]}
    }))
    .unwrap()
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

fn plan_request(principal: &str, purpose: &str) -> PlanRequest {
    PlanRequest {
        principal: uid(principal),
        action: uid("Action::\"read\""),
        resource_type: EntityTypeName::from_str("Record").unwrap(),
        patient: Some(uid("Patient::\"p-100\"")),
        context: Some(json!({"purpose": purpose})),
        now: Some(EvaluationTime::parse(NOW).unwrap()),
    }
}

fn decision_request(principal: &str, action: &str, resource: &str) -> DecisionRequest {
    let mut request =
        DecisionRequest::new(uid(principal), uid(&format!("Action::\"{action}\"")), uid(resource));
    request.context = Some(json!({"purpose": "TREAT"}));
    request.now = Some(EvaluationTime::parse(NOW).unwrap());
    request
}

fn plan_bench(c: &mut Criterion) {
    let bundle = bundle();
    let consent = consent();
    let versions = [ConsentVersion { id: "c-ex", version: 1, consent: &consent }];
    let partition = ConsentPartition::build(&bundle, "p-100", &versions).unwrap();
    let mut entities: Vec<Value> =
        serde_json::from_str(include_str!("../../policies/entities.json")).unwrap();
    let (records, facts): (Vec<Value>, Vec<RecordFacts>) = (0..10_000).map(record).unzip();
    entities.extend(records);
    let store = EntityStore::from_json(&Value::Array(entities), bundle.schema()).unwrap();
    let options = DecisionOptions::default();
    let weber = "Practitioner::\"dr-weber\"";
    let cases = [
        ("conditional", plan_request(weber, "TREAT"), PlanKind::Conditional),
        ("always", plan_request("Patient::\"p-100\"", "PATRQT"), PlanKind::Always),
        ("never", plan_request("Practitioner::\"dr-rao\"", "TREAT"), PlanKind::Never),
    ];
    let mut group = c.benchmark_group("plan");
    for (name, request, kind) in &cases {
        let planned = plan(&bundle, Some(&partition), &store, request, &options).unwrap();
        assert_eq!(planned.kind, *kind, "{}", serde_json::to_string(&planned).unwrap());
        group.bench_function(*name, |b| {
            b.iter(|| {
                plan(black_box(&bundle), Some(&partition), &store, black_box(request), &options).unwrap()
            });
        });
    }
    group.finish();

    let conditional = plan(&bundle, Some(&partition), &store, &cases[0].1, &options).unwrap();
    let admitted = facts.iter().find(|f| conditional.filter.admits(f)).unwrap();
    let read = decision_request(weber, "read", &format!("Record::\"{}\"", admitted.id));
    assert!(decide_with(&bundle, &[&partition], &store, &read, &options).unwrap().is_allowed());
    let search = decision_request(weber, "search", "Patient::\"p-100\"");
    let searched = decide_with(&bundle, &[&partition], &store, &search, &options).unwrap();
    assert!(searched.obligations.iter().any(|o| o.id == "filter"), "{searched:?}");
    let mut group = c.benchmark_group("decide");
    group.bench_function("read_admitted", |b| {
        b.iter(|| {
            decide_with(black_box(&bundle), &[&partition], &store, black_box(&read), &options).unwrap()
        });
    });
    group.bench_function("patient_search", |b| {
        b.iter(|| {
            decide_with(black_box(&bundle), &[&partition], &store, black_box(&search), &options).unwrap()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("records");
    group.sample_size(10);
    for n in [10usize, 100, 1_000, 10_000] {
        let asked: Vec<DecisionRequest> = facts[..n]
            .iter()
            .map(|f| decision_request(weber, "read", &format!("Record::\"{}\"", f.id)))
            .collect();
        let allowed = asked
            .iter()
            .filter(|r| decide_with(&bundle, &[&partition], &store, r, &options).unwrap().is_allowed())
            .count();
        assert_eq!(allowed, facts[..n].iter().filter(|f| conditional.filter.admits(f)).count());
        group.bench_with_input(BenchmarkId::new("decisions", n), &asked, |b, asked| {
            b.iter(|| {
                asked
                    .iter()
                    .filter(|r| {
                        decide_with(&bundle, &[&partition], &store, r, &options).unwrap().is_allowed()
                    })
                    .count()
            });
        });
        group.bench_with_input(BenchmarkId::new("plan_and_filter", n), &facts[..n], |b, facts| {
            b.iter(|| {
                let planned = plan(&bundle, Some(&partition), &store, &cases[0].1, &options).unwrap();
                facts.iter().filter(|f| planned.filter.admits(f)).count()
            });
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
    targets = plan_bench
}
criterion_main!(benches);

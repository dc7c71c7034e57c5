//! A plan never admits a record its decision would deny (issue 15).
//!
//! Over the bundled pack (with some generated policies whose residuals no
//! filter condition can say), random consents from the vocabulary, random
//! records of one patient and random requests: every record the filter
//! admits is Allowed by `decide_with`; when the filter is exact, every
//! record it leaves out is not; `always` and `never` agree with every
//! record; and an allowed search of the patient carries a filter (or, when
//! its only exclusions are labels, the `redact` obligations) that lets
//! through exactly the records the searcher may read.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::LazyLock;

use consentry_engine::cedar_policy::{EntityTypeName, EntityUid};
use consentry_engine::consent::Consent;
use consentry_engine::{
    ConsentPartition, ConsentVersion, DecisionOptions, DecisionRequest, EntityStore, EvaluationTime,
    FILTER_OBLIGATION, ForbidErrors, PlanKind, PlanRequest, PolicyBundle, RecordFacts, SchemaSource,
    SpecialCategories, UnreadableConsent, decide_with, plan,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const TRANSFERS: &str = include_str!("../../policies/transfers.cedar");
const SPECIAL: &str = include_str!("../../policies/special-categories.json");
const NOW: &str = "2026-06-01T12:00:00Z";
const PATIENT: &str = "p-1";
const RECORDS: usize = 6;

/// Policies a privacy team might add, which pass strict validation: the
/// first errors for some records, the next two (a permit and a forbid)
/// cannot be written as filter conditions, the last two can.
const EXTRA: [&str; 5] = [
    r#"@id("extra-overflow") forbid(principal, action, resource is Record)
       when { 9223372036854775807 + (if resource.labels.contains("HIV") then 1 else 0) < 0 };"#,
    r#"@id("extra-like") @opens_labels("") permit(principal in Organization::"st-mary", action == Action::"read", resource is Record)
       when { context has purpose && context.purpose == "TREAT" && resource.resourceType like "Doc*" };"#,
    r#"@id("extra-empty") forbid(principal, action == Action::"update", resource is Record)
       when { resource.labels.isEmpty() };"#,
    r#"@id("extra-lab") @opens_labels("") permit(principal in Organization::"city-lab", action == Action::"read", resource is Record)
       when { context has purpose && context.purpose == "TREAT" && resource has date && resource.date >= datetime("2026-02-01") && resource.date <= datetime("2026-03-01") };"#,
    r#"@id("extra-codes") forbid(principal, action, resource is Record)
       when { resource has codes && resource.codes.containsAny(["glucose", "http://loinc.org|9999-9"]) && resource.confidentiality == "V" };"#,
];

static BUNDLES: LazyLock<Vec<PolicyBundle>> = LazyLock::new(|| {
    let special = SpecialCategories::from_json(SPECIAL).unwrap();
    (0..(1u32 << EXTRA.len()))
        .map(|mask| {
            let extra: Vec<&str> =
                EXTRA.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| *p).collect();
            let text = format!("{PACK}\n{TRANSFERS}\n{}", extra.join("\n"));
            PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), &text, &[])
                .unwrap()
                .with_special_categories(special.clone())
        })
        .collect()
});

const TYPES: [&str; 4] = ["Observation", "Condition", "MedicationStatement", "DocumentReference"];
const LABELS: [&str; 5] = ["PSY", "HIV", "GDIS", "ETH", "R"];
const CODES: [&str; 3] = ["http://loinc.org|2345-7", "http://hl7.org/fhir/sid/icd-10|F32.1", "glucose"];
const DATES: [&str; 5] = [
    "2025-12-31T23:30:00Z",
    "2026-01-01T00:00:00Z",
    "2026-02-15T00:00:00Z",
    "2026-03-01T00:00:00Z",
    "2026-05-01T00:00:00Z",
];

#[derive(Debug, Clone)]
struct Record {
    kind: &'static str,
    labels: BTreeSet<&'static str>,
    confidentiality: &'static str,
    codes: Option<BTreeSet<&'static str>>,
    date: Option<&'static str>,
}

fn record() -> impl Strategy<Value = Record> {
    (
        prop::sample::select(TYPES.to_vec()),
        prop::sample::subsequence(LABELS.to_vec(), 0..3),
        prop::sample::select(vec!["N", "N", "R", "V"]),
        prop::option::of(prop::sample::subsequence(CODES.to_vec(), 0..3)),
        prop::option::of(prop::sample::select(DATES.to_vec())),
    )
        .prop_map(|(kind, labels, confidentiality, codes, date)| Record {
            kind,
            labels: labels.into_iter().collect(),
            confidentiality,
            codes: codes.map(|c| c.into_iter().collect()),
            date,
        })
}

/// One provision's conditions, as FHIR R4 JSON fields: with `who`, the odds
/// of naming actors, purposes, actions and periods; with `what`, those of
/// naming records (labels, classes, codes, data periods, instances).
fn conditions(who: f64, what: f64) -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let actor = prop::option::weighted(
        who,
        prop::sample::select(vec![
            "Organization/st-mary",
            "Organization/st-mary",
            "Practitioner/dr-weber",
            "Practitioner/dr-ali",
            "CareTeam/cardiology",
            "Organization/city-lab",
        ]),
    );
    let purpose = prop::option::weighted(
        who * 0.6,
        prop::sample::select(vec!["TREAT", "TREAT", "TREAT", "TREAT", "ETREAT", "HRESCH", "HMARKT"]),
    );
    let action =
        prop::option::weighted(who * 0.3, prop::sample::select(vec!["access", "access", "use", "correct"]));
    let labels = prop::option::weighted(what * 0.5, prop::sample::subsequence(LABELS.to_vec(), 1..3));
    let class = prop::option::weighted(what * 0.4, prop::sample::subsequence(TYPES[..3].to_vec(), 1..3));
    let code = prop::option::weighted(what * 0.35, prop::sample::select(CODES.to_vec()));
    let data_period = prop::option::weighted(
        what * 0.35,
        prop::sample::select(vec![
            (Some("2026-01-01"), None),
            (None, Some("2026-03-01")),
            (Some("2026-01-01"), Some("2026-03-01")),
        ]),
    );
    let period = prop::option::weighted(
        who * 0.3,
        prop::sample::select(vec![
            (Some("2026-01-01"), None),
            (None, Some("2026-03-01")),
            (Some("2026-09-01"), None),
        ]),
    );
    let data = prop::option::weighted(what * 0.2, 0..RECORDS);
    (actor, purpose, action, labels, class, code, data_period, period, data).prop_map(
        |(actor, purpose, action, labels, class, code, data_period, period, data)| {
            let mut fields = serde_json::Map::new();
            if let Some(actor) = actor {
                fields.insert("actor".into(), json!([{"reference": {"reference": actor}}]));
            }
            if let Some(purpose) = purpose {
                fields.insert("purpose".into(), json!([{"code": purpose}]));
            }
            if let Some(action) = action {
                fields.insert("action".into(), json!([{"coding": [{"code": action}]}]));
            }
            if let Some(labels) = labels {
                let codes: Vec<Value> = labels.iter().map(|l| json!({"code": l})).collect();
                fields.insert("securityLabel".into(), Value::Array(codes));
            }
            if let Some(class) = class {
                let codes: Vec<Value> = class
                    .iter()
                    .map(|c| json!({"system": "http://hl7.org/fhir/resource-types", "code": c}))
                    .collect();
                fields.insert("class".into(), Value::Array(codes));
            }
            if let Some(code) = code {
                let coding = match code.split_once('|') {
                    Some((system, code)) => json!({"system": system, "code": code}),
                    None => json!({"code": code}),
                };
                fields.insert("code".into(), json!([{"coding": [coding]}]));
            }
            let window = |(start, end): (Option<&str>, Option<&str>)| {
                let mut period = serde_json::Map::new();
                if let Some(start) = start {
                    period.insert("start".into(), json!(start));
                }
                if let Some(end) = end {
                    period.insert("end".into(), json!(end));
                }
                Value::Object(period)
            };
            if let Some(bounds) = data_period {
                fields.insert("dataPeriod".into(), window(bounds));
            }
            if let Some(bounds) = period {
                fields.insert("period".into(), window(bounds));
            }
            if let Some(n) = data {
                let reference = format!("Observation/rec-{n}");
                fields.insert(
                    "data".into(),
                    json!([{"meaning": "instance", "reference": {"reference": reference}}]),
                );
            }
            fields
        },
    )
}

/// An R4 consent: a root with up to two exceptions, each with up to one of its own.
fn consent() -> impl Strategy<Value = Value> {
    let child = (conditions(0.25, 0.9), prop::option::weighted(0.3, conditions(0.5, 0.6)));
    (prop::bool::weighted(0.85), conditions(0.6, 0.2), prop::collection::vec(child, 0..3)).prop_map(
        |(permit, root, children)| {
            let effect = |permit: bool| if permit { "permit" } else { "deny" };
            let mut provision = root;
            provision.insert("type".into(), json!(effect(permit)));
            let nested: Vec<Value> = children
                .into_iter()
                .map(|(mut child, grandchild)| {
                    child.insert("type".into(), json!(effect(!permit)));
                    if let Some(mut grandchild) = grandchild {
                        grandchild.insert("type".into(), json!(effect(permit)));
                        child.insert("provision".into(), json!([grandchild]));
                    }
                    Value::Object(child)
                })
                .collect();
            if !nested.is_empty() {
                provision.insert("provision".into(), Value::Array(nested));
            }
            json!({"resourceType": "Consent", "status": "active",
                   "patient": {"reference": format!("Patient/{PATIENT}")}, "provision": provision})
        },
    )
}

#[derive(Debug, Clone)]
struct Ask {
    principal: &'static str,
    action: &'static str,
    purpose: Option<&'static str>,
    justification: bool,
}

fn ask() -> impl Strategy<Value = Ask> {
    let weber = Just(r#"Practitioner::"dr-weber""#);
    let anyone = prop::sample::select(vec![
        r#"Practitioner::"dr-ali""#,
        r#"Practitioner::"dr-ali""#,
        r#"Practitioner::"dr-rao""#,
        r#"Practitioner::"dr-chen""#,
        r#"Organization::"st-mary""#,
        r#"Organization::"st-mary""#,
        r#"Organization::"city-lab""#,
        r#"Patient::"p-1""#,
        r#"Patient::"p-2""#,
        r#"RelatedPerson::"rp-1""#,
    ]);
    let treat = Just("TREAT");
    let purpose = prop::sample::select(vec!["ETREAT", "BTG", "BTG", "HRESCH", "HMARKT", "PATRQT", "PWATRNY"]);
    (
        prop_oneof![weber, anyone],
        prop::sample::select(vec!["read", "read", "read", "search", "update"]),
        prop::option::weighted(0.9, prop_oneof![treat, purpose]),
        any::<bool>(),
    )
        .prop_map(|(principal, action, purpose, justification)| Ask {
            principal,
            action,
            purpose,
            justification,
        })
}

fn entities(records: &[Record], restricted: Option<bool>, objects: bool) -> Value {
    let org = |id: &str, kind: &str, country: &str| json!({"uid": {"type": "Organization", "id": id}, "attrs": {"kind": kind, "country": country}, "parents": []});
    let practitioner = |id: &str, org: &str, extra: Vec<Value>| {
        let mut parents = vec![json!({"type": "Organization", "id": org})];
        parents.extend(extra);
        json!({"uid": {"type": "Practitioner", "id": id},
               "attrs": {"role": "physician", "organization": {"type": "Organization", "id": org}}, "parents": parents})
    };
    let mut patient = serde_json::Map::new();
    if let Some(restricted) = restricted {
        patient.insert("restricted".into(), json!(restricted));
    }
    if objects {
        patient.insert("objections".into(), json!(["research"]));
    }
    let mut all = vec![
        org("st-mary", "hospital", "DE"),
        org("city-lab", "lab", "DE"),
        org("euro-research", "research", "NL"),
        org("mumbai-clinic", "practice", "IN"),
        json!({"uid": {"type": "Group", "id": "break-glass"}, "attrs": {}, "parents": []}),
        json!({"uid": {"type": "CareTeam", "id": "cardiology"}, "attrs": {}, "parents": [{"type": "Organization", "id": "st-mary"}]}),
        practitioner("dr-weber", "st-mary", vec![json!({"type": "CareTeam", "id": "cardiology"})]),
        practitioner("dr-ali", "st-mary", vec![json!({"type": "Group", "id": "break-glass"})]),
        practitioner("dr-rao", "mumbai-clinic", vec![]),
        practitioner("dr-chen", "euro-research", vec![]),
        json!({"uid": {"type": "Patient", "id": PATIENT}, "attrs": patient, "parents": []}),
        json!({"uid": {"type": "Patient", "id": "p-2"}, "attrs": {}, "parents": []}),
        json!({"uid": {"type": "RelatedPerson", "id": "rp-1"}, "attrs": {"represents": [{"type": "Patient", "id": PATIENT}]}, "parents": []}),
    ];
    for (n, record) in records.iter().enumerate() {
        let mut attrs = json!({
            "patient": {"type": "Patient", "id": PATIENT},
            "resourceType": record.kind,
            "labels": record.labels,
            "confidentiality": record.confidentiality,
        });
        if let Some(codes) = &record.codes {
            attrs["codes"] = json!(codes);
        }
        if let Some(date) = record.date {
            attrs["date"] = json!(date);
        }
        all.push(json!({"uid": {"type": "Record", "id": format!("rec-{n}")}, "attrs": attrs,
                        "parents": [{"type": "Patient", "id": PATIENT}]}));
    }
    Value::Array(all)
}

fn facts(n: usize, record: &Record) -> RecordFacts {
    RecordFacts {
        id: format!("rec-{n}"),
        resource_type: record.kind.to_owned(),
        labels: record.labels.iter().map(|l| (*l).to_owned()).collect(),
        confidentiality: record.confidentiality.to_owned(),
        codes: record.codes.as_ref().map(|c| c.iter().map(|c| (*c).to_owned()).collect()),
        date: record.date.map(|d| EvaluationTime::parse(d).unwrap().unix_millis()),
    }
}

fn context(ask: &Ask) -> Value {
    let mut context = serde_json::Map::new();
    if let Some(purpose) = ask.purpose {
        context.insert("purpose".into(), json!(purpose));
    }
    if ask.justification {
        context.insert("justification".into(), json!("unconscious on arrival"));
    }
    Value::Object(context)
}

fn uid(text: &str) -> EntityUid {
    EntityUid::from_str(text).unwrap()
}

fn decision_request(ask: &Ask, action: &str, resource: &str) -> DecisionRequest {
    let mut request =
        DecisionRequest::new(uid(ask.principal), uid(&format!("Action::\"{action}\"")), uid(resource));
    request.context = Some(context(ask));
    request.now = Some(EvaluationTime::parse(NOW).unwrap());
    request
}

/// `PROPTEST_CASES` when set, for a longer local run, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn a_plan_admits_only_allowed_records_and_exactly_them_when_exact(
        which in 0..(1usize << EXTRA.len()),
        consents in prop::collection::vec(consent(), 1..4),
        records in prop::collection::vec(record(), RECORDS),
        restricted in prop::option::weighted(0.3, prop::bool::weighted(0.3)),
        objects in prop::bool::weighted(0.2),
        set_aside in prop::bool::weighted(0.15),
        skip_errors in prop::bool::weighted(0.2),
        ask in ask(),
    ) {
        let bundle = &BUNDLES[which];
        let store = EntityStore::from_json(&entities(&records, restricted, objects), bundle.schema()).unwrap();
        let parsed: Vec<(String, Consent)> = consents
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Consent::from_json(c).ok().map(|c| (format!("c-{i}"), c)))
            .collect();
        let versions: Vec<ConsentVersion<'_>> =
            parsed.iter().map(|(id, consent)| ConsentVersion { id, version: 1, consent }).collect();
        let unreadable = if set_aside {
            vec![UnreadableConsent { id: "c-old".into(), version: 1, reason: "stored under older rules".into() }]
        } else {
            Vec::new()
        };
        let partition = ConsentPartition::build_setting_aside(bundle, PATIENT, &versions, unreadable).unwrap();
        let mut options = DecisionOptions::default();
        if skip_errors {
            options.forbid_errors = ForbidErrors::Skip;
        }
        let request = PlanRequest {
            principal: uid(ask.principal),
            action: uid(&format!("Action::\"{}\"", ask.action)),
            resource_type: EntityTypeName::from_str("Record").unwrap(),
            patient: Some(uid(&format!("Patient::\"{PATIENT}\""))),
            context: Some(context(&ask)),
            now: Some(EvaluationTime::parse(NOW).unwrap()),
        };
        let planned = plan(bundle, Some(&partition), &store, &request, &options).unwrap();
        for (n, record) in records.iter().enumerate() {
            let asked = decision_request(&ask, ask.action, &format!("Record::\"rec-{n}\""));
            let decision = decide_with(bundle, &[&partition], &store, &asked, &options).unwrap();
            let admitted = planned.filter.admits(&facts(n, record));
            prop_assert!(!admitted || decision.is_allowed(),
                "admitted rec-{n} {record:?} but {}\nplan: {}", decision.summary(), serde_json::to_string(&planned).unwrap());
            if planned.filter.exact {
                prop_assert!(admitted || !decision.is_allowed(),
                    "left out rec-{n} {record:?}, allowed by {}\nplan: {}", decision.summary(), serde_json::to_string(&planned).unwrap());
            }
            match planned.kind {
                PlanKind::Always => prop_assert!(decision.is_allowed(), "always, but {}", decision.summary()),
                PlanKind::Never => prop_assert!(!decision.is_allowed(), "never, but {}", decision.summary()),
                PlanKind::Conditional => {}
            }
        }
        // A search of the whole patient returns what the searcher may read, and nothing else.
        let search = decision_request(&ask, "search", &format!("Patient::\"{PATIENT}\""));
        let searched = decide_with(bundle, &[&partition], &store, &search, &options).unwrap();
        if searched.is_allowed() {
            // The filter, or when there is none, the labels to redact.
            let filter = searched.obligations.iter().find(|o| o.id == FILTER_OBLIGATION).and_then(|o| o.filter.clone());
            let redacted: BTreeSet<&str> = searched
                .obligations
                .iter()
                .filter(|o| o.id == "redact")
                .flat_map(|o| o.values.iter().map(String::as_str))
                .collect();
            for (n, record) in records.iter().enumerate() {
                let returned = match &filter {
                    Some(filter) => filter.admits(&facts(n, record)),
                    None => record.labels.is_disjoint(&redacted),
                };
                let read = decision_request(&ask, "read", &format!("Record::\"rec-{n}\""));
                let readable = decide_with(bundle, &[&partition], &store, &read, &options).unwrap().is_allowed();
                prop_assert_eq!(returned, readable, "rec-{} {:?}: search filter {:?}", n, record, filter);
            }
        }
    }
}

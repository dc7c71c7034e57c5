//! A consent that is accepted is a consent that can be decided (issue 13,
//! finding 8): for generated consents (long lists, deep nesting, periods,
//! labels, every attribute), whenever parsing and the write path's check
//! accept one, every decision about its patient runs without a crash and
//! without an evaluation error. Consents beyond the limits must be refused
//! with an error, never a crash.

use consentry_engine::check_consent;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

/// Mostly short lists; now and then one near or beyond the size limits.
fn list_len() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 1usize..4, 1 => 300usize..1_100]
}

/// `count` values: the first few from `known` (so they match the test store), then made up.
fn values(known: &[&str], made_up: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| known.get(i).map_or_else(|| format!("{made_up}-{i}"), |k| (*k).to_owned())).collect()
}

fn period() -> impl Strategy<Value = Value> {
    select(vec![
        json!({"start": "2026-01-01", "end": "2026-12-31"}),
        json!({"start": "2026-06-01T12:00:00Z"}),
        json!({"end": "2026-03"}),
        json!({"start": "2025", "end": "2027-01-01T00:00:00+14:00"}),
    ])
}

fn coded(codes: Vec<String>) -> Value {
    Value::Array(codes.into_iter().map(|code| json!({"code": code})).collect())
}

/// One provision's own attributes (its `type` and children are set later).
fn attributes() -> impl Strategy<Value = Value> {
    let lists = (
        option::weighted(0.4, list_len()),
        option::weighted(0.3, list_len()),
        option::weighted(0.3, list_len()),
        option::weighted(0.2, list_len()),
        option::weighted(0.2, 1usize..4),
    );
    let others = (
        option::weighted(0.2, 1usize..3),
        option::weighted(0.2, period()),
        option::weighted(0.2, period()),
        option::weighted(0.4, proptest::collection::btree_set(0usize..3, 1..3)),
        any::<bool>(),
    );
    (lists, others).prop_map(
        |((actors, purposes, labels, codes, data), (types, period, data_period, actions, role))| {
            let mut provision = json!({});
            if let Some(count) = actors {
                let known = [
                    "Practitioner/dr-lang",
                    "Organization/hospital",
                    "CareTeam/team-a",
                    "Group/break-glass",
                    "RelatedPerson/rp-1",
                    "Patient/p-100",
                ];
                let refs = values(&known, "Practitioner/x", count);
                let listed: Vec<Value> = refs
                    .into_iter()
                    .enumerate()
                    .map(|(i, r)| {
                        if role && i == 0 {
                            json!({"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": r}})
                        } else {
                            json!({"reference": {"reference": r}})
                        }
                    })
                    .collect();
                provision["actor"] = Value::Array(listed);
            }
            if let Some(count) = purposes {
                provision["purpose"] = coded(values(&["TREAT", "ETREAT", "HMARKT", "BTG"], "P", count));
            }
            if let Some(count) = labels {
                provision["securityLabel"] = coded(values(&["PSY", "R", "HIV"], "L", count));
            }
            if let Some(count) = codes {
                let codes = values(&["glucose"], "C", count);
                provision["code"] = json!([{"coding": coded(codes)}]);
            }
            if let Some(count) = data {
                let refs = values(&["Observation/lab-1", "Condition/psy-1"], "Observation/o", count);
                provision["data"] = Value::Array(
                    refs.into_iter()
                        .map(|r| json!({"meaning": "instance", "reference": {"reference": r}}))
                        .collect(),
                );
            }
            if let Some(count) = types {
                provision["class"] =
                    coded(values(&["Observation", "Condition"], "Observation", count.min(2)));
            }
            if let Some(period) = period {
                provision["period"] = period;
            }
            if let Some(period) = data_period {
                provision["dataPeriod"] = period;
            }
            if let Some(actions) = actions {
                let codes = ["access", "collect", "correct"];
                let named: Vec<Value> = actions
                    .into_iter()
                    .filter_map(|i| codes.get(i))
                    .map(|c| json!({"coding": [{"code": c}]}))
                    .collect();
                provision["action"] = Value::Array(named);
            }
            provision
        },
    )
}

/// A tree of provisions, up to a level beyond the nesting limit.
fn tree() -> impl Strategy<Value = Value> {
    attributes().prop_recursive(8, 40, 3, |inner| {
        (attributes(), proptest::collection::vec(inner, 0..3)).prop_map(|(mut provision, children)| {
            if !children.is_empty() {
                provision["provision"] = Value::Array(children);
            }
            provision
        })
    })
}

/// Gives every provision the `type` its place in the tree requires.
fn set_types(provision: &mut Value, effect: &str) {
    provision["type"] = json!(effect);
    let flipped = if effect == "permit" { "deny" } else { "permit" };
    if let Some(children) = provision.get_mut("provision").and_then(Value::as_array_mut) {
        children.iter_mut().for_each(|child| set_types(child, flipped));
    }
}

fn consent_value(r5: bool, permit: bool, mut root: Value) -> Value {
    let decision = if permit { "permit" } else { "deny" };
    set_types(&mut root, decision);
    if r5 {
        let flipped = if permit { "deny" } else { "permit" };
        let mut provisions = match root.get_mut("provision").map(Value::take) {
            Some(Value::Array(children)) => children,
            _ => Vec::new(),
        };
        provisions.iter_mut().for_each(|p| set_types(p, flipped));
        let mut value = json!({"resourceType": "Consent", "status": "active",
                               "subject": {"reference": "Patient/p-100"}, "decision": decision});
        if !provisions.is_empty() {
            value["provision"] = Value::Array(provisions);
        }
        value
    } else {
        json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
               "provision": root})
    }
}

const PRINCIPALS: [&str; 6] = [
    "Practitioner::\"dr-lang\"",
    "Practitioner::\"er-doc\"",
    "Practitioner::\"x-7\"",
    "Organization::\"hospital\"",
    "Patient::\"p-100\"",
    "RelatedPerson::\"rp-1\"",
];
const ACTIONS: [&str; 5] = ["read", "search", "create", "update", "delete"];
const RESOURCES: [&str; 4] =
    ["Patient::\"p-100\"", "Record::\"lab-1\"", "Record::\"psy-1\"", "Record::\"secret-1\""];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn finding_08_a_consent_that_is_accepted_can_be_decided(r5 in any::<bool>(), permit in any::<bool>(), root in tree()) {
        let value = consent_value(r5, permit, root);
        let Ok(c) = Consent::from_json(&value) else { return Ok(()) };
        let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), "", &[]).unwrap();
        if check_consent(&bundle, "c-p", 1, &c).is_err() {
            return Ok(());
        }
        let (_, compiled) = policies(&[(&c, "c-p", 1)]);
        for principal in PRINCIPALS {
            for action in ACTIONS {
                for resource in RESOURCES {
                    for purpose in ["TREAT", "HMARKT"] {
                        // `authorize` fails the test on any evaluation error.
                        let decision = authorize(&compiled, &ask(principal, action, resource, Some(purpose)));
                        prop_assert!(!(action == "delete" && decision.is_allowed() && principal != "Patient::\"p-100\""),
                            "no consent grants delete: {value}");
                    }
                }
            }
        }
    }
}

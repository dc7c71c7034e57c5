//! Long lists compile into shapes that do not nest deeply, and a consent
//! beyond the size limits is refused naming the limit and the field, so a
//! consent that is accepted can be decided (issue 13, finding 8: about 430
//! actors or 500 purposes or labels overflowed the stack on the first
//! decision about the patient).

use consentry_engine::check_consent;
use consentry_engine::consent::{
    MAX_COMPILED_VALUES, MAX_CONSENT_VALUES, MAX_LIST_VALUES, MAX_NESTING, MAX_PROVISIONS,
};

use super::*;

fn actors(count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| match i % 3 {
            0 => json!({"reference": {"reference": format!("Organization/org-{i}")}}),
            _ => json!({"reference": {"reference": format!("Practitioner/dr-{i}")}}),
        })
        .collect()
}

fn codes(prefix: &str, count: usize) -> Vec<Value> {
    (0..count).map(|i| json!({"code": format!("{prefix}-{i}")})).collect()
}

#[test]
fn finding_08_a_consent_with_a_thousand_actors_is_decided() {
    let mut listed = actors(MAX_LIST_VALUES - 2);
    listed.push(json!({"reference": {"reference": "Practitioner/dr-weber"}}));
    listed.push(json!({"reference": {"reference": "Organization/hospital"}}));
    // R5 "deny everyone except these": the exceptions are a permit.
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-long", "status": "active",
        "subject": {"reference": "Patient/p-100"}, "decision": "deny",
        "provision": [{"actor": listed, "purpose": codes("P", 500).into_iter()
            .chain([json!({"code": "TREAT"})]).collect::<Vec<_>>()}]
    }));
    let (text, compiled) = policies(&[(&c, "c-long", 1)]);
    assert!(text.contains("principal in [Organization::\"org-0\""), "collectives in one set literal");
    assert!(text.contains("principal is Practitioner && [Practitioner::\"dr-1\""), "singles too");
    assert!(text.contains("].contains(context.purpose)"), "purposes in one set literal");
    let lab = "Record::\"lab-1\"";
    for who in ["Practitioner::\"dr-weber\"", "Practitioner::\"dr-lang\""] {
        assert_eq!(decision(&compiled, &ask(who, "read", lab, Some("TREAT"))), Decision::Allow, "{who}");
    }
    let other = "Practitioner::\"dr-other\"";
    assert_eq!(determining(&compiled, &ask(other, "read", lab, Some("TREAT"))), ["consent/c-long/v1/root"]);
}

#[test]
fn finding_08_long_label_code_and_data_lists_are_decided() {
    let mut labels = codes("L", 600);
    labels.push(json!({"system": ACT_CODE, "code": "PSY"}));
    let data: Vec<Value> = (0..300)
        .map(|i| json!({"meaning": "instance", "reference": {"reference": format!("Observation/o-{i}")}}))
        .chain([json!({"meaning": "instance", "reference": {"reference": "Observation/hiv-1"}})])
        .collect();
    let c = consent(json!({
        "resourceType": "Consent", "id": "c-long", "status": "active",
        "patient": {"reference": "Patient/p-100"},
        "provision": {"type": "permit", "actor": [{"reference": {"reference": "Organization/hospital"}}],
            "class": [{"code": "Observation"}, {"code": "Condition"}],
            "provision": [
                {"type": "deny", "securityLabel": labels},
                {"type": "deny", "data": data},
                {"type": "deny", "code": [{"coding": codes("C", 400)}]}
            ]}
    }));
    let (_, compiled) = policies(&[(&c, "c-long", 1)]);
    let lang = "Practitioner::\"dr-lang\"";
    assert_eq!(decision(&compiled, &ask(lang, "read", "Record::\"lab-1\"", Some("TREAT"))), Decision::Allow);
    for excluded in ["Record::\"psy-1\"", "Record::\"hiv-1\""] {
        assert_eq!(
            decision(&compiled, &ask(lang, "read", excluded, Some("TREAT"))),
            Decision::Deny,
            "{excluded}"
        );
    }
}

/// An R4 permit whose root holds `root`, with `children` nested provisions.
fn r4(root: Value, children: Vec<Value>) -> Value {
    let mut provision = json!({"type": "permit"});
    for (key, value) in root.as_object().unwrap() {
        provision[key] = value.clone();
    }
    if !children.is_empty() {
        provision["provision"] = Value::Array(children);
    }
    json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/p-100"},
           "provision": provision})
}

#[test]
fn finding_08_a_consent_beyond_the_limits_is_refused_naming_the_limit() {
    let refused = |value: Value| Consent::from_json(&value).unwrap_err();

    let error = refused(r4(json!({"actor": actors(MAX_LIST_VALUES + 1)}), vec![]));
    assert_eq!(error.path, "provision.actor");
    assert!(error.message.contains(&format!("the limit is {MAX_LIST_VALUES} values in one list")), "{error}");

    let half = MAX_CONSENT_VALUES / 2;
    let error = refused(r4(
        json!({"actor": actors(1), "purpose": codes("P", half), "securityLabel": codes("L", half)}),
        vec![],
    ));
    assert_eq!(error.path, "provision.securityLabel");
    assert!(error.message.contains(&format!("more than {MAX_CONSENT_VALUES} values")), "{error}");

    let mut nested: Option<Value> = None;
    for level in (1..=MAX_NESTING + 1).rev() {
        let kind = if level % 2 == 1 { "deny" } else { "permit" };
        let mut node = json!({"type": kind, "purpose": [{"code": "TREAT"}]});
        if let Some(inner) = nested.take() {
            node["provision"] = json!([inner]);
        }
        nested = Some(node);
    }
    let error = refused(r4(json!({}), nested.into_iter().collect()));
    assert!(error.path.ends_with(".provision[0]"), "{error}");
    assert!(error.message.contains(&format!("the limit is {MAX_NESTING}")), "{error}");

    let many = (0..MAX_PROVISIONS).map(|i| json!({"type": "deny", "purpose": [{"code": format!("P{i}")}]}));
    let error = refused(r4(json!({}), many.collect()));
    assert_eq!(error.path, format!("provision.provision[{}]", MAX_PROVISIONS - 1));
    assert!(error.message.contains(&format!("at most {MAX_PROVISIONS} provisions")), "{error}");
}

/// Decides every request of the test's principals, actions and resources.
fn decide_all(compiled: &Compiled) {
    for principal in ["Practitioner::\"dr-lang\"", "Practitioner::\"dr-1\"", "Patient::\"p-100\""] {
        for action in ["read", "search", "update", "delete"] {
            for resource in ["Record::\"psy-1\"", "Record::\"lab-1\"", "Patient::\"p-100\""] {
                authorize(compiled, &ask(principal, action, resource, Some("TREAT")));
            }
        }
    }
}

#[test]
fn finding_08_the_largest_consents_the_limits_accept_are_decided() {
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), "", &[]).unwrap();
    // Wide: a full list of actors, and an exception with a list nearly as long.
    let root = json!({"actor": actors(MAX_LIST_VALUES - 1).into_iter()
        .chain([json!({"reference": {"reference": "Organization/hospital"}})]).collect::<Vec<_>>()});
    let wide =
        consent(r4(root, vec![json!({"type": "deny", "securityLabel": codes("L", MAX_LIST_VALUES - 1)})]));
    // Deep: as many provisions as allowed, nested as deep as allowed.
    let leaves = MAX_PROVISIONS - MAX_NESTING;
    let deepest_kind = if MAX_NESTING % 2 == 1 { "deny" } else { "permit" };
    let mut level_nodes: Vec<Value> = (0..leaves)
        .map(|i| json!({"type": deepest_kind, "securityLabel": codes(&format!("L{i}"), 20)}))
        .collect();
    for level in (1..MAX_NESTING).rev() {
        let kind = if level % 2 == 1 { "deny" } else { "permit" };
        let node = json!({"type": kind, "purpose": [{"code": format!("P{level}")}, {"code": "TREAT"}],
                          "provision": level_nodes});
        level_nodes = vec![node];
    }
    let deep = consent(r4(json!({"actor": actors(30)}), level_nodes));
    for (id, c) in [("c-wide", &wide), ("c-deep", &deep)] {
        check_consent(&bundle, id, 1, c).unwrap();
        let (_, compiled) = policies(&[(c, id, 1)]);
        decide_all(&compiled);
    }
}

#[test]
fn finding_08_a_long_list_repeated_by_many_provisions_is_refused() {
    let root = json!({"actor": actors(MAX_LIST_VALUES)});
    let children = (0..5).map(|i| json!({"type": "deny", "securityLabel": [{"code": format!("L{i}")}]}));
    let error = Consent::from_json(&r4(root, children.collect())).unwrap_err();
    assert_eq!(error.path, "provision.provision[4]");
    assert!(error.message.contains(&format!("more than {MAX_COMPILED_VALUES} values")), "{error}");
}

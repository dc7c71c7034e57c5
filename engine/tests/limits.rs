//! Limits on depth and size (finding 9 of issue 13): text deep enough to
//! overflow the stack in Cedar's recursive parser, its JSON forms or its
//! evaluator is refused, naming the limit, before Cedar sees it; and the
//! deepest text each limit accepts loads and evaluates in half the default
//! 2 MiB thread stack, which is the safety factor the limits keep.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use consentry_engine::limits::{
    self, Limit, LimitExceeded, MAX_EXPRESSION_DEPTH, MAX_POLICIES, MAX_POLICY_TEXT_BYTES,
    MAX_TEMPLATE_LINKS, MAX_VALUE_DEPTH,
};
use consentry_engine::{
    DecisionOptions, DecisionRequest, EntityStore, LoadError, Outcome, PolicyBundle, RequestErrorKind,
    SchemaSource, TemplateLink, check_request_entities, decide_with, parse_uid,
};
use serde_json::{Value, json};

/// Half of the 2 MiB that tokio's workers and test threads get.
const HALF_THE_DEFAULT_STACK: usize = 1024 * 1024;

const SCHEMA: &str = "entity E; action read appliesTo { principal: E, resource: E };";

fn in_stack<T: Send + 'static>(bytes: usize, run: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(bytes).spawn(run).unwrap().join().unwrap()
}

fn nest(n: usize, open: &str, inner: &str, close: &str) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

fn chain(terms: usize, term: &str, operator: &str, last: &str) -> String {
    format!("{}{last}", format!("{term}{operator}").repeat(terms.saturating_sub(1)))
}

fn permit_when(condition: &str) -> String {
    format!("permit(principal, action, resource) when {{ {condition} }};")
}

fn limit_of(error: LoadError) -> LimitExceeded {
    match error {
        LoadError::Limit(exceeded) => exceeded,
        other => panic!("expected a limit, got {other}"),
    }
}

fn refused(schema: Option<SchemaSource<'_>>, policies: &str) -> LimitExceeded {
    limit_of(PolicyBundle::load(schema, policies, &[]).unwrap_err())
}

#[test]
fn finding_09_150_nested_parentheses_are_refused_not_a_crash() {
    let exceeded = refused(None, &permit_when(&nest(150, "(", "true", ")")));
    assert_eq!(exceeded.limit, Limit::ExpressionDepth);
    let message = LoadError::Limit(exceeded).to_string();
    assert!(message.contains("policy 1 (line 1)") && message.contains("`expression_depth`"), "{message}");
}

#[test]
fn finding_09_a_1000_term_or_is_refused_not_a_crash() {
    let text = format!(
        "permit(principal, action, resource);\n{}",
        permit_when(&chain(1000, "false", " || ", "true"))
    );
    let exceeded = refused(Some(SchemaSource::CedarText(SCHEMA)), &text);
    assert_eq!(exceeded.limit, Limit::ExpressionDepth);
    assert_eq!(exceeded.place, "policy 2 (line 2)");
    let problems = LoadError::Limit(exceeded).problems();
    assert!(problems[0].offset.is_some_and(|offset| offset > text.find('\n').unwrap()), "{problems:?}");
}

#[test]
fn finding_09_a_schema_with_1000_nested_records_is_refused_not_a_crash() {
    let text = format!(
        "entity E {{ a: {} }}; action read appliesTo {{ principal: E, resource: E }};",
        nest(1000, "{ a: ", "Long", " }")
    );
    let exceeded = refused(Some(SchemaSource::CedarText(&text)), "permit(principal, action, resource);");
    assert_eq!(exceeded.limit, Limit::SchemaNesting);
    assert!(exceeded.to_string().contains("`schema_nesting`"), "{exceeded}");
    let sets = format!("entity E {{ a: {} }};", nest(1000, "Set<", "Long", ">"));
    assert_eq!(refused(Some(SchemaSource::CedarText(&sets)), "").limit, Limit::SchemaNesting);
}

#[test]
fn finding_09_a_json_schema_with_nested_records_is_refused_not_a_crash() {
    // Nested as deep as serde_json parses (128 levels): over the schema limit.
    let mut shape = json!({"type": "Long"});
    for _ in 0..60 {
        shape = json!({"type": "Record", "attributes": {"a": shape}});
    }
    let schema = json!({"": {"entityTypes": {"E": {"shape": shape}}, "actions": {}}}).to_string();
    let exceeded = refused(Some(SchemaSource::Json(&schema)), "permit(principal, action, resource);");
    assert_eq!(exceeded.limit, Limit::SchemaJsonDepth);
}

/// A condition that is true, built with a given number of levels.
type Shape = fn(usize) -> String;

/// Shapes of deep conditions, by name.
fn deep_conditions() -> Vec<(&'static str, Shape)> {
    vec![
        ("parentheses", |n| nest(n, "(", "true", ")")),
        ("or", |n| chain(n, "false", " || ", "true")),
        ("and", |n| chain(n, "true", " && ", "true")),
        ("sum", |n| format!("{} == {n}", chain(n, "1", " + ", "1"))),
        ("sets", |n| format!("{} == {}", nest(n, "[", "1", "]"), nest(n, "[", "1", "]"))),
        ("records", |n| format!("{} has a", nest(n, "{a: ", "true", "}"))),
        ("conditionals", |n| chain(n, "if false then false else ", "", "true")),
        ("members", |n| format!("{}{} == 1", nest(n, "{a: ", "1", "}"), ".a".repeat(n))),
        ("calls", |n| nest(n, "[true].contains(", "true", ")")),
        ("mixed", |n| nest(n, "(false || 1 + 1 == 3 || ", "true", ") && true")),
    ]
}

/// The most levels of `shape` the limit accepts; one more is refused.
fn deepest_accepted(shape: Shape) -> usize {
    let accepted = (1..=MAX_EXPRESSION_DEPTH + 1)
        .take_while(|&n| limits::check_policy_text(&permit_when(&shape(n))).is_ok())
        .last()
        .unwrap();
    assert!(accepted <= MAX_EXPRESSION_DEPTH);
    let over = limits::check_policy_text(&permit_when(&shape(accepted + 1))).unwrap_err();
    assert_eq!(over.limit, Limit::ExpressionDepth);
    accepted
}

fn request(context: Value) -> DecisionRequest {
    let e = parse_uid(&json!("E::\"e\""), "principal").unwrap();
    let mut request =
        DecisionRequest::new(e.clone(), parse_uid(&json!("Action::\"read\""), "action").unwrap(), e);
    request.context = Some(context);
    request
}

fn decide(schema: Option<&str>, policies: &str, entities: &Value) -> (Outcome, Vec<String>) {
    let bundle = PolicyBundle::load(schema.map(SchemaSource::CedarText), policies, &[]).unwrap();
    let store = EntityStore::from_json(entities, bundle.schema()).unwrap();
    let decision =
        decide_with(&bundle, &[], &store, &request(json!({})), &DecisionOptions::default()).unwrap();
    (decision.outcome, decision.errors.into_iter().map(|e| e.message).collect())
}

#[test]
fn the_deepest_policies_accepted_load_and_evaluate_in_half_the_default_stack() {
    for (name, shape) in deep_conditions() {
        let levels = deepest_accepted(shape);
        assert!(levels >= 8, "{name}: only {levels} levels accepted");
        let policy = permit_when(&shape(levels));
        let (outcome, errors) =
            in_stack(HALF_THE_DEFAULT_STACK, move || decide(Some(SCHEMA), &policy, &json!([])));
        assert_eq!((outcome, errors), (Outcome::Allow, Vec::new()), "{name} with {levels} levels");
    }
}

#[test]
fn the_deepest_schema_and_values_accepted_load_and_evaluate_in_half_the_default_stack() {
    let schema_for = |records: usize| {
        format!(
            "entity E {{ a: {} }}; action read appliesTo {{ principal: E, resource: E }};",
            nest(records, "{ a: ", "Long", " }")
        )
    };
    let records = (1..).take_while(|&n| limits::check_schema_text(&schema_for(n)).is_ok()).last().unwrap();
    assert_eq!(limits::check_schema_text(&schema_for(records + 1)).unwrap_err().limit, Limit::SchemaNesting);
    let value = (0..records).fold(json!(1), |inner, _| json!({"a": inner}));
    let entities = json!([{"uid": {"type": "E", "id": "e"}, "attrs": {"a": value}, "parents": []}]);
    let policy =
        permit_when(&format!("resource{} == 1 && resource.a == resource.a", ".a".repeat(records + 1)));
    let schema = schema_for(records);
    let (outcome, errors) =
        in_stack(HALF_THE_DEFAULT_STACK, move || decide(Some(&schema), &policy, &entities));
    assert_eq!((outcome, errors), (Outcome::Allow, Vec::new()));
}

fn nested_sets(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!([inner]))
}

#[test]
fn entity_values_nested_at_the_limit_evaluate_and_deeper_ones_are_refused_naming_the_attribute() {
    let entity =
        |depth| json!([{"uid": {"type": "E", "id": "e"}, "attrs": {"a": nested_sets(depth)}, "parents": []}]);
    let policy = permit_when("resource.a == resource.a");
    let accepted = entity(MAX_VALUE_DEPTH);
    let (outcome, errors) = in_stack(HALF_THE_DEFAULT_STACK, move || decide(None, &policy, &accepted));
    assert_eq!((outcome, errors), (Outcome::Allow, Vec::new()));
    let error = EntityStore::from_json(&entity(MAX_VALUE_DEPTH + 1), None).unwrap_err().to_string();
    assert!(error.contains("[0]: attrs.a:") && error.contains("`value_depth`"), "{error}");
    let tagged = json!([{"uid": {"type": "E", "id": "e"}, "attrs": {}, "parents": [], "tags": {"t": nested_sets(MAX_VALUE_DEPTH + 1)}}]);
    assert!(EntityStore::from_json(&tagged, None).unwrap_err().to_string().contains("tags.t"));
}

#[test]
fn request_contexts_and_entities_nested_over_the_limit_are_refused_before_cedar_sees_them() {
    let bundle = PolicyBundle::load(None, "permit(principal, action, resource);", &[]).unwrap();
    let store = EntityStore::new();
    let options = DecisionOptions::default();
    let deep = request(json!({"history": nested_sets(MAX_VALUE_DEPTH + 1)}));
    let refused = check_request_entities(&store, bundle.schema(), &deep, &options).unwrap_err();
    assert_eq!((refused.kind, refused.field.as_str()), (RequestErrorKind::OverLimit, "context.history"));
    assert!(refused.message.contains("`value_depth`"), "{refused}");
    let fits = request(json!({"history": nested_sets(MAX_VALUE_DEPTH)}));
    assert!(check_request_entities(&store, bundle.schema(), &fits, &options).is_ok());
    let mut sent = request(json!({}));
    sent.entities = vec![
        json!({"uid": {"type": "F", "id": "f"}, "attrs": {"a": nested_sets(MAX_VALUE_DEPTH + 1)}, "parents": []}),
    ];
    let refused = check_request_entities(&store, bundle.schema(), &sent, &options).unwrap_err();
    assert!(refused.message.contains("`value_depth`"), "{refused}");
}

#[test]
fn text_policies_and_links_over_their_size_limits_are_refused_as_too_large() {
    let big = format!(
        "permit(principal, action, resource) when {{ \"{}\" == \"\" }};",
        "x".repeat(MAX_POLICY_TEXT_BYTES)
    );
    let exceeded = refused(None, &big);
    assert_eq!(exceeded.limit, Limit::PolicyTextBytes);
    assert!(exceeded.limit.is_size());
    let many = "permit(principal, action, resource);\n".repeat(MAX_POLICIES + 1);
    let exceeded = refused(None, &many);
    assert_eq!((exceeded.limit, exceeded.place.as_str()), (Limit::Policies, "policy 10001 (line 10001)"));
    assert!(!exceeded.limit.is_size());
    let links: Vec<TemplateLink> = (0..=MAX_TEMPLATE_LINKS)
        .map(|i| TemplateLink { template: "t".into(), id: format!("l{i}"), values: Default::default() })
        .collect();
    let error =
        PolicyBundle::load(None, "permit(principal == ?principal, action, resource);", &links).unwrap_err();
    assert_eq!(limit_of(error).limit, Limit::TemplateLinks);
}

#[test]
fn the_scan_skips_strings_and_comments_and_counts_policies_at_the_top_level() {
    let deep = nest(200, "(", "", ")");
    let text = format!(
        "// {deep}\n@id(\"a;b\") permit(principal, action, resource) when {{ \"{deep} ;\" like \"*\" }};\n\
         permit(principal, action, resource) when {{ {} }};",
        nest(200, "(", "true", ")")
    );
    let exceeded = limits::check_policy_text(&text).unwrap_err();
    assert_eq!(exceeded.place, "policy 2 (line 3)");
}

#[test]
fn the_bundled_pack_and_schema_are_within_the_limits() {
    let pack = [include_str!("../../policies/pack.cedar"), include_str!("../../policies/transfers.cedar")]
        .join("\n");
    assert!(limits::check_policy_text(&pack).is_ok());
    assert!(limits::check_schema_text(include_str!("../../policies/schema.cedarschema")).is_ok());
}

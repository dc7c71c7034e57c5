//! Property tests of the parsers behind the limits (issue 13, "make it
//! permanent"): random and mutated policy text, schema text and entity
//! JSON go through the engine's parsers, and, when accepted, a decision.
//! The invariant is no panic and no abort.
//!
//! A stack overflow aborts the process rather than panicking, so
//! `catch_unwind` cannot see it; instead each case runs in a thread with
//! the default 2 MiB stack, and the generators reach well past the limits
//! (hundreds of brackets and operators), so a limit that let too much
//! through would abort this test binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::disallowed_methods
)] // fixtures are read from disk

use consentry_engine::{
    DecisionOptions, DecisionRequest, EntityStore, PolicyBundle, SchemaSource, decide_with, parse_uid,
};
use proptest::prelude::*;
use serde_json::{Value, json};

const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
const PACK: &str = include_str!("../../policies/pack.cedar");
const ENTITIES: &str = include_str!("../../policies/entities.json");

/// The stack tokio's workers and test threads get.
const DEFAULT_STACK: usize = 2 * 1024 * 1024;

fn in_default_stack(run: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::Builder::new().stack_size(DEFAULT_STACK).spawn(run).unwrap().join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Loads `policies` under `schema`, and when that succeeds decides a
/// treatment read over the bundled entities (or none, when they do not
/// fit). Errors are fine; only a panic or an abort fails.
fn load_and_decide(schema: Option<String>, policies: String) {
    in_default_stack(move || {
        let Ok(bundle) = PolicyBundle::load(schema.as_deref().map(SchemaSource::CedarText), &policies, &[])
        else {
            return;
        };
        let stored: Value = serde_json::from_str(ENTITIES).unwrap();
        let store = EntityStore::from_json(&stored, bundle.schema()).unwrap_or_default();
        let mut request = DecisionRequest::new(
            parse_uid(&json!("Practitioner::\"dr-weber\""), "principal").unwrap(),
            parse_uid(&json!("Action::\"read\""), "action").unwrap(),
            parse_uid(&json!("Record::\"obs-1\""), "resource").unwrap(),
        );
        request.context = Some(json!({"purpose": "TREAT"}));
        let _ = decide_with(&bundle, &[], &store, &request, &DecisionOptions::default());
    });
}

const POLICY_TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "||",
    "&&",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    "+",
    "-",
    "*",
    "!",
    ".",
    ",",
    ":",
    "::",
    ";",
    "a",
    "true",
    "false",
    "1",
    "\"s\"",
    "\"a\\\"b;\"",
    "in",
    "has",
    "like",
    "is",
    "if",
    "then",
    "else",
    "permit",
    "forbid",
    "principal",
    "action",
    "resource",
    "context",
    "when",
    "unless",
    "User",
    "@id(\"x\")",
    "// c )(\n",
    "\n",
    ".contains(",
    "decimal(\"1.0\")",
];

/// Runs of one token: how the generated text gets deep.
fn runs(tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(tokens), 1usize..300), 0..12)
        .prop_map(|runs| runs.into_iter().map(|(token, n)| format!("{token} ").repeat(n)).collect())
}

/// Balanced text of 1 to 300 levels, as the hostile review sent it: nested
/// brackets, calls and conditionals, and long operator chains, mixed.
fn deep() -> impl Strategy<Value = String> {
    let open_close = prop::sample::select(
        &[
            ("(", ")"),
            ("[", "]"),
            ("{a: ", "}"),
            ("[true].contains(", ")"),
            ("(false || ", ")"),
            ("if true then ", " else false"),
            ("!(", ")"),
        ][..],
    );
    let chain = prop::sample::select(&[" || false", " && true", " + 1", ".a", " == true", " in []"][..]);
    prop::collection::vec((open_close, chain, 1usize..300), 1..4).prop_map(|levels| {
        levels.into_iter().fold("true".to_owned(), |inner, ((open, close), operator, n)| {
            let nested = format!("{}{inner}{}", open.repeat(n / 2), close.repeat(n / 2));
            format!("{nested}{}", operator.repeat(n - n / 2))
        })
    })
}

fn soup(tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens), 0..400).prop_map(|tokens| tokens.join(" "))
}

/// `text` with `insert` put at a char boundary near `at` (a fraction of its length).
fn inserted(text: &str, at: f64, insert: &str) -> String {
    let mut position = ((text.len() as f64) * at) as usize;
    while !text.is_char_boundary(position) {
        position -= 1;
    }
    format!("{}{insert}{}", &text[..position], &text[position..])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_policy_text_never_crashes(body in prop_oneof![soup(POLICY_TOKENS), runs(POLICY_TOKENS), deep()], wrap: bool, schema: bool) {
        let policies =
            if wrap { format!("permit(principal, action, resource) when {{ {body} }};") } else { body };
        load_and_decide(schema.then(|| SCHEMA.to_owned()), policies);
    }

    #[test]
    fn the_pack_mutated_never_crashes(
        edits in prop::collection::vec((0.0..1.0f64, prop_oneof![runs(POLICY_TOKENS), soup(POLICY_TOKENS), deep()]), 1..4),
    ) {
        let pack = edits.iter().fold(PACK.to_owned(), |text, (at, insert)| inserted(&text, *at, insert));
        load_and_decide(Some(SCHEMA.to_owned()), pack);
    }

    #[test]
    fn random_and_mutated_schemas_never_crash(
        edits in prop::collection::vec((0.0..1.0f64, runs(SCHEMA_TOKENS)), 0..4),
        extra in soup(SCHEMA_TOKENS),
    ) {
        let schema = edits.iter().fold(format!("{SCHEMA}\n{extra}"), |text, (at, insert)| inserted(&text, *at, insert));
        load_and_decide(Some(schema), PACK.to_owned());
    }

    #[test]
    fn deep_and_random_entity_values_never_crash(shape in prop::collection::vec(0u8..4, 0..120), schema: bool) {
        let value = shape.iter().fold(json!("leaf"), |inner, kind| match kind {
            0 => json!([inner]),
            1 => json!({"a": inner}),
            2 => json!([1, inner, {"b": true}]),
            _ => json!({"__entity": {"type": "Patient", "id": "p-100"}, "x": inner}),
        });
        in_default_stack(move || {
            let schema = schema.then(|| PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), PACK, &[]).unwrap());
            let entity = json!([{"uid": {"type": "Patient", "id": "p-9"}, "attrs": {"a": value}, "parents": []}]);
            let Ok(store) = EntityStore::from_json(&entity, schema.as_ref().and_then(PolicyBundle::schema)) else { return };
            let bundle = PolicyBundle::load(None, "permit(principal, action, resource) when { resource.a == resource.a };", &[]).unwrap();
            let p9 = parse_uid(&json!("Patient::\"p-9\""), "resource").unwrap();
            let mut request = DecisionRequest::new(p9.clone(), parse_uid(&json!("Action::\"read\""), "action").unwrap(), p9);
            // As the host does before any decision: Cedar's context conversion recurses.
            let context = json!({"nested": entity});
            if consentry_engine::limits::check_context_json(&context).is_ok() {
                request.context = Some(context);
            }
            let _ = decide_with(&bundle, &[], &store, &request, &DecisionOptions::default());
        });
    }
}

const SCHEMA_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "<",
    ">",
    "Set<",
    "{ a:",
    "entity",
    "E",
    "in",
    "=",
    ":",
    ";",
    ",",
    "?",
    "Long",
    "String",
    "Bool",
    "action",
    "appliesTo",
    "principal",
    "resource",
    "context",
    "type",
    "namespace",
    "\"q\"",
    "// c {\n",
    "@doc(\"d\")",
    "tags",
];

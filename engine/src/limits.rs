//! Limits on the size and depth of the policies, schemas, links and entity
//! values the engine accepts.
//!
//! Cedar's parser, its conversion to its syntax tree, its JSON forms, its
//! validator and the dropping of those trees all recurse. A policy nested
//! deep enough (about 150 parentheses, or a 1,000-term `||`), or a schema
//! with deeply nested records, overflowed the thread stack and aborted the
//! whole process (issue 13, finding 9). An overflow is an abort, not a
//! panic, so nothing can catch it: the text has to be measured before Cedar
//! sees it. The scans here do not recurse and cost one pass over the text.
//!
//! Every entry point that hands text to Cedar goes through
//! [`PolicyBundle::load`](crate::PolicyBundle::load) (start-up,
//! `consentry validate`, `--watch` reloads, `PUT /v1/policies` and
//! `PUT /v1/schema`), and every entity (stored, patched, sent with a request
//! or enriched by a plugin) through the engine's entity parser, so they all
//! apply the same limits. A request's context is checked by
//! [`check_context_json`], which the host calls before any decision.
//!
//! The values were found by probing a thread with the default 2 MiB stack
//! (tokio's workers and test threads) in the dev profile: about 113 nested
//! parentheses overflowed in Cedar's parser, a 130-term `||` in Cedar's JSON
//! form of a policy, 128-deep values in Cedar's conversion of them, and 470
//! nested schema records in the schema parser. The limits keep well below;
//! `engine/tests/limits.rs` loads and evaluates text at each limit in half
//! that stack, and `engine/tests/limits_properties.rs` feeds generated text
//! far over them to the parsers.

mod text;

use serde_json::Value;
use thiserror::Error;

pub use text::{check_policy_text, check_schema_text};

/// The most bytes of Cedar policy text in one bundle.
pub const MAX_POLICY_TEXT_BYTES: usize = 2 * 1024 * 1024;
/// The most policies and templates in one bundle's text.
pub const MAX_POLICIES: usize = 10_000;
/// How deep one policy's expression may be, estimated from its text as the
/// depth of Cedar's syntax tree with every bracket counted as a level:
/// `((a))` is 2 deep, a 40-term `||` 39, `a.b == c && d` 3.
pub const MAX_EXPRESSION_DEPTH: usize = 48;
/// The most bytes of schema text, Cedar or JSON.
pub const MAX_SCHEMA_TEXT_BYTES: usize = 1024 * 1024;
/// How deep braces, brackets and `Set<…>` may nest in Cedar schema text,
/// counting a namespace's and an entity's own braces. Deep text overflowed
/// the stack at about 470 nested records, but Cedar's parsing of an entity
/// under a schema takes time that doubles with every level of nested record
/// types (a second per entity at 21 levels), so the limit is much lower.
pub const MAX_SCHEMA_NESTING: usize = 12;
/// How deep objects and arrays may nest in a JSON schema: a record level
/// takes two (`{"type": "Record", "attributes": {…}}`).
pub const MAX_SCHEMA_JSON_DEPTH: usize = 2 * MAX_SCHEMA_NESTING + 4;
/// The most template links in one bundle.
pub const MAX_TEMPLATE_LINKS: usize = 10_000;
/// How deep sets and records may nest in an entity's attribute or tag value.
pub const MAX_VALUE_DEPTH: usize = 32;

/// One of the limits, for messages and for the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`MAX_POLICY_TEXT_BYTES`].
    PolicyTextBytes,
    /// [`MAX_POLICIES`].
    Policies,
    /// [`MAX_EXPRESSION_DEPTH`].
    ExpressionDepth,
    /// [`MAX_SCHEMA_TEXT_BYTES`].
    SchemaTextBytes,
    /// [`MAX_SCHEMA_NESTING`].
    SchemaNesting,
    /// [`MAX_SCHEMA_JSON_DEPTH`].
    SchemaJsonDepth,
    /// [`MAX_TEMPLATE_LINKS`].
    TemplateLinks,
    /// [`MAX_VALUE_DEPTH`].
    ValueDepth,
}

impl Limit {
    /// The stable name messages use, such as `policy_nesting`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PolicyTextBytes => "policy_text_bytes",
            Self::Policies => "policies",
            Self::ExpressionDepth => "expression_depth",
            Self::SchemaTextBytes => "schema_text_bytes",
            Self::SchemaNesting => "schema_nesting",
            Self::SchemaJsonDepth => "schema_json_depth",
            Self::TemplateLinks => "template_links",
            Self::ValueDepth => "value_depth",
        }
    }

    /// The limit's value.
    pub fn value(self) -> usize {
        match self {
            Self::PolicyTextBytes => MAX_POLICY_TEXT_BYTES,
            Self::Policies => MAX_POLICIES,
            Self::ExpressionDepth => MAX_EXPRESSION_DEPTH,
            Self::SchemaTextBytes => MAX_SCHEMA_TEXT_BYTES,
            Self::SchemaNesting => MAX_SCHEMA_NESTING,
            Self::SchemaJsonDepth => MAX_SCHEMA_JSON_DEPTH,
            Self::TemplateLinks => MAX_TEMPLATE_LINKS,
            Self::ValueDepth => MAX_VALUE_DEPTH,
        }
    }

    /// What is measured, as a noun for messages.
    pub fn measures(self) -> &'static str {
        match self {
            Self::PolicyTextBytes | Self::SchemaTextBytes => "size in bytes",
            Self::Policies => "number of policies",
            Self::SchemaNesting => "nesting depth",
            Self::ExpressionDepth => "expression depth",
            Self::SchemaJsonDepth => "JSON nesting depth",
            Self::TemplateLinks => "number of template links",
            Self::ValueDepth => "value nesting depth",
        }
    }

    /// Whether the limit is on size, which an HTTP host answers with 413
    /// rather than 422.
    pub fn is_size(self) -> bool {
        matches!(self, Self::PolicyTextBytes | Self::SchemaTextBytes)
    }
}

/// Text or a value over one of the limits: refused before Cedar parses it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{place}: {} {found} exceeds the limit of {} (`{}`)", .limit.measures(), .limit.value(), .limit.name())]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// What was measured; for depth, the first value over the limit found.
    pub found: usize,
    /// Where, such as `policy 3 (line 12)` or `attrs.history`.
    pub place: String,
    /// Byte offset into the policy text, when the place is in it.
    pub offset: Option<usize>,
}

impl LimitExceeded {
    pub(crate) fn new(limit: Limit, found: usize, place: impl Into<String>, offset: Option<usize>) -> Self {
        Self { limit, found, place: place.into(), offset }
    }
}

/// Refuses a JSON schema's text over the size limit; call before parsing it.
pub fn check_schema_json_size(text: &str) -> Result<(), LimitExceeded> {
    if text.len() > MAX_SCHEMA_TEXT_BYTES {
        return Err(LimitExceeded::new(Limit::SchemaTextBytes, text.len(), "schema", None));
    }
    Ok(())
}

/// Refuses a parsed JSON schema nested deeper than [`MAX_SCHEMA_JSON_DEPTH`].
pub fn check_schema_json(value: &Value) -> Result<(), LimitExceeded> {
    match json_depth_over(value, MAX_SCHEMA_JSON_DEPTH) {
        Some(depth) => Err(LimitExceeded::new(Limit::SchemaJsonDepth, depth, "schema", None)),
        None => Ok(()),
    }
}

/// Refuses more than [`MAX_TEMPLATE_LINKS`] links.
pub fn check_template_links(count: usize) -> Result<(), LimitExceeded> {
    if count > MAX_TEMPLATE_LINKS {
        return Err(LimitExceeded::new(Limit::TemplateLinks, count, "links", None));
    }
    Ok(())
}

/// Refuses an entity (or context) whose values nest deeper than
/// [`MAX_VALUE_DEPTH`]. `value` is the entity's JSON; its `attrs` and
/// `tags` are measured, and `place` names it in the message.
pub fn check_entity_json(value: &Value, place: &str) -> Result<(), LimitExceeded> {
    for part in ["attrs", "tags"] {
        let Some(Value::Object(fields)) = value.get(part) else { continue };
        for (name, field) in fields {
            // A value itself is depth 0, a set or record of plain values 1.
            if let Some(depth) = json_depth_over(field, MAX_VALUE_DEPTH + 1) {
                let found = depth - 1;
                return Err(LimitExceeded::new(
                    Limit::ValueDepth,
                    found,
                    format!("{place}{part}.{name}"),
                    None,
                ));
            }
        }
    }
    Ok(())
}

/// Refuses a request context whose values nest deeper than [`MAX_VALUE_DEPTH`].
pub fn check_context_json(context: &Value) -> Result<(), LimitExceeded> {
    let Value::Object(fields) = context else { return Ok(()) };
    for (name, field) in fields {
        if let Some(depth) = json_depth_over(field, MAX_VALUE_DEPTH + 1) {
            return Err(LimitExceeded::new(Limit::ValueDepth, depth - 1, format!("context.{name}"), None));
        }
    }
    Ok(())
}

/// The depth of `value` (a scalar is 1, `[1]` is 2) if it is over `max`,
/// measured without recursion and without walking further than `max + 1`.
fn json_depth_over(value: &Value, max: usize) -> Option<usize> {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > max {
            return Some(depth);
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, depth + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|field| (field, depth + 1))),
            _ => {}
        }
    }
    None
}

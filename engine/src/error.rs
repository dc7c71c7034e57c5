//! Errors the engine reports to its callers.
//!
//! Two families exist because they are handled differently: a [`LoadError`]
//! means a policy bundle or entity set was refused (the old one stays in
//! force), a [`RequestError`] means the caller sent something unusable and
//! deserves a precise 4xx that names the offending field.

use miette::Diagnostic;
use thiserror::Error;

use crate::limits::LimitExceeded;

/// One problem found while loading policies, a schema, links or entities.
///
/// `offset` is a byte offset into the policy text when Cedar reported a
/// source location, so that tools can render `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The policy the problem belongs to, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// Human-readable, lowercase message.
    pub message: String,
    /// Extra advice from Cedar, when it has some.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Byte offset into the policy source, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
}

impl Problem {
    /// A problem with only a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self { policy_id: None, message: message.into(), help: None, offset: None }
    }

    /// Builds a problem from any miette diagnostic, keeping its first label
    /// as the source location.
    pub fn from_diagnostic(diagnostic: &dyn Diagnostic, policy_id: Option<String>) -> Self {
        let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map(|l| l.offset());
        Self {
            policy_id,
            message: diagnostic.to_string(),
            help: diagnostic.help().map(|h| h.to_string()),
            offset,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cedar's own messages already name the policy; the id stays a separate field.
        f.write_str(&self.message)
    }
}

/// A bundle, schema or entity set that was refused.
#[derive(Debug, Error, Diagnostic)]
pub enum LoadError {
    /// The schema text or JSON could not be parsed, or its actions not
    /// derived; the problem's offset, when Cedar gives one, is into the
    /// schema's own text.
    #[error("invalid schema: {}", with_help(.0))]
    #[diagnostic(code(consentry::schema))]
    Schema(Box<Problem>),
    /// The policies could not be parsed, linked or validated. Every problem is listed.
    #[error("invalid policies: {} problem(s): {}", .0.len(), join(.0))]
    #[diagnostic(code(consentry::policies))]
    Policies(Vec<Problem>),
    /// The entities could not be parsed or do not fit the schema.
    #[error("invalid entities: {0}")]
    #[diagnostic(code(consentry::entities))]
    Entities(String),
    /// The text was over one of the [limits](crate::limits), so Cedar never parsed it.
    #[error("limit exceeded: {0}")]
    #[diagnostic(code(consentry::limit))]
    Limit(#[from] LimitExceeded),
}

impl LoadError {
    /// Every problem behind this error, for APIs that list them one by one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            Self::Policies(problems) => problems.clone(),
            Self::Schema(problem) => vec![problem.as_ref().clone()],
            Self::Entities(message) => vec![Problem::message(message.clone())],
            Self::Limit(exceeded) => {
                vec![Problem { offset: exceeded.offset, ..Problem::message(exceeded.to_string()) }]
            }
        }
    }
}

/// A problem's message with Cedar's advice, for one-line error texts.
fn with_help(problem: &Problem) -> String {
    match &problem.help {
        Some(help) => format!("{} ({help})", problem.message),
        None => problem.message.clone(),
    }
}

fn join(problems: &[Problem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// How a caller's request was unusable. The host maps these onto HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    /// Syntactically unusable: an unparsable uid or a value of the wrong JSON shape (400).
    Malformed,
    /// Well-formed but does not fit the schema (422).
    SchemaMismatch,
    /// Would change what the entity store says about a stored entity (422):
    /// see [`crate::RequestEntities::AddOnly`].
    StoredFactConflict,
    /// Nested deeper than a [limit](crate::limits) allows (422).
    OverLimit,
}

/// A decision request the engine could not evaluate because of its input.
#[derive(Debug, Clone, Error, Diagnostic, PartialEq, Eq)]
#[error("{field}: {message}")]
#[diagnostic(code(consentry::request))]
pub struct RequestError {
    /// Whether the input was malformed or merely did not fit the schema.
    pub kind: RequestErrorKind,
    /// The JSON path of the offending field, for example `principal` or `entities[2]`.
    pub field: String,
    /// What was wrong with it.
    pub message: String,
}

impl RequestError {
    /// The input could not be parsed at all.
    pub fn malformed(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: RequestErrorKind::Malformed, field: field.into(), message: message.into() }
    }

    /// The input parsed but does not fit the schema.
    pub fn schema(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: RequestErrorKind::SchemaMismatch, field: field.into(), message: message.into() }
    }

    /// The input is over one of the [limits](crate::limits): the field is where.
    pub fn over_limit(exceeded: &LimitExceeded) -> Self {
        Self {
            kind: RequestErrorKind::OverLimit,
            field: exceeded.place.clone(),
            message: exceeded.to_string(),
        }
    }

    /// The input would change a stored fact.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: RequestErrorKind::StoredFactConflict, field: field.into(), message: message.into() }
    }
}

/// An error's message followed by the messages of its sources and its help,
/// so that "entity does not conform to the schema" also says which attribute
/// and why. Sources whose text is already included are skipped.
pub(crate) fn describe(error: &dyn Diagnostic) -> String {
    with_help(&problem_of(error))
}

/// A problem from a diagnostic: its message followed by those of its
/// sources (skipping text already included), its help, and the offset of
/// its first label.
pub(crate) fn problem_of(error: &dyn Diagnostic) -> Problem {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    Problem {
        help: error.help().map(|help| help.to_string()),
        offset: error.labels().and_then(|mut labels| labels.next()).map(|label| label.offset()),
        ..Problem::message(text)
    }
}

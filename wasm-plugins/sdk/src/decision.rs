//! Decisions and obligations, as an `obligations` hook sees them.

use crate::bindings::wit;

/// How a decision came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A policy or consent permitted the request and none forbade it.
    Allow,
    /// A policy or consent forbade the request.
    Forbidden,
    /// Nothing gave the request a legal basis.
    NotPermitted,
    /// Something failed (a plugin that fails closed, for one) and the
    /// request was denied.
    FailedClosed,
}

/// An instruction the caller must carry out with the decision, such as
/// `redact` with values `["PSY"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Obligation {
    /// What to do, such as `redact` or `log-access`.
    pub id: String,
    /// Its arguments.
    pub values: Vec<String>,
}

impl Obligation {
    /// An obligation with these values.
    pub fn new(id: impl Into<String>, values: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self { id: id.into(), values: values.into_iter().map(Into::into).collect() }
    }
}

/// A decision that was made, before the `obligations` hooks add to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// How it came out.
    pub outcome: Outcome,
    /// The ids of the determining policies and consent rules.
    pub policies: Vec<String>,
    /// The obligations attached so far.
    pub obligations: Vec<Obligation>,
}

impl Decision {
    /// Whether the request is allowed.
    pub fn is_allow(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

impl From<wit::Outcome> for Outcome {
    fn from(outcome: wit::Outcome) -> Self {
        match outcome {
            wit::Outcome::Allow => Self::Allow,
            wit::Outcome::Forbidden => Self::Forbidden,
            wit::Outcome::NotPermitted => Self::NotPermitted,
            wit::Outcome::FailedClosed => Self::FailedClosed,
        }
    }
}

impl From<wit::Obligation> for Obligation {
    fn from(obligation: wit::Obligation) -> Self {
        Self { id: obligation.id, values: obligation.values }
    }
}

impl From<Obligation> for wit::Obligation {
    fn from(obligation: Obligation) -> Self {
        Self { id: obligation.id, values: obligation.values }
    }
}

impl From<wit::Decision> for Decision {
    fn from(decision: wit::Decision) -> Self {
        Self {
            outcome: decision.outcome.into(),
            policies: decision.policies,
            obligations: decision.obligations.into_iter().map(Into::into).collect(),
        }
    }
}

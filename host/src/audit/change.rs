//! What the audit log says about one change to the rules.
//!
//! A decision can only be justified if the rules it was made under can be
//! accounted for too: who loaded the policy set that allowed an access, who
//! recorded the consent, who reconfigured the plugins, and why (GDPR
//! Art. 5(2), the German KRITIS rules). So every change to policies, schema,
//! links, entities, consents and plugin configuration is a record in the
//! same hash chain as the decisions, and an acknowledged change has been
//! written: its caller waits for the record to be durable, as a break-glass
//! decision does.
//!
//! Like a decision record it names things by identifier, version and hash,
//! never by content: the entities or consent text changed are in their own
//! stores, and the log must not become a second copy of them. Every field is
//! a string, a list of strings or an optional string, so that a record
//! survives a parse and re-serialization byte for byte (see
//! [`super::chain`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The longest reason, in characters, a change record keeps.
pub const MAX_REASON_CHARS: usize = 500;

/// One change to the rules decisions are made under, as the audit log
/// records it.
///
/// The field order is part of the on-disk format: the chain hash is computed
/// over the fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEntry {
    /// The change's id (UUID v7), so a question about one change can be
    /// traced to its record.
    pub change_id: Uuid,
    /// When the change was made: an RFC 3339 UTC instant from the server
    /// clock.
    pub at: String,
    /// Who made it: the name of the caller's token, or `consentry` for a
    /// change the server made itself (a file it watches was edited).
    pub actor: String,
    /// What was changed: one of the [`ChangeKind`] names.
    pub kind: String,
    /// What it became, by identifier: a policy set version `v12`, a store
    /// revision `r40`, a consent and its version `c-1/v3`.
    pub subject: String,
    /// The hash of what it became (the policy set hash, a content hash);
    /// empty when there is none. Not called `hash`: that member of a line
    /// is the chain's.
    pub content_hash: String,
    /// How much changed, as `name=count`, e.g. `upserted=10`, `deleted=2`.
    pub counts: Vec<String>,
    /// The comment the caller gave for the change, if any.
    pub reason: Option<String>,
}

/// What a change record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The Cedar policy set.
    Policies,
    /// The Cedar schema.
    Schema,
    /// Links between entities.
    Links,
    /// Stored entities.
    Entities,
    /// A patient's consent (a new version of it).
    Consent,
    /// The plugin configuration or components.
    Plugins,
}

impl ChangeKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [Self; 6] =
        [Self::Policies, Self::Schema, Self::Links, Self::Entities, Self::Consent, Self::Plugins];

    /// The name records and the `kind` query parameter use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Policies => "policies",
            Self::Schema => "schema",
            Self::Links => "links",
            Self::Entities => "entities",
            Self::Consent => "consent",
            Self::Plugins => "plugins",
        }
    }

    /// The kind called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// A reason a change record cannot keep.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Longer than [`MAX_REASON_CHARS`].
    #[error("the reason is {0} characters long; at most {MAX_REASON_CHARS} are kept")]
    TooLong(usize),
    /// It holds a control character (a line break, a tab, …).
    #[error("the reason holds a control character (U+{0:04X}); give it on one line")]
    ControlCharacter(u32),
}

impl ChangeEntry {
    /// A change of `kind` by `actor` to `subject`, made now: a fresh
    /// `change_id` and the server clock's `at`, with no hash, counts or
    /// reason yet.
    pub fn now(kind: ChangeKind, actor: &str, subject: impl Into<String>) -> Self {
        Self {
            change_id: Uuid::now_v7(),
            at: crate::clock::now().cedar_literal().to_owned(),
            actor: actor.to_owned(),
            kind: kind.name().to_owned(),
            subject: subject.into(),
            content_hash: String::new(),
            counts: Vec::new(),
            reason: None,
        }
    }

    /// With `hash` as the content hash.
    #[must_use]
    pub fn with_hash(mut self, hash: impl Into<String>) -> Self {
        self.content_hash = hash.into();
        self
    }

    /// With `name=count` added to the counts.
    #[must_use]
    pub fn with_count(mut self, name: &str, count: u64) -> Self {
        self.counts.push(format!("{name}={count}"));
        self
    }

    /// With the caller's `reason`, trimmed; a missing or blank one is none.
    /// A reason is free text, so it is kept short and on one line: it
    /// belongs in a log read for years, and it must not carry health data
    /// (which the caller is told where it is asked for).
    pub fn with_reason(mut self, reason: Option<&str>) -> Result<Self, InvalidReason> {
        self.reason = checked_reason(reason)?;
        Ok(self)
    }
}

/// A caller's reason as a change record keeps it: trimmed, none when blank,
/// refused when it is too long or not on one line. Checked before a change
/// is made, so a change is never made whose reason cannot be recorded.
pub fn checked_reason(reason: Option<&str>) -> Result<Option<String>, InvalidReason> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else { return Ok(None) };
    if let Some(control) = reason.chars().find(|c| c.is_control()) {
        return Err(InvalidReason::ControlCharacter(u32::from(control)));
    }
    let chars = reason.chars().count();
    if chars > MAX_REASON_CHARS {
        return Err(InvalidReason::TooLong(chars));
    }
    Ok(Some(reason.to_owned()))
}

/// Records for the sinks' and readers' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::ChangeEntry;

    /// Policy set version `v{n}` loaded by `admin` at `at`, change id
    /// `0xC000 + n`.
    pub(crate) fn policies_loaded(n: u32, at: &str) -> ChangeEntry {
        ChangeEntry {
            change_id: uuid::Uuid::from_u128(0xC000 + u128::from(n)),
            at: at.to_owned(),
            actor: "admin".to_owned(),
            kind: "policies".to_owned(),
            subject: format!("v{n}"),
            content_hash: "sha256:abc".to_owned(),
            counts: vec!["policies=12".to_owned()],
            reason: Some("ticket CHG-7".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_change_is_stamped_by_the_server() {
        let change = ChangeEntry::now(ChangeKind::Consent, "consent-app", "c-1/v3")
            .with_hash("h")
            .with_count("upserted", 10)
            .with_count("deleted", 2);
        assert_eq!(change.change_id.get_version_num(), 7);
        assert!(consentry_engine::EvaluationTime::parse(&change.at).is_ok(), "{}", change.at);
        assert!(change.at.ends_with('Z'), "{}", change.at);
        assert_eq!((change.kind.as_str(), change.subject.as_str()), ("consent", "c-1/v3"));
        assert_eq!(change.counts, ["upserted=10", "deleted=2"]);
        assert_eq!(change.content_hash, "h");
        assert_eq!(change.reason, None);
    }

    #[test]
    fn kinds_have_one_name_each() {
        for kind in ChangeKind::ALL {
            assert_eq!(ChangeKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(ChangeKind::parse("Policies"), None);
        assert_eq!(ChangeKind::parse("decisions"), None);
    }

    #[test]
    fn reasons_are_trimmed_short_and_on_one_line() {
        let change = || ChangeEntry::now(ChangeKind::Policies, "admin", "v2");
        assert_eq!(
            change().with_reason(Some("  CHG-1 rollout ")).unwrap().reason.as_deref(),
            Some("CHG-1 rollout")
        );
        assert_eq!(change().with_reason(Some("   ")).unwrap().reason, None);
        assert_eq!(change().with_reason(None).unwrap().reason, None);
        let long = "é".repeat(MAX_REASON_CHARS);
        assert_eq!(change().with_reason(Some(&long)).unwrap().reason, Some(long.clone()));
        assert_eq!(
            change().with_reason(Some(&format!("{long}x"))).unwrap_err(),
            InvalidReason::TooLong(MAX_REASON_CHARS + 1)
        );
        let err = change().with_reason(Some("two\nlines")).unwrap_err();
        assert_eq!(err, InvalidReason::ControlCharacter(0x0a));
        assert_eq!(err.to_string(), "the reason holds a control character (U+000A); give it on one line");
    }
}

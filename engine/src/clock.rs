//! The evaluation time, as the server's clock gives it.
//!
//! Consents expire and policies may depend on the hour, so `context.now`
//! decides access. A caller who could choose it could replay an expired
//! consent, so the engine takes the time only from its host and refuses a
//! request that brings its own. The engine itself reads no clock: that is
//! I/O, and it would make decisions impossible to reproduce in tests.

use crate::time::{Bound, DateTime};

/// The context attribute the evaluation time is given in.
pub const CLOCK_ATTRIBUTE: &str = "now";

/// An instant at which a decision is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationTime {
    unix_ms: i64,
    literal: String,
}

impl EvaluationTime {
    /// The instant `unix_ms` milliseconds after the Unix epoch.
    pub fn from_unix_millis(unix_ms: i64) -> Self {
        Self { unix_ms, literal: Bound::utc(unix_ms).literal() }
    }

    /// Parses an RFC 3339 / FHIR instant such as `2026-06-01T10:00:00Z`, or a
    /// bare date (midnight UTC), for tests that replay a fixed moment.
    pub fn parse(text: &str) -> Result<Self, String> {
        DateTime::parse(text).map(|t| Self::from_unix_millis(t.start().utc_ms()))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> i64 {
        self.unix_ms
    }

    /// The argument of Cedar's `datetime(…)` for this instant, in UTC.
    pub fn cedar_literal(&self) -> &str {
        &self.literal
    }

    /// The instant as a context value in Cedar's JSON form, the
    /// `datetime(…)` extension call.
    pub fn context_value(&self) -> serde_json::Value {
        serde_json::json!({"__extn": {"fn": "datetime", "arg": self.literal}})
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unix_millis_are_written_as_utc_cedar_datetimes() {
        assert_eq!(EvaluationTime::from_unix_millis(0).cedar_literal(), "1970-01-01T00:00:00Z");
        assert_eq!(
            EvaluationTime::from_unix_millis(1_780_308_000_123).cedar_literal(),
            "2026-06-01T10:00:00.123Z"
        );
    }

    #[test]
    fn parsed_instants_keep_their_offset() {
        let t = EvaluationTime::parse("2026-06-01T12:00:00+02:00").unwrap();
        assert_eq!(t.cedar_literal(), "2026-06-01T10:00:00Z");
        assert_eq!(t.unix_millis(), 1_780_308_000_000);
    }
}

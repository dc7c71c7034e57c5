//! The server's clock, the only source of a decision's evaluation time.

use std::time::{SystemTime, UNIX_EPOCH};

use consentry_engine::EvaluationTime;

/// Now, by the system clock. A clock set before 1970 reads as the epoch,
/// which makes every time-bounded consent inapplicable rather than open-ended.
pub fn now() -> EvaluationTime {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    EvaluationTime::from_unix_millis(millis)
}

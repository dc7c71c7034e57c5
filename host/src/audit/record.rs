//! What the audit log says about one decision.
//!
//! The log has to answer "who was allowed or denied what, about which
//! patients, under which consents and policies" long after the fact, so every
//! entry names the principal, the action, the resource, the determining
//! policies (consent rules with their version) and the hash of the policy set
//! in force. It carries identifiers only: the log is kept for years and read
//! by auditors, so it must not become a second copy of the health records it
//! protects. Every field is a string or a list of strings, so an entry
//! survives a parse and re-serialization byte for byte, which the hash chain
//! in [`super::chain`] relies on.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One decision, as the audit log records it: identifiers only, never record
/// bodies or other PHI.
///
/// The field order is part of the on-disk format: the chain hash is computed
/// over the fields in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEntry {
    /// The decision's id, as returned to the caller, so a complaint about one
    /// answer can be traced to its entry.
    pub decision_id: Uuid,
    /// When the decision was made: an RFC 3339 UTC instant from the server
    /// clock (never a time the caller supplied).
    pub at: String,
    /// The principal, as Cedar uid text, e.g. `Practitioner::"dr-weber"`;
    /// empty for an `ext_authz` request no mapper could map.
    pub principal: String,
    /// The action, as Cedar uid text, e.g. `Action::"read"`; for an
    /// unmapped `ext_authz` request, `HTTP ` and its method.
    pub action: String,
    /// The resource, as Cedar uid text, e.g. `Observation::"obs-1"`; for an
    /// unmapped `ext_authz` request, its path without the query.
    pub resource: String,
    /// The ids of the patients the request concerns; empty when it concerns
    /// none.
    pub patients: Vec<String>,
    /// The purpose of use the caller declared, if any.
    pub purpose: Option<String>,
    /// Cedar's answer: `Allow` or `Deny`.
    pub decision: String,
    /// Why the answer is what it is: `allow`, `forbidden` (a `forbid` policy
    /// matched), `not_permitted` (no `permit` matched) or `failed_closed` (the
    /// evaluation could not complete and the request was denied).
    pub outcome: String,
    /// The ids of the determining policies; consent rules carry their
    /// consent's version, e.g. `consent/c-100/v2/root`.
    pub reasons: Vec<String>,
    /// The ids of the obligations attached to the decision.
    pub obligations: Vec<String>,
    /// What each plugin that ran did, in order: `name/hook: ok`,
    /// `name/map-request: no-match`, or the kind of its fault and what
    /// followed, e.g. `guardian/enrich: timeout, denied`; empty when no
    /// plugin ran.
    pub plugins: Vec<String>,
    /// The hash of the policy set in force, so the decision can be replayed
    /// against exactly those policies.
    pub policy_hash: String,
}

impl DecisionEntry {
    /// The record of `decision` on `request`, answered under `id`, about
    /// `patients`, under the policy set whose hash is `policy_hash`.
    pub fn of(
        id: Uuid,
        request: &consentry_engine::DecisionRequest,
        decision: &consentry_engine::Decision,
        patients: Vec<String>,
        plugins: Vec<String>,
        policy_hash: &str,
    ) -> Self {
        let at = request.now.clone().unwrap_or_else(crate::clock::now);
        Self {
            decision_id: id,
            at: at.cedar_literal().to_owned(),
            principal: request.principal.to_string(),
            action: request.action.to_string(),
            resource: request.resource.to_string(),
            patients,
            purpose: request
                .context
                .as_ref()
                .and_then(|context| context.get("purpose"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            decision: decision.verdict().to_owned(),
            outcome: decision.outcome.name().to_owned(),
            reasons: decision.reasons.iter().map(|reason| reason.policy.clone()).collect(),
            obligations: decision.obligations.iter().map(|obligation| obligation.id.clone()).collect(),
            plugins,
            policy_hash: policy_hash.to_owned(),
        }
    }

    /// The record of a Deny for an `ext_authz` request that never became a
    /// Cedar request: no principal is known, and the HTTP method and path
    /// stand in for the action and resource.
    pub fn unmapped(
        id: Uuid,
        method: &str,
        path: &str,
        decision: &consentry_engine::Decision,
        plugins: Vec<String>,
        policy_hash: &str,
    ) -> Self {
        Self {
            decision_id: id,
            at: crate::clock::now().cedar_literal().to_owned(),
            principal: String::new(),
            action: format!("HTTP {method}"),
            resource: path.to_owned(),
            patients: Vec::new(),
            purpose: None,
            decision: decision.verdict().to_owned(),
            outcome: decision.outcome.name().to_owned(),
            reasons: Vec::new(),
            obligations: Vec::new(),
            plugins,
            policy_hash: policy_hash.to_owned(),
        }
    }
}

/// Records for the sinks' and readers' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::DecisionEntry;

    /// Dr. Weber's allowed read of observation `n`, decision id `n + 1`,
    /// made at `at`, about `patients`.
    pub(crate) fn read_by_weber(n: u32, at: &str, patients: &[&str]) -> DecisionEntry {
        DecisionEntry {
            decision_id: uuid::Uuid::from_u128(u128::from(n) + 1),
            at: at.to_owned(),
            principal: "Practitioner::\"dr-weber\"".to_owned(),
            action: "Action::\"read\"".to_owned(),
            resource: format!("Observation::\"obs-{n}\""),
            patients: patients.iter().map(|p| (*p).to_owned()).collect(),
            purpose: Some("TREAT".to_owned()),
            decision: "Allow".to_owned(),
            outcome: "allow".to_owned(),
            reasons: vec!["consent/c-100/v2/root".to_owned()],
            obligations: vec!["log-access".to_owned()],
            plugins: vec![],
            policy_hash: "abc123".to_owned(),
        }
    }
}

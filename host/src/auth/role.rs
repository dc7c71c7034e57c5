//! The roles a bearer token can hold.
//!
//! Each role is one job in a hospital's deployment, so a leaked token
//! exposes only that job: the EHR's gateway can ask for decisions but not
//! rewrite the policies, the consent service can record consents but not read
//! who accessed what, and a patient's token opens only that patient's
//! transparency views.

use serde::{Deserialize, Serialize};

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Ask for decisions, when the decision endpoints require a token.
    Decision,
    /// Record and supersede consents, and read them back.
    ConsentWriter,
    /// Change policies, schema, entities and plugins.
    PolicyAdmin,
    /// Read consents, any patient's access log and the AuditEvent export.
    Auditor,
    /// Act as the token's principal (a patient or a representative) on that
    /// patient's own transparency views; the policy pack decides whom the
    /// principal may act for.
    Patient,
}

impl Role {
    /// Every role but `patient`: what `CONSENTRY_ADMIN_TOKEN` holds. A
    /// patient role needs a principal, which the environment token has not.
    pub const OPERATOR: [Role; 4] = [Role::Decision, Role::ConsentWriter, Role::PolicyAdmin, Role::Auditor];

    /// The role as written in configuration, e.g. `consent-writer`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Decision => "decision",
            Role::ConsentWriter => "consent-writer",
            Role::PolicyAdmin => "policy-admin",
            Role::Auditor => "auditor",
            Role::Patient => "patient",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

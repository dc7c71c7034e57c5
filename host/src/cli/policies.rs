//! `validate` and `compile-consent`: what a privacy team checks before a
//! change reaches a server.

use consentry_engine::check_consent;
use consentry_engine::consent::{Consent, compile};

use super::args::{CompileConsentArgs, ValidateArgs};
use super::error::{CliError, Outcome};
use crate::policy_dir;

/// `consentry validate`.
pub fn validate(args: &ValidateArgs) -> Result<Outcome, CliError> {
    let loaded = policy_dir::load(&args.policies)?;
    println!(
        "valid: {} policies, {} entities, schema: {}",
        loaded.bundle.policy_count(),
        loaded.store.len(),
        if loaded.bundle.schema().is_some() { "yes" } else { "none" },
    );
    Ok(Outcome::Done)
}

/// `consentry compile-consent`: shows a privacy team exactly which rules a
/// consent becomes, checked as the consent API would check them.
pub fn compile_consent(args: &CompileConsentArgs) -> Result<Outcome, CliError> {
    let loaded = policy_dir::load(&args.policies)?;
    let bytes = std::fs::read(&args.consent)
        .map_err(|e| CliError::invalid(format!("cannot read `{}`: {e}", args.consent.display())))?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| CliError::invalid(format!("not JSON: {e}")))?;
    let consent = Consent::from_json_under(&value, args.fhir_base.as_ref()).map_err(CliError::invalid)?;
    let id = consent.id().unwrap_or("draft").to_owned();
    Consent::check_id(&id).map_err(CliError::invalid)?;
    check_consent(&loaded.bundle, &id, 1, &consent)
        .map_err(|error| CliError::invalid(format!("the consent does not fit the policy schema: {error}")))?;
    if !consent.is_active() {
        eprintln!("note: the consent is `{}`, so it compiles to no policies", consent.status().code());
    }
    print!("{}", compile(&consent, &id, 1));
    Ok(Outcome::Done)
}

//! The consent store, opened as each command needs it: created and
//! migrated for `serve` and the imports, only read for the commands that ask.

use std::str::FromStr;
use std::sync::Arc;

use consentry_engine::consent::FhirBase;

use super::error::CliError;
use crate::consents::Consents;
use crate::store::{StoreError, StoreLocation};

/// The consent store named on the command line, migrated; consents are
/// read with `fhir_base` as this server's FHIR base.
pub async fn open_consents(location: &str, fhir_base: Option<FhirBase>) -> Result<Arc<Consents>, CliError> {
    Consents::open_under(&parsed(location)?, fhir_base).await.map_err(unopened)
}

/// The consent store at `location`, for a command that only reads it: one
/// that does not exist is read as empty rather than created.
pub async fn open_consents_for_reading(
    location: &str,
    fhir_base: Option<FhirBase>,
) -> Result<Arc<Consents>, CliError> {
    Consents::open_for_reading(&parsed(location)?, fhir_base).await.map_err(unopened)
}

fn parsed(location: &str) -> Result<StoreLocation, CliError> {
    StoreLocation::from_str(location).map_err(CliError::invalid)
}

fn unopened(error: StoreError) -> CliError {
    CliError::failed(format!("cannot open the consent store: {error}"))
}

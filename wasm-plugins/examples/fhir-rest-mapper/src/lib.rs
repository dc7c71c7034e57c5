//! A `map-request` hook that turns FHIR REST requests seen by a proxy into
//! Cedar requests.
//!
//! | HTTP request                                  | action   | resource        |
//! |-----------------------------------------------|----------|-----------------|
//! | `GET {base}/Patient/{id}`                     | `read`   | `Patient::"id"` |
//! | `GET {base}/{Type}/{id}`                      | `read`   | `Record::"id"`  |
//! | `GET {base}/Patient/{id}/{Type}`              | `search` | `Patient::"id"` |
//! | `GET {base}/{Type}?patient=p` or `?subject=Patient/p` | `search` | `Patient::"p"` |
//! | `POST {base}/{Type}` with `?patient=`, `?subject=` or header `x-patient-id` | `create` | `Patient::"p"` |
//! | `PUT {base}/{Type}/{id}`                      | `update` | `Record::"id"` (`Patient::"id"` for a Patient) |
//! | `DELETE {base}/{Type}/{id}`                   | `delete` | `Record::"id"` (`Patient::"id"` for a Patient) |
//!
//! The principal is the FHIR reference in the principal header
//! (`Practitioner/dr-weber`); the context gets `purpose` from the purpose
//! header (`TREAT` or `system|TREAT`) and `justification` from the
//! justification header, when they are present. Paths outside the base path
//! are not this mapper's (`None`); anything else under it that does not fit
//! the table, or with ids or segments that are not valid FHIR, is an error,
//! so the request is denied rather than guessed at.
//!
//! Config (defaults shown):
//!
//! ```toml
//! [plugins.config]
//! base_path = "/fhir"
//! principal_header = "x-principal"
//! purpose_header = "x-purpose-of-use"
//! justification_header = "x-justification"
//! # the context attribute for the type searched or created under a patient,
//! # e.g. "resource_type" for the bundled pack's SMART scope rules; "" for none
//! searched_type_context = ""
//! ```

use consentry_plugin_sdk::{CedarRequest, HttpRequest, MapRequest, config_or, export_plugin};

mod mapping;

use mapping::Settings;

struct FhirRestMapper;

impl MapRequest for FhirRestMapper {
    fn map_request(request: HttpRequest) -> Result<Option<CedarRequest>, String> {
        let settings = Settings {
            base_path: config_or("base_path", mapping::DEFAULT_BASE_PATH),
            principal_header: config_or("principal_header", mapping::DEFAULT_PRINCIPAL_HEADER),
            purpose_header: config_or("purpose_header", mapping::DEFAULT_PURPOSE_HEADER),
            justification_header: config_or("justification_header", mapping::DEFAULT_JUSTIFICATION_HEADER),
            searched_type_context: config_or("searched_type_context", mapping::DEFAULT_SEARCHED_TYPE_CONTEXT),
        };
        mapping::map(&request, &settings)
    }
}

export_plugin!(FhirRestMapper: map_request);

//! Test program: an `enrich` hook that adds the context attribute config
//! `attribute` (default `ward`) with the string config `value` (default
//! `icu`), as a policy information point that knows where the caller works
//! would. The bundled schema's context does not declare `ward`, so the host
//! refuses the enrichment until the schema does: the first thing a new
//! integrator's `enrich` plugin meets.

use consentry_plugin_sdk::{Enrich, Enrichment, Request, config_or, export_plugin};

struct ContextAdder;

impl Enrich for ContextAdder {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        Ok(Enrichment::new().with_context(config_or("attribute", "ward"), config_or("value", "icu")))
    }
}

export_plugin!(ContextAdder: enrich);

//! Test program: an `enrich` hook that adds nothing and reads nothing, so a
//! call costs only what the host and the SDK spend on any call (instantiation
//! and passing the request in and the answer out).

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct Trivial;

impl Enrich for Trivial {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        Ok(Enrichment::new())
    }
}

export_plugin!(Trivial: enrich);

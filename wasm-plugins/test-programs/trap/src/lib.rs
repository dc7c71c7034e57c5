//! Test program: an `enrich` hook that panics, which traps the instance.

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct Trap;

impl Enrich for Trap {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        panic!("the trap test program panics on every call");
    }
}

export_plugin!(Trap: enrich);

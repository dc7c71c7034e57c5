//! Test program: an `enrich` hook that calls `std::process::exit` with the
//! config `status` (default 3) instead of returning, as a program ported
//! from a command-line tool might on an error.

use consentry_plugin_sdk::{Enrich, Enrichment, Request, config, export_plugin};

struct ExitCaller;

impl Enrich for ExitCaller {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let status = match config("status") {
            Some(status) => {
                status.trim().parse().map_err(|_| format!("config `status` is not a number: `{status}`"))?
            }
            None => 3,
        };
        std::process::exit(status)
    }
}

export_plugin!(ExitCaller: enrich);

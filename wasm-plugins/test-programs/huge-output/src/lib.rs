//! Test program: an `enrich` hook that returns the context
//! `{"blob": "aaaa…"}` with config `bytes` letters (default 4194304), for
//! the host's output limit.

use consentry_plugin_sdk::{Enrich, Enrichment, Request, config, export_plugin};

const DEFAULT_BYTES: usize = 4 << 20;

struct HugeOutput;

impl Enrich for HugeOutput {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let bytes = match config("bytes") {
            Some(bytes) => {
                bytes.trim().parse().map_err(|_| format!("config `bytes` is not a size: `{bytes}`"))?
            }
            None => DEFAULT_BYTES,
        };
        Ok(Enrichment::new().with_context("blob", "a".repeat(bytes)))
    }
}

export_plugin!(HugeOutput: enrich);

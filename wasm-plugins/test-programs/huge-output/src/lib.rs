//! Test program: an `enrich` hook that passes the host config `bytes`
//! letters (default 4194304) at once, by config `via`: `output` (the
//! default) returns the context `{"blob": "aaaa…"}`, for the host's output
//! limit; `config-key` asks the `config` import for a key that long, for
//! the same limit on what an import call carries into the host.

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
        let blob = "a".repeat(bytes);
        match config("via").as_deref() {
            None | Some("output") => Ok(Enrichment::new().with_context("blob", blob)),
            Some("config-key") => {
                // Only reached if the host let the key through.
                let found = config(&blob).is_some();
                Err(format!("the host accepted a config key of {bytes} bytes (found: {found})"))
            }
            Some(other) => Err(format!("config `via` is `output` or `config-key`, not `{other}`")),
        }
    }
}

export_plugin!(HugeOutput: enrich);

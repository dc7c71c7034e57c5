//! Test program: an `enrich` hook that tries to read `/etc/hostname` and the
//! environment. It fails the call if it gets the file or any variable, and
//! adds nothing if the sandbox stops it.

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct FileReader;

impl Enrich for FileReader {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        if let Ok(content) = std::fs::read("/etc/hostname") {
            return Err(format!("sandbox breach: read {} bytes of /etc/hostname", content.len()));
        }
        if let Some((name, _)) = std::env::vars_os().next() {
            return Err(format!("sandbox breach: environment variable {}", name.to_string_lossy()));
        }
        Ok(Enrichment::new())
    }
}

export_plugin!(FileReader: enrich);

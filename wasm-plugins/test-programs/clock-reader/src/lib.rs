//! Test program: an `enrich` hook that reads the wall clock. Without the
//! `clocks` grant the host must trap the call; with it, the hook returns an
//! empty enrichment.

use core::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct ClockReader;

impl Enrich for ClockReader {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the clock is before 1970".to_owned())?;
        black_box(since_epoch.as_secs());
        Ok(Enrichment::new())
    }
}

export_plugin!(ClockReader: enrich);

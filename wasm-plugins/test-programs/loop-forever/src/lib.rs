//! Test program: an `enrich` hook that never returns, for the host's timeout.

use core::hint::black_box;

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

struct LoopForever;

impl Enrich for LoopForever {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let mut counter = 0_u64;
        loop {
            // `black_box` keeps the optimiser from proving the loop useless.
            counter = black_box(counter.wrapping_add(1));
        }
    }
}

export_plugin!(LoopForever: enrich);

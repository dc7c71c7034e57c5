//! Test program: an `enrich` hook that allocates 1 MiB chunks and writes to
//! every byte of them until an allocation fails, for the host's memory
//! limit. Like any Rust program, it aborts (traps) when an allocation fails.

use core::hint::black_box;

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

const MIB: usize = 1 << 20;

struct MemoryHog;

impl Enrich for MemoryHog {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            // A non-zero fill writes every byte, so the memory is really
            // used; `black_box` keeps the allocations from being elided.
            chunks.push(black_box(vec![0xA5; MIB]));
        }
    }
}

export_plugin!(MemoryHog: enrich);

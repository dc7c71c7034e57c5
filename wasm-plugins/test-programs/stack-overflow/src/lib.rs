//! Test program: an `enrich` hook that recurses without bound, overflowing
//! the stack.

use core::hint::black_box;

use consentry_plugin_sdk::{Enrich, Enrichment, Request, export_plugin};

/// Recurses until the stack runs out. `black_box` keeps the optimiser from
/// turning the recursion into a loop, inlining it, or dropping the frame.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    let below = recurse(black_box(depth + 1));
    black_box(frame)[0].wrapping_add(below)
}

struct StackOverflow;

impl Enrich for StackOverflow {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        Err(format!("recursion ended at {}", recurse(0)))
    }
}

export_plugin!(StackOverflow: enrich);

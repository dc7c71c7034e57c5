//! Test program: an `enrich` hook that recurses to the config `depth`
//! (default 10000) and then returns an empty enrichment, each frame holding
//! a 1 KiB array (about 2 KiB in all) on the shadow stack. Rust keeps that
//! stack in linear memory, 1 MiB by default, so the default depth runs it
//! out (a few hundred frames fit): a correct program that only needs a
//! larger stack (`-C link-arg=-zstack-size=…`), unlike `stack-overflow`,
//! which never ends.

use core::hint::black_box;

use consentry_plugin_sdk::{Enrich, Enrichment, Request, config, export_plugin};

const DEFAULT_DEPTH: u64 = 10_000;

/// Recurses `depth` times. `black_box` keeps the optimiser from turning the
/// recursion into a loop, inlining it, or dropping the frame.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 128]);
    if black_box(depth) == 0 {
        return 0;
    }
    let below = recurse(black_box(depth - 1));
    black_box(frame)[0].wrapping_add(below)
}

struct DeepRecursion;

impl Enrich for DeepRecursion {
    fn enrich(_request: Request) -> Result<Enrichment, String> {
        let depth = match config("depth") {
            Some(depth) => {
                depth.trim().parse().map_err(|_| format!("config `depth` is not a number: `{depth}`"))?
            }
            None => DEFAULT_DEPTH,
        };
        black_box(recurse(depth));
        Ok(Enrichment::new())
    }
}

export_plugin!(DeepRecursion: enrich);

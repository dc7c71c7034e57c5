//! Decides the README's break-glass request on the bundled pack N times
//! (`decide/bundled_pack` without criterion), so that a profiler or
//! `valgrind --tool=callgrind` sees only decisions and the pack's set-up:
//! `engine/benches/instructions.sh` counts instructions per decision with it,
//! a measure that other work on the machine does not disturb.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)] // fixtures are read from disk

use std::hint::black_box;
use std::str::FromStr;

use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{DecisionRequest, EntityStore, EvaluationTime, PolicyBundle, SchemaSource, decide};
use serde_json::json;

/// The allocator the `consentry` binary uses, so the counts match the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let repetitions: usize =
        std::env::args().nth(1).map_or(1_000, |n| n.parse().expect("a count of decisions"));
    let schema = include_str!("../../policies/schema.cedarschema");
    let pack = [include_str!("../../policies/pack.cedar"), include_str!("../../policies/transfers.cedar")]
        .join("\n");
    let entities: serde_json::Value =
        serde_json::from_str(include_str!("../../policies/entities.json")).unwrap();
    let bundle = PolicyBundle::load(Some(SchemaSource::CedarText(schema)), &pack, &[]).unwrap();
    let store = EntityStore::from_json(&entities, bundle.schema()).unwrap();
    let uid = |text: &str| EntityUid::from_str(text).unwrap();
    let mut request = DecisionRequest::new(
        uid(r#"Practitioner::"dr-ali""#),
        uid(r#"Action::"read""#),
        uid(r#"Record::"obs-1""#),
    );
    request.context = Some(json!({"purpose": "BTG", "justification": "unconscious on arrival"}));
    request.now = Some(EvaluationTime::parse("2026-06-01T10:00:00Z").unwrap());
    for _ in 0..repetitions {
        let decision = decide(black_box(&bundle), black_box(&store), black_box(&request)).unwrap();
        assert!(decision.is_allowed());
    }
}

//! Inputs at the edges: the decision log after a crash, readiness and metadata (findings 12, 15).

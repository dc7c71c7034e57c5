//! Callers and plugins rewriting stored facts (findings 2, 3).

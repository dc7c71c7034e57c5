//! Half-written policy files put in force (finding 4).

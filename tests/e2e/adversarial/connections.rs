//! Connections that never finish sending (finding 11).

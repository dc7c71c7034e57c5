//! Policies and schemas deep enough to crash the process (finding 9).

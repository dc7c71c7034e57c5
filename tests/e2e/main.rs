//! End-to-end tests: each starts the real `consentry` binary on a free port
//! (or runs its CLI) and talks to it as a client would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod cli;
mod corpus;
mod server;
mod support;
mod watch;

//! End-to-end tests: each starts the real `consentry` binary on a free port
//! (or runs its CLI) and talks to it as a client would. Every server and
//! every `check` is given `--store`: a fresh temporary directory, or a
//! PostgreSQL schema of its own, never the working directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod adversarial;
mod audit;
mod audit_postgres;
mod audit_retention;
mod cli;
mod config;
mod corpus;
mod docs;
mod durability;
mod entity_cache;
mod examples;
mod grpc;
mod identity;
mod observability;
mod plan;
mod plugins;
mod policy_test;
mod postgres_schema;
mod replicas;
mod search;
mod server;
mod source_of_truth;
mod support;
mod watch;

//! The Consentry sidecar: HTTP decision and admin APIs, the policy directory,
//! hot reload and the CLI commands, over [`consentry_engine`].
//!
//! The binary in `main.rs` only parses arguments and dispatches here, so
//! every piece can be tested in-process.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod consents;
pub mod directory;
pub mod entity_import;
pub mod ext_authz;
pub mod file_watch;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod import_record;
pub mod listen;
pub mod metrics;
pub mod pipeline;
pub mod planning;
pub mod plugins;
pub mod policy_change;
pub mod policy_dir;
pub mod policy_test;
pub mod request_body;
pub mod search;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod watch;

//! The decision log: a tamper-evident record of every decision, and of
//! every change to the rules decisions are made under.
//!
//! A decision that cannot be accounted for later is worth little in health
//! care, so every decision from every API is recorded, and so is every
//! change to policies, schema, links, entities, consents and plugins
//! ([`change`]), in the same chain: identifiers only,
//! hash-chained so that editing, deleting or reordering a record shows, and
//! written off the request path by a bounded writer. If the writer falls
//! behind or its sink fails, new decisions are denied ("audit unavailable")
//! unless `drop-and-count` was chosen, which drops records and counts them;
//! nothing is lost silently and memory never grows without bound.

//!
//! The log goes to a directory of JSON Lines files ([`jsonl`]) or to a
//! PostgreSQL table that replicas share ([`postgres`]); [`open`] picks one
//! from the `--audit` value, and [`query`] reads either back.

pub mod anchor;
pub mod chain;
pub mod change;
pub mod disk;
pub mod failure;
pub mod fhir;
pub mod jsonl;
pub mod postgres;
pub mod query;
pub mod record;
pub mod sink;
pub mod writer;

pub use anchor::{Anchor, Retired, Verified};
pub use change::{ChangeEntry, ChangeKind, InvalidReason, checked_reason};
pub use failure::{AuditRefusal, NotDurable, WriteFailure};
pub use jsonl::Retention;
pub use query::{AuditReadError, AuditStore, BoundError, ChangeRecords, PatientRecords, parse_bound};
pub use sink::{AuditOpenError, AuditOptions, AuditTarget, VerifyFailure, open, verify};

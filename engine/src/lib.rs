#![doc = include_str!("../README.md")]

mod authorize;
mod bundle;
mod cache;
mod clock;
mod condition;
pub mod consent;
mod constants;
mod context;
mod decision;
mod error;
mod facts;
mod index;
pub mod limits;
mod obligation;
mod partition;
mod plan;
mod rules;
mod search;
mod slice;
mod special;
mod store;
mod time;
mod uid;
mod unreadable;

pub use bundle::{BundleSource, PolicyBundle, PolicyKind, PolicySummary, SchemaSource, TemplateLink};
pub use clock::{CLOCK_ATTRIBUTE, EvaluationTime};
pub use decision::{
    AttributeOverlay, Decision, DecisionError, DecisionOptions, DecisionRequest, ForbidErrors, Outcome,
    Reason, RequestEntities, decide, decide_with, decide_with_consents,
};
pub use error::{LoadError, Problem, RequestError, RequestErrorKind};
pub use facts::{ChangeKind, Fact, FactChange, check_request_entities, stored_fact_changes};
pub use obligation::{Obligation, ObligationKind};
pub use partition::{ConsentPartition, ConsentVersion, PATIENT_TYPE, check_consent, consent_subjects};
pub use plan::{
    Alternative, Attribute, Condition, FILTER_OBLIGATION, FhirQuery, FhirSearch, Op, Plan, PlanKind,
    PlanRequest, RECORD_TYPE, RecordFacts, RecordFilter, ResidualPolicy, SEARCH_FILTER, plan,
};
pub use search::{Found, SearchOutcome, SearchRequest, Searched, search};
pub use special::{OPENS_LABELS, SPECIAL_CATEGORIES, SpecialCategories, SpecialLabel};
pub use store::{EntityPatch, EntityStore, ParsedPatch, PatchOutcome, Presence, StoredEntity};
pub use uid::{parse_uid, uid_from_parts};
pub use unreadable::{INDEPENDENT_OF_CONSENTS, UnreadableConsent};

/// Re-exported so callers use the exact Cedar version the engine was built with.
pub use cedar_policy;

//! FHIR `Consent` resources, compiled into Cedar policies.
//!
//! Patients state their choices as FHIR Consents; the engine decides with
//! Cedar. Rather than interpreting consents at decision time, each consent is
//! compiled once into ordinary Cedar policies over the shared schema, so that
//! consents, the base policy pack and the scope index all work the same way
//! and a decision's reasons name the consent provision that produced it.
//!
//! Parsing is strict where leniency would be unsafe: anything that would
//! narrow a provision but that we cannot enforce (`modifierExtension`,
//! `provision.expression`, unknown codes, unresolvable actors) is refused,
//! because ignoring it would silently widen a permit or weaken a deny. Other
//! unknown elements are ignored, as FHIR intends.
//!
//! A consent grants only what it says: with no `action`, access (read and
//! search); `create` and `update` only where a consent action names them;
//! `delete` never. Its size is limited (see [`MAX_PROVISIONS`] and the
//! other limits), and it compiles into conditions whose depth does not grow
//! with its lists, so that a consent that is accepted can be decided.
//!
//! Several consents of one patient combine by deny-overrides (Cedar's own
//! rule), not HL7 LEAP's "most recent consent wins": a deny the patient
//! stated somewhere is never lost.

mod compile;
mod fhir;

use std::collections::BTreeSet;

use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::time;

pub use compile::compile;
pub use fhir::FhirBase;
pub use fhir::limits::{
    MAX_COMPILED_VALUES, MAX_CONSENT_VALUES, MAX_LIST_VALUES, MAX_NESTING, MAX_PROVISIONS,
};

/// Which FHIR release a consent was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FhirVersion {
    /// FHIR R4 (4.0.1): `patient` and a single root `provision` with a `type`.
    R4,
    /// FHIR R5 (5.0.0): `subject`, a root `decision` and a list of `provision`s.
    R5,
}

impl FhirVersion {
    /// The release's name, `R4` or `R5`.
    pub fn name(self) -> &'static str {
        match self {
            Self::R4 => "R4",
            Self::R5 => "R5",
        }
    }
}

/// FHIR `Consent.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    /// `draft`: still being written; never counts.
    Draft,
    /// `proposed`: offered to the patient but not yet agreed; never counts.
    Proposed,
    /// `active`: in force.
    Active,
    /// `rejected` (R4), or `not-done` (R5): the patient declined; never counts.
    Rejected,
    /// `inactive`: no longer in force.
    Inactive,
    /// `entered-in-error`: recorded by mistake.
    EnteredInError,
}

impl ConsentStatus {
    /// The FHIR code, for example `entered-in-error`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Proposed => "proposed",
            Self::Active => "active",
            Self::Rejected => "rejected",
            Self::Inactive => "inactive",
            Self::EnteredInError => "entered-in-error",
        }
    }
}

/// A parsed, validated consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    id: Option<String>,
    status: ConsentStatus,
    version: FhirVersion,
    patient: String,
    /// The effect of the root node; each level down flips it.
    decision: Effect,
    root: Node,
}

impl Consent {
    /// Parses and validates a FHIR R4 or R5 `Consent` resource whose
    /// references are all relative (`Patient/p-100`).
    pub fn from_json(value: &serde_json::Value) -> Result<Consent, ConsentError> {
        fhir::parse(value, None)
    }

    /// [`Consent::from_json`] on a server whose FHIR base is `base`: an
    /// absolute reference binds when it is under `base`, and is refused
    /// (naming its field) when it points elsewhere or no base is given.
    pub fn from_json_under(
        value: &serde_json::Value,
        base: Option<&FhirBase>,
    ) -> Result<Consent, ConsentError> {
        fhir::parse(value, base)
    }

    /// Checks a consent id against FHIR's `id` datatype; see the consent API.
    pub fn check_id(id: &str) -> Result<(), ConsentError> {
        fhir::check_id(id)
    }

    /// `Consent.id` as sent, if any.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// `Consent.status`.
    pub fn status(&self) -> ConsentStatus {
        self.status
    }

    /// The FHIR release the consent was written in.
    pub fn fhir_version(&self) -> FhirVersion {
        self.version
    }

    /// The logical id of the patient the consent is about, e.g. `p-100` for `Patient/p-100`.
    pub fn patient(&self) -> &str {
        &self.patient
    }

    /// Whether the consent is in force (`status` is `active`); only then does it compile to policies.
    pub fn is_active(&self) -> bool {
        self.status == ConsentStatus::Active
    }
}

/// Why a consent was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error, Diagnostic)]
#[error("`{path}`: {message}")]
#[diagnostic(code(consentry::consent))]
pub struct ConsentError {
    /// Whether the JSON was unusable or the FHIR content cannot be honoured.
    pub kind: ConsentErrorKind,
    /// The JSON path of the problem in FHIR style, e.g. `provision.provision[1].actor[0].reference`.
    pub path: String,
    /// What was wrong, lowercase.
    pub message: String,
}

impl ConsentError {
    fn malformed(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ConsentErrorKind::Malformed, path: path.into(), message: message.into() }
    }

    fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { kind: ConsentErrorKind::Invalid, path: path.into(), message: message.into() }
    }
}

/// How a consent was unusable. The host maps these onto HTTP status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentErrorKind {
    /// Not JSON of the right shape, e.g. a number where a string belongs (400).
    Malformed,
    /// Well-formed FHIR that we cannot honour or that breaks FHIR's rules (422).
    Invalid,
}

/// Permit or deny: the effect of one provision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Permit,
    Deny,
}

impl Effect {
    fn flipped(self) -> Self {
        match self {
            Self::Permit => Self::Deny,
            Self::Deny => Self::Permit,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Permit => "permit",
            Self::Deny => "deny",
        }
    }
}

/// The schema's actions that consent action codes map onto, in the order they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Read,
    Search,
    Create,
    Update,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Search => "search",
            Self::Create => "create",
            Self::Update => "update",
        }
    }
}

/// The FHIR resource types a consent may name as its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActorKind {
    Practitioner,
    Patient,
    RelatedPerson,
    Organization,
    CareTeam,
    Group,
}

impl ActorKind {
    fn from_type(name: &str) -> Option<Self> {
        Some(match name {
            "Practitioner" => Self::Practitioner,
            "Patient" => Self::Patient,
            "RelatedPerson" => Self::RelatedPerson,
            "Organization" => Self::Organization,
            "CareTeam" => Self::CareTeam,
            "Group" => Self::Group,
            _ => return None,
        })
    }

    fn type_name(self) -> &'static str {
        match self {
            Self::Practitioner => "Practitioner",
            Self::Patient => "Patient",
            Self::RelatedPerson => "RelatedPerson",
            Self::Organization => "Organization",
            Self::CareTeam => "CareTeam",
            Self::Group => "Group",
        }
    }

    /// Collective actors match their members (`principal in …`), the others only themselves.
    fn is_collective(self) -> bool {
        matches!(self, Self::Organization | Self::CareTeam | Self::Group)
    }
}

/// One `provision.actor`, resolved to a Cedar entity.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Actor {
    kind: ActorKind,
    id: String,
}

/// One `provision.data` with meaning `instance`: a `Record` by its logical id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RecordRef {
    id: String,
    /// `Type/id` as named by the consent, for reasons.
    reference: String,
}

/// A `period` or `dataPeriod` with at least one bound Cedar can express.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Window {
    start: Option<time::DateTime>,
    end: Option<time::DateTime>,
}

/// One attribute of a provision: the values inside it are alternatives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attr {
    Period(Window),
    Actors(Vec<Actor>),
    Purposes(Vec<String>),
    ResourceTypes(Vec<String>),
    /// `code` and `documentType` codings, as `system|code` or a bare code.
    Codes(Vec<String>),
    Labels(Vec<String>),
    DataPeriod(Window),
    Records(Vec<RecordRef>),
}

impl Attr {
    /// How many values the attribute lists (a period counts as one).
    fn values(&self) -> usize {
        match self {
            Self::Period(_) | Self::DataPeriod(_) => 1,
            Self::Actors(actors) => actors.len(),
            Self::Purposes(codes) | Self::ResourceTypes(codes) | Self::Codes(codes) | Self::Labels(codes) => {
                codes.len()
            }
            Self::Records(records) => records.len(),
        }
    }
}

/// A provision (or, for R5, the consent itself) with its own conditions and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// `root`, or the position below it such as `provision[1].provision[0]`.
    label: String,
    /// The actions this node is limited to; `None` when it has no `action`
    /// (then a permit covers access, a deny every action).
    actions: Option<BTreeSet<Action>>,
    /// The other attributes, all of which must hold.
    attrs: Vec<Attr>,
    /// Nested provisions: exceptions with the opposite effect.
    children: Vec<Node>,
}

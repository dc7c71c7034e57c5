//! One decision: from a caller's request to Allow or Deny, with its reasons.

use std::collections::HashSet;

use cedar_policy::{Context, EntityUid, RequestValidationError};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::authorize::{Rule, authorize};
use crate::bundle::{PolicyBundle, collect_escaped_uids};
use crate::clock::{CLOCK_ATTRIBUTE, EvaluationTime};
use crate::error::{RequestError, describe};
use crate::facts::{SentError, parse_request_entities};
use crate::index::Subject;
use crate::limits;
use crate::obligation::Obligation;
use crate::partition::ConsentPartition;
use crate::slice::{SliceError, slice};
use crate::store::EntityStore;
use crate::unreadable;

/// A decision request, with uids already parsed and everything else as the caller sent it.
#[derive(Debug, Clone)]
pub struct DecisionRequest {
    /// Who is acting.
    pub principal: EntityUid,
    /// What they want to do.
    pub action: EntityUid,
    /// What they want to do it to.
    pub resource: EntityUid,
    /// The Cedar context as a JSON object; `None` means empty.
    pub context: Option<Value>,
    /// Entities in Cedar's entity JSON format that exist for this request
    /// only. Under [`RequestEntities::AddOnly`] one with the uid of a stored
    /// entity may add attributes and tags to it but change nothing it
    /// holds; under [`RequestEntities::Replace`] it shadows it.
    pub entities: Vec<Value>,
    /// Attributes laid over an entity for this request only (AuthZEN
    /// `properties`), under the same rule as `entities`.
    pub overlays: Vec<AttributeOverlay>,
    /// Entities from the host's `enrich` plugins, already checked against
    /// the store and what each plugin was granted: each replaces the stored
    /// entity and any sent one with its uid, whatever the options say.
    /// Never filled from a caller's input.
    pub enriched_entities: Vec<Value>,
    /// The evaluation time, from the host's clock. When set, it is the
    /// context's `now` and a caller-supplied `now` is refused.
    pub now: Option<EvaluationTime>,
}

impl DecisionRequest {
    /// A request with an empty context, no request entities and no evaluation time.
    pub fn new(principal: EntityUid, action: EntityUid, resource: EntityUid) -> Self {
        Self {
            principal,
            action,
            resource,
            context: None,
            entities: Vec::new(),
            overlays: Vec::new(),
            enriched_entities: Vec::new(),
            now: None,
        }
    }

    /// The uids the request names: principal, action, resource, entities
    /// in the context, and the entities and overlays it sends. A host with
    /// a bounded store loads these before deciding, so that most decisions
    /// find their slice loaded the first time.
    pub fn named_uids(&self) -> Vec<EntityUid> {
        let mut uids: HashSet<EntityUid> =
            [&self.principal, &self.action, &self.resource].into_iter().cloned().collect();
        if let Some(context) = &self.context {
            collect_escaped_uids(context, &mut uids);
        }
        for sent in &self.entities {
            if let Some(Ok(uid)) = sent.get("uid").map(|uid| crate::uid::parse_uid(uid, "uid")) {
                uids.insert(uid);
            }
        }
        uids.extend(self.overlays.iter().map(|overlay| overlay.uid.clone()));
        uids.into_iter().collect()
    }
}

/// Attributes that override or extend one entity's attributes for one request.
#[derive(Debug, Clone)]
pub struct AttributeOverlay {
    /// The entity to lay the attributes over; it need not be stored.
    pub uid: EntityUid,
    /// The attributes, in Cedar's entity JSON attribute format.
    pub attributes: Map<String, Value>,
    /// Where they came from in the caller's request, for error messages.
    pub field: String,
}

/// How a decision came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A permit policy was satisfied and no forbid was.
    Allow,
    /// A forbid policy was satisfied.
    Forbidden,
    /// No permit policy was satisfied.
    NotPermitted,
    /// Evaluation could not complete; denied so that a fault never grants access.
    FailedClosed,
}

impl Outcome {
    /// Its name in answers, headers and test files, such as `not_permitted`.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Forbidden => "forbidden",
            Outcome::NotPermitted => "not_permitted",
            Outcome::FailedClosed => "failed_closed",
        }
    }
}

/// A determining policy and its human-readable `@reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The policy id.
    pub policy: String,
    /// The policy's `@reason` annotation, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An error met while deciding, with the policy it happened in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecisionError {
    /// The policy being evaluated, or `None` for a fault outside any policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What went wrong.
    pub message: String,
}

/// The answer to a [`DecisionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow, or which kind of Deny.
    pub outcome: Outcome,
    /// The determining policies: satisfied permits for an Allow, satisfied
    /// forbids for a forbidden Deny, the forbids that could not be evaluated
    /// for a `failed_closed` one, and `special-categories` when the only
    /// satisfied permits do not open a record's special labels.
    pub reasons: Vec<Reason>,
    /// Evaluation errors. An erroring permit never grants; an erroring
    /// forbid denies unless [`ForbidErrors::Skip`] skips it, as Cedar does.
    pub errors: Vec<DecisionError>,
    /// Obligations and advice of the determining policies.
    pub obligations: Vec<Obligation>,
    /// Entities a bounded store had not loaded and the decision needed: it
    /// was not made (a `failed_closed` Deny). A host that loads them from
    /// its directory and decides again gets the real answer.
    #[serde(skip)]
    pub unloaded: Vec<EntityUid>,
}

impl Decision {
    /// Whether access is granted.
    pub fn is_allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    /// `Allow` or `Deny`, as answers and records spell it.
    pub fn verdict(&self) -> &'static str {
        if self.is_allowed() { "Allow" } else { "Deny" }
    }

    /// One sentence that explains the decision to a person, naming the
    /// determining policies or consents, or the missing legal basis.
    pub fn summary(&self) -> String {
        let named = || {
            self.reasons
                .iter()
                .map(|r| match &r.reason {
                    Some(reason) => format!("`{}` ({reason})", r.policy),
                    None => format!("`{}`", r.policy),
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        match self.outcome {
            Outcome::Allow => format!("allowed by {}", named()),
            Outcome::Forbidden => format!("denied: forbidden by {}", named()),
            Outcome::NotPermitted if !self.reasons.is_empty() => {
                format!("denied: not permitted: {}", named())
            }
            Outcome::NotPermitted => "denied: no policy or consent permits this request, so it has no legal \
                                      basis (GDPR Art. 6 and 9(2)(a))"
                .to_owned(),
            Outcome::FailedClosed if !self.reasons.is_empty() => {
                let faults: Vec<String> = self
                    .errors
                    .iter()
                    .filter(|e| self.reasons.iter().any(|r| e.policy.as_deref() == Some(r.policy.as_str())))
                    .map(|e| format!("`{}`: {}", e.policy.as_deref().unwrap_or_default(), e.message))
                    .collect();
                format!(
                    "denied: {} could not be evaluated, and a forbid that cannot be evaluated denies: {}",
                    named(),
                    faults.join("; ")
                )
            }
            Outcome::FailedClosed => {
                let faults: Vec<&str> = self.errors.iter().map(|e| e.message.as_str()).collect();
                format!("denied because the decision could not be made: {}", faults.join("; "))
            }
        }
    }

    /// A Deny for a fault that kept the decision from being made.
    pub fn fail_closed(message: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::FailedClosed,
            reasons: Vec::new(),
            errors: vec![DecisionError { policy: None, message: message.into() }],
            obligations: Vec::new(),
            unloaded: Vec::new(),
        }
    }

    /// The Deny of a decision that needs entities a bounded store has not loaded.
    pub fn not_loaded(unloaded: Vec<EntityUid>) -> Self {
        let named: Vec<String> = unloaded.iter().take(5).map(|uid| format!("`{uid}`")).collect();
        let more = unloaded.len().saturating_sub(named.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        let mut decision = Self::fail_closed(format!(
            "the entities {}{more} could not be loaded from the directory in time",
            named.join(", ")
        ));
        decision.unloaded = unloaded;
        decision
    }
}

/// How a decision treats what plain Cedar leaves to the application.
///
/// The defaults are the fail-closed ones a health PDP needs; the
/// alternatives reproduce plain Cedar (and cedar-agent) exactly, for
/// applications that depend on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecisionOptions {
    /// What a forbid whose evaluation errors does.
    pub forbid_errors: ForbidErrors,
    /// What entities and attributes sent with a request may do to stored ones.
    pub request_entities: RequestEntities,
}

impl DecisionOptions {
    /// Plain Cedar's behaviour: an erroring forbid is skipped, and request
    /// entities replace stored ones.
    pub fn cedar_exact() -> Self {
        Self { forbid_errors: ForbidErrors::Skip, request_entities: RequestEntities::Replace }
    }
}

/// What a forbid whose evaluation errors does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForbidErrors {
    /// It counts as satisfied: the decision is a Deny (`failed_closed`)
    /// naming the policy and its error.
    #[default]
    Deny,
    /// It is skipped, as Cedar does.
    Skip,
}

/// What entities and attributes sent with a request may do to stored ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestEntities {
    /// They may add entities and attributes the store lacks, never change
    /// a stored one.
    #[default]
    AddOnly,
    /// They replace stored entities with the same uid, as in cedar-agent.
    Replace,
}

/// Decides one request against a bundle and a store.
///
/// A [`RequestError`] means the caller's input was unusable. Faults that are
/// not the caller's (which should not happen) give a [`Outcome::FailedClosed`] Deny.
pub fn decide(
    bundle: &PolicyBundle,
    store: &EntityStore,
    request: &DecisionRequest,
) -> Result<Decision, RequestError> {
    decide_with_consents(bundle, &[], store, request)
}

/// Decides one request against a bundle, the consent partitions of the
/// patients concerned (see [`crate::consent_subjects`]) and a store. The
/// pack's policies and the consents' combine under Cedar's rule: any
/// satisfied forbid denies, else any satisfied permit allows.
pub fn decide_with_consents(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    request: &DecisionRequest,
) -> Result<Decision, RequestError> {
    decide_with(bundle, partitions, store, request, &DecisionOptions::default())
}

/// [`decide_with_consents`] under explicit [`DecisionOptions`].
///
/// A partition that set aside consents it cannot evaluate still decides,
/// settled by the rule of [`crate::unreadable`]: every caller of the
/// engine gets it, so none can decide as if those consents did not exist.
pub fn decide_with(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    request: &DecisionRequest,
    options: &DecisionOptions,
) -> Result<Decision, RequestError> {
    let decision = decide_without_unreadable(bundle, partitions, store, request, options)?;
    let decision = unreadable::settle(bundle, decision, partitions);
    Ok(crate::plan::search::carry_filter(bundle, partitions, store, request, options, decision))
}

/// The decision over the partitions' consents that could be evaluated.
fn decide_without_unreadable(
    bundle: &PolicyBundle,
    partitions: &[&ConsentPartition],
    store: &EntityStore,
    request: &DecisionRequest,
    options: &DecisionOptions,
) -> Result<Decision, RequestError> {
    if let Some(stale) = partitions.iter().find(|p| !p.compiled_for(bundle)) {
        return Ok(Decision::fail_closed(format!(
            "the consents of patient `{}` were compiled for another policy bundle",
            stale.patient()
        )));
    }
    let schema = bundle.schema();
    if schema.is_some() && !bundle.declares(&request.action) {
        return Err(RequestError::schema(
            "action",
            format!("action `{}` is not declared in the schema", request.action),
        ));
    }
    let (context, conforms) = parse_context(bundle, request)?;
    let request_entities = match parse_request_entities(request, store, schema, options.request_entities) {
        Ok(entities) => entities,
        Err(SentError::Caller(error)) => return Err(error),
        Err(SentError::Fault(fault)) => return Ok(Decision::fail_closed(fault)),
        Err(SentError::Unloaded(uid)) => return Ok(Decision::not_loaded(vec![uid])),
    };
    let mut roots = vec![request.principal.clone(), request.action.clone(), request.resource.clone()];
    if let Some(context) = &request.context {
        let mut referenced = HashSet::new();
        collect_escaped_uids(context, &mut referenced);
        roots.extend(referenced);
    }
    let rule_sets = std::iter::once(&bundle.rules).chain(partitions.iter().map(|p| &p.rules));
    let slice = match slice(bundle, store, &request_entities, roots, rule_sets.clone()) {
        Ok(slice) => slice,
        Err(SliceError::Invalid(e)) => {
            return Ok(Decision::fail_closed(format!("cannot assemble entities: {e}")));
        }
        Err(SliceError::Unloaded(uids)) => return Ok(Decision::not_loaded(uids)),
    };
    let entities = slice.entities();
    // A request whose shape is already known to fit the schema skips
    // Cedar's second check of it; anything else gets Cedar's check and wording.
    let checked = conforms && bundle.admits(&request.action, &request.principal, &request.resource);
    let cedar_request = cedar_policy::Request::new(
        request.principal.clone(),
        request.action.clone(),
        request.resource.clone(),
        context,
        if checked { None } else { schema },
    )
    .map_err(request_validation_error)?;
    let principal = Subject::new(&request.principal, entities);
    let action = Subject::new(&request.action, entities);
    let resource = Subject::new(&request.resource, entities);
    let candidates = rule_sets.flat_map(|rules| rules.applicable(&principal, &action, &resource));
    let now = request.now.as_ref().map(EvaluationTime::unix_millis);
    let in_force = candidates.filter(|c| c.notes.window.is_none_or(|w| w.holds(now, c.policy.effect())));
    let rule = Rule {
        forbid_errors: options.forbid_errors,
        special: bundle.special_categories(),
        action: &request.action,
        resource: &request.resource,
    };
    Ok(authorize(&cedar_request, entities, in_force, &rule))
}

/// The request's context, and whether it is already known to fit the schema.
pub(crate) fn parse_context(
    bundle: &PolicyBundle,
    request: &DecisionRequest,
) -> Result<(Context, bool), RequestError> {
    let schema = bundle.schema();
    let empty = Map::new();
    let object = match &request.context {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return Err(RequestError::malformed("context", "expected a JSON object")),
    };
    // Cedar's conversion and evaluation of context values recurse: every
    // caller of the engine gets the limit, not only the host's.
    if let Some(context) = &request.context {
        limits::check_context_json(context).map_err(|e| RequestError::over_limit(&e))?;
    }
    let now = match &request.now {
        Some(_) if object.contains_key(CLOCK_ATTRIBUTE) => {
            return Err(RequestError::malformed(
                format!("context.{CLOCK_ATTRIBUTE}"),
                "the evaluation time comes from the server's clock and may not be sent",
            ));
        }
        Some(now) if bundle.plain_contexts.takes_clock(&request.action) => Some(now),
        _ => None,
    };
    if let Some(context) = bundle.plain_contexts.build(&request.action, object, now) {
        let conforms =
            schema.is_some() && bundle.plain_contexts.conforms(&request.action, object, now.is_some());
        return Ok((context, conforms));
    }
    let mut object = object.clone();
    if let Some(now) = now {
        object.insert(CLOCK_ATTRIBUTE.to_owned(), now.context_value());
    }
    let context = Context::from_json_value(Value::Object(object), schema.map(|s| (s, &request.action)))
        .map_err(|e| {
            if schema.is_some() {
                RequestError::schema("context", describe(&e))
            } else {
                RequestError::malformed("context", describe(&e))
            }
        })?;
    Ok((context, false))
}

pub(crate) fn request_validation_error(error: RequestValidationError) -> RequestError {
    let field = match &error {
        RequestValidationError::UndeclaredAction(_) | RequestValidationError::ExternalAction(_) => "action",
        RequestValidationError::UndeclaredPrincipalType(_)
        | RequestValidationError::InvalidPrincipalType(_) => "principal",
        RequestValidationError::UndeclaredResourceType(_)
        | RequestValidationError::InvalidResourceType(_) => "resource",
        RequestValidationError::InvalidContext(_) | RequestValidationError::TypeOfContext(_) => "context",
        _ => "request",
    };
    RequestError::schema(field, describe(&error))
}

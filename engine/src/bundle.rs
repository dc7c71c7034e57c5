//! A policy bundle: the schema, the policies and their index, loaded and
//! validated as one immutable unit.
//!
//! The host swaps whole bundles atomically, so a decision never sees a
//! half-applied change, and a bundle that fails validation never replaces
//! the one in force.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, Schema, SlotId, Template, ValidationMode,
    Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::context::PlainContexts;
use crate::error::{LoadError, Problem, problem_of};
use crate::limits::{self, LimitExceeded};
use crate::rules::RuleSet;
use crate::special::SpecialCategories;
use crate::store::{SCHEMA_GENERATION, StoredEntity};
use crate::uid::parse_uid;

/// The text a schema was written in.
#[derive(Debug, Clone, Copy)]
pub enum SchemaSource<'a> {
    /// Cedar's human-readable schema syntax (`.cedarschema`).
    CedarText(&'a str),
    /// Cedar's JSON schema format.
    Json(&'a str),
}

/// A template-linked policy: which template, under which id, with which slot values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateLink {
    /// Id of the template to link.
    pub template: String,
    /// Id of the new linked policy.
    pub id: String,
    /// Slot values, keyed `?principal` / `?resource`; each value is a uid.
    pub values: HashMap<String, Value>,
}

/// Everything a bundle was built from, kept so it can be served back verbatim.
#[derive(Debug, Clone, Default)]
pub struct BundleSource {
    /// The schema text, if there is a schema.
    pub schema: Option<String>,
    /// Whether `schema` is JSON rather than Cedar schema text.
    pub schema_is_json: bool,
    /// The Cedar policy text.
    pub policies: String,
    /// Template links.
    pub links: Vec<TemplateLink>,
}

/// A validated, indexed, immutable set of policies with its schema.
#[derive(Debug)]
pub struct PolicyBundle {
    pub(crate) schema: Option<Arc<Schema>>,
    /// Built once: consent partitions are validated against the same schema.
    pub(crate) validator: Option<StrictValidator>,
    pub(crate) policies: PolicySet,
    pub(crate) rules: RuleSet,
    pub(crate) action_entities: foldhash::HashMap<EntityUid, Arc<StoredEntity>>,
    /// Per action the schema declares, the principal and resource types its `appliesTo` admits.
    pub(crate) applies_to: HashMap<EntityUid, (HashSet<EntityTypeName>, HashSet<EntityTypeName>)>,
    pub(crate) plain_contexts: PlainContexts,
    ordered_ids: Vec<PolicyId>,
    source: BundleSource,
    /// Labels only a consent naming them opens (see [`crate::special`]).
    special: SpecialCategories,
    hash: String,
}

impl PolicyBundle {
    /// Parses, links and (when a schema is given) strictly validates a bundle.
    /// Every problem found is reported, not only the first.
    pub fn load(
        schema: Option<SchemaSource<'_>>,
        policies: &str,
        links: &[TemplateLink],
    ) -> Result<Self, LoadError> {
        check_limits(schema, policies, links)?;
        let parsed_schema = schema.map(parse_schema).transpose()?;
        let (set, ordered_ids) = build_policy_set(policies, links)?;
        let validator = parsed_schema.clone().map(|schema| StrictValidator(Validator::new(schema)));
        if let Some(validator) = &validator {
            validator.validate(&set)?;
        }
        let source = BundleSource {
            schema: schema.map(|s| match s {
                SchemaSource::CedarText(t) | SchemaSource::Json(t) => t.to_owned(),
            }),
            schema_is_json: matches!(schema, Some(SchemaSource::Json(_))),
            policies: policies.to_owned(),
            links: links.to_vec(),
        };
        let plain_contexts = PlainContexts::new(schema);
        Self::assemble(parsed_schema, validator, set, ordered_ids, source, plain_contexts)
    }

    fn assemble(
        schema: Option<Schema>,
        validator: Option<StrictValidator>,
        set: PolicySet,
        ordered_ids: Vec<PolicyId>,
        source: BundleSource,
        plain_contexts: PlainContexts,
    ) -> Result<Self, LoadError> {
        let mut action_entities = foldhash::HashMap::default();
        let mut applies_to = HashMap::new();
        if let Some(schema) = &schema {
            let actions = schema.action_entities().map_err(|e| {
                LoadError::Schema(Box::new(Problem::message(format!("cannot derive action entities: {e}"))))
            })?;
            for action in actions.iter() {
                let stored = StoredEntity::new(action.clone());
                let closed: &cedar_policy_core::ast::Entity = action.as_ref();
                stored.remember_closed(SCHEMA_GENERATION, Arc::new(closed.clone()));
                action_entities.insert(action.uid(), Arc::new(stored));
            }
            for action in schema.actions() {
                let principals =
                    schema.principals_for_action(action).into_iter().flatten().cloned().collect();
                let resources = schema.resources_for_action(action).into_iter().flatten().cloned().collect();
                applies_to.insert(action.clone(), (principals, resources));
            }
        }
        let evaluable: Vec<Policy> = set.policies().cloned().collect();
        let rules = RuleSet::new(evaluable)?;
        let hash = bundle_hash(&source);
        Ok(Self {
            schema: schema.map(Arc::new),
            validator,
            policies: set,
            rules,
            action_entities,
            applies_to,
            plain_contexts,
            ordered_ids,
            source,
            special: SpecialCategories::default(),
            hash,
        })
    }

    /// A bundle with a new schema and the current policies, validated again.
    pub fn with_schema(&self, schema: Option<SchemaSource<'_>>) -> Result<Self, LoadError> {
        Self::load(schema, &self.source.policies, &self.source.links)
            .map(|bundle| bundle.with_special_categories(self.special.clone()))
    }

    /// A bundle with new policies under the current schema.
    pub fn with_policies(&self, policies: &str, links: &[TemplateLink]) -> Result<Self, LoadError> {
        let schema = self.source.schema.as_deref().map(|text| {
            if self.source.schema_is_json { SchemaSource::Json(text) } else { SchemaSource::CedarText(text) }
        });
        Self::load(schema, policies, links).map(|bundle| bundle.with_special_categories(self.special.clone()))
    }

    /// The same bundle with these special categories. They change
    /// decisions, so they are part of the bundle's hash.
    pub fn with_special_categories(mut self, special: SpecialCategories) -> Self {
        self.hash = bundle_hash(&self.source);
        if !special.is_empty() {
            let mut hasher = Sha256::new();
            hasher.update(self.hash.as_bytes());
            if let Ok(json) = serde_json::to_vec(&special) {
                hasher.update(json);
            }
            self.hash = hex(&hasher.finalize());
        }
        self.special = special;
        self
    }

    /// The labels that only a consent naming them opens.
    pub fn special_categories(&self) -> &SpecialCategories {
        &self.special
    }

    /// The schema, when the bundle has one.
    pub fn schema(&self) -> Option<&Schema> {
        self.schema.as_deref()
    }

    /// What the bundle was built from.
    pub fn source(&self) -> &BundleSource {
        &self.source
    }

    /// SHA-256 over the schema, the policy text and the links: names the policy set in force.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Every static, template and linked policy, in text order then link order.
    pub fn policy_summaries(&self) -> Vec<PolicySummary> {
        self.ordered_ids.iter().filter_map(|id| self.summary(id)).collect()
    }

    fn summary(&self, id: &PolicyId) -> Option<PolicySummary> {
        if let Some(template) = self.policies.template(id) {
            return Some(PolicySummary {
                id: id.to_string(),
                kind: PolicyKind::Template,
                effect: effect_name(template.effect()),
                text: template.to_string(),
                annotations: annotations(template.annotations()),
                template: None,
            });
        }
        let policy = self.policies.policy(id)?;
        let kind = if policy.is_static() { PolicyKind::Static } else { PolicyKind::Linked };
        Some(PolicySummary {
            id: id.to_string(),
            kind,
            effect: effect_name(policy.effect()),
            text: policy.to_string(),
            annotations: annotations(policy.annotations()),
            template: policy.template_id().map(ToString::to_string),
        })
    }

    /// Whether the schema declares `action`.
    pub(crate) fn declares(&self, action: &EntityUid) -> bool {
        self.applies_to.contains_key(action)
    }

    /// Whether the schema's `appliesTo` for `action` admits these principal and resource types.
    pub(crate) fn admits(&self, action: &EntityUid, principal: &EntityUid, resource: &EntityUid) -> bool {
        self.applies_to.get(action).is_some_and(|(principals, resources)| {
            principals.contains(principal.type_name()) && resources.contains(resource.type_name())
        })
    }

    /// The schema's actions whose `appliesTo` admits these principal and
    /// resource types, in uid order: the candidates of an action search.
    /// Empty without a schema.
    pub fn actions_for(&self, principal: &EntityTypeName, resource: &EntityTypeName) -> Vec<EntityUid> {
        let mut actions: Vec<EntityUid> = self
            .applies_to
            .iter()
            .filter(|(_, (principals, resources))| {
                principals.contains(principal) && resources.contains(resource)
            })
            .map(|(action, _)| action.clone())
            .collect();
        actions.sort_by_cached_key(ToString::to_string);
        actions
    }

    /// Number of evaluable (static and linked) policies.
    pub fn policy_count(&self) -> usize {
        self.rules.len()
    }
}

/// What kind of policy a [`PolicySummary`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// A plain policy.
    Static,
    /// A template, evaluated only through its links.
    Template,
    /// A policy linked from a template.
    Linked,
}

/// One policy as listed by the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct PolicySummary {
    /// The policy id (the `@id` annotation, or Cedar's `policyN`).
    pub id: String,
    /// Static, template or linked.
    pub kind: PolicyKind,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// The policy's Cedar text.
    pub text: String,
    /// Its annotations.
    pub annotations: HashMap<String, String>,
    /// For a linked policy, its template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

fn effect_name(effect: cedar_policy::Effect) -> &'static str {
    match effect {
        cedar_policy::Effect::Permit => "permit",
        cedar_policy::Effect::Forbid => "forbid",
    }
}

fn annotations<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> HashMap<String, String> {
    items.map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// Measures the text against the [limits](crate::limits) before Cedar,
/// whose parsers recurse, sees any of it.
fn check_limits(
    schema: Option<SchemaSource<'_>>,
    policies: &str,
    links: &[TemplateLink],
) -> Result<(), LimitExceeded> {
    match schema {
        Some(SchemaSource::CedarText(text)) => limits::check_schema_text(text)?,
        Some(SchemaSource::Json(text)) => limits::check_schema_json_size(text)?,
        None => {}
    }
    limits::check_policy_text(policies)?;
    limits::check_template_links(links.len())
}

fn parse_schema(source: SchemaSource<'_>) -> Result<Schema, LoadError> {
    match source {
        SchemaSource::CedarText(text) => Schema::from_cedarschema_str(text)
            .map(|(schema, _warnings)| schema)
            .map_err(|e| LoadError::Schema(Box::new(problem_of(&e)))),
        SchemaSource::Json(text) => {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                LoadError::Schema(Box::new(Problem {
                    offset: json_offset(text, e.line(), e.column()),
                    ..Problem::message(format!("schema is not valid JSON: {e}"))
                }))
            })?;
            limits::check_schema_json(&value)?;
            Schema::from_json_value(value).map_err(|e| LoadError::Schema(Box::new(problem_of(&e))))
        }
    }
}

/// The byte offset of serde_json's 1-based `line` and `column` in `text`.
fn json_offset(text: &str, line: usize, column: usize) -> Option<usize> {
    let line_start: usize = text.split_inclusive('\n').take(line.checked_sub(1)?).map(str::len).sum();
    Some(line_start + column.saturating_sub(1)).filter(|offset| *offset <= text.len())
}

/// Parses the text, gives every policy and template its `@id`, and links
/// templates. Returns the set and its ids in the order the author wrote them.
pub(crate) fn build_policy_set(
    text: &str,
    links: &[TemplateLink],
) -> Result<(PolicySet, Vec<PolicyId>), LoadError> {
    let parsed = PolicySet::from_str(text).map_err(|errors| {
        LoadError::Policies(errors.iter().map(|e| Problem::from_diagnostic(e, None)).collect())
    })?;
    let mut written: Vec<(usize, Written<'_>)> = parsed
        .templates()
        .map(|t| (default_position(t.id()), Written::Template(t)))
        .chain(parsed.policies().map(|p| (default_position(p.id()), Written::Policy(p))))
        .collect();
    written.sort_by_key(|(position, _)| *position);
    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    let mut ordered = Vec::new();
    for (_, item) in written {
        let (annotation, default) = match item {
            Written::Template(t) => (t.annotation("id"), t.id()),
            Written::Policy(p) => (p.annotation("id"), p.id()),
        };
        let id = annotation.map_or_else(|| default.clone(), PolicyId::new);
        if ordered.contains(&id) {
            problems.push(Problem::message(format!("duplicate policy id `{id}`")));
            continue;
        }
        let added = match item {
            Written::Template(t) => set.add_template(t.new_id(id.clone())),
            Written::Policy(p) => set.add(p.new_id(id.clone())),
        };
        match added {
            Ok(()) => ordered.push(id),
            Err(e) => problems.push(Problem::from_diagnostic(&e, Some(id.to_string()))),
        }
    }
    for (position, link) in links.iter().enumerate() {
        match apply_link(&mut set, link, position) {
            Ok(()) => ordered.push(PolicyId::new(&link.id)),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() { Ok((set, ordered)) } else { Err(LoadError::Policies(problems)) }
}

/// A template or a policy, as it stood in the text.
enum Written<'a> {
    Template(&'a Template),
    Policy(&'a Policy),
}

fn apply_link(set: &mut PolicySet, link: &TemplateLink, position: usize) -> Result<(), Problem> {
    let mut values = HashMap::new();
    for (slot, value) in &link.values {
        let slot_id = match slot.as_str() {
            "?principal" => SlotId::principal(),
            "?resource" => SlotId::resource(),
            other => {
                return Err(Problem::message(format!(
                    "links[{position}].values: unknown slot `{other}`, expected `?principal` or `?resource`"
                )));
            }
        };
        let uid = parse_uid(value, &format!("links[{position}].values.{slot}"))
            .map_err(|e| Problem::message(e.to_string()))?;
        values.insert(slot_id, uid);
    }
    set.link(PolicyId::new(&link.template), PolicyId::new(&link.id), values).map_err(|e| Problem {
        policy_id: Some(link.id.clone()),
        message: format!("links[{position}]: {e}"),
        help: None,
        offset: None,
    })
}

/// Cedar numbers policies `policy0`, `policy1`, … in text order; sorting on
/// that number restores the order the author wrote.
fn default_position(id: &PolicyId) -> usize {
    id.to_string().strip_prefix("policy").and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
}

/// Cedar's validator in strict mode, reporting every error.
pub(crate) struct StrictValidator(Validator);

impl std::fmt::Debug for StrictValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StrictValidator")
    }
}

impl StrictValidator {
    pub(crate) fn validate(&self, set: &PolicySet) -> Result<(), LoadError> {
        let result = self.0.validate(set, ValidationMode::Strict);
        if result.validation_passed() {
            return Ok(());
        }
        let problems = result
            .validation_errors()
            .map(|e| Problem::from_diagnostic(e, Some(e.policy_id().to_string())))
            .collect();
        Err(LoadError::Policies(problems))
    }
}

/// Collects every `{"__entity": {...}}` and `{"type", "id"}` object in a JSON
/// value. Over-collecting is harmless: a slice may hold extra entities.
pub(crate) fn collect_escaped_uids(value: &Value, found: &mut HashSet<EntityUid>) {
    match value {
        Value::Object(map) => {
            // Under a schema Cedar reads `{"type", "id", ...}` as an entity
            // reference even with extra keys, so any such object counts.
            if let Ok(uid) = parse_uid(value, "") {
                found.insert(uid);
            }
            map.values().for_each(|v| collect_escaped_uids(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_escaped_uids(v, found)),
        _ => {}
    }
}

fn bundle_hash(source: &BundleSource) -> String {
    let mut hasher = Sha256::new();
    for part in [source.schema.as_deref().unwrap_or(""), &source.policies] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    if let Ok(links) = serde_json::to_vec(&source.links) {
        hasher.update(links);
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

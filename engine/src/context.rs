//! Building the Cedar context without Cedar's JSON parser where that is safe.
//!
//! `Context::from_json_value` costs 12–18 µs even for three string
//! attributes, more than the whole rest of a decision. Most contexts hold
//! only strings, integers, booleans, and sets and records of those, whose
//! meaning does not depend on the schema. For those, the context is built
//! directly from restricted expressions; `Request::new` still checks it
//! against the schema. Anything else (an attribute declared as an entity or
//! an extension type, `__entity`/`__extn` escapes, a non-integer number, an
//! undeclared attribute) goes through Cedar's parser, so its meaning and its
//! errors stay exactly Cedar's.
//!
//! The evaluation time (`now`) is the one extension value on the fast path:
//! the engine writes it itself, from the host's clock, so it is known good.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use cedar_policy::{Context, EntityUid, SchemaFragment};
use cedar_policy_core::ast::{Context as CoreContext, Name, UnreservedId, Value as CoreValue};
use cedar_policy_core::extensions::Extensions;
use serde_json::{Map, Value};
use smol_str::SmolStr;

use crate::bundle::SchemaSource;
use crate::clock::{CLOCK_ATTRIBUTE, EvaluationTime};
use crate::uid::uid_from_parts;

/// Per action, what the schema says about its context.
#[derive(Debug, Default)]
pub(crate) struct PlainContexts {
    schema_present: bool,
    by_action: HashMap<EntityUid, ActionContext>,
}

#[derive(Debug, Default)]
struct ActionContext {
    /// Attributes whose declared type is plain, with that type.
    plain: HashMap<String, PlainType>,
    /// Every attribute the context must have, whatever its type.
    required: HashSet<String>,
    /// Whether the context declares `now: datetime`, for the evaluation time.
    clock: bool,
}

/// A declared type whose JSON form alone says whether a value fits it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PlainType {
    String,
    Long,
    Bool,
    Set(Box<PlainType>),
    /// Attributes with their types and whether each is required; records are closed.
    Record(HashMap<String, (PlainType, bool)>),
}

impl PlainType {
    fn admits(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::String, Value::String(_)) | (Self::Bool, Value::Bool(_)) => true,
            (Self::Long, Value::Number(n)) => n.as_i64().is_some(),
            (Self::Set(element), Value::Array(items)) => items.iter().all(|i| element.admits(i)),
            (Self::Record(attributes), Value::Object(fields)) => {
                fields.iter().all(|(k, v)| attributes.get(k).is_some_and(|(ty, _)| ty.admits(v)))
                    && attributes.iter().all(|(k, (_, required))| !required || fields.contains_key(k))
            }
            _ => false,
        }
    }
}

impl PlainContexts {
    /// Reads the declared context types. A schema it cannot read gives an
    /// empty table, which only means every context takes the slow path.
    pub(crate) fn new(schema: Option<SchemaSource<'_>>) -> Self {
        let Some(source) = schema else {
            return Self { schema_present: false, by_action: HashMap::new() };
        };
        let json = match source {
            SchemaSource::CedarText(text) => SchemaFragment::from_cedarschema_str(text)
                .ok()
                .and_then(|(fragment, _)| fragment.to_json_value().ok()),
            SchemaSource::Json(text) => serde_json::from_str(text).ok(),
        };
        let by_action = json.as_ref().and_then(Value::as_object).map(plain_attributes).unwrap_or_default();
        Self { schema_present: true, by_action }
    }

    /// Whether the evaluation time goes into this action's context: always
    /// without a schema, and with one only where it declares `now: datetime`.
    pub(crate) fn takes_clock(&self, action: &EntityUid) -> bool {
        !self.schema_present || self.by_action.get(action).is_some_and(|a| a.clock)
    }

    /// Whether the context surely fits the action's declared context type:
    /// every attribute is declared with a plain type its value has, and every
    /// required attribute is there (the evaluation time counts when the
    /// engine adds it). When this holds, asking Cedar to check it again
    /// cannot fail; when it does not, Cedar checks and words the error.
    pub(crate) fn conforms(&self, action: &EntityUid, context: &Map<String, Value>, clocked: bool) -> bool {
        let Some(declared) = self.by_action.get(action) else { return false };
        let present = |name: &String| context.contains_key(name) || (clocked && name == CLOCK_ATTRIBUTE);
        declared.required.iter().all(present)
            && context.iter().all(|(k, v)| declared.plain.get(k).is_some_and(|ty| ty.admits(v)))
    }

    /// Builds the context directly, when every attribute is plain, with the
    /// evaluation time added when one is given; or returns `None` for the
    /// caller to use Cedar's parser.
    ///
    /// The values are made as Cedar's own evaluation of the equivalent
    /// restricted expressions makes them, without building and evaluating
    /// those expressions: that cost more than most policies' evaluation.
    pub(crate) fn build(
        &self,
        action: &EntityUid,
        context: &Map<String, Value>,
        now: Option<&EvaluationTime>,
    ) -> Option<Context> {
        let declared = if self.schema_present { Some(&self.by_action.get(action)?.plain) } else { None };
        let mut attributes = BTreeMap::new();
        for (key, value) in context {
            if declared.is_some_and(|names| !names.contains_key(key)) {
                return None;
            }
            attributes.insert(SmolStr::from(key), plain_value(value)?);
        }
        if let Some(now) = now {
            attributes.insert(SmolStr::new_static(CLOCK_ATTRIBUTE), datetime(now)?);
        }
        Some(Context::from(CoreContext::Value(Arc::new(attributes))))
    }
}

/// Cedar's `datetime(…)` of an evaluation time. Cedar parses the literal
/// with a regular expression on every call; a server decides many requests
/// within one millisecond of its clock, so each thread keeps the last one.
fn datetime(now: &EvaluationTime) -> Option<CoreValue> {
    static DATETIME: LazyLock<Option<Name>> =
        LazyLock::new(|| "datetime".parse::<UnreservedId>().ok().map(Name::unqualified_name));
    thread_local! {
        static LAST: RefCell<Option<(i64, CoreValue)>> = const { RefCell::new(None) };
    }
    let millis = now.unix_millis();
    if let Some(value) =
        LAST.with_borrow(|last| last.as_ref().filter(|(at, _)| *at == millis).map(|(_, v)| v.clone()))
    {
        return Some(value);
    }
    let function = Extensions::all_available().func(DATETIME.as_ref()?).ok()?;
    let value = CoreValue::try_from(function.call(&[CoreValue::from(now.cedar_literal())]).ok()?).ok()?;
    LAST.with_borrow_mut(|last| *last = Some((millis, value.clone())));
    Some(value)
}

fn plain_value(value: &Value) -> Option<CoreValue> {
    Some(match value {
        Value::String(s) => CoreValue::from(s.as_str()),
        Value::Bool(b) => CoreValue::from(*b),
        Value::Number(n) => CoreValue::from(n.as_i64()?),
        Value::Array(items) => {
            CoreValue::set(items.iter().map(plain_value).collect::<Option<Vec<_>>>()?, None)
        }
        Value::Object(map) => {
            if map.contains_key("__entity") || map.contains_key("__extn") {
                return None;
            }
            let fields = map
                .iter()
                .map(|(k, v)| Some((SmolStr::from(k), plain_value(v)?)))
                .collect::<Option<BTreeMap<_, _>>>()?;
            CoreValue::record_arc(Arc::new(fields), None)
        }
        Value::Null => return None,
    })
}

/// Walks a JSON schema: `{namespace: {entityTypes, actions, commonTypes}}`.
fn plain_attributes(schema: &Map<String, Value>) -> HashMap<EntityUid, ActionContext> {
    let mut declared_names = HashSet::new();
    for namespace in schema.values() {
        for section in ["entityTypes", "commonTypes"] {
            if let Some(names) = namespace.get(section).and_then(Value::as_object) {
                declared_names.extend(names.keys().cloned());
            }
        }
    }
    let mut out = HashMap::new();
    for (ns_name, namespace) in schema {
        let resolver = Resolver { namespace, declared_names: &declared_names };
        let Some(actions) = namespace.get("actions").and_then(Value::as_object) else { continue };
        for (name, action) in actions {
            let action_type =
                if ns_name.is_empty() { "Action".to_owned() } else { format!("{ns_name}::Action") };
            let Ok(uid) = uid_from_parts(&action_type, name, "") else { continue };
            let attributes =
                action.pointer("/appliesTo/context").and_then(|ty| resolver.record_attributes(ty, 0));
            let context = attributes
                .map(|attrs| ActionContext {
                    plain: attrs
                        .iter()
                        .filter_map(|(k, ty)| Some((k.clone(), resolver.plain_type(ty, 0)?)))
                        .collect(),
                    required: attrs
                        .iter()
                        .filter(|(_, ty)| is_required(ty))
                        .map(|(k, _)| k.clone())
                        .collect(),
                    clock: attrs.get(CLOCK_ATTRIBUTE).is_some_and(|ty| resolver.is_datetime(ty, 0)),
                })
                .unwrap_or_default();
            out.insert(uid, context);
        }
    }
    out
}

/// Resolves types within one namespace. Depth bounds runaway common-type chains.
struct Resolver<'a> {
    namespace: &'a Value,
    declared_names: &'a HashSet<String>,
}

const MAX_DEPTH: usize = 16;

impl Resolver<'_> {
    fn common(&self, name: &str) -> Option<&Value> {
        self.namespace.get("commonTypes")?.get(name)
    }

    /// The type a reference stands for, following common types.
    fn resolve<'v>(&'v self, ty: &'v Value, depth: usize) -> Option<&'v Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        let kind = ty.get("type")?.as_str()?;
        let referenced = match kind {
            "EntityOrCommon" => ty.get("name")?.as_str()?,
            "String" | "Long" | "Boolean" | "Set" | "Record" | "Entity" | "Extension" => return Some(ty),
            other => other,
        };
        match self.common(referenced) {
            Some(common) => self.resolve(common, depth + 1),
            None => Some(ty),
        }
    }

    fn record_attributes<'v>(&'v self, ty: &'v Value, depth: usize) -> Option<&'v Map<String, Value>> {
        let resolved = self.resolve(ty, depth)?;
        (resolved.get("type")?.as_str()? == "Record").then(|| resolved.get("attributes")?.as_object())?
    }

    fn is_datetime(&self, ty: &Value, depth: usize) -> bool {
        let Some(resolved) = self.resolve(ty, depth) else { return false };
        let name = resolved.get("name").and_then(Value::as_str).unwrap_or("");
        match resolved.get("type").and_then(Value::as_str) {
            Some("Extension") => name == "datetime",
            Some("EntityOrCommon") => {
                name == "__cedar::datetime" || (name == "datetime" && !self.declared_names.contains(name))
            }
            _ => false,
        }
    }

    fn plain_type(&self, ty: &Value, depth: usize) -> Option<PlainType> {
        let resolved = self.resolve(ty, depth)?;
        match resolved.get("type").and_then(Value::as_str)? {
            "String" => Some(PlainType::String),
            "Long" => Some(PlainType::Long),
            "Boolean" => Some(PlainType::Bool),
            "Set" => Some(PlainType::Set(Box::new(self.plain_type(resolved.get("element")?, depth + 1)?))),
            "Record" => {
                let attributes = resolved.get("attributes")?.as_object()?;
                let typed = attributes
                    .iter()
                    .map(|(k, a)| Some((k.clone(), (self.plain_type(a, depth + 1)?, is_required(a)))))
                    .collect::<Option<HashMap<_, _>>>()?;
                Some(PlainType::Record(typed))
            }
            "EntityOrCommon" => {
                // Not a common type (resolve would have followed it): a
                // builtin, unless an entity type shadows the name.
                let name = resolved.get("name").and_then(Value::as_str).unwrap_or("");
                if self.declared_names.contains(name) {
                    return None;
                }
                match name {
                    "String" => Some(PlainType::String),
                    "Long" => Some(PlainType::Long),
                    "Bool" | "Boolean" => Some(PlainType::Bool),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// Attributes are required unless declared `required: false` (`name?` in Cedar text).
fn is_required(ty: &Value) -> bool {
    ty.get("required").and_then(Value::as_bool).unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(name: &str) -> EntityUid {
        uid_from_parts("Action", name, "").unwrap()
    }

    const SCHEMA: &str = r#"
        entity User;
        entity ipaddr;
        type Ctx = { purpose?: String, count: Long, tags: Set<String>, who?: User, ip?: __cedar::ipaddr,
                     nested?: { a: Bool }, shadowed?: ipaddr };
        action read appliesTo { principal: [User], resource: [User], context: Ctx };
    "#;

    #[test]
    fn only_attributes_of_plain_types_take_the_fast_path() {
        let plain = PlainContexts::new(Some(SchemaSource::CedarText(SCHEMA)));
        let read = action("read");
        let fast =
            |value: Value| plain.build(&read, value.as_object().unwrap_or(&Map::new()), None).is_some();
        assert!(fast(json!({"purpose": "TREAT", "count": 3, "tags": ["a"], "nested": {"a": true}})));
        assert!(!fast(json!({"who": {"type": "User", "id": "x"}})), "entity-typed attribute");
        assert!(!fast(json!({"ip": "10.0.0.1"})), "extension-typed attribute");
        assert!(!fast(json!({"shadowed": "x"})), "entity type shadowing a name");
        assert!(!fast(json!({"undeclared": 1})), "undeclared attribute");
        assert!(!fast(json!({"count": 1.5})), "non-integer number");
        assert!(plain.build(&action("write"), &Map::new(), None).is_none(), "undeclared action");
    }

    #[test]
    fn only_a_declared_datetime_named_now_takes_the_clock() {
        let schema = r#"
            entity User;
            type Clocked = { now: datetime };
            action read appliesTo { principal: [User], resource: [User], context: Clocked };
            action write appliesTo { principal: [User], resource: [User], context: { now: __cedar::datetime } };
            action list appliesTo { principal: [User], resource: [User], context: { now: String } };
            action share appliesTo { principal: [User], resource: [User], context: { at: datetime } };
        "#;
        let plain = PlainContexts::new(Some(SchemaSource::CedarText(schema)));
        assert!(plain.takes_clock(&action("read")), "through a common type");
        assert!(plain.takes_clock(&action("write")), "fully qualified");
        assert!(!plain.takes_clock(&action("list")), "a string named now");
        assert!(!plain.takes_clock(&action("share")), "a datetime with another name");
        assert!(!plain.takes_clock(&action("undeclared")));
        assert!(PlainContexts::new(None).takes_clock(&action("anything")));
    }

    #[test]
    fn a_context_conforms_only_when_its_plain_values_fit_and_nothing_required_is_missing() {
        let plain = PlainContexts::new(Some(SchemaSource::CedarText(SCHEMA)));
        let read = action("read");
        let fits = |value: Value| plain.conforms(&read, value.as_object().unwrap_or(&Map::new()), false);
        assert!(fits(json!({"count": 3, "tags": ["a"]})));
        assert!(fits(json!({"purpose": "TREAT", "count": -1, "tags": [], "nested": {"a": true}})));
        assert!(!fits(json!({"tags": ["a"]})), "required `count` is missing");
        assert!(!fits(json!({"count": "3", "tags": []})), "a string for a Long");
        assert!(!fits(json!({"count": 3, "tags": [1]})), "a Long in a set of strings");
        assert!(!fits(json!({"count": 3, "tags": [], "nested": {}})), "the record's required `a` is missing");
        assert!(!fits(json!({"count": 3, "tags": [], "nested": {"a": true, "b": 1}})), "records are closed");
        assert!(
            !fits(json!({"count": 3, "tags": [], "ip": "10.0.0.1"})),
            "an extension type is Cedar's to check"
        );
        assert!(!fits(json!({"count": 3, "tags": [], "extra": 1})), "undeclared");
        assert!(!plain.conforms(&action("write"), &Map::new(), false), "undeclared action");
    }

    #[test]
    fn the_evaluation_time_counts_for_a_required_now() {
        let schema = "entity User; action read appliesTo { principal: [User], resource: [User], context: { now: datetime } };";
        let plain = PlainContexts::new(Some(SchemaSource::CedarText(schema)));
        assert!(plain.conforms(&action("read"), &Map::new(), true));
        assert!(!plain.conforms(&action("read"), &Map::new(), false));
    }

    #[test]
    fn without_a_schema_only_escapes_take_the_slow_path() {
        let plain = PlainContexts::new(None);
        let read = action("read");
        let fast =
            |value: Value| plain.build(&read, value.as_object().unwrap_or(&Map::new()), None).is_some();
        assert!(fast(json!({"anything": {"type": "User", "id": "x"}, "n": 1})));
        assert!(!fast(json!({"who": {"__entity": {"type": "User", "id": "x"}}})));
        assert!(!fast(json!({"ip": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}})));
    }
}

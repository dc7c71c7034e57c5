//! The oracle (plain Cedar over every policy and every entity) and the generated comparison.

use super::*;

/// Builds the policy set the plain way: parse, re-id by `@id`, link.
pub(super) fn oracle_policies(text: &str, links: &[TemplateLink]) -> PolicySet {
    let parsed = PolicySet::from_str(text).expect("oracle policies parse");
    let mut set = PolicySet::new();
    for template in parsed.templates() {
        let id = template.annotation("id").map_or_else(|| template.id().clone(), PolicyId::new);
        set.add_template(template.new_id(id)).expect("oracle template");
    }
    for policy in parsed.policies() {
        let id = policy.annotation("id").map_or_else(|| policy.id().clone(), PolicyId::new);
        set.add(policy.new_id(id)).expect("oracle policy");
    }
    for link in links {
        let values = link
            .values
            .iter()
            .map(|(slot, value)| {
                let slot = if slot == "?principal" { SlotId::principal() } else { SlotId::resource() };
                (slot, parse_uid(value, "link").expect("link uid"))
            })
            .collect();
        set.link(PolicyId::new(&link.template), PolicyId::new(&link.id), values).expect("oracle link");
    }
    set
}

/// What both sides must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    pub(super) allow: bool,
    pub(super) determining: BTreeSet<String>,
    /// Erroring policies, with Cedar's message.
    pub(super) erroring: BTreeSet<(String, String)>,
}

fn entity_uid(value: &Value) -> EntityUid {
    parse_uid(&value["uid"], "uid").expect("entity uid")
}

/// The request's entities with its attribute overlays applied: each overlay
/// extends the attributes of the request entity, else the stored entity, else
/// an entity with no attributes and no parents.
fn effective_request_entities(stored: &[Value], request: &DecisionRequest) -> Vec<Value> {
    let mut supplied = request.entities.clone();
    for overlay in &request.overlays {
        let position = supplied.iter().position(|e| entity_uid(e) == overlay.uid);
        let mut base = position
            .map(|p| supplied[p].clone())
            .or_else(|| stored.iter().find(|e| entity_uid(e) == overlay.uid).cloned())
            .unwrap_or_else(|| {
                json!({
                    "uid": uid_json(&overlay.uid.type_name().to_string(), overlay.uid.id().unescaped()),
                    "attrs": {},
                    "parents": [],
                })
            });
        base["attrs"].as_object_mut().unwrap().extend(overlay.attributes.clone());
        match position {
            Some(p) => supplied[p] = base,
            None => supplied.push(base),
        }
    }
    supplied
}

/// Plain Cedar on the full policy set and the full entity set (stored
/// entities, with request entities replacing those with the same uid).
/// `Err` when Cedar refuses the request or its entities.
///
/// `cache` keeps the full entity set per distinct list of request entities,
/// only to save time: the sets are built the same way every time.
pub(super) fn oracle(
    policies: &PolicySet,
    stored: &[Value],
    schema: Option<&Schema>,
    request: &DecisionRequest,
    cache: &mut HashMap<String, Result<Entities, String>>,
) -> Result<Verdict, String> {
    let supplied = effective_request_entities(stored, request);
    let key = Value::Array(supplied.clone()).to_string();
    let entities = cache
        .entry(key)
        .or_insert_with(|| {
            let shadowed: HashSet<EntityUid> = supplied.iter().map(entity_uid).collect();
            let mut all: Vec<Value> =
                stored.iter().filter(|e| !shadowed.contains(&entity_uid(e))).cloned().collect();
            all.extend(supplied.iter().cloned());
            Entities::from_json_value(Value::Array(all), schema).map_err(|e| format!("entities: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let context = Context::from_json_value(
        request.context.clone().unwrap_or_else(|| json!({})),
        schema.map(|s| (s, &request.action)),
    )
    .map_err(|e| format!("context: {e}"))?;
    let cedar_request = Request::new(
        request.principal.clone(),
        request.action.clone(),
        request.resource.clone(),
        context,
        schema,
    )
    .map_err(|e| format!("request: {e}"))?;
    let response = Authorizer::new().is_authorized(&cedar_request, policies, entities);
    let diagnostics = response.diagnostics();
    Ok(Verdict {
        allow: response.decision() == CedarDecision::Allow,
        determining: diagnostics.reason().map(ToString::to_string).collect(),
        erroring: diagnostics
            .errors()
            .map(|e| match e {
                AuthorizationError::PolicyEvaluationError(e) => {
                    (e.policy_id().to_string(), e.inner().to_string())
                }
            })
            .collect(),
    })
}

/// The engine's answer reduced to a [`Verdict`], after checking that the
/// rest of the decision is consistent with it.
pub(super) fn engine_verdict(decision: &Decision) -> Result<Verdict, String> {
    let determining: BTreeSet<String> = decision.reasons.iter().map(|r| r.policy.clone()).collect();
    if determining.len() != decision.reasons.len() {
        return Err(format!("duplicate reasons: {:?}", decision.reasons));
    }
    let mut erroring = BTreeSet::new();
    for error in &decision.errors {
        match &error.policy {
            Some(policy) => {
                erroring.insert((policy.clone(), error.message.clone()));
            }
            None => return Err(format!("error without a policy: {}", error.message)),
        }
    }
    let consistent = match decision.outcome {
        Outcome::Allow => !determining.is_empty(),
        Outcome::Forbidden => !determining.is_empty(),
        Outcome::NotPermitted => determining.is_empty(),
        Outcome::FailedClosed => false,
    };
    if !consistent {
        return Err(format!("outcome {:?} with reasons {determining:?}", decision.outcome));
    }
    if let Some(stray) = decision.obligations.iter().find(|o| !determining.contains(&o.policy)) {
        return Err(format!("obligation from a non-determining policy: {stray:?}"));
    }
    Ok(Verdict { allow: decision.outcome == Outcome::Allow, determining, erroring })
}

/// A tiny deterministic generator, so no `rand` crate is needed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn requests() -> Vec<DecisionRequest> {
    let mut lcg = Lcg(0x00c0_ffee);
    let contexts = contexts();
    let mut out = Vec::new();
    for &principal in PRINCIPALS {
        for action in ACTIONS {
            for &resource in RESOURCES {
                for context in &contexts {
                    let mut request = DecisionRequest::new(
                        parse_uid(&uid_json(principal.0, principal.1), "principal").unwrap(),
                        parse_uid(&uid_json("Action", action), "action").unwrap(),
                        parse_uid(&uid_json(resource.0, resource.1), "resource").unwrap(),
                    );
                    request.context = Some(context.clone());
                    request.entities = request_entities(lcg.next(5), principal, resource);
                    let overlay = |uid: &EntityUid, attributes: Value, field: &str| AttributeOverlay {
                        uid: uid.clone(),
                        attributes: attributes.as_object().cloned().unwrap(),
                        field: field.into(),
                    };
                    match lcg.next(4) {
                        1 => request.overlays.push(overlay(
                            &request.principal,
                            json!({"level": 9}),
                            "subject.properties",
                        )),
                        2 => request.overlays.push(overlay(
                            &request.resource,
                            json!({"level": 8, "public": true}),
                            "resource.properties",
                        )),
                        _ => {}
                    }
                    out.push(request);
                }
            }
        }
    }
    out
}

pub(super) fn describe(request: &DecisionRequest) -> String {
    format!(
        "principal={} action={} resource={} context={} entities={} overlays={:?}",
        request.principal,
        request.action,
        request.resource,
        request.context.as_ref().map_or_else(|| "{}".to_owned(), ToString::to_string),
        Value::Array(request.entities.clone()),
        request
            .overlays
            .iter()
            .map(|o| (o.uid.to_string(), Value::Object(o.attributes.clone())))
            .collect::<Vec<_>>(),
    )
}

/// Runs every generated request through the engine and through plain Cedar
/// and panics, naming each differing request, if any answer differs. Returns
/// how many requests both sides decided.
fn assert_equivalent(schema_text: Option<&str>, policies: &str) -> usize {
    let links = links();
    let schema_source = schema_text.map(SchemaSource::CedarText);
    let bundle =
        PolicyBundle::load(schema_source, policies, &links).unwrap_or_else(|e| panic!("bundle refused: {e}"));
    let schema = bundle.schema().cloned();
    let stored = stored_entities(schema.is_none());
    let store = EntityStore::from_json(&Value::Array(stored.clone()), schema.as_ref())
        .unwrap_or_else(|e| panic!("store refused: {e}"));
    let full = oracle_policies(policies, &links);
    let all_ids: BTreeSet<String> = full.policies().map(|p| p.id().to_string()).collect();
    assert_eq!(all_ids.len(), bundle.policy_count(), "engine and oracle hold different policies");

    let mut mismatches = String::new();
    let mut mismatch_count = 0usize;
    let mut decided = 0usize;
    let mut allowed = 0usize;
    let mut exercised: BTreeSet<String> = BTreeSet::new();
    let mut cache = HashMap::new();
    for request in requests() {
        let expected = oracle(&full, &stored, schema.as_ref(), &request, &mut cache);
        // The oracle is plain Cedar: request entities replace stored ones.
        let actual = decide_with(&bundle, &[], &store, &request, &DecisionOptions::cedar_exact())
            .map_err(|e| format!("request error: {e}"))
            .and_then(|d| engine_verdict(&d).map_err(|e| format!("inconsistent decision {d:?}: {e}")));
        let same = match (&expected, &actual) {
            (Ok(expected), Ok(actual)) => expected == actual,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if let Ok(verdict) = &expected {
            decided += 1;
            allowed += usize::from(verdict.allow);
            exercised.extend(verdict.determining.iter().cloned());
            exercised.extend(verdict.erroring.iter().map(|(policy, _)| policy.clone()));
        }
        if !same {
            mismatch_count += 1;
            if mismatch_count <= 20 {
                let _ = writeln!(
                    mismatches,
                    "\n  request: {}\n    cedar:  {expected:?}\n    engine: {actual:?}",
                    describe(&request)
                );
            }
        }
    }
    assert!(
        mismatch_count == 0,
        "{mismatch_count} request(s) decided differently by the engine and plain Cedar \
         (schema: {}); first ones:{mismatches}",
        schema_text.is_some()
    );
    // Every policy must matter somewhere: then dropping it from a candidate
    // set changes some request's determining or erroring policies.
    let unexercised: Vec<&String> = all_ids.difference(&exercised).collect();
    assert!(unexercised.is_empty(), "policies never determining nor erroring: {unexercised:?}");
    assert!(allowed > 50 && decided - allowed > 50, "too one-sided: {allowed} allowed of {decided}");
    decided
}

#[test]
fn equivalence_without_schema() {
    let policies = format!("{COMMON_POLICIES}\n{SCHEMALESS_POLICIES}");
    let decided = assert_equivalent(None, &policies);
    assert_eq!(decided, PRINCIPALS.len() * ACTIONS.len() * RESOURCES.len() * contexts().len());
}

#[test]
fn equivalence_with_schema() {
    let decided = assert_equivalent(Some(SCHEMA), COMMON_POLICIES);
    assert!(decided > 500, "only {decided} requests were valid under the schema");
}

/// The engine and the oracle give the same ids to policies with and without `@id`.
#[test]
fn equivalence_ids_match_plain_cedar_numbering() {
    let bundle =
        PolicyBundle::load(Some(SchemaSource::CedarText(SCHEMA)), COMMON_POLICIES, &links()).unwrap();
    let engine_ids: BTreeSet<String> = bundle.policy_summaries().into_iter().map(|s| s.id).collect();
    let oracle = oracle_policies(COMMON_POLICIES, &links());
    let oracle_ids: BTreeSet<String> = oracle
        .policies()
        .map(|p| p.id().to_string())
        .chain(oracle.templates().map(|t| t.id().to_string()))
        .collect();
    assert_eq!(engine_ids, oracle_ids);
    assert!(
        engine_ids.contains("policy0")
            && engine_ids.contains("public-read")
            && engine_ids.contains("erin-eng")
    );
}

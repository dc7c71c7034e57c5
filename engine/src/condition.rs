//! Policy conditions evaluated without Cedar's interpreter, where that is exact.
//!
//! Cedar's interpreter wraps every intermediate value in a `PartialValue`,
//! checks the remaining stack at each node, clones every attribute it reads,
//! and looks the same entity up again (a SipHash of its uid) each time a
//! condition names it. For the pack's fail-closed rules, such as
//! `principal has organization && principal.organization has country`, that
//! was most of a decision. So when a rule set is built, each condition is
//! compiled once into a [`Condition`] over the operators health policies
//! use (`&&`, `||`, `!`, `if`, `==`, `in`, `is`, `has`, attribute reads,
//! `contains`, `containsAll`, `containsAny`, `isEmpty`, literals), which
//! reads values in place and looks each entity up once per decision.
//! Anything else stays a [`Node::Cedar`] subexpression that Cedar's own
//! evaluator computes.
//!
//! Exactness rests on one rule: the compiled form answers only when Cedar
//! would give that same boolean. Wherever Cedar would raise an error (a
//! type error, a missing attribute or entity, anything from a Cedar
//! subexpression), evaluation stops with no answer and the caller has
//! Cedar evaluate the whole condition, so the error and its wording are
//! Cedar's own. The operators are applied exactly as Cedar's evaluator
//! applies them, in its order (both operands before a binary operator, left
//! to right, `&&`/`||`/`if` short-circuiting), and they are checked against
//! Cedar's interpreter on generated expressions (the tests below) and on
//! every policy of the equivalence tests and the conformance corpus.

use std::cell::RefCell;
use std::sync::Arc;

use cedar_policy_core::ast::{
    BinaryOp, Context, Entity, EntityType, EntityUID, Expr, ExprKind, Literal, PartialValue, Request, Set,
    UnaryOp, Value, ValueKind, Var,
};
use cedar_policy_core::entities::{Dereference, Entities};
use smol_str::SmolStr;

/// Deeper nodes are left to Cedar, which guards its own recursion; the
/// engine's limits keep policies far shallower than this.
const DEEPEST: usize = 64;

/// A policy condition, compiled.
#[derive(Debug)]
pub(crate) struct Condition(Node);

#[derive(Debug)]
enum Node {
    /// A literal, or a set literal of literals, made into a value once.
    Value(Value),
    Var(Var),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    If(Box<Node>, Box<Node>, Box<Node>),
    Not(Box<Node>),
    IsEmpty(Box<Node>),
    Binary(BinaryOp, Box<Node>, Box<Node>),
    Has(Box<Node>, SmolStr),
    Get(Box<Node>, SmolStr),
    Is(Box<Node>, EntityType),
    /// Evaluated by Cedar's interpreter.
    Cedar(Arc<Expr>),
}

impl Condition {
    /// Compiles a policy's condition (its `when`/`unless` body).
    pub(crate) fn compile(body: &Arc<Expr>) -> Self {
        Self(compile(body, 0))
    }

    /// The condition's value, or `None` where Cedar must evaluate it:
    /// Cedar would raise an error, or the value is not a boolean.
    /// `cedar` evaluates a subexpression with Cedar's interpreter.
    pub(crate) fn evaluate(&self, scope: &Scope<'_>, cedar: &dyn Fn(&Expr) -> Option<Value>) -> Option<bool> {
        as_bool(evaluate(&self.0, scope, cedar)?.value())
    }
}

fn compile(expr: &Arc<Expr>, depth: usize) -> Node {
    if depth > DEEPEST {
        return Node::Cedar(Arc::clone(expr));
    }
    let sub = |e: &Arc<Expr>| Box::new(compile(e, depth + 1));
    match expr.expr_kind() {
        ExprKind::Lit(literal) => Node::Value(Value::from(literal.clone())),
        ExprKind::Var(var) => Node::Var(*var),
        ExprKind::And { left, right } => Node::And(sub(left), sub(right)),
        ExprKind::Or { left, right } => Node::Or(sub(left), sub(right)),
        ExprKind::If { test_expr, then_expr, else_expr } => {
            Node::If(sub(test_expr), sub(then_expr), sub(else_expr))
        }
        ExprKind::UnaryApp { op: UnaryOp::Not, arg } => Node::Not(sub(arg)),
        ExprKind::UnaryApp { op: UnaryOp::IsEmpty, arg } => Node::IsEmpty(sub(arg)),
        ExprKind::BinaryApp {
            op:
                op @ (BinaryOp::Eq
                | BinaryOp::In
                | BinaryOp::Contains
                | BinaryOp::ContainsAll
                | BinaryOp::ContainsAny),
            arg1,
            arg2,
        } => Node::Binary(*op, sub(arg1), sub(arg2)),
        ExprKind::HasAttr { expr, attr } => Node::Has(sub(expr), attr.clone()),
        ExprKind::GetAttr { expr, attr } => Node::Get(sub(expr), attr.clone()),
        ExprKind::Is { expr, entity_type } => Node::Is(sub(expr), entity_type.clone()),
        ExprKind::Set(items) => match items.iter().map(literal).collect::<Option<Vec<_>>>() {
            // Cedar builds the same set from the same literals, and cannot fail to.
            Some(values) => Node::Value(Value::set(values, None)),
            None => Node::Cedar(Arc::clone(expr)),
        },
        _ => Node::Cedar(Arc::clone(expr)),
    }
}

fn literal(expr: &Expr) -> Option<Value> {
    match expr.expr_kind() {
        ExprKind::Lit(literal) => Some(Value::from(literal.clone())),
        _ => None,
    }
}

/// What one decision's conditions read: the request's variables as values,
/// and the slice, whose entities are looked up once each.
pub(crate) struct Scope<'a> {
    principal: Option<Value>,
    action: Option<Value>,
    resource: Option<Value>,
    context: Option<Value>,
    entities: &'a Entities,
    looked_up: RefCell<Vec<(&'a EntityUID, Option<&'a Entity>)>>,
}

impl<'a> Scope<'a> {
    pub(crate) fn new(request: &Request, entities: &'a Entities) -> Self {
        let known = |uid: Option<&EntityUID>| uid.map(|uid| Value::from(uid.clone()));
        let context = match request.context() {
            Some(Context::Value(attributes)) => Some(Value::record_arc(Arc::clone(attributes), None)),
            _ => None,
        };
        Self {
            principal: known(request.principal().uid()),
            action: known(request.action().uid()),
            resource: known(request.resource().uid()),
            context,
            entities,
            looked_up: RefCell::new(Vec::new()),
        }
    }

    /// The entity, `Some(None)` when the slice has none, or `None` when the
    /// slice cannot say (a partial slice).
    fn entity(&self, uid: &EntityUID) -> Option<Option<&'a Entity>> {
        if let Some((_, entity)) = self.looked_up.borrow().iter().find(|(known, _)| *known == uid) {
            return Some(*entity);
        }
        match self.entities.entity(uid) {
            Dereference::Data(entity) => {
                // The entity's own uid lives as long as the slice, so it can key the memo.
                self.looked_up.borrow_mut().push((entity.uid(), Some(entity)));
                Some(Some(entity))
            }
            Dereference::NoSuchEntity => Some(None),
            Dereference::Residual(_) => None,
        }
    }

    fn variable(&self, var: Var) -> Option<&Value> {
        match var {
            Var::Principal => self.principal.as_ref(),
            Var::Action => self.action.as_ref(),
            Var::Resource => self.resource.as_ref(),
            Var::Context => self.context.as_ref(),
        }
    }
}

/// A value read in place, or made by an operator.
enum Out<'v> {
    Read(&'v Value),
    Made(Value),
}

impl Out<'_> {
    fn value(&self) -> &Value {
        match self {
            Self::Read(value) => value,
            Self::Made(value) => value,
        }
    }
}

fn made(b: bool) -> Option<Out<'static>> {
    Some(Out::Made(Value::from(b)))
}

fn as_bool(value: &Value) -> Option<bool> {
    match value.value_kind() {
        ValueKind::Lit(Literal::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn as_entity(value: &Value) -> Option<&EntityUID> {
    match value.value_kind() {
        ValueKind::Lit(Literal::EntityUID(uid)) => Some(uid),
        _ => None,
    }
}

fn as_set(value: &Value) -> Option<&Set> {
    match value.value_kind() {
        ValueKind::Set(set) => Some(set),
        _ => None,
    }
}

fn evaluate<'v>(
    node: &'v Node,
    scope: &'v Scope<'_>,
    cedar: &dyn Fn(&Expr) -> Option<Value>,
) -> Option<Out<'v>> {
    let bool_of = |node: &'v Node| as_bool(evaluate(node, scope, cedar)?.value());
    match node {
        Node::Value(value) => Some(Out::Read(value)),
        Node::Var(var) => scope.variable(*var).map(Out::Read),
        Node::And(left, right) => match bool_of(left)? {
            false => made(false),
            true => made(bool_of(right)?),
        },
        Node::Or(left, right) => match bool_of(left)? {
            true => made(true),
            false => made(bool_of(right)?),
        },
        Node::If(test, then, otherwise) => match bool_of(test)? {
            true => evaluate(then, scope, cedar),
            false => evaluate(otherwise, scope, cedar),
        },
        Node::Not(operand) => made(!bool_of(operand)?),
        Node::IsEmpty(operand) => made(as_set(evaluate(operand, scope, cedar)?.value())?.is_empty()),
        Node::Binary(op, left, right) => {
            let left = evaluate(left, scope, cedar)?;
            let right = evaluate(right, scope, cedar)?;
            made(binary(*op, left.value(), right.value(), scope)?)
        }
        Node::Has(operand, attribute) => {
            let operand = evaluate(operand, scope, cedar)?;
            match operand.value().value_kind() {
                ValueKind::Record(record) => made(record.contains_key(attribute)),
                ValueKind::Lit(Literal::EntityUID(uid)) => {
                    made(scope.entity(uid)?.is_some_and(|entity| entity.get(attribute).is_some()))
                }
                _ => None,
            }
        }
        // `value.attribute` as Cedar reads it: a record's field or a stored
        // entity's attribute; anything else is an error in Cedar.
        Node::Get(operand, attribute) => match evaluate(operand, scope, cedar)? {
            Out::Read(value) => match value.value_kind() {
                ValueKind::Record(record) => record.get(attribute).map(Out::Read),
                ValueKind::Lit(Literal::EntityUID(uid)) => {
                    entity_attribute(scope, uid, attribute).map(Out::Read)
                }
                _ => None,
            },
            Out::Made(value) => match value.value_kind() {
                ValueKind::Record(record) => record.get(attribute).cloned().map(Out::Made),
                ValueKind::Lit(Literal::EntityUID(uid)) => {
                    entity_attribute(scope, uid, attribute).map(Out::Read)
                }
                _ => None,
            },
        },
        Node::Is(operand, entity_type) => {
            made(as_entity(evaluate(operand, scope, cedar)?.value())?.entity_type() == entity_type)
        }
        Node::Cedar(expr) => cedar(expr).map(Out::Made),
    }
}

/// A stored entity's attribute; `None` where Cedar raises an error (no
/// such entity or attribute) or the value is not concrete.
fn entity_attribute<'a>(scope: &Scope<'a>, uid: &EntityUID, attribute: &str) -> Option<&'a Value> {
    match scope.entity(uid)??.get(attribute)? {
        PartialValue::Value(value) => Some(value),
        PartialValue::Residual(_) => None,
    }
}

fn binary(op: BinaryOp, left: &Value, right: &Value, scope: &Scope<'_>) -> Option<bool> {
    match op {
        BinaryOp::Eq => Some(left == right),
        BinaryOp::In => {
            let uid = as_entity(left)?;
            let entity = scope.entity(uid)?;
            let within = |ancestor: &EntityUID| {
                uid == ancestor || entity.is_some_and(|e| e.is_descendant_of(ancestor))
            };
            match right.value_kind() {
                ValueKind::Lit(Literal::EntityUID(ancestor)) => Some(within(ancestor)),
                // Cedar checks that every member is an entity before looking for one.
                ValueKind::Set(set) => {
                    let ancestors = set.authoritative.iter().map(as_entity).collect::<Option<Vec<_>>>()?;
                    Some(ancestors.into_iter().any(within))
                }
                _ => None,
            }
        }
        BinaryOp::Contains => Some(as_set(left)?.contains(right)),
        BinaryOp::ContainsAll => {
            let (left, right) = (as_set(left)?, as_set(right)?);
            Some(right.is_subset(left))
        }
        BinaryOp::ContainsAny => {
            let (left, right) = (as_set(left)?, as_set(right)?);
            Some(!left.is_disjoint(right))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use cedar_policy::{
        Context as CedarContext, Entities as CedarEntities, EntityUid, PolicyId, Request as CedarRequest,
    };
    use cedar_policy_core::evaluator::Evaluator;
    use cedar_policy_core::extensions::Extensions;
    use proptest::prelude::*;
    use serde_json::json;
    use std::str::FromStr;

    use super::*;

    fn pick(options: &'static [&'static str]) -> BoxedStrategy<String> {
        proptest::sample::select(options).prop_map(str::to_owned).boxed()
    }

    /// Boolean condition text, mostly well typed so that the operators'
    /// meaning is what is compared, with some ill-typed operands for
    /// errors; over every operator the compiled form knows, and some it
    /// leaves to Cedar (`<`, `like`, `+`, `ip`).
    fn expression() -> impl Strategy<Value = String> {
        let entity = pick(&[
            "principal",
            "resource",
            r#"User::"a""#,
            r#"User::"b""#,
            r#"User::"z""#,
            r#"Group::"g""#,
            "principal.g",
            "context.u",
            "resource.g",
        ]);
        let set = pick(&[
            "[1, 2]",
            r#"["x", "y"]"#,
            r#"[User::"a", Group::"g"]"#,
            r#"[Group::"g"]"#,
            r#"[User::"a", 1]"#,
            "[]",
            "principal.s",
            "resource.s",
            "context.s",
            "[principal.n, 3]",
        ]);
        let value = pick(&[
            "1",
            "2",
            r#""x""#,
            "context.f",
            "principal.f",
            "resource.f",
            "context.n",
            "principal.n",
            r#"ip("10.0.0.1")"#,
            "{f: 1}",
            "(context.n + 1)",
            "principal",
            "[1, 2]",
        ]);
        let attribute = pick(&["f", "g", "s", "n", "u", "missing"]);
        let leaf = prop_oneof![
            (entity.clone(), entity.clone()).prop_map(|(a, b)| format!("({a} in {b})")),
            (entity.clone(), set.clone()).prop_map(|(a, b)| format!("({a} in {b})")),
            (value.clone(), entity.clone()).prop_map(|(a, b)| format!("({a} in {b})")),
            (set.clone(), value.clone()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            (set.clone(), entity.clone()).prop_map(|(a, b)| format!("{a}.contains({b})")),
            (set.clone(), set.clone()).prop_map(|(a, b)| format!("{a}.containsAll({b})")),
            (set.clone(), set.clone()).prop_map(|(a, b)| format!("{a}.containsAny({b})")),
            (value.clone(), set.clone()).prop_map(|(a, b)| format!("{a}.containsAny({b})")),
            set.clone().prop_map(|a| format!("{a}.isEmpty()")),
            (entity.clone(), attribute.clone()).prop_map(|(a, f)| format!("({a} has {f})")),
            attribute.clone().prop_map(|f| format!("(context has {f})")),
            (value.clone(), attribute).prop_map(|(a, f)| format!("({a} has {f})")),
            entity.clone().prop_map(|a| format!("({a} is User)")),
            value.clone().prop_map(|a| format!("({a} is User)")),
            (value.clone(), value.clone()).prop_map(|(a, b)| format!("({a} == {b})")),
            (entity.clone(), entity).prop_map(|(a, b)| format!("({a} == {b})")),
            (value.clone(), value.clone()).prop_map(|(a, b)| format!("({a} < {b})")),
            value.prop_map(|a| format!("({a} like \"x*\")")),
            pick(&["true", "false", "principal.f", "context.n", "resource.missing"]),
        ];
        leaf.prop_recursive(4, 16, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} && {b})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} || {b})")),
                inner.clone().prop_map(|a| format!("(!{a})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} == {b})")),
                (inner.clone(), inner.clone(), inner)
                    .prop_map(|(a, b, c)| format!("(if {a} then {b} else {c})")),
            ]
        })
    }

    fn entities() -> CedarEntities {
        CedarEntities::from_json_value(
            json!([
                {"uid": {"type": "User", "id": "a"}, "parents": [{"type": "Group", "id": "g"}],
                 "attrs": {"f": "x", "g": {"__entity": {"type": "User", "id": "b"}}, "s": [1, 2], "n": 1}},
                {"uid": {"type": "User", "id": "b"}, "parents": [{"type": "User", "id": "a"}],
                 "attrs": {"f": 1, "s": ["x"], "g": {"__entity": {"type": "Group", "id": "g"}}}},
                {"uid": {"type": "Group", "id": "g"}, "parents": [], "attrs": {"f": true}}
            ]),
            None,
        )
        .unwrap()
    }

    fn request(principal: &str, resource: &str) -> CedarRequest {
        let context = CedarContext::from_json_value(
            json!({"f": "x", "n": 1, "s": ["x", "y"], "u": {"__entity": {"type": "User", "id": "a"}}}),
            None,
        )
        .unwrap();
        let uid = |text: &str| EntityUid::from_str(text).unwrap();
        CedarRequest::new(uid(principal), uid(r#"Action::"view""#), uid(resource), context, None).unwrap()
    }

    /// The compiled form's answer, and Cedar's, for one condition.
    fn both(body: &str, principal: &str, resource: &str) -> Option<(Option<bool>, Result<Value, String>)> {
        let text = format!("permit(principal, action, resource) when {{ {body} }};");
        let policy = cedar_policy::Policy::parse(Some(PolicyId::new("p")), &text).ok()?;
        let core: &cedar_policy_core::ast::Policy = policy.as_ref();
        let expr = core.non_scope_constraints_arc()?;
        let entities = entities();
        let request = request(principal, resource);
        let core_request: &Request = request.as_ref();
        let evaluator = Evaluator::new(core_request.clone(), entities.as_ref(), Extensions::all_available());
        let cedar = |e: &Expr| evaluator.interpret(e, core.env()).ok();
        let scope = Scope::new(core_request, entities.as_ref());
        let compiled = Condition::compile(expr).evaluate(&scope, &cedar);
        let expected = evaluator.interpret(expr, core.env()).map_err(|e| e.to_string());
        Some((compiled, expected))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
        ))]
        /// Wherever the compiled form answers, Cedar gives that boolean and no error.
        #[test]
        fn a_compiled_condition_answers_only_as_cedar_does(
            body in expression(),
            principal in proptest::sample::select(&[r#"User::"a""#, r#"User::"z""#, r#"Group::"g""#][..]),
            resource in proptest::sample::select(&[r#"User::"b""#, r#"Group::"g""#][..]),
        ) {
            if let Some((Some(answer), expected)) = both(&body, principal, resource) {
                prop_assert_eq!(expected, Ok(Value::from(answer)), "{}", body);
            }
        }
    }

    #[test]
    fn the_pack_s_kinds_of_condition_are_answered_without_cedar() {
        for body in [
            r#"principal has g && principal.g has f"#,
            r#"!(principal has g && principal.g has missing)"#,
            r#"context has f && context.f != """#,
            r#"principal in Group::"g" && principal is User"#,
            r#"[User::"b"].contains(principal.g) || resource in principal"#,
        ] {
            let (compiled, expected) = both(body, r#"User::"a""#, r#"User::"b""#).unwrap();
            assert!(compiled.is_some(), "{body} was left to Cedar");
            assert_eq!(expected.map(|v| Some(v) == compiled.map(Value::from)), Ok(true), "{body}");
        }
    }

    #[test]
    fn an_error_is_left_to_cedar() {
        for body in [
            r#"principal.missing == 1"#,
            r#"User::"z".f == 1"#,
            r#"context.n && true"#,
            r#"1 in Group::"g""#,
            r#"(1 + "x") == 2 || true"#,
        ] {
            let (compiled, expected) = both(body, r#"User::"a""#, r#"User::"b""#).unwrap();
            assert_eq!(compiled, None, "{body}");
            assert!(expected.is_err(), "{body}");
        }
    }
}

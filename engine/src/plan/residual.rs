//! A residual of typed partial evaluation, read as formulas over the record.
//!
//! Cedar's partial evaluator folds everything the request knows (the
//! principal and its groups, the context, the patient's attributes when it
//! can reach them) and leaves an expression over the unknown resource. What
//! Consentry needs to know about that expression is two things: when it is
//! true, and when evaluating it errors, because a forbid that errors denies
//! (see [`crate::authorize`]). So every boolean becomes a [`Truth`]: a
//! formula for each, over [`Atom`]s about one record of the patient.
//!
//! The record is one of the patient's, filed under them with `patient` set
//! to them (the vocabulary's `Record in [Patient]`): `resource.patient` is
//! the patient, `resource in Patient::"p"` holds for them alone. Anything
//! the atoms cannot say becomes an opaque atom, named in the plan's
//! `untranslated`, and never reaches a filter.

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy_core::ast::{
    BinaryOp, EntityUID, Expr, Literal, Name, SlotEnv, UnaryOp, Value, ValueKind, Var,
};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::tpe::residual::{Residual, ResidualKind};

use super::RECORD_TYPE;
use super::formula::{Atom, FALSE, Formula, Make, TRUE, Values};
use crate::partition::PATIENT_TYPE;

/// When a boolean expression is true, and when evaluating it errors; never both.
#[derive(Debug, Clone)]
pub(crate) struct Truth {
    pub(crate) holds: Formula,
    pub(crate) errors: Formula,
}

impl Truth {
    fn constant(value: bool) -> Self {
        Truth { holds: Formula::Const(value), errors: FALSE }
    }

    fn error() -> Self {
        Truth { holds: FALSE, errors: TRUE }
    }

    fn of(holds: Formula) -> Self {
        Truth { holds, errors: FALSE }
    }

    /// Neither true nor an error.
    fn is_false(&self) -> Formula {
        self.holds.clone().not().and(self.errors.clone().not())
    }

    /// Cedar's `&&`: the right side is evaluated only when the left holds.
    fn and(self, right: Truth) -> Truth {
        Truth {
            errors: self.errors.clone().or(self.holds.clone().and(right.errors)),
            holds: self.holds.and(right.holds),
        }
    }

    /// Cedar's `||`: the right side is evaluated only when the left is false.
    fn or(self, right: Truth) -> Truth {
        let left_false = self.is_false();
        Truth {
            holds: self.holds.or(left_false.clone().and(right.holds)),
            errors: self.errors.or(left_false.and(right.errors)),
        }
    }

    fn not(self) -> Truth {
        Truth { holds: self.is_false(), errors: self.errors }
    }

    fn ite(self, then: Truth, otherwise: Truth) -> Truth {
        let test_false = self.is_false();
        Truth {
            holds: self.holds.clone().and(then.holds).or(test_false.clone().and(otherwise.holds)),
            errors: self.errors.or(self.holds.and(then.errors)).or(test_false.and(otherwise.errors)),
        }
    }
}

/// What a sub-expression of a residual is.
enum Sym {
    Bool(Truth),
    Value(Value),
    Error,
    /// The record itself.
    Resource,
    /// One of the record's attributes.
    Attr(RecordAttr),
    /// Something else about the record, which no atom says.
    Unknown,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RecordAttr {
    Labels,
    Codes,
    Date,
    ResourceType,
    Confidentiality,
}

/// The extension functions that turn a `datetime` into Unix milliseconds,
/// parsed once: Cedar's parser costs more than the rest of a plan.
static DATETIME_FUNCTIONS: LazyLock<Option<[Name; 3]>> = LazyLock::new(|| {
    let name = |text: &str| Name::from_str(text).ok();
    Some([name("datetime")?, name("durationSince")?, name("toMilliseconds")?])
});

/// Reads residuals of one plan.
pub(crate) struct Translator<'e> {
    /// Evaluates what is fully known, against the plan's entities.
    evaluator: &'e Evaluator<'e>,
    /// The patient whose records are planned, when one is.
    patient: Option<&'e EntityUID>,
    /// The residual parts no atom expresses, as `policy: expression`; atom
    /// `Opaque(2i)` is when the i-th holds, `Opaque(2i + 1)` when it errors.
    pub(crate) opaque: Vec<String>,
    /// The policy being read, to name it in `opaque`.
    pub(crate) policy: String,
}

impl<'e> Translator<'e> {
    pub(crate) fn new(evaluator: &'e Evaluator<'e>, patient: Option<&'e EntityUID>) -> Self {
        Self { evaluator, patient, opaque: Vec::new(), policy: String::new() }
    }

    /// The truth of a boolean residual.
    pub(crate) fn truth(&mut self, residual: &Residual) -> Truth {
        match self.sym(residual) {
            Sym::Bool(truth) => truth,
            Sym::Value(value) => match value.value_kind() {
                ValueKind::Lit(Literal::Bool(b)) => Truth::constant(*b),
                // Not a boolean: Cedar's type error.
                _ => Truth::error(),
            },
            Sym::Error => Truth::error(),
            Sym::Resource | Sym::Attr(_) | Sym::Unknown => self.opaque(residual),
        }
    }

    fn opaque(&mut self, residual: &Residual) -> Truth {
        self.unknown(format!("`{}`: `{}`", self.policy, Expr::from(residual.clone())))
    }

    /// Two opaque atoms, named `what`: when it holds and when it errors.
    pub(crate) fn unknown(&mut self, what: String) -> Truth {
        let index = self.opaque.len() * 2;
        self.opaque.push(what);
        Truth { holds: Formula::atom(Atom::Opaque(index)), errors: Formula::atom(Atom::Opaque(index + 1)) }
    }

    fn sym(&mut self, residual: &Residual) -> Sym {
        let kind = match residual {
            Residual::Concrete { value, .. } => return Sym::Value(value.clone()),
            Residual::Error(_) => return Sym::Error,
            Residual::Partial { kind, .. } => kind,
        };
        match kind {
            ResidualKind::Var(Var::Resource) => Sym::Resource,
            ResidualKind::Var(_) => Sym::Unknown,
            ResidualKind::And { left, right } => {
                let left = self.truth(left);
                Sym::Bool(left.and(self.truth(right)))
            }
            ResidualKind::Or { left, right } => {
                let left = self.truth(left);
                Sym::Bool(left.or(self.truth(right)))
            }
            ResidualKind::If { test_expr, then_expr, else_expr } => {
                let test = self.truth(test_expr);
                match (&test.holds, &test.errors) {
                    (Formula::Const(true), Formula::Const(false)) => self.sym(then_expr),
                    (Formula::Const(false), Formula::Const(false)) => self.sym(else_expr),
                    _ => {
                        let (then, otherwise) = (self.truth(then_expr), self.truth(else_expr));
                        Sym::Bool(test.ite(then, otherwise))
                    }
                }
            }
            ResidualKind::UnaryApp { op: UnaryOp::Not, arg } => Sym::Bool(self.truth(arg).not()),
            ResidualKind::UnaryApp { op, arg } => match self.sym(arg) {
                Sym::Value(v) => self.eval(Expr::unary_app(*op, Expr::from(v))),
                Sym::Error => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::BinaryApp { op, arg1, arg2 } => {
                let (left, right) = (self.sym(arg1), self.sym(arg2));
                self.binary(*op, left, right)
            }
            ResidualKind::ExtensionFunctionApp { fn_name, args } => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args.iter() {
                    match self.sym(arg) {
                        Sym::Value(v) => values.push(Expr::from(v)),
                        Sym::Error => return Sym::Error,
                        _ => return Sym::Unknown,
                    }
                }
                self.eval(Expr::call_extension_fn(fn_name.clone(), values))
            }
            ResidualKind::GetAttr { expr, attr } => match self.sym(expr) {
                Sym::Resource => self.record_attr(attr.as_str()),
                Sym::Value(v) => self.eval(Expr::get_attr(Expr::from(v), attr.clone())),
                Sym::Error => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::HasAttr { expr, attr } => match self.sym(expr) {
                Sym::Resource => record_has(attr),
                Sym::Value(v) => self.eval(Expr::has_attr(Expr::from(v), attr.clone())),
                Sym::Error => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::ExtHasAttr { expr, attrs } => match (self.sym(expr), attrs.tail.is_empty()) {
                (Sym::Resource, true) => record_has(&attrs.head),
                (Sym::Value(v), _) => {
                    // `e has a.b` is `e has a && e.a has b`.
                    let mut path = Expr::from(v);
                    let mut test = Expr::has_attr(path.clone(), attrs.head.clone());
                    let mut previous = &attrs.head;
                    for attr in &attrs.tail {
                        path = Expr::get_attr(path, previous.clone());
                        test = Expr::and(test, Expr::has_attr(path.clone(), attr.clone()));
                        previous = attr;
                    }
                    self.eval(test)
                }
                (Sym::Error, _) => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::Like { expr, pattern } => match self.sym(expr) {
                Sym::Value(v) => self.eval(Expr::like(Expr::from(v), pattern.clone())),
                Sym::Error => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::Is { expr, entity_type } => match self.sym(expr) {
                Sym::Resource => Sym::Bool(Truth::constant(entity_type.to_string() == RECORD_TYPE)),
                Sym::Value(v) => self.eval(Expr::is_entity_type(Expr::from(v), entity_type.clone())),
                Sym::Error => Sym::Error,
                _ => Sym::Unknown,
            },
            ResidualKind::Set(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match self.sym(item) {
                        Sym::Value(v) => values.push(Expr::from(v)),
                        Sym::Error => return Sym::Error,
                        _ => return Sym::Unknown,
                    }
                }
                self.eval(Expr::set(values))
            }
            ResidualKind::Record(fields) => {
                let mut values = Vec::with_capacity(fields.len());
                for (name, field) in fields.iter() {
                    match self.sym(field) {
                        Sym::Value(v) => values.push((name.clone(), Expr::from(v))),
                        Sym::Error => return Sym::Error,
                        _ => return Sym::Unknown,
                    }
                }
                match Expr::record(values) {
                    Ok(record) => self.eval(record),
                    Err(_) => Sym::Error,
                }
            }
        }
    }

    /// Evaluates a fully known expression.
    fn eval(&self, expr: Expr) -> Sym {
        match self.evaluator.interpret(&expr, &SlotEnv::new()) {
            Ok(value) => Sym::Value(value),
            Err(_) => Sym::Error,
        }
    }

    fn record_attr(&self, attr: &str) -> Sym {
        match attr {
            "patient" => match self.patient {
                Some(patient) => Sym::Value(Value::from(patient.clone())),
                None => Sym::Unknown,
            },
            "labels" => Sym::Attr(RecordAttr::Labels),
            "codes" => Sym::Attr(RecordAttr::Codes),
            "date" => Sym::Attr(RecordAttr::Date),
            "resourceType" => Sym::Attr(RecordAttr::ResourceType),
            "confidentiality" => Sym::Attr(RecordAttr::Confidentiality),
            _ => Sym::Unknown,
        }
    }

    fn binary(&self, op: BinaryOp, left: Sym, right: Sym) -> Sym {
        use RecordAttr::{Codes, Date, Labels};
        use Sym::{Attr, Resource, Value as Val};
        match (op, left, right) {
            // Cedar evaluates both operands of a binary operator.
            (_, Sym::Error, _) | (_, _, Sym::Error) => Sym::Error,
            (_, Val(a), Val(b)) => self.eval(Expr::binary_app(op, Expr::from(a), Expr::from(b))),
            (BinaryOp::Eq, Attr(attr), Val(v)) | (BinaryOp::Eq, Val(v), Attr(attr)) => {
                match (scalar(attr), string(&v)) {
                    (Some(make), Some(s)) => atom(Atom::one(make, s)),
                    _ => Sym::Unknown,
                }
            }
            (BinaryOp::Eq, Resource, Val(v)) | (BinaryOp::Eq, Val(v), Resource) => match uid(&v) {
                Some(uid) if is_record(uid) => atom(Atom::one(Atom::Id, record_id(uid))),
                Some(_) => Sym::Bool(Truth::constant(false)),
                None => Sym::Unknown,
            },
            (BinaryOp::Contains, Attr(attr @ (Labels | Codes)), Val(v)) => match string(&v) {
                Some(s) => in_set(attr, Formula::atom(member(attr, Values::from([s])))),
                None => Sym::Unknown,
            },
            (BinaryOp::Contains, Val(set), Attr(attr)) => match (scalar(attr), strings(&set)) {
                (Some(make), Some(values)) => Sym::Bool(Truth::of(any_of(make, values))),
                _ => Sym::Unknown,
            },
            (BinaryOp::Contains, Val(set), Resource) => match elements(&set) {
                Some(items) => {
                    let ids = items.iter().filter_map(uid).filter(|u| is_record(u)).map(record_id).collect();
                    Sym::Bool(Truth::of(any_of(Atom::Id, ids)))
                }
                None => Sym::Unknown,
            },
            (BinaryOp::ContainsAny, Attr(attr @ (Labels | Codes)), Val(set))
            | (BinaryOp::ContainsAny, Val(set), Attr(attr @ (Labels | Codes))) => match strings(&set) {
                Some(values) if values.is_empty() => in_set(attr, FALSE),
                Some(values) => in_set(attr, Formula::atom(member(attr, values))),
                None => Sym::Unknown,
            },
            (BinaryOp::ContainsAll, Attr(attr @ (Labels | Codes)), Val(set)) => match elements(&set) {
                Some(items) => {
                    let all = items.iter().fold(TRUE, |acc, item| {
                        // A value that is not a string is in no set of strings.
                        acc.and(
                            string(item).map_or(FALSE, |s| Formula::atom(member(attr, Values::from([s])))),
                        )
                    });
                    in_set(attr, all)
                }
                None => Sym::Unknown,
            },
            (BinaryOp::In, Resource, Val(v)) => {
                let targets: Vec<Value> = match elements(&v) {
                    Some(items) => items,
                    None => vec![v],
                };
                let mut any = Truth::constant(false);
                for target in &targets {
                    match self.record_in(target) {
                        Some(truth) => any = any.or(truth),
                        None => return Sym::Unknown,
                    }
                }
                Sym::Bool(any)
            }
            (BinaryOp::Less | BinaryOp::LessEq, Attr(Date), Val(v)) => match self.millis(&v) {
                // date < t, date <= t (that is, date < t + 1 ms)
                Some(at) => dated(Atom::DateLt(if op == BinaryOp::Less { at } else { at.saturating_add(1) })),
                None => Sym::Unknown,
            },
            (BinaryOp::Less | BinaryOp::LessEq, Val(v), Attr(Date)) => match self.millis(&v) {
                // t < date (date >= t + 1 ms), t <= date
                Some(at) => dated(Atom::DateGe(if op == BinaryOp::Less { at.saturating_add(1) } else { at })),
                None => Sym::Unknown,
            },
            _ => Sym::Unknown,
        }
    }

    /// `resource in target`, for a record of the plan's patient.
    fn record_in(&self, target: &Value) -> Option<Truth> {
        let target = uid(target)?;
        if is_record(target) {
            return Some(Truth::of(Formula::atom(Atom::one(Atom::Id, record_id(target)))));
        }
        match self.patient {
            // A record is filed under its patient and nothing else.
            Some(patient) => Some(Truth::constant(patient == target)),
            None if target.entity_type().to_string() == PATIENT_TYPE => None,
            None => Some(Truth::constant(false)),
        }
    }

    /// A `datetime` value in Unix milliseconds, as Cedar computes it.
    fn millis(&self, value: &Value) -> Option<i64> {
        if !matches!(value.value_kind(), ValueKind::ExtensionValue(_)) {
            return None;
        }
        let [datetime, since, millis] = DATETIME_FUNCTIONS.as_ref()?;
        let epoch = Expr::call_extension_fn(datetime.clone(), vec![Expr::val("1970-01-01")]);
        let since = Expr::call_extension_fn(since.clone(), vec![Expr::from(value.clone()), epoch]);
        let expr = Expr::call_extension_fn(millis.clone(), vec![since]);
        match self.evaluator.interpret(&expr, &SlotEnv::new()).ok()?.value_kind() {
            ValueKind::Lit(Literal::Long(ms)) => Some(*ms),
            _ => None,
        }
    }
}

fn atom(atom: Atom) -> Sym {
    Sym::Bool(Truth::of(Formula::atom(atom)))
}

/// A test of `codes`, which errors when the record has none.
fn codes(holds: Formula) -> Sym {
    let has = Formula::atom(Atom::HasCodes);
    Sym::Bool(Truth { holds: has.clone().and(holds), errors: has.not() })
}

/// A test of a set attribute.
fn in_set(attr: RecordAttr, holds: Formula) -> Sym {
    if attr == RecordAttr::Codes { codes(holds) } else { Sym::Bool(Truth::of(holds)) }
}

/// The set attribute holds one of `values`.
fn member(attr: RecordAttr, values: Values) -> Atom {
    if attr == RecordAttr::Codes { Atom::Codes(values) } else { Atom::Labels(values) }
}

/// The atom of a single-valued attribute, if `attr` is one.
fn scalar(attr: RecordAttr) -> Option<Make> {
    match attr {
        RecordAttr::ResourceType => Some(Atom::Type),
        RecordAttr::Confidentiality => Some(Atom::Confidentiality),
        _ => None,
    }
}

/// The attribute is one of `values` (none: false).
fn any_of(make: Make, values: Values) -> Formula {
    if values.is_empty() { FALSE } else { Formula::atom(make(values)) }
}

fn record_id(uid: &EntityUID) -> String {
    uid.eid().as_ref().to_owned()
}

/// A comparison of `date`, which errors when the record has none.
fn dated(comparison: Atom) -> Sym {
    let has = Formula::atom(Atom::HasDate);
    Sym::Bool(Truth { holds: Formula::atom(comparison), errors: has.not() })
}

fn record_has(attr: &str) -> Sym {
    match attr {
        // Required by the vocabulary: every stored record has them.
        "patient" | "labels" | "resourceType" | "confidentiality" => Sym::Bool(Truth::constant(true)),
        "codes" => atom(Atom::HasCodes),
        "date" => atom(Atom::HasDate),
        _ => Sym::Unknown,
    }
}

fn string(value: &Value) -> Option<String> {
    match value.value_kind() {
        ValueKind::Lit(Literal::String(s)) => Some(s.to_string()),
        _ => None,
    }
}

fn uid(value: &Value) -> Option<&EntityUID> {
    match value.value_kind() {
        ValueKind::Lit(Literal::EntityUID(uid)) => Some(uid.as_ref()),
        _ => None,
    }
}

fn is_record(uid: &EntityUID) -> bool {
    uid.entity_type().to_string() == RECORD_TYPE
}

fn elements(value: &Value) -> Option<Vec<Value>> {
    match value.value_kind() {
        ValueKind::Set(set) => Some(set.iter().cloned().collect()),
        _ => None,
    }
}

/// The strings of a set; its other elements can equal no string.
fn strings(value: &Value) -> Option<Values> {
    elements(value).map(|items| items.iter().filter_map(string).collect())
}

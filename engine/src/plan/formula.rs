//! Boolean formulas over what a record is, and their disjunctive normal form.
//!
//! A filter is a disjunction of conjunctions because that is what a database
//! query or a FHIR search can run: each conjunction is one query, and the
//! results are their union. The formulas that the residuals of partial
//! evaluation turn into are arbitrary, so they are normalized here, with
//! every conjunction checked against what a record can be (one resource
//! type, a date before it is after, a code only when it has codes), so that
//! impossible alternatives never reach the caller.
//!
//! An [`Atom::Opaque`] stands for a part of a residual no atom can say.
//! Callers drop every conjunction that mentions one, which leaves a formula
//! that implies the original: fewer records, never more.

use std::collections::BTreeSet;

/// Values an atom allows any one of.
pub(crate) type Values = BTreeSet<String>;

/// Makes a set-valued atom of one kind from its values.
pub(crate) type Make = fn(Values) -> Atom;

/// A fact about one record of the patient. A set-valued atom holds when the
/// record has any one of its values, so a long list in a consent is one
/// atom, not one alternative per value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Atom {
    /// `labels` contains one of the codes.
    Labels(Values),
    /// `codes` is present and contains one of the codes.
    Codes(Values),
    /// `codes` is present.
    HasCodes,
    /// `date` is present.
    HasDate,
    /// `date` is present and at or after the instant (Unix milliseconds).
    DateGe(i64),
    /// `date` is present and before the instant (Unix milliseconds).
    DateLt(i64),
    /// `resourceType` is one of the values.
    Type(Values),
    /// `confidentiality` is one of the values.
    Confidentiality(Values),
    /// The record's id is one of the values.
    Id(Values),
    /// A part of a residual that no atom expresses, by its position in the plan's list.
    Opaque(usize),
}

impl Atom {
    /// One value of a set-valued atom.
    pub(crate) fn one(make: Make, value: String) -> Atom {
        make(Values::from([value]))
    }

    /// The values of a set-valued atom, and a function that makes another
    /// atom of its kind.
    fn values(&self) -> Option<(&Values, Make)> {
        match self {
            Atom::Labels(v) => Some((v, Atom::Labels)),
            Atom::Codes(v) => Some((v, Atom::Codes)),
            Atom::Type(v) => Some((v, Atom::Type)),
            Atom::Confidentiality(v) => Some((v, Atom::Confidentiality)),
            Atom::Id(v) => Some((v, Atom::Id)),
            _ => None,
        }
    }

    /// Whether the attribute has one value (so two values of it exclude each other).
    fn single_valued(&self) -> bool {
        matches!(self, Atom::Type(_) | Atom::Confidentiality(_) | Atom::Id(_))
    }
}

/// Whether two atoms are set-valued atoms of the same attribute.
fn same_kind(a: &Atom, b: &Atom) -> bool {
    a.values().is_some() && std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// A formula in negation normal form: negation only on atoms, and never on
/// the date comparisons (their negation is spelled out, since a record
/// without a date is on neither side of an instant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Formula {
    Const(bool),
    /// An atom, or its negation when the flag is false.
    Lit(Atom, bool),
    And(Vec<Formula>),
    Or(Vec<Formula>),
}

pub(crate) const TRUE: Formula = Formula::Const(true);
pub(crate) const FALSE: Formula = Formula::Const(false);

impl Formula {
    pub(crate) fn atom(atom: Atom) -> Self {
        Formula::Lit(atom, true)
    }

    /// Both, with constants folded, a literal and its negation false, and
    /// exclusions of one attribute joined (`not in A and not in B` is `not in A ∪ B`).
    pub(crate) fn and(self, other: Formula) -> Formula {
        combine(self, other, false)
    }

    /// Either, with constants folded, a literal or its negation true, and
    /// values of one attribute joined (`in A or in B` is `in A ∪ B`).
    pub(crate) fn or(self, other: Formula) -> Formula {
        combine(self, other, true)
    }

    /// The negation, pushed down to the atoms.
    pub(crate) fn not(self) -> Formula {
        match self {
            Formula::Const(b) => Formula::Const(!b),
            Formula::Lit(Atom::DateGe(at), true) => absent_date().or(Formula::atom(Atom::DateLt(at))),
            Formula::Lit(Atom::DateLt(at), true) => absent_date().or(Formula::atom(Atom::DateGe(at))),
            Formula::Lit(atom, positive) => Formula::Lit(atom, !positive),
            Formula::And(items) => items.into_iter().fold(FALSE, |acc, f| acc.or(f.not())),
            Formula::Or(items) => items.into_iter().fold(TRUE, |acc, f| acc.and(f.not())),
        }
    }
}

/// `left || right` (`either`) or `left && right`, flattened.
fn combine(left: Formula, right: Formula, either: bool) -> Formula {
    // The constant that decides the whole, and the one that drops out.
    let (absorbing, neutral) = (Formula::Const(either), Formula::Const(!either));
    let flat = |f: Formula| match f {
        Formula::Or(items) if either => items,
        Formula::And(items) if !either => items,
        other => vec![other],
    };
    let mut items = flat(left);
    for f in flat(right) {
        if f == absorbing {
            return absorbing;
        }
        if f == neutral {
            continue;
        }
        if absorb(&mut items, f, either) {
            return absorbing;
        }
    }
    items.retain(|f| *f != neutral);
    if items.contains(&absorbing) {
        return absorbing;
    }
    match items.len() {
        0 => neutral,
        1 => items.pop().unwrap_or(neutral),
        _ if either => Formula::Or(items),
        _ => Formula::And(items),
    }
}

/// Adds `f` to the items of an `Or` (`either` true: held atoms join) or an
/// `And` (false: negated atoms join), joining it with an atom of the same
/// attribute that is already there. True when `f` is the negation of an
/// item, which decides the whole.
fn absorb(items: &mut Vec<Formula>, f: Formula, either: bool) -> bool {
    if let Formula::Lit(atom, positive) = &f {
        let complement = Formula::Lit(atom.clone(), !*positive);
        if items.contains(&complement) {
            return true;
        }
        if items.contains(&f) {
            return false;
        }
        if *positive == either
            && let Some((values, make)) = atom.values()
        {
            let existing = items.iter_mut().find_map(|item| match item {
                Formula::Lit(other, p) if *p == either && same_kind(other, atom) => Some(other),
                _ => None,
            });
            if let Some(other) = existing
                && let Some((known, _)) = other.values()
            {
                let joined: Values = known.union(values).cloned().collect();
                *other = make(joined);
                return false;
            }
        }
    }
    items.push(f);
    false
}

fn absent_date() -> Formula {
    Formula::Lit(Atom::HasDate, false)
}

/// One conjunction of literals: an atom and whether it holds.
pub(crate) type Conjunction = BTreeSet<(Atom, bool)>;

/// The normal form would have more alternatives than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge;

/// The formula as a disjunction of consistent, simplified conjunctions,
/// none of which contains another. `[]` is false; `[{}]` is true.
pub(crate) fn dnf(formula: &Formula, limit: usize) -> Result<Vec<Conjunction>, TooLarge> {
    let alternatives = expand(formula, limit)?;
    Ok(joined(without_subsumed(alternatives), limit))
}

fn expand(formula: &Formula, limit: usize) -> Result<Vec<Conjunction>, TooLarge> {
    match formula {
        Formula::Const(true) => Ok(vec![Conjunction::new()]),
        Formula::Const(false) => Ok(Vec::new()),
        Formula::Lit(atom, positive) => {
            Ok(normalized(Conjunction::from([(atom.clone(), *positive)])).into_iter().collect())
        }
        Formula::Or(items) => {
            let mut out = Vec::new();
            for item in items {
                out.extend(expand(item, limit)?);
                if out.len() > limit {
                    out = without_subsumed(out);
                    if out.len() > limit {
                        return Err(TooLarge);
                    }
                }
            }
            Ok(out)
        }
        Formula::And(items) => {
            // Literals first: they prune the products of the wider items.
            let mut items: Vec<&Formula> = items.iter().collect();
            items.sort_by_key(|item| match item {
                Formula::Or(alternatives) => alternatives.len(),
                _ => 0,
            });
            let mut acc = vec![Conjunction::new()];
            for item in items {
                let next = expand(item, limit)?;
                let mut product = Vec::new();
                for left in &acc {
                    for right in &next {
                        let joined: Conjunction = left.iter().chain(right).cloned().collect();
                        product.extend(normalized(joined));
                    }
                }
                acc = without_subsumed(product);
                if acc.len() > limit {
                    return Err(TooLarge);
                }
                if acc.is_empty() {
                    break;
                }
            }
            Ok(acc)
        }
    }
}

/// The conjunction in its canonical form (one exclusion per attribute, held
/// values less the excluded ones, implied literals left out), or `None`
/// when no record can satisfy it.
fn normalized(conjunction: Conjunction) -> Option<Conjunction> {
    let mut out = Conjunction::new();
    let mut from = None::<i64>;
    let mut until = None::<i64>;
    // Per set-valued attribute: the values it must hold one of (each), and those it may not hold.
    let mut held: Vec<(Make, Vec<Values>, Values)> = Vec::new();
    for (atom, positive) in &conjunction {
        if conjunction.contains(&(atom.clone(), !*positive)) {
            return None;
        }
        if let Some((values, make)) = atom.values() {
            let at = match held.iter().position(|(m, _, _)| same_kind(&m(Values::new()), atom)) {
                Some(at) => at,
                None => {
                    held.push((make, Vec::new(), Values::new()));
                    held.len() - 1
                }
            };
            let (_, any, none) = held.get_mut(at)?;
            if *positive {
                any.push(values.clone());
            } else {
                none.extend(values.iter().cloned());
            }
            continue;
        }
        match (atom, positive) {
            (Atom::DateGe(at), true) => from = Some(from.map_or(*at, |f| f.max(*at))),
            (Atom::DateLt(at), true) => until = Some(until.map_or(*at, |u| u.min(*at))),
            _ => {
                out.insert((atom.clone(), *positive));
            }
        }
    }
    if from.zip(until).is_some_and(|(f, u)| f >= u) {
        return None;
    }
    let dated = from.is_some() || until.is_some();
    if dated {
        if out.contains(&(Atom::HasDate, false)) {
            return None;
        }
        out.remove(&(Atom::HasDate, true));
    }
    out.extend(from.map(|at| (Atom::DateGe(at), true)));
    out.extend(until.map(|at| (Atom::DateLt(at), true)));
    let no_codes = out.contains(&(Atom::HasCodes, false));
    for (make, any, mut none) in held {
        let atom = make(Values::new());
        if atom.single_valued() {
            // One value: it must be in every held set and in none of the excluded ones.
            let mut allowed: Option<Values> = None;
            for values in any {
                allowed = Some(match allowed {
                    Some(known) => known.intersection(&values).cloned().collect(),
                    None => values,
                });
            }
            match allowed {
                Some(allowed) => {
                    let allowed: Values = allowed.difference(&none).cloned().collect();
                    if allowed.is_empty() {
                        return None;
                    }
                    out.insert((make(allowed), true));
                }
                None => {
                    out.insert((make(none), false));
                }
            }
            continue;
        }
        let mut kept: Vec<Values> = Vec::new();
        for values in any {
            let values: Values = values.difference(&none).cloned().collect();
            if values.is_empty() {
                return None;
            }
            kept.push(values);
        }
        if matches!(atom, Atom::Codes(_)) {
            if no_codes && !kept.is_empty() {
                return None;
            }
            if !kept.is_empty() {
                out.remove(&(Atom::HasCodes, true));
            }
            if no_codes {
                // A record without codes holds none of them.
                none.clear();
            }
        }
        // Holding one of a smaller set implies holding one of a larger one.
        kept.sort_by_key(BTreeSet::len);
        let mut minimal: Vec<Values> = Vec::new();
        for values in kept {
            if !minimal.iter().any(|m| m.is_subset(&values)) {
                minimal.push(values);
            }
        }
        out.extend(minimal.into_iter().map(|values| (make(values), true)));
        if !none.is_empty() {
            out.insert((make(none), false));
        }
    }
    Some(out)
}

/// The alternatives without duplicates and without any that admits nothing
/// another one does not admit.
fn without_subsumed(mut alternatives: Vec<Conjunction>) -> Vec<Conjunction> {
    alternatives.sort_by_key(BTreeSet::len);
    alternatives.dedup();
    let mut kept: Vec<Conjunction> = Vec::with_capacity(alternatives.len());
    for alternative in alternatives {
        if !kept.iter().any(|k| covers(k, &alternative)) {
            kept.retain(|k| !covers(&alternative, k));
            kept.push(alternative);
        }
    }
    kept
}

/// Joins alternatives that differ in one atom held and not held (`A and x`
/// or `A and not x` is `A`), where the join admits everything one of them
/// does: the tests `has codes` and `has date` guard each code and date and
/// leave such pairs behind, and a filter without them is shorter and lets
/// `always` be seen.
pub(crate) fn joined(mut alternatives: Vec<Conjunction>, limit: usize) -> Vec<Conjunction> {
    let mut rounds = 0;
    'again: while rounds < limit {
        rounds += 1;
        for (i, left) in alternatives.iter().enumerate() {
            for right in alternatives.iter().skip(i + 1) {
                for (atom, positive) in left {
                    let opposite = (atom.clone(), !*positive);
                    if !right.contains(&opposite) {
                        continue;
                    }
                    let join: Conjunction = left
                        .iter()
                        .filter(|l| l.0 != *atom)
                        .chain(right.iter().filter(|r| **r != opposite))
                        .cloned()
                        .collect();
                    let Some(join) = normalized(join) else { continue };
                    if (covers(&join, left) || covers(&join, right)) && !alternatives.contains(&join) {
                        alternatives.push(join);
                        alternatives = without_subsumed(alternatives);
                        continue 'again;
                    }
                }
            }
        }
        break;
    }
    alternatives
}

/// Whether every record that satisfies `big` satisfies `small`.
fn covers(small: &Conjunction, big: &Conjunction) -> bool {
    small.iter().all(|literal| big.iter().any(|given| implies(given, literal)))
}

/// Whether a record for which `given` holds satisfies `wanted`.
fn implies(given: &(Atom, bool), wanted: &(Atom, bool)) -> bool {
    if given == wanted {
        return true;
    }
    match (given, wanted) {
        ((Atom::Codes(_), true), (Atom::HasCodes, true)) => true,
        ((Atom::HasCodes, false), (Atom::Codes(_), false)) => true,
        ((Atom::DateGe(_) | Atom::DateLt(_), true), (Atom::HasDate, true)) => true,
        ((Atom::DateGe(a), true), (Atom::DateGe(b), true)) => a >= b,
        ((Atom::DateLt(a), true), (Atom::DateLt(b), true)) => a <= b,
        ((a, held), (b, wanted)) if same_kind(a, b) => {
            let (Some((a, _)), Some((b, _))) = (a.values(), b.values()) else { return false };
            match (held, wanted) {
                (true, true) => a.is_subset(b),
                (false, false) => b.is_subset(a),
                // One value, among `a`: then it is in none of `b` if they share none.
                (true, false) => given.0.single_valued() && a.is_disjoint(b),
                (false, true) => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(make: Make, value: &str) -> Atom {
        Atom::one(make, value.to_owned())
    }

    fn label(code: &str) -> Formula {
        Formula::atom(one(Atom::Labels, code))
    }

    fn kind(name: &str) -> Formula {
        Formula::atom(one(Atom::Type, name))
    }

    fn values(items: &[&str]) -> Values {
        items.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn negation_spells_out_dates_without_a_date() {
        let not_after = Formula::atom(Atom::DateGe(10)).not();
        assert_eq!(
            dnf(&not_after, 16),
            Ok(vec![
                Conjunction::from([(Atom::HasDate, false)]),
                Conjunction::from([(Atom::DateLt(10), true)])
            ])
        );
    }

    #[test]
    fn impossible_alternatives_are_dropped() {
        let two_types = kind("Observation").and(kind("Condition"));
        assert_eq!(dnf(&two_types, 16), Ok(vec![]));
        let empty_window = Formula::atom(Atom::DateGe(10)).and(Formula::atom(Atom::DateLt(10)));
        assert_eq!(dnf(&empty_window, 16), Ok(vec![]));
        let code_without_codes =
            Formula::atom(one(Atom::Codes, "x")).and(Formula::Lit(Atom::HasCodes, false));
        assert_eq!(dnf(&code_without_codes, 16), Ok(vec![]));
        let both = label("PSY").and(label("PSY").not());
        assert_eq!(dnf(&both, 16), Ok(vec![]));
        let excluded = label("PSY").or(label("HIV")).and(label("PSY").not()).and(label("HIV").not());
        assert_eq!(dnf(&excluded, 16), Ok(vec![]), "one of PSY or HIV, and neither");
    }

    #[test]
    fn values_of_one_attribute_join() {
        assert_eq!(
            kind("Observation").or(kind("Condition")),
            Formula::atom(Atom::Type(values(&["Condition", "Observation"])))
        );
        assert_eq!(
            label("PSY").not().and(label("HIV").not()),
            Formula::Lit(Atom::Labels(values(&["HIV", "PSY"])), false)
        );
        let f = kind("Observation").and(kind("Condition").not());
        assert_eq!(dnf(&f, 16), Ok(vec![Conjunction::from([(one(Atom::Type, "Observation"), true)])]));
    }

    #[test]
    fn a_larger_alternative_is_subsumed_by_a_smaller_one() {
        let f = label("A").or(label("A").and(label("B")));
        assert_eq!(dnf(&f, 16), Ok(vec![Conjunction::from([(one(Atom::Labels, "A"), true)])]));
        assert_eq!(dnf(&label("A").or(TRUE), 16), Ok(vec![Conjunction::new()]));
    }

    #[test]
    fn a_guard_and_its_negation_leave_nothing_behind() {
        let has = Formula::atom(Atom::HasCodes);
        let coded = Formula::atom(one(Atom::Codes, "x"));
        // `!(resource has codes && resource.codes.contains("x"))`, as the guard leaves it.
        let f = has.clone().not().or(has.clone().and(coded.clone().not()));
        assert_eq!(dnf(&f, 16), Ok(vec![Conjunction::from([(one(Atom::Codes, "x"), false)])]));
        let either = kind("Condition").or(kind("Condition").not());
        assert_eq!(dnf(&either, 16), Ok(vec![Conjunction::new()]), "a tautology is `always`");
        let dated = Formula::atom(Atom::HasDate).not().or(Formula::atom(Atom::DateLt(5)));
        assert_eq!(dnf(&dated, 16).map(|d| d.len()), Ok(2), "no date, or an early one: both stay");
    }

    #[test]
    fn the_limit_is_kept() {
        let code = |c: &str| Formula::atom(one(Atom::Codes, c));
        let wide = (0..6).fold(TRUE, |acc, i| acc.and(label(&format!("a{i}")).or(code(&format!("b{i}")))));
        assert_eq!(dnf(&wide, 16), Err(TooLarge));
        assert!(dnf(&wide, 64).is_ok());
    }
}

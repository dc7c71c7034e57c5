//! The size limits of a consent, checked while it is parsed.
//!
//! A consent is compiled into Cedar policies and evaluated on every decision
//! about its patient, so its size is the size of code the engine runs. Each
//! provision becomes a policy that repeats the conditions of the provisions
//! above it, so nesting multiplies what lists add. The limits keep the
//! largest consent that is accepted small enough to compile, validate and
//! decide quickly (`tests/consent/decidable.rs` decides it), and far above
//! what a patient's consent needs.

use crate::consent::ConsentError;

/// Provisions in one consent, at every level together.
pub const MAX_PROVISIONS: usize = 32;
/// Levels of nested provisions below the root (an R4 `provision.provision[0]`
/// is at level 1, as is an R5 `provision[0]`).
pub const MAX_NESTING: usize = 6;
/// Values in one list of a provision: actors, purposes, classes or resource
/// types, codes, security labels or data references.
pub const MAX_LIST_VALUES: usize = 1_000;
/// Values in all the lists of one consent together.
pub const MAX_CONSENT_VALUES: usize = 2_000;
/// Values in all the policies a consent compiles into. Each provision's
/// policy repeats the lists of the provisions above it and of its
/// exceptions, so a long list high up in a consent with many provisions
/// counts many times.
pub const MAX_COMPILED_VALUES: usize = 5_000;

/// What a consent has used of its limits so far.
#[derive(Debug, Default)]
pub(super) struct Budget {
    provisions: usize,
    values: usize,
    compiled: usize,
}

impl Budget {
    /// Counts one provision at nesting level `level` (the root is level 0).
    pub(super) fn provision(&mut self, level: usize, path: &str) -> Result<(), ConsentError> {
        if level > MAX_NESTING {
            return Err(ConsentError::invalid(
                path,
                format!("provisions are nested {level} levels deep; the limit is {MAX_NESTING}"),
            ));
        }
        self.provisions += 1;
        if self.provisions > MAX_PROVISIONS {
            return Err(ConsentError::invalid(
                path,
                format!("a consent may hold at most {MAX_PROVISIONS} provisions; this is one more"),
            ));
        }
        Ok(())
    }

    /// Counts the values that the policy of the provision at `path` repeats.
    pub(super) fn compiled(&mut self, count: usize, path: &str) -> Result<(), ConsentError> {
        self.compiled += count;
        if self.compiled > MAX_COMPILED_VALUES {
            return Err(ConsentError::invalid(
                path,
                format!(
                    "the consent would compile into policies holding more than {MAX_COMPILED_VALUES} \
                     values, since each provision's policy repeats the lists of the provisions above it \
                     and of its exceptions; that is the limit for one consent"
                ),
            ));
        }
        Ok(())
    }

    /// Counts the values of the list at `path`, and hands them back.
    pub(super) fn counted<T>(&mut self, values: Vec<T>, path: &str) -> Result<Vec<T>, ConsentError> {
        self.values(values.len(), path)?;
        Ok(values)
    }

    /// Counts the `count` values of the list at `path`.
    pub(super) fn values(&mut self, count: usize, path: &str) -> Result<(), ConsentError> {
        if count > MAX_LIST_VALUES {
            return Err(ConsentError::invalid(
                path,
                format!("{count} values; the limit is {MAX_LIST_VALUES} values in one list"),
            ));
        }
        self.values += count;
        if self.values > MAX_CONSENT_VALUES {
            return Err(ConsentError::invalid(
                path,
                format!(
                    "the consent's lists hold more than {MAX_CONSENT_VALUES} values together; that is \
                     the limit for one consent"
                ),
            ));
        }
        Ok(())
    }
}

//! A store that holds part of a larger directory: a bounded cache.
//!
//! A hospital's directory can be far larger than a replica's memory, so the
//! host keeps only the entities recent decisions needed and loads the
//! others on demand. The engine must then tell "not stored" from "not
//! loaded": a decision that needs an entity the cache has not loaded is not
//! made. It names the uids instead ([`crate::Decision::unloaded`]), because
//! deciding as if the entity did not exist could drop the group membership
//! or the `restricted` flag a forbid depends on.
//!
//! Eviction is CLOCK (second chance): a lookup sets the entity's `touched`
//! bit, and a sweep removes the untouched entities and clears the bit of
//! the rest. A hit costs one relaxed load, where an exact LRU would write
//! to shared memory on every lookup of the hospital's own entity by every
//! core.
//!
//! Loading or evicting an entity does not change what the directory holds,
//! so neither moves the store to a new generation, and the closures that
//! decisions remembered stay valid; only a change of the directory does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cedar_policy::EntityUid;

use crate::store::StoredEntity;

/// What an absent uid is taken to cost: its key and the map's overhead.
const ABSENT_FOOTPRINT: usize = 96;

/// After a sweep the cache holds at most this share of its budget, so that
/// sweeps are rare.
const SWEEP_TO_PERCENT: usize = 75;

/// CLOCK's mark: set when a decision uses an entry, taken by a sweep.
#[derive(Debug, Default)]
pub(crate) struct Mark(AtomicBool);

impl Mark {
    /// A mark already set: what was just loaded is in use.
    pub(crate) fn set() -> Self {
        Self(AtomicBool::new(true))
    }

    /// Sets the mark; a load first, so that the hospital's own entity, in
    /// every slice, is not written to by every core.
    pub(crate) fn touch(&self) {
        if !self.0.load(Ordering::Relaxed) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the mark was set, clearing it.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

impl Clone for Mark {
    fn clone(&self) -> Self {
        Self(AtomicBool::new(self.0.load(Ordering::Relaxed)))
    }
}

/// The bookkeeping of a bounded store: what is known absent, and what each
/// loaded entity is taken to cost.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    /// Uids the directory does not hold, as of when they were looked up.
    absent: foldhash::HashMap<EntityUid, Mark>,
    footprints: foldhash::HashMap<EntityUid, usize>,
    bytes: usize,
    budget: usize,
}

impl Cache {
    pub(crate) fn new(budget: usize) -> Self {
        Self { absent: Default::default(), footprints: Default::default(), bytes: 0, budget }
    }

    /// Bytes the cache is taken to hold.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The configured budget.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Whether `uid` is known absent, marking it as used if so.
    pub(crate) fn is_absent(&self, uid: &EntityUid) -> bool {
        self.absent.get(uid).inspect(|mark| mark.touch()).is_some()
    }

    /// Counts a loaded entity, replacing what an earlier copy counted.
    pub(crate) fn count_loaded(&mut self, uid: &EntityUid, footprint: usize) {
        if self.absent.remove(uid).is_some() {
            self.bytes = self.bytes.saturating_sub(ABSENT_FOOTPRINT);
        }
        let before = self.footprints.insert(uid.clone(), footprint).unwrap_or(0);
        self.bytes = self.bytes.saturating_sub(before) + footprint;
    }

    /// Records that the directory does not hold `uid`.
    pub(crate) fn count_absent(&mut self, uid: EntityUid) {
        if let Some(before) = self.footprints.remove(&uid) {
            self.bytes = self.bytes.saturating_sub(before);
        }
        if self.absent.insert(uid, Mark::set()).is_none() {
            self.bytes += ABSENT_FOOTPRINT;
        }
    }

    /// Forgets whatever was known of `uid`.
    pub(crate) fn forget(&mut self, uid: &EntityUid) {
        if let Some(before) = self.footprints.remove(uid) {
            self.bytes = self.bytes.saturating_sub(before);
        }
        if self.absent.remove(uid).is_some() {
            self.bytes = self.bytes.saturating_sub(ABSENT_FOOTPRINT);
        }
    }

    /// Brings the cache back towards its budget when it is over it: the
    /// entities and absent uids no decision touched since the last sweep
    /// go. A touched one loses its mark and stays until the next sweep, so
    /// what one load admitted survives until its decision has run: the
    /// budget is soft, exceeded at most by what is in use.
    pub(crate) fn sweep(&mut self, entities: &mut foldhash::HashMap<EntityUid, Arc<StoredEntity>>) {
        if self.bytes <= self.budget {
            return;
        }
        let target = self.budget / 100 * SWEEP_TO_PERCENT;
        let mut bytes = self.bytes;
        let mut evicted = Vec::new();
        for (uid, mark) in &self.absent {
            if bytes <= target {
                break;
            }
            if !mark.take() {
                bytes = bytes.saturating_sub(ABSENT_FOOTPRINT);
                evicted.push(uid.clone());
            }
        }
        for (uid, stored) in entities.iter() {
            if bytes <= target {
                break;
            }
            if !stored.mark().take() {
                bytes = bytes.saturating_sub(self.footprints.get(uid).copied().unwrap_or(0));
                evicted.push(uid.clone());
            }
        }
        for uid in evicted {
            entities.remove(&uid);
            self.forget(&uid);
        }
    }
}

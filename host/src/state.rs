//! Shared server state: the policy bundle and the entity store in force.
//!
//! Both sit behind one lock so that every decision sees a bundle and a store
//! that belong together: a schema change re-parses the store and swaps both
//! at once. Decisions take the read side for microseconds; all validation
//! and parsing of a change happens before the write side is taken.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use consentry_engine::{Decision, DecisionRequest, EntityStore, PolicyBundle, RequestError, decide};
use serde::Serialize;

use crate::auth::AdminAuth;

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest batch accepted by the batch endpoints.
    pub max_batch: usize,
    /// The base URL advertised in AuthZEN metadata; derived from `Host` when unset.
    pub public_url: Option<String>,
}

/// The bundle and store a decision runs against.
#[derive(Debug)]
pub struct Snapshot {
    /// The policy bundle in force.
    pub bundle: Arc<PolicyBundle>,
    /// The stored entities.
    pub store: EntityStore,
}

/// The outcome of the last reload from the policy directory.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadStatus {
    /// Whether it succeeded.
    pub ok: bool,
    /// When it happened, in seconds since the Unix epoch.
    pub at_unix: u64,
    /// Why it failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReloadStatus {
    /// A reload that happened now.
    pub fn now(error: Option<String>) -> Self {
        let at_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { ok: error.is_none(), at_unix, error }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    snapshot: RwLock<Snapshot>,
    changes: Mutex<()>,
    last_reload: Mutex<Option<ReloadStatus>>,
    /// Start-up settings.
    pub settings: Settings,
    /// Who may use the admin API.
    pub admin: AdminAuth,
}

impl AppState {
    /// State serving `bundle` over `store`.
    pub fn new(bundle: PolicyBundle, store: EntityStore, settings: Settings, admin: AdminAuth) -> Arc<Self> {
        Arc::new(Self {
            snapshot: RwLock::new(Snapshot { bundle: Arc::new(bundle), store }),
            changes: Mutex::new(()),
            last_reload: Mutex::new(None),
            settings,
            admin,
        })
    }

    /// Read access to the bundle and store. A panic in another thread cannot
    /// leave them half-changed (every change is built first, then assigned),
    /// so a poisoned lock is still safe to read.
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serializes changes: a change reads the snapshot, builds its
    /// replacement outside the write lock, then swaps it in, and no other
    /// change may slip in between.
    pub fn begin_change(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Write access, for admin changes and reloads.
    pub fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Arc<PolicyBundle> {
        Arc::clone(&self.read().bundle)
    }

    /// Decides one request.
    pub fn decide(&self, request: &DecisionRequest) -> Result<Decision, RequestError> {
        let snapshot = self.read();
        decide(&snapshot.bundle, &snapshot.store, request)
    }

    /// Decides several requests against the same snapshot.
    pub fn decide_all(&self, requests: &[DecisionRequest]) -> Vec<Result<Decision, RequestError>> {
        let snapshot = self.read();
        requests.iter().map(|r| decide(&snapshot.bundle, &snapshot.store, r)).collect()
    }

    /// Records the outcome of a reload, for `/readyz`.
    pub fn record_reload(&self, status: ReloadStatus) {
        *self.last_reload.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
    }

    /// The outcome of the last reload, if any happened.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

//! The policies, schema, template links and entities decisions read: one
//! owner for reading them and for every change to them.
//!
//! The durable store ([`crate::store`]) is the truth; this is the replica's
//! copy, in memory, which decisions read for microseconds. Every change goes
//! the same way, whoever makes it (an admin request on this replica, another
//! replica, a reload of the policy directory): it is committed to the store
//! first, and the copy then catches up *from the store*, so a local write
//! and a remote one are applied by the same code and in the order the store
//! gave them. A change is therefore acknowledged only once it is committed,
//! and a replica that hears of a change (the store's change feed) converges
//! on exactly what the store holds.
//!
//! Which source owns the policies is fixed at start-up ([`PolicyTruth`]):
//! a policy directory (GitOps), whose every load is recorded as a version
//! and whose policies the API may not change, or the store itself, managed
//! through the API. Entities always live in the store.
//!
//! Changes are serialized by one lock, held while a candidate is validated,
//! tested and committed; the snapshot's own lock is taken only to swap in
//! what was already built.

mod entities;
mod follow;
mod load;
mod policies;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::SystemTime;

use consentry_engine::{DecisionOptions, EntityStore, LoadError, PolicyBundle};
use serde::Serialize;
use thiserror::Error;

use crate::plugins::Plugins;
use crate::policy_dir::{self, DirError};
use crate::policy_test::Refusal;
use crate::store::{DurableStore, StoreError};

pub use entities::{EntityChanged, EntityEdit, entity_write};
pub use follow::{Following, follow};
pub use load::DEFAULT_CACHE_BYTES;
pub use policies::{DIRECTORY_ACTOR, DirLoaded, PolicyEdit, PolicyVersionRef, Versioned, bundle_of};

/// The bundle and entities a decision runs against, and the store's
/// version and revision they are.
#[derive(Debug)]
pub struct Snapshot {
    /// The policy bundle in force; with no policy set stored, an empty one
    /// (every decision is then `not_permitted`).
    pub bundle: Arc<PolicyBundle>,
    /// The stored entities: in a server, a bounded cache of the store's
    /// directory, loaded on demand (see [`Directory::load_entities`]).
    pub store: EntityStore,
    /// The store's policy version the bundle is; `None` before any is stored.
    pub version: Option<u64>,
    /// The store's entity revision the entities are (0: none written yet).
    pub revision: u64,
}

/// Which source is the truth for the policies, schema and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyTruth {
    /// `--policies DIR`: the directory; API writes to them are refused.
    Directory(PathBuf),
    /// The store, managed through the API.
    Store,
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

/// Who makes a change, why, and on which version of the policy set.
#[derive(Debug, Clone, Default)]
pub struct ChangeBy {
    /// The token name, or `directory` for a load of the policy directory.
    pub actor: String,
    /// The reason the caller gave.
    pub comment: Option<String>,
    /// `If-Match`: the hash the caller expects to be in force.
    pub if_match: Option<String>,
}

/// What the policy tests gate needs (`--policy-tests`).
#[derive(Debug)]
pub struct PolicyGate {
    /// The test directory.
    pub tests: PathBuf,
    /// The plugins decisions run through.
    pub plugins: Arc<Plugins>,
    /// How decisions treat erroring forbids and request entities.
    pub decisions: DecisionOptions,
}

/// Why a change was refused; nothing was changed.
#[derive(Debug, Error)]
pub enum ChangeError {
    /// The candidate does not load or validate.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// The candidate fails the policy tests.
    #[error("{0}")]
    TestsFailed(Refusal),
    /// The policy directory owns the policies, schema and links.
    #[error(
        "the policies, schema and links are managed in the policy directory `{}`: change them there",
        .0.display()
    )]
    DirectoryOwned(PathBuf),
    /// `If-Match` names another hash than the one in force.
    #[error("the policy set in force is {}, not `{expected}`", .current.as_deref().map_or("none".to_owned(), |h| format!("`{h}`")))]
    PreconditionFailed {
        /// The hash the caller expected.
        expected: String,
        /// The hash in force, if any.
        current: Option<String>,
    },
    /// Another replica changed the policy set between this replica's read and its write.
    #[error("the policy set was changed by another replica meanwhile; read it again and retry")]
    Concurrent,
    /// The requested version does not exist.
    #[error("policy version {0} does not exist")]
    NoSuchVersion(u64),
    /// The store failed; the change may not have been made.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a load of the policy directory, or the start-up load from the store, failed.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The directory cannot be read or does not validate.
    #[error(transparent)]
    Dir(#[from] DirError),
    /// The change was refused or the store failed.
    #[error(transparent)]
    Change(#[from] ChangeError),
}

impl From<StoreError> for ReloadError {
    fn from(error: StoreError) -> Self {
        Self::Change(ChangeError::Store(error))
    }
}

impl From<LoadError> for ReloadError {
    fn from(error: LoadError) -> Self {
        Self::Change(ChangeError::Invalid(error))
    }
}

/// A directory opened from the store.
#[derive(Debug)]
pub struct Opened {
    /// The copy.
    pub directory: Directory,
    /// The store's changes since before it was read; see [`follow`].
    pub following: Following,
    /// What loading the policy directory recorded, for the change log.
    pub loaded: DirLoaded,
}

/// The replica's copy of the policies and entities, and the one way to change them.
#[derive(Debug)]
pub struct Directory {
    snapshot: RwLock<Snapshot>,
    changes: tokio::sync::Mutex<()>,
    durable: Arc<DurableStore>,
    truth: PolicyTruth,
    gate: Option<PolicyGate>,
    last_reload: Mutex<Option<ReloadStatus>>,
    /// Set while the store's change feed is down: changes other replicas
    /// make meanwhile (a revocation) are not heard of, so decisions deny
    /// until the copy has been reloaded from the store.
    feed_lost: AtomicBool,
}

impl Directory {
    /// A copy that starts from `bundle` and `store` as given, over `durable`:
    /// for one-off decisions (`consentry check`, policy tests) and tests.
    pub fn new(
        bundle: impl Into<Arc<PolicyBundle>>,
        store: EntityStore,
        durable: Arc<DurableStore>,
        gate: Option<PolicyGate>,
    ) -> Self {
        let snapshot = Snapshot { bundle: bundle.into(), store, version: None, revision: 0 };
        Self::with_snapshot(snapshot, durable, PolicyTruth::Store, gate)
    }

    /// A copy of a store into which `bundle` and `store` were first
    /// written, as a policy version and an entity revision by `actor`: the
    /// server's own path, for tests that start from given policies.
    pub async fn seeded(
        bundle: PolicyBundle,
        store: &EntityStore,
        durable: Arc<DurableStore>,
        gate: Option<PolicyGate>,
        actor: &str,
    ) -> Result<Self, ChangeError> {
        let empty = PolicyBundle::load(None, "", &[])?;
        let cache = EntityStore::bounded(DEFAULT_CACHE_BYTES);
        let snapshot = Snapshot { bundle: Arc::new(empty), store: cache, version: None, revision: 0 };
        let directory = Self::with_snapshot(snapshot, durable, PolicyTruth::Store, gate);
        let by = ChangeBy { actor: actor.to_owned(), ..ChangeBy::default() };
        directory.seed_policies(bundle, &by).await?;
        directory.change_entities(EntityEdit::Replace(store.to_json()?), &by).await?;
        Ok(directory)
    }

    fn with_snapshot(
        snapshot: Snapshot,
        durable: Arc<DurableStore>,
        truth: PolicyTruth,
        gate: Option<PolicyGate>,
    ) -> Self {
        Self {
            snapshot: RwLock::new(snapshot),
            changes: tokio::sync::Mutex::new(()),
            durable,
            truth,
            gate,
            last_reload: Mutex::new(None),
            feed_lost: AtomicBool::new(false),
        }
    }

    /// Read access to what decisions use. Every change is built first and
    /// then assigned, so a lock poisoned by a panic elsewhere is still safe to read.
    pub fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The bundle in force.
    pub fn bundle(&self) -> Arc<PolicyBundle> {
        Arc::clone(&self.read().bundle)
    }

    /// Whether a policy set is in force (`/readyz`): a store-managed
    /// replica that has none yet denies every request.
    pub fn has_policy_set(&self) -> bool {
        let snapshot = self.read();
        snapshot.version.is_some() || snapshot.bundle.policy_count() > 0
    }

    /// Why decisions must not trust this copy now: the store's change feed
    /// is down, so another replica's change may have been missed.
    pub fn out_of_touch(&self) -> Option<&'static str> {
        self.feed_lost.load(Ordering::Acquire).then_some(
            "this replica lost the store's change feed and may have missed a change made through another \
             replica (a revocation, a withdrawn consent); it denies until it has reloaded from the store",
        )
    }

    /// The durable store.
    pub fn durable(&self) -> &DurableStore {
        &self.durable
    }

    /// Which source owns the policies.
    pub fn truth(&self) -> &PolicyTruth {
        &self.truth
    }

    /// Records the outcome of a reload, for `/readyz`.
    pub fn record_reload(&self, status: ReloadStatus) {
        crate::metrics::reload(crate::metrics::Reload::Policies, status.error.is_none());
        *self.last_reload.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
    }

    /// The outcome of the last reload, if any happened.
    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Opens the copy from the store, subscribed to its changes before
    /// anything is read so that no change can slip between. With a policy
    /// directory, the directory is loaded ([`Directory::load_policy_dir`]);
    /// otherwise the store's newest policy version is put in force, or
    /// none: decisions are then denied until one is stored. No entity is
    /// read: the copy is a cache of at most `cache_bytes`, filled by the
    /// decisions that need them, so start-up does not grow with the directory.
    pub async fn open(
        durable: Arc<DurableStore>,
        truth: PolicyTruth,
        gate: Option<PolicyGate>,
        cache_bytes: usize,
    ) -> Result<Opened, ReloadError> {
        let following = Following::new(durable.subscribe());
        let empty = PolicyBundle::load(None, "", &[])?;
        let store = EntityStore::bounded(cache_bytes);
        let snapshot = Snapshot { bundle: Arc::new(empty), store, version: None, revision: 0 };
        let directory = Self::with_snapshot(snapshot, durable, truth.clone(), gate);
        let loaded = match &truth {
            PolicyTruth::Directory(dir) => {
                let (bundle, _) = policy_dir::read_snapshot(dir, policy_dir::load_bundle)?;
                directory.swap(Some((Arc::new(bundle), None)), None);
                directory.reload_entities().await?;
                directory.load_policy_dir(dir).await?
            }
            PolicyTruth::Store => {
                directory.catch_up_policies().await?;
                directory.reload_entities().await?;
                DirLoaded::default()
            }
        };
        Ok(Opened { directory, following, loaded })
    }

    /// Applies parsed entity changes in place, as the store's `revision`.
    fn apply_entities(&self, patch: consentry_engine::ParsedPatch, revision: u64) {
        let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        snapshot.store.apply(patch);
        snapshot.revision = revision;
    }

    /// Swaps in a bundle and, when given, entities, as the store's `version` / `revision`.
    fn swap(&self, bundle: Option<(Arc<PolicyBundle>, Option<u64>)>, store: Option<(EntityStore, u64)>) {
        let mut snapshot = self.snapshot.write().unwrap_or_else(PoisonError::into_inner);
        if let Some((bundle, version)) = bundle {
            snapshot.bundle = bundle;
            snapshot.version = version;
        }
        if let Some((store, revision)) = store {
            snapshot.store = store;
            snapshot.revision = revision;
        }
    }
}

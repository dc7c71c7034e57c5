//! Shared server state: the decision pipeline ([`Pipeline`]) and what only
//! the server has: the tokens, and settings such as batch limits and the
//! public URL.

use std::path::PathBuf;
use std::sync::Arc;

use consentry_engine::{DecisionOptions, EntityStore, PolicyBundle};

use crate::auth::Auth;
use crate::consents::Consents;
use crate::directory::{ChangeError, Directory, PolicyGate};
use crate::pipeline::Pipeline;
use crate::plugins::Plugins;

/// Settings fixed at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Largest batch accepted by the batch endpoints.
    pub max_batch: usize,
    /// The base URL advertised in AuthZEN metadata; derived from `Host` when unset.
    pub public_url: Option<String>,
    /// How decisions treat erroring forbids and request entities.
    pub decisions: DecisionOptions,
    /// Policy tests every change of the policies in force must pass (`--policy-tests`).
    pub policy_tests: Option<PathBuf>,
    /// Whether `ext_authz` mappers may read the principal from the
    /// `x-principal` header (`identity.trust_principal_header`).
    pub trust_principal_header: bool,
}

impl Settings {
    /// The policy tests gate, when the settings name policy tests.
    pub fn policy_gate(&self, plugins: &Arc<Plugins>) -> Option<PolicyGate> {
        self.policy_tests.as_ref().map(|tests| PolicyGate {
            tests: tests.clone(),
            plugins: Arc::clone(plugins),
            decisions: self.decisions,
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_batch: 100,
            public_url: None,
            decisions: DecisionOptions::default(),
            policy_tests: None,
            trust_principal_header: false,
        }
    }
}

/// Everything the handlers share: the decision pipeline, and what only the
/// server has.
#[derive(Debug)]
pub struct AppState {
    /// Plugins, consents, engine and decision log.
    pub pipeline: Pipeline,
    /// Start-up settings.
    pub settings: Settings,
    /// Who may call the protected routes.
    pub auth: Auth,
}

impl AppState {
    /// State serving `bundle` over `store` as they are given, with the
    /// consents' store behind them: for one-off decisions (`consentry
    /// check`, policy tests) and tests.
    pub fn new(
        bundle: impl Into<Arc<PolicyBundle>>,
        store: EntityStore,
        settings: Settings,
        auth: Auth,
        consents: Arc<Consents>,
        plugins: Plugins,
    ) -> Arc<Self> {
        let plugins = Arc::new(plugins);
        let gate = settings.policy_gate(&plugins);
        let directory = Arc::new(Directory::new(bundle, store, consents.durable(), gate));
        Self::with_directory(directory, settings, auth, consents, plugins)
    }

    /// State whose store first receives `bundle` and `store` (see
    /// [`Directory::seeded`]): the server's own path, for tests.
    pub async fn seeded(
        bundle: PolicyBundle,
        store: EntityStore,
        settings: Settings,
        auth: Auth,
        consents: Arc<Consents>,
        plugins: Plugins,
    ) -> Result<Arc<Self>, ChangeError> {
        let plugins = Arc::new(plugins);
        let gate = settings.policy_gate(&plugins);
        let directory = Directory::seeded(bundle, &store, consents.durable(), gate, "start-up").await?;
        Ok(Self::with_directory(Arc::new(directory), settings, auth, consents, plugins))
    }

    /// State over a directory opened from the store.
    pub fn with_directory(
        directory: Arc<Directory>,
        settings: Settings,
        auth: Auth,
        consents: Arc<Consents>,
        plugins: Arc<Plugins>,
    ) -> Arc<Self> {
        let pipeline = Pipeline::new(directory, consents, plugins, settings.decisions);
        Arc::new(Self { pipeline, settings, auth })
    }
}

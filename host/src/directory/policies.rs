//! Changes of the policy set: every accepted one is a new immutable version
//! in the store, and the bundle in force is always one of them.

use std::path::Path;
use std::sync::Arc;

use consentry_engine::{
    EntityStore, LoadError, PolicyBundle, Problem, SchemaSource, SpecialCategories, TemplateLink,
};

use super::{ChangeBy, ChangeError, Directory, PolicyTruth, ReloadError};
use crate::policy_change::PolicyChange;
use crate::policy_dir::{self, DirError};
use crate::policy_test;
use crate::store::{EntityRevision, NewPolicyVersion, PolicyVersion, StoreError, VersionOrigin};

/// The actor recorded for loads of the policy directory.
pub const DIRECTORY_ACTOR: &str = "directory";

/// A change of the policy set through the API.
#[derive(Debug, Clone)]
pub enum PolicyEdit {
    /// New policy text; `None` links keep the current ones.
    Policies {
        /// Cedar policy text.
        text: String,
        /// Template links.
        links: Option<Vec<TemplateLink>>,
    },
    /// A new schema, Cedar text or JSON; the policies and every stored
    /// entity are validated again under it.
    Schema {
        /// The schema text.
        text: String,
        /// Whether `text` is JSON.
        is_json: bool,
    },
    /// An earlier version, put in force again as a new version.
    Rollback(u64),
}

/// Which version of the policy set to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyVersionRef {
    /// Version N.
    Number(u64),
    /// The newest version with this hash.
    Hash(String),
}

/// What a load of the policy directory recorded in the store.
#[derive(Debug, Clone, Default)]
pub struct DirLoaded {
    /// The new policy version, when the directory differed from the one in force.
    pub version: Option<PolicyVersion>,
    /// The revision that imported `entities.json`, when the file changed.
    pub imported: Option<EntityRevision>,
}

/// What a policy change put in force.
#[derive(Debug, Clone)]
pub struct Versioned {
    /// The bundle now in force.
    pub bundle: Arc<PolicyBundle>,
    /// Its version in the store.
    pub version: PolicyVersion,
}

impl Directory {
    /// Applies an API change of the policy set: validated, tested (with
    /// `--policy-tests`), committed as the next version, then put in force.
    pub async fn change_policies(&self, edit: PolicyEdit, by: &ChangeBy) -> Result<Versioned, ChangeError> {
        if let PolicyTruth::Directory(dir) = &self.truth {
            return Err(ChangeError::DirectoryOwned(dir.clone()));
        }
        let _change = self.changes.lock().await;
        let (current, in_store) = {
            let snapshot = self.read();
            (Arc::clone(&snapshot.bundle), snapshot.version.is_some())
        };
        if let Some(expected) = &by.if_match
            && (!in_store || expected != current.hash())
        {
            return Err(ChangeError::PreconditionFailed {
                expected: expected.clone(),
                current: in_store.then(|| current.hash().to_owned()),
            });
        }
        let (candidate, store, origin) = match edit {
            PolicyEdit::Policies { text, links } => {
                let links = links.unwrap_or_else(|| current.source().links.clone());
                (current.with_policies(&text, &links)?, None, VersionOrigin::Api)
            }
            PolicyEdit::Schema { text, is_json } => {
                let source = if is_json { SchemaSource::Json(&text) } else { SchemaSource::CedarText(&text) };
                let bundle = current.with_schema(Some(source))?;
                let store = self.entities_under(&bundle).await?;
                (bundle, store, VersionOrigin::Api)
            }
            PolicyEdit::Rollback(number) => {
                let version =
                    self.durable.policy_version(number).await?.ok_or(ChangeError::NoSuchVersion(number))?;
                let bundle = bundle_of(&version)?;
                let store = self.entities_under(&bundle).await?;
                (bundle, store, VersionOrigin::Rollback { from: number })
            }
        };
        let candidate = Arc::new(candidate);
        self.run_gate(&candidate, store.as_ref()).await?;
        let if_current = in_store.then(|| current.hash().to_owned());
        let version = match self
            .durable
            .append_policy_version(new_version(&candidate, origin, by), if_current.as_deref())
            .await
        {
            Ok(version) => version,
            Err(StoreError::Stale { current }) => {
                return Err(match &by.if_match {
                    Some(expected) => ChangeError::PreconditionFailed { expected: expected.clone(), current },
                    None => ChangeError::Concurrent,
                });
            }
            Err(error) => return Err(error.into()),
        };
        self.put_in_force(&current, &candidate, version.version, store, &by.actor);
        Ok(Versioned { bundle: candidate, version })
    }

    /// Stores `bundle` as the next version and puts it in force, untested:
    /// for [`Directory::seeded`].
    pub(super) async fn seed_policies(&self, bundle: PolicyBundle, by: &ChangeBy) -> Result<(), ChangeError> {
        let _change = self.changes.lock().await;
        let current = self.bundle();
        let bundle = Arc::new(bundle);
        let version =
            self.durable.append_policy_version(new_version(&bundle, VersionOrigin::Api, by), None).await?;
        self.put_in_force(&current, &bundle, version.version, None, &by.actor);
        Ok(())
    }

    /// Reads a stored version of the policy set.
    pub async fn policy_version(
        &self,
        which: &PolicyVersionRef,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        match which {
            PolicyVersionRef::Number(number) => self.durable.policy_version(*number).await,
            PolicyVersionRef::Hash(hash) => self.durable.policy_version_by_hash(hash).await,
        }
    }

    /// Loads the policy directory (start-up and `--watch`): validated,
    /// tested, recorded as a new version when it differs from the one in
    /// force, and put in force; its `entities.json` replaces the stored
    /// entities when the file changed since it was last imported.
    pub async fn load_policy_dir(&self, dir: &Path) -> Result<DirLoaded, ReloadError> {
        let (bundle, sources, entities_text, read_from) = policy_dir::read_snapshot(dir, |version| {
            let (bundle, sources) = policy_dir::load_bundle(version)?;
            Ok((bundle, sources, policy_dir::read_entities_text(version)?, version.to_owned()))
        })?;
        let _change = self.changes.lock().await;
        let bundle = Arc::new(bundle);
        let import = match entities_text {
            Some(text) if self.is_new_import(&text).await? => {
                let items = policy_dir::entities_json(&read_from, &text)?;
                let parsed = policy_dir::parse_entities(&items, &bundle, &sources)?;
                Some((text, items, parsed))
            }
            _ => None,
        };
        let reparsed = match &import {
            Some(_) => None,
            None => self.entities_under(&bundle).await.map_err(|error| match error {
                ChangeError::Invalid(error) => ReloadError::Dir(DirError::Invalid { error, sources }),
                other => ReloadError::Change(other),
            })?,
        };
        let tested = import.as_ref().map(|(_, _, parsed)| parsed).or(reparsed.as_ref());
        self.run_gate(&bundle, tested).await?;
        let imported = match import {
            Some((text, items, _)) => Some(self.import_entities_json(&text, &items).await?),
            None => None,
        };
        let current = self.bundle();
        let (version, recorded) = match self.durable.current_policy_version().await? {
            Some(stored) if stored.hash == bundle.hash() => (stored, false),
            _ => {
                let by = ChangeBy { actor: DIRECTORY_ACTOR.to_owned(), ..ChangeBy::default() };
                let new = new_version(&bundle, VersionOrigin::Directory, &by);
                (self.durable.append_policy_version(new, None).await?, true)
            }
        };
        self.put_in_force(&current, &bundle, version.version, reparsed, DIRECTORY_ACTOR);
        Ok(DirLoaded { version: recorded.then_some(version), imported })
    }

    /// Puts the store's newest policy version in force if this replica is
    /// behind it (another replica changed it, or this one reconnected).
    pub(super) async fn catch_up_policies(&self) -> Result<(), ChangeError> {
        let _change = self.changes.lock().await;
        let Some(stored) = self.durable.current_policy_version().await? else { return Ok(()) };
        let (current, version) = {
            let snapshot = self.read();
            (Arc::clone(&snapshot.bundle), snapshot.version)
        };
        if version.is_some_and(|v| v >= stored.version) {
            return Ok(());
        }
        let bundle = Arc::new(bundle_of(&stored)?);
        // The writer checked the stored entities against this schema.
        let store = (current.source().schema != bundle.source().schema)
            .then(|| super::load::bounded_empty(&self.read().store));
        self.put_in_force(&current, &bundle, stored.version, store, &stored.actor);
        Ok(())
    }

    /// The entity copy to put in force with `bundle`: `None` to keep the
    /// current one (same schema). Otherwise every stored entity must fit
    /// the new schema: a copy that holds them all is re-parsed, and for a
    /// bounded one the store is read through, page by page, and the copy
    /// starts empty under the new schema.
    async fn entities_under(&self, bundle: &PolicyBundle) -> Result<Option<EntityStore>, ChangeError> {
        let (same_schema, bounded) = {
            let snapshot = self.read();
            if !snapshot.store.is_bounded() {
                return Ok(Some(snapshot.store.reparsed(bundle.schema())?));
            }
            (
                snapshot.bundle.source().schema == bundle.source().schema,
                super::load::bounded_empty(&snapshot.store),
            )
        };
        if same_schema {
            return Ok(None);
        }
        self.check_stored_entities(bundle).await?;
        Ok(Some(bounded))
    }

    /// Runs the policy tests, when the server has them, against a candidate
    /// and the entities that will be in force with it.
    async fn run_gate(
        &self,
        candidate: &Arc<PolicyBundle>,
        store: Option<&EntityStore>,
    ) -> Result<(), ChangeError> {
        let Some(gate) = &self.gate else { return Ok(()) };
        // The tests decide over the whole directory, as the server does: a
        // bounded copy holds only part of it, so the store is read whole.
        let given = store.or(Some(&self.read().store)).filter(|store| !store.is_bounded()).cloned();
        let tested = match given {
            Some(store) => store,
            None => self.whole_directory(candidate.schema()).await?,
        };
        let tested = &tested;
        let passed = policy_test::gate(&gate.tests, candidate, tested, &gate.plugins, gate.decisions)
            .await
            .map_err(ChangeError::TestsFailed)?;
        tracing::info!(passed, "the policy tests passed");
        Ok(())
    }

    /// Swaps in `bundle` as `version` (and `store`, re-parsed for a new
    /// schema) and logs which policies it adds, removes and changes.
    fn put_in_force(
        &self,
        before: &PolicyBundle,
        bundle: &Arc<PolicyBundle>,
        version: u64,
        store: Option<EntityStore>,
        actor: &str,
    ) {
        let change = PolicyChange::between(before, bundle);
        tracing::info!(
            actor,
            version,
            hash = bundle.hash(),
            policies = bundle.policy_count(),
            added = ?change.added,
            removed = ?change.removed,
            changed = ?change.changed,
            "policies put in force"
        );
        let revision = self.read().revision;
        self.swap(Some((Arc::clone(bundle), Some(version))), store.map(|store| (store, revision)));
    }
}

/// The bundle a stored version describes.
pub fn bundle_of(version: &PolicyVersion) -> Result<PolicyBundle, LoadError> {
    let schema = version.schema.as_deref().map(|text| {
        if version.schema_is_json { SchemaSource::Json(text) } else { SchemaSource::CedarText(text) }
    });
    let stored_as = |what: &str, error: serde_json::Error| {
        LoadError::Policies(vec![Problem::message(format!(
            "stored policy version {} has unreadable {what}: {error}",
            version.version
        ))])
    };
    let links: Vec<TemplateLink> =
        serde_json::from_value(version.links.clone()).map_err(|e| stored_as("links", e))?;
    let special: SpecialCategories = match &version.special {
        Some(value) => {
            serde_json::from_value(value.clone()).map_err(|e| stored_as("special categories", e))?
        }
        None => SpecialCategories::default(),
    };
    Ok(PolicyBundle::load(schema, &version.policies, &links)?.with_special_categories(special))
}

/// The version that records `bundle`.
fn new_version(bundle: &PolicyBundle, origin: VersionOrigin, by: &ChangeBy) -> NewPolicyVersion {
    let source = bundle.source();
    let special = bundle.special_categories();
    NewPolicyVersion {
        hash: bundle.hash().to_owned(),
        schema: source.schema.clone(),
        schema_is_json: source.schema_is_json,
        policies: source.policies.clone(),
        links: serde_json::to_value(&source.links).unwrap_or_else(|_| serde_json::Value::Array(Vec::new())),
        special: (!special.is_empty()).then(|| serde_json::to_value(special).ok()).flatten(),
        origin,
        actor: by.actor.clone(),
        comment: by.comment.clone(),
    }
}

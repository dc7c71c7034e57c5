//! `policies import` and `entities import`: writes to the store without a
//! server, each recorded in the decision log the server uses.

use std::sync::Arc;

use super::args::{EntitiesImportArgs, ImportRecordArgs, PoliciesImportArgs};
use super::error::{CliError, Outcome};
use super::stores::open_consents;
use crate::audit::ChangeEntry;
use crate::consents::Consents;
use crate::directory::{ChangeError, DEFAULT_CACHE_BYTES, Directory, PolicyTruth, ReloadError};
use crate::entity_import::{self, IMPORT_ACTOR, ImportError};
use crate::import_record::ImportRecord;
use crate::plugins::Plugins;
use crate::state::Settings;
use crate::watch::{entities_change, load_changes};

/// `consentry policies import DIR`: the directory becomes the store's
/// newest policy version, exactly as a server in directory mode records it.
pub async fn policies(args: &PoliciesImportArgs) -> Result<Outcome, CliError> {
    let (consents, record) = open(&args.store, &args.record).await?;
    let plugins = Arc::new(Plugins::none());
    let settings = Settings { policy_tests: args.policy_tests.clone(), ..Settings::default() };
    let gate = settings.policy_gate(&plugins);
    let imported = async {
        let opened =
            Directory::open(consents.durable(), PolicyTruth::Store, gate, DEFAULT_CACHE_BYTES).await?;
        let loaded = opened.directory.load_policy_dir(&args.dir).await?;
        let entities = opened.directory.durable().entity_count().await?;
        Ok::<_, ReloadError>((opened.directory, loaded, entities))
    };
    let (directory, loaded, entities) = imported.await.map_err(|error| match error {
        ReloadError::Dir(error) => error.into(),
        store @ ReloadError::Change(ChangeError::Store(_)) => CliError::failed(store),
        other => CliError::invalid(other),
    })?;
    let (version, policies, revision, hash) = {
        let snapshot = directory.read();
        let bundle = &snapshot.bundle;
        (snapshot.version, bundle.policy_count(), snapshot.revision, bundle.hash().to_owned())
    };
    println!(
        "imported: policy version {}, {policies} policies, {entities} entities (revision {revision}), hash {hash}",
        version.unwrap_or_default(),
    );
    recorded(&record, load_changes(&loaded, policies, IMPORT_ACTOR)).await
}

/// `consentry entities import FILE`: a large directory into the store in one revision.
pub async fn entities(args: &EntitiesImportArgs) -> Result<Outcome, CliError> {
    let (consents, record) = open(&args.store, &args.record).await?;
    let started = std::time::Instant::now();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let revision =
        entity_import::import(consents.store(), &args.file, progress).await.map_err(|error| match error {
            store @ ImportError::Store(_) => CliError::failed(store),
            other => CliError::invalid(other),
        })?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "imported: revision {}, {} entities written in {seconds:.1} s (those identical to the stored ones are not rewritten)",
        revision.revision, revision.upserted,
    );
    recorded(&record, vec![entities_change(&revision, IMPORT_ACTOR)]).await
}

/// The store an import writes to, and the decision log that records it:
/// both opened before anything is written.
async fn open(store: &str, record: &ImportRecordArgs) -> Result<(Arc<Consents>, ImportRecord), CliError> {
    let consents = open_consents(store, None).await?;
    let record = ImportRecord::open(store, record.audit.clone(), record.reason.as_deref())
        .await
        .map_err(|error| CliError::failed(format!("{error}; nothing was imported")))?;
    Ok((consents, record))
}

/// Records an import that is committed: a record that could not be written
/// is an error, said as such.
async fn recorded(record: &ImportRecord, changes: Vec<ChangeEntry>) -> Result<Outcome, CliError> {
    record.record(changes).await.map_err(|error| {
        CliError::failed(format!("the import is committed, but its change record was not written: {error}"))
    })?;
    Ok(Outcome::Done)
}

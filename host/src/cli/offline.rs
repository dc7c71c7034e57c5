//! `check`, `plan` and `search`: one request decided offline, as the
//! server it stands for would decide it, with the same consents, plugins
//! and decision options.

use consentry_engine::{PlanKind, PolicyBundle, Searched};
use serde::Serialize;

use super::args::{OfflineArgs, SearchArgs, SearchKind};
use super::error::{BoxError, CliError, Outcome};
use super::stores;
use crate::pipeline::{Pipeline, SearchError};
use crate::plugins::Plugins;
use crate::policy_dir;
use crate::search::Listing;
use crate::search::body::SearchBody;

/// `consentry check`: decides with the consents in the store, as the server would.
pub async fn check(args: &OfflineArgs) -> Result<Outcome, CliError> {
    let (pipeline, request) =
        open(args, |_, bytes| crate::request_body::parse(bytes).map_err(Into::into)).await?;
    let decided = pipeline.decide(&request).await.map_err(CliError::invalid)?;
    let allowed = decided.decision.is_allowed();
    let mut shown = serde_json::to_value(&decided.decision).map_err(CliError::failed)?;
    // As in the HTTP answers: what the plugins did, when any ran.
    if let (false, Some(fields)) = (decided.plugins.is_empty(), shown.as_object_mut()) {
        fields.insert("plugins".to_owned(), decided.plugins.into());
    }
    print_json(&shown)?;
    Ok(if allowed { Outcome::Done } else { Outcome::Denied })
}

/// `consentry plan`: plans with the consents in the store, as the server would.
pub async fn plan(args: &OfflineArgs) -> Result<Outcome, CliError> {
    let (pipeline, request) =
        open(args, |_, bytes| crate::planning::parse(bytes).map_err(Into::into)).await?;
    let plan = pipeline.plan(&request).await.map_err(CliError::invalid)?;
    print_json(&plan)?;
    Ok(if plan.kind == PlanKind::Never { Outcome::Denied } else { Outcome::Done })
}

/// `consentry search`: one page of a search over the policy directory's
/// entities, with the consents in the store, as the server would answer it.
pub async fn search(args: &SearchArgs) -> Result<Outcome, CliError> {
    let searched = match args.kind {
        SearchKind::Subject => Searched::Subject,
        SearchKind::Resource => Searched::Resource,
        SearchKind::Action => Searched::Action,
    };
    let parse = |bundle: &PolicyBundle, bytes: &[u8]| -> Result<_, BoxError> {
        Ok(crate::search::query_for(bundle, SearchBody::parse(searched, bytes)?, None)?)
    };
    let (pipeline, query) = open(&args.offline, parse).await?;
    let page = query.run(&pipeline, Listing::Memory).await.map_err(|error| match error {
        SearchError::Request(error) => CliError::invalid(error),
        SearchError::Unavailable(unavailable) => CliError::failed(unavailable),
    })?;
    print_json(&page)?;
    Ok(if page.results.is_empty() { Outcome::Denied } else { Outcome::Done })
}

/// Opens, in order, the policy directory, the request file (read by
/// `parse` against the directory's bundle), the consent store and the
/// plugins, and the one-off pipeline over them.
async fn open<T>(
    sources: &OfflineArgs,
    parse: impl FnOnce(&PolicyBundle, &[u8]) -> Result<T, BoxError>,
) -> Result<(Pipeline, T), CliError> {
    let loaded = policy_dir::load(&sources.policies)?;
    let bytes = std::fs::read(&sources.request)
        .map_err(|e| CliError::invalid(format!("cannot read `{}`: {e}", sources.request.display())))?;
    let request = parse(&loaded.bundle, &bytes).map_err(CliError::Invalid)?;
    // These commands only ask: a store that does not exist is read as an
    // empty one rather than created.
    let consents = stores::open_consents_for_reading(&sources.store, sources.fhir_base.clone()).await?;
    let plugins = Plugins::load_optional(sources.plugins.as_deref()).map_err(CliError::invalid)?;
    Ok((
        Pipeline::one_off(loaded.bundle, loaded.store, consents, plugins, sources.decisions.options()),
        request,
    ))
}

/// Prints an answer as the HTTP API would send it, indented for people.
fn print_json(answer: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(answer).map_err(CliError::failed)?;
    println!("{text}");
    Ok(())
}

//! The CLI subcommands other than `serve`.

use std::process::ExitCode;
use std::str::FromStr;

use consentry_engine::consent::{Consent, compile};
use consentry_engine::{PolicyBundle, Searched, check_consent};

use crate::audit::{self, Anchor, AuditTarget, VerifyFailure};
use crate::auth::{Auth, AuthConfig, DecisionAccess, TokenConfig, new_token};
use crate::cli::{
    AuditVerifyArgs, Cli, CompileConsentArgs, CompletionsArgs, EntitiesImportArgs, ImportRecordArgs, ManArgs,
    OfflineArgs, PluginCheckArgs, PoliciesImportArgs, SearchArgs, SearchKind, TokenNewArgs, ValidateArgs,
};
use crate::consents::Consents;
use crate::directory::{DEFAULT_CACHE_BYTES, Directory, PolicyTruth, ReloadError};
use crate::entity_import::{self, IMPORT_ACTOR, ImportError};
use crate::import_record::ImportRecord;
use crate::pipeline::{Pipeline, SearchError};
use crate::plugins::Plugins;
use crate::plugins::runtime::Runtime;
use crate::policy_dir::{self, DirError};
use crate::search::Listing;
use crate::search::body::SearchBody;
use crate::serve::open_consents;
use crate::state::Settings;
use crate::watch::{entities_change, load_changes};

/// Exit code for a Deny.
pub const EXIT_DENY: u8 = 2;
/// Exit code for invalid policies, schema, entities or request.
pub const EXIT_INVALID: u8 = 3;

/// Prints why a directory was refused, with source spans when there are some.
pub fn report_dir_error(error: &DirError) {
    match error {
        DirError::Invalid { error, sources } => {
            let problems = error.problems();
            eprint!("{}", sources.render(&problems));
            eprintln!("{} problem(s): the policy directory is invalid", problems.len());
        }
        other => eprintln!("error: {other}"),
    }
}

/// `consentry validate`.
pub fn validate(args: &ValidateArgs) -> ExitCode {
    match policy_dir::load(&args.policies) {
        Ok(loaded) => {
            println!(
                "valid: {} policies, {} entities, schema: {}",
                loaded.bundle.policy_count(),
                loaded.store.len(),
                if loaded.bundle.schema().is_some() { "yes" } else { "none" },
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_dir_error(&error);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// Opens, in order, the policy directory, the request file (read by
/// `parse` against the directory's bundle), the consent store and the
/// plugins, and the one-off pipeline over them, as `check`, `plan` and
/// `search` need. A failure is reported and becomes the command's exit code.
pub async fn open_offline<T>(
    sources: &OfflineArgs,
    parse: impl FnOnce(&PolicyBundle, &[u8]) -> Result<T, String>,
) -> Result<(Pipeline, T), ExitCode> {
    let loaded = policy_dir::load(&sources.policies).map_err(|error| {
        report_dir_error(&error);
        ExitCode::from(EXIT_INVALID)
    })?;
    let request = std::fs::read(&sources.request)
        .map_err(|e| format!("cannot read `{}`: {e}", sources.request.display()))
        .and_then(|bytes| parse(&loaded.bundle, &bytes))
        .map_err(|message| {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_INVALID)
        })?;
    // These commands only ask: a store that does not exist is read as an
    // empty one rather than created.
    let consents =
        open_consents_for_reading(&sources.store, sources.fhir_base.clone()).await.map_err(|message| {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        })?;
    let plugins = Plugins::load_optional(sources.plugins.as_deref()).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_INVALID)
    })?;
    Ok((
        Pipeline::one_off(loaded.bundle, loaded.store, consents, plugins, sources.decisions.options()),
        request,
    ))
}

/// The consent store at `location`, for a command that only reads it.
async fn open_consents_for_reading(
    location: &str,
    fhir_base: Option<consentry_engine::consent::FhirBase>,
) -> Result<std::sync::Arc<Consents>, String> {
    let location = crate::store::StoreLocation::from_str(location).map_err(|e| e.to_string())?;
    Consents::open_for_reading(&location, fhir_base)
        .await
        .map_err(|e| format!("cannot open the consent store: {e}"))
}

/// `consentry check`: decides with the consents in the store, as the server would.
pub async fn check(args: &OfflineArgs) -> ExitCode {
    let (pipeline, request) = match open_offline(args, |_, bytes| crate::request_body::parse(bytes)).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    match pipeline.decide(&request).await {
        Ok(decided) => {
            let allowed = decided.decision.is_allowed();
            let shown = serde_json::to_value(&decided.decision).map(|mut shown| {
                // As in the HTTP answers: what the plugins did, when any ran.
                if let (false, Some(fields)) = (decided.plugins.is_empty(), shown.as_object_mut()) {
                    fields.insert("plugins".to_owned(), decided.plugins.into());
                }
                shown
            });
            match shown.and_then(|shown| serde_json::to_string_pretty(&shown)) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: {e}"),
            }
            if allowed { ExitCode::SUCCESS } else { ExitCode::from(EXIT_DENY) }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `consentry search`: one page of a search over the policy directory's
/// entities, with the consents in the store, as the server would answer it.
pub async fn search(args: &SearchArgs) -> ExitCode {
    let searched = match args.kind {
        SearchKind::Subject => Searched::Subject,
        SearchKind::Resource => Searched::Resource,
        SearchKind::Action => Searched::Action,
    };
    let parse = |bundle: &PolicyBundle, bytes: &[u8]| {
        let body = SearchBody::parse(searched, bytes).map_err(|e| e.to_string())?;
        crate::search::query_for(bundle, body, None).map_err(|e| e.to_string())
    };
    let (pipeline, query) = match open_offline(&args.offline, parse).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    match query.run(&pipeline, Listing::Memory).await {
        Ok(page) => {
            match serde_json::to_string_pretty(&page) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: {e}"),
            }
            if page.results.is_empty() { ExitCode::from(EXIT_DENY) } else { ExitCode::SUCCESS }
        }
        Err(SearchError::Request(error)) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
        Err(SearchError::Unavailable(reason)) => {
            eprintln!("error: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `consentry compile-consent`: shows a privacy team exactly which rules a
/// consent becomes, checked as the consent API would check them.
pub fn compile_consent(args: &CompileConsentArgs) -> ExitCode {
    let loaded = match policy_dir::load(&args.policies) {
        Ok(loaded) => loaded,
        Err(error) => {
            report_dir_error(&error);
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let consent = std::fs::read(&args.consent)
        .map_err(|e| format!("cannot read `{}`: {e}", args.consent.display()))
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}")))
        .and_then(|value: serde_json::Value| {
            Consent::from_json_under(&value, args.fhir_base.as_ref()).map_err(|e| e.to_string())
        });
    let consent = match consent {
        Ok(consent) => consent,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let id = consent.id().unwrap_or("draft").to_owned();
    if let Err(error) = Consent::check_id(&id) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_INVALID);
    }
    if let Err(error) = check_consent(&loaded.bundle, &id, 1, &consent) {
        eprintln!("error: the consent does not fit the policy schema: {error}");
        return ExitCode::from(EXIT_INVALID);
    }
    if !consent.is_active() {
        eprintln!("note: the consent is `{}`, so it compiles to no policies", consent.status().code());
    }
    print!("{}", compile(&consent, &id, 1));
    ExitCode::SUCCESS
}

/// `consentry plugin check`: what an integrator's component offers and needs.
pub fn plugin_check(args: &PluginCheckArgs) -> ExitCode {
    let described = std::fs::read(&args.component)
        .map_err(|e| format!("cannot read `{}`: {e}", args.component.display()))
        .and_then(|bytes| {
            Runtime::new()?.describe(&bytes).map_err(|e| format!("`{}`: {e}", args.component.display()))
        });
    let description = match described {
        Ok(description) => description,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    println!("interface: {}", crate::plugins::bindings::INTERFACE);
    println!("hooks:");
    for hook in &description.hooks {
        println!("  {}", hook.name());
    }
    println!("imports:");
    for import in &description.imports {
        println!("  {import}: {}", crate::plugins::sandbox::import_treatment(import));
    }
    if description.hooks.is_empty() {
        eprintln!(
            "error: `{}` exports none of the hooks of {} (exports: {}), so it does not implement a Consentry \
             plugin world: implement a hook with the SDK (`consentry-plugin-sdk`), name it in `export_plugin!`, \
             and build with `cargo build --release --target wasm32-wasip2`",
            args.component.display(),
            crate::plugins::bindings::INTERFACE,
            description.exports.join(", ")
        );
        return ExitCode::from(EXIT_INVALID);
    }
    ExitCode::SUCCESS
}

/// `consentry audit verify`: is the decision log as it was written, and does
/// it still hold the records anchored earlier? On success stdout is the
/// verdict, then `anchor: SEQ:HASH` for the head (none for an empty log), so
/// a script can keep the anchor for the next run.
pub async fn audit_verify(args: &AuditVerifyArgs) -> ExitCode {
    let target = match AuditTarget::parse(&args.log) {
        Ok(target) => target,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut anchors = Vec::with_capacity(args.anchors.len());
    for text in &args.anchors {
        match text.parse::<Anchor>() {
            Ok(anchor) => anchors.push(anchor),
            Err(error) => {
                eprintln!("error: invalid `--anchor`: {error}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    }
    let anchored = anchors.len();
    match audit::verify(&target, anchors).await {
        Ok(verified) => {
            let against = match anchored {
                0 => String::new(),
                1 => ", including the anchored record".to_owned(),
                n => format!(", including the {n} anchored records"),
            };
            let noun = if verified.records == 1 { "record" } else { "records" };
            println!("intact: {} {noun} in `{}`{against}", verified.records, target.describe());
            if let Some(retired) = &verified.retired {
                let unchecked = match retired.unchecked_anchors {
                    0 => String::new(),
                    n => format!("; {n} anchor(s) given fall among them and cannot be checked"),
                };
                println!(
                    "retired: {} records before seq {}, covered by anchor {}{unchecked}",
                    retired.before_seq, retired.before_seq, retired.covered_by
                );
            }
            if let Some(head) = verified.head {
                println!("anchor: {head}");
            }
            ExitCode::SUCCESS
        }
        Err(tampered @ (VerifyFailure::Break(_) | VerifyFailure::Truncated(_))) => {
            eprintln!("tampered: {tampered}");
            ExitCode::FAILURE
        }
        Err(error @ VerifyFailure::Unreadable(_)) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `consentry token new`: the token goes to its holder and only its digest
/// into the configuration file, so the file can be reviewed and versioned
/// without leaking it. Stdout is the token, a blank line, then the
/// `[[auth.tokens]]` entry; the advice goes to stderr.
pub fn token_new(args: &TokenNewArgs) -> ExitCode {
    let (token, sha256) = match new_token() {
        Ok(made) => made,
        Err(error) => {
            eprintln!("error: cannot draw a random token: {error}");
            return ExitCode::FAILURE;
        }
    };
    let entry = TokenConfig {
        name: args.name.clone(),
        sha256,
        roles: args.roles.clone(),
        principal: args.principal.clone(),
    };
    let auth = AuthConfig { decisions: Some(DecisionAccess::Open), tokens: vec![entry] };
    if let Err(error) = Auth::new(&auth, None) {
        eprintln!("error: {error}");
        return ExitCode::from(EXIT_INVALID);
    }
    #[derive(serde::Serialize)]
    struct Section<'a> {
        auth: Tokens<'a>,
    }
    #[derive(serde::Serialize)]
    struct Tokens<'a> {
        tokens: &'a [TokenConfig],
    }
    let block = match toml::to_string(&Section { auth: Tokens { tokens: &auth.tokens } }) {
        Ok(block) => block,
        Err(error) => {
            eprintln!("error: cannot write the configuration entry: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("{token}");
    println!();
    print!("{block}");
    eprintln!(
        "note: the token (first line) is shown only this once: hand it to `{}`; the configuration keeps only its digest, so add the `[[auth.tokens]]` entry to the file's `[auth]` section",
        args.name
    );
    ExitCode::SUCCESS
}

/// `consentry policies import DIR`: the directory becomes the store's
/// newest policy version, exactly as a server in directory mode records it.
pub async fn policies_import(args: &PoliciesImportArgs) -> ExitCode {
    let (consents, record) = match open_for_import(&args.store, &args.record).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let plugins = std::sync::Arc::new(Plugins::none());
    let settings = Settings { policy_tests: args.policy_tests.clone(), ..Settings::default() };
    let gate = settings.policy_gate(&plugins);
    let imported = async {
        let opened =
            Directory::open(consents.durable(), PolicyTruth::Store, gate, DEFAULT_CACHE_BYTES).await?;
        let loaded = opened.directory.load_policy_dir(&args.dir).await?;
        let entities = opened.directory.durable().entity_count().await?;
        Ok::<_, ReloadError>((opened.directory, loaded, entities))
    };
    match imported.await {
        Ok((directory, loaded, entities)) => {
            let (version, policies, revision, hash) = {
                let snapshot = directory.read();
                let bundle = &snapshot.bundle;
                (snapshot.version, bundle.policy_count(), snapshot.revision, bundle.hash().to_owned())
            };
            println!(
                "imported: policy version {}, {policies} policies, {entities} entities (revision {revision}), hash {hash}",
                version.unwrap_or_default(),
            );
            recorded(record.record(load_changes(&loaded, policies, IMPORT_ACTOR)).await)
        }
        Err(ReloadError::Dir(error)) => {
            report_dir_error(&error);
            ExitCode::from(EXIT_INVALID)
        }
        Err(ReloadError::Change(crate::directory::ChangeError::Store(error))) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `consentry entities import FILE`: a large directory into the store in one revision.
pub async fn entities_import(args: &EntitiesImportArgs) -> ExitCode {
    let (consents, record) = match open_for_import(&args.store, &args.record).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match entity_import::import(consents.store(), &args.file, progress).await {
        Ok(revision) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "imported: revision {}, {} entities written in {seconds:.1} s (those identical to the stored ones are not rewritten)",
                revision.revision, revision.upserted,
            );
            recorded(record.record(vec![entities_change(&revision, IMPORT_ACTOR)]).await)
        }
        Err(error @ ImportError::Store(_)) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// The store an import writes to, and the decision log that records it:
/// both opened before anything is written.
async fn open_for_import(
    store: &str,
    record: &ImportRecordArgs,
) -> Result<(std::sync::Arc<Consents>, ImportRecord), ExitCode> {
    let consents = open_consents(store, None).await.map_err(|message| {
        eprintln!("error: {message}");
        ExitCode::FAILURE
    })?;
    let record = ImportRecord::open(store, record).await.map_err(|message| {
        eprintln!("error: {message}; nothing was imported");
        ExitCode::FAILURE
    })?;
    Ok((consents, record))
}

/// The exit of an import whose change is committed: a record that could not
/// be written is an error, said as such.
fn recorded(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: the import is committed, but its change record was not written: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `consentry completions SHELL`: the script, generated from the same
/// command definition the CLI parses with, so it never lags behind it.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "consentry", &mut script);
    write_stdout(&script)
}

/// `consentry man`: the page of `consentry` on stdout, or every command's
/// page in `--out-dir`.
pub fn man(args: &ManArgs) -> ExitCode {
    let command = <Cli as clap::CommandFactory>::command();
    if let Some(dir) = &args.out_dir {
        return match clap_mangen::generate_to(command, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write the man pages into `{}`: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut page = Vec::new();
    match clap_mangen::Man::new(command).render(&mut page) {
        Ok(()) => write_stdout(&page),
        Err(e) => {
            eprintln!("error: cannot render the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes generated text to stdout; a closed pipe is an error, not a panic.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

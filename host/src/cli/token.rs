//! `token new`: the token goes to its holder and only its digest into the
//! configuration file, so the file can be reviewed and versioned without
//! leaking it.

use super::args::TokenNewArgs;
use super::error::{CliError, Outcome};
use crate::auth::{Auth, AuthConfig, DecisionAccess, TokenConfig, new_token};

/// `consentry token new`. Stdout is the token, a blank line, then the
/// `[[auth.tokens]]` entry; the advice goes to stderr.
pub fn new(args: &TokenNewArgs) -> Result<Outcome, CliError> {
    let (token, sha256) =
        new_token().map_err(|e| CliError::failed(format!("cannot draw a random token: {e}")))?;
    let entry = TokenConfig {
        name: args.name.clone(),
        sha256,
        roles: args.roles.clone(),
        principal: args.principal.clone(),
    };
    let auth = AuthConfig { decisions: Some(DecisionAccess::Open), tokens: vec![entry] };
    Auth::new(&auth, None).map_err(CliError::invalid)?;
    #[derive(serde::Serialize)]
    struct Section<'a> {
        auth: Tokens<'a>,
    }
    #[derive(serde::Serialize)]
    struct Tokens<'a> {
        tokens: &'a [TokenConfig],
    }
    let block = toml::to_string(&Section { auth: Tokens { tokens: &auth.tokens } })
        .map_err(|e| CliError::failed(format!("cannot write the configuration entry: {e}")))?;
    println!("{token}");
    println!();
    print!("{block}");
    eprintln!(
        "note: the token (first line) is shown only this once: hand it to `{}`; the configuration keeps only its digest, so add the `[[auth.tokens]]` entry to the file's `[auth]` section",
        args.name
    );
    Ok(Outcome::Done)
}

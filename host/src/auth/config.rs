//! The `[auth]` section of the configuration file.
//!
//! A configuration file is copied around, committed and shown on screens,
//! so it holds no token: only the SHA-256 digest of each. The tokens are
//! random (see `consentry token new`), so a fast hash is enough; a slow
//! password hash would only add latency to every request.

use std::collections::HashSet;

use consentry_engine::parse_uid;
use serde::{Deserialize, Serialize};

use super::role::Role;
use super::{AuthError, Caller, Token};

/// Whether the decision endpoints require a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DecisionAccess {
    /// Anyone who can reach the sidecar may ask for decisions: the usual
    /// setup, with the sidecar listening on the loopback of its service.
    /// It is what an unset `auth.decisions` means on a loopback address; on
    /// any other, `serve` starts open only when this is chosen explicitly.
    Open,
    /// The decision endpoints need a token holding the `decision` role.
    Token,
}

/// The `[auth]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether the decision endpoints require a token; `None` when not
    /// set, which means open, but only on a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionAccess>,
    /// The accepted tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token, for logs: never the token itself.
    pub name: String,
    /// The lowercase hex SHA-256 digest of the token.
    pub sha256: String,
    /// What the token may do.
    pub roles: Vec<Role>,
    /// For the `patient` role: the Cedar uid of the patient or
    /// representative the token stands for, e.g. `Patient::"p-100"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl TokenConfig {
    /// Checks the entry and turns it into an accepted token; `index` names
    /// it in errors.
    pub(super) fn accept(&self, index: usize) -> Result<Token, AuthError> {
        let at = |field: &str| format!("auth.tokens[{index}].{field}");
        if self.name.trim().is_empty() {
            return Err(AuthError::invalid(at("name"), "a token needs a name"));
        }
        let digest = parse_digest(&self.sha256).ok_or_else(|| {
            AuthError::invalid(
                at("sha256"),
                "expected 64 lowercase hex digits (`consentry token new` prints them)",
            )
        })?;
        if self.roles.is_empty() {
            return Err(AuthError::invalid(at("roles"), "a token needs at least one role"));
        }
        let principal = match (&self.principal, self.roles.contains(&Role::Patient)) {
            (Some(text), true) => {
                let uid = parse_uid(&serde_json::Value::String(text.clone()), "principal")
                    .map_err(|e| AuthError::invalid(at("principal"), e.to_string()))?;
                let kind = uid.type_name().to_string();
                if kind != "Patient" && kind != "RelatedPerson" {
                    return Err(AuthError::invalid(
                        at("principal"),
                        format!(
                            "`{text}` is a {kind}; a patient token stands for a Patient or a RelatedPerson"
                        ),
                    ));
                }
                Some(uid)
            }
            (None, true) => {
                return Err(AuthError::invalid(at("principal"), "the `patient` role needs a principal"));
            }
            (Some(_), false) => {
                return Err(AuthError::invalid(
                    at("principal"),
                    "only a token with the `patient` role has a principal",
                ));
            }
            (None, false) => None,
        };
        let mut roles = self.roles.clone();
        roles.sort();
        roles.dedup();
        Ok(Token { digest, caller: Caller { name: self.name.clone(), roles, principal } })
    }
}

impl AuthConfig {
    /// Checks that no two tokens share a name or a digest.
    pub(super) fn accept(&self) -> Result<Vec<Token>, AuthError> {
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut tokens = Vec::with_capacity(self.tokens.len());
        for (index, entry) in self.tokens.iter().enumerate() {
            let token = entry.accept(index)?;
            if !names.insert(entry.name.clone()) {
                return Err(AuthError::invalid(
                    format!("auth.tokens[{index}].name"),
                    format!("`{}` names two tokens", entry.name),
                ));
            }
            if !digests.insert(token.digest) {
                return Err(AuthError::invalid(
                    format!("auth.tokens[{index}].sha256"),
                    "two tokens have the same digest",
                ));
            }
            tokens.push(token);
        }
        Ok(tokens)
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(digest)
}

//! The `[identity]` section: which identity provider's tokens are accepted,
//! and whether `ext_authz` may take the principal from a header.
//!
//! Everything but `role_mapping` can also be set by a flag or a variable,
//! so that a container can point at its IdP without a file; the mapping is
//! a table, like the static tokens, and only the file holds it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::claims::PrincipalTemplate;
use crate::auth::Role;

/// The `[identity]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Let `ext_authz` mappers read the principal from the `x-principal`
    /// header. Off by default: whoever reaches the proxy can write any
    /// header, so the principal should come from a verified token.
    pub trust_principal_header: bool,
    /// The `iss` every token must carry; setting it turns OIDC tokens on.
    pub issuer: Option<String>,
    /// The `aud` values accepted; a token must name at least one.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// A JWKS document on disk: the key set, or with `jwks_url` the one
    /// used while the URL cannot be fetched and no keys are held (an IdP
    /// down when the server starts).
    pub jwks_file: Option<PathBuf>,
    /// Where the IdP publishes its JWKS (`https://`, or `http://` to a
    /// loopback address).
    pub jwks_url: Option<String>,
    /// How often the key set is fetched again in the background.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// The shortest time between two fetches caused by tokens naming an
    /// unknown `kid`, so a flood of made-up kids cannot hammer the IdP.
    #[serde(with = "humantime_serde")]
    pub unknown_kid_cooldown: Duration,
    /// How far `exp` and `nbf` may be off, for clocks that drift.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// The claim holding the token's roles: a name or a dotted path
    /// (`realm_access.roles`); a list of strings or one space-separated
    /// string.
    pub role_claim: String,
    /// IdP role names and the Consentry roles each grants. A claim value
    /// that is itself a Consentry role name grants that role too.
    pub role_mapping: BTreeMap<String, Vec<Role>>,
    /// The principal of a token without `fhirUser`, as a FHIR reference
    /// with `{sub}` for the token's subject, e.g. `Patient/{sub}`.
    pub patient_principal: Option<String>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            trust_principal_header: false,
            issuer: None,
            audience: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            refresh_interval: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            clock_skew: Duration::from_secs(30),
            role_claim: "roles".to_owned(),
            role_mapping: BTreeMap::new(),
            patient_principal: None,
        }
    }
}

/// Where the key set comes from: at least one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    /// A URL, fetched at every refresh.
    pub url: Option<String>,
    /// A file, read at every refresh without a URL, and with one while it
    /// cannot be fetched and no keys are held.
    pub file: Option<PathBuf>,
}

/// The checked OIDC settings.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The accepted `iss`.
    pub issuer: String,
    /// The accepted `aud` values.
    pub audience: Vec<String>,
    /// The key set's source.
    pub source: JwksSource,
    /// See [`IdentityConfig::refresh_interval`].
    pub refresh_interval: Duration,
    /// See [`IdentityConfig::unknown_kid_cooldown`].
    pub unknown_kid_cooldown: Duration,
    /// See [`IdentityConfig::clock_skew`].
    pub clock_skew: Duration,
    /// The role claim's path.
    pub role_claim: Vec<String>,
    /// See [`IdentityConfig::role_mapping`].
    pub role_mapping: BTreeMap<String, Vec<Role>>,
    /// See [`IdentityConfig::patient_principal`].
    pub patient_principal: Option<PrincipalTemplate>,
}

/// A setting of `[identity]` the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}`: {message}")]
pub struct IdentityConfigError {
    /// The dotted key, e.g. `identity.audience`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: &str, message: impl Into<String>) -> IdentityConfigError {
    IdentityConfigError { key: format!("identity.{key}"), message: message.into() }
}

impl IdentityConfig {
    /// The OIDC settings, or `None` when no issuer is set (then no other
    /// OIDC setting may be either, so a half-done setup is noticed).
    pub fn oidc(&self) -> Result<Option<OidcSettings>, IdentityConfigError> {
        let Some(issuer) = self.issuer.as_deref() else {
            let stray = [
                ("audience", !self.audience.is_empty()),
                ("jwks_file", self.jwks_file.is_some()),
                ("jwks_url", self.jwks_url.is_some()),
                ("patient_principal", self.patient_principal.is_some()),
                ("role_mapping", !self.role_mapping.is_empty()),
            ];
            if let Some((key, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(invalid(key, "has no effect without `identity.issuer`"));
            }
            return Ok(None);
        };
        if issuer.trim().is_empty() {
            return Err(invalid("issuer", "must not be empty"));
        }
        if self.audience.is_empty() || self.audience.iter().any(|a| a.trim().is_empty()) {
            return Err(invalid("audience", "name the audience tokens must be issued for"));
        }
        if let Some(url) = &self.jwks_url {
            check_url(url).map_err(|message| invalid("jwks_url", message))?;
        }
        if self.jwks_url.is_none() && self.jwks_file.is_none() {
            return Err(invalid("jwks_url", "give `jwks_url` or `jwks_file`"));
        }
        let source = JwksSource { url: self.jwks_url.clone(), file: self.jwks_file.clone() };
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(invalid("refresh_interval", "must be at least 1s"));
        }
        if self.clock_skew > Duration::from_secs(600) {
            return Err(invalid("clock_skew", "must be at most 10m"));
        }
        let role_claim: Vec<String> = self.role_claim.split('.').map(str::to_owned).collect();
        if role_claim.iter().any(String::is_empty) {
            return Err(invalid(
                "role_claim",
                format!("`{}` is not a claim name or dotted path", self.role_claim),
            ));
        }
        for (name, roles) in &self.role_mapping {
            if roles.is_empty() {
                return Err(invalid(
                    &format!("role_mapping.{name}"),
                    "map the IdP role to at least one role",
                ));
            }
        }
        let patient_principal = self
            .patient_principal
            .as_deref()
            .map(PrincipalTemplate::parse)
            .transpose()
            .map_err(|message| invalid("patient_principal", message))?;
        Ok(Some(OidcSettings {
            issuer: issuer.to_owned(),
            audience: self.audience.clone(),
            source,
            refresh_interval: self.refresh_interval,
            unknown_kid_cooldown: self.unknown_kid_cooldown,
            clock_skew: self.clock_skew,
            role_claim,
            role_mapping: self.role_mapping.clone(),
            patient_principal,
        }))
    }
}

/// Keys are fetched over TLS; plain HTTP only to this machine, where
/// nobody on the path can swap them.
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    let local = loopback.iter().any(|prefix| {
        url.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
    });
    if local {
        Ok(())
    } else {
        Err(format!("`{url}` is neither `https://` nor `http://` to a loopback address"))
    }
}

/// One string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

//! The OpenID AuthZEN Authorization API 1.0: single and batched evaluations,
//! and the metadata document.
//!
//! AuthZEN's subjects and resources are `{type, id, properties}`; they become
//! the Cedar entity `type::"id"`, with `properties` laid over the stored
//! entity's attributes for this request only: they may add attributes the
//! store lacks, never change a stored one (unless request entities replace
//! stored ones by configuration); the engine checks that. An action `{name}` becomes
//! `Action::"name"`, unless the name is already a full Cedar uid (for
//! namespaced schemas, `App::Action::"read"`).
//!
//! A request may carry the caller's access token in `token` (top level, or
//! per item of a batch) instead of a subject: the subject is then the
//! token's principal, and a subject sent as well must be the same one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};
use axum::{Extension, Json};
use consentry_engine::cedar_policy::EntityUid;
use consentry_engine::{AttributeOverlay, DecisionRequest, Obligation, Reason};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::decisions::{check_batch_size, token_identity};
use super::error::AppError;
use super::extract::JsonBody;
use crate::connections::OverTls;
use crate::identity::BearerToken;
use crate::pipeline::Decided;
use crate::search::body::{action_name_uid, party_uid};
use crate::state::AppState;

/// An AuthZEN subject or resource.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// An AuthZEN action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    name: String,
    #[serde(default)]
    properties: Option<Map<String, Value>>,
}

/// `POST /access/v1/evaluation` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationBody {
    #[serde(default)]
    subject: Option<Party>,
    action: Action,
    resource: Party,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    token: Option<BearerToken>,
}

/// An AuthZEN decision.
#[derive(Debug, Serialize)]
pub struct EvaluationAnswer {
    decision: bool,
    context: AnswerContext,
}

#[derive(Debug, Serialize)]
struct AnswerContext {
    decision_id: Uuid,
    reason: ReasonDetail,
    obligations: Vec<Obligation>,
}

#[derive(Debug, Serialize)]
struct ReasonDetail {
    outcome: consentry_engine::Outcome,
    summary: String,
    policies: Vec<Reason>,
    errors: Vec<consentry_engine::DecisionError>,
    /// Present when plugins ran: what each did, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    plugins: Vec<String>,
}

impl From<Decided> for EvaluationAnswer {
    fn from(Decided { id, decision, plugins }: Decided) -> Self {
        Self {
            decision: decision.is_allowed(),
            context: AnswerContext {
                decision_id: id,
                reason: ReasonDetail {
                    outcome: decision.outcome,
                    summary: decision.summary(),
                    policies: decision.reasons,
                    errors: decision.errors,
                    plugins,
                },
                obligations: decision.obligations,
            },
        }
    }
}

fn party(field: &str, party: &Party) -> Result<(EntityUid, Option<AttributeOverlay>), AppError> {
    Ok(party_uid(field, &party.kind, &party.id, party.properties.as_ref())?)
}

/// The engine's request for `body`, after its token, if any, is verified.
async fn to_request(state: &AppState, body: &EvaluationBody) -> Result<DecisionRequest, AppError> {
    let identity = token_identity(state, body.token.clone()).await?;
    let action = action_name_uid(&body.action.name, body.action.properties.as_ref())?;
    let (given, subject_overlay) = match &body.subject {
        Some(subject) => {
            let (uid, overlay) = party("subject", subject)?;
            (Some(uid), overlay)
        }
        None => (None, None),
    };
    let principal = match &identity {
        Some(identity) => identity.principal_for(given, "subject")?,
        None => {
            given.ok_or_else(|| AppError::bad_field("subject", "missing: give a subject or a `token`"))?
        }
    };
    let (resource, resource_overlay) = party("resource", &body.resource)?;
    let mut request = DecisionRequest::new(principal, action, resource);
    request.context = body.context.clone().filter(|c| !c.is_null());
    if let Some(identity) = &identity {
        identity.apply_to_context(&mut request.context)?;
    }
    request.overlays = subject_overlay.into_iter().chain(resource_overlay).collect();
    request.now = Some(crate::clock::now());
    Ok(request)
}

/// `POST /access/v1/evaluation`.
pub async fn evaluation(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<EvaluationBody>,
) -> Result<Json<EvaluationAnswer>, AppError> {
    let request = to_request(&state, &body).await?;
    Ok(Json(state.pipeline.decide(&request).await?.into()))
}

/// How a batch of evaluations stops.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Semantic {
    /// Evaluate every item.
    #[default]
    ExecuteAll,
    /// Stop after the first Deny.
    DenyOnFirstDeny,
    /// Stop after the first Allow.
    PermitOnFirstPermit,
}

/// `options` of a batch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Options {
    #[serde(default)]
    evaluations_semantic: Semantic,
}

/// One item of a batch; missing parts come from the batch's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationItem {
    #[serde(default)]
    subject: Option<Party>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<Party>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    token: Option<BearerToken>,
}

/// `POST /access/v1/evaluations` body. The top-level parts are defaults for
/// every item (spelled out rather than flattened, so unknown fields are still
/// reported by name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationsBody {
    #[serde(default)]
    subject: Option<Party>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    resource: Option<Party>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    token: Option<BearerToken>,
    #[serde(default)]
    evaluations: Vec<EvaluationItem>,
    #[serde(default)]
    options: Options,
}

/// A batch answer, in item order.
#[derive(Debug, Serialize)]
pub struct EvaluationsAnswer {
    evaluations: Vec<Value>,
}

fn resolve(defaults: &EvaluationItem, item: &EvaluationItem) -> Result<EvaluationBody, AppError> {
    let missing =
        |part: &str| AppError::bad_field(part, "missing: give it in the item or as a batch default");
    let subject = item.subject.clone().or_else(|| defaults.subject.clone());
    let token = item.token.clone().or_else(|| defaults.token.clone());
    if subject.is_none() && token.is_none() {
        return Err(AppError::bad_field(
            "subject",
            "missing: give it (or a `token`) in the item or as a batch default",
        ));
    }
    Ok(EvaluationBody {
        subject,
        token,
        action: item.action.clone().or_else(|| defaults.action.clone()).ok_or_else(|| missing("action"))?,
        resource: item
            .resource
            .clone()
            .or_else(|| defaults.resource.clone())
            .ok_or_else(|| missing("resource"))?,
        context: item.context.clone().or_else(|| defaults.context.clone()),
    })
}

/// `POST /access/v1/evaluations`.
///
/// Items are decided in order, each exactly as a single evaluation would be
/// (plugins, consents and the audit log included), so that with a stopping
/// semantic the items after the stop are neither decided nor recorded. An
/// item that cannot be evaluated gets its own error entry, as AuthZEN asks,
/// instead of failing the whole batch; it counts as a Deny for the stopping
/// semantics.
pub async fn evaluations(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<EvaluationsBody>,
) -> Result<Json<Value>, AppError> {
    let defaults = EvaluationItem {
        subject: body.subject,
        action: body.action,
        resource: body.resource,
        context: body.context,
        token: body.token,
    };
    if body.evaluations.is_empty() {
        let single = resolve(&defaults, &EvaluationItem::default())?;
        let answer: EvaluationAnswer =
            state.pipeline.decide(&to_request(&state, &single).await?).await?.into();
        return Ok(Json(json!(answer)));
    }
    check_batch_size(body.evaluations.len(), state.settings.max_batch)?;
    let semantic = body.options.evaluations_semantic;
    let mut answers = Vec::with_capacity(body.evaluations.len());
    for (index, item) in body.evaluations.iter().enumerate() {
        let request = match resolve(&defaults, item) {
            Ok(body) => to_request(&state, &body).await,
            Err(error) => Err(error),
        };
        let result = match request {
            Ok(request) => state.pipeline.decide(&request).await.map_err(AppError::from),
            Err(error) => Err(error),
        };
        let allowed = result.as_ref().is_ok_and(|decided| decided.decision.is_allowed());
        answers.push(match result {
            Ok(decided) => json!(EvaluationAnswer::from(decided)),
            Err(error) => item_error(error.within(&format!("evaluations[{index}]"))),
        });
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allowed,
            Semantic::PermitOnFirstPermit => allowed,
        };
        if stop {
            break;
        }
    }
    Ok(Json(json!(EvaluationsAnswer { evaluations: answers })))
}

fn item_error(error: AppError) -> Value {
    let mut detail = error.body();
    if let Value::Object(map) = &mut detail {
        map.insert("status".into(), json!(error.status().as_u16()));
    }
    json!({"decision": false, "context": {"error": detail}})
}

/// `GET /.well-known/authzen-configuration`. The base URL is `--public-url`
/// when one is set. Otherwise it is `https` over TLS (else `http`) and the
/// request's `Host` (or, over HTTP/2, its authority), but only when that is a syntactically valid
/// `host[:port]`: anything else, which could smuggle a path, credentials or
/// markup into the URLs clients follow, is refused with 400 naming `Host`.
/// A deployment behind a proxy or cache should set `--public-url`, since a
/// well-formed but foreign `Host` is still echoed.
pub async fn configuration(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    over_tls: Option<Extension<OverTls>>,
) -> Result<Json<Value>, AppError> {
    let base = match &state.settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let host = match headers.get(header::HOST) {
                Some(value) => value.to_str().ok(),
                None => uri.authority().map(Authority::as_str),
            };
            let host = host.filter(|host| is_host_and_port(host)).ok_or_else(|| {
                AppError::bad_field(
                    "Host",
                    "missing, or not `host[:port]` (or start the server with --public-url)",
                )
            })?;
            let scheme = if over_tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{host}")
        }
    };
    Ok(Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
        "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
        "search_action_endpoint": format!("{base}/access/v1/search/action"),
    })))
}

/// Whether `text` is `host[:port]`: a DNS name, an IPv4 address or a
/// bracketed IPv6 address, and an optional port from 1 to 65535.
fn is_host_and_port(text: &str) -> bool {
    // `(host is valid, the port if any)`
    let (host_ok, port) = match text.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((v6, "")) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), None),
            Some((v6, rest)) => match rest.strip_prefix(':') {
                Some(port) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), Some(port)),
                None => return false,
            },
            None => return false,
        },
        None => {
            let (host, port) = match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            (host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host), port)
        }
    };
    let port_ok = port.is_none_or(|digits| {
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.parse::<u16>().is_ok_and(|p| p > 0)
    });
    host_ok && port_ok
}

/// Whether `name` is a DNS name: dot-separated labels of 1 to 63 letters,
/// digits and hyphens, not starting or ending with a hyphen, 253 at most.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::is_host_and_port;

    #[test]
    fn hosts_and_ports_are_accepted() {
        for host in
            ["localhost", "localhost:8180", "pdp.example.org", "10.0.0.1:443", "[::1]", "[::1]:8180", "a-b.c"]
        {
            assert!(is_host_and_port(host), "{host}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for host in [
            "",
            "evil.example/path",
            "user@evil.example",
            "evil.example:0",
            "evil.example:99999",
            "evil.example:",
            "evil.example:80x",
            "<script>",
            "a b",
            "-bad.example",
            "bad-.example",
            "a..b",
            "[::1",
            "[not-v6]:80",
            "[::1]x",
            "::1",
            "evil.example#",
        ] {
            assert!(!is_host_and_port(host), "{host}");
        }
    }
}

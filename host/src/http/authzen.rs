//! The OpenID AuthZEN Authorization API 1.0: single and batched evaluations,
//! and the metadata document.
//!
//! AuthZEN's subjects and resources are `{type, id, properties}`; they become
//! the Cedar entity `type::"id"`, with `properties` laid over the stored
//! entity's attributes for this request only: they may add attributes the
//! store lacks, never change a stored one (unless request entities replace
//! stored ones by configuration); the engine checks that. An action `{name}` becomes
//! `Action::"name"`, unless the name is already a full Cedar uid (for
//! namespaced schemas, `App::Action::"read"`). The searches take the same
//! shapes, so both read them with [`crate::search::body`]'s types.
//!
//! A request may carry the caller's access token in `token` (top level, or
//! per item of a batch) instead of a subject: the subject is then the
//! token's principal, and a subject sent as well must be the same one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, Uri, header};
use axum::{Extension, Json};
use consentry_engine::{DecisionRequest, Obligation, Reason};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::decisions::{check_batch_size, token_identity};
use super::error::{AppError, ErrorBody};
use super::extract::JsonBody;
use crate::connections::OverTls;
use crate::identity::{BearerToken, acting_principal};
use crate::pipeline::Decided;
use crate::search::body::{Action, Party, fixed};
use crate::state::AppState;

/// `POST /access/v1/evaluation` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationBody {
    /// Who asks; may be left out when a `token` stands for the subject.
    #[serde(default)]
    subject: Option<Party>,
    /// What is asked.
    action: Action,
    /// What it is asked about.
    resource: Party,
    /// The request's context, such as `{"purpose": "TREAT"}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// The caller's OIDC or SMART on FHIR access token, standing for the
    /// subject (a subject sent as well must be the same one).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
}

/// An AuthZEN decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationAnswer {
    /// Whether the request is allowed.
    decision: bool,
    /// Why, and what the caller must do.
    context: AnswerContext,
}

#[derive(Debug, Serialize, ToSchema)]
struct AnswerContext {
    /// The decision's id in the decision log.
    decision_id: Uuid,
    /// The outcome and the determining policies.
    reason: ReasonDetail,
    /// What the caller must (obligations) or should (advice) do.
    #[schema(value_type = Vec<super::openapi::wire::ObligationSchema>)]
    obligations: Vec<Obligation>,
}

#[derive(Debug, Serialize, ToSchema)]
struct ReasonDetail {
    /// Allow, or which kind of Deny.
    #[schema(value_type = super::openapi::wire::OutcomeSchema)]
    outcome: consentry_engine::Outcome,
    /// The decision in one sentence.
    summary: String,
    /// The determining policies with their `@reason`.
    #[schema(value_type = Vec<super::openapi::wire::ReasonSchema>)]
    policies: Vec<Reason>,
    /// Errors met while deciding.
    #[schema(value_type = Vec<super::openapi::wire::DecisionErrorSchema>)]
    errors: Vec<consentry_engine::DecisionError>,
    /// Present when plugins ran: what each did, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
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

/// The engine's request for `body`, after its token, if any, is verified.
async fn to_request(state: &AppState, body: &EvaluationBody) -> Result<DecisionRequest, AppError> {
    let identity = token_identity(state, body.token.clone()).await?;
    let action = body.action.uid()?;
    let (given, subject_overlay) = match &body.subject {
        Some(subject) => {
            let (uid, overlay) = fixed("subject", subject)?;
            (Some(uid), overlay)
        }
        None => (None, None),
    };
    let mut context = body.context.clone().filter(|c| !c.is_null());
    let principal = acting_principal(identity.as_ref(), given, "subject", &mut context)?;
    let (resource, resource_overlay) = fixed("resource", &body.resource)?;
    let mut request = DecisionRequest::new(principal, action, resource);
    request.context = context;
    request.overlays = subject_overlay.into_iter().chain(resource_overlay).collect();
    request.now = Some(crate::clock::now());
    Ok(request)
}

/// An AuthZEN 1.0 Access Evaluation: may the subject do the action to the resource?
#[utoipa::path(
    post,
    path = "/access/v1/evaluation",
    tag = "authzen",
    request_body = EvaluationBody,
    responses(
        (status = 200, description = "the decision", body = EvaluationAnswer),
        (status = 401, description = "the body's `token` is refused by the identity provider's keys, or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 422, description = "the request does not match the schema, contradicts a stored fact, or is over a limit", body = ErrorBody),
    )
)]
pub async fn evaluation(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody<EvaluationBody>,
) -> Result<Json<EvaluationAnswer>, AppError> {
    let request = to_request(&state, &body).await?;
    Ok(Json(state.pipeline.decide(&request).await?.into()))
}

/// How a batch of evaluations stops.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, ToSchema)]
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
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct Options {
    /// How the batch stops; `execute_all` when not given.
    #[serde(default)]
    #[schema(required = false)]
    evaluations_semantic: Semantic,
}

/// One item of a batch; missing parts come from the batch's defaults.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationItem {
    /// The subject, unless the batch's default or a `token` gives it.
    #[serde(default)]
    subject: Option<Party>,
    /// The action, unless the batch's default gives it.
    #[serde(default)]
    action: Option<Action>,
    /// The resource, unless the batch's default gives it.
    #[serde(default)]
    resource: Option<Party>,
    /// The context, unless the batch's default gives it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// An access token standing for the subject.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
}

/// `POST /access/v1/evaluations` body. The top-level parts are defaults for
/// every item (spelled out rather than flattened, so unknown fields are still
/// reported by name).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluationsBody {
    /// The default subject of every item.
    #[serde(default)]
    subject: Option<Party>,
    /// The default action of every item.
    #[serde(default)]
    action: Option<Action>,
    /// The default resource of every item.
    #[serde(default)]
    resource: Option<Party>,
    /// The default context of every item.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// The default access token of every item.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    token: Option<BearerToken>,
    /// The items, at most `--max-batch`; without any, the body is one evaluation.
    #[serde(default)]
    #[schema(required = false)]
    evaluations: Vec<EvaluationItem>,
    /// How the batch stops.
    #[serde(default)]
    #[schema(required = false)]
    options: Options,
}

/// A batch answer, in item order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluationsAnswer {
    /// One answer per item decided, in order; an item that could not be
    /// evaluated answers `{"decision": false, "context": {"error": …}}`.
    #[schema(schema_with = evaluation_items)]
    evaluations: Vec<Value>,
}

/// The answer of `/access/v1/evaluations`: a batch answer, or without
/// items a single evaluation's.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[expect(dead_code, reason = "schema only: `evaluations` writes either answer as JSON")]
enum EvaluationsResult {
    Batch(EvaluationsAnswer),
    Single(EvaluationAnswer),
}

/// Each item's answer: a decision, or the error that kept it from one.
fn evaluation_items() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    use utoipa::openapi::{AllOfBuilder, Ref};
    let error = AllOfBuilder::new().item(Ref::from_schema_name("Error")).item(
        ObjectBuilder::new()
            .property("status", ObjectBuilder::new().schema_type(Type::Integer))
            .required("status"),
    );
    let failed = ObjectBuilder::new()
        .property("decision", ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([false])))
        .required("decision")
        .property("context", ObjectBuilder::new().property("error", error).required("error"))
        .required("context")
        .description(Some("an item that could not be evaluated; it counts as a Deny"));
    ArrayBuilder::new()
        .items(OneOfBuilder::new().item(Ref::from_schema_name("EvaluationAnswer")).item(failed))
        .build()
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

/// An AuthZEN 1.0 batch of evaluations (Access Evaluations API).
///
/// Items are decided in order, each exactly as a single evaluation would be
/// (plugins, consents and the audit log included), so that with a stopping
/// semantic the items after the stop are neither decided nor recorded. An
/// item that cannot be evaluated gets its own error entry, as AuthZEN asks,
/// instead of failing the whole batch; it counts as a Deny for the stopping
/// semantics.
#[utoipa::path(
    post,
    path = "/access/v1/evaluations",
    tag = "authzen",
    request_body = EvaluationsBody,
    responses(
        (status = 200, description = "the items' answers in order, or one answer when the body has no items", body = EvaluationsResult),
        (status = 401, description = "without items, the body's `token` is refused; or, with `auth.decisions = \"token\"`, the `Authorization` header lacks a decision token", body = ErrorBody),
        (status = 413, description = "more items than `--max-batch`, or a body over `--max-body`", body = ErrorBody),
        (status = 422, description = "without items, the request does not match the schema", body = ErrorBody),
    )
)]
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

/// The AuthZEN metadata: where each endpoint is.
#[derive(ToSchema)]
#[schema(as = AuthzenConfiguration)]
#[expect(dead_code, reason = "schema only: `configuration` writes it as JSON")]
struct ConfigurationSchema {
    /// The base URL.
    policy_decision_point: String,
    /// `/access/v1/evaluation` under it.
    access_evaluation_endpoint: String,
    /// `/access/v1/evaluations` under it.
    access_evaluations_endpoint: String,
    /// `/access/v1/search/subject` under it.
    search_subject_endpoint: String,
    /// `/access/v1/search/resource` under it.
    search_resource_endpoint: String,
    /// `/access/v1/search/action` under it.
    search_action_endpoint: String,
}

/// The AuthZEN metadata document.
///
/// The base URL is `--public-url`
/// when one is set. Otherwise it is `https` over TLS (else `http`) and the
/// request's `Host` (or, over HTTP/2, its authority), but only when that is a syntactically valid
/// `host[:port]`: anything else, which could smuggle a path, credentials or
/// markup into the URLs clients follow, is refused with 400 naming `Host`.
/// A deployment behind a proxy or cache should set `--public-url`, since a
/// well-formed but foreign `Host` is still echoed.
#[utoipa::path(
    get,
    path = "/.well-known/authzen-configuration",
    tag = "authzen",
    responses(
        (status = 200, description = "the endpoints", body = ConfigurationSchema),
        (status = 400, description = "no `--public-url`, and `Host` is missing or not `host[:port]`", body = ErrorBody),
    )
)]
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

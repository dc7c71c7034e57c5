//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`, and
//! a Swagger UI page over it at `/docs`.
//!
//! The document is generated, not written: each handler's `#[utoipa::path]`
//! gives its path, methods, parameters, bodies and answers, the wire types
//! derive their schemas, and the router registers routes only through
//! those descriptions (see `Group` in the parent module), so a route cannot
//! be served undocumented. What every route of a group shares (who may
//! call it, the 401 and 403 that follow, the 400, 413 and 415 of any JSON
//! body) is added here from the same [`super::Access`] the router guards
//! the group with, so the document cannot claim a different guard.
//!
//! It is built once, on first use, and served as the same bytes after, so
//! it costs nothing per request; nothing on the decision path touches it.
//! The Swagger UI's assets are compiled into the binary (the crate's
//! `vendored` feature): a hospital sidecar reaches no CDN.

pub(crate) mod wire;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::response::{Response as Answer, ResponseBuilder};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa_swagger_ui::{Config, SwaggerUi};

use utoipa::{PartialSchema, ToSchema};

use super::error::{AppError, ErrorBody};
use utoipa_axum::router::OpenApiRouter;

use super::{Access, admin_groups, ext_authz, public_groups};
use crate::state::AppState;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where the browsable page is served.
pub const PAGE_PATH: &str = "/docs";

/// The security scheme of the `Authorization: Bearer` token.
const BEARER: &str = "bearer";
/// The security scheme of the token `ext_authz` takes from
/// [`super::EXT_AUTHZ_TOKEN_HEADER`].
const EXT_AUTHZ_TOKEN: &str = "ext_authz_token";

static DOCUMENT: LazyLock<OpenApi> = LazyLock::new(describe);

static DOCUMENT_BYTES: LazyLock<Result<Bytes, String>> =
    LazyLock::new(|| DOCUMENT.to_json().map(Bytes::from).map_err(|e| e.to_string()));

/// The OpenAPI 3.1 document of every route, built once.
pub fn document() -> &'static OpenApi {
    &DOCUMENT
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "this document", content_type = "application/json", body = Object))
)]
pub async fn document_json() -> Response {
    match &*DOCUMENT_BYTES {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes.clone()).into_response(),
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document could not be serialized");
            AppError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the API description is unavailable")
                .into_response()
        }
    }
}

/// The Swagger UI page over [`DOCUMENT_PATH`], its assets from the binary.
pub(super) fn page() -> Router<Arc<AppState>> {
    Router::from(SwaggerUi::new(PAGE_PATH).config(Config::new([DOCUMENT_PATH])))
}

/// The document of every group, public and admin.
fn describe() -> OpenApi {
    let mut api = base();
    for (access, group) in public_groups().into_iter().chain(admin_groups()) {
        api.merge(group_document(access, group));
    }
    api.paths.paths = std::mem::take(&mut api.paths.paths)
        .into_iter()
        .map(|(path, item)| (openapi_template(&path), item))
        .collect();
    api
}

/// What no handler says: the title, the version, the security schemes.
fn base() -> OpenApi {
    let mut api = OpenApi::default();
    api.info.title = "Consentry".to_owned();
    api.info.version = env!("CARGO_PKG_VERSION").to_owned();
    api.info.description = Some(
        "A consent-aware policy decision point for health data: cedar-agent compatible and OpenID \
         AuthZEN 1.0 decisions, Envoy `ext_authz`, plans, and the administration, consent and audit APIs. \
         Every error answers with the `Error` body."
            .to_owned(),
    );
    api.info.license = Some(
        utoipa::openapi::LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build(),
    );
    let components = api.components.get_or_insert_with(Default::default);
    // Every operation may answer with an error, whether or not its handler
    // names the body.
    let mut schemas = vec![(ErrorBody::name().into_owned(), ErrorBody::schema())];
    ErrorBody::schemas(&mut schemas);
    components.schemas.extend(schemas);
    components.add_security_scheme(
        BEARER,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "A static token from the configuration, or an OIDC / SMART on FHIR JWT. Each operation's \
                     requirement lists the roles of which the token needs one.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        EXT_AUTHZ_TOKEN,
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            super::EXT_AUTHZ_TOKEN_HEADER,
            "`Bearer <token>` with the `decision` role, which Envoy adds to the check request; the proxied \
             request's own `Authorization` belongs to the end client.",
        ))),
    );
    api
}

/// A group's document, with the security and error answers its access implies.
fn group_document(access: Access, group: OpenApiRouter<Arc<AppState>>) -> OpenApi {
    let (_, mut api) = group.split_for_parts();
    for (path, item) in &mut api.paths.paths {
        for operation in operations(item) {
            secure(operation, access, path.starts_with(ext_authz::PREFIX));
            common_errors(operation);
        }
    }
    api
}

/// Every operation of a path.
pub(super) fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The operation's security requirement and the answers when it is not met.
fn secure(operation: &mut Operation, access: Access, ext_authz: bool) {
    let (requirements, note) = match access {
        Access::Open => return,
        Access::Decisions => {
            let scheme = if ext_authz { EXT_AUTHZ_TOKEN } else { BEARER };
            (
                vec![SecurityRequirement::default(), SecurityRequirement::new(scheme, ["decision"])],
                "Open to every caller, unless the server is configured with `auth.decisions = \"token\"`: \
                 then a token with the `decision` role is required."
                    .to_owned(),
            )
        }
        Access::Roles(roles) => {
            let names: Vec<String> = roles.iter().map(ToString::to_string).collect();
            let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            (
                vec![SecurityRequirement::new(BEARER, names)],
                format!("Needs a bearer token with the role {}.", quoted.join(" or ")),
            )
        }
    };
    operation.security = Some(requirements);
    let description = operation.description.get_or_insert_with(String::new);
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&note);
    add_error(operation, 401, "no valid token: missing, malformed, expired, or not the identity provider's");
    add_error(operation, 403, "the token lacks the role this route needs");
}

/// The errors every operation with a JSON body or query parameters can give.
fn common_errors(operation: &mut Operation) {
    let has_json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.keys().any(|media| media == "application/json"));
    let has_query = operation
        .parameters
        .as_ref()
        .is_some_and(|parameters| parameters.iter().any(|p| matches!(p.parameter_in, ParameterIn::Query)));
    if has_json_body || has_query {
        add_error(operation, 400, "a malformed body or parameter; `field` names it");
    }
    if operation.request_body.is_some() {
        add_error(operation, 408, "the body was not received within the listener's time limit");
        add_error(operation, 413, "the body is over the size limit (`--max-body`)");
        add_error(operation, 415, "the body's `Content-Type` is not one this route accepts");
    }
}

/// Adds an `Error` answer for `status`, unless the handler describes one.
fn add_error(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(error_answer(description)));
}

/// An answer with the `Error` body.
pub(super) fn error_answer(description: &str) -> Answer {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", Content::new(Some(Ref::from_schema_name("Error"))))
        .build()
}

/// axum's catch-all `{*name}` as the OpenAPI template `{name}`.
fn openapi_template(path: &str) -> String {
    path.replace("{*", "{")
}

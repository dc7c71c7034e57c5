//! Every route, with every role, with no token and with a bad token.
//!
//! The table below is the specification the role table of `docs/operators/access-control.md` repeats:
//! a route not listed here is a route nobody decided the access rule of,
//! so `every_route_is_in_the_matrix` fails when one is added without a row.

use consentry::auth::{AuthConfig, DecisionAccess, Role, TokenConfig, digest_hex};

use super::*;

/// The callers: one token per role, the patient token standing for p-100.
const CALLERS: &[(&str, Role)] = &[
    ("t-decision", Role::Decision),
    ("t-consent-writer", Role::ConsentWriter),
    ("t-policy-admin", Role::PolicyAdmin),
    ("t-auditor", Role::Auditor),
    ("t-patient", Role::Patient),
];

fn auth(decisions: DecisionAccess) -> Auth {
    let tokens = CALLERS
        .iter()
        .map(|(token, role)| TokenConfig {
            name: role.name().to_owned(),
            sha256: digest_hex(token),
            roles: vec![*role],
            principal: (*role == Role::Patient).then(|| r#"Patient::"p-100""#.to_owned()),
        })
        .collect();
    Auth::new(&AuthConfig { decisions: Some(decisions), tokens }, None).unwrap()
}

/// Who may call a route.
#[derive(Clone, Copy)]
enum Access {
    /// Anyone, with or without a token.
    Open,
    /// Tokens holding one of these roles.
    Roles(&'static [Role]),
}

struct Route {
    label: &'static str,
    access: Access,
    build: fn() -> Request<Body>,
}

fn decision_body() -> Value {
    json!({
        "principal": r#"Practitioner::"dr-weber""#,
        "action": r#"Action::"read""#,
        "resource": r#"Observation::"obs-1""#,
        "context": {"purpose": "TREAT"},
    })
}

fn authzen_body() -> Value {
    json!({
        "subject": {"type": "Practitioner", "id": "dr-weber"},
        "action": {"name": "read"},
        "resource": {"type": "Observation", "id": "obs-1"},
        "context": {"purpose": "TREAT"},
    })
}

/// An AuthZEN search body: the evaluation body without the searched part's id, or its action.
fn search_body(searched: &str) -> Value {
    let mut body = authzen_body();
    match searched {
        "action" => drop(body.as_object_mut().unwrap().remove("action")),
        part => drop(body[part].as_object_mut().unwrap().remove("id")),
    }
    body
}

const DECISION: &[Role] = &[Role::Decision];
const POLICY_ADMIN: &[Role] = &[Role::PolicyAdmin];
const CONSENT_WRITER: &[Role] = &[Role::ConsentWriter];
const CONSENT_READER: &[Role] = &[Role::ConsentWriter, Role::Auditor];
const ACCESS_LOG_READER: &[Role] = &[Role::Auditor, Role::Patient];
const AUDITOR: &[Role] = &[Role::Auditor];

fn routes(decisions: DecisionAccess) -> Vec<Route> {
    let decision = match decisions {
        DecisionAccess::Open => Access::Open,
        DecisionAccess::Token => Access::Roles(DECISION),
    };
    vec![
        Route { label: "GET /healthz", access: Access::Open, build: || get("/healthz") },
        Route { label: "GET /readyz", access: Access::Open, build: || get("/readyz") },
        Route { label: "GET /metrics", access: Access::Open, build: || get("/metrics") },
        Route {
            label: "GET /.well-known/authzen-configuration",
            access: Access::Open,
            build: || get("/.well-known/authzen-configuration"),
        },
        Route {
            label: "POST /v1/is_authorized",
            access: decision,
            build: || post("/v1/is_authorized", &decision_body()),
        },
        Route {
            label: "POST /v1/is_authorized/batch",
            access: decision,
            build: || post("/v1/is_authorized/batch", &json!({"requests": [decision_body()]})),
        },
        Route {
            label: "POST /access/v1/evaluation",
            access: decision,
            build: || post("/access/v1/evaluation", &authzen_body()),
        },
        Route {
            label: "POST /access/v1/evaluations",
            access: decision,
            build: || post("/access/v1/evaluations", &json!({"evaluations": [authzen_body()]})),
        },
        Route {
            label: "POST /access/v1/search/subject",
            access: decision,
            build: || post("/access/v1/search/subject", &search_body("subject")),
        },
        Route {
            label: "POST /access/v1/search/resource",
            access: decision,
            build: || post("/access/v1/search/resource", &search_body("resource")),
        },
        Route {
            label: "POST /access/v1/search/action",
            access: decision,
            build: || post("/access/v1/search/action", &search_body("action")),
        },
        Route {
            label: "GET /ext_authz/fhir/Observation/obs-1",
            access: decision,
            build: || get("/ext_authz/fhir/Observation/obs-1"),
        },
        Route {
            label: "GET /v1/policies",
            access: Access::Roles(POLICY_ADMIN),
            build: || get("/v1/policies"),
        },
        Route {
            label: "PUT /v1/policies",
            access: Access::Roles(POLICY_ADMIN),
            build: || request(Method::PUT, "/v1/policies", Some("text/plain"), "not cedar ("),
        },
        Route { label: "GET /v1/schema", access: Access::Roles(POLICY_ADMIN), build: || get("/v1/schema") },
        Route {
            label: "PUT /v1/schema",
            access: Access::Roles(POLICY_ADMIN),
            build: || request(Method::PUT, "/v1/schema", Some("text/plain"), "not a schema ("),
        },
        Route {
            label: "GET /v1/entities",
            access: Access::Roles(POLICY_ADMIN),
            build: || get("/v1/entities"),
        },
        Route {
            label: "GET /v1/entities/revisions",
            access: Access::Roles(POLICY_ADMIN),
            build: || get("/v1/entities/revisions"),
        },
        Route {
            label: "PUT /v1/entities",
            access: Access::Roles(POLICY_ADMIN),
            build: || json_request(Method::PUT, "/v1/entities", &json!({"not": "an array"})),
        },
        Route {
            label: "PATCH /v1/entities",
            access: Access::Roles(POLICY_ADMIN),
            build: || json_request(Method::PATCH, "/v1/entities", &json!({"delete": ["Nobody::\"x\""]})),
        },
        Route {
            label: "DELETE /v1/entities",
            access: Access::Roles(POLICY_ADMIN),
            build: || json_request(Method::DELETE, "/v1/entities", &json!(["Nobody::\"x\""])),
        },
        Route { label: "GET /v1/plugins", access: Access::Roles(POLICY_ADMIN), build: || get("/v1/plugins") },
        Route {
            label: "POST /v1/plugins/reload",
            access: Access::Roles(POLICY_ADMIN),
            build: || request(Method::POST, "/v1/plugins/reload", None, Body::empty()),
        },
        Route {
            label: "POST /v1/consents",
            access: Access::Roles(CONSENT_WRITER),
            build: || post("/v1/consents", &json!({"resourceType": "Consent"})),
        },
        Route {
            label: "PUT /v1/consents/{id}",
            access: Access::Roles(CONSENT_WRITER),
            build: || json_request(Method::PUT, "/v1/consents/c-1", &json!({"resourceType": "Consent"})),
        },
        Route {
            label: "GET /v1/consents/{id}",
            access: Access::Roles(CONSENT_READER),
            build: || get("/v1/consents/c-1"),
        },
        Route {
            label: "GET /v1/patients/{id}/consents",
            access: Access::Roles(CONSENT_READER),
            build: || get("/v1/patients/p-100/consents"),
        },
        Route {
            label: "GET /v1/patients/{id}/access-log",
            access: Access::Roles(ACCESS_LOG_READER),
            build: || get("/v1/patients/p-100/access-log"),
        },
        Route {
            label: "GET /v1/patients/{id}/access-overview",
            access: Access::Roles(ACCESS_LOG_READER),
            build: || get("/v1/patients/p-100/access-overview"),
        },
        Route {
            label: "GET /v1/audit/events",
            access: Access::Roles(AUDITOR),
            build: || get("/v1/audit/events?patient=p-100"),
        },
        Route {
            label: "GET /v1/audit/changes",
            access: Access::Roles(AUDITOR),
            build: || get("/v1/audit/changes"),
        },
        Route {
            label: "GET /v1/audit/head",
            access: Access::Roles(AUDITOR),
            build: || get("/v1/audit/head"),
        },
    ]
}

/// Sends `build()` as every caller and checks who got through.
async fn check_route(app: &Router, route: &Route, token_header: header::HeaderName) {
    let label = route.label;
    let refused = send(app, (route.build)()).await;
    let bad = {
        let mut request = (route.build)();
        request.headers_mut().insert(token_header.clone(), "Bearer t-nobody".parse().unwrap());
        send(app, request).await
    };
    match route.access {
        Access::Open => {
            assert!(!refused_by_auth(&refused), "{label} without a token: {}", refused.text);
            assert!(!refused_by_auth(&bad), "{label} with a bad token: {}", bad.text);
        }
        Access::Roles(_) => {
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{label} without a token: {}", refused.text);
            assert_eq!(refused.body["error"], "unauthorized", "{label}");
            assert_eq!(bad.status, StatusCode::UNAUTHORIZED, "{label} with a bad token: {}", bad.text);
            assert_eq!(bad.body["error"], "unauthorized", "{label}");
        }
    }
    for (token, role) in CALLERS {
        let mut request = (route.build)();
        request.headers_mut().insert(token_header.clone(), format!("Bearer {token}").parse().unwrap());
        let reply = send(app, request).await;
        let admitted = match route.access {
            Access::Open => true,
            Access::Roles(roles) => roles.contains(role),
        };
        if admitted {
            assert!(!refused_by_auth(&reply), "{label} as {role}: {}", reply.text);
        } else {
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{label} as {role}: {}", reply.text);
            assert_eq!(reply.body["error"], "forbidden", "{label} as {role}");
        }
    }
}

/// Whether the answer is the guard's refusal, not the route's own answer
/// (`ext_authz` answers a Deny with 403 too, but with a decision body).
fn refused_by_auth(reply: &Reply) -> bool {
    reply.status == StatusCode::UNAUTHORIZED
        || reply.status == StatusCode::FORBIDDEN && reply.body["error"] == "forbidden"
}

fn token_header(route: &Route) -> header::HeaderName {
    if route.label.contains("/ext_authz") {
        header::HeaderName::from_static(consentry::http::EXT_AUTHZ_TOKEN_HEADER)
    } else {
        header::AUTHORIZATION
    }
}

#[tokio::test]
async fn every_route_admits_exactly_its_roles_when_decisions_need_a_token() {
    let app = pack_app_with(auth(DecisionAccess::Token)).await;
    for route in routes(DecisionAccess::Token) {
        check_route(&app, &route, token_header(&route)).await;
    }
}

#[tokio::test]
async fn every_route_admits_exactly_its_roles_when_decisions_are_open() {
    let app = pack_app_with(auth(DecisionAccess::Open)).await;
    for route in routes(DecisionAccess::Open) {
        check_route(&app, &route, token_header(&route)).await;
    }
}

#[tokio::test]
async fn a_decision_token_in_authorization_does_not_open_ext_authz() {
    // The proxied request's Authorization is the end client's, not ours.
    let app = pack_app_with(auth(DecisionAccess::Token)).await;
    let reply = send(&app, with_token(get("/ext_authz/fhir/Observation/obs-1"), "t-decision")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text);
}

#[tokio::test]
async fn every_route_is_in_the_matrix() {
    let app = pack_app_with(auth(DecisionAccess::Open)).await;
    let listed: Vec<(String, String)> = routes(DecisionAccess::Open)
        .iter()
        .map(|route| {
            let request = (route.build)();
            (request.method().to_string(), request.uri().path().to_owned())
        })
        .collect();
    // Every method the router knows on every listed path must be listed too.
    for (_, path) in &listed {
        for method in [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            if path.starts_with("/ext_authz") {
                continue;
            }
            let reply = send(&app, request(method.clone(), path, None, Body::empty())).await;
            let routed = reply.status != StatusCode::METHOD_NOT_ALLOWED;
            if routed {
                assert!(
                    listed.iter().any(|(m, p)| m == method.as_str() && p == path),
                    "{method} {path} is routed but not in the matrix"
                );
            }
        }
    }
}
